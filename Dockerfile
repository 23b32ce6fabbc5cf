# The `stack serve` image that rendered compose files run (`corral_image`, default corral:0.1.0):
#   docker build -t corral:0.1.0 .
# llama-cpp-python is compiled for the build machine's CPU family by scripts/llama-cmake-args
# (AVX-512 or AVX2, never native, never AMX) with scripts/llama-patches, by scripts/llama-wheel;
# build on a machine like the ones that will run it.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY scripts ./scripts
COPY toolchain ./toolchain
COPY server ./server
RUN python -m venv /opt/corral \
    && /opt/corral/bin/pip install --no-cache-dir "$(scripts/llama-wheel /opt/corral/bin/python)" ".[server]"

FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --home-dir /models --shell /usr/sbin/nologin corral \
    && mkdir -p /models && chown corral /models
COPY --from=build /opt/corral /opt/corral
ENV PATH=/opt/corral/bin:$PATH OLLAMA_MODELS=/models OLLAMA_HOST=0.0.0.0:11434
USER corral
VOLUME /models
EXPOSE 11434
CMD ["stack", "serve"]
