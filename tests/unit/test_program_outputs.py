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


def readme_blocks(containing: str) -> list[str]:
    """The README's fenced bash blocks that contain `containing`."""
    blocks = re.findall(r"```bash\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    found = [b for b in blocks if containing in b]
    assert found, containing
    return found


def readme_block(containing: str) -> str:
    (block,) = readme_blocks(containing)
    return block


def substituted(line: str, outputs: dict) -> str:
    """`$(pulumi stack output NAME)` replaced by the output's value, as the shell would."""
    return OUTPUT_RE.sub(lambda m: shlex.quote(str(outputs[m.group(1)])), line)


def test_the_readmes_connect_lines_save_the_ca_where_the_dev_stacks_dsns_look():
    prog = run_program(stack_settings("dev"))
    outputs = prog.stack_outputs()
    blocks = readme_blocks("pulumi stack output caCertificate")
    assert len(blocks) == 2  # the quick start and the outputs section
    for block in blocks:
        (save,) = [line for line in block.splitlines() if "output caCertificate >" in line]
        target = shlex.split(substituted(save.split(">", 1)[1].split("#")[0], outputs))
        for name in ("dsnReadWrite", "dsnReadOnly"):
            query = parse_qs(urlparse(outputs[name]).query)
            assert target == query["sslrootcert"], (save, outputs[name])
        # A REST call in the same block trusts that file too.
        for curl in [line for line in block.splitlines() if line.startswith("curl ")]:
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


def shipped_stacks() -> list[str]:
    return sorted(p.name.split(".")[1] for p in REPO.glob("Pulumi.*.yaml"))


def test_every_shipped_stack_file_runs_through_the_program():
    assert {"dev", "prod"} <= set(shipped_stacks())
    for stack in shipped_stacks():
        settings = stack_settings(stack)
        prog = (run_with_backups if settings.get("backups") else run_program)(settings)
        outputs = prog.stack_outputs()
        assert len(outputs["nodeIps"]) == settings.get("nodeCount", 3), stack


def config_set_lines(block: str) -> dict:
    """The settings a block's `pulumi config set [--path] KEY VALUE` lines make."""
    settings: dict = {}
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if words[:3] != ["pulumi", "config", "set"]:
            continue
        path = "--path" in words
        key, value = [w for w in words[3:] if not w.startswith("--")]
        key = key.removeprefix("pgha:")
        if path and key.endswith("]"):  # a list element: adminCidrs[0]
            name = key.split("[")[0]
            settings.setdefault(name, []).append(value)
        else:
            settings[key] = value
    return settings


def test_the_clone_walkthrough_as_typed_is_valid_and_reaches_the_prod_stacks_network():
    from components.config import build_spec
    typed = config_set_lines(readme_block("pgha:cloneFromStack"))
    prod = build_spec(stack_settings("prod"))
    clone = build_spec(typed)
    assert clone.network_name == prod.libvirt_prefix
    assert clone.postgres_version == prod.postgres_version
    assert clone.clone is not None
