#!/usr/bin/env bash
# Crash test: kill -9 the service while launches are in flight, start it again on the same data, and check that
# every repository ends with exactly one agent at the provider and in GET /runs/{id}/handoff.
# Four scenarios: killed while launches are still on their way to the provider (nothing created yet), killed after
# the provider created the agents but before its answers arrived (the service must find them again, not relaunch),
# killed after all answers returned, and a hand-over: two processes on one data file, each sent every event, one
# killed after agents were created while the other works on (cross-process duplicates, leases, versions).
# Completion events are delivered again after the restart, as an at-least-once broker would for unanswered ones.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
RUNS=${RUNS:-6}
REPOS=3

if [ "${SKIP_BUILD:-0}" != 1 ]; then
  dotnet build -c Release -v quiet --nologo src/HandoffDapr.Service >/dev/null
  dotnet build -c Release -v quiet --nologo samples/HandoffDapr.FakeProvider >/dev/null
fi
SERVICE_DLL="$ROOT/src/HandoffDapr.Service/bin/Release/net10.0/HandoffDapr.Service.dll"
PROVIDER_DLL="$ROOT/samples/HandoffDapr.FakeProvider/bin/Release/net10.0/HandoffDapr.FakeProvider.dll"

WORK=$(mktemp -d)
PIDS=()
cleanup() { for pid in "${PIDS[@]:-}"; do kill -9 "$pid" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

wait_healthy() {
  for _ in $(seq 1 150); do
    curl -fsS "http://127.0.0.1:$1/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "service on port $1 did not become healthy"; return 1
}

event() { # run id → a completion event that passes the automatic gate, with distinct repositories
  python3 - "$1" "$REPOS" <<'PY'
import json, sys
run, repos = int(sys.argv[1]), int(sys.argv[2])
print(json.dumps({
  "run_id": run, "group": {"id": 456, "title": "Crash test run", "short_id": "CRASH-1"},
  "metadata": {"stopping_point": "open_pr", "group_id": 456},
  "artifacts": {"root_cause": {"one_line_description": "Killed mid-launch"}},
  "preferences": {
    "repositories": [{"provider": "github", "owner": f"crash{run}", "name": f"repo{i}"} for i in range(repos)],
    "automation_handoff": {"handoff_point": "root_cause", "target": "cursor_background_agent", "integration_id": 42, "auto_create_pr": True}}}))
PY
}

start_service() { # data file, port, log
  Handoff__Mode=Embedded Handoff__DataPath="$1" ASPNETCORE_URLS="http://127.0.0.1:$2" \
  Handoff__Integrations__42__BaseUrl="http://127.0.0.1:$PROVIDER_PORT" Handoff__Integrations__42__ApiKey=crash-key \
  Handoff__Integrations__43__ApiKey=crash-token Handoff__Integrations__42__RequestTimeout=00:00:04 Handoff__Integrations__43__RequestTimeout=00:00:04 Handoff__Launch__InFlightTimeout=00:00:05 Handoff__Embedded__ScheduleLease=00:00:05 \
  Handoff__Embedded__SchedulePollInterval=00:00:00.250 Logging__Console__FormatterName=simple \
    dotnet "$SERVICE_DLL" --contentRoot "$(dirname "$SERVICE_DLL")" >>"$3" 2>&1 &
  SERVICE_PID=$!
  PIDS+=("$SERVICE_PID")
}

CURLS=()
deliver_all() { # port (default: the service's)
  local port=${1:-$SERVICE_PORT}
  for run in $(seq 1 "$RUNS"); do
    curl -s -o /dev/null --max-time 30 -X POST "http://127.0.0.1:$port/events/autofix-run-completed" \
      -H 'content-type: application/json' --data-binary "@$WORK/event-$run.json" &
    CURLS+=("$!")
  done
}
wait_deliveries() { for pid in "${CURLS[@]:-}"; do [ -n "$pid" ] && { wait "$pid" 2>/dev/null || true; }; done; CURLS=(); }

failures=0
# Waits (bounded) until every launch of every run reads settled through the service on port $1.
wait_settled() {
  for _ in $(seq 1 240); do
    if python3 - "$1" "$RUNS" <<'PY'
import json, sys, urllib.request
port, runs = sys.argv[1], int(sys.argv[2])
for run in range(1, runs + 1):
    try:
        view = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/runs/{run}/handoff"))
    except Exception:
        sys.exit(1)
    if len(view["launches"]) != 3 or any(l["phase"] != "launched" for l in view["launches"]):
        sys.exit(1)
PY
    then return 0; fi
    sleep 0.25
  done
  return 1
}
# No python here: wait_phase polls with it, and on a busy machine an interpreter's start-up (seconds) can outlast the
# phase (the provider's 3 s), so the kill would come too late. The stats are compact JSON: "name":number.
stats_field() { curl -s "http://127.0.0.1:$PROVIDER_PORT/_fake/stats" | grep -oE "\"$1\":[0-9]+" | cut -d: -f2; }
# Waits (bounded) until the provider's counter $1 is at least 1: the phase the scenario kills in.
wait_phase() {
  for _ in $(seq 1 200); do
    [ "$(stats_field "$1" 2>/dev/null || echo 0)" -ge 1 ] && return 0
    sleep 0.05
  done
  return 1
}

# name : the provider counter that marks the phase : the fake provider's slow step
#  before-create: requests have arrived, agents not yet created (LaunchLatency); the kill must leave none created.
#  answer-lost:   agents created, answers held back (AnswerDelay); the kill must come before any answer.
#  after-answer:  some answers sent (LaunchLatency); the kill comes after at least one.
#  two-process:   as answer-lost, with a second process on the same file that is sent every event too and not killed.
for scenario in "before-create:launches_received:LaunchLatency" "answer-lost:launches_accepted:AnswerDelay" "after-answer:launches_answered:LaunchLatency" "two-process:launches_accepted:AnswerDelay"; do
  IFS=: read -r name phase slow <<<"$scenario"
  DATA="$WORK/$name.db"; LOG="$WORK/$name.log"
  PROVIDER_PORT=$(free_port); SERVICE_PORT=$(free_port); SECOND_PID=""
  dotnet "$PROVIDER_DLL" --urls "http://127.0.0.1:$PROVIDER_PORT" --FakeProvider:$slow=00:00:03 --FakeProvider:Webhooks=false >"$WORK/provider-$name.log" 2>&1 &
  PROVIDER_PID=$!; PIDS+=("$PROVIDER_PID")
  for run in $(seq 1 "$RUNS"); do event "$run" >"$WORK/event-$run.json"; done

  if [ "$name" = two-process ]; then
    SECOND_PORT=$(free_port)
    start_service "$DATA" "$SECOND_PORT" "$WORK/$name-second.log"; SECOND_PID=$SERVICE_PID
    wait_healthy "$SECOND_PORT"
  fi
  start_service "$DATA" "$SERVICE_PORT" "$LOG"
  wait_healthy "$SERVICE_PORT"
  wait_healthy "$PROVIDER_PORT" 2>/dev/null || true
  deliver_all
  [ -n "$SECOND_PID" ] && deliver_all "$SECOND_PORT"
  phase_reached=1; wait_phase "$phase" || phase_reached=0
  kill -9 "$SERVICE_PID"; wait "$SERVICE_PID" 2>/dev/null || true
  at_kill=$(stats_field launches_accepted); answered_at_kill=$(stats_field launches_answered)
  wait_deliveries
  case "$name:$phase_reached" in
    *:0) echo "scenario $name: the phase ($phase) was not reached before the kill"; failures=$((failures + 1)) ;;
    before-create:1) [ "$at_kill" -eq 0 ] || { echo "scenario $name: $at_kill agents were created before the kill"; failures=$((failures + 1)); } ;;
    answer-lost:1) [ "$at_kill" -ge 1 ] && [ "$answered_at_kill" -eq 0 ] || { echo "scenario $name: killed with $at_kill created, $answered_at_kill answered"; failures=$((failures + 1)); } ;;
  esac

  if [ -n "$SECOND_PID" ]; then
    # The other process alone takes over the killed one's launches once their deadline passes: found, not launched again.
    wait_settled "$SECOND_PORT" || { echo "scenario $name: the second process did not settle the runs alone"; failures=$((failures + 1)); }
  fi
  start_service "$DATA" "$SERVICE_PORT" "$LOG"
  wait_healthy "$SERVICE_PORT"
  deliver_all
  [ -n "$SECOND_PID" ] && deliver_all "$SECOND_PORT"
  wait_deliveries

  settled=0; wait_settled "$SERVICE_PORT" && settled=1

  # Compare the service's view with what the provider created.
  if ! python3 - "$SERVICE_PORT" "$PROVIDER_PORT" "$RUNS" "$REPOS" "$name" "$at_kill" "$settled" <<'PY'
