# Dhow's tasks. `just --list` shows them. The target directory lives outside the clone so
# that every checkout on this machine (and CI) shares one build.

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") / ".cache/dhow/target")

# Show the recipes.
default:
    @just --list

# What a fresh machine lacks: libclang for RocksDB's bindings (Debian's libclang-dev).
deps:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! ldconfig -p | grep -q 'libclang[-.0-9]*\.so'; then
        echo "installing libclang-dev (needed to build RocksDB's bindings)"
        if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libclang-dev
    fi

# Run Dhow: a one-node cluster on ./data, serving gRPC on 127.0.0.1:50051.
run *args: deps
    cargo run -q -p dhow -- serve {{args}}

# One `cargo test --workspace` builds everything once (RocksDB included), then the binary it
# built runs SpiceDB's scenarios.
# The whole test suite (what CI runs).
test: deps
    cargo fmt --all -- --check
    cargo test --workspace
    "$CARGO_TARGET_DIR/debug/dhow" validate ../shared/conformance/spicedb/*.yaml examples/quickstart.yaml

# SpiceDB's public scenarios in-process, listing skipped assertions.
conformance: deps
    cargo run -q -p dhow -- validate --verbose ../shared/conformance/spicedb/*.yaml

# The example validation file, in-process.
example: deps
    cargo run -q -p dhow -- validate examples/quickstart.yaml

# Lints: clippy, and buf over the protos.
lint: deps
    cargo clippy --workspace --all-targets -- -D warnings
    bash proto/check.sh

# Criterion micro-benchmarks (numbers go into docs/benchmarks.md).
bench: deps
    cargo bench -p dhow-benches

# Golden files of the schema compiler, regenerated from the current output.
golden:
    UPDATE_GOLDEN=1 cargo test -p dhow-schema --test golden

# Long property runs of the parsers and the validation-file loader.
fuzz cases="20000":
    PROPTEST_CASES={{cases}} cargo test --release -p dhow-tuples -p dhow-schema -p dhow-validate never_panics
