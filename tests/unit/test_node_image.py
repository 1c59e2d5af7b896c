"""Node images (components/node_image.py, tools/build-node-image.py): the build runs the
very scripts the program sends a node, the cache key follows what ends up in the image,
and a stack whose settings the image does not fit is refused before anything is made."""
import base64
import hashlib
import json
import shutil
import subprocess
import sys

import pytest
import yaml

from components import node_image, rendering
from components.config import ConfigError, build_spec
from tests.conftest import REPO, skip_or_fail
from tests.unit.test_program_backups import run_program

DEBIAN = {"osFamily": "debian12", "postgresSource": "distro", "postgresVersion": 15}
PGDG = {"osFamily": "debian12", "postgresSource": "pgdg", "postgresVersion": 16}


@pytest.mark.parametrize("settings", [{}, DEBIAN, {**DEBIAN, "backups": True}],
                         ids=["rocky8", "debian12", "debian12-backups"])
def test_the_image_runs_the_scripts_the_program_sends_every_new_node(settings):
    prog = run_program(settings)
    sent = {r.name.rsplit("-provision-", 1)[1]: r.inputs["stdin"]
            for r in prog.of_type("command:remote:Command")
            if r.name.startswith("pg-raft-srv1-provision-")}
    baked = dict(node_image.image_steps(build_spec(settings)))
    # Every step up to the first node-specific one, in the program's order; pgBackRest
    # too, so one image serves stacks with backups on or off and the repository; and
    # the firewall step's package, the same template part as the step's.
    assert list(baked) == ["prepare", "install-postgres", "watchdog", "install-patroni",
                           "install-pgbackrest", "install-nftables"]
    for name, script in baked.items():
        if name in sent:
            assert script == sent[name], name
    assert ("install-pgbackrest" in sent) == bool(settings.get("backups"))
    package = baked["install-nftables"]
    part = package[package.index("  if ! "):package.index("  report_changes")]
    assert part.strip() and part in sent["firewall"]


def test_the_cache_key_follows_what_the_image_holds_and_nothing_of_the_site():
    spec = build_spec(DEBIAN)
    key = node_image.image_hash(spec, "base-1")
    site = build_spec({**DEBIAN, "httpProxy": "http://10.1.1.1:3128", "clusterName": "other",
                       "pythonIndexUrl": "http://10.1.1.1:8080/simple/", "nodeCount": 5})
    assert node_image.image_hash(site, "base-1") == key
    assert node_image.image_hash(spec, "base-2") != key
    for other in ({**DEBIAN, "patroniVersion": "4.0.7"}, PGDG, {**PGDG, "postgresVersion": 17}):
        assert node_image.image_hash(build_spec(other), "base-1") != key
    name = node_image.image_file_name(spec, key)
    assert name == f"pgha-debian12-distro-pg15-{key[:12]}.qcow2"


def test_the_build_vm_gets_the_runner_the_steps_and_the_manifest_and_no_login():
    spec = build_spec(DEBIAN)
    known = node_image.manifest(spec, "f" * 64, {"path": "/img/base.qcow2", "sha256": "ab"})
    assert known["builtFor"] == DEBIAN and known["virtualSizeGib"] == 4
    assert known["builtForLine"] == "osFamily=debian12 postgresSource=distro postgresVersion=15"
    data = yaml.safe_load(node_image.render_build_user_data(spec, known))
    assert data["users"] == {} and "ssh_authorized_keys" not in json.dumps(data)
    files = {f["path"]: f for f in data["write_files"]}
    decoded = {p: base64.b64decode(f["content"]).decode() for p, f in files.items()}
    assert json.loads(decoded["/var/lib/pgha-image/manifest.json"]) == known
    for name, script in node_image.image_steps(spec):
        assert decoded[f"/var/lib/pgha-image/steps/{name}.sh"] == script
    runner = decoded["/var/lib/pgha-image/run.sh"]
    assert "cloud-init clean --logs --seed" in runner and "/etc/ssh/ssh_host_*" in runner
    assert "truncate -s 0 /etc/machine-id" in runner and "95pgha-proxy" in runner
    assert data["runcmd"] == [["systemd-run", "--unit=pgha-image-build", "--no-block",
                               "/bin/bash", "/var/lib/pgha-image/run.sh"]]


def node_image_file(tmp_path, built_for, size=4):
    image = tmp_path / f"pgha-debian12-pg{built_for['postgresVersion']}-{size}.qcow2"
    image.write_bytes(b"QFI\xfb")
    node_image.manifest_path(image).write_text(json.dumps(
        {"format": 1, "builtFor": built_for, "virtualSizeGib": size}))
    return image


