#!/usr/bin/env bash
# The public API as a generic gRPC client sees it, through server reflection alone: grpcurl
# (from the Go module proxy, installed when missing) against a real `dhow serve` lists the
# services, writes a schema and a relationship, calls a Check, decodes a refused call's
# ErrorInfo and BadRequest, and describes dhow.v1.ErrorReason: the commands of
# docs/operations.md "Errors". Run by CI (.ci/run) with the debug binary `just test` built.
#
# Usage: scripts/grpcurl-check.sh PATH/TO/dhow
set -euo pipefail

bin=${1:?usage: scripts/grpcurl-check.sh PATH/TO/dhow}
work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
    rm -rf "$work"
}
trap cleanup EXIT

grpcurl=$(command -v grpcurl || true)
if [ -z "$grpcurl" ]; then
    gobin="$(go env GOPATH)/bin"
    [ -x "$gobin/grpcurl" ] || go install github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.4
    grpcurl="$gobin/grpcurl"
fi

"$bin" serve --data-dir "$work/data" --grpc-addr 127.0.0.1:0 >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
    grep -q ' listening on ' "$work/serve.log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
    sleep 0.1
done
addr=$(sed -n 's/.* listening on \([^ ]*\).*/\1/p' "$work/serve.log")
[ -n "$addr" ] || { cat "$work/serve.log"; exit 1; }
g() { "$grpcurl" -plaintext "$@"; }
fail() { echo "grpcurl check: $*" >&2; exit 1; }

services=$(g "$addr" list)
for s in dhow.v1.PermissionService dhow.v1.RelationshipService dhow.v1.SchemaService grpc.health.v1.Health; do
    grep -qx "$s" <<<"$services" || fail "reflection does not list $s (got: $services)"
done

g -d '{"schema":"definition user {}\ndefinition doc {\n  relation viewer: user\n  permission view = viewer\n}"}' \
    "$addr" dhow.v1.SchemaService/WriteSchema >/dev/null
g -d '{"updates":[{"operation":"OPERATION_TOUCH","relationship":{"resource":{"object_type":"doc","object_id":"readme"},"relation":"viewer","subject":{"object":{"object_type":"user","object_id":"ann"}}}}]}' \
    "$addr" dhow.v1.RelationshipService/Write >/dev/null
check=$(g -d '{"resource":{"object_type":"doc","object_id":"readme"},"permission":"view","subject":{"object":{"object_type":"user","object_id":"ann"}},"consistency":{"fully_consistent":true}}' \
    "$addr" dhow.v1.PermissionService/Check)
grep -q 'PERMISSIONSHIP_HAS_PERMISSION' <<<"$check" || fail "Check did not answer HAS_PERMISSION: $check"

# A refused call: its details decode through reflection (no "is not recognized").
refused=$(g -d '{"resource":{"object_type":"Bad Type","object_id":"x"},"permission":"view","subject":{"object":{"object_type":"user","object_id":"a"}}}' \
    "$addr" dhow.v1.PermissionService/Check 2>&1 || true)
for want in 'Code: InvalidArgument' '"reason": "INVALID_FIELD"' '"domain": "dhow.dev"' 'google.rpc.BadRequest'; do
    grep -qF "$want" <<<"$refused" || fail "the refused Check lacks $want: $refused"
done
! grep -q 'not recognized' <<<"$refused" || fail "error details not decoded: $refused"

g "$addr" describe dhow.v1.ErrorReason | grep -q 'ERROR_REASON_MALFORMED_REQUEST' ||
    fail "describe dhow.v1.ErrorReason lacks ERROR_REASON_MALFORMED_REQUEST"
echo "grpcurl check: ok (list, WriteSchema, Write, Check, a refused call's details, describe)"
