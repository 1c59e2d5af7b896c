#!/usr/bin/env python3
"""Boot the pgha Debian 12 cloud image under a private libvirt and check it.

Run as root:  python3 tests/e2e/smoke_boot.py [--keep] [--json out.json]

Steps (each timed):
  1. build the image (tools/build-debian-image.sh; cached, so usually warm)
  2. start libvirtd inside network namespace ``pgha-e2e`` (libvirt_host.py)
  3. define an isolated libvirt network (no <forward>, DHCP, a fixed MAC with a
     <host> reservation), a directory storage pool, the base image uploaded as
     a volume, a qcow2 overlay on it (bigger than the base: growpart is
     checked), a NoCloud seed ISO uploaded as a volume and attached as a
     *virtio* disk, and a domain of type 'qemu' (TCG), 1 vCPU / 1024 MiB,
     booting from its disk, serial console to a file
  4. start the package relay on the bridge's gateway IP, boot, wait for the
     DHCP lease, wait for SSH (ssh runs inside the namespace)
  5. in the VM: cloud-init status, softdog + /dev/watchdog, apt-get update
     through the relay, root fs size
  6. tear everything down (also on failure, unless --keep)

Only addresses inside the namespace are contacted (10.231.0.0/24).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

from libvirt_host import LibvirtHost, LibvirtHostError, missing_tools  # noqa: E402

PREFIX = "pgha-e2e"
NET_NAME = f"{PREFIX}-net"
BRIDGE = "pgha-e2e-br0"  # <= 15 chars
POOL = f"{PREFIX}-pool"
POOL_DIR = Path("/var/lib/libvirt/images") / POOL
SUBNET = "10.231.0"
GATEWAY = f"{SUBNET}.1"
VM_NAME = f"{PREFIX}-vm1"
VM_MAC = "52:54:00:e2:e0:10"
VM_IP = f"{SUBNET}.10"
VM_USER = "pgha"
PROXY_PORT = 3128
OVERLAY_SIZE_GIB = 8


def network_xml() -> str:
    # Isolated: no <forward>. DNS off: the VMs resolve nothing themselves (apt
    # goes through the relay, which resolves on the host), and dnsmasq then
    # never forwards queries anywhere.
    return textwrap.dedent(
        f"""\
        <network>
          <name>{NET_NAME}</name>
          <bridge name='{BRIDGE}' stp='off' delay='0'/>
          <dns enable='no'/>
          <ip address='{GATEWAY}' netmask='255.255.255.0'>
            <dhcp>
              <range start='{SUBNET}.100' end='{SUBNET}.200'/>
              <host mac='{VM_MAC}' name='{VM_NAME}' ip='{VM_IP}'/>
            </dhcp>
          </ip>
        </network>
        """
    )


def pool_xml() -> str:
    return textwrap.dedent(
        f"""\
        <pool type='dir'>
          <name>{POOL}</name>
          <target><path>{POOL_DIR}</path></target>
        </pool>
        """
    )


def seed_disk_xml(bus: str) -> str:
    # virtio: a plain read-only disk (what the product's XSLT makes of the seed).
    # Otherwise what pulumi-libvirt's Domain(cloudinit=...) does: an IDE cdrom 'hdd'
    # (works on machine 'pc' = i440FX: the cloud kernel has ata_piix + sr_mod;
    # q35 has no IDE and its SATA/AHCI has no driver in the cloud kernel)
    device, dev = ("disk", "vdb") if bus == "virtio" else ("cdrom", "hdd")
    return f"""\
    <disk type='volume' device='{device}'>
      <driver name='qemu' type='raw'/>
      <source pool='{POOL}' volume='{VM_NAME}-seed.iso'/>
      <target dev='{dev}' bus='{bus}'/>
      <readonly/>
    </disk>"""


def domain_xml(console_log: Path, seed_bus: str = "virtio", machine: str = "pc", cpu: str = "maximum") -> str:
    # type='qemu': TCG. /dev/kvm here is a software hypervisor that crashes
    # Debian kernels. cpu mode='maximum' = QEMU's "max" CPU (all TCG features).
    # Machine 'pc' (i440fx); boot from the virtio disk via GRUB in its MBR.
    # The seed ISO is a *virtio* disk: the cloud kernel has no AHCI driver,
    # a SATA/IDE cdrom would be silently ignored by cloud-init.
    return textwrap.dedent(
        f"""\
        <domain type='qemu'>
          <name>{VM_NAME}</name>
          <memory unit='MiB'>1024</memory>
          <vcpu>1</vcpu>
          <os>
            <type arch='x86_64' machine='{machine}'>hvm</type>
            <boot dev='hd'/>
          </os>
          <features><acpi/><apic/></features>
          {{cpu}}
          <clock offset='utc'/>
          <on_poweroff>destroy</on_poweroff>
          <on_reboot>restart</on_reboot>
          <on_crash>destroy</on_crash>
          <devices>
            <emulator>/usr/bin/qemu-system-x86_64</emulator>
            <disk type='volume' device='disk'>
              <driver name='qemu' type='qcow2'/>
              <source pool='{POOL}' volume='{VM_NAME}.qcow2'/>
              <target dev='vda' bus='virtio'/>
            </disk>
            {{seed_disk}}
            <interface type='network'>
              <mac address='{VM_MAC}'/>
              <source network='{NET_NAME}'/>
              <model type='virtio'/>
            </interface>
            <serial type='file'>
              <source path='{console_log}'/>
              <target port='0'/>
            </serial>
            <console type='file'>
              <source path='{console_log}'/>
              <target type='serial' port='0'/>
            </console>
            <channel type='unix'>
              <target type='virtio' name='org.qemu.guest_agent.0'/>
            </channel>
            <rng model='virtio'>
              <backend model='random'>/dev/urandom</backend>
            </rng>
            <video><model type='none'/></video>
            <memballoon model='none'/>
          </devices>
        </domain>
        """
    ).replace("    {seed_disk}", seed_disk_xml(seed_bus)).replace(
        "{cpu}", f"<cpu mode='{cpu}' check='none'/>" if cpu != "default" else "<!-- no cpu: qemu64 -->"
    )


def user_data(pubkey: str, proxy_url: str, locale_false: bool) -> str:
    lines = [
        "#cloud-config",
        "users:",
        f"  - name: {VM_USER}",
        "    shell: /bin/bash",
        "    sudo: 'ALL=(ALL) NOPASSWD:ALL'",
        "    lock_passwd: true",
        "    ssh_authorized_keys:",
        f"      - {pubkey}",
        "apt:",
        f"  proxy: {proxy_url}",
        "package_update: false",
        "package_upgrade: false",
    ]
    if locale_false:
        lines.append("locale: false")
    return "\n".join(lines) + "\n"


def meta_data() -> str:
    return f"instance-id: {VM_NAME}-{int(time.time())}\nlocal-hostname: {VM_NAME}\n"


def network_config(kind: str) -> str | None:
    if kind == "v2":
        return textwrap.dedent(
            f"""\
            version: 2
            ethernets:
              eth0:
                match:
                  macaddress: '{VM_MAC}'
                set-name: eth0
                dhcp4: true
            """
        )
    if kind == "v1":
        return textwrap.dedent(
            f"""\
            version: 1
            config:
              - type: physical
                name: eth0
                mac_address: '{VM_MAC}'
                subnets:
                  - type: dhcp
            """
        )
    return None  # cloud-init's fallback: DHCP on the first NIC


class Smoke:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.host = LibvirtHost(netns=args.netns, prefix=PREFIX)
        self.timings: dict[str, float] = {}
        self.results: dict[str, object] = {}
        assert self.host.state_dir is not None
        self.state = self.host.state_dir

    def t(self, name: str, since: float) -> float:
        dt = round(time.monotonic() - since, 1)
        self.timings[name] = dt
        print(f"  {name}: {dt} s", flush=True)
        return dt

    def ssh(self, ip: str, cmd: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = self.host.ns(
            "ssh",
            "-i", str(self.state / "id_ed25519"),
            "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR",
            f"{VM_USER}@{ip}",
            cmd,
        )
        # 255 = ssh itself failed (connect refused/reset). cloud-init may
        # restart sshd after it first answered (e.g. when user data sets
        # ssh_pwauth): retry the connection a few times.
        for _ in range(10):
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
            if p.returncode != 255:
                break
            time.sleep(2)
        if check and p.returncode != 0:
            raise LibvirtHostError(f"ssh {cmd!r} failed ({p.returncode}): {p.stdout}\n{p.stderr}")
        return p

    def run(self) -> int:
        a = self.args
        print("== build image", flush=True)
        t0 = time.monotonic()
        env = dict(os.environ)
        p = subprocess.run(
            ["bash", str(REPO / "tools" / "build-debian-image.sh")],
            capture_output=True,
            text=True,
            env=env,
        )
        if p.returncode != 0:
            print(p.stderr[-4000:], file=sys.stderr)
            raise LibvirtHostError("image build failed")
        image = Path(p.stdout.strip().splitlines()[-1])
        self.t("image_build", t0)
        self.results["image"] = str(image)
        self.results["image_build_log_tail"] = p.stderr.strip().splitlines()[-3:]

        print("== start libvirtd in netns", a.netns, flush=True)
        t0 = time.monotonic()
        self.host.start()
        self.t("libvirtd_start", t0)

        print("== network, pool, volumes", flush=True)
        t0 = time.monotonic()
        self.host.define_network(network_xml())
        subprocess.run(
            ["ip", "netns", "exec", a.netns, "ip", "-br", "addr"], check=False
        )
        (self.state / "pool.xml").write_text(pool_xml())
        POOL_DIR.mkdir(parents=True, exist_ok=True)
        self.host.virsh("pool-define", str(self.state / "pool.xml"))
        self.host.virsh("pool-start", POOL)
        size = image.stat().st_size
        vinfo = json.loads(
            subprocess.run(["qemu-img", "info", "--output=json", str(image)], capture_output=True, text=True, check=True).stdout
        )
        base = f"{PREFIX}-base.qcow2"
        self.host.virsh("vol-create-as", POOL, base, str(vinfo["virtual-size"]), "--format", "qcow2")
        self.host.virsh("vol-upload", "--pool", POOL, base, str(image), timeout=600)
        self.host.virsh(
            "vol-create-as", POOL, f"{VM_NAME}.qcow2", f"{OVERLAY_SIZE_GIB}G",
            "--format", "qcow2", "--backing-vol", base, "--backing-vol-format", "qcow2",
        )
        self.results["image_bytes"] = size

        # SSH key + seed ISO
        key = self.state / "id_ed25519"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        pubkey = (self.state / "id_ed25519.pub").read_text().strip()
        proxy_url = f"http://{GATEWAY}:{PROXY_PORT}"
        seed_dir = self.state / "seed"
        seed_dir.mkdir(exist_ok=True)
        for f in seed_dir.iterdir():
            f.unlink()
        (seed_dir / "user-data").write_text(user_data(pubkey, proxy_url, a.locale_false))
        (seed_dir / "meta-data").write_text(meta_data())
        nc = network_config(a.network_config)
        if nc is not None:
            (seed_dir / "network-config").write_text(nc)
        iso = self.state / "seed.iso"
        subprocess.run(
            ["genisoimage", "-quiet", "-output", str(iso), "-volid", "cidata", "-joliet", "-rock",
             *sorted(str(f) for f in seed_dir.iterdir())],
            check=True,
        )
        seed_vol = f"{VM_NAME}-seed.iso"
        self.host.virsh("vol-create-as", POOL, seed_vol, str(iso.stat().st_size), "--format", "raw")
        self.host.virsh("vol-upload", "--pool", POOL, seed_vol, str(iso))
        self.t("volumes_ready", t0)

        print("== package relay", flush=True)
        self.host.start_proxy(GATEWAY, PROXY_PORT)

        print("== boot", flush=True)
        console = self.state / f"console-{VM_NAME}.log"
        if console.exists():
            console.unlink()
        (self.state / "domain.xml").write_text(domain_xml(console, a.seed_bus, a.machine, a.cpu))
        self.host.virsh("define", str(self.state / "domain.xml"))
        t_boot = time.monotonic()
        self.host.virsh("start", VM_NAME)
        ip = self.host.wait_for_lease(NET_NAME, VM_MAC, timeout=a.timeout)
        self.t("boot_to_lease", t_boot)
        self.results["ip"] = ip
        if ip != VM_IP:
            raise LibvirtHostError(f"lease {ip} is not the reserved {VM_IP}")

        deadline = time.monotonic() + a.timeout
        while True:
            p = self.ssh(ip, "true", timeout=30, check=False)
            if p.returncode == 0:
                break
            if time.monotonic() > deadline:
                raise LibvirtHostError(f"no SSH to {ip}: {p.stderr}")
            time.sleep(2)
        self.t("boot_to_ssh", t_boot)

        print("== checks in the VM", flush=True)
        t0 = time.monotonic()
        p = self.ssh(ip, "cloud-init status --wait --long; echo rc=$?", check=False, timeout=a.timeout)
        self.t("ssh_to_cloud_init_done", t0)
        self.timings["boot_to_cloud_init_done"] = round(time.monotonic() - t_boot, 1)
        self.results["cloud_init_status"] = p.stdout.strip()
        print(textwrap.indent(p.stdout.strip(), "    "))
        p = self.ssh(
            ip,
            "sudo grep -E 'WARNING|ERROR|Traceback' /var/log/cloud-init.log | tail -n 20; true",
            check=False,
        )
        self.results["cloud_init_warnings"] = p.stdout.strip().splitlines()

        p = self.ssh(ip, "sudo -n true")
        if p.stderr.strip():
            raise LibvirtHostError(f"sudo complains: {p.stderr.strip()}")
        p = self.ssh(ip, "sudo modprobe softdog && ls -l /dev/watchdog /dev/watchdog0 && lsmod | grep -i softdog")
        self.results["watchdog"] = p.stdout.strip()
        print(textwrap.indent(p.stdout.strip(), "    "))

        t0 = time.monotonic()
        p = self.ssh(ip, "sudo apt-get update 2>&1 | tail -n 5", timeout=900)
        self.t("apt_get_update", t0)
        self.results["apt_update_tail"] = p.stdout.strip().splitlines()
        print(textwrap.indent(p.stdout.strip(), "    "))
        if "Err:" in p.stdout or "Failed to fetch" in p.stdout:
            raise LibvirtHostError("apt-get update through the relay failed")

        p = self.ssh(
            ip,
            "df -h / | tail -n1; uname -r; ip -br addr; getent hosts $(hostname); cat /etc/apt/apt.conf.d/*proxy* 2>/dev/null;"
            " ls /etc/network/interfaces.d/ /etc/netplan 2>/dev/null; cat /etc/network/interfaces.d/* 2>/dev/null;"
            " systemctl is-system-running; systemctl --failed --no-legend; true",
            check=False,
        )
        self.results["vm_info"] = p.stdout.strip().splitlines()
        print(textwrap.indent(p.stdout.strip(), "    "))
        if a.extra_cmd:
            t0 = time.monotonic()
            p = self.ssh(ip, a.extra_cmd, check=False, timeout=1800)
            self.t("extra_cmd", t0)
            self.results["extra_cmd"] = (p.returncode, p.stdout[-3000:], p.stderr[-2000:])
            print(textwrap.indent(p.stdout[-3000:] + p.stderr[-2000:], "    "))
        return 0

    def teardown(self) -> None:
        if self.args.keep:
            print(f"--keep: leaving everything running; stop with: python3 {__file__} --stop", flush=True)
            return
        errs = self.host.stop()
        if errs:
            print("teardown errors:", *errs, sep="\n  ", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--netns", default="pgha-e2e")
    ap.add_argument("--keep", action="store_true", help="leave VM and libvirtd running")
    ap.add_argument("--stop", action="store_true", help="only tear down a previous --keep run")
    ap.add_argument("--network-config", choices=["v2", "v1", "none"], default="v2")
    ap.add_argument("--seed-bus", choices=["virtio", "ide", "sata"], default="virtio",
                    help="how the NoCloud seed ISO is attached (ide = pulumi-libvirt's cloudinit=)")
    ap.add_argument("--machine", default="pc", help="machine type (pc = i440FX, q35)")
    ap.add_argument("--cpu", choices=["maximum", "default"], default="maximum",
                    help="maximum = QEMU's 'max' CPU under TCG; default = no <cpu> (qemu64)")
    ap.add_argument("--locale-false", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--extra-cmd", help="one more command to run in the VM (timed)")
    ap.add_argument("--json", help="write timings and results to this file")
    args = ap.parse_args(argv)

    if os.geteuid() != 0:
        print("smoke_boot.py needs root", file=sys.stderr)
        return 2
    missing = missing_tools()
    if missing:
        print("missing tools: " + ", ".join(missing), file=sys.stderr)
        return 2
    s = Smoke(args)
    if args.stop:
        errs = s.host.stop()
        print("\n".join(s.host.log))
        return 1 if errs else 0
    rc = 1
    try:
        rc = s.run()
    except Exception as e:  # noqa: BLE001
        print(f"FAILED: {e}", file=sys.stderr)
        console = s.state / f"console-{VM_NAME}.log"
        if console.exists():
            print("---- console tail ----", file=sys.stderr)
            print(console.read_text(errors="replace")[-4000:], file=sys.stderr)
        s.results["error"] = str(e)
    finally:
        s.teardown()
        print("\n".join(s.host.log))
        print("timings:", json.dumps(s.timings), flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"timings": s.timings, "results": s.results}, indent=2))
    return rc


if __name__ == "__main__":
    sys.exit(main())
