#!/bin/sh
# The kill -9 soak (issue 13): 1000 rounds of a change to the workloads, a
# SIGKILL of the daemon at a random moment and a new daemon, with the
# checks of tests/daemon_crash.rs after every round (untouched pids kept,
# no duplicate or orphan sandbox, slices stable, no log line lost or
# repeated). Root only; about ten minutes.
#
#   sudo bench/soak.sh [ROUNDS]
set -eu
cd "$(dirname "$0")/.."
rounds=${1:-1000}
start=$(date +%s)
PADDOCK_KILL_ROUNDS=$rounds cargo test --release --quiet --test daemon_crash \
	daemon_kills_amid_changes_lose_nothing_and_duplicate_nothing -- --exact
echo "soak: $rounds daemon kills, every check held, in $(( $(date +%s) - start )) s"
