#!/usr/bin/env bash
# What metrics and traces cost a Check: the release `dhow serve` on one data dir of N
# relationships (`dhow-bench load`), restarted alternately without telemetry and with
# `--metrics-addr` (scraped every second) plus `--otlp-endpoint` pointed at a small OTLP
# receiver (scripts/otlp_sink.py, default sampling), `dhow-bench check` at 16 in flight for
# each after a warm-up as long as the run (caches filled), ROUNDS times, the order swapped
# every round. Prints one line per run; numbers go into docs/benchmarks.md.
# Usage: scripts/bench-telemetry.sh DHOW DHOW_BENCH [N] [DURATION] [ROUNDS]
set -euo pipefail
bin=$1 bench=$2 n=${3:-1000000} duration=${4:-10s} rounds=${5:-3}
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
# start (sets $addr), stop, and a cleanup of the server and $work on exit.
. "$repo/scripts/bench-lib.sh"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/dhow/otlp-venv"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q grpcio==1.85.3
fi
sink= scraper=
trap 'for p in $scraper $sink; do kill "$p" 2>/dev/null || true; done; cleanup' EXIT

otlp_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$venv/bin/python" "$repo/scripts/otlp_sink.py" "127.0.0.1:$otlp_port" >"$work/sink.log" 2>&1 &
sink=$!

start
"$bench" load -n "$n" --endpoint "http://$addr" | tail -n 1
stop

for round in $(seq "$rounds"); do
    order="off on"
    [ $((round % 2)) -eq 0 ] && order="on off"
    for mode in $order; do
        if [ "$mode" = on ]; then
            start --metrics-addr 127.0.0.1:0 --otlp-endpoint "http://127.0.0.1:$otlp_port"
            maddr=$(sed -n 's/.*metrics listening on \(http:[^ ]*\).*/\1/p' "$work/serve.log" | head -n 1)
            [ -n "$maddr" ] || { echo "no metrics address in the log"; cat "$work/serve.log"; exit 1; }
            (while true; do curl -s -o /dev/null "$maddr" || true; sleep 1; done) &
            scraper=$!
        else
            start
        fi
        printf 'round %s, telemetry %-3s: ' "$round" "$mode"
        "$bench" check -n "$n" -c 16 --duration "$duration" --warmup "$duration" --endpoint "http://$addr" | grep 'checks/s'
        kill "$scraper" 2>/dev/null || true
        scraper=
        stop
    done
done
sleep 6
echo "OTLP receiver: $(tail -n 1 "$work/sink.log")"
