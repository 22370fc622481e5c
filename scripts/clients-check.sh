#!/usr/bin/env bash
# The generated clients, end to end: installs what a fresh machine lacks (protoc-gen-go and
# protoc-gen-go-grpc from the Go module proxy into $(go env GOPATH)/bin, the Python example's
# requirements into examples/python/.venv from PyPI, the TypeScript example's packages (buf,
# protoc-gen-es, Connect-ES, tsx, tsc) into examples/ts/node_modules from npm), generates the
# Go, Python and TypeScript clients of dhow.v1 with proto/buf.gen.yaml (into proto/gen/,
# never committed), starts one real `dhow serve` on a free port with a temporary data dir,
# runs the three examples of examples/ against it and fails if any of them fails. Run by CI.
#
# Usage: scripts/clients-check.sh PATH/TO/dhow
#        scripts/clients-check.sh --generate-only     (install and generate, start nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

bin=${1:?usage: scripts/clients-check.sh PATH/TO/dhow | --generate-only}

# Pinned generator versions (the runtimes are pinned in examples/go/go.mod,
# examples/python/requirements.txt and examples/ts/package-lock.json).
protoc_gen_go=v1.36.12
protoc_gen_go_grpc=v1.6.2

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    export PATH="/usr/local/go/bin:$PATH"
fi
gobin="$(go env GOPATH)/bin"
venv="$root/examples/python/.venv"
export PATH="$gobin:$venv/bin:$root/examples/ts/node_modules/.bin:$PATH"

step() { echo "== $*"; }

step "installing the generators and the examples' dependencies"
if [ "$(protoc-gen-go --version 2>/dev/null)" != "protoc-gen-go $protoc_gen_go" ]; then
    GOBIN="$gobin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@$protoc_gen_go"
fi
if [ "$(protoc-gen-go-grpc --version 2>/dev/null)" != "protoc-gen-go-grpc ${protoc_gen_go_grpc#v}" ]; then
    GOBIN="$gobin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@$protoc_gen_go_grpc"
fi
[ -x "$venv/bin/python3" ] || python3 -m venv "$venv"
"$venv/bin/python3" -m pip install -q --disable-pip-version-check -r examples/python/requirements.txt
(cd examples/ts && npm ci --no-audit --no-fund --loglevel=error)

step "generating the clients (proto/buf.gen.yaml: Go, Python, TypeScript into proto/gen)"
(cd proto && buf generate)
# The generated Go package is a module of its own, which examples/go/go.mod replaces with
# this directory; its dependencies are those of the module that uses it.
printf 'module github.com/dhow-authz/dhow/gen/go\n\ngo 1.24\n' >proto/gen/go/go.mod
# The TypeScript example compiles the generated code inside its package (so that its imports
# of @bufbuild/protobuf resolve to examples/ts/node_modules), beside google.rpc's ErrorInfo.
rm -rf examples/ts/gen
(cd examples/ts && buf generate)
cp -R proto/gen/ts/dhow examples/ts/gen/
for d in proto/gen/go/dhow/v1 proto/gen/python/dhow/v1 proto/gen/ts/dhow/v1; do
    [ -n "$(ls -A "$d")" ] || { echo "nothing generated in $d" >&2; exit 1; }
done
[ ! -e proto/gen/go/dhow/internal ] && [ ! -e proto/gen/python/dhow/internal ] && [ ! -e proto/gen/ts/dhow/internal ] ||
    { echo "dhow.internal was generated: the template must cover the public API only" >&2; exit 1; }

if [ "$bin" = --generate-only ]; then
    echo "clients generated in proto/gen (go, python, ts)"
    exit 0
fi

work=$(mktemp -d)
pid=
cleanup() {
    [ -n "$pid" ] && { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }
    rm -rf "$work"
}
trap cleanup EXIT

step "starting dhow serve"
"$bin" serve --data-dir "$work/data" --grpc-addr 127.0.0.1:0 >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 300); do
    grep -q ' listening on ' "$work/serve.log" && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
    sleep 0.1
done
addr=$(sed -n 's/.* listening on \([^ ]*\).*/\1/p' "$work/serve.log")
[ -n "$addr" ] || { echo "dhow serve did not start:"; cat "$work/serve.log"; exit 1; }
echo "server: $addr"

passed=0
failed=()
example() {
    local name=$1
    shift
    step "example: $name"
    if "$@"; then
        passed=$((passed + 1))
    else
        echo "example $name FAILED" >&2
        failed+=("$name")
    fi
}
example go bash -c 'cd examples/go && go vet . && go run . "$1"' _ "$addr"
example python "$venv/bin/python3" examples/python/main.py "$addr"
example ts bash -c 'cd examples/ts && tsc --noEmit -p . && tsx main.ts "$1"' _ "$addr"

if [ ${#failed[@]} -gt 0 ]; then
    echo "server log:"
    tail -n 50 "$work/serve.log"
    echo "failed: ${failed[*]}"
fi
echo "clients: $passed passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
