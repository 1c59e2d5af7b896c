#!/usr/bin/env python3
"""Build a node image for a stack: the plain cloud image with the program's own install
steps already run (PostgreSQL, the softdog setup, Patroni's virtualenv, pgBackRest).

    sudo .venv/bin/python tools/build-node-image.py --stack dev

It boots the base image once in a VM on the stack's libvirt host (its storage pool, the
libvirt network `--network`), runs the very scripts `pulumi up` sends a new node, cleans
what each VM must have of its own (machine-id, SSH host keys, cloud-init's instance,
DHCP leases, logs, the site's proxy settings), and saves a standalone qcow2 with its
manifest inside (/etc/pgha/image.json) and beside it (<image>.json). The image's name
carries the hash of the base image and the scripts: run again, it only checks the image
it has. Point the stack's baseImage at the path it prints.

The build VM's disks and serial console are files in the pool's directory on this
machine: the libvirt host must be this one (qemu:///system, or a socket of it).
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from components import node_image  # noqa: E402
from components.config import DEFAULT_IMAGES, ClusterSpec, ConfigError, build_spec  # noqa: E402

DEFAULT_OUT = Path(os.environ.get("PGHA_IMAGE_DIR", Path.home() / ".cache/pgha/images"))


class BuildError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[build-node-image] {message}", file=sys.stderr, flush=True)


# ---- the stack ---------------------------------------------------------------------------
def stack_settings(stack_file: Path) -> dict:
    """The stack's pgha settings as the program reads them (secrets left out: no install
    step uses one)."""
    config = (yaml.safe_load(stack_file.read_text()) or {}).get("config") or {}
    return {key.split(":", 1)[1]: value for key, value in config.items()
            if key.startswith("pgha:") and not (isinstance(value, dict) and "secure" in value)}


def base_image_of(spec: ClusterSpec, given: str | None, out: Path) -> Path:
    """The plain image to build from: --base-image, else the stack's baseImage (or, when
    that is already a node image, the base its manifest names), else the OS's official
    cloud image, downloaded once into `out`."""
    source = given or spec.base_image
    if source and not source.startswith(("http://", "https://")):
        path = Path(source.removeprefix("file://"))
        found = node_image.read_manifest(str(path))
        return Path(found["baseImage"]["path"]) if found else path
    url = source or DEFAULT_IMAGES[spec.os_family]
    target = out / "downloads" / url.rsplit("/", 1)[-1]
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        log(f"downloading {url}")
        part = target.with_suffix(".part")
        urllib.request.urlretrieve(url, part)  # noqa: S310 - the stack's own image URL
        part.rename(target)
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


# ---- libvirt, through virsh ----------------------------------------------------------------
class Libvirt:
    def __init__(self, uri: str):
        self.uri = uri

    def virsh(self, *args: str, check: bool = True) -> str:
        p = subprocess.run(["virsh", "-q", "-c", self.uri, *args], capture_output=True,
                           text=True, timeout=120)
        if check and p.returncode != 0:
            raise BuildError(f"virsh {' '.join(args)}: {p.stderr.strip()}")
        return p.stdout

    def pool_dir(self, pool: str) -> Path:
        path = ET.fromstring(self.virsh("pool-dumpxml", pool)).findtext("target/path")
        if not path:
            raise BuildError(f"storage pool {pool} has no directory (a dir pool is needed)")
        return Path(path)

    def state(self, domain: str) -> str:
        return self.virsh("domstate", domain, check=False).strip()

    def remove(self, domain: str) -> None:
        if self.state(domain) == "running":
            self.virsh("destroy", domain, check=False)
        self.virsh("undefine", domain, check=False)


def domain_xml(name: str, spec: ClusterSpec, memory_mib: int, disk: Path, seed: Path,
               network: str, console: Path) -> str:
    cpu = f"<cpu mode={quoteattr(spec.cpu_mode)}/>" if spec.cpu_mode else ""
    return f"""<domain type={quoteattr(spec.domain_type)}>
  <name>{escape(name)}</name>
  <memory unit='MiB'>{memory_mib}</memory>
  <vcpu>{spec.vcpus}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  {cpu}
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file={quoteattr(str(disk))}/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
      <source file={quoteattr(str(seed))}/><target dev='hdd' bus='ide'/></disk>
    <interface type='network'><source network={quoteattr(network)}/>
      <model type='virtio'/></interface>
    <serial type='file'><source path={quoteattr(str(console))}/><target port='0'/></serial>
    <console type='file'><source path={quoteattr(str(console))}/>
      <target type='serial' port='0'/></console>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
  </devices>
