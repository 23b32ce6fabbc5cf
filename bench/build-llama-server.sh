#!/bin/sh
# Builds llama.cpp's C++ llama-server from the llama.cpp vendored in the llama-cpp-python
# sdist that Corral pins (so the baseline runs the same ggml as the runner), with the same
# CPU flags as the install (scripts/llama-cmake-args). The build lives outside the repo.
#
#   bench/build-llama-server.sh [BUILD_DIR]      (default /tmp/corral-llama-server)
# Prints the path of the llama-server binary on its last line.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
version=$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' "$here/../pyproject.toml")
work=${1:-/tmp/corral-llama-server}
py=${PYTHON:-python3}
mkdir -p "$work"
cd "$work"
if [ ! -d "llama_cpp_python-$version" ]; then
    "$py" -m pip download "llama-cpp-python==$version" --no-deps --no-binary :all: -d . >&2
    tar xzf "llama_cpp_python-$version.tar.gz"
fi
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
# shellcheck disable=SC2046
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    $("$here/../scripts/llama-cmake-args") >&2
cmake --build "$work/build" --target llama-server llama-batched-bench -j "$(nproc)" >&2
echo "$work/build/bin/llama-server"
