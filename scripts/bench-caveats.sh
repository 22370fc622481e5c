#!/usr/bin/env bash
# What caveats cost a Check over gRPC, measured from a Go client (ghz) against a release
# `dhow serve`: a check through one and through three caveated relationships, against the
# same paths without caveats (the schema and data of the `caveats` micro-benchmarks in
# benches/benches/check.rs), every request with the context `{"level": 5}`. Each case runs
# ROUNDS times, interleaved, at 1 and at 16 calls in flight. Prints one markdown row per run.
#
# Usage: scripts/bench-caveats.sh [duration] [rounds]
# Needs: $DHOW_BIN (default $CARGO_TARGET_DIR/release/dhow) and ghz on the PATH (`just
# bench-caveats` builds and installs them).
set -euo pipefail

duration=${1:-10s}
rounds=${2:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${DHOW_BIN:-$CARGO_TARGET_DIR/release/dhow}
work=$(mktemp -d)
. "$repo/scripts/bench-lib.sh"

cat >"$work/schema.zed" <<'ZED'
definition user {}
caveat level(level int, required int) {
    level >= required
}
definition group {
    relation member: user | user with level | group#member | group#member with level
}
definition document {
    relation viewer: user | user with level | group#member | group#member with level
    permission view = viewer
}
ZED
cav='[level:{"required":1}]'
start
ep=(--endpoint "http://$addr")
"$bin" schema write "$work/schema.zed" "${ep[@]}" >/dev/null
"$bin" rel touch "${ep[@]}" \
    "document:one_plain#viewer@user:tom" \
    "document:one_caveated#viewer@user:tom$cav" \
    "document:three_plain#viewer@group:a_plain#member" \
    "group:a_plain#member@group:b_plain#member" \
    "group:b_plain#member@user:tom" \
    "document:three_caveated#viewer@group:a_caveated#member$cav" \
    "group:a_caveated#member@group:b_caveated#member$cav" \
    "group:b_caveated#member@user:tom$cav" >/dev/null
for d in one_plain one_caveated three_plain three_caveated; do
    out=$("$bin" check "document:$d" view user:tom --context '{"level": 5}' "${ep[@]}" 2>/dev/null)
    [ "$out" = true ] || { echo "document:$d: expected true, got $out" >&2; exit 1; }
done

echo "| Check | In flight | Round | Calls/s | p50 | p99 | Errors |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
    for d in one_plain one_caveated three_plain three_caveated; do
        request='{"resource":{"object_type":"document","object_id":"'$d'"},"permission":"view","subject":{"object":{"object_type":"user","object_id":"tom"}},"context":{"level":5}}'
        ghz_run Check "$request" 4 2s --insecure >/dev/null # warm-up
        for c in 1 16; do
            echo "| $d | $c | $round | $(ghz_run Check "$request" "$c" "$duration" --insecure) |"
        done
    done
done
