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
version=$(sed -n 's/.*"llama-cpp-python==\([0-9.]*\)".*/\1/p' "$here/../pyproject.toml")
work=${1:-/tmp/corral-llama-server}
py=${PYTHON:-python3}
mkdir -p "$work"
cd "$work"
# the runner's llama.cpp carries scripts/llama-patches (scripts/llama-wheel): so does the baseline
patches=$(cat "$here"/../scripts/llama-patches/*.patch | sha256sum | cut -c1-16)
if [ "$(cat "llama_cpp_python-$version/.corral-patches" 2>/dev/null)" != "$patches" ]; then
    [ -f "llama_cpp_python-$version.tar.gz" ] \
        || "$py" -m pip download "llama-cpp-python==$version" --no-deps --no-binary :all: -d . >&2
    rm -rf "llama_cpp_python-$version"
    tar xzf "llama_cpp_python-$version.tar.gz"
    for p in "$here"/../scripts/llama-patches/*.patch; do
        patch -s -p1 -d "llama_cpp_python-$version" < "$p" >&2
    done
    echo "$patches" > "llama_cpp_python-$version/.corral-patches"
fi
src="$work/llama_cpp_python-$version/vendor/llama.cpp"
# shellcheck disable=SC2046
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
    $("$here/../scripts/llama-cmake-args") >&2
cmake --build "$work/build" --target llama-server llama-batched-bench -j "$(nproc)" >&2
echo "$work/build/bin/llama-server"
