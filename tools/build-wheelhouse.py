#!/usr/bin/env python3
"""Build a wheelhouse for air-gapped sites: Patroni's virtualenv as a PEP 503 "simple" index.

    tools/build-wheelhouse.py OUT_DIR [--patroni-version X] [--python-version 3.11]

The requirements are the nodes' own (components.rendering.pip_requirements on the default
stack settings, Patroni's version overridable), so the wheelhouse holds exactly what
install-patroni.sh asks pip for. Every file is a wheel for CPython <python-version> on
x86_64 Linux with glibc <--glibc> (default 2.28, Rocky 8) or newer (Debian 12 has 2.36):
binary wheels come from the configured index (PyPI by default) with `pip download`, and
projects published only as source archives (pysyncobj, ydiff) are built here with
`pip wheel --no-deps`, which must yield pure-Python wheels.

Layout (serve OUT_DIR with any static web server, e.g. `python3 -m http.server -d OUT_DIR`):

    OUT_DIR/files/*.whl                 the wheels (also usable with pip --find-links)
    OUT_DIR/simple/index.html           PEP 503 project list
    OUT_DIR/simple/<project>/index.html links to ../../files/<wheel>#sha256=<digest>
    OUT_DIR/requirements.txt            what the wheelhouse was built for
    OUT_DIR/wheelhouse.json             stamp: requirements, target tags, files and digests

A re-run with the same requirements and target checks the digests and rewrites the index
without touching the network. Uses only the standard library and pip.
"""
from __future__ import annotations

import __future__
import argparse
import ast
import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
STAMP = "wheelhouse.json"
STAMP_FORMAT = 1
PIP_TIMEOUT = 1200  # seconds for one pip run
MAX_ROUNDS = 20  # download attempts (one more source-only project built per attempt)
MISSING_RE = re.compile(r"No matching distribution found for (.+?)\s*$", re.MULTILINE)
DEFAULT_PORT = 8000


class WheelhouseError(RuntimeError):
    pass


# ---------------------------------------------------------------------------------------
# The requirements: one source of truth, the program's own rendering code.

def _pip_requirements_from_source():
    """pip_requirements() and PIP_PINS taken from rendering.py itself, for interpreters
    without jinja2/PyYAML (which rendering.py imports for everything else)."""
    path = REPO / "components" / "rendering.py"
    tree = ast.parse(path.read_text(), str(path))
    keep = [node for node in tree.body
            if (isinstance(node, ast.Assign)
                and any(isinstance(t, ast.Name) and t.id == "PIP_PINS" for t in node.targets))
            or (isinstance(node, ast.FunctionDef) and node.name == "pip_requirements")]
    if len(keep) != 2:
        raise WheelhouseError(f"cannot find PIP_PINS and pip_requirements() in {path}")
    code = compile(ast.Module(body=keep, type_ignores=[]), str(path), "exec",
                   flags=__future__.annotations.compiler_flag, dont_inherit=True)
    namespace: dict = {}
    exec(code, namespace)  # noqa: S102 - the repository's own code
    return namespace["pip_requirements"]


def node_requirements(patroni_version: str | None) -> list[str]:
    sys.path.insert(0, str(REPO))
    from components.config import ConfigError, build_spec
    try:
        spec = build_spec({"patroniVersion": patroni_version} if patroni_version else {})
    except ConfigError as exc:
        raise WheelhouseError(str(exc)) from None
    try:
        from components.rendering import pip_requirements
    except ImportError:
        pip_requirements = _pip_requirements_from_source()
    return list(pip_requirements(spec))


# ---------------------------------------------------------------------------------------
# Target tags.

