#!/usr/bin/env python3
"""Check, repair or set aside Patroni's Raft (pysyncobj) files before Patroni starts.

Installed as /usr/local/sbin/pgha-raft-journal-check and run by systemd as
``ExecStartPre`` of patroni.service (user postgres, Patroni not running):

    pgha-raft-journal-check /var/lib/pgha/raft

Why: Patroni's Raft DCS (pysyncobj 0.3.17) keeps per node, in ``raft.data_dir``,
``<self_addr>.journal`` (the Raft log), ``<self_addr>.journal.meta`` (term, vote, commit
index) and ``<self_addr>.dump`` (the snapshot after log compaction). The journal is
written through mmap and never msync'ed while running, the meta and the dump are
written to a temporary file and renamed without fsync (PySyncObj PR #197, unmerged). After
a power loss (virsh destroy, watchdog reset) the journal header can point past records
that never reached the disk; pysyncobj then dies while loading it
(``struct.error: unpack requires a buffer of 16 bytes``, journal.py line 201) and the
node never rejoins. An unreadable dump next to a compacted journal is worse: pysyncobj
logs the error and then never applies anything, so Patroni waits on raft forever.

What, per set of files (one set per ``<base>.journal`` / ``.journal.meta`` / ``.dump``):

* journal: validates the header and every record exactly as pysyncobj reads them (size,
  index, term, command) and further (trailing size copy, contiguous indexes, terms that
  never go back, a command of a known type whose pickle is complete). A damaged tail is
  cut off after the last whole valid record and the header's end offset is rewritten;
  every whole valid record before it is kept. Records past the header's end offset are
  ignored, as pysyncobj ignores them. A file with no usable header (empty, zeroed, wrong
  magic) is set aside.
* dump: must be a complete gzip stream holding a complete pickle of the 4-tuple pysyncobj
  writes. An unreadable dump is set aside, and so is a journal that starts after index 1
  (it continues from a snapshot that is not there).
* meta: an unreadable meta is set aside and written anew. A commit index beyond the end
  of the kept log is lowered to it; one below the dump's index is raised to it (else the
  node applies nothing until a leader talks to it). A term lower than the highest term
  found in the log or dump (the meta is older than the log) is raised to it, and the vote
  in that term is recorded as given (to this node itself) so that a forgotten vote cannot
  be given twice. A missing meta next to a log with terms > 0 gets the same values.

Originals are never deleted: files that are set aside are moved, files that are repaired
are copied first, into ``<dir>/damaged-<UTC timestamp>/``; only the newest three such
folders are kept so a crash loop cannot fill the disk. A node whose files were set aside
starts with an empty log and catches up from its peers (entries or snapshot).

One line per file goes to stderr (the journal). Exit status 0 when the directory is
usable afterwards (also when it is empty or missing), 1 when the check could not be done
(permissions, I/O error), 2 on a usage error. Idempotent: a second run finds everything ok
and changes nothing; undamaged files are never rewritten. An exclusive flock on the
directory keeps two checkers apart (pysyncobj itself takes no lock: run it only while
Patroni is stopped, as ExecStartPre does). Python 3.6+, standard library only.
"""

import datetime
import errno
import fcntl
import gzip
import io
import os
import pickle
import shutil
import struct
import sys
import time
import zlib

PROG = "pgha-raft-journal-check"

# pysyncobj/journal.py (0.3.17) lines 170-185:
#   APP_NAME (24b) + APP_VERSION (8b) + FORMAT_VERSION (4b) + LAST_RECORD_OFFSET (4b) +
#   record1size + record1 + record1size  +  record2size + record2 + record2size + ...
# a record is struct.pack('<QQ', idx, term) + command, sizes are '<I' (journal.py 218-225).
APP_NAME = b"PYSYNCOBJ"
NAME_SIZE = 24
VERSION_SIZE = 8
JOURNAL_FORMAT_VERSION = 1
LAST_RECORD_OFFSET_OFFSET = NAME_SIZE + VERSION_SIZE + 4  # 36
FIRST_RECORD_OFFSET = NAME_SIZE + VERSION_SIZE + 4 + 4  # 40
# pysyncobj/syncobj.py _COMMAND_TYPE: REGULAR, NO_OP, MEMBERSHIP, VERSION; the first byte
# of every command. NO_OP is that byte alone, the others are followed by a pickle.
CMD_REGULAR, CMD_NO_OP, CMD_MEMBERSHIP, CMD_VERSION = 0, 1, 2, 3

