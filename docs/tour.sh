#!/usr/bin/env bash
# The tour `make run` shows: a real CLI session on the fake driver. Every
# command is the `powerdrivers` CLI; the state lives in a file, so each call
# sees what the previous one did, and the event stream is another process.
set -euo pipefail

state_dir=$(mktemp -d)
trap 'kill "${events_pid:-}" "${keeper_pid:-}" 2>/dev/null || true; rm -rf "$state_dir"' EXIT
export POWERDRIVERS_DRIVER=fake
export POWERDRIVERS_URI="fake://$state_dir/state.json"

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

echo "powerdrivers tour: driver '$POWERDRIVERS_DRIVER', state in a file shared by every command"

say powerdrivers drivers
say powerdrivers list

echo
echo "# In another process, stream lifecycle events as JSON lines while we work:"
powerdrivers events -f json --count 9 --timeout 30 > "$state_dir/events.jsonl" &
events_pid=$!
sleep 1

say powerdrivers start batch-7
echo
echo "# web-1's guest honours ACPI: it is RUNNING + SHUTTING_DOWN, then off. Outcome: graceful."
say powerdrivers shutdown web-1 --timeout 10
echo
echo "# legacy-db's guest ignores ACPI: the request is resent, then the instance is forced off."
say powerdrivers shutdown legacy-db --timeout 3 --retry-interval 1
echo
echo "# Asking again is not an error: the outcome says it was already off."
say powerdrivers -f json shutdown legacy-db
say powerdrivers pause web-2
say powerdrivers unpause web-2
say powerdrivers suspend web-2
say powerdrivers resume web-2
echo
echo "# An operation the table forbids changes nothing and exits 4 with one line:"
say powerdrivers resume cache-1 || echo "(exit $?: cache-1 is paused, not suspended)"
say powerdrivers unpause cache-1
say powerdrivers stats web-2
say powerdrivers list

wait "$events_pid" || true
echo
echo "# The events the other process saw; caused_by_operation tells our own operations from outages:"
cat "$state_dir/events.jsonl"

echo
echo "# The power keeper (powerdrivers[keeper]) keeps instances at a run policy and records why"
echo "# things happen. It runs in the foreground of its own process; its store is a database."
export POWERDRIVERS_STORE="sqlite:///$state_dir/keeper.db"
echo "\$ powerdrivers keep --host tour &"
powerdrivers keep --host tour > "$state_dir/keeper.out" 2>&1 &
keeper_pid=$!
for _ in $(seq 100); do grep -q '^host:' "$state_dir/keeper.out" && break; sleep 0.2; done
cat "$state_dir/keeper.out"
echo
echo "# web-1 is off since its shutdown above. Keep it running, always:"
say powerdrivers policy web-1 always
sleep 1
echo
echo "# Tell the fake's web-1 to crash a second from now, as a guest kernel panic would:"
say powerdrivers -o crash=web-1 -o crash_after=1 info web-1
sleep 2.5
echo
echo "# The keeper restarted it at once (a first crash is not backed off) and recorded why:"
say powerdrivers info web-1
say powerdrivers history web-1
kill -INT "$keeper_pid"
wait "$keeper_pid"
