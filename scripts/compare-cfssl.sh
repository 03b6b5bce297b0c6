#!/usr/bin/env bash
# certd against CFSSL, side by side, on this machine: the comparison in
# docs/PERFORMANCE.md ("certd and CFSSL"), so anyone can run it again.
#
# Three signers, each loaded by `certd bench` with the same harness and CSR
# pool (P-256 keys, one connection per caller):
#   certd         `certd bench issue`: gRPC over TLS, a join token attested
#                 per request, the record durable (fdatasync) before the answer;
#   cfssl         `cfssl serve` without a database: `certd bench cfssl-sign`
#                 (POST /api/v1/cfssl/sign over plain HTTP, no authentication);
#   cfssl-sqlite  the same with CFSSL's SQLite certdb (every certificate stored).
# Rounds alternate between the three, so drift (other load, thermal) hits each
# alike. With PIN=1 (the default) each signer runs on the first CPU this
# script may use (CPU 0 on a whole machine) and the loader on the second
# (`taskset`); PIN=0 leaves both on every CPU. Each run also reports the
# signer's CPU time per request, from /proc, between the run's first and last
# progress lines (certd's token preparation and cleanup left out).
#
# Usage: scripts/compare-cfssl.sh            (from the repository root)
# Settings (environment): CERTD_BIN (default target/release/certd, built if
# missing), ROUNDS (3), DURATION (10s; whole seconds, at least 3s), CONCURRENCY (64), PIN (1), WORK_DIR
# (a new temporary directory, removed at the end), PORT_BASE (18400: certd
# takes PORT_BASE and +1, CFSSL +2 and +3).
# Needs: cfssl and cfssljson (Debian: golang-cfssl, installed when missing and
# running as root), python3, taskset, curl.
# Output: one line per run, then a Markdown table of medians; with JSON=1 the
# last line is one JSON object with every run.
set -euo pipefail

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONCURRENCY=${CONCURRENCY:-64}
PIN=${PIN:-1}
PORT_BASE=${PORT_BASE:-18400}
CERTD_BIN=${CERTD_BIN:-target/release/certd}
export ROUNDS DURATION CONCURRENCY PIN

fail() { echo "compare-cfssl: $*" >&2; exit 1; }

if ! command -v cfssl >/dev/null || ! command -v cfssljson >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq golang-cfssl >/dev/null || { apt-get update -qq && apt-get install -y -qq golang-cfssl >/dev/null; }
  else
    fail "cfssl is not installed: apt-get install golang-cfssl (Debian), then run this again"
  fi
fi
. "$(dirname "$0")/lib/sampled-bench.sh"
check_settings

if [ -n "${WORK_DIR:-}" ]; then
  mkdir -p "$WORK_DIR"; work=$(realpath "$WORK_DIR"); keep_work=1
else
  work=$(mktemp -d); keep_work=0
fi
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ "$keep_work" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

grpc_port=$PORT_BASE; http_port=$((PORT_BASE + 1))
cfssl_port=$((PORT_BASE + 2)); cfssl_db_port=$((PORT_BASE + 3))

# The signer's CPU and the loader's, when pinned (check_settings).
if [ "$PIN" = 1 ]; then
  on_signer=(taskset -c "$SERVER_CPU"); on_loader=(taskset -c "$LOADER_CPU")
else
  on_signer=(); on_loader=()
fi

# certd, with its CA made by `certd init`.
"$CERTD_BIN" init --data-dir "$work/certd" >/dev/null
CERTD_LOG=warn "${on_signer[@]}" "$CERTD_BIN" serve --data-dir "$work/certd" \
  --grpc-addr "127.0.0.1:$grpc_port" --http-addr "127.0.0.1:$http_port" \
  >"$work/certd.out" 2>"$work/certd.log" &
certd_pid=$!; pids+=("$certd_pid")

# CFSSL: a P-256 CA, a 24-hour profile like certd's, and its SQLite certdb
# (the schema of CFSSL's certdb/sqlite migrations). Without a busy timeout
# CFSSL answers "database is locked" (HTTP 400) to most of 64 concurrent
# signers; with it they queue for SQLite's one writer.
mkdir -p "$work/cfssl"
echo '{"CN":"cfssl comparison CA","key":{"algo":"ecdsa","size":256}}' >"$work/cfssl/ca-csr.json"
(cd "$work/cfssl" && cfssl genkey -initca ca-csr.json 2>/dev/null | cfssljson -bare ca)
echo '{"signing":{"default":{"expiry":"24h","usages":["digital signature","key encipherment","server auth","client auth"]}}}' \
  >"$work/cfssl/config.json"
