#!/usr/bin/env bash
# Builds RocksDB's C++ once per librocksdb-sys version, optimized, into
# ~/.cache/dhow/rocksdb-lib/<version>/librocksdb.a, and prints that directory. Every Dhow
# build (debug and release, tests and benchmarks, any checkout) then links it through
# ROCKSDB_LIB_DIR instead of compiling the C++ again: librocksdb-sys recompiles it whenever
# anything in its build-dependency graph resolves differently (a feature a new dependency
# turns on is enough), which is 20-30 minutes on two cores each time.
# `--path` prints the directory without building.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$(awk '/^name = "librocksdb-sys"/ { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)
[ -n "$version" ] || { echo "librocksdb-sys is not in Cargo.lock" >&2; exit 1; }
cache="${DHOW_CACHE:-$HOME/.cache/dhow}"
out="$cache/rocksdb-lib/$version"
if [ "${1:-}" = "--path" ]; then
    # Only where it is (or will be): for the justfile, without building anything.
    echo "$out"
    exit 0
fi
if [ -f "$out/librocksdb.a" ]; then
    echo "$out"
    exit 0
fi
echo "building RocksDB $version once (20-35 minutes on two cores) into $out" >&2
build="$cache/rocksdb-build"
# Only librocksdb-sys, with the features the workspace gives it, in a target dir of its own.
env -u ROCKSDB_LIB_DIR -u ROCKSDB_STATIC CARGO_TARGET_DIR="$build" \
    cargo build --release -p librocksdb-sys >&2
lib=$(ls -t "$build"/release/build/librocksdb-sys-*/out/librocksdb.a | head -1)
mkdir -p "$out.tmp"
cp "$lib" "$out.tmp/librocksdb.a"
rm -rf "$out" && mv "$out.tmp" "$out"
echo "$out"
