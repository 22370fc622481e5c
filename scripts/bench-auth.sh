#!/usr/bin/env bash
# What authentication and TLS cost a Check, measured from a Go client (ghz) against a release
# `dhow serve`: the same data dir served in turn with no authentication, a preshared key, a
# JWT (RS256; verified once then cached, and verified on every call with the cache off), and
# TLS on the public port. Each variant runs ROUNDS times, interleaved with the others, at 1
# and at 16 calls in flight. Prints one markdown row per run.
#
# Usage: scripts/bench-auth.sh [N relationships] [duration] [rounds]
# Needs: $DHOW_BIN (default $CARGO_TARGET_DIR/release/dhow), $DHOW_BENCH_BIN (default
# $CARGO_TARGET_DIR/release/dhow-bench), ghz and openssl on the PATH (`just bench-auth`
# builds and installs them).
set -euo pipefail

n=${1:-100000}
duration=${2:-10s}
rounds=${3:-2}
repo=$(cd "$(dirname "$0")/.." && pwd)
bin=${DHOW_BIN:-$CARGO_TARGET_DIR/release/dhow}
bench=${DHOW_BENCH_BIN:-$CARGO_TARGET_DIR/release/dhow-bench}
work=$(mktemp -d)
. "$repo/scripts/bench-lib.sh"

b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }

# Credentials: a preshared key, an RSA key for the JWT issuer, a CA and a server certificate.
key=bench-preshared-key-0123456789abcdef
digest=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
mkdir -p "$work/keys"
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/jwt.key" 2>/dev/null
openssl pkey -in "$work/jwt.key" -pubout -out "$work/keys/k1.pem"
now=$(date +%s)
header=$(printf '{"alg":"RS256","typ":"JWT","kid":"k1"}' | b64url)
payload=$(printf '{"iss":"https://idp.bench","aud":"dhow","sub":"bench","scope":"dhow.read","iat":%d,"exp":%d}' "$now" $((now + 86400)) | b64url)
signature=$(printf %s "$header.$payload" | openssl dgst -sha256 -sign "$work/jwt.key" | b64url)
jwt="$header.$payload.$signature"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bench CA" \
    -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$work/server.key" -out "$work/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$work/san.ext"
openssl x509 -req -in "$work/server.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" \
    -CAcreateserial -days 2 -extfile "$work/san.ext" -out "$work/server.crt" 2>/dev/null

cat >"$work/psk.toml" <<EOF
[[auth.preshared_keys]]
name = "bench"
sha256 = "$digest"
roles = ["read"]
EOF
issuer() {
    cat <<EOF
[[auth.jwt_issuers]]
issuer = "https://idp.bench"
audiences = ["dhow"]
algorithms = ["RS256"]
pem_files = ["$work/keys/k1.pem"]
roles_claim = "scope"
roles = { "dhow.read" = "read" }
EOF
}
issuer >"$work/jwt.toml"
{ printf '[auth]\njwt_cache_entries = 0\n\n'; issuer; } >"$work/jwt-nocache.toml"

start
"$bench" load -n "$n" --endpoint "http://$addr" >&2
stop

# `document:target#view@user:u000000`: the owner, allowed directly. The cheapest check of the
# data set, so the one where what authentication adds weighs most.
request='{"resource":{"object_type":"document","object_id":"target"},"permission":"view","subject":{"object":{"object_type":"user","object_id":"u000000"}}}'

echo "| Variant | In flight | Round | Calls/s | p50 | p99 | Errors |"
echo "|---|---|---|---|---|---|---|"
for round in $(seq "$rounds"); do
    for variant in none psk jwt-cached jwt-uncached tls; do
        client=(--insecure)
        case $variant in
        none) start ;;
        psk) start --config "$work/psk.toml"; client+=(-m "{\"authorization\":\"Bearer $key\"}") ;;
        jwt-cached) start --config "$work/jwt.toml"; client+=(-m "{\"authorization\":\"Bearer $jwt\"}") ;;
        jwt-uncached) start --config "$work/jwt-nocache.toml"; client+=(-m "{\"authorization\":\"Bearer $jwt\"}") ;;
        tls)
            start --tls-cert-file "$work/server.crt" --tls-key-file "$work/server.key"
            client=(--cacert "$work/ca.crt" --cname localhost)
            ;;
        esac
        ghz_run Check "$request" 4 2s "${client[@]}" >/dev/null # warm-up (and the first verification of the JWT)
        for c in 1 16; do
            echo "| $variant | $c | $round | $(ghz_run Check "$request" "$c" "$duration" "${client[@]}") |"
        done
        stop
    done
done