JOURNAL_SUFFIX = ".journal"
META_SUFFIX = ".journal.meta"
DUMP_SUFFIX = ".dump"
DAMAGED_PREFIX = "damaged-"
KEEP_DAMAGED = 3
LOCK_WAIT = 10.0

# Globals that pysyncobj's pickles may reference and that are harmless to call;
# any other global is replaced by an inert stub (nothing from the file gets executed).
_SAFE_GLOBALS = {
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "bytearray"): bytearray,
    ("builtins", "object"): object,
    ("_codecs", "encode"): __import__("codecs").encode,
    ("copyreg", "_reconstructor"): __import__("copyreg")._reconstructor,
}


class CheckError(Exception):
    """The check itself could not be done (permissions, I/O): exit non-zero."""


class _Stub(object):
    """Stand-in for any class a pickle names (e.g. pysyncobj.node.TCPNode)."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        self.args = args

    def __setstate__(self, state):
        self.state = state


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        # Protocol-2 pickles written by Python 3 name Python 2's modules.
        module = {"__builtin__": "builtins", "copy_reg": "copyreg"}.get(module, module)
        return _SAFE_GLOBALS.get((module, name), _Stub)


def safe_loads(data, exact=True):
    """Unpickle without importing or calling anything from the data; when exact, the
    pickle must end exactly at the end of data. Raises ValueError when it is damaged."""
    buf = io.BytesIO(data)
    try:
        obj = _SafeUnpickler(buf).load()
    except Exception as e:  # truncated or garbage pickles raise all sorts of errors
        raise ValueError("%s: %s" % (type(e).__name__, e))
    if exact and buf.tell() != len(data):
        raise ValueError("%d stray bytes after the pickle" % (len(data) - buf.tell()))
    return obj


# ----------------------------------------------------------------------------- journal

class Record(object):
    __slots__ = ("offset", "end", "idx", "term", "command")

    def __init__(self, offset, end, idx, term, command):
        self.offset, self.end, self.idx, self.term, self.command = offset, end, idx, term, command

    def entry(self):
        """The entry as pysyncobj holds it: (command, idx, term)."""
        return (self.command, self.idx, self.term)


class JournalScan(object):
    """Result of scan_journal.

    header_error: why the file has no usable header (then nothing is salvageable).
    records: the whole valid records from the first one on.
    end_offset: the header's LAST_RECORD_OFFSET; good_end: the end of the last valid record.
    problem: why the scan stopped before end_offset (None when the journal is intact).
    """

    def __init__(self):
        self.size = 0
        self.header_error = None
        self.end_offset = None
        self.records = []
        self.good_end = FIRST_RECORD_OFFSET
        self.problem = None

    @property
    def intact(self):
        return self.header_error is None and self.problem is None

    def describe(self):
        if not self.records:
            return "0 entries"
        return "%d entries (idx %d..%d, last term %d)" % (
            len(self.records), self.records[0].idx, self.records[-1].idx, self.records[-1].term)


def check_command(command):
    """None when the command is well formed, else the reason."""
    kind = command[0] if command else None
    if kind == CMD_NO_OP:
        if len(command) == 1:
            return None
        return "no-op command with %d extra bytes" % (len(command) - 1)
    if kind in (CMD_REGULAR, CMD_MEMBERSHIP, CMD_VERSION):
        try:
            safe_loads(command[1:])
        except ValueError as e:
            return "command pickle is damaged (%s)" % e
        return None
    return "unknown command type %r" % (kind,)


def scan_journal(data):
    """Validate a journal's bytes record by record, as FileJournal.__init__ reads them
    (journal.py 189-204), plus the checks pysyncobj leaves out."""
    scan = JournalScan()
    scan.size = len(data)
    if len(data) == 0:
        scan.header_error = "empty file (pysyncobj cannot mmap it: 'cannot mmap an empty file')"
        return scan
    if len(data) < FIRST_RECORD_OFFSET:
        scan.header_error = "%d bytes, shorter than the %d-byte header" % (
            len(data), FIRST_RECORD_OFFSET)
        return scan
    name = data[:NAME_SIZE]
    if name != APP_NAME + b"\0" * (NAME_SIZE - len(APP_NAME)):
        scan.header_error = "bad header: magic is %r, not %r" % (name.rstrip(b"\0"), APP_NAME)
        return scan
    fmt, end = struct.unpack("<II", data[NAME_SIZE + VERSION_SIZE:FIRST_RECORD_OFFSET])
    if fmt != JOURNAL_FORMAT_VERSION:
        scan.header_error = "bad header: format version %d, not %d" % (fmt, JOURNAL_FORMAT_VERSION)
        return scan
    scan.end_offset = end
    if end < FIRST_RECORD_OFFSET:
        scan.header_error = "bad header: end offset %d lies inside the header" % end
        return scan

    pos = FIRST_RECORD_OFFSET
    prev = None
    while pos < end:
        problem = None
        if pos + 4 > len(data):
            problem = "file ends (%d bytes) where the record at offset %d starts" % (
                len(data), pos)
        else:
            size = struct.unpack("<I", data[pos:pos + 4])[0]
            rec_end = pos + 4 + size + 4
            if size < 17:
                problem = "record at offset %d has impossible size %d" % (pos, size)
            elif rec_end > end:
                problem = "record at offset %d (%d bytes) runs past the header's end offset %d" % (
                    pos, size, end)
            elif rec_end > len(data):
                problem = ("record at offset %d (%d bytes) is cut off by the end of the file "
                           "(%d bytes)" % (pos, size, len(data)))
            elif struct.unpack("<I", data[rec_end - 4:rec_end])[0] != size:
                problem = "record at offset %d is torn (trailing size %d, leading size %d)" % (
                    pos, struct.unpack("<I", data[rec_end - 4:rec_end])[0], size)
            else:
                idx, term = struct.unpack("<QQ", data[pos + 4:pos + 20])
                command = bytes(data[pos + 20:rec_end - 4])
                if prev is None and idx < 1:
                    problem = "first record at offset %d has index %d" % (pos, idx)
                elif prev is not None and idx != prev.idx + 1:
                    problem = "record at offset %d has index %d after %d" % (pos, idx, prev.idx)
                elif prev is not None and term < prev.term:
                    problem = "record at offset %d (idx %d) has term %d after term %d" % (
                        pos, idx, term, prev.term)
                else:
                    why = check_command(command)
                    if why:
                        problem = "record at offset %d (idx %d): %s" % (pos, idx, why)
                    else:
                        prev = Record(pos, rec_end, idx, term, command)
                        scan.records.append(prev)
                        pos = rec_end
                        continue
        scan.problem = problem
        break
    scan.good_end = pos
    return scan


def repaired_journal_bytes(data, scan):
    """The journal cut after the last valid record, with the header's end offset set."""
    out = bytearray(data[:scan.good_end])
    out[LAST_RECORD_OFFSET_OFFSET:FIRST_RECORD_OFFSET] = struct.pack("<I", scan.good_end)
    return bytes(out)


