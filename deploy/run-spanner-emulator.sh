#!/usr/bin/env bash
# Serves on the Cloud Spanner emulator, seeded with the demo users (`make run-spanner-emulator`):
# starts emulator_main on a loopback port, migrates (which creates the emulator's instance and
# database), seeds, serves in the foreground, and stops the emulator (by its PID) on exit.
#   SPANNER_EMULATOR_BINARY  emulator_main (default: the Debian package's, found with dpkg -L)
#   SPANNER_EMULATOR_PORT    its port (default 9010)
#   SPANNER_URL              the database (default spanner://projects/demo/instances/demo/databases/entitlements)
#   BIN                      where the `entitlements` command is (default .venv/bin)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-.venv/bin}
PORT=${SPANNER_EMULATOR_PORT:-9010}
URL=${SPANNER_URL:-spanner://projects/demo/instances/demo/databases/entitlements}
EMULATOR=${SPANNER_EMULATOR_BINARY:-}
if [ -z "$EMULATOR" ]; then
	EMULATOR=$(dpkg -L google-cloud-cli-spanner-emulator 2>/dev/null | grep '/emulator_main$' || true)
fi
if [ -z "$EMULATOR" ] || [ ! -x "$EMULATOR" ]; then
	echo "emulator_main not found: install google-cloud-cli-spanner-emulator or set SPANNER_EMULATOR_BINARY" >&2
	exit 1
fi

"$EMULATOR" --host_port="127.0.0.1:$PORT" >"${TMPDIR:-/tmp}/spanner-emulator-$PORT.log" 2>&1 &
EMULATOR_PID=$!
trap 'kill "$EMULATOR_PID" 2>/dev/null || true; wait "$EMULATOR_PID" 2>/dev/null || true' EXIT

# The emulator is up in about a second.
for _ in $(seq 100); do
	if ! kill -0 "$EMULATOR_PID" 2>/dev/null; then
		echo "the emulator exited; see ${TMPDIR:-/tmp}/spanner-emulator-$PORT.log" >&2
		exit 1
	fi
	if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
	sleep 0.1
done

export SPANNER_EMULATOR_HOST="127.0.0.1:$PORT"
# Emulator 1.5.28 loses concurrent read-write transactions on multiplexed sessions.
export GOOGLE_CLOUD_SPANNER_MULTIPLEXED_SESSIONS_FOR_RW=false
"$BIN/entitlements" migrate --storage "$URL"
"$BIN/entitlements" seed-demo --storage "$URL"
# Not exec: the EXIT trap must stop the emulator when the server stops.
ENTITLEMENTS_DATA_DIR=${DATA_DIR:-data} "$BIN/entitlements" serve --storage "$URL"
