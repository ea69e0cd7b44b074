#!/usr/bin/env bash
# Build llama-server from the llama.cpp sources inside the llama-cpp-python source package
# that ingle pins, so the benchmark compares against the same llama.cpp. Prints the binary's
# path on stdout. Reuses an earlier build; nothing lands in the repository.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${INGLE_BENCH_CACHE:-$HOME/.cache/ingle-bench}"
BIN_DIR="$CACHE/llama-server-$VERSION"
PYTHON="${PYTHON:-python3}"

if [[ -x "$BIN_DIR/llama-server" ]]; then
    echo "$BIN_DIR/llama-server"
    exit 0
fi

work="$CACHE/build-$VERSION"
mkdir -p "$work"
if [[ ! -d "$work/llama_cpp_python-$VERSION" ]]; then
    "$PYTHON" -m pip download --quiet --no-deps --no-binary :all: --dest "$work" "llama-cpp-python==$VERSION" >&2
    tar -xzf "$work/llama_cpp_python-$VERSION.tar.gz" -C "$work"
fi
source_dir="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"
# Static libraries: the one binary can be copied into the cache and the build tree removed.
cmake -S "$source_dir" -B "$source_dir/build" -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release >&2
cmake --build "$source_dir/build" --target llama-server -j "$(nproc)" >&2
mkdir -p "$BIN_DIR"
cp "$source_dir/build/bin/llama-server" "$BIN_DIR/llama-server"
rm -rf "$work"
echo "$BIN_DIR/llama-server"
