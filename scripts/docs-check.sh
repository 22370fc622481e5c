#!/usr/bin/env bash
# Runs the documentation against real processes, so it cannot drift from the binary:
#
# - docs/operations.md: every ```sh block, as written, in a scratch directory with `dhow` on
#   the PATH (the binary given), in the order of a session: one node (with metrics), three
#   nodes on one machine, cluster status and health, adding a node, removing one,
#   replacing a failed one, maintenance (with a compaction), a rolling upgrade, backup and
#   restore, peer TLS with the certificates the doc makes. A `dhow serve` line is started in the background
#   and waited for; every other command must succeed, and each step is then checked (the
#   membership, the leader, health, the relationships). Every sh block must be run by a
#   step below or skipped by name (docker-compose and Kubernetes, checked by
#   deploy/check.sh), so a block added to the doc without a step here, or a step whose
#   block is gone, fails the check.
# - docs/schema.md: every example schema is written to a real server, and every error
#   quoted must be what the server prints (scripts/docs-check-schema.py); and the
#   new-enemy example of docs/consistency.md must answer false.
#
# The doc's ports (127.0.0.1:50051-50055, 50061-50065, 9090) must be free. About a minute.
#
# Usage: scripts/docs-check.sh PATH/TO/dhow
set -euo pipefail

bin=$(realpath "${1:?usage: scripts/docs-check.sh PATH/TO/dhow}")
repo=$(cd "$(dirname "$0")/.." && pwd)
ops="$repo/docs/operations.md"
work=$(mktemp -d)
declare -A node_pid=()

