"""templates/raft-journal-check.py against real pysyncobj 0.3.17 journals.

A real 3-node pysyncobj cluster on 127.0.0.1 writes a few hundred entries (node 0 also
compacts its log into a dump, as Patroni's nodes do), then stops. Copies of its files are
damaged the ways a power loss damages them, the checker runs, and pysyncobj itself
(FileJournal, then a full SyncObj start that applies its local log) must load the result;
the entries left must be a prefix of the original ones, nothing may be deleted, and a
second run must find everything ok and change nothing. Finally a node restarted on a
repaired, and on a set-aside (empty) journal rejoins a running cluster and catches up.
"""
import ast
import hashlib
import importlib.util
import logging
import os
import pickle
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

# patroni[raft] (a dev requirement) brings pysyncobj 0.3.17
from patroni.dcs import raft as patroni_raft
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.batteries import ReplDict
from pysyncobj.journal import FileJournal

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "templates" / "raft-journal-check.py"

_spec = importlib.util.spec_from_file_location("raft_journal_check", SCRIPT)
rjc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(rjc)

PAGE = 4096
HOST = "127.0.0.1"


# ----------------------------------------------------------------------------- helpers

def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def key(i):
    return "/service/pg/k%04d" % i


def value(i):
    return "v%d-" % i + "x" * random.Random(i).randint(10, 300)


def wait_for(cond, timeout, what):
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError("timed out after %ss waiting for %s" % (timeout, what))
        time.sleep(0.05)


class Node:
    """One pysyncobj member configured like Patroni's KVStoreTTL (raft.py 134-139): files
    <dir>/<self_addr>.journal and .dump, no batching, dynamic membership."""

    def __init__(self, addr, partners, directory, compaction=10 ** 9):
        self.addr, self.directory = addr, Path(directory)
        self.dict = ReplDict()
        conf = SyncObjConf(journalFile=str(self.directory / (addr + ".journal")),
                           fullDumpFile=str(self.directory / (addr + ".dump")),
                           appendEntriesUseBatch=False, dynamicMembershipChange=True,
                           useFork=False, logCompactionMinEntries=compaction,
                           logCompactionMinTime=10 ** 6, connectionRetryTime=0.3,
                           raftMinTimeout=0.4, raftMaxTimeout=1.0)
        self.obj = SyncObj(addr, partners, conf, consumers=[self.dict])

    def stop(self):
        if self.obj is not None:
            self.obj.destroy_synchronous()
            self.obj = None


class Cluster:
    def __init__(self, base_dir, compaction=(10 ** 9,) * 3):
        ports = free_ports(3)
        self.addrs = ["%s:%d" % (HOST, p) for p in ports]
        self.dirs = [Path(base_dir) / ("node%d" % i) for i in range(3)]
        self.compaction = compaction
        self.nodes = [None] * 3
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
        try:
            for i in range(3):
                self.start(i)
        except BaseException:
            self.stop()
            raise

    def start(self, i):
        partners = [a for a in self.addrs if a != self.addrs[i]]
        self.nodes[i] = Node(self.addrs[i], partners, self.dirs[i], self.compaction[i])
        return self.nodes[i]

    def stop(self, i=None):
        for j in range(3) if i is None else [i]:
            if self.nodes[j] is not None:
                self.nodes[j].stop()
                self.nodes[j] = None

    def leader(self, timeout=15):
        found = []

        def elected():
            live = [n for n in self.nodes if n is not None]
            leaders = [n for n in live if n.obj._isLeader()]
            if len(leaders) == 1 and all(n.obj._getLeader() is not None and
                                         n.obj._getLeader().id == leaders[0].addr for n in live):
                found[:] = leaders
                return True
            return False
        wait_for(elected, timeout, "a leader")
        return found[0]

    def write(self, start, stop, timeout=20):
        """Write keys start..stop-1 through the leader, in order, and wait until committed."""
        leader = self.leader()
        done, errors, lock = [0], [], threading.Lock()

        def callback(result, error):
            with lock:
                done[0] += 1
                if error != 0:
                    errors.append(error)
        for i in range(start, stop):
            leader.dict.set(key(i), value(i), callback=callback)
        wait_for(lambda: done[0] == stop - start, timeout, "%d writes" % (stop - start))
        assert not errors, errors

    def wait_applied(self, timeout=15):
        live = [n for n in self.nodes if n is not None]
        leader = self.leader()
        wait_for(lambda: all(n.obj.raftLastApplied == leader.obj.raftCommitIndex and
                             n.dict.rawData() == leader.dict.rawData() for n in live),
                 timeout, "all members to apply the log")