def test_a_stack_the_node_image_was_not_built_for_is_refused_naming_both(tmp_path):
    image = node_image_file(tmp_path, PGDG)
    build_spec({**PGDG, "baseImage": str(image)})  # fits
    with pytest.raises(ConfigError) as error:
        build_spec({**PGDG, "postgresVersion": 17, "baseImage": str(image)})
    (problem,) = error.value.problems
    assert problem.startswith(f"pgha:postgresVersion = 17: baseImage {image} was built for "
                              f"postgresVersion 16 (its manifest {image.with_suffix('.json')})")
    assert "tools/build-node-image.py" in problem
    with pytest.raises(ConfigError, match=r"pgha:osFamily = 'rocky8'"):
        build_spec({**PGDG, "osFamily": "rocky8", "baseImage": str(image)})
    # A different patroniVersion is installed over the image's by the install step.
    build_spec({**PGDG, "patroniVersion": "4.0.7", "baseImage": str(image)})
    with pytest.raises(ConfigError, match=r"pgha:diskGib = 8: .* disks of at least 10 GiB"):
        build_spec({**PGDG, "diskGib": 8,
                    "baseImage": str(node_image_file(tmp_path, PGDG, size=10))})
    node_image.manifest_path(image).write_text("{not json")
    with pytest.raises(ConfigError, match=r"its manifest .* cannot be read"):
        build_spec({**PGDG, "baseImage": str(image)})


def test_the_prepare_step_refuses_an_image_built_for_other_settings_on_a_new_node():
    script = rendering.render_prepare_script(build_spec(PGDG))
    check = script[script.index("if [ -r /etc/pgha/image.json ]"):]
    check = check[:check.index("\n  fi\n") + 6]
    assert "[ ! -e /etc/patroni/patroni.yml ]" in check
    assert "'osFamily=debian12 postgresSource=pgdg postgresVersion=16'" in check
    # The sed that reads the line matches the manifest's own layout.
    line = json.dumps({"builtForLine": "osFamily=debian12 postgresSource=distro "
                                       "postgresVersion=15", "z": 1}, indent=2,
                      sort_keys=True).splitlines()[1]
    sed = check[check.index("sed -n '") + 8:check.index("' /etc/pgha/image.json")]
    read = subprocess.run(["sed", "-n", sed], input=line + "\n", text=True,
                          capture_output=True, check=True).stdout.strip()
    assert read == "osFamily=debian12 postgresSource=distro postgresVersion=15"


def test_the_command_reads_the_stack_file_and_refuses_bad_settings_before_building(tmp_path):
    stack = tmp_path / "Pulumi.x.yaml"
    stack.write_text(yaml.safe_dump({"config": {"pgha:osFamily": "debian12",
                                                "pgha:postgresVersion": 12,
                                                "pgha:superuserPassword": {"secure": "v1"}}}))
    p = subprocess.run([sys.executable, str(REPO / "tools/build-node-image.py"), "--config",
                        str(stack), "--out", str(tmp_path / "out")], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2 and "pgha:postgresVersion = 12" in p.stderr, p.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("settings", [{}, DEBIAN], ids=["rocky8", "debian12"])
def test_the_build_runner_and_the_package_step_pass_shellcheck_and_are_strict(settings):
    if shutil.which("shellcheck") is None:
        skip_or_fail("shellcheck is not installed (apt-get install shellcheck)")
    spec = build_spec(settings)
    for script in (node_image.render_build_runner(spec, "0" * 64),
                   dict(node_image.image_steps(spec))["install-nftables"]):
        assert script.startswith("#!/usr/bin/env bash\n") and "set -Eeuo pipefail" in script
        assert script.rstrip().endswith("main </dev/null")
        result = subprocess.run(["shellcheck", "--shell=bash", "--severity=style", "-"],
                                input=script, text=True, capture_output=True)
        assert result.returncode == 0, result.stdout


def test_a_second_run_finds_the_image_by_its_hash_and_only_checks_it(tmp_path):
    """The cache: an image named by the hash of its base and the stack's install steps,
    with its manifest beside it, is checked (qemu-img) and its path printed; nothing is
    built, no libvirt is needed."""
    if shutil.which("qemu-img") is None:
        skip_or_fail("qemu-img is not installed (apt-get install qemu-utils)")
    base = tmp_path / "base.qcow2"
    base.write_bytes(b"plain cloud image")
    stack = tmp_path / "Pulumi.x.yaml"
    stack.write_text(yaml.safe_dump({"config": {f"pgha:{k}": v for k, v in DEBIAN.items()}}))
    spec = build_spec(DEBIAN)
    digest = node_image.image_hash(spec, hashlib.sha256(base.read_bytes()).hexdigest())
    out = tmp_path / "images"
    out.mkdir()
    image = out / node_image.image_file_name(spec, digest)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "1G"], check=True)
    known = {**node_image.manifest(spec, digest, {"path": str(base), "sha256": "x"}),
             "installed": {"postgresql-15": "15.20"}, "builtAt": "2026-12-06T08:00:00+00:00"}
    node_image.manifest_path(image).write_text(json.dumps(known))
    p = subprocess.run([sys.executable, str(REPO / "tools/build-node-image.py"), "--config",
                        str(stack), "--base-image", str(base), "--out", str(out),
                        "--connect", "test:///nonexistent"], capture_output=True, text=True,
                       timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str(image)
    assert "up to date" in p.stderr and "postgresql-15: 15.20" in p.stderr
    # Another base image is another hash: no image for it yet, so it would build.
    assert node_image.image_hash(spec, "other") != digest