cleanup() {
    local id
    for id in "${!node_pid[@]}"; do kill -9 "${node_pid[$id]}" 2>/dev/null || true; done
    for id in "${!node_pid[@]}"; do wait "${node_pid[$id]}" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
set -E
trap 'echo "docs check: failed: \`$BASH_COMMAND\` (in ${current:-setup})" >&2; show_logs' ERR
trap 'fail "interrupted"' INT TERM

show_logs() {
    local log
    for log in "$work"/logs/*.log; do
        if [ -f "$log" ]; then
            echo "--- last lines of $log" >&2
            tail -n 5 "$log" >&2
        fi
    done
}

fail() {
    echo "docs check: $* (in ${current:-setup})" >&2
    show_logs
    exit 1
}

# The client commands of the doc find the binary on the PATH, and no setting of the caller's
# environment (DHOW_ENDPOINT, DHOW_TOKEN, ...) changes what they do.
mkdir -p "$work/bin" "$work/logs" "$work/blocks"
ln -s "$bin" "$work/bin/dhow"
export PATH="$work/bin:$PATH"
while read -r v; do unset "$v"; done < <(compgen -e | grep '^DHOW_' || true)

for port in 50051 50052 50053 50054 50055 50061 50062 50063 50064 50065 9090; do
    python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null ||
        fail "port $port is in use: the doc's commands need it (stop the process on it)"
done

# --- The sh blocks of operations.md: blocks/N.sh, and index.tsv lines "N<TAB>heading<TAB>K"
# (the K-th sh block under that heading). Indented blocks (in a list) are dedented.
python3 - "$ops" "$work/blocks" <<'PY'
import re, sys
doc, out = sys.argv[1], sys.argv[2]
lines = open(doc).read().split("\n")
heading, count, n, i = "", {}, 0, 0
index = []
while i < len(lines):
    line = lines[i]
    h = re.match(r"^#{2,3} (.*)$", line)
    if h:
        heading = h.group(1).strip()
    fence = re.match(r"^(\s*)```(\w*)\s*$", line)
    if fence:
        indent, lang = fence.group(1), fence.group(2)
        j = i + 1
        while j < len(lines) and lines[j].strip() != "```":
            j += 1
        if lang == "sh":
            n += 1
            count[heading] = count.get(heading, 0) + 1
            body = [l[len(indent):] if l.startswith(indent) else l for l in lines[i + 1 : j]]
            open(f"{out}/{n}.sh", "w").write("\n".join(body) + "\n")
            index.append(f"{n}\t{heading}\t{count[heading]}")
        i = j + 1
        continue
    i += 1
open(f"{out}/index.tsv", "w").write("\n".join(index) + "\n")
PY
declare -A used=()

# block HEADING K: sets $block_file to the K-th sh block under HEADING (marked as run).
block() {
    local n
    n=$(awk -F'\t' -v h="$1" -v k="$2" '$2 == h && $3 == k { print $1 }' "$work/blocks/index.tsv")
    [ -n "$n" ] || fail "docs/operations.md has no sh block $2 under \"$1\" (update scripts/docs-check.sh with the doc)"
    used[$n]=1
    block_file="$work/blocks/$n.sh"
}

# run_block HEADING K [SED]: runs that block in the current directory, in this shell (so
# its variables, such as CLUSTER, stay set), with `dhow serve` lines started in the
# background (start_node); SED, if given, edits the text first (the same step for another
# node). A failing command fails the check (set -e; the ERR trap names it).
current="setup"
run_block() {
    local script
    block "$1" "$2"
    script=$(sed -E 's/^dhow serve( |$)/start_node /' "$block_file")
    if [ -n "${3:-}" ]; then script=$(sed -E "$3" <<<"$script"); fi
    current="\"$1\" block $2${3:+ (edited: $3)}"
    echo "== $current" >&2
    eval "$script"
    current="the checks after $current"
}

skip_section() {
    local n
    for n in $(awk -F'\t' -v h="$1" '$2 == h { print $1 }' "$work/blocks/index.tsv"); do used[$n]=1; done
}

# start_node ARGS...: `dhow serve ARGS` in the background, its log in logs/node-ID.log;
# waits until it listens.
start_node() {
    local id=1 a prev=""
    for a in "$@"; do
        [ "$prev" = --node-id ] && id=$a
        prev=$a
    done
    [ -z "${node_pid[$id]:-}" ] || fail "node $id started twice"
    local log="$work/logs/node-$id.log"
    : >"$log"
    "$bin" serve "$@" >>"$log" 2>&1 &
    node_pid[$id]=$!
    for _ in $(seq 300); do
        grep -q ' listening on ' "$log" && return 0
        kill -0 "${node_pid[$id]}" 2>/dev/null || fail "node $id exited at start"
        sleep 0.1
    done
    fail "node $id did not listen within 30 s"
}

# stop_node ID [SIGNAL]: stops the node (SIGTERM by default) and waits for it.
stop_node() {
    local pid=${node_pid[$1]:?no node $1}
    kill "-${2:-TERM}" "$pid" 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && fail "node $1 did not stop within 30 s of SIG${2:-TERM}"
    wait "$pid" 2>/dev/null || true
    unset "node_pid[$1]"
}

stop_all() {
    local id
    for id in "${!node_pid[@]}"; do stop_node "$id"; done
}

# wait_serving PORT: until the node on 127.0.0.1:PORT says SERVING (at most 30 s).
wait_serving() {
    for _ in $(seq 300); do
        dhow health --endpoint "http://127.0.0.1:$1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    fail "the node on port $1 is not SERVING after 30 s"
}

# leader PORT: the leader's id as the node on PORT sees it.
leader() {
    dhow cluster status --endpoint "http://127.0.0.1:$1" | sed -n 's/.*, leader \([0-9]*\),.*/\1/p'
}

# wait_leader PORT ID: until the node on PORT names ID as the leader (at most 10 s).
wait_leader() {
    for _ in $(seq 100); do
        [ "$(leader "$1" 2>/dev/null || true)" = "$2" ] && return 0
        sleep 0.1
    done
    fail "node $2 does not lead 10 s later (the node on port $1 says: $(leader "$1" || true))"
}

# voters PORT: the ids of the voters, sorted, on one line.
voters() {
    dhow cluster status --endpoint "http://127.0.0.1:$1" |
        awk 'NR > 2 && ($2 == "leader" || $2 == "follower" || $2 == "voter" || $2 == "candidate") { print $1 }' | sort -n | tr '\n' ' '
}

# expect_true PORT REL: a fully consistent check on that node says true.
expect_true() {
    local got
    got=$(dhow check "$2" --consistency fully-consistent --endpoint "http://127.0.0.1:$1" 2>/dev/null) ||
        fail "check $2 on port $1 failed"
    [ "$got" = true ] || fail "check $2 on port $1 says $got, expected true"
}

# A fresh scratch directory for a part of the session.
fresh_dir() {
    stop_all
    rm -rf "$work/run" "$work"/logs/*.log
    mkdir -p "$work/run"
    cd "$work/run"
}

# ---------------------------------------------------------------------------------------
# One node, and its metrics.
fresh_dir
export DHOW_METRICS_ADDR=127.0.0.1:9090
run_block "One node" 1
unset DHOW_METRICS_ADDR
wait_serving 50051
dhow schema write "$repo/examples/schema.zed" >/dev/null
n=$(awk -F'\t' '$2 == "Metrics"' "$work/blocks/index.tsv" | wc -l)
for k in $(seq "$n"); do run_block "Metrics" "$k" >/dev/null; done

# Three nodes on one machine; their status and health.
fresh_dir
run_block "Three nodes on one machine" 1
for p in 50051 50052 50053; do wait_serving $p; done
dhow schema write "$repo/examples/schema.zed" >/dev/null
dhow rel create 'document:readme#viewer@user:alice' >/dev/null
run_block "Cluster status" 1
run_block "Cluster status" 2
[ "$(voters 50051)" = "1 2 3 " ] || fail "voters after start: $(voters 50051)"

# Adding node 4 (a learner, then a voter).
run_block "Adding a node" 1
run_block "Adding a node" 2
wait_serving 50054
expect_true 50054 'document:readme#view@user:alice'
run_block "Adding a node" 3
[ "$(voters 50051)" = "1 2 3 4 " ] || fail "voters after adding node 4: $(voters 50051)"

# Removing node 3; then it is stopped and its data dir deleted, as the doc says.
run_block "Removing a node" 1
wait_leader 50051 2
[ "$(voters 50051)" = "1 2 4 " ] || fail "voters after removing node 3: $(voters 50051)"
stop_node 3
rm -rf data3

# Replacing node 2 after a failure (kill -9, the machine lost).
stop_node 2 KILL
for _ in $(seq 300); do
    l=$(leader 50051 2>/dev/null || true)
    [ -n "$l" ] && [ "$l" != 2 ] && break
    sleep 0.1
done
[ "$(leader 50051)" != 2 ] || fail "no new leader 30 s after node 2 was killed"
wait_serving 50051
run_block "Replacing a failed node" 1
run_block "Replacing a failed node" 2
run_block "Replacing a failed node" 3
wait_serving 50055
[ "$(voters 50051)" = "1 4 5 " ] || fail "voters after replacing node 2: $(voters 50051)"
dhow rel create 'document:readme#viewer@user:bob' >/dev/null
expect_true 50055 'document:readme#view@user:alice'
expect_true 50055 'document:readme#view@user:bob'

# Maintenance and a rolling upgrade, on a new three-node cluster.
fresh_dir
run_block "Three nodes on one machine" 1
for p in 50051 50052 50053; do wait_serving $p; done
dhow schema write "$repo/examples/schema.zed" >/dev/null
dhow rel create 'document:readme#viewer@user:alice' >/dev/null
run_block "Maintenance on a node" 1
wait_leader 50053 2
# Followers first, the leader (node 2) last: each stopped with SIGTERM, started again with
# the doc's command for that node, and SERVING before the next; a write through another
# node after each.
for id in 1 3 2; do
    stop_node "$id" TERM
    if [ "$id" = 1 ]; then
        run_block "Maintenance on a node" 2 >"$work/compact.out"
        grep -q '^tuples ' "$work/compact.out" ||
            fail "dhow compact printed no sizes: $(cat "$work/compact.out")"
    fi
    if [ "$id" = 2 ]; then
        grep -q 'stopping: leadership handed over' "$work/logs/node-2.log" ||
            fail "the leader did not log 'stopping: leadership handed over' on SIGTERM"
    fi
    run_block "Rolling upgrade" 1 "s/--node-id 1 /--node-id $id /; s/data1/data$id/; s/127\.0\.0\.1:50051/127.0.0.1:5005$id/g; s/127\.0\.0\.1:50061/127.0.0.1:5006$id/" >/dev/null
    other=$(( id % 3 + 1 ))
    dhow rel create "document:readme#viewer@user:after$id" --endpoint "http://127.0.0.1:5005$other" >/dev/null
    expect_true "5005$id" "document:readme#view@user:after$id"
done
expect_true 50052 'document:readme#view@user:alice'

# Backup from that cluster, restore into a fresh one-node cluster (the doc's "One node").
run_block "Backup and restore" 1
[ -s rels.txt ] && [ -s schema.zed ] || fail "the backup wrote no rels.txt or schema.zed"
stop_all
mkdir -p "$work/restore"
cp rels.txt schema.zed "$work/restore/"
sort rels.txt >"$work/before.txt"
cp schema.zed "$work/schema-before.zed"
fresh_dir
cp "$work/restore/rels.txt" "$work/restore/schema.zed" .
run_block "One node" 1
wait_serving 50051
run_block "Backup and restore" 2
dhow rel export --consistency fully-consistent 2>/dev/null | sort >"$work/after.txt"
diff -u "$work/before.txt" "$work/after.txt" || fail "the restored relationships differ"
dhow schema read | diff -u "$work/schema-before.zed" - || fail "the restored schema differs"

# Peer TLS with the certificates the doc makes.
fresh_dir
run_block "Making a CA and certificates" 1 >/dev/null 2>&1
CLUSTER=1=127.0.0.1:50061,2=127.0.0.1:50062,3=127.0.0.1:50063
run_block "Making a CA and certificates" 2
for p in 50051 50052 50053; do wait_serving $p; done
dhow schema write "$repo/examples/schema.zed" >/dev/null
dhow rel create 'document:readme#viewer@user:alice' --endpoint http://127.0.0.1:50052 >/dev/null
expect_true 50053 'document:readme#view@user:alice'
stop_all

# Not run here: the container and cluster-manager blocks, which need docker or a Kubernetes
# cluster; deploy/check.sh checks those files (helm lint and template, compose config, the
# manifests against `dhow serve --help`).
skip_section "docker-compose"
skip_section "Kubernetes"

missing=""
while IFS=$'\t' read -r n heading k; do
    [ -n "${used[$n]:-}" ] || missing+="  \"$heading\" block $k:
$(sed 's/^/    /' "$work/blocks/$n.sh")
"
done <"$work/blocks/index.tsv"
[ -z "$missing" ] || fail "sh blocks of docs/operations.md that no step of scripts/docs-check.sh runs:
$missing"
echo "docs check: docs/operations.md: $(wc -l <"$work/blocks/index.tsv") sh blocks run or skipped by name"

# ---------------------------------------------------------------------------------------
# docs/schema.md, against a fresh one-node server.
fresh_dir
current="docs/schema.md"
mkdir -p "$work/schema"
DHOW_GRPC_ADDR=127.0.0.1:50051 start_node --data-dir "$work/run/data"
wait_serving 50051
python3 "$repo/scripts/docs-check-schema.py" "$repo/docs/schema.md" "$work/schema" ||
    fail "docs/schema.md differs from what the server says"

# docs/consistency.md's new-enemy example, with the schema it names (schema.md's whole
# schema): the check after the revocation and the new content says false.
current="docs/consistency.md"
python3 - "$repo/docs/schema.md" "$repo/docs/consistency.md" "$work/schema" <<'PY'
import re, sys
schema, consistency, out = sys.argv[1:]
whole = re.search(r"## A whole schema\n\n```zed\n(.*?)```", open(schema).read(), re.S)
blocks = [b for b in re.findall(r"^```sh\n(.*?)^```", open(consistency).read(), re.S | re.M) if "--at-least-as-fresh" in b]
assert whole and len(blocks) == 1, "expected schema.md's whole schema and one sh block with --at-least-as-fresh in consistency.md"
open(f"{out}/whole.zed", "w").write(whole.group(1))
open(f"{out}/new-enemy.sh", "w").write(blocks[0])
PY
dhow schema write "$work/schema/whole.zed" >/dev/null
dhow rel create 'folder:plans#viewer@user:bob' >/dev/null
got=$(cd "$work/schema" && bash -e new-enemy.sh)
[ "$got" = false ] || fail "docs/consistency.md's example printed '$got', not false"
stop_all
echo "docs check: ok"