python3 - "$work/cfssl/certs.db" <<'EOF'
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.executescript("""
CREATE TABLE certificates (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL,
  ca_label blob, status blob NOT NULL, reason int, expiry timestamp, revoked_at timestamp,
  pem blob NOT NULL, PRIMARY KEY(serial_number, authority_key_identifier));
CREATE TABLE ocsp_responses (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL,
  body blob NOT NULL, expiry timestamp, PRIMARY KEY(serial_number, authority_key_identifier));
""")
db.commit()
EOF
echo "{\"driver\":\"sqlite3\",\"data_source\":\"file:$work/cfssl/certs.db?_busy_timeout=30000\"}" >"$work/cfssl/db.json"
cfssl_args=(serve -address 127.0.0.1 -ca "$work/cfssl/ca.pem" -ca-key "$work/cfssl/ca-key.pem"
  -config "$work/cfssl/config.json" -loglevel 3)
"${on_signer[@]}" cfssl "${cfssl_args[@]}" -port "$cfssl_port" 2>"$work/cfssl.log" &
cfssl_pid=$!; pids+=("$cfssl_pid")
"${on_signer[@]}" cfssl "${cfssl_args[@]}" -port "$cfssl_db_port" -db-config "$work/cfssl/db.json" \
  2>"$work/cfssl-sqlite.log" &
cfssl_db_pid=$!; pids+=("$cfssl_db_pid")

wait_for() { # URL, log
  for _ in $(seq 300); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  cat "$2" >&2; fail "nothing answers at $1"
}
wait_for "http://127.0.0.1:$http_port/readyz" "$work/certd.log"
wait_for "http://127.0.0.1:$cfssl_port/api/v1/cfssl/info" "$work/cfssl.log"
wait_for "http://127.0.0.1:$cfssl_db_port/api/v1/cfssl/info" "$work/cfssl-sqlite.log"

bench() { # signer name
  local pid args
  case $1 in
    certd) pid=$certd_pid
      args=(issue --data-dir "$work/certd" --server "https://127.0.0.1:$grpc_port") ;;
    cfssl) pid=$cfssl_pid
      args=(cfssl-sign --http "http://127.0.0.1:$cfssl_port") ;;
    cfssl-sqlite) pid=$cfssl_db_pid
      args=(cfssl-sign --http "http://127.0.0.1:$cfssl_db_port") ;;
  esac
  local run
  run=$(sampled_bench "$1" "$pid" "$work" "${on_loader[@]}" -- "${args[@]}" \
    --concurrency "$CONCURRENCY" --duration "$DURATION") || fail "the $1 run failed"
  python3 -c '
import json, sys
run = json.loads(sys.argv[1])
run["signer"] = run.pop("name")
run["signer_cpu_us_per_request"] = run.pop("server_cpu_us_per_request")
print(json.dumps(run))' "$run"
}

# Prints a run's line, or the table of medians (and the JSON with JSON=1).
cat >"$work/report.py" <<'EOF'
import json, os, statistics, sys

def line(run, round_):
    print(f"round {round_} {run['signer']:<13} {run['rate']:8.0f}/s  p50 {run['p50_ms']:7.2f} ms"
          f"  p99 {run['p99_ms']:7.2f} ms  signer CPU {run['signer_cpu_us_per_request']:7.1f} µs/request")

def table(runs):
    pinned = os.environ.get("PIN", "1") == "1"
    where = (f"signer on CPU {os.environ['SERVER_CPU']}, loader on CPU {os.environ['LOADER_CPU']}"
             if pinned else "unpinned")
    print()
    print(f"{len(runs) // 3} rounds of {os.environ['DURATION']} at {os.environ['CONCURRENCY']} callers, {where}; medians:")
    print()
    print("| signer | requests/s | p50 ms | p99 ms | signer CPU µs/request | certd ÷ this |")
    print("|---|---|---|---|---|---|")
    keys = ("rate", "p50_ms", "p99_ms", "signer_cpu_us_per_request")
    medians = {}
    for name in ("certd", "cfssl", "cfssl-sqlite"):
        mine = [run for run in runs if run["signer"] == name]
        medians[name] = {key: statistics.median(run[key] for run in mine) for key in keys}
    for name, m in medians.items():
        ratio = medians["certd"]["rate"] / m["rate"] if m["rate"] else float("inf")
        print(f"| {name} | {m['rate']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f}"
              f" | {m['signer_cpu_us_per_request']:.0f} | {ratio:.2f}× |")
    if os.environ.get("JSON") == "1":
        print(json.dumps({"pinned": pinned, "runs": runs, "medians": medians}))

if sys.argv[1] == "line":
    line(json.loads(sys.argv[2]), sys.argv[3])
else:
    table([json.loads(text) for text in sys.stdin if text.strip()])
EOF

runs=()
for round in $(seq "$ROUNDS"); do
  for signer in certd cfssl cfssl-sqlite; do
    run=$(bench "$signer")
    runs+=("$run")
    python3 "$work/report.py" line "$run" "$round"
  done
done
printf '%s\n' "${runs[@]}" | python3 "$work/report.py" table
