#!/usr/bin/env python3
"""Record the PostgreSQL server parameter (GUC) names of each major version.

Run `postgres --describe-config` from each PostgreSQL `bin` directory
given, and write the names it lists, per major version, to
components/postgres_parameters.json:

    {"13": ["archive_cleanup_command", ...], "14": [...], ...}

Versions already in the file but not given here are kept, so one version
can be added or refreshed at a time. The config validation can use this file
to reject misspelt parameter names such as `shared_bufers`.

Usage:

    tools/postgres-parameter-names.py /usr/lib/postgresql/17/bin [BIN_DIR ...]

postgres refuses to run as root, so as root the binaries are run with
`runuser -u postgres --` (change the user with --user); that user must be
able to read and run them.

Names are lowercased (PostgreSQL matches them case-insensitively, e.g.
`DateStyle`). `--describe-config` lists only the built-in parameters meant
for postgresql.conf: it leaves out those flagged GUC_NOT_IN_SAMPLE or
GUC_DISALLOW_IN_FILE (developer options such as `allow_system_table_mods`,
`debug_*`, `zero_damaged_pages`, also `application_name`, and read-only ones
such as `server_version`), old-name aliases, and extension parameters
(names with a dot).
"""

import argparse
import json
import os
import re
import subprocess
from pathlib import Path

DEFAULT_OUTPUT = Path(__file__).resolve().parent.parent / "components" / "postgres_parameters.json"


def run_postgres(bin_dir: Path, user: str, *args: str) -> str:
    """Run bin_dir/postgres with args, as `user` if we are root; return stdout."""
    command = [str(bin_dir / "postgres"), *args]
    if os.geteuid() == 0:
        command = ["runuser", "-u", user, "--", *command]
    env = dict(os.environ)
    lib_dir = bin_dir.parent / "lib"
    if lib_dir.is_dir():  # for relocated builds, e.g. unpacked from an archive
        env["LD_LIBRARY_PATH"] = str(lib_dir)
    return subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout


def major_version(bin_dir: Path, user: str) -> str:
    """The major version, e.g. "17" from "postgres (PostgreSQL) 17.5"."""
    output = run_postgres(bin_dir, user, "--version")
    match = re.search(r"\(PostgreSQL\) (\d+)", output)
    if not match:
        raise SystemExit(f"{bin_dir}: cannot read a version from {output!r}")
    return match.group(1)


def parameter_names(bin_dir: Path, user: str) -> list[str]:
    """The sorted parameter names: the first tab-separated field of each line."""
    output = run_postgres(bin_dir, user, "--describe-config")
    return sorted({line.split("\t", 1)[0].lower() for line in output.splitlines() if line.strip()})


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
        data[version] = parameter_names(bin_dir, args.user)
        print(f"PostgreSQL {version}: {len(data[version])} parameters from {bin_dir}")

    data = dict(sorted(data.items(), key=lambda item: int(item[0])))
    args.output.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