# ----------------------------------------------------------------------------- dump, meta

def parse_dump(data):
    """(last_entry, prev_entry) of a full dump, each (command, idx, term); ValueError when
    pysyncobj could not load it (serializer.py 84-115: gzip of pickle of
    (data, lastAppliedEntries[1], lastAppliedEntries[0], cluster), syncobj.py 1470)."""
    if not data:
        raise ValueError("empty file")
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, zlib.error, struct.error) as e:
        raise ValueError("not a complete gzip stream (%s: %s)" % (type(e).__name__, e))
    obj = safe_loads(raw)
    if not (isinstance(obj, tuple) and len(obj) == 4):
        raise ValueError("not the 4-tuple pysyncobj writes")
    entries = []
    for entry in (obj[1], obj[2]):
        if not (isinstance(entry, tuple) and len(entry) == 3 and isinstance(entry[0], bytes)
                and all(isinstance(v, int) for v in entry[1:])):
            raise ValueError("its log entries are malformed")
        entries.append(entry)
    last, prev = entries
    if prev[1] + 1 != last[1]:
        raise ValueError("its two log entries are not consecutive (%d, %d)" % (prev[1], last[1]))
    return last, prev


def parse_meta(data):
    """The meta dict (MetaStorer, journal.py 148-167: a protocol-2 pickle of a dict with
    raftCommitIndex, currentTerm, votedForNodeId); ValueError when unreadable. pysyncobj
    itself silently falls back to {} (term 0, no vote, commit index 1)."""
    if not data:
        raise ValueError("empty file")
    meta = safe_loads(data, exact=False)
    if not isinstance(meta, dict):
        raise ValueError("not a dict")
    for key in ("raftCommitIndex", "currentTerm"):
        if key in meta and not isinstance(meta[key], int):
            raise ValueError("%s is %r" % (key, meta[key]))
    vote = meta.get("votedForNodeId")
    if vote is not None and not isinstance(vote, str):
        raise ValueError("votedForNodeId is %r" % (vote,))
    return meta


