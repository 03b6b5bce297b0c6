# Sourced by scripts/compare-cfssl.sh and scripts/perf-matrix.sh: checks
# their common settings, and runs one `certd bench … --json`, reading the
# CPU a server process used while the clock ran, per request answered
# meanwhile.
#
#   check_settings
#
# checks the tools, CERTD_BIN (building target/release/certd if it is
# missing), DURATION and PIN, and makes CERTD_BIN absolute; with PIN=1 it
# sets SERVER_CPU and LOADER_CPU to the first two CPUs the script may use.
#
#   sampled_bench NAME SERVER_PID WORK_DIR LOADER_PREFIX... -- BENCH_ARGS...
#
# prints the bench's JSON report with two fields added: "name" (NAME) and
# "server_cpu_us_per_request"; exits the script (fail) if the run failed or
# had errors. The CPU is read from /proc between the run's first progress
# line (one a second, on stderr) and the last one before it ends, so that a
# run's preparation (the join tokens made before the clock starts) and
# cleanup (unused ones revoked) do not count against its requests; a run too short for two
# progress lines is read over its whole length instead ("cpu_window":
# "whole run" in the report). Needs CERTD_BIN and fail().

check_settings() {
  for tool in python3 taskset curl; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
  done
  if [ ! -x "$CERTD_BIN" ]; then
    [ "$CERTD_BIN" = target/release/certd ] || fail "CERTD_BIN=$CERTD_BIN is not an executable"
    cargo build --release --locked --quiet
  fi
  CERTD_BIN=$(realpath "$CERTD_BIN")
  [[ $DURATION =~ ^[0-9]+s$ ]] && [ "${DURATION%s}" -ge 3 ] \
    || fail "DURATION=$DURATION: give whole seconds, at least 3s (e.g. 10s)"
  # The first two CPUs this process may run on (its affinity, as a
  # container's cpuset or an outer taskset leaves it), not CPUs 0 and 1,
  # which it may not be allowed.
  SERVER_CPU="" LOADER_CPU=""
  if [ "$PIN" = 1 ]; then
    read -r SERVER_CPU LOADER_CPU < <(python3 -c 'import os; print(*sorted(os.sched_getaffinity(0))[:2])')
    [ -n "$LOADER_CPU" ] \
      || fail "PIN=1 needs two CPUs (the server on one, the loader on another) but this process may use only CPU $SERVER_CPU; run with PIN=0"
  fi
  export SERVER_CPU LOADER_CPU
}

# CPU seconds (user + system) a process has used so far.
cpu_seconds() {
  local ticks; ticks=$(awk '{print $14 + $15}' "/proc/$1/stat")
  python3 -c "print($ticks / $(getconf CLK_TCK))"
}

sampled_bench() {
  local name=$1 pid=$2 work=$3; shift 3
  local loader_prefix=()
  while [ "$1" != -- ]; do loader_prefix+=("$1"); shift; done
  shift
  local args=("$@") duration="" i
  for ((i = 0; i < ${#args[@]}; i++)); do
    [ "${args[i]}" = --duration ] && duration=${args[i + 1]}
  done
  local seconds=${duration%s}
  local progress='^ +[0-9.]+s +[0-9]+ ok'
  local before after first last report
  local whole_before whole_after
  whole_before=$(cpu_seconds "$pid")
  "${loader_prefix[@]}" "$CERTD_BIN" bench "${args[@]}" --json >"$work/bench.out" 2>"$work/bench.err" &
  local loader=$!
  until [ "$(grep -cE "$progress" "$work/bench.err" 2>/dev/null)" -ge 1 ] 2>/dev/null; do
    kill -0 "$loader" 2>/dev/null || break
    sleep 0.02
  done
  before=$(cpu_seconds "$pid"); first=$(grep -E "$progress" "$work/bench.err" | head -1 | awk '{print $2}')
  until [ "$(grep -cE "$progress" "$work/bench.err")" -ge "$((seconds - 1))" ]; do
    kill -0 "$loader" 2>/dev/null || break
    sleep 0.02
  done
  after=$(cpu_seconds "$pid"); last=$(grep -E "$progress" "$work/bench.err" | tail -1 | awk '{print $2}')
  wait "$loader" || { cat "$work/bench.err" >&2; fail "the $name run failed"; }
  whole_after=$(cpu_seconds "$pid")
  report=$(tail -1 "$work/bench.out")
  python3 - "$name" "$report" "$before" "$after" "${first:-0}" "${last:-0}" \
    "$whole_before" "$whole_after" <<'PY'
import json, sys
name, report = sys.argv[1], json.loads(sys.argv[2])
before, after, first, last, whole_before, whole_after = (float(value) for value in sys.argv[3:9])
if report["errors"]:
    sys.exit(f"the {name} run had {report['errors']} errors: {report.get('first_error')}")
if last > first:
    # The CPU the server used between two progress lines, per request
    # answered between them.
    report["server_cpu_us_per_request"] = round((after - before) * 1e6 / (last - first), 1)
    report["cpu_window"] = "progress"
else:
    # Too short a run for two progress lines (a loaded machine, a slow
    # first answer): the whole run's CPU, preparation and cleanup included,
    # per request answered; said so in the report.
    report["server_cpu_us_per_request"] = round(
        (whole_after - whole_before) * 1e6 / max(report["ok"], 1), 1)
    report["cpu_window"] = "whole run"
report["name"] = name
print(json.dumps(report))
PY
}
