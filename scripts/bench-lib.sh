# Shared by the ghz benchmark scripts (sourced, not run): starting and stopping a release
# `dhow serve` on $work/data, and one ghz run of a PermissionService call.
# The caller sets: $bin (the dhow binary), $work (a scratch dir), $repo (the repository).

pid=
cleanup() {
    if [ -n "$pid" ]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

# Starts the server with extra flags on $work/data; sets $addr.
start() {
    "$bin" serve --data-dir "$work/data" --grpc-addr 127.0.0.1:0 "$@" >"$work/serve.log" 2>&1 &
    pid=$!
    for _ in $(seq 300); do
        grep -q '^dhow node [0-9]* listening on ' "$work/serve.log" && break
        kill -0 "$pid" 2>/dev/null || { cat "$work/serve.log"; exit 1; }
        sleep 0.1
    done
    # The API's line (not "metrics listening on ..." when metrics are on).
    addr=$(sed -n 's/^dhow node [0-9]* listening on \([^ ]*\).*/\1/p' "$work/serve.log")
    [ -n "$addr" ] || { cat "$work/serve.log"; exit 1; }
}

stop() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=
}

# ghz_run METHOD REQUEST_JSON IN_FLIGHT DURATION [ghz flags...]: one closed-loop run against
# $addr, one connection per 4 calls in flight; prints "calls/s | p50 | p99 | errors".
ghz_run() {
    local method=$1 request=$2 c=$3 d=$4 conns
    shift 4
    conns=$(( c >= 4 ? c / 4 : 1 ))
    "${GHZ:-ghz}" --proto "$repo/proto/dhow/v1/permission_service.proto" \
        --import-paths "$repo/proto" --call "dhow.v1.PermissionService/$method" \
        -d "$request" -c "$c" --connections "$conns" -z "$d" \
        --format json -o "$work/ghz.json" "$@" "$addr" >/dev/null
    ghz_summary "$work/ghz.json"
}

# ghz_summary FILE: the row of one ghz JSON report: "calls/s | p50 | p99 | errors".
ghz_summary() {
    python3 - "$1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
lat = {int(p["percentage"]): p["latency"] / 1e6 for p in r.get("latencyDistribution") or []}
codes = r.get("statusCodeDistribution") or {}
# ghz ends the calls in flight when the duration is over ("transport is closing"): those
# are not the server's errors.
errs = r.get("errorDistribution") or {}
closing = sum(v for k, v in errs.items() if "transport is closing" in k or "Canceled" in k)
errors = sum(v for k, v in codes.items() if k != "OK") - closing
if errors:
    print(errs, file=sys.stderr)
print(f'{r["rps"]:,.0f} | {lat.get(50, 0):.3f} ms | {lat.get(99, 0):.3f} ms | {errors}')
PY
}