def dump_meta(meta):
    return pickle.dumps(meta, 2)  # pysyncobj.pickle.dumps uses protocol 2


# ----------------------------------------------------------------------------- file ops

def log(msg):
    sys.stderr.write("%s: %s\n" % (PROG, msg))
    sys.stderr.flush()


def fsync_dir(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def adopt(path, owner):
    """Run as root (by hand), give what we create to the directory's owner, so that
    Patroni (user postgres) can still write it."""
    if os.geteuid() == 0 and owner is not None:
        os.lchown(path, owner[0], owner[1])


def write_atomic(path, data, mode=0o600, owner=None):
    """Write data to path through a fsync'ed temporary file and a rename."""
    tmp = path + ".pgha-check.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    adopt(tmp, owner)
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


class Checker(object):
    """Checks one Raft data directory; see the module docstring."""

    def __init__(self, directory, now=None, keep_damaged=KEEP_DAMAGED):
        self.dir = directory
        self.now = now
        self.keep_damaged = keep_damaged
        self.damaged_dir = None
        self.changed = False
        self.messages = []
        st = os.stat(directory)
        self.owner = (st.st_uid, st.st_gid)

    def say(self, path, msg):
        line = "%s: %s" % (path, msg)
        self.messages.append(line)
        log(line)

    # -- the damaged-<timestamp> folder
    def damaged(self):
        if self.damaged_dir is None:
            now = self.now or datetime.datetime.now(datetime.timezone.utc)
            stamp = now.strftime("%Y%m%dT%H%M%SZ")
            n = 1
            while True:
                name = DAMAGED_PREFIX + stamp + ("" if n == 1 else "-%d" % n)
                path = os.path.join(self.dir, name)
                try:
                    os.mkdir(path, 0o700)
                    break
                except FileExistsError:
                    n += 1
            adopt(path, self.owner)
            self.damaged_dir = path
        return self.damaged_dir

    def set_aside(self, path):
        dest = os.path.join(self.damaged(), os.path.basename(path))
        os.rename(path, dest)
        self.changed = True
        return dest

    def copy_aside(self, path):
        dest = os.path.join(self.damaged(), os.path.basename(path))
        shutil.copy2(path, dest)
        with open(dest, "rb") as f:
            os.fsync(f.fileno())
        adopt(dest, self.owner)
        return dest

    def rewrite(self, path, data, like):
        """Replace path with data, keeping the mode of `like` (the file it replaces)."""
        try:
            mode = os.stat(like).st_mode & 0o777
        except (TypeError, FileNotFoundError):
            mode = 0o600
        write_atomic(path, data, mode, self.owner)
        self.changed = True

    def prune_damaged(self):
        def order(name):
            stamp, _, n = name[len(DAMAGED_PREFIX):].partition("-")
            return (stamp, int(n) if n.isdigit() else 1)
        folders = sorted((n for n in os.listdir(self.dir) if n.startswith(DAMAGED_PREFIX)
                          and os.path.isdir(os.path.join(self.dir, n))), key=order)
        for name in folders[:max(0, len(folders) - self.keep_damaged)]:
            path = os.path.join(self.dir, name)
            try:
                shutil.rmtree(path)
            except OSError as e:  # not worth failing the start for
                log("%s: cannot remove old set-aside folder: %s" % (path, e))
            else:
                log("%s: removed old set-aside folder (keeping the newest %d)" % (
                    path, self.keep_damaged))

    # -- one set of files
    def check_set(self, base):
        jpath = os.path.join(self.dir, base + JOURNAL_SUFFIX)
        mpath = os.path.join(self.dir, base + META_SUFFIX)
        dpath = os.path.join(self.dir, base + DUMP_SUFFIX)
        self_id = base  # Patroni names the files after raft.self_addr, the node's Raft id

        # dump
        dump = None
        if os.path.exists(dpath):
            try:
                dump = parse_dump(read_file(dpath))
            except ValueError as e:
                dest = self.set_aside(dpath)
                self.say(dpath, "set aside to %s: unreadable snapshot, pysyncobj cannot load "
                                "it: %s" % (dest, e))
            else:
                self.say(dpath, "ok, snapshot up to idx %d (term %d)" % (dump[0][1], dump[0][2]))

        # journal
        kept = []
        terms_seen = [e[2] for e in dump] if dump else []
        if os.path.exists(jpath):
            data = read_file(jpath)
            scan = scan_journal(data)
            terms_seen += [r.term for r in scan.records]
            if scan.header_error:
                dest = self.set_aside(jpath)
                self.say(jpath, "set aside to %s: %s; the node starts with an empty log" % (
                    dest, scan.header_error))
            elif scan.records and scan.records[0].idx > 1 and dump is None:
                dest = self.set_aside(jpath)
                self.say(jpath, "set aside to %s: %s start after a snapshot, but there is no "
                                "readable snapshot %s; the node starts with an empty log"
                         % (dest, scan.describe(), dpath))
            elif scan.intact:
                kept = scan.records
                self.say(jpath, "ok, %s" % scan.describe())
            else:
                copy = self.copy_aside(jpath)
                self.rewrite(jpath, repaired_journal_bytes(data, scan), like=jpath)
                kept = scan.records
                short = " (the file ends at %d)" % scan.size if scan.size < scan.end_offset else ""
                self.say(jpath, "repaired: kept %s; dropped the %d bytes at offsets %d..%d that "
                                "the header counted%s: %s; original copied to %s"
                         % (scan.describe(), scan.end_offset - scan.good_end, scan.good_end,
                            scan.end_offset, short, scan.problem, copy))

        # meta
        # What pysyncobj will hold after loading journal and dump (syncobj.py 166-168, 1489-1495).
        entries = [r.entry() for r in kept]
        if dump is not None and (len(entries) < 2
                                 or (entries[0], entries[1]) != (dump[1], dump[0])):
            last_idx = dump[0][1]
        elif entries:
            last_idx = entries[-1][1]
        else:
            last_idx = 1
        max_term = max(terms_seen) if terms_seen else 0

        meta = None
        meta_bad = None
        if os.path.exists(mpath):
            try:
                meta = parse_meta(read_file(mpath))
            except ValueError as e:
                meta_bad = str(e)
        elif max_term == 0:
            return  # never voted, nothing committed beyond the start: nothing to protect

        new = dict(meta) if meta is not None else {}
        notes = []
        # The dump holds applied, hence committed, entries: pysyncobj sets lastApplied to
        # its index (syncobj.py 1497) but leaves a lower commit index alone, and Patroni
        # waits for lastApplied == commitIndex (raft.py 99-106).
        low_idx = dump[0][1] if dump is not None else 1
        if new.get("raftCommitIndex", 1) > last_idx:
            notes.append("commit index %d -> %d (the log ends there)" % (
                new["raftCommitIndex"], last_idx))
            new["raftCommitIndex"] = last_idx
        elif new.get("raftCommitIndex", 1) < low_idx:
            notes.append("commit index %d -> %d (the snapshot holds applied entries up to "
                         "there)" % (new.get("raftCommitIndex", 1), low_idx))
            new["raftCommitIndex"] = low_idx
        if meta is None or new.get("currentTerm", 0) < max_term:
            term = max(new.get("currentTerm", 0), max_term)
            if meta is not None:
                notes.append("term %d -> %d (the log holds term %d: the meta is older than the "
                             "log)" % (new.get("currentTerm", 0), term, max_term))
            new["currentTerm"] = term
            new["votedForNodeId"] = self_id
            notes.append("vote in term %d recorded as given so it cannot be given twice" % term)

        if meta is not None and new == meta:
            self.say(mpath, "ok, term %d, voted for %s, commit idx %d" % (
                meta.get("currentTerm", 0), meta.get("votedForNodeId"),
                meta.get("raftCommitIndex", 1)))
            return
        like = mpath
        if meta_bad is not None:
            like = dest = self.set_aside(mpath)
            what = "set aside to %s: unreadable (%s); wrote a new one: %s" % (
                dest, meta_bad, "; ".join(notes))
        elif meta is None:
            like = jpath if os.path.exists(jpath) else dpath
            what = "was missing; wrote one: %s" % "; ".join(notes)
        else:
            copy = self.copy_aside(mpath)
            what = "repaired: %s; original copied to %s" % ("; ".join(notes), copy)
        self.rewrite(mpath, dump_meta(new), like=like)
        self.say(mpath, what)

    def run(self):
        names = os.listdir(self.dir)
        bases = set()
        for name in names:
            for suffix in (META_SUFFIX, JOURNAL_SUFFIX, DUMP_SUFFIX):
                if name.endswith(suffix) and len(name) > len(suffix):
                    bases.add(name[:-len(suffix)])
                    break
        for base in sorted(bases):
            self.check_set(base)
        if self.damaged_dir is not None:
            fsync_dir(self.damaged_dir)
            fsync_dir(self.dir)
            self.prune_damaged()
        if not bases:
            log("%s: no Raft journal yet, nothing to check" % self.dir)
        return self.changed


def lock_dir(directory, wait=LOCK_WAIT):
    """Take an exclusive flock on the directory itself; return the fd to keep it."""
    fd = os.open(directory, os.O_RDONLY)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN) or time.monotonic() > deadline:
                os.close(fd)
                raise CheckError("cannot lock %s: %s" % (directory, e))
            time.sleep(0.05)