def pysyncobj_entries(path):
    """The entries exactly as pysyncobj 0.3.17 loads them (journal.py 189-204)."""
    journal = FileJournal(str(path))
    try:
        return [journal[i] for i in range(len(journal))]
    finally:
        journal._destroy()


def start_standalone(directory, addr, partners, ticks=20):
    """A full SyncObj start on the files, as Patroni does it, without peers: it must load
    journal, meta and dump without an exception and apply its committed local log (the
    'applied_local_log' condition Patroni waits for, raft.py 99-106); without peers
    nothing changes after the first ticks. Returns the state."""
    state = ReplDict()
    conf = SyncObjConf(journalFile=str(Path(directory) / (addr + ".journal")),
                       fullDumpFile=str(Path(directory) / (addr + ".dump")),
                       autoTick=False, appendEntriesUseBatch=False, dynamicMembershipChange=True,
                       useFork=False, logCompactionMinEntries=10 ** 9,
                       logCompactionMinTime=10 ** 6)
    obj = SyncObj(addr, partners, conf, consumers=[state])
    try:
        for _ in range(ticks):
            obj.doTick(0.005)
        assert obj.raftLastApplied == obj.raftCommitIndex, "local log not applied (%d of %d)" % (
            obj.raftLastApplied, obj.raftCommitIndex)
        return dict(state.rawData())
    finally:
        obj.destroy()


def assert_prefix_state(state):
    """The state is the one after applying a prefix of the writes: keys 0..m-1."""
    m = len(state)
    assert state == {key(i): value(i) for i in range(m)}
    return m


def snapshot_tree(root):
    """{relative path: (sha256, mtime_ns, size)} of every file under root."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            st = p.stat()
            digest = hashlib.sha256(p.read_bytes()).hexdigest()
            out[str(p.relative_to(root))] = (digest, st.st_mtime_ns, st.st_size)
    return out


def file_hashes(root):
    return {k: v[0] for k, v in snapshot_tree(root).items()}


def records(path):
    scan = rjc.scan_journal(Path(path).read_bytes())
    assert scan.intact, scan.problem or scan.header_error
    return scan


def read_meta(path):
    return pickle.loads(Path(path).read_bytes())


# ----------------------------------------------------------------------------- fixture

@pytest.fixture(autouse=True)
def no_leftover_threads():
    """Every pysyncobj/Patroni thread a test starts is stopped by its end."""
    before = set(threading.enumerate())
    yield
    wait_for(lambda: not [t for t in threading.enumerate() if t not in before and t.is_alive()], 5,
             "the test's threads to stop")


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    """Files of a stopped real 3-node cluster: node 0 compacted its log into a dump after
    the first 150 writes, nodes 1 and 2 never compacted. Also node 1's meta as it was
    after the first 150 writes (a meta older than the last writes)."""
    base = tmp_path_factory.mktemp("cluster")
    cluster = Cluster(base)
    try:
        cluster.write(0, 150)
        cluster.wait_applied()
        time.sleep(1.1)  # the meta (commit index) is saved once a second
        mid_meta = (cluster.dirs[1] / (cluster.addrs[1] + ".journal.meta")).read_bytes()
        node0 = cluster.nodes[0]
        node0.obj.forceLogCompaction()
        wait_for(lambda: node0.obj._getRaftLogSize() < 10 and
                 (cluster.dirs[0] / (cluster.addrs[0] + ".dump")).exists(), 10, "log compaction")
        cluster.write(150, 300)
        cluster.wait_applied()
        time.sleep(1.1)
    finally:
        cluster.stop()
    info = {"base": base, "addrs": cluster.addrs, "dirs": cluster.dirs, "mid_meta": mid_meta,
            "entries": [pysyncobj_entries(d / (a + ".journal"))
                        for d, a in zip(cluster.dirs, cluster.addrs)]}
    # sanity: what the tests rely on
    assert len(info["entries"][1]) > 300 and info["entries"][1][0][1] == 1
    assert info["entries"][0][0][1] > 100 and len(info["entries"][0]) > 100
    assert (cluster.dirs[0] / (cluster.addrs[0] + ".dump")).exists()
    assert not (cluster.dirs[1] / (cluster.addrs[1] + ".dump")).exists()
    return info


class Copy:
    """A copy of one pristine node's files in its own directory."""

    def __init__(self, pristine, node, tmp_path):
        self.addr = pristine["addrs"][node]
        self.partners = [a for a in pristine["addrs"] if a != self.addr]
        self.dir = tmp_path / "raft"
        shutil.copytree(pristine["dirs"][node], self.dir)
        self.journal = self.dir / (self.addr + ".journal")
        self.meta = self.dir / (self.addr + ".journal.meta")
        self.dump = self.dir / (self.addr + ".dump")
        self.original = pristine["entries"][node]

    def check(self):
        return rjc.check_directory(str(self.dir))

    def damaged_dirs(self):
        return sorted(p for p in self.dir.iterdir()
                      if p.is_dir() and p.name.startswith("damaged-"))


