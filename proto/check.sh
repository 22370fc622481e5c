#!/usr/bin/env bash
# Lints the public API protos and checks their formatting. Installs buf from npm if missing.
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v buf >/dev/null 2>&1; then
  npm install -g @bufbuild/buf
fi
buf lint
buf format --diff --exit-code
echo "proto check: ok"
