#!/usr/bin/env bash
# Lints the public API protos and checks their formatting. Installs buf from npm if missing.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v buf >/dev/null 2>&1; then
  npm install -g @bufbuild/buf
fi
buf lint
buf format --diff --exit-code
# No breaking change to the wire (field numbers, names, types; rules FILE in buf.yaml)
# against the last commit: HEAD when the protos have uncommitted changes (a developer's
# tree), else the commit before HEAD (CI's clean clone of main). Skipped without history.
if [ -n "$(git status --porcelain -- . 2>/dev/null)" ]; then
  against=HEAD
else
  against=HEAD~1
fi
if git rev-parse --verify -q "$against" >/dev/null; then
  buf breaking --against "$(git rev-parse --show-toplevel)/.git#ref=$(git rev-parse "$against"),subdir=proto"
  echo "buf breaking: none against $against"
else
  echo "buf breaking: skipped ($against is not in this clone's history)"
fi
echo "proto check: ok"
