#!/usr/bin/env bash
# Build llama-server, llama-bench and llama-batched-bench from the llama.cpp sources inside the
# llama-cpp-python source package that ingle pins, so the benchmarks compare against the same
# llama.cpp. Prints llama-server's path on stdout; the other two lie beside it. Reuses an earlier
# build; nothing lands in the repository.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
CACHE="${INGLE_BENCH_CACHE:-$HOME/.cache/ingle-bench}"
BIN_DIR="$CACHE/llama-server-$VERSION"
PYTHON="${PYTHON:-python3}"
TARGETS=(llama-server llama-bench llama-batched-bench)

missing=()
for target in "${TARGETS[@]}"; do
    [[ -x "$BIN_DIR/$target" ]] || missing+=("$target")
done
if [[ ${#missing[@]} -eq 0 ]]; then
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
# Static libraries: the binaries can be copied into the cache and the build tree removed.
cmake -S "$source_dir" -B "$source_dir/build" -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF -DCMAKE_BUILD_TYPE=Release >&2
cmake --build "$source_dir/build" --target "${missing[@]}" -j "$(nproc)" >&2
mkdir -p "$BIN_DIR"
for target in "${missing[@]}"; do
    cp "$source_dir/build/bin/$target" "$BIN_DIR/$target"
done
rm -rf "$work"
echo "$BIN_DIR/llama-server"
