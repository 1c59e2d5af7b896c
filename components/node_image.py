"""Node images: the program's own install steps run once into a qcow2 image, so that
nodes created from it find everything installed and their install steps finish in
seconds (tools/build-node-image.py builds it; see the README's "Node images").

Pure functions: which steps an image holds (the very scripts the program sends a new
node), the hash an image is cached by, the files a build VM boots with, and the checks a
stack's settings make against an image's manifest.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

from components import backup, firewall, rendering
from components.config import ClusterSpec

MANIFEST_FORMAT = 1
# The build VM's disk, and so the image's virtual size: the base image's system plus
# PostgreSQL, Patroni's virtualenv and pgBackRest, with room for the package caches the
# build empties again. A node's disk (diskGib, at least 8) is larger.
IMAGE_DISK_GIB = 4
# Lines the build VM writes on its serial console, the only channel the builder reads.
CONSOLE_MARK = "PGHA-IMAGE"


def image_steps(spec: ClusterSpec) -> list[tuple[str, str]]:
    """The node steps that come before anything node-specific, in the program's order,
    each as the program renders it (components/provisioner.py sends the same text); and
    the package of the firewall step (its ruleset is each host's own), so that a node
    from the image needs no package source at all."""
    return [
        ("prepare", rendering.render_prepare_script(spec)),
        ("install-postgres", rendering.render_install_postgres_script(spec)),
        ("watchdog", rendering.render_watchdog_script(spec)),
        ("install-patroni", rendering.render_install_patroni_script(spec)),
        ("install-pgbackrest", backup.render_install_script(spec, "database")),
        ("install-nftables", firewall.render_package_script(spec)),
    ]


def image_hash(spec: ClusterSpec, base_digest: str) -> str:
    """What decides an image's content: the base image, the install steps and the build
    VM's own runner and seed. The prepare step is left out: what it writes (package
    proxy, index, extra CAs) is the site's, and the build removes it again."""
    steps = {name: script for name, script in image_steps(spec) if name != "prepare"}
    build = {name: (rendering.TEMPLATES_DIR / name).read_text()
             for name in ("build-node-image.sh.j2", "build-node-image.cloud-init.yaml.j2")}
    blob = json.dumps({"format": MANIFEST_FORMAT, "base": base_digest, "steps": steps,
                       "build": build, "diskGib": IMAGE_DISK_GIB}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def image_file_name(spec: ClusterSpec, digest: str) -> str:
    return (f"pgha-{spec.os_family}-{spec.postgres_source}-pg{spec.postgres_version}-"
            f"{digest[:12]}.qcow2")


def manifest_path(image: str | os.PathLike) -> Path:
    """The manifest beside an image: x.qcow2 -> x.json."""
    return Path(image).with_suffix(".json")


def manifest(spec: ClusterSpec, digest: str, base: Mapping[str, str]) -> dict[str, Any]:
    """What the builder knows of an image before it exists; the build VM adds what it
    installed (`installed`: package -> version) and when (`builtAt`), and keeps the
    result in the image (rendering.IMAGE_MANIFEST) and beside it (manifest_path)."""
    built_for = rendering.image_built_for(spec)
    return {"format": MANIFEST_FORMAT, "hash": digest, "builtFor": built_for,
            "builtForLine": rendering.image_built_for_line(built_for),
            "patroniVersion": spec.patroni_version,
            "pythonRequirements": rendering.pip_requirements(spec), "baseImage": dict(base),
            "virtualSizeGib": IMAGE_DISK_GIB,
            "steps": [name for name, _ in image_steps(spec)]}


def render_build_runner(spec: ClusterSpec, digest: str) -> str:
    """The script the build VM runs once cloud-init is done: the steps, the manifest's
    installed versions, the clean-up of everything a VM must not share, power off."""
    return rendering.render_template(
        "build-node-image.sh.j2", layout=spec.layout, digest=digest,
        steps=[name for name, _ in image_steps(spec)], mark=CONSOLE_MARK,
        manifest_file=rendering.IMAGE_MANIFEST, venv=rendering.node_paths(spec).venv)


def render_build_user_data(spec: ClusterSpec, known: Mapping[str, Any]) -> str:
    """cloud-init for the build VM: no user, no key (nobody logs in); the runner, the
    step scripts and the manifest so far as files; the runner started after cloud-init
    has finished (the prepare step waits for cloud-init, which a runcmd of its own would
    never see end)."""
    files = [("/var/lib/pgha-image/run.sh", render_build_runner(spec, known["hash"])),
             ("/var/lib/pgha-image/manifest.json", json.dumps(known, sort_keys=True))]
    files += [(f"/var/lib/pgha-image/steps/{name}.sh", script)
              for name, script in image_steps(spec)]
    return rendering.render_template("build-node-image.cloud-init.yaml.j2", files=files)


def read_manifest(image: str) -> dict[str, Any] | None:
    """The manifest beside a local image, if it has one: a node image's, not a plain
    cloud image's."""
    path = manifest_path(image)
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def check_against_manifest(settings: Mapping[str, Any], image: str,
                           found: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """(setting, value, why) for each stack setting the image does not fit."""
    problems = []
    where = f"baseImage {image} was built for"
    for key, built in (found.get("builtFor") or {}).items():
        if key in settings and settings[key] != built:
            problems.append((key, settings[key], (
                f"{where} {key} {built} (its manifest {manifest_path(image)}); build an "
                f"image for this stack with tools/build-node-image.py, or set baseImage "
                f"to the plain cloud image")))
    size = found.get("virtualSizeGib")
    if isinstance(size, int) and settings["diskGib"] < size:
        problems.append(("diskGib", settings["diskGib"],
                         f"{where} disks of at least {size} GiB"))
    return problems
