# Dhow's tasks. `just --list` shows them. The target directory lives outside the clone so
# that every checkout on this machine (and CI) shares one build.

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") / ".cache/dhow/target")

# Show the recipes.
default:
    @just --list

# Run Dhow on the example file: load the schema and relationships, check the assertions.
run:
    cargo run -q -p dhow -- validate examples/quickstart.yaml

# The whole test suite (what CI runs).
test:
    cargo fmt --all -- --check
    cargo test --workspace
    cargo run -q -p dhow -- validate ../shared/conformance/spicedb/*.yaml

# SpiceDB's public scenarios through `dhow validate`, listing skipped assertions.
conformance:
    cargo run -q -p dhow -- validate --verbose ../shared/conformance/spicedb/*.yaml

# Lints.
lint:
    cargo clippy --workspace --all-targets -- -D warnings

# Criterion micro-benchmarks (numbers go into docs/benchmarks.md).
bench:
    cargo bench -p dhow-benches

# Golden files of the schema compiler, regenerated from the current output.
golden:
    UPDATE_GOLDEN=1 cargo test -p dhow-schema --test golden

# Long property runs of the parsers and the validation-file loader.
fuzz cases="20000":
    PROPTEST_CASES={{cases}} cargo test --release -p dhow-tuples -p dhow-schema -p dhow-validate never_panics
