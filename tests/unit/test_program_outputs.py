"""The stack's outputs as a user follows them: the README's connect lines, run against the
outputs of the dev stack the README brings up, and every SSH command an output gives."""
import re
import shlex
from urllib.parse import parse_qs, urlparse

import yaml

from tests.conftest import REPO
from tests.unit.test_program import run_program
from tests.unit.test_program_backups import run_program as run_with_backups

OUTPUT_RE = re.compile(r'"?\$\(pulumi stack output (\w+)\)"?')


def stack_settings(stack: str) -> dict:
    raw = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
    return {key.split(":", 1)[1]: value for key, value in raw.items()}


def readme_block(containing: str) -> str:
    """The README's fenced bash block that contains `containing`."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    (block,) = [b for b in blocks if containing in b]
    return block


def substituted(line: str, outputs: dict) -> str:
    """`$(pulumi stack output NAME)` replaced by the output's value, as the shell would."""
    return OUTPUT_RE.sub(lambda m: shlex.quote(str(outputs[m.group(1)])), line)


def test_the_readmes_connect_lines_save_the_ca_where_the_dev_stacks_dsns_look():
    prog = run_program(stack_settings("dev"))
    outputs = prog.stack_outputs()
    block = readme_block("pulumi stack output caCertificate")
    (save,) = [line for line in block.splitlines() if "output caCertificate >" in line]
    target = shlex.split(substituted(save.split(">", 1)[1].split("#")[0], outputs))
    for name in ("dsnReadWrite", "dsnReadOnly"):
        query = parse_qs(urlparse(outputs[name]).query)
        assert target == query["sslrootcert"], (save, outputs[name])
    # The REST call in the same block trusts that file too.
    (curl,) = [line for line in block.splitlines() if line.startswith("curl ")]
    assert f"--cacert {shlex.quote(target[0])}" in substituted(curl, outputs)
    assert outputs["caCertificateFile"] == "dev-cluster-ca.crt"


def test_every_host_an_output_sends_the_user_to_is_in_known_hosts():
    prog = run_with_backups({"backups": True, "nodeCount": 5})
    outputs = prog.stack_outputs()
    known = {line.split()[0]: line.split()[1] for line in outputs["knownHosts"].splitlines()}
    commands = [*outputs["sshCommands"].values(), outputs["patronictl"],
                outputs["backupInfoCommand"]]
    for command in commands:
        words = shlex.split(command)
        host = next(w for w in words if "@" in w).split("@", 1)[1]
        assert "UserKnownHostsFile=pgha-known-hosts" in words, command
        assert known.get(host) == "ssh-ed25519", (command, sorted(known))
    assert outputs["backupRepositoryHost"] in known
    assert len(known) == 6  # five nodes and the repository
