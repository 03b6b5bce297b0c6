#!/usr/bin/env bash
# Every operation certd serves, at several numbers of callers, in one run:
# the table docs/PERFORMANCE.md opens with, so anyone can run it again.
#
# One certd (made by `certd init` in a new data directory, default settings
# but for the connections one address may hold: every caller is on loopback)
# is loaded by `certd bench OP --concurrency N --duration D` for each OP in
# OPS and N in CALLERS, in that order; each run reports requests/s, p50, p99
# and the longest request, and the daemon's CPU time per request (read from
# /proc between the run's first and last progress lines, so a run's
# preparation and cleanup are left out). With PIN=1 (the default) the daemon
# runs on the first CPU this script may use (CPU 0 on a whole machine) and
# the loader on the second (`taskset`); PIN=0 leaves both on every CPU. Every guarantee stays on: TLS, attestation, the record durable
# before the answer.
#
# Usage: scripts/perf-matrix.sh            (from the repository root)
# Settings (environment): CERTD_BIN (default target/release/certd, built if
# missing), OPS ("issue renew ocsp crl jwt-mint token-endpoint
# token-exchange"), CALLERS ("1 64 256"), DURATION (10s; whole seconds, at
# least 3s), PIN (1), WORK_DIR (a new temporary directory, removed at the
# end), PORT_BASE (18500: certd takes it and +1).
# Needs: python3, taskset, curl.
# Output: one line per run, then a Markdown table; with JSON=1 the last line
# is one JSON object with every run.
set -euo pipefail

OPS=${OPS:-issue renew ocsp crl jwt-mint token-endpoint token-exchange}
CALLERS=${CALLERS:-1 64 256}
DURATION=${DURATION:-10s}
PIN=${PIN:-1}
PORT_BASE=${PORT_BASE:-18500}
CERTD_BIN=${CERTD_BIN:-target/release/certd}
export DURATION PIN

fail() { echo "perf-matrix: $*" >&2; exit 1; }

. "$(dirname "$0")/lib/sampled-bench.sh"
check_settings
for op in $OPS; do
  case $op in
    issue|renew|ocsp|crl|jwt-mint|token-endpoint|token-exchange) ;;
    *) fail "OPS: $op is not one this script runs (issue renew ocsp crl jwt-mint token-endpoint token-exchange)" ;;
  esac
done
for callers in $CALLERS; do
  [[ $callers =~ ^[1-9][0-9]*$ ]] || fail "CALLERS: $callers is not a positive number"
done

if [ -n "${WORK_DIR:-}" ]; then
  mkdir -p "$WORK_DIR"; work=$(realpath "$WORK_DIR"); keep_work=1
  [ ! -e "$work/certd" ] || fail "WORK_DIR=$WORK_DIR holds an earlier run's certd/: give a new directory"
else
  work=$(mktemp -d); keep_work=0
fi
daemon_pid=""
cleanup() {
  [ -z "$daemon_pid" ] || kill "$daemon_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  [ "$keep_work" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$PIN" = 1 ]; then
  on_daemon=(taskset -c "$SERVER_CPU"); on_loader=(taskset -c "$LOADER_CPU")
else
  on_daemon=(); on_loader=()
fi

grpc_port=$PORT_BASE; http_port=$((PORT_BASE + 1))
"$CERTD_BIN" init --data-dir "$work/certd" >/dev/null
# Every caller comes from 127.0.0.1, and `renew` opens a new connection per
# request while the server may not yet have seen the last one close: the
# default cap of 256 connections from one address would refuse some at 256
# callers, so the loader's address may hold four times the most callers.
most=256
for callers in $CALLERS; do [ "$callers" -le "$most" ] || most=$callers; done
printf '[connections]\nmax_per_client = %d\n' "$((most * 4))" >"$work/certd.toml"
CERTD_LOG=warn "${on_daemon[@]}" "$CERTD_BIN" serve --data-dir "$work/certd" \
  --config "$work/certd.toml" \
  --grpc-addr "127.0.0.1:$grpc_port" --http-addr "127.0.0.1:$http_port" \
  >"$work/certd.out" 2>"$work/certd.log" &
daemon_pid=$!
for _ in $(seq 600); do
  curl -s -o /dev/null "http://127.0.0.1:$http_port/readyz" && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/certd.log" >&2; fail "certd did not start"; }
  sleep 0.1
done
curl -s -o /dev/null "http://127.0.0.1:$http_port/readyz" || fail "certd is not ready after 60 s"

cat >"$work/report.py" <<'PY'
import json, os, sys

def line(run):
    print(f"{run['op']:<15} {run['concurrency']:>4} callers {run['rate']:9.0f}/s  p50 {run['p50_ms']:7.2f} ms"
          f"  p99 {run['p99_ms']:7.2f} ms  max {run['max_ms']:8.2f} ms"
          f"  daemon CPU {run['server_cpu_us_per_request']:7.1f} µs/request"
          + (" (whole run)" if run.get("cpu_window") == "whole run" else ""), flush=True)

def table(runs):
    pinned = os.environ.get("PIN", "1") == "1"
    where = (f"daemon on CPU {os.environ['SERVER_CPU']}, loader on CPU {os.environ['LOADER_CPU']}"
             if pinned else "unpinned")
    print()
    print(f"Runs of {os.environ['DURATION']}, {where}:")
    print()
    print("| operation | callers | requests/s | p50 ms | p99 ms | max ms | daemon CPU µs/request |")
    print("|---|---|---|---|---|---|---|")
    for run in runs:
        print(f"| {run['op']} | {run['concurrency']} | {run['rate']:.0f} | {run['p50_ms']:.2f}"
              f" | {run['p99_ms']:.2f} | {run['max_ms']:.1f} | {run['server_cpu_us_per_request']:.0f} |")
    if os.environ.get("JSON") == "1":
        print(json.dumps({"pinned": pinned, "runs": runs}))

if sys.argv[1] == "line":
    line(json.loads(sys.argv[2]))
else:
    table([json.loads(text) for text in sys.stdin if text.strip()])
PY

runs=()
for op in $OPS; do
  for callers in $CALLERS; do
    run=$(sampled_bench "$op" "$daemon_pid" "$work" "${on_loader[@]}" -- "$op" \
      --data-dir "$work/certd" --server "https://127.0.0.1:$grpc_port" \
      --http "http://127.0.0.1:$http_port" --concurrency "$callers" --duration "$DURATION") \
      || fail "the $op run with $callers callers failed"
    runs+=("$run")
    python3 "$work/report.py" line "$run"
  done
done
printf '%s\n' "${runs[@]}" | python3 "$work/report.py" table
