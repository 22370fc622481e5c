#!/usr/bin/env bash
# The worked example of docs/agents.md, against a running `dhow serve` whose [audit] mode is
# `all` (DHOW_ENDPOINT, default http://127.0.0.1:50051; DHOW_TOKEN if it authenticates).
# Usage: examples/agents/walkthrough.sh [path/to/dhow]
# Every step prints what it runs; the script stops at the first answer that is not the one
# docs/agents.md says (crates/dhow/tests/agents_example.rs runs it).
set -euo pipefail
DHOW=${1:-dhow}
HERE=$(cd "$(dirname "$0")" && pwd)

step() { echo; echo "\$ dhow $*"; "$DHOW" "$@"; }
expect() { # expect ANSWER dhow-args...: the first line printed must be ANSWER
    local want=$1; shift
    echo; echo "\$ dhow $*"
    local out; out=$("$DHOW" "$@" 2>/dev/null)
    echo "$out"
    local got; got=$(head -n1 <<<"$out")
    if [[ "$got" != "$want" ]]; then echo "expected $want, got $got" >&2; exit 1; fi
}

step schema write "$HERE/schema.zed"
# Alice edits two folders and owns a budget; bob owns his own document.
step rel touch folder:private#editor@user:alice folder:shared#editor@user:alice \
    document:notes#folder@folder:private document:plan#folder@folder:shared \
    document:budget#owner@user:alice document:bobs#owner@user:bob
# 1. The assistant acts for alice with everything she may do.
step rel touch agent:assistant#delegator@user:alice
expect true check document:plan#edit@user:alice --actor agent:assistant
expect false check document:bobs#view@user:alice --actor agent:assistant
# 2. A sub-agent that only reads for the assistant: view yes, edit no (its hop denies).
step rel touch agent:researcher#reader_for@agent:assistant
expect true check document:plan#view@user:alice --actor agent:researcher --actor agent:assistant
expect false check document:plan#edit@user:alice --actor agent:researcher --actor agent:assistant --explain
# 3. A delegation limited to one folder: the filer may read alice's private folder only.
step rel touch user:alice#delegate@agent:filer folder:private#viewer@user:alice#delegate
expect true check document:notes#view@user:alice --actor agent:filer
expect false check document:budget#view@user:alice --actor agent:filer
step lookup-resources document view user:alice --actor agent:filer
# 4. A time-boxed delegation whose time is over: the summariser acted for alice until 2020.
step rel touch "agent:summariser#delegator@user:alice[expiration:2020-01-01T00:00:00Z]"
expect false check document:plan#view@user:alice --actor agent:summariser
# 5. Alice revokes the assistant: the researcher's chain is denied at the assistant's hop.
step rel delete agent:assistant#delegator@user:alice
expect false check document:plan#view@user:alice --actor agent:researcher --actor agent:assistant --explain
# 6. What the audit log kept of the denials for alice.
step audit --principal user:alice --outcome denied