def check_directory(directory, now=None, keep_damaged=KEEP_DAMAGED):
    """Check, repair or set aside the Raft files in directory. Returns the Checker (its
    .messages, .changed, .damaged_dir); raises CheckError when it cannot do its job."""
    if not os.path.exists(directory):
        log("%s does not exist yet, nothing to check" % directory)
        return None
    if not os.path.isdir(directory):
        raise CheckError("%s is not a directory" % directory)
    try:
        fd = lock_dir(directory)
    except OSError as e:
        raise CheckError("cannot open %s: %s" % (directory, e))
    try:
        checker = Checker(directory, now=now, keep_damaged=keep_damaged)
        try:
            checker.run()
        except OSError as e:
            raise CheckError("%s (%s)" % (e, type(e).__name__))
        return checker
    finally:
        os.close(fd)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        sys.stderr.write("usage: %s RAFT_DATA_DIR\n\n%s" % (PROG, __doc__.split("\n\n")[0] + "\n"))
        return 2
    try:
        check_directory(argv[0])
    except CheckError as e:
        log("cannot check %s: %s" % (argv[0], e))
        return 1
    except Exception:  # a bug: say so loudly; systemd retries the start
        import traceback
        log("internal error while checking %s:\n%s" % (argv[0], traceback.format_exc()))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
