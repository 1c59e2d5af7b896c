"""The segments a restore replays along a timeline lineage (the gap checks of the
real-cluster and VM tiers rest on it)."""
import pytest

from tests.wal import lineage_segments

HISTORY = ("1\t0/5000060\tno recovery target specified\n\n"
           "3\t0/70000A0\tbefore 2026-12-01 10:00:00+00\n")


def test_each_timeline_ends_where_its_successor_switched_in():
    assert lineage_segments("000000010000000000000003", HISTORY,
                            "000000040000000000000008") == [
        "000000010000000000000003", "000000010000000000000004",
        "000000030000000000000005", "000000030000000000000006",
        "000000040000000000000007", "000000040000000000000008"]


def test_a_start_on_a_later_timeline_skips_the_earlier_ones_and_log_ids_roll_over():
    history = "1\t0/FF000000\tno recovery target specified\n"
    assert lineage_segments("0000000100000000000000FE", history,
                            "000000020000000100000001") == [
        "0000000100000000000000FE", "0000000200000000000000FF",
        "000000020000000100000000", "000000020000000100000001"]
    assert lineage_segments("000000030000000000000006", HISTORY,
                            "000000040000000000000007") == [
        "000000030000000000000006", "000000040000000000000007"]


def test_a_start_outside_the_lineage_is_refused():
    # Timeline 2 was abandoned (the history goes 1 -> 3 -> 4).
    with pytest.raises(ValueError, match="timeline 2 .* not in the lineage"):
        lineage_segments("000000020000000000000006", HISTORY, "000000040000000000000008")
