# Dhow's tasks. `just --list` shows them. The target directory lives outside the clone so
# that every checkout on this machine (and CI) shares one build.

export CARGO_TARGET_DIR := env_var_or_default("CARGO_TARGET_DIR", env_var("HOME") / ".cache/dhow/target")
# RocksDB's C++ is compiled once per version, optimized, by `scripts/rocksdb-lib.sh` (the
# `deps` recipe), and every build links that library instead of compiling it again.
export ROCKSDB_LIB_DIR := env_var_or_default("ROCKSDB_LIB_DIR", `scripts/rocksdb-lib.sh --path`)
export ROCKSDB_STATIC := "1"

# Show the recipes.
default:
    @just --list

# What a fresh machine lacks: libclang for RocksDB's bindings (Debian's libclang-dev), and
# RocksDB's library (compiled once, 20-35 minutes on two cores; reused afterwards).
deps:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! ldconfig -p | grep -q 'libclang[-.0-9]*\.so'; then
        echo "installing libclang-dev (needed to build RocksDB's bindings)"
        if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq libclang-dev
    fi
    scripts/rocksdb-lib.sh >/dev/null

# Builds the debug `dhow` with exactly the command the tests use (`cargo test --workspace
# --no-run`): any other cargo command resolves other features for RocksDB's build
# dependencies and compiles its C++ again (20-30 minutes). After `just test` this compiles
# nothing.
# Build dhow (and every test) once, as `just test` does.
build: deps
    cargo test --workspace --no-run -q

# Puts `dhow` on the PATH: a link in ~/.cargo/bin (where rustup puts cargo) to the debug build.
install: build
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p "$HOME/.cargo/bin"
    ln -sf "$CARGO_TARGET_DIR/debug/dhow" "$HOME/.cargo/bin/dhow"
    echo "dhow is on the PATH: $HOME/.cargo/bin/dhow -> $CARGO_TARGET_DIR/debug/dhow"

# `dhow` is put on the PATH first, for the client commands it suggests.
# Run Dhow: a one-node cluster on ./data, serving gRPC on 127.0.0.1:50051.
run *args: install
    "$CARGO_TARGET_DIR/debug/dhow" serve {{args}}

# One `cargo test --workspace` builds everything once (RocksDB included), then the binary it
# built runs SpiceDB's scenarios, which must all pass with none skipped (the summary line is
# `N passed, 0 failed`; it names skipped assertions when there are some).
# The whole test suite (what CI runs).
test: deps
    #!/usr/bin/env bash
    set -euo pipefail
    cargo fmt --all -- --check
    cargo test --workspace
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    "$CARGO_TARGET_DIR/debug/dhow" validate ../shared/conformance/spicedb/*.yaml examples/quickstart.yaml | tee "$log"
    if ! tail -1 "$log" | grep -Eq '^[0-9]+ passed, 0 failed$'; then
        echo "conformance: every assertion must pass and none may be skipped (see above)" >&2
        exit 1
    fi

# SpiceDB's public scenarios in-process, listing skipped assertions.
conformance: build
    "$CARGO_TARGET_DIR/debug/dhow" validate --verbose ../shared/conformance/spicedb/*.yaml

# The example validation file, in-process.
example: build
    "$CARGO_TARGET_DIR/debug/dhow" validate examples/quickstart.yaml

# Lints: clippy, and buf over the protos.
lint: deps
    cargo clippy --workspace --all-targets -- -D warnings
    bash proto/check.sh

# Criterion micro-benchmarks (numbers go into docs/benchmarks.md).
bench: deps
    cargo bench -p dhow-benches

# A release `dhow serve` on a temporary data dir and a free port, `dhow-bench load` of N
# relationships, `check` at 1, 16 and 64 in flight (and at_least_as_fresh at 16), `health` at
# 1, 16 and 64; then ghz (a Go client) sends Check and health at 1, 16 and 64 in flight
# (scripts/bench-e2e-ghz.sh); then the server is stopped and its data dir removed.
# End-to-end benchmark over gRPC (numbers go into docs/benchmarks.md).
bench-e2e n="1000000" duration="10s": deps ghz
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p dhow -p dhow-benches --bins
    bin="$CARGO_TARGET_DIR/release/dhow"
    bench="$CARGO_TARGET_DIR/release/dhow-bench"
    data=$(mktemp -d)
    "$bin" serve --data-dir "$data" --grpc-addr 127.0.0.1:0 >"$data/serve.log" 2>&1 &
    pid=$!
    trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$data"' EXIT
    for _ in $(seq 300); do
        grep -q ' listening on ' "$data/serve.log" && break
        kill -0 $pid 2>/dev/null || { cat "$data/serve.log"; exit 1; }
        sleep 0.1
    done
    grep -q ' listening on ' "$data/serve.log" || { echo "dhow serve did not start:"; cat "$data/serve.log"; exit 1; }
    ep="http://$(sed -n 's/.* listening on \([^ ]*\).*/\1/p' "$data/serve.log")"
    echo "server: $ep, data in $data"
    "$bench" load -n {{n}} --endpoint "$ep"
    echo "data dir after import: $(du -sh "$data/db" | cut -f1)"
    for c in 1 16 64; do
        "$bench" check -n {{n}} -c $c --duration {{duration}} --endpoint "$ep"
    done
    "$bench" check -n {{n}} -c 16 --duration {{duration}} --consistency at-least-as-fresh --endpoint "$ep"
    for c in 1 16 64; do
        "$bench" health -c $c --duration {{duration}} --endpoint "$ep"
    done
    # The same server as a Go client sees it: ghz, Check (one check, and the mix `check`
    # sends) and health at 1, 16 and 64 in flight.
    "$bench" mix -n {{n}} >"$data/mix.json"
    PATH="$(go env GOPATH)/bin:$PATH" scripts/bench-e2e-ghz.sh "${ep#http://}" {{duration}} "$data/mix.json"

