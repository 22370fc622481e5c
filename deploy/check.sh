#!/usr/bin/env bash
# Checks the deployment files: helm lint and helm template of the chart, then
# check_manifests.py over docker-compose, the Kubernetes manifests, the rendered chart and the
# Dockerfile (cluster wiring, probes, and every --flag against the binary's --help).
# Usage: bash deploy/check.sh [PATH_TO_DHOW]   (default $CARGO_TARGET_DIR/debug/dhow)
# Installs helm (Go module proxy) and PyYAML (pip) when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_VERSION=v3.22.0
DHOW="${1:-${CARGO_TARGET_DIR:-$HOME/.cache/dhow/target}/debug/dhow}"

# helm: on PATH, or in Go's bin directory, or installed there (a few minutes, once).
find_helm() {
  local gobin
  if command -v helm >/dev/null 2>&1; then command -v helm; return; fi
  if command -v go >/dev/null 2>&1; then
    gobin="$(go env GOBIN)"
    [ -n "$gobin" ] || gobin="$(go env GOPATH)/bin"
  else
    gobin="$HOME/go/bin"
  fi
  if [ -x "$gobin/helm" ]; then echo "$gobin/helm"; return; fi
  command -v go >/dev/null 2>&1 || { echo "error: helm is missing and go is not installed to build it" >&2; return 1; }
  echo "installing helm $HELM_VERSION into $gobin (go install, a few minutes)" >&2
  go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2
  echo "$gobin/helm"
}
HELM="$(find_helm)"

python3 -c 'import yaml' 2>/dev/null || { echo "installing PyYAML (pip)"; pip install -q pyyaml; }

CHART=deploy/helm/dhow
NAMESPACE=dhow-check
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

echo "== helm lint ($("$HELM" version --short))"
"$HELM" lint --strict "$CHART"
for n in 3 5; do
  "$HELM" template dhow "$CHART" --namespace "$NAMESPACE" --set replicaCount="$n" \
    > "$out/rendered-$n.yaml"
done
echo "helm template: rendered with replicaCount=3 and 5"
# The optional ServiceMonitor (off by default) renders, and selects the metrics port.
"$HELM" template dhow "$CHART" --namespace "$NAMESPACE" \
  --set metrics.serviceMonitor.enabled=true > "$out/rendered-sm.yaml"
grep -q '^kind: ServiceMonitor' "$out/rendered-sm.yaml" \
  || { echo "helm template: no ServiceMonitor with metrics.serviceMonitor.enabled=true"; exit 1; }
grep -q 'port: metrics' "$out/rendered-sm.yaml" \
  || { echo "helm template: the ServiceMonitor does not scrape the metrics port"; exit 1; }
echo "helm template: the ServiceMonitor renders when enabled"

echo "== flag checker self-test"
python3 deploy/check_manifests.py --self-test

echo "== manifests (flags from $DHOW)"
python3 deploy/check_manifests.py --dhow "$DHOW" \
  --compose deploy/docker-compose.yml --kubernetes deploy/kubernetes \
  --dockerfile deploy/Dockerfile --chart "$CHART" --namespace "$NAMESPACE" \
  --rendered "3:$out/rendered-3.yaml" --rendered "5:$out/rendered-5.yaml"
echo "deploy check: ok"
