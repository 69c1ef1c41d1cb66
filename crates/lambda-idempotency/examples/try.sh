#!/usr/bin/env bash
# Tries the layer in one command: examples/payments.rs under `cargo lambda
# watch`, against a redis-server of its own, then three requests with curl:
# a payment under a key (201), its retry (the same 201, replayed), and the
# same key with another amount (422). Everything it starts is stopped on
# exit. Needs redis-server, curl and cargo-lambda (pip install cargo-lambda).
#
#   bash examples/try.sh          (from crates/lambda-idempotency)
set -euo pipefail
cd "$(dirname "$0")/.."

for tool in redis-server curl cargo-lambda python3; do
  command -v "$tool" >/dev/null || {
    echo "error: $tool is required (redis-server, curl: apt-get install redis-server curl; cargo-lambda: pip install cargo-lambda)" >&2
    exit 1
  }
done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port="$(free_port)"
watch_port="$(free_port)"
work="$(mktemp -d)"
watch_pid=""
# Every process below $1 (watch starts the function in a group of its own).
descendants() {
  local child
  for child in $(pgrep -P "$1" 2>/dev/null); do echo "$child"; descendants "$child"; done
}
cleanup() {
  if [ -n "$watch_pid" ]; then
    local below
    below="$(descendants "$watch_pid")"
    kill -- "-$watch_pid" 2>/dev/null || true
    [ -n "$below" ] && kill $below 2>/dev/null || true
  fi
  [ -f "$work/redis.pid" ] && kill "$(cat "$work/redis.pid")" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$work/redis.pid" --logfile "$work/redis.log" --dir "$work"
echo "==> cargo lambda watch --example payments on :$watch_port (the first build takes a while)"
setsid cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$watch_port" --example payments \
  --env-var "REDIS_URL=redis://127.0.0.1:$redis_port" --env-var IDEMPOTENCY_SCOPE=anonymous \
  >"$work/watch.log" 2>&1 &
watch_pid=$!
url="http://127.0.0.1:$watch_port/payments"
for _ in $(seq 600); do
  curl -s -o /dev/null "http://127.0.0.1:$watch_port/" && break
  kill -0 "$watch_pid" 2>/dev/null || { cat "$work/watch.log" >&2; exit 1; }
  sleep 1
done

pay() {
  echo
  echo "==> POST /payments, Idempotency-Key: $1, amount $2"
  curl -s -i -X POST "$url" -H 'content-type: application/json' -H "Idempotency-Key: $1" -d "$2" \
    | grep -iE '^HTTP/|^idempotent-replayed|^\{' || true
}
key="try-$(date +%s)"
pay "$key" 42
pay "$key" 42
pay "$key" 43