def manylinux_platforms(glibc: str, arch: str = "x86_64") -> list[str]:
    """Every manylinux platform tag a glibc-<glibc> system accepts, newest first (pip does
    not expand perennial manylinux tags given with --platform by itself)."""
    match = re.fullmatch(r"2\.(\d+)", glibc)
    if not match or int(match.group(1)) < 5:
        raise WheelhouseError(f"--glibc {glibc!r}: expected 2.N with N >= 5, e.g. 2.28")
    minor = int(match.group(1))
    platforms = [f"manylinux_2_{m}_{arch}" for m in range(minor, 4, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    platforms += [f"{name}_{arch}" for m, name in legacy.items() if m <= minor]
    return platforms


def target_options(python_version: str, platforms: list[str]) -> list[str]:
    nodot = python_version.replace(".", "")
    options = ["--only-binary=:all:", "--implementation", "cp",
               "--python-version", python_version]
    for abi in (f"cp{nodot}", "abi3", "none"):
        options += ["--abi", abi]
    for platform in platforms:
        options += ["--platform", platform]
    return options


def wheel_tags(filename: str) -> tuple[str, str, str, str, str]:
    """(project, version, python tags, abi tags, platform tags) of a wheel file name."""
    parts = filename[:-len(".whl")].split("-")
    if not filename.endswith(".whl") or len(parts) not in (5, 6):
        raise WheelhouseError(f"not a wheel file name: {filename}")
    return parts[0], parts[1], parts[-3], parts[-2], parts[-1]


def normalize(name: str) -> str:
    """PEP 503 project name normalization."""
    return re.sub(r"[-_.]+", "-", name).lower()


# ---------------------------------------------------------------------------------------
# pip.

def pip_env(isolated: bool) -> dict[str, str]:
    env = dict(os.environ)
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env.pop("PIP_REQUIRE_VIRTUALENV", None)
    if isolated:  # only the wheelhouse: no configuration file, no PIP_* from outside
        for key in [k for k in env if k.startswith("PIP_")]:
            del env[key]
        env["PIP_CONFIG_FILE"] = os.devnull
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def pip(args: list[str], isolated: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "pip", *args]
    try:
        return subprocess.run(command, env=pip_env(isolated), stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              timeout=PIP_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise WheelhouseError(f"pip took longer than {PIP_TIMEOUT}s: {' '.join(args[:2])} "
                              "...; is the package index reachable?") from None


def tail(output: str, lines: int = 15) -> str:
    return "\n".join("    " + (line if len(line) <= 300 else line[:300] + " ...")
                     for line in output.strip().splitlines()[-lines:])


def build_wheel(requirement: str, files: Path, python_version: str) -> str:
    """Build `requirement` (no wheel for the target exists) into files/; the wheel must be
    pure Python, since one built here would only fit this host."""
    print(f"  no wheel for the target on the index: trying to build {requirement} from source")
    with tempfile.TemporaryDirectory(prefix="wheelhouse-build-") as tmp:
        result = pip(["wheel", "--no-deps", "--wheel-dir", tmp, requirement])
        built = sorted(Path(tmp).glob("*.whl"))
        if result.returncode != 0 and MISSING_RE.search(result.stdout):
            raise WheelhouseError(
                f"could not obtain {requirement}: the package index has no release matching "
                "it (neither a wheel for the target nor a source archive):\n"
                + tail(result.stdout, 2))
        if result.returncode != 0 or len(built) != 1:
            raise WheelhouseError(
                f"could not obtain {requirement}: the index has no wheel for CPython "
                f"{python_version} x86_64 and building one from source failed:\n"
                + tail(result.stdout))
        wheel = built[0]
        _, _, _, abi, platform = wheel_tags(wheel.name)
        if platform != "any" or abi != "none":
            raise WheelhouseError(
                f"could not obtain {requirement}: the index has no wheel for the target and "
                f"the one built here ({wheel.name}) is platform-specific; build it on a "
                "manylinux host of the target's glibc and put it in the files/ folder")
        shutil.copy2(wheel, files / wheel.name)
        print(f"  built {wheel.name}")
        return wheel.name


def download(requirements: list[str], files: Path, options: list[str],
             python_version: str) -> None:
    """Download the closure into files/ (existing files are reused), building wheels of
    projects the index has only as source archives, one per round."""
    built: set[str] = set()
    for attempt in range(1, MAX_ROUNDS + 1):
        print(f"  resolving and downloading (round {attempt})")
        result = pip(["download", "--dest", str(files), "--find-links", str(files),
                      *options, *requirements])
        if result.returncode == 0:
            return
        missing = MISSING_RE.findall(result.stdout)
        if not missing:
            raise WheelhouseError("pip download failed:\n" + tail(result.stdout))
        requirement = missing[-1].strip()
        if requirement in built:
            raise WheelhouseError(
                f"could not obtain {requirement}: a wheel was built from source, but pip "
                "still finds none for the target:\n" + tail(result.stdout))
        build_wheel(requirement, files, python_version)
        built.add(requirement)
    raise WheelhouseError(f"gave up after {MAX_ROUNDS} rounds of building missing wheels")


def closure(requirements: list[str], files: Path, options: list[str], dest: Path) -> None:
    """Resolve the requirements against files/ alone (no index, no outside pip settings)
    for the target and copy exactly the files needed into dest: proves the set complete."""
    result = pip(["download", "--no-index", "--find-links", str(files), "--dest", str(dest),
                  *options, *requirements], isolated=True)
    if result.returncode != 0:
        missing = MISSING_RE.findall(result.stdout)
        what = f"missing {missing[-1]}" if missing else "pip failed"
        raise WheelhouseError(f"the wheelhouse does not satisfy the requirements offline "
                              f"({what}):\n" + tail(result.stdout))


# ---------------------------------------------------------------------------------------
# The index.

def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def requires_python(path: Path) -> str:
    """The wheel's Requires-Python (for the optional data-requires-python attribute)."""
    try:
        with zipfile.ZipFile(path) as archive:
            name = next((n for n in archive.namelist()
                         if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
            if name is None:
                return ""
            for line in archive.read(name).decode("utf-8", "replace").splitlines():
                if not line.strip():
                    break  # end of the headers
                if line.lower().startswith("requires-python:"):
                    return line.split(":", 1)[1].strip()
    except (zipfile.BadZipFile, OSError) as exc:
        raise WheelhouseError(f"{path.name} is not a valid wheel: {exc}") from None
    return ""


def page(title: str, links: list[str]) -> str:
    body = "\n".join(f"    {link}<br/>" for link in links)
    return ("<!DOCTYPE html>\n<html>\n  <head>\n    <meta name=\"pypi:repository-version\" "
            f"content=\"1.0\">\n    <title>{html.escape(title)}</title>\n  </head>\n"
            f"  <body>\n    <h1>{html.escape(title)}</h1>\n{body}\n  </body>\n</html>\n")


def write_index(out: Path, digests: dict[str, str]) -> list[str]:
    """Write OUT/simple (replacing the old one); returns the project names."""
    projects: dict[str, list[str]] = {}
    for filename in sorted(digests):
        projects.setdefault(normalize(wheel_tags(filename)[0]), []).append(filename)
    new = out / "simple.new"
    shutil.rmtree(new, ignore_errors=True)
    new.mkdir()
    for project, filenames in sorted(projects.items()):
        links = []
        for filename in filenames:
            href = f"../../files/{filename}#sha256={digests[filename]}"
            attrs = f'href="{html.escape(href)}"'
            rp = requires_python(out / "files" / filename)
            if rp:
                attrs += f' data-requires-python="{html.escape(rp)}"'
            links.append(f"<a {attrs}>{html.escape(filename)}</a>")
        (new / project).mkdir()
        (new / project / "index.html").write_text(page(f"Links for {project}", links))
    (new / "index.html").write_text(page("Simple index", [
        f'<a href="{html.escape(p)}/">{html.escape(p)}</a>' for p in sorted(projects)]))
    old = out / "simple.old"
    shutil.rmtree(old, ignore_errors=True)
    if (out / "simple").exists():
        (out / "simple").rename(old)
    new.rename(out / "simple")
    shutil.rmtree(old, ignore_errors=True)
    return sorted(projects)


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


# ---------------------------------------------------------------------------------------

def up_to_date(out: Path, target: dict) -> dict[str, str] | None:
    """The stamp's digests when it describes this very target and every file matches."""
    try:
        stamp = json.loads((out / STAMP).read_text())
    except (OSError, ValueError):
        return None
    if stamp.get("target") != target or not isinstance(stamp.get("files"), dict):
        return None
    files = out / "files"
    present = {p.name for p in files.glob("*.whl")} if files.is_dir() else set()
    if present != set(stamp["files"]):
        return None
    for filename, digest in stamp["files"].items():
        if sha256(files / filename) != digest:
            return None
    return stamp["files"]


def build(out: Path, requirements: list[str], python_version: str, glibc: str) -> dict:
    platforms = manylinux_platforms(glibc)
    options = target_options(python_version, platforms)
    target = {"format": STAMP_FORMAT, "requirements": requirements,
              "implementation": "cp", "python_version": python_version, "glibc": glibc,
              "platforms": platforms}
    out.mkdir(parents=True, exist_ok=True)
    files = out / "files"
    digests = up_to_date(out, target)
    if digests is not None:
        print(f"{out}: already holds these requirements (digests checked), index rewritten")
        reused = True
    else:
        reused = False
        (out / STAMP).unlink(missing_ok=True)  # no stamp while the contents change
        files.mkdir(exist_ok=True)
        download(requirements, files, options, python_version)
        stage = out / "files.new"
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir()
        closure(requirements, files, options, stage)
        old = out / "files.old"  # files no longer needed (older pins) go
        shutil.rmtree(old, ignore_errors=True)
        files.rename(old)
        stage.rename(files)
        shutil.rmtree(old, ignore_errors=True)
        digests = {p.name: sha256(p) for p in sorted(files.glob("*.whl"))}
        if not digests:
            raise WheelhouseError("pip downloaded nothing")
    projects = write_index(out, digests)
    write_atomic(out / "requirements.txt",
                 "# Patroni's virtualenv on the nodes (tools/build-wheelhouse.py)\n"
                 + "\n".join(requirements) + "\n")
    if not reused:
        write_atomic(out / STAMP, json.dumps(
            {"target": target, "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
             "projects": projects, "files": digests}, indent=2) + "\n")
    return digests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Build a PEP 503 wheelhouse of Patroni's virtualenv for air-gapped "
                    "nodes (CPython, x86_64, glibc >= --glibc).")
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path)
    parser.add_argument("--patroni-version", help="default: the program's (patroniVersion)")
    parser.add_argument("--python-version", default="3.11",
                        help="the nodes' CPython version (default: %(default)s)")
    parser.add_argument("--glibc", default="2.28",
                        help="oldest glibc of the nodes (default: %(default)s, Rocky 8)")
    parser.add_argument("--print-requirements", action="store_true",
                        help="print the node requirements and exit")
    args = parser.parse_args(argv)
    if not re.fullmatch(r"3\.\d+", args.python_version):
        parser.error(f"--python-version {args.python_version!r}: expected 3.N, e.g. 3.11")
    started = time.monotonic()
    try:
        requirements = node_requirements(args.patroni_version)
        if args.print_requirements:
            print("\n".join(requirements))
            return 0
        print(f"wheelhouse for CPython {args.python_version}, x86_64, glibc >= {args.glibc}: "
              + " ".join(requirements))
        out = args.out_dir.resolve()
        digests = build(out, requirements, args.python_version, args.glibc)
    except WheelhouseError as exc:
        print(f"build-wheelhouse: error: {exc}", file=sys.stderr)
        return 1
    size = sum((out / "files" / f).stat().st_size for f in digests)
    for filename in sorted(digests):
        print(f"  {filename}")
    print(f"{len(digests)} files, {size / 1e6:.1f} MB, in {out}/files "
          f"({time.monotonic() - started:.1f}s)")
    print(f"Serve it:   python3 -m http.server {DEFAULT_PORT} --directory {out}")
    print(f"Stack:      pulumi config set pgha:pythonIndexUrl "
          f"http://HOST:{DEFAULT_PORT}/simple/")
    print("            (HOST: this machine's address as the nodes reach it; on a network the "
          "program creates, its first address, e.g. 192.168.130.1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