# ghz, the Go gRPC load generator of the benchmarks measured from a Go client.
ghz:
    #!/usr/bin/env bash
    set -euo pipefail
    [ -x "$(go env GOPATH)/bin/ghz" ] || go install github.com/bojand/ghz/cmd/ghz@v0.93.0

# Check from a Go client (ghz) with no authentication, a preshared key, a JWT (cached and
# not) and TLS, interleaved.
# What authentication costs a Check (numbers go into docs/benchmarks.md).
bench-auth n="100000" duration="10s" rounds="2": deps ghz
    cargo build --release -p dhow -p dhow-benches --bins
    PATH="$(go env GOPATH)/bin:$PATH" scripts/bench-auth.sh {{n}} {{duration}} {{rounds}}

# Check through one and three caveated relationships against the same without caveats, from
# a Go client (ghz) over gRPC.
# What caveats cost a Check over gRPC (numbers go into docs/benchmarks.md).
bench-caveats duration="10s" rounds="2": deps ghz
    cargo build --release -p dhow -p dhow-benches --bins
    PATH="$(go env GOPATH)/bin:$PATH" scripts/bench-caveats.sh {{duration}} {{rounds}}

# What a delegation chain (1, 3, 8 agents), explain and the audit log (off, denied, all)
# cost a Check, from a Go client (ghz) over gRPC (numbers go into docs/benchmarks.md).
bench-agents duration="10s" rounds="2": deps ghz
    cargo build --release -p dhow -p dhow-benches --bins
    PATH="$(go env GOPATH)/bin:$PATH" scripts/bench-agents.sh {{duration}} {{rounds}}

# Golden files of the schema compiler, regenerated from the current output.
golden:
    UPDATE_GOLDEN=1 cargo test -p dhow-schema --test golden

# Long property runs of the parsers and the validation-file loader.
fuzz cases="20000":
    PROPTEST_CASES={{cases}} cargo test --release -p dhow-tuples -p dhow-schema -p dhow-validate never_panics

# A three-node cluster on this machine (data under ./data/cluster/N, public API on
# 127.0.0.1:50061..50063, peers on 127.0.0.1:50071..50073); Ctrl-C stops all three.
# CI runs 300 seeds; a failing seed prints the command that replays it. Builds dhow-raft
# alone, without RocksDB.
# The deterministic simulation of the Raft core, long form.
sim seeds="2000": deps
    DHOW_SIM_SEEDS={{seeds}} cargo test -p dhow-raft --no-default-features --test sim -- --nocapture

