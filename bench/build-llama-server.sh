#!/bin/sh
# Builds llama.cpp's C++ llama-server from the llama.cpp vendored in the llama-cpp-python
# sdist that Corral pins, with the same patches (scripts/llama-patches) and CPU flags
# (scripts/llama-cmake-args) as the install: the baseline runs the same ggml as the runner.
# The build lives outside the repo.
#
#   bench/build-llama-server.sh [BUILD_DIR]      (default /tmp/corral-llama-server)
# Prints the path of the llama-server binary on its last line.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
work=${1:-/tmp/corral-llama-server}
# the runner's llama.cpp carries scripts/llama-patches (scripts/llama-wheel): so does the baseline
src="$("$here/../scripts/llama-source" "$work" "${PYTHON:-python3}")/vendor/llama.cpp"
# shellcheck disable=SC2046
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    $("$here/../scripts/llama-cmake-args") >&2
cmake --build "$work/build" --target llama-server llama-batched-bench -j "$(nproc)" >&2
echo "$work/build/bin/llama-server"
