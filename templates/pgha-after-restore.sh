#!/usr/bin/env bash
# Managed by Pulumi (pgha). Patroni's post_bootstrap when the cluster is created from a
# backup (a point-in-time recovery): on the new leader, once it has promoted, close the
# WAL segment where its new timeline begins and wait until the repository holds it.
#
#   pgha-after-restore SECONDS PSQL CONNINFO     (Patroni appends CONNINFO)
#
# The repository still holds the old timeline past the recovery target. A replica
# restores the backup and replays the archive; at the segment where the new timeline
# begins it asks for the new timeline's copy first, and while that copy is not archived
# yet PostgreSQL reads the old timeline's copy instead and replays the discarded history
# past the fork. Patroni then has to rewind it (minutes under load) before it streams.
# Patroni lets the other members create their replicas only after this script, so with
# the segment archived they replay the new history from the start.
#
# The script never fails the bootstrap: Patroni would remove the restored data directory
# and stop. If the segment is not archived in time (or PostgreSQL cannot be asked), it
# says so in Patroni's log, and a replica that replays the old timeline is rewound by
# Patroni as before.
set -Eeuo pipefail

seconds=$1
psql=$2
conninfo=$3

query() {
  "$psql" -X -A -t -q -v ON_ERROR_STOP=1 -d "$conninfo" -c "$1"
}

if ! segment=$(query "SELECT pg_walfile_name(pg_switch_wal())"); then
  echo "pgha: could not switch WAL after the restore; replicas may have to be rewound" >&2
  exit 0
fi
# A record after the switch. A node rewound against this one must replay WAL up to the
# insert position pg_rewind read here, which right after a switch lies past the next
# page's header with no record yet: on an idle cluster the rewound node stayed short of
# a consistent state until something was written (seen after a point-in-time recovery
# in the namespace tier, 5 minutes without a write).
query "CHECKPOINT" >/dev/null || echo "pgha: CHECKPOINT after the switch failed" >&2
deadline=$((SECONDS + seconds))
# WAL file names of one cluster sort in WAL order (timeline first); history and .partial
# names of older timelines sort before this one.
until [[ $(query "SELECT coalesce(last_archived_wal, '') >= '$segment' FROM pg_stat_archiver" || true) == t ]]; do
  if ((SECONDS >= deadline)); then
    echo "pgha: $segment (where this timeline begins) is not archived after ${seconds}s; a replica that restores before it is may replay the old timeline and be rewound" >&2
    exit 0
  fi
  sleep 1
done
echo "pgha: $segment (where this timeline begins) is archived; replicas may restore" >&2