import json, sys, urllib.request
from collections import Counter
port, provider, runs, repos, name, at_kill, settled = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], sys.argv[6], sys.argv[7]
stats = json.load(urllib.request.urlopen(f"http://127.0.0.1:{provider}/_fake/stats"))
at_provider = Counter(a["repository"] for a in stats["agents"])
ids_at_provider = {a["id"] for a in stats["agents"]}
problems = []
print(f"scenario {name}: launches accepted when killed: {at_kill}; after restart: {stats['launches_accepted']}; settled: {settled == '1'}")
print(f"  {'run':>4} {'repository':<34} {'at provider':>11} {'in coding_agents':>16}")
for run in range(1, runs + 1):
    view = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/runs/{run}/handoff"))
    agents = view["coding_agents"]
    by_repo = Counter()
    for launch in view["launches"]:
        if launch["agent_id"] in agents:
            by_repo[launch["repository"]] += 1
        if launch["agent_id"] and launch["agent_id"] not in ids_at_provider:
            problems.append(f"run {run}: agent {launch['agent_id']} is not at the provider")
    if len(agents) != repos:
        problems.append(f"run {run}: {len(agents)} coding_agents for {repos} repositories")
    for i in range(repos):
        repo = f"crash{run}/repo{i}"
        n_provider, n_view = at_provider[f"https://github.com/{repo}"], by_repo[repo]
        print(f"  {run:>4} {repo:<34} {n_provider:>11} {n_view:>16}")
        if n_provider != 1:
            problems.append(f"{repo}: {n_provider} agents at the provider ({'lost' if n_provider == 0 else 'duplicate'})")
        if n_view != 1:
            problems.append(f"{repo}: {n_view} agents in coding_agents")
for p in problems:
    print("  PROBLEM:", p)
sys.exit(1 if problems else 0)
PY
  then
    failures=$((failures + 1))
    echo "  service log (tail):"; tail -n 40 "$LOG" | sed 's/^/    /'
  fi
  kill -9 "$SERVICE_PID" "$PROVIDER_PID" $SECOND_PID 2>/dev/null || true
  wait "$SERVICE_PID" "$PROVIDER_PID" $SECOND_PID 2>/dev/null || true
done

if [ "$failures" -gt 0 ]; then
  echo "crash test: $failures scenario(s) missed their phase, or lost or duplicated an agent"; exit 1
fi
echo "crash test: every repository has exactly one agent, in all scenarios"
