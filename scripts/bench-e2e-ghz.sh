#!/usr/bin/env bash
# The Go client's view of a running server (the second half of `just bench-e2e`): ghz (the Go
# gRPC load generator) sends Check and gRPC health at 1, 16 and 64 calls in flight, one
# connection per 4 calls in flight, and prints one markdown row per run. The Check is
# `document:target#view@user:u000000` of the data set `dhow-bench load` imports (allowed:
# the owner), the same call `just bench-auth` measures; health goes through reflection.
# Given MIX (a file of `dhow-bench mix`: the four-kind mix `dhow-bench check` sends), ghz
# also sends those checks, round robin, at 1, 16 and 64 in flight.
#
# Usage: scripts/bench-e2e-ghz.sh HOST:PORT [duration] [MIX]
set -euo pipefail

addr=$1
duration=${2:-10s}
mix=${3:-}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
. "$repo/scripts/bench-lib.sh"
check='{"resource":{"object_type":"document","object_id":"target"},"permission":"view","subject":{"object":{"object_type":"user","object_id":"u000000"}}}'

# run CALL REQUEST IN_FLIGHT [ghz flags...]: prints "calls/s | p50 | p99 | errors".
run() {
    local call=$1 request=$2 c=$3 conns
    shift 3
    conns=$(( c >= 4 ? c / 4 : 1 ))
    # An empty REQUEST: the flags given bring the data (-D FILE).
    [ -z "$request" ] || set -- -d "$request" "$@"
    "${GHZ:-ghz}" --insecure --call "$call" -c "$c" --connections "$conns" \
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
if [ -n "$mix" ]; then
    # A warm-up as long as a run: the check cache then holds the mix, as it would in service.
    run dhow.v1.PermissionService/Check '' 16 -D "$mix" "${proto[@]}" >/dev/null
    for c in 1 16 64; do
        echo "| Check, the mix | $c | $(run dhow.v1.PermissionService/Check '' "$c" -D "$mix" "${proto[@]}") |"
    done
fi
for c in 1 16 64; do
    echo "| health | $c | $(run grpc.health.v1.Health/Check '{}' "$c") |"
done
