#!/usr/bin/env bash
# Managed by Pulumi (pgha). PostgreSQL's restore_command on database nodes with backups
# on: runs the pgBackRest archive-get command line it is given (after the three
# arguments below) when the backup repository answers, and passes on its status.
#
#   pgha-archive-get HOST PORT SECONDS COMMAND...
#
# A standby asks the archive whenever its WAL stream stops, and PostgreSQL acts on a
# promote only between those calls. When the repository vanished with the leader (one
# hypervisor held both), every pgBackRest call waited out its timeouts (a connection to a
# host that no longer answers is retried for about four io-timeouts) and the standby
# holding the leader lock accepted no write for minutes. A shorter pgBackRest io-timeout
# is no cure: it also cuts off a live repository that answers slowly while it serves
# restores, and a new replica may never catch up. A TCP connection to a live host
# opens within one round trip, so one attempt, bounded by SECONDS, tells a vanished
# repository from a slow one: PostgreSQL hears "not there yet" (status 1) and streams or
# asks again; a repository that answers gets the pgBackRest command line as given.
#
# A failure other than "not found" (status 1) is asked again without archive-async.
# pgBackRest before 2.59 can lose an asynchronous fetch across a timeline switch: two
# async processes race for the archive lock, the one that would fetch the new timeline's
# segment dies, and the call reports archive-timeout (status 82) after waiting it out.
# PostgreSQL takes any failure as "not there" and reads the old timeline's copy of that
# segment instead, the history discarded past the fork, which Patroni then has to rewind.
# A synchronous get returns the segment, or "not found" when the archive has no copy.
set -Eeuo pipefail

host=$1
port=$2
seconds=$3
shift 3
segment=${*: -2:1}  # archive-get's %f
# bash opens the connection itself (/dev/tcp); timeout ends the attempt. The inner shell
# expands its own arguments:
# shellcheck disable=SC2016
if ! timeout "$seconds" bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$host" "$port" 2>/dev/null; then
  echo "pgha: the backup repository $host:$port did not answer within ${seconds}s: $segment not fetched" >&2
  exit 1
fi
status=0
"$@" || status=$?
if ((status > 1)); then
  echo "pgha: $segment: asynchronous archive-get failed (status $status); asking again synchronously" >&2
  status=0
  "$1" --no-archive-async "${@:2}" || status=$?
fi
exit "$status"
