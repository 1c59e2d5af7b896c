"""tools/build-wheelhouse.py: the air-gapped sites' PEP 503 wheelhouse.

Fast tests check the index writer, the target tags and the requirements source offline.
The end-to-end test builds the real wheelhouse (PyPI needed the first time; it is kept in
$PGHA_WHEELHOUSE_CACHE, default ~/.cache/pgha/wheelhouse-test, so later runs take seconds
and need no network), serves a copy with `python3 -m http.server` on 127.0.0.1, and
installs the nodes' exact requirements into a fresh /usr/bin/python3 (3.11) virtualenv
from that index alone, wheels only, as install-patroni.sh does on a node.
"""
from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import os
import re
import selectors
import shutil
import subprocess
import sys
import time
import zipfile
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

import pytest

from components import rendering
from components.config import build_spec
from tests.conftest import REPO, skip_or_fail

TOOL = REPO / "tools" / "build-wheelhouse.py"
CACHE = Path(os.environ.get("PGHA_WHEELHOUSE_CACHE")
             or Path.home() / ".cache" / "pgha" / "wheelhouse-test")
BUILD_TIMEOUT = 1500  # a cold build downloads ~13 MB and builds two small wheels
INSTALL_TIMEOUT = 600
NODE_PYTHONS = ("/usr/bin/python3", "/usr/bin/python3.11")
SPEC = build_spec({})
REQUIREMENTS = rendering.pip_requirements(SPEC)


def _load_tool():
    loader_spec = importlib.util.spec_from_file_location("build_wheelhouse", TOOL)
    module = importlib.util.module_from_spec(loader_spec)
    loader_spec.loader.exec_module(module)
    return module


tool = _load_tool()


# ---------------------------------------------------------------------------------------
# Index validation (used on synthetic and on real wheelhouses).

class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[tuple[dict[str, str], str]] = []
        self._open: dict[str, str] | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._open, self._text = {k: v or "" for k, v in attrs}, ""

    def handle_data(self, data):
        if self._open is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "a" and self._open is not None:
            self.links.append((self._open, self._text.strip()))
            self._open = None


def _links(path: Path) -> list[tuple[dict[str, str], str]]:
    parser = _Links()
    parser.feed(path.read_text())
    parser.close()
    return parser.links


def check_index(out: Path) -> dict[str, list[str]]:
    """Assert OUT/simple is a valid PEP 503 index of OUT/files; return project -> files."""
    simple = out / "simple"
    root = _links(simple / "index.html")
    projects = [attrs["href"] for attrs, _ in root]
    assert projects, "empty project list"
    assert all(p.endswith("/") and "/" not in p[:-1] for p in projects), projects
    names = [p[:-1] for p in projects]
    assert [text for _, text in root] == names
    assert len(set(names)) == len(names), "project listed twice"
    assert sorted(d.name for d in simple.iterdir() if d.is_dir()) == sorted(names)
    linked: dict[str, list[str]] = {}
    for name in names:
        assert name == re.sub(r"[-_.]+", "-", name).lower(), f"{name} is not normalized"
        page_url = f"http://wheelhouse.invalid/simple/{name}/"
        for attrs, text in _links(simple / name / "index.html"):
            url = urljoin(page_url, attrs["href"])
            parts = urlsplit(url)
            assert parts.netloc == "wheelhouse.invalid", f"{name}: {attrs['href']} leaves"
            assert re.fullmatch(r"sha256=[0-9a-f]{64}", parts.fragment), attrs["href"]
            target = out / unquote(parts.path).lstrip("/")
            assert target.resolve().is_relative_to(out.resolve())
            assert target.is_file(), f"{name}: {attrs['href']} points at no file"
            assert hashlib.sha256(target.read_bytes()).hexdigest() == parts.fragment[7:], \
                f"{target.name}: wrong sha256"
            assert text == target.name
            project = target.name.split("-")[0]
            assert re.sub(r"[-_.]+", "-", project).lower() == name, \
                f"{target.name} listed under {name}"
            linked.setdefault(name, []).append(target.name)
    files = sorted(p.name for p in (out / "files").iterdir())
    assert sorted(f for fs in linked.values() for f in fs) == files, \
        "every file linked exactly once"
    return linked


def _fake_wheel(folder: Path, filename: str, requires_python: str = "") -> None:
    name, version = filename.split("-")[:2]
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    if requires_python:
        meta += f"Requires-Python: {requires_python}\n"
    with zipfile.ZipFile(folder / filename, "w") as archive:
        archive.writestr(f"{name}-{version}.dist-info/METADATA", meta + "\nlong description\n"
                         "Requires-Python: <0\n")


# ---------------------------------------------------------------------------------------
# Fast, offline.