# ----------------------------------------------------------------------------- damage

def zero_tail(c):
    """The header page reached the disk with the final end offset, the last pages of
    records did not (mmap pages never written back): zeros up to the end offset."""
    data = bytearray(c.journal.read_bytes())
    end = struct.unpack("<I", data[36:40])[0]
    start = max(PAGE, ((end - 1) // PAGE - 1) * PAGE)
    assert 40 < start < end
    data[start:end] = bytes(end - start)
    c.journal.write_bytes(bytes(data))


def truncate_mid_record(c):
    scan = records(c.journal)
    rec = scan.records[-4]
    with open(c.journal, "r+b") as f:
        f.truncate(rec.offset + 10)


def garbage_last_record(c):
    scan = records(c.journal)
    rec = scan.records[-1]
    data = bytearray(c.journal.read_bytes())
    rng = random.Random(7)
    start = rec.offset + 4 + 16 + 3  # keep size, idx, term and the command's first bytes
    data[start:rec.end - 4] = bytes(rng.randrange(256) for _ in range(rec.end - 4 - start))
    c.journal.write_bytes(bytes(data))


def garbage_tail_across_records(c):
    scan = records(c.journal)
    start, end = scan.records[-3].offset + 2, scan.records[-1].end
    data = bytearray(c.journal.read_bytes())
    rng = random.Random(11)
    data[start:end] = bytes(rng.randrange(256) for _ in range(end - start))
    c.journal.write_bytes(bytes(data))


def empty_journal(c):
    c.journal.write_bytes(b"")


def zero_header_page(c):
    data = bytearray(c.journal.read_bytes())
    data[:PAGE] = bytes(PAGE)
    c.journal.write_bytes(bytes(data))


def meta_missing(c):
    c.meta.unlink()


def meta_empty(c):
    c.meta.write_bytes(b"")


def meta_garbage(c):
    c.meta.write_bytes(b"\x80\x02}q\x00(X\x0f\x00\x00\x00raftCommi")


def meta_older_term(c):
    meta = read_meta(c.meta)
    meta.update(currentTerm=0, votedForNodeId=None)
    c.meta.write_bytes(pickle.dumps(meta, 2))


def dump_truncated(c):
    data = c.dump.read_bytes()
    c.dump.write_bytes(data[:len(data) // 2])


def dump_missing(c):
    c.dump.unlink()


def zero_tail_and_meta_missing(c):
    zero_tail(c)
    meta_missing(c)


# (damage, node, expected journal outcome, does pysyncobj fail on it before the check?)
CASES = {
    "tail-zeroed": (zero_tail, 1, "repaired", True),
    "tail-zeroed-compacted": (zero_tail, 0, "repaired", True),
    "truncated-mid-record": (truncate_mid_record, 1, "repaired", True),
    "garbage-in-last-record": (garbage_last_record, 1, "repaired", True),
    "garbage-across-last-records": (garbage_tail_across_records, 2, "repaired", True),
    "empty-journal": (empty_journal, 1, "set aside", True),
    "empty-journal-with-dump": (empty_journal, 0, "set aside", True),
    "header-page-zeroed": (zero_header_page, 2, "set aside", True),
    "meta-missing": (meta_missing, 1, "ok", False),
    "meta-zero-length": (meta_empty, 2, "ok", False),
    "meta-garbage": (meta_garbage, 0, "ok", True),
    "meta-older-term": (meta_older_term, 1, "ok", False),
    "dump-truncated": (dump_truncated, 0, "set aside", True),
    "dump-missing": (dump_missing, 0, "set aside", True),
    "tail-zeroed-and-meta-missing": (zero_tail_and_meta_missing, 1, "repaired", True),
}


def pysyncobj_fails(c):
    """Does pysyncobj, unaided, fail on these files (crash, or never apply its log)?"""
    probe = Path(str(c.dir) + "-probe")
    shutil.copytree(c.dir, probe)
    try:
        start_standalone(probe, c.addr, c.partners)
    except Exception:
        return True
    finally:
        shutil.rmtree(probe)
    return False


@pytest.mark.parametrize("case", list(CASES))
def test_damaged_files_are_repaired_or_set_aside(pristine, tmp_path, case, caplog):
    damage, node, outcome, breaks_pysyncobj = CASES[case]
    c = Copy(pristine, node, tmp_path)
    damage(c)
    assert pysyncobj_fails(c) == breaks_pysyncobj
    before = file_hashes(c.dir)

    checker = c.check()
    lines = "\n".join(checker.messages)
    journal_line = [m for m in checker.messages if m.startswith(str(c.journal) + ":")]
    assert len(journal_line) == 1, lines
    expected = {"ok": ": ok, ", "repaired": ": repaired: kept ", "set aside": ": set aside to "}
    assert expected[outcome] in journal_line[0], lines

    # nothing deleted: every damaged original is still there, in place or in damaged-*/
    after = file_hashes(c.dir)
    for name, digest in before.items():
        assert after.get(name) == digest or any(
            after.get(str(d.relative_to(c.dir) / name)) == digest for d in c.damaged_dirs()
        ), (name, lines)
    assert len(c.damaged_dirs()) <= 1
    if outcome != "ok" or case in ("meta-zero-length", "meta-garbage", "meta-older-term"):
        assert len(c.damaged_dirs()) == 1

    # pysyncobj loads what is left; the entries are a prefix of the original entries
    if c.journal.exists():
        entries = pysyncobj_entries(c.journal)
        assert entries == c.original[:len(entries)]
        if outcome == "repaired":
            assert 0 < len(entries) < len(c.original)
        if outcome == "ok":
            assert entries == c.original
        last_idx = entries[-1][1] if entries else 1
    else:
        assert outcome == "set aside"
        last_idx = None
    if c.dump.exists():
        last_idx = max(last_idx or 0, rjc.parse_dump(c.dump.read_bytes())[0][1])
    if c.meta.exists():
        meta = read_meta(c.meta)
        assert meta.get("raftCommitIndex", 1) <= (last_idx or 1)
        terms = [e[2] for e in c.original]
        assert meta.get("currentTerm", 0) >= max(terms)
        if case.startswith("meta-"):
            assert meta["votedForNodeId"] is not None

    # a second run finds everything ok and changes nothing
    tree = snapshot_tree(c.dir)
    second = c.check()
    assert not second.changed and second.damaged_dir is None
    assert all(": ok" in m for m in second.messages), second.messages
    assert snapshot_tree(c.dir) == tree

    # and a full SyncObj start loads it and applies its local log
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="pysyncobj"):
        state = start_standalone(c.dir, c.addr, c.partners)
    assert "failed to load full dump" not in caplog.text
    m = assert_prefix_state(state)
    if c.dump.exists() or (c.meta.exists() and read_meta(c.meta).get("raftCommitIndex", 1) > 1):
        assert m >= 100, "only %d writes survive" % m


def test_undamaged_files_are_left_byte_identical(pristine, tmp_path):
    for node in range(3):
        c = Copy(pristine, node, tmp_path / str(node))
        tree = snapshot_tree(c.dir)
        checker = c.check()
        assert not checker.changed and checker.damaged_dir is None
        assert len(checker.messages) == (3 if node == 0 else 2)
        assert all(": ok, " in m for m in checker.messages), checker.messages
        assert snapshot_tree(c.dir) == tree
        assert pysyncobj_entries(c.journal) == c.original
        assert assert_prefix_state(start_standalone(c.dir, c.addr, c.partners)) == 300


def test_meta_from_before_the_last_writes_is_kept(pristine, tmp_path):
    """A meta saved before the last writes has a lower commit index, same term: pysyncobj
    copes (it learns the commit index from the leader), the checker leaves it alone."""
    c = Copy(pristine, 1, tmp_path)
    c.meta.write_bytes(pristine["mid_meta"])
    assert read_meta(c.meta)["raftCommitIndex"] < c.original[-1][1]
    tree = snapshot_tree(c.dir)
    assert not c.check().changed
    assert snapshot_tree(c.dir) == tree
    assert 100 <= assert_prefix_state(start_standalone(c.dir, c.addr, c.partners)) < 300


def test_commit_index_beyond_a_cut_journal_is_lowered(pristine, tmp_path):
    """Without the clamp pysyncobj waits for a leader before it applies anything."""
    c = Copy(pristine, 1, tmp_path)
    truncate_mid_record(c)
    meta = read_meta(c.meta)
    c.check()
    new = read_meta(c.meta)
    assert new["raftCommitIndex"] == pysyncobj_entries(c.journal)[-1][1] < meta["raftCommitIndex"]
    assert (new["currentTerm"], new["votedForNodeId"]) == \
        (meta["currentTerm"], meta["votedForNodeId"])


def test_repaired_files_keep_mode_and_owner(pristine, tmp_path):
    c = Copy(pristine, 1, tmp_path)
    os.chmod(c.journal, 0o640)
    os.chmod(c.meta, 0o604)
    owner = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())
    for p in (c.dir, c.journal, c.meta):
        os.chown(p, *owner)  # run by hand as root, the checker must not leave root's files
    zero_tail(c)
    checker = c.check()
    assert checker.changed
    for p, mode in ((c.journal, 0o640), (c.meta, 0o604)):
        st = p.stat()
        assert (st.st_mode & 0o777, st.st_uid, st.st_gid) == (mode, owner[0], owner[1]), p
    for p in Path(checker.damaged_dir).iterdir():
        assert (p.stat().st_uid, p.stat().st_gid) == owner
    st = Path(checker.damaged_dir).stat()
    assert (st.st_uid, st.st_gid) == owner
    assert not list(c.dir.glob("*.tmp"))


def test_records_past_the_header_end_are_ignored_like_pysyncobj_does(pristine, tmp_path):
    """A header older than the records (the header page was not written back, the
    record pages were) is consistent: pysyncobj loads up to the header's end offset."""
    c = Copy(pristine, 1, tmp_path)
    scan = records(c.journal)
    data = bytearray(c.journal.read_bytes())
    data[36:40] = struct.pack("<I", scan.records[-10].end)
    c.journal.write_bytes(bytes(data))
    tree = snapshot_tree(c.dir)
    checker = c.check()
    assert "ok, %d entries" % (len(scan.records) - 9) in checker.messages[0]
    # the meta's commit index (302) is beyond the log now: lowered, the journal untouched
    assert "commit index 302 -> 293" in checker.messages[1]
    assert snapshot_tree(c.dir)[c.journal.name] == tree[c.journal.name]
    assert pysyncobj_entries(c.journal) == c.original[:-9]


def test_only_the_newest_three_damaged_folders_are_kept(pristine, tmp_path):
    import datetime
    c = Copy(pristine, 1, tmp_path)
    seen = []
    for i in range(5):
        empty_journal(c)
        now = datetime.datetime(2026, 1, 1, 0, 0, i, tzinfo=datetime.timezone.utc)
        checker = rjc.check_directory(str(c.dir), now=now)
        seen.append(Path(checker.damaged_dir).name)
        assert (Path(checker.damaged_dir) / c.journal.name).read_bytes() == b""
    assert [d.name for d in c.damaged_dirs()] == seen[-3:]
    # two runs within the same second get two folders
    empty_journal(c)
    checker = rjc.check_directory(str(c.dir), now=now)
    assert Path(checker.damaged_dir).name == seen[-1] + "-2"


def test_patroni_kvstore_files(tmp_path):
    """Patroni's own KVStoreTTL names its files <data_dir>/<self_addr>.journal(.meta)/.dump;
    a zeroed tail breaks it and the checker makes it load again."""
    port = free_ports(1)[0]
    addr = "%s:%d" % (HOST, port)
    data_dir = tmp_path / "raft"

    def start():
        kv = patroni_raft.KVStoreTTL(None, None, None, self_addr=addr, partner_addrs=[],
                               data_dir=str(data_dir), retry_timeout=5)
        kv.startAutoTick()
        return kv
    kv = start()
    try:
        wait_for(kv._isLeader, 10, "the single member to lead")
        for i in range(40):
            assert kv.set(key(i), value(i) * 2)
        time.sleep(1.1)
    finally:
        kv.destroy()
    assert sorted(p.name for p in data_dir.iterdir()) == [addr + ".journal",
                                                          addr + ".journal.meta"]
    entries = pysyncobj_entries(data_dir / (addr + ".journal"))
    c = Copy({"addrs": [addr], "dirs": [data_dir], "entries": [entries]}, 0, tmp_path / "copy")
    zero_tail(c)
    with pytest.raises(struct.error):
        FileJournal(str(c.journal))
    assert "repaired: kept" in "\n".join(c.check().messages)
    kv = patroni_raft.KVStoreTTL(None, None, None, self_addr=addr, partner_addrs=[],
                           data_dir=str(c.dir), retry_timeout=5)
    try:
        kv.startAutoTick()
        wait_for(lambda: kv.applied_local_log, 10, "Patroni's applied_local_log")
        got = {k: v["value"] for k, v in kv.get("/service/", recursive=True).items()}
        assert 0 < len(got) < 40 and got == {key(i): value(i) * 2 for i in range(len(got))}
    finally:
        kv.destroy()


@pytest.mark.parametrize("damage", ["tail-zeroed", "all-set-aside"])
def test_restarted_node_rejoins_and_catches_up(tmp_path, damage):
    """A follower killed, damaged, checked and restarted on a repaired log, or on an empty
    one (journal with a zeroed header page and a torn dump, both set aside), rejoins the
    running cluster and gets the entries written while it was down. In the second case
    the members compact their logs, so the empty node needs a snapshot from the leader."""
    compaction = (10 ** 9,) * 3 if damage == "tail-zeroed" else (100,) * 3
    cluster = Cluster(tmp_path, compaction=compaction)
    try:
        cluster.write(0, 150)
        cluster.wait_applied()
        time.sleep(1.1)
        leader = cluster.leader()
        victim = next(i for i, n in enumerate(cluster.nodes) if n is not leader)
        cluster.stop(victim)
        addr, directory = cluster.addrs[victim], cluster.dirs[victim]
        files = SimpleNamespace(journal=directory / (addr + ".journal"),
                                dump=directory / (addr + ".dump"))
        if damage == "tail-zeroed":
            zero_tail(files)
        else:
            zero_header_page(files)
            if files.dump.exists():
                dump_truncated(files)
        messages = "\n".join(rjc.check_directory(str(directory)).messages)
        if damage == "tail-zeroed":
            assert "repaired: kept" in messages
        else:
            assert not files.journal.exists() and not files.dump.exists(), messages
        cluster.write(150, 260)
        node = cluster.start(victim)
        wait_for(lambda: node.dict.rawData() == cluster.leader().dict.rawData(), 20,
                 "the restarted node to catch up")
        assert len(node.dict.rawData()) == 260
        cluster.write(260, 270)  # and it keeps following
        cluster.wait_applied()
    finally:
        cluster.stop()


def test_command_line(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, str(SCRIPT)] + [str(a) for a in args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=30)
    r = run(tmp_path / "missing")
    assert r.returncode == 0 and "does not exist" in r.stderr
    (tmp_path / "empty").mkdir()
    r = run(tmp_path / "empty")
    assert r.returncode == 0 and "nothing to check" in r.stderr
    (tmp_path / "file").write_text("x")
    r = run(tmp_path / "file")
    assert r.returncode == 1 and "not a directory" in r.stderr
    assert run().returncode == 2
    # a journal that cannot be read is an error of the check, not of the data
    (tmp_path / "unreadable").mkdir()
    j = tmp_path / "unreadable" / "10.0.0.1:5010.journal"
    j.mkdir()  # reading a directory fails with an OSError
    r = run(tmp_path / "unreadable")
    assert r.returncode == 1 and "cannot check" in r.stderr


def test_lock_excludes_a_second_checker(tmp_path):
    import fcntl
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(rjc.CheckError, match="cannot lock"):
            rjc.lock_dir(str(tmp_path), wait=0.2)
    finally:
        os.close(fd)
    os.close(rjc.lock_dir(str(tmp_path), wait=0.2))


def test_runs_on_python_3_6_syntax_and_is_fast(tmp_path):
    ast.parse(SCRIPT.read_text(), feature_version=(3, 6))
    # a Patroni-sized journal (5000 entries is pysyncobj's compaction threshold) in < 1 s
    path = tmp_path / "10.0.0.1:5010.journal"
    journal = FileJournal(str(path))
    for i in range(1, 5001):
        data = {"value": value(i), "updated": 1.5, "created": 1.5}
        cmd = b"\x00" + pickle.dumps((3, (key(i), data), {}), 2)
        journal.add(cmd, i, 1 + i // 1000)
    journal._destroy()
    start = time.monotonic()
    checker = rjc.check_directory(str(tmp_path))
    assert time.monotonic() - start < 1.0
    assert "ok, 5000 entries" in checker.messages[0]