</domain>
"""


def seed_iso(path: Path, user_data: str, instance_id: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "user-data").write_text(user_data)
        (Path(tmp) / "meta-data").write_text(f"instance-id: {instance_id}\n"
                                             f"local-hostname: pgha-image-build\n")
        subprocess.run(["genisoimage", "-quiet", "-output", str(path), "-volid", "cidata",
                        "-joliet", "-rock", f"{tmp}/user-data", f"{tmp}/meta-data"],
                       check=True)


# ---- the build -----------------------------------------------------------------------------
def follow(libvirt: Libvirt, domain: str, console: Path, timeout: float) -> dict:
    """Print the build's progress from the console until the VM powers off; return the
    manifest it wrote."""
    mark = node_image.CONSOLE_MARK + " "
    deadline, seen, found, text = time.monotonic() + timeout, 0, {}, ""
    while True:
        stopped = libvirt.state(domain) != "running"  # before the last read: nothing missed
        text = console.read_text(errors="replace") if console.exists() else ""
        complete = text[:text.rfind("\n") + 1]
        for line in complete[seen:].splitlines():
            if mark not in line:
                continue
            event = line.split(mark, 1)[1].strip()
            if event.startswith("manifest "):
                found = json.loads(base64.b64decode(event.split(" ", 1)[1]))
            else:
                log(event)
                if event.startswith("result failed"):
                    raise BuildError(f"the build failed ({event}); its console: {console}")
        seen = len(complete)
        if stopped:
            break
        if time.monotonic() > deadline:
            raise BuildError(f"no result after {timeout / 60:.0f} min; console: {console}")
        time.sleep(3)
    if f"{mark}result ok" not in text or not found:
        raise BuildError(f"the build VM stopped without a result; its console: {console}")
    return found


def build(spec: ClusterSpec, base: Path, digest: str, target: Path, args) -> dict:
    libvirt = Libvirt(args.connect or spec.libvirt_uri)
    pool = libvirt.pool_dir(args.pool or spec.storage_pool)
    name = f"pgha-image-{digest[:12]}"
    files = {k: pool / f"{name}{suffix}" for k, suffix in (
        ("base", "-base.qcow2"), ("disk", ".qcow2"), ("seed", "-seed.iso"),
        ("console", ".console.log"))}
    libvirt.remove(name)  # an earlier build that was interrupted
    for path in files.values():
        path.unlink(missing_ok=True)
    known = node_image.manifest(spec, digest, {"path": str(base), "sha256": sha256_of(base)})
    ok = False
    try:
        shutil.copyfile(base, files["base"])  # QEMU may not read the caller's directories
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                        str(files["base"]), str(files["disk"]),
                        f"{node_image.IMAGE_DISK_GIB}G"], check=True)
        seed_iso(files["seed"], node_image.render_build_user_data(spec, known),
                 f"{name}-{int(time.time())}")
        xml = pool / f"{name}.xml"
        xml.write_text(domain_xml(name, spec, args.memory_mib, files["disk"], files["seed"],
                                  args.network or spec.network_name or "default",
                                  files["console"]))
        libvirt.virsh("define", str(xml))
        xml.unlink()
        libvirt.virsh("start", name)
        log(f"build VM {name} started on {libvirt.uri}; console {files['console']}")
        found = follow(libvirt, name, files["console"], args.timeout_min * 60)
        part = target.with_suffix(".part")
        subprocess.run(["qemu-img", "convert", "-O", "qcow2", str(files["disk"]), str(part)],
                       check=True)
        node_image.manifest_path(target).write_text(json.dumps(found, indent=2,
                                                               sort_keys=True) + "\n")
        part.rename(target)
        ok = True
        return found
    finally:
        libvirt.remove(name)
        for key, path in files.items():
            if ok or key != "console":
                path.unlink(missing_ok=True)


def up_to_date(target: Path, digest: str) -> dict | None:
    found = node_image.read_manifest(str(target)) if target.is_file() else None
    if not found or found.get("hash") != digest or "installed" not in found:
        return None
    subprocess.run(["qemu-img", "check", "-q", str(target)], check=True)
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--stack", help="the stack whose Pulumi.<stack>.yaml to read")
    which.add_argument("--config", type=Path, help="a stack file to read")
    parser.add_argument("--base-image", help="the plain cloud image to start from "
                        "(default: the stack's baseImage, or the OS's official image)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"where images are kept (default {DEFAULT_OUT})")
    parser.add_argument("--connect", help="libvirt URI (default: the stack's libvirtUri)")
    parser.add_argument("--pool", help="storage pool (default: the stack's storagePool)")
    parser.add_argument("--network", help="libvirt network with a route to the package "
                        "sources (default: the stack's networkName, else 'default')")
    parser.add_argument("--memory-mib", type=int, default=1024)
    parser.add_argument("--timeout-min", type=float, default=60)
    args = parser.parse_args(argv)
    stack_file = args.config or REPO / f"Pulumi.{args.stack}.yaml"
    try:
        spec = build_spec(stack_settings(stack_file))
    except (OSError, ConfigError) as error:
        log(f"{stack_file}: {error}")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    try:
        base = base_image_of(spec, args.base_image, args.out)
        digest = node_image.image_hash(spec, sha256_of(base))
        target = args.out / node_image.image_file_name(spec, digest)
        found = up_to_date(target, digest)
        if found:
            log(f"up to date: {target} (built {found.get('builtAt')})")
        else:
            log(f"building {target.name} from {base}")
            found = build(spec, base, digest, target, args)
            log(f"built in {time.monotonic() - t0:.0f} s")
    except (BuildError, OSError, subprocess.CalledProcessError) as error:
        log(f"ERROR: {error}")
        return 1
    for package, version in sorted(found["installed"].items()):
        if package.lower().startswith(("postgresql", "patroni", "pysyncobj", "pgbackrest",
                                       "psycopg", "os")):
            log(f"  {package}: {version}")
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