# Three release nodes on this machine (fsync on): acknowledged writes with 1, 16 and 64
# writers through the leader and through a follower, and the cost of reading your own write on
# another node (at_least_as_fresh with the write's token, against minimize_latency).
bench-cluster n="100000" duration="10s": deps
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -p dhow -p dhow-benches --bins
    bin="$CARGO_TARGET_DIR/release/dhow"
    bench="$CARGO_TARGET_DIR/release/dhow-bench"
    data=$(mktemp -d)
    ic="1=127.0.0.1:50171,2=127.0.0.1:50172,3=127.0.0.1:50173"
    pids=()
    trap 'kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$data"' EXIT
    for i in 1 2 3; do
        "$bin" serve --node-id $i --data-dir "$data/$i" --grpc-addr 127.0.0.1:5016$i \
            --peer-addr 127.0.0.1:5017$i --initial-cluster "$ic" >"$data/$i.log" 2>&1 &
        pids+=($!)
    done
    leader=""
    for _ in $(seq 100); do
        leader=$("$bin" cluster status --json --endpoint http://127.0.0.1:50161 2>/dev/null \
            | sed -n 's/.*"leader_id":\([1-9]\).*/\1/p') || true
        [ -n "$leader" ] && break
        sleep 0.2
    done
    [ -n "$leader" ] || { echo "no leader:"; tail "$data"/*.log; exit 1; }
    follower=$(( leader % 3 + 1 ))
    lep="http://127.0.0.1:5016$leader"
    fep="http://127.0.0.1:5016$follower"
    echo "leader: node $leader ($lep), follower: node $follower ($fep)"
    "$bench" load -n {{n}} --endpoint "$lep"
    for c in 1 16 64; do
        echo "== through the leader"
        "$bench" write -c $c --duration {{duration}} --endpoint "$lep"
        echo "== through a follower (forwarded)"
        "$bench" write -c $c --duration {{duration}} --endpoint "$fep"
    done
    for c in 1 16; do
        for mode in minimize-latency at-least-as-fresh; do
            echo "== write on the leader, then check on the follower ($mode)"
            "$bench" write -c $c --duration {{duration}} --endpoint "$lep" \
                --then-check "$fep" --check-consistency $mode
        done
    done

cluster: build
    #!/usr/bin/env bash
    set -euo pipefail
    BIN="$CARGO_TARGET_DIR/debug/dhow"
    IC="1=127.0.0.1:50071,2=127.0.0.1:50072,3=127.0.0.1:50073"
    pids=()
    trap 'kill "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
    for i in 1 2 3; do
        mkdir -p "data/cluster/$i"
        "$BIN" serve --node-id "$i" --data-dir "data/cluster/$i" \
            --grpc-addr "127.0.0.1:5006$i" --peer-addr "127.0.0.1:5007$i" \
            --initial-cluster "$IC" 2> "data/cluster/$i.log" &
        pids+=($!)
    done
    sleep 3
    "$BIN" cluster status --endpoint http://127.0.0.1:50061 || true
    echo "logs in data/cluster/N.log; try: $BIN check 'document:readme#view@user:alice' --endpoint http://127.0.0.1:50062"
    wait

# The long form of the cluster fault tests: 10,000 revoke-then-check pairs and 100 leader
# kills (CI runs a short form of the same tests).
soak pairs="10000" kills="100": build
    #!/usr/bin/env bash
    set -euo pipefail
    # The test binary `just build` made (a narrower cargo command would build RocksDB again).
    bin=$(cargo test --workspace --no-run -q --message-format=json 2>/dev/null | python3 -c 'import json,sys; print(next(m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "cluster" and m.get("executable")))')
    cd tests && DHOW_SOAK_PAIRS={{pairs}} DHOW_SOAK_KILLS={{kills}} "$bin" --nocapture --test-threads 1

# At the sizes of the issue: 100,000 relationships under a write of 1,000 preconditions,
# 4,000 watchers, a lookup over 100,000 results (CI runs the short form of the same tests).
# The hostile-client suite of issue 11, long form.
hostile: build
    #!/usr/bin/env bash
    set -euo pipefail
    # The test binary `just build` made (a narrower cargo command would build RocksDB again).
    bin=$(cargo test --workspace --no-run -q --message-format=json 2>/dev/null | python3 -c 'import json,sys; print(next(m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "hostile" and m.get("executable")))')
    cd tests && DHOW_HOSTILE_LONG=1 "$bin" --nocapture --test-threads 1

# Random schemas, relationships and requests against one debug `dhow serve`, every answer
# compared with the in-memory engine, for `secs` seconds from a random seed (or `seed=N` to
# replay one; a failure prints the seed and case). CI runs 30 s from a fixed seed.
# The structured fuzzer of the public API, long form.
fuzz-api secs="600" seed="random": build
    #!/usr/bin/env bash
    set -euo pipefail
    # The test binary `just build` made (a narrower cargo command would build RocksDB again).
    bin=$(cargo test --workspace --no-run -q --message-format=json 2>/dev/null | python3 -c 'import json,sys; print(next(m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "fuzz_api" and m.get("executable")))')
    seed="{{seed}}"
    if [ "$seed" = random ]; then seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' '); fi
    echo "fuzz-api: seed $seed for {{secs}} s"
    cd tests && DHOW_FUZZ_API_SEED="$seed" DHOW_FUZZ_API_SECS={{secs}} "$bin" --nocapture --test-threads 1

# Installs the generators and the examples' dependencies from the registries (Go module proxy,
# PyPI, npm), generates the Go, Python and TypeScript clients from proto/buf.gen.yaml into
# proto/gen, and runs examples/{go,python,ts} against one real `dhow serve` (proto/README.md).
# The generated clients, end to end.
clients: build
    scripts/clients-check.sh "$CARGO_TARGET_DIR/debug/dhow"

# The docs cannot drift: docs/api.md against what proto/dhow/v1 generates (protoc-gen-doc
# through buf), then every sh block of docs/operations.md and every example and error of
# docs/schema.md run against real `dhow serve` processes (scripts/docs-check.sh).
docs: build
    scripts/api-docs.sh --check
    timeout 600 scripts/docs-check.sh "$CARGO_TARGET_DIR/debug/dhow"

# What metrics and traces cost a Check: the release server restarted alternately without
# telemetry and with --metrics-addr (scraped every second) and --otlp-endpoint (a local OTLP
# receiver), dhow-bench check at 16 in flight each (scripts/bench-telemetry.sh).
# Telemetry overhead benchmark (numbers go into docs/benchmarks.md).
bench-telemetry n="1000000" duration="10s" rounds="4": deps
    cargo build --release -p dhow -p dhow-benches --bins
    scripts/bench-telemetry.sh "$CARGO_TARGET_DIR/release/dhow" "$CARGO_TARGET_DIR/release/dhow-bench" {{n}} {{duration}} {{rounds}}