def test_index_pages_are_valid_pep503(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    wheels = {"Foo_Bar-1.0-py3-none-any.whl": ">=3.8, !=3.9.0",
              "zope.interface-6.0-cp311-cp311-manylinux_2_17_x86_64.whl": "",
              "psycopg_binary-3.3.9-cp311-cp311-manylinux_2_28_x86_64.whl": ">=3.10",
              "psycopg_binary-3.3.8-cp311-cp311-manylinux_2_28_x86_64.whl": ">=3.10"}
    for filename, requires in wheels.items():
        _fake_wheel(files, filename, requires)
    (tmp_path / "simple" / "stale-project").mkdir(parents=True)
    digests = {f: tool.sha256(files / f) for f in wheels}

    assert tool.write_index(tmp_path, digests) == ["foo-bar", "psycopg-binary",
                                                    "zope-interface"]
    linked = check_index(tmp_path)
    assert sorted(linked["psycopg-binary"]) == sorted(f for f in wheels if "psycopg" in f)
    page = (tmp_path / "simple" / "foo-bar" / "index.html").read_text()
    # Requires-Python from the metadata headers only, HTML-escaped.
    assert 'data-requires-python="&gt;=3.8, !=3.9.0"' in page
    assert "data-requires-python" not in (tmp_path / "simple" / "zope-interface"
                                          / "index.html").read_text()
    assert not (tmp_path / "simple.new").exists() and not (tmp_path / "simple.old").exists()


def test_target_platforms_stop_at_glibc_2_28():
    platforms = tool.manylinux_platforms("2.28")
    for accepted in ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64",
                     "manylinux2014_x86_64", "manylinux2010_x86_64", "manylinux1_x86_64"):
        assert accepted in platforms
    assert "manylinux_2_29_x86_64" not in platforms
    assert "manylinux_2_34_x86_64" not in platforms
    options = tool.target_options("3.11", platforms)
    assert options[:1] == ["--only-binary=:all:"]
    assert [options[i + 1] for i, o in enumerate(options) if o == "--abi"] == [
        "cp311", "abi3", "none"]
    with pytest.raises(tool.WheelhouseError):
        tool.manylinux_platforms("2.x")


