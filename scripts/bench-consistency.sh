#!/usr/bin/env bash
# What each consistency mode costs a Check (docs/consistency.md): a one-node cluster and a
# three-node cluster on this machine (release binaries, free ports, fresh data dirs), 10,000
# synthetic relationships (`dhow-bench load`), then ghz (the Go gRPC load generator) sends the
# same Check (`document:target#view@user:u000000`, allowed: the owner) with each of the four
# consistency requirements at 1 and 16 calls in flight: on the one node, on the three-node
# cluster's leader and on one of its followers. Then `dhow-bench write --then-check` on the
# three-node cluster: a write on the leader followed by a check of it on a follower, with
# and without the write's token. Prints markdown rows. About two and a half minutes.
#
# Usage: scripts/bench-consistency.sh [DHOW_BIN] [DHOW_BENCH_BIN] [duration per run]
set -euo pipefail

bin=${1:-$CARGO_TARGET_DIR/release/dhow}
bench=${2:-$CARGO_TARGET_DIR/release/dhow-bench}
duration=${3:-4s}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
. "$repo/scripts/bench-lib.sh"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# ghz from the Go module proxy (`just ghz` installs it).
PATH="$(go env GOPATH)/bin:$PATH"
command -v "${GHZ:-ghz}" >/dev/null || { echo "ghz is missing: run just ghz" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# wait_serving ENDPOINT: until gRPC health says SERVING (at most 30 s).
wait_serving() {
    for _ in $(seq 300); do
        "$bin" health --endpoint "$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "$1 never turned SERVING" >&2
    exit 1
}

# start_nodes N: N nodes on fresh data dirs; sets grpc[1..N].
declare -A grpc
start_nodes() {
    local n=$1 ic="" i
    node_pids=()
    declare -A peer
    for i in $(seq "$n"); do
        grpc[$i]=127.0.0.1:$(free_port)
        peer[$i]=127.0.0.1:$(free_port)
        ic+="${ic:+,}$i=${peer[$i]}"
    done
    for i in $(seq "$n"); do
        mkdir -p "$work/n$n/$i"
        "$bin" serve --node-id "$i" --data-dir "$work/n$n/$i" --grpc-addr "${grpc[$i]}" \
            --peer-addr "${peer[$i]}" --initial-cluster "$ic" >"$work/n$n/$i.log" 2>&1 &
        pids+=($!)
        node_pids+=($!)
    done
    for i in $(seq "$n"); do wait_serving "http://${grpc[$i]}"; done
}

check='"resource":{"object_type":"document","object_id":"target"},"permission":"view","subject":{"object":{"object_type":"user","object_id":"u000000"}}'

# measure LABEL ADDR: one row per mode and concurrency against ADDR.
measure() {
    local label=$1 ep="http://$2" token c mode consistency
    addr=$2
    # A token of a write made just before: what a client that wrote would hold.
    token=$("$bin" rel touch 'document:benchtoken#owner@user:benchtoken' --endpoint "$ep")
    ghz_run Check "{$check}" 4 2s --insecure >/dev/null # warm-up
    for mode in minimize_latency at_least_as_fresh at_exact_snapshot fully_consistent; do
        case $mode in
            minimize_latency | fully_consistent) consistency="{\"$mode\":true}" ;;
            *) consistency="{\"$mode\":{\"token\":\"$token\"}}" ;;
        esac
        for c in 1 16; do
            echo "| $label | $mode | $c | $(ghz_run Check "{$check,\"consistency\":$consistency}" "$c" "$duration" --insecure) |"
        done
    done
}

# What else ran: the compilers of other work on the same cores would skew the numbers.
( while sleep 5; do
    n=$(ps -eo comm= | grep -cE '^(rustc|cc1plus|cc|ld)$' || true)
    echo "$(date +%T) load $(cut -d' ' -f1 /proc/loadavg), compilers running: $n"
done ) >"$work/monitor.log" 2>&1 &
pids+=($!)

echo "| node | consistency | in flight | checks/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|---|---|"
start_nodes 1
"$bench" load -n 10000 --endpoint "http://${grpc[1]}" >/dev/null
measure "one node" "${grpc[1]}"
kill "${node_pids[0]}"
wait "${node_pids[0]}" 2>/dev/null || true

start_nodes 3
leader=$("$bin" cluster status --endpoint "http://${grpc[1]}" | sed -n 's/.*, leader \([0-9]*\),.*/\1/p')
follower=$(( leader % 3 + 1 ))
"$bench" load -n 10000 --endpoint "http://${grpc[$leader]}" >/dev/null
measure "3 nodes, leader" "${grpc[$leader]}"
measure "3 nodes, follower" "${grpc[$follower]}"

echo
echo "write on the leader, then check it on a follower (1 writer, $duration):"
for mode in minimize-latency at-least-as-fresh; do
    echo "== $mode"
    "$bench" write -c 1 --duration "$duration" --endpoint "http://${grpc[$leader]}" \
        --then-check "http://${grpc[$follower]}" --check-consistency "$mode"
done

echo
echo "during the run (every 5 s):"
awk '{ if ($NF > 0) busy++; if ($3 + 0 > max) max = $3 + 0 } END { printf "%d samples, %d with a compiler running, highest load average %.2f\n", NR, busy, max }' "$work/monitor.log"
