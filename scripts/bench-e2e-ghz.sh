#!/usr/bin/env bash
# The Go client's view of a running server (the second half of `just bench-e2e`): ghz (the Go
# gRPC load generator) sends Check and gRPC health at 1, 16 and 64 calls in flight, one
# connection per 4 calls in flight, and prints one markdown row per run. The Check is
# `document:target#view@user:u000000` of the data set `dhow-bench load` imports (allowed:
# the owner), the same call `just bench-auth` measures; health goes through reflection.
#
# Usage: scripts/bench-e2e-ghz.sh HOST:PORT [duration]
set -euo pipefail

addr=$1
duration=${2:-10s}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
. "$repo/scripts/bench-lib.sh"
check='{"resource":{"object_type":"document","object_id":"target"},"permission":"view","subject":{"object":{"object_type":"user","object_id":"u000000"}}}'

# run CALL REQUEST IN_FLIGHT [ghz flags...]: prints "calls/s | p50 | p99 | errors".
run() {
    local call=$1 request=$2 c=$3 conns
    shift 3
    conns=$(( c >= 4 ? c / 4 : 1 ))
    "${GHZ:-ghz}" --insecure --call "$call" -d "$request" -c "$c" --connections "$conns" \
        -z "$duration" --format json -o "$work/ghz.json" "$@" "$addr" >/dev/null
    ghz_summary "$work/ghz.json"
}

proto=(--proto "$repo/proto/dhow/v1/permission_service.proto" --import-paths "$repo/proto")
echo "| ghz call | In flight | Calls/s | p50 | p99 | Errors |"
echo "|---|---|---|---|---|---|"
run dhow.v1.PermissionService/Check "$check" 4 "${proto[@]}" >/dev/null # warm-up
for c in 1 16 64; do
    echo "| Check | $c | $(run dhow.v1.PermissionService/Check "$check" "$c" "${proto[@]}") |"
done
for c in 1 16 64; do
    echo "| health | $c | $(run grpc.health.v1.Health/Check '{}' "$c") |"
done