def test_requirements_are_the_nodes_own():
    assert tool.node_requirements(None) == REQUIREMENTS
    # Without jinja2/PyYAML the tool runs the same function from rendering.py's source.
    assert tool._pip_requirements_from_source()(SPEC) == REQUIREMENTS
    assert tool.node_requirements("4.0.4")[0] == "patroni[raft,psycopg3]==4.0.4"
    result = subprocess.run([sys.executable, str(TOOL), "unused", "--patroni-version", "9.1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "patroniVersion" in result.stderr and "Traceback" not in result.stderr


def test_missing_package_is_named(tmp_path):
    files, dest = tmp_path / "files", tmp_path / "dest"
    files.mkdir()
    dest.mkdir()
    options = tool.target_options("3.11", tool.manylinux_platforms("2.28"))
    with pytest.raises(tool.WheelhouseError, match=re.escape("pysyncobj==0.3.17")):
        tool.closure(["pysyncobj==0.3.17"], files, options, dest)


# ---------------------------------------------------------------------------------------
# End to end: build (cached), serve, install into a fresh node-like virtualenv.

def _run_tool(out: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), str(out)], env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """The wheelhouse, built (or reused) in CACHE, then copied to a temporary folder."""
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    with open(CACHE.parent / f".{CACHE.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # concurrent test runs share the cache
        try:
            result = _run_tool(CACHE)
        except subprocess.TimeoutExpired:
            pytest.fail(f"building the wheelhouse took over {BUILD_TIMEOUT}s")
        if result.returncode != 0:
            text = result.stdout + result.stderr
            if re.search(r"NewConnectionError|Max retries|Temporary failure in name "
                         r"resolution|requirement patroni\S* \(from versions: none\)", text):
                skip_or_fail(f"no package index reachable to build the wheelhouse:\n{text}")
            pytest.fail(f"build-wheelhouse.py failed:\n{text}")
        out = tmp_path_factory.mktemp("wheelhouse")
        shutil.copytree(CACHE, out, dirs_exist_ok=True)
    return out


def _offline_env() -> dict[str, str]:
    """No pip settings from outside, no proxy, nothing reachable but the wheelhouse."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("PIP_") and k.lower() not in (
               "http_proxy", "https_proxy", "all_proxy", "no_proxy")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1",
               no_proxy="127.0.0.1,localhost", NO_PROXY="127.0.0.1,localhost")
    return env


def test_rebuild_with_same_pins_is_offline_and_fast(wheelhouse):
    before = {p.name: p.stat().st_mtime_ns for p in (wheelhouse / "files").iterdir()}
    env = _offline_env() | {"PIP_INDEX_URL": "http://127.0.0.1:9/simple/",
                            "PIP_NO_INDEX": "1"}
    started = time.monotonic()
    result = _run_tool(wheelhouse, env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - started < 30
    assert "already holds these requirements" in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in (wheelhouse / "files").iterdir()} == before
    assert f"{len(before)} files" in result.stdout
    assert "/simple/" in result.stdout  # the pythonIndexUrl form


def test_wheelhouse_index_and_targets(wheelhouse):
    linked = check_index(wheelhouse)
    for project in ("patroni", "pysyncobj", "ydiff", "psycopg", "psycopg-binary",
                    "cryptography", "cffi"):
        assert project in linked, f"{project} missing from the wheelhouse"
    accepted = set(tool.manylinux_platforms("2.28")) | {"any"}
    for filename in (f for fs in linked.values() for f in fs):
        _, _, python, abi, platform = tool.wheel_tags(filename)
        assert set(platform.split(".")) & accepted, f"{filename}: needs glibc > 2.28"
        assert set(python.split(".")) & {"py3", "py2", "cp311", "cp310", "cp36", "py311"}, \
            filename
        assert set(abi.split(".")) & {"none", "abi3", "cp311"}, filename
    assert (wheelhouse / "requirements.txt").read_text().split("\n")[1:-1] == REQUIREMENTS


@pytest.fixture(scope="module")
def index_url(wheelhouse, tmp_path_factory):
    """`python3 -m http.server` serving the wheelhouse on a free 127.0.0.1 port."""
    log = tmp_path_factory.mktemp("http") / "access.log"
    with open(log, "w") as log_handle:
        server = subprocess.Popen(
            [sys.executable, "-u", "-m", "http.server", "--bind", "127.0.0.1",
             "--directory", str(wheelhouse), "0"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log_handle, text=True)
    try:
        selector = selectors.DefaultSelector()
        selector.register(server.stdout, selectors.EVENT_READ)
        port = None
        if selector.select(timeout=20):
            match = re.search(r"port (\d+)", server.stdout.readline())
            port = match and int(match.group(1))
        selector.close()
        assert port, "http.server did not start"
        yield f"http://127.0.0.1:{port}/simple/", log
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(timeout=10)
        server.stdout.close()


def _node_python() -> str:
    for candidate in NODE_PYTHONS:
        if Path(candidate).exists():
            version = subprocess.run(
                [candidate, "-c", "import sys; print(sys.version_info[:2])"],
                capture_output=True, text=True, timeout=30).stdout
            if version.strip() == "(3, 11)":
                return candidate
    skip_or_fail(f"no CPython 3.11 at {' or '.join(NODE_PYTHONS)} (the nodes' version)")
    raise AssertionError


def _make_venv(python: str, path: Path) -> subprocess.CompletedProcess:
    shutil.rmtree(path, ignore_errors=True)
    return subprocess.run([python, "-m", "venv", str(path)], capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def node_venv(tmp_path_factory) -> Path:
    """A fresh virtualenv from the system CPython 3.11, as install-patroni.sh makes one
    (installing Debian's python3-venv if ensurepip is missing)."""
    python = _node_python()
    path = tmp_path_factory.mktemp("node") / "venv"
    result = _make_venv(python, path)
    if result.returncode != 0 and "ensurepip" in result.stdout + result.stderr:
        if not shutil.which("apt-get") or os.geteuid() != 0:
            skip_or_fail(f"{python} -m venv needs python3-venv:\n{result.stdout}")
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        for command in (["apt-get", "-q", "update"],
                        ["apt-get", "-y", "-q", "install", "python3-venv"]):
            subprocess.run(command, env=env, stdin=subprocess.DEVNULL, check=True,
                           capture_output=True, timeout=600)
        result = _make_venv(python, path)
    assert result.returncode == 0, result.stdout + result.stderr
    return path


def test_nodes_install_from_the_wheelhouse_alone(index_url, node_venv):
    url, access_log = index_url
    python = str(node_venv / "bin" / "python")
    env = _offline_env()
    install = subprocess.run(
        [python, "-m", "pip", "install", "--index-url", url, "--only-binary=:all:",
         "--no-cache-dir", "--disable-pip-version-check", "--timeout", "30", *REQUIREMENTS],
        env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=INSTALL_TIMEOUT)
    assert install.returncode == 0, install.stdout + install.stderr
    served = access_log.read_text()
    assert re.search(r'"GET /simple/patroni/ HTTP', served), served
    assert re.search(r'"GET /files/pysyncobj-0\.3\.17-py3-none-any\.whl HTTP', served)

    version = subprocess.run([str(node_venv / "bin" / "patroni"), "--version"], env=env,
                             capture_output=True, text=True, timeout=60)
    assert version.stdout.strip() == f"patroni {SPEC.patroni_version}", version
    imports = subprocess.run(
        [python, "-c", "import pysyncobj, psycopg, cryptography; print(psycopg.pq.__impl__, "
         "pysyncobj.__name__, cryptography.__version__)"],
        env=env, capture_output=True, text=True, timeout=60)
    assert imports.returncode == 0, imports.stderr
    pins = dict(r.split("==") for r in REQUIREMENTS)
    assert imports.stdout.split() == ["binary", "pysyncobj", pins["cryptography"]]
    check = subprocess.run([python, "-m", "pip", "check"], env=env, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
