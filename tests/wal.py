"""WAL segment names and the segments a restore replays, for the tiers that check a WAL
archive for gaps (16 MiB segments: 256 per log id)."""
from __future__ import annotations


def parse_lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


def segment_number(name: str) -> int:
    return (int(name[8:16], 16) << 8) | int(name[16:24], 16)


def segment_name(timeline: int, number: int) -> str:
    return f"{timeline:08X}{number >> 8:08X}{number & 0xFF:08X}"


def segment_of(lsn: int) -> int:
    return lsn >> 24


def lineage_segments(start: str, history: str, newest: str) -> list[str]:
    """Every segment that a restore from `start` (a backup's first segment) to `newest`
    replays: timeline by timeline along the lineage that `history` (the newest timeline's
    history file; empty on timeline 1) records. A timeline's last segment is the one its
    successor switched in, which belongs to the successor."""
    switches = [(int(fields[0]), segment_of(parse_lsn(fields[1])))
                for fields in (line.split() for line in history.splitlines())
                if fields and not fields[0].startswith("#")]
    timelines = [tli for tli, _ in switches] + [int(newest[:8], 16)]
    ends = [segment for _, segment in switches] + [segment_number(newest) + 1]
    start_timeline = int(start[:8], 16)
    if start_timeline not in timelines:
        raise ValueError(f"timeline {start_timeline} of {start} is not in the lineage "
                         f"{timelines} of {newest}")
    segments = []
    for i, (timeline, end) in enumerate(zip(timelines, ends)):
        if timeline < start_timeline:
            continue
        first = segment_number(start) if timeline == start_timeline else ends[i - 1]
        segments += [segment_name(timeline, n) for n in range(first, end)]
    return segments
