#!/usr/bin/env bash
# Managed by Pulumi (pgha). PostgreSQL's archive_command with backups on: runs the
# pgBackRest archive-push command line it is given (the WAL file last) and passes on its
# status, with one exception.
#
# After failovers a node can hold a WAL segment of an ancestor timeline that it never
# wrote: pg_rewind copied it from another member, and PostgreSQL queues such a file for
# archiving once the node leads. Past the timeline switch its bytes differ from the copy
# the archive already holds (from that timeline's own primary), so pgBackRest refuses it
# (error 45, ArchiveDuplicateError) and PostgreSQL would retry it forever, archiving
# nothing after it. Recovery along this server's history reads the newer timeline's
# segment from the switch on, so the archive's copy serves and this one is dropped. On
# the current timeline the refusal is passed on: there it means two histories.
set -Eeuo pipefail

status=0
"$@" || status=$?
wal=${!#}
segment=${wal##*/}
if [ "$status" -ne 45 ] || ! [[ $segment =~ ^[0-9A-F]{24}$ ]]; then
  exit "$status"
fi
# The current timeline: the newest history file (PostgreSQL keeps them; none on the first).
current=1
for history in "${wal%/*}"/*.history; do
  [ -e "$history" ] || continue
  name=${history##*/}
  if (( 16#${name:0:8} > current )); then
    current=$(( 16#${name:0:8} ))
  fi
done
timeline=$(( 16#${segment:0:8} ))
if (( timeline < current )); then
  echo "pgha: $segment of timeline $timeline is in the archive in another version; this server is on timeline $current, whose history does not read it: not archived again" >&2
  exit 0
fi
exit "$status"
