#!/usr/bin/env bash
# What a delegation chain and the decision audit log cost a Check, measured from a Go client
# (ghz) against a release `dhow serve` with the agents example's schema
# (examples/agents/schema.zed) and the data of the `delegation` micro-benchmarks in
# benches/benches/check.rs: document:d in folder:f, which user:u may view; agent:a1 acts for
# u, a2 for a1, ... a8 for a7. Checks: the plain check of u, and u through chains of 1, 3 and
# 8 agents, each without and with explain; then the 3-hop check with the audit log off,
# recording denials only, and recording every decision. Each case runs ROUNDS times,
# interleaved, at 1 and at 16 calls in flight. Prints one markdown row per run.
#
# Usage: scripts/bench-agents.sh [duration] [rounds]
# Needs: $DHOW_BIN (default $CARGO_TARGET_DIR/release/dhow) and ghz on the PATH (`just
# bench-agents` builds and installs them).
set -euo pipefail

duration=${1:-10s}
rounds=${2:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${DHOW_BIN:-$CARGO_TARGET_DIR/release/dhow}
work=$(mktemp -d)
. "$repo/scripts/bench-lib.sh"

for mode in denied all; do
    printf '[audit]\nmode = "%s"\n' "$mode" >"$work/audit-$mode.toml"
done

start
ep=(--endpoint "http://$addr")
"$bin" schema write "$repo/examples/agents/schema.zed" "${ep[@]}" >/dev/null
rels=("document:d#folder@folder:f" "folder:f#viewer@user:u" "agent:a1#delegator@user:u")
for i in 1 2 3 4 5 6 7; do rels+=("agent:a$((i + 1))#delegator@agent:a$i"); done
"$bin" rel touch "${ep[@]}" "${rels[@]}" >/dev/null
stop

# The request of a check through `hops` agents (outermost first: a{hops} made the request).
request() {
    local hops=$1 explain=$2 actors="" i
    for ((i = hops; i >= 1; i--)); do
        actors+="${actors:+,}{\"object\":{\"object_type\":\"agent\",\"object_id\":\"a$i\"}}"
    done
    printf '{"resource":{"object_type":"document","object_id":"d"},"permission":"view","subject":{"object":{"object_type":"user","object_id":"u"}},"actors":[%s],"explain":%s}' \
        "$actors" "$explain"
}

echo "| Check | Audit | In flight | Round | Calls/s | p50 | p99 | Errors |"
echo "|---|---|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
    start
    for hops in 0 1 3 8; do
        for explain in false true; do
            name=$([ "$hops" = 0 ] && echo plain || echo "${hops}_hops")
            [ "$explain" = true ] && name+=" explain"
            r=$(request "$hops" "$explain")
            ghz_run Check "$r" 4 2s --insecure >/dev/null # warm-up
            for c in 1 16; do
                echo "| $name | off | $c | $round | $(ghz_run Check "$r" "$c" "$duration" --insecure) |"
            done
        done
    done
    stop
    r=$(request 3 false)
    for mode in denied all; do
        start --config "$work/audit-$mode.toml"
        ghz_run Check "$r" 4 2s --insecure >/dev/null
        for c in 1 16; do
            echo "| 3_hops | $mode | $c | $round | $(ghz_run Check "$r" "$c" "$duration" --insecure) |"
        done
        stop
    done
done
