#!/usr/bin/env python3
"""Boot the pgha Debian 12 cloud image under a private libvirt and check it.

Run as root:  python3 tests/e2e/smoke_boot.py [--keep] [--json out.json]
              python3 tests/e2e/smoke_boot.py --stop   (tear down --keep runs)

Steps (each timed):
  1. build the image (tools/build-debian-image.sh; cached, so usually warm)
  2. start a private libvirtd (libvirt_host.py: its own network and mount
     namespaces, config, socket and state; names from a per-run id)
  3. define an isolated libvirt network (no <forward>, DHCP, a fixed MAC with a
     <host> reservation), a directory storage pool in the run's state dir, the
     base image uploaded as a volume, a qcow2 overlay on it (bigger than the
     base: growpart is checked), a NoCloud seed ISO uploaded as a volume and
     attached the way pulumi-libvirt's Domain(cloudinit=...) attaches it (an
     IDE cdrom ``hdd`` with serial "cloudinit", on machine ``pc`` = i440FX;
     ``--seed-bus virtio`` attaches it as a virtio disk instead), and a domain
     of type 'qemu' (TCG), 1 vCPU / 1024 MiB, booting from its disk, serial
     console to a file
  4. start the package relay on the bridge's gateway IP, boot, wait for the
     DHCP lease, wait for SSH (ssh runs inside the namespace)
  5. in the VM: cloud-init status, where the NoCloud seed was found, the
     kernel's IDE/cdrom/iso9660 drivers, sudo, softdog + /dev/watchdog,
     apt-get update through the relay, root fs size
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

# Libvirt names (network, bridge, pool, domain) derive from the run's id; the
# subnet lives inside the run's own network namespace, so it can be fixed.
SUBNET = "10.231.0"
GATEWAY = f"{SUBNET}.1"
VM_MAC = "52:54:00:e2:e0:10"
VM_IP = f"{SUBNET}.10"
VM_USER = "pgha"
PROXY_PORT = 3128
OVERLAY_SIZE_GIB = 8


class Names:
    """Libvirt object names of one run."""

    def __init__(self, host: LibvirtHost) -> None:
        self.net = host.name("net")
        self.bridge = host.bridge_name(0)
        self.pool = host.name("pool")
        self.vm = host.name("vm1")


def network_xml(n: Names) -> str:
    # Isolated: no <forward>. DNS off: the VMs resolve nothing themselves (apt
    # goes through the relay, which resolves on the host), and dnsmasq then
    # never forwards queries anywhere.
    return textwrap.dedent(
        f"""\
        <network>
          <name>{n.net}</name>
          <bridge name='{n.bridge}' stp='off' delay='0'/>
          <dns enable='no'/>
          <ip address='{GATEWAY}' netmask='255.255.255.0'>
            <dhcp>
              <range start='{SUBNET}.100' end='{SUBNET}.200'/>
              <host mac='{VM_MAC}' name='{n.vm}' ip='{VM_IP}'/>
            </dhcp>
          </ip>
        </network>
        """
    )


def seed_disk_xml(n: Names, bus: str, seed_path: str) -> str:
    if bus == "ide":
        # Exactly what terraform-provider-libvirt 0.8.1 (pulumi-libvirt 0.5.4)
        # adds for Domain(cloudinit=...) (libvirt/domain.go newDiskForCloudInit):
        # a file cdrom on the last IDE slot of an i440FX machine, serial
        # "cloudinit"; libvirt makes every cdrom read-only.
        return f"""\
    <disk type='file' device='cdrom'>
      <driver name='qemu' type='raw'/>
      <source file='{seed_path}'/>
      <target dev='hdd' bus='ide'/>
      <serial>cloudinit</serial>
    </disk>"""
    # virtio: a plain read-only disk (what the product's XSLT makes of the seed);
    # sata: a cdrom on q35's AHCI controller.
    device, dev = ("disk", "vdb") if bus == "virtio" else ("cdrom", "sda")
    return f"""\
    <disk type='volume' device='{device}'>
      <driver name='qemu' type='raw'/>
      <source pool='{n.pool}' volume='{n.vm}-seed.iso'/>
      <target dev='{dev}' bus='{bus}'/>
      <readonly/>
    </disk>"""


def domain_xml(
    n: Names,
    console_log: Path,
    seed_path: str,
    seed_bus: str = "ide",
    machine: str = "pc",
    cpu: str = "maximum",
) -> str:
    # type='qemu': TCG. /dev/kvm here is a software hypervisor that crashes
    # Debian kernels. cpu mode='maximum' = QEMU's "max" CPU (all TCG features).
    # Machine 'pc' (i440fx, the provider's default); boot from the virtio disk
    # via GRUB in its MBR. The seed: see seed_disk_xml (the cloud kernel has
    # no AHCI driver, so a SATA cdrom on q35 is silently ignored).
    return textwrap.dedent(
        f"""\
        <domain type='qemu'>
          <name>{n.vm}</name>
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
              <source pool='{n.pool}' volume='{n.vm}.qcow2'/>
              <target dev='vda' bus='virtio'/>
            </disk>
            {{seed_disk}}
            <interface type='network'>
              <mac address='{VM_MAC}'/>
              <source network='{n.net}'/>
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
    ).replace("    {seed_disk}", seed_disk_xml(n, seed_bus, seed_path)).replace(
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


def meta_data(instance_id: str, hostname: str) -> str:
    return f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n"


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
        self.host = LibvirtHost(netns=args.netns, run_id=args.run_id)
        self.n = Names(self.host)
        self.timings: dict[str, float] = {}
        self.results: dict[str, object] = {"run_id": self.host.run_id, "uri": self.host.uri}
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
        a, n = self.args, self.n
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

        print("== start a private libvirtd, run", self.host.run_id, flush=True)
        t0 = time.monotonic()
        self.host.start()
        self.t("libvirtd_start", t0)
        print("  ", self.host.uri, flush=True)

        print("== network, pool, volumes", flush=True)
        t0 = time.monotonic()
        self.host.define_network(network_xml(n))
        subprocess.run(self.host.ns("ip", "-br", "addr"), check=False)
        self.host.create_pool(n.pool)
        size = image.stat().st_size
        vinfo = json.loads(
            subprocess.run(["qemu-img", "info", "--output=json", str(image)], capture_output=True, text=True, check=True).stdout
        )
        base = self.host.name("base.qcow2")
        self.host.virsh("vol-create-as", n.pool, base, str(vinfo["virtual-size"]), "--format", "qcow2")
        self.host.virsh("vol-upload", "--pool", n.pool, base, str(image), timeout=600)
        self.host.virsh(
            "vol-create-as", n.pool, f"{n.vm}.qcow2", f"{OVERLAY_SIZE_GIB}G",
            "--format", "qcow2", "--backing-vol", base, "--backing-vol-format", "qcow2",
        )
        self.results["image_bytes"] = size

        # SSH key + seed ISO (made as pulumi-libvirt's CloudInitDisk makes it)
        key = self.state / "id_ed25519"
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        pubkey = (self.state / "id_ed25519.pub").read_text().strip()
        proxy_url = f"http://{GATEWAY}:{PROXY_PORT}"
        seed_dir = self.state / "seed"
        seed_dir.mkdir(exist_ok=True)
        for f in seed_dir.iterdir():
            f.unlink()
        instance_id = f"{n.vm}-{int(time.time())}"
        self.results["instance_id"] = instance_id
        (seed_dir / "user-data").write_text(user_data(pubkey, proxy_url, a.locale_false))
        (seed_dir / "meta-data").write_text(meta_data(instance_id, n.vm))
        nc = network_config(a.network_config)
        if nc is not None:
            (seed_dir / "network-config").write_text(nc)
        iso = self.state / "seed.iso"
        subprocess.run(
            ["genisoimage", "-quiet", "-output", str(iso), "-volid", "cidata", "-joliet", "-rock",
             *sorted(str(f) for f in seed_dir.iterdir())],
            check=True,
        )
        seed_vol = f"{n.vm}-seed.iso"
        self.host.virsh("vol-create-as", n.pool, seed_vol, str(iso.stat().st_size), "--format", "raw")
        self.host.virsh("vol-upload", "--pool", n.pool, seed_vol, str(iso))
        seed_path = self.host.virsh("vol-path", "--pool", n.pool, seed_vol).strip()
        self.t("volumes_ready", t0)

        print("== package relay", flush=True)
        self.host.start_proxy(GATEWAY, PROXY_PORT)

        print(f"== boot (seed on {a.seed_bus}, machine {a.machine})", flush=True)
        console = self.console_log()
        if console.exists():
            console.unlink()
        dom_xml = domain_xml(n, console, seed_path, a.seed_bus, a.machine, a.cpu)
        (self.state / "domain.xml").write_text(dom_xml)
        self.host.virsh("define", str(self.state / "domain.xml"))
        self.results["seed_disk_xml"] = seed_disk_xml(n, a.seed_bus, seed_path).strip()
        t_boot = time.monotonic()
        self.host.virsh("start", n.vm)
        ip = self.host.wait_for_lease(n.net, VM_MAC, timeout=a.timeout)
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
                raise LibvirtHostError(f"no SSH to {ip} as {VM_USER} with the seed's key: {p.stderr}")
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

        # Where cloud-init found its NoCloud seed, and the kernel's drivers for it.
        p = self.ssh(ip, "sudo cat /var/lib/cloud/instance/datasource; echo; sudo cat /var/lib/cloud/data/instance-id")
        ds_lines = p.stdout.strip().splitlines()
        self.results["seed_datasource"] = ds_lines[0] if ds_lines else ""
        self.results["seen_instance_id"] = ds_lines[-1] if ds_lines else ""
        p = self.ssh(
            ip,
            "uname -r; lsblk -ndo NAME,TYPE,FSTYPE,LABEL,SERIAL /dev/sr0 /dev/vdb 2>/dev/null;"
            " lsmod | grep -E '^(ata_piix|ata_generic|libata|sr_mod|cdrom|isofs|virtio_blk) ' | cut -d' ' -f1;"
            " grep -E '^CONFIG_(ATA|ATA_PIIX|ATA_GENERIC|SATA_AHCI|BLK_DEV_SR|ISO9660_FS|VIRTIO_BLK)=' /boot/config-$(uname -r);"
            " sudo dmesg | grep -E 'ata[0-9]|sr0|scsi [0-9]|ISO 9660' | head -n 12; true",
            check=False,
        )
        self.results["seed_drivers"] = p.stdout.strip().splitlines()
        print(textwrap.indent(self.results["seed_datasource"] + "\n" + p.stdout.strip(), "    "))

        p = self.ssh(ip, "id -un; sudo -n true")
        if p.stderr.strip():
            raise LibvirtHostError(f"sudo complains: {p.stderr.strip()}")
        self.results["ssh_user"] = p.stdout.strip()
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

    def console_log(self) -> Path:
        return self.state / f"console-{self.n.vm}.log"

    def diagnostics(self) -> None:
        for title, path in (
            ("console", self.console_log()),
            ("qemu log", self.host.private_dirs["/var/log/libvirt"] / "qemu" / f"{self.n.vm}.log"),
            ("libvirtd log", self.host.logfile("libvirtd")),
        ):
            if path.exists():
                print(f"---- {title} tail ({path}) ----", file=sys.stderr)
                print(path.read_text(errors="replace")[-4000:], file=sys.stderr)

    def teardown(self) -> None:
        if self.args.keep:
            self.host.mark_kept()
            print(f"--keep: run {self.host.run_id} left running ({self.host.uri}); "
                  f"stop with: python3 {__file__} --stop", flush=True)
            return
        t0 = time.monotonic()
        errs = self.host.stop()
        self.t("teardown", t0)
        if errs:
            self.results["teardown_errors"] = errs
            print("teardown errors:", *errs, sep="\n  ", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--netns", default=None, help="network namespace name (default: pgha-<run id>)")
    ap.add_argument("--run-id", default=None, help="run id (default: random)")
    ap.add_argument("--keep", action="store_true", help="leave VM and libvirtd running")
    ap.add_argument("--stop", action="store_true", help="only tear down runs left by --keep")
    ap.add_argument("--network-config", choices=["v2", "v1", "none"], default="v2")
    ap.add_argument("--seed-bus", choices=["ide", "virtio", "sata"], default="ide",
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
    if args.stop:
        swept = LibvirtHost.sweep_stale(include_kept=True)
        print("\n".join(f"stopped run {s}" for s in swept) or "nothing to stop")
        return 0
    missing = missing_tools()
    if missing:
        print("missing tools: " + ", ".join(missing), file=sys.stderr)
        return 2
    s = Smoke(args)
    rc = 1
    try:
        rc = s.run()
    except Exception as e:  # noqa: BLE001
        print(f"FAILED: {e}", file=sys.stderr)
        s.diagnostics()
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
