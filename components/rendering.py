"""Pure rendering: ClusterSpec (+ node addresses and secrets) in, file and script text out.

Nothing here imports Pulumi or touches the network; Pulumi code hands resolved Output
values to these functions inside `apply`, and the tests call them directly.
"""
from __future__ import annotations

import base64
import ipaddress
import posixpath
import shlex
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import jinja2
import yaml

from components.config import (POSTGRES_PORT, RAFT_PORT, RESTAPI_PORT, ClusterSpec,
                               NodeSpec)
from components.hosts import jump_of
from components.tls import TlsFiles, ca_file_name, tls_files

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"
# Joins, hands over and forgets members (components/membership.py, the health gate).
MEMBERSHIP_TOOL = TEMPLATES_DIR / "raft-membership.py"

USERS = {"superuser": "postgres", "replication": "replicator", "rewind": "rewind_user",
         "restapi": "patroni"}
PORTS = {"postgres": POSTGRES_PORT, "restapi": RESTAPI_PORT, "raft": RAFT_PORT}
# Exact versions Patroni's virtualenv gets; the real-cluster tests install the same.
PIP_PINS = {"pysyncobj": "0.3.17", "psycopg[binary]": "3.3.9", "cryptography": "46.0.7"}


@dataclass(frozen=True)
class ClusterSecrets:
    superuser_password: str
    replication_password: str
    rewind_password: str
    restapi_password: str
    raft_password: str


@dataclass(frozen=True)
class NodePaths:
    config_dir: str
    config: str
    venv: str
    raft_dir: str
    data_dir: str
    bin_dir: str
    pgpass: str
    socket_dir: str
    watchdog_script: str
    journal_check: str
    tls_dir: str = "/etc/patroni/tls"


def node_paths(spec: ClusterSpec) -> NodePaths:
    layout = spec.layout
    return NodePaths(
        config_dir="/etc/patroni", config="/etc/patroni/patroni.yml", venv="/opt/patroni",
        raft_dir="/var/lib/pgha/raft", data_dir=layout.pg_data_dir, bin_dir=layout.pg_bin_dir,
        pgpass=f"{layout.postgres_home}/.pgpass_patroni", socket_dir="/run/postgresql",
        watchdog_script="/usr/local/sbin/pgha-ensure-softdog",
        journal_check="/usr/local/sbin/pgha-raft-journal-check")


def pip_requirements(spec: ClusterSpec) -> list[str]:
    return [f"patroni[raft,psycopg3]=={spec.patroni_version}"] + [
        f"{name}=={version}" for name, version in PIP_PINS.items()]


def postgres_parameters(spec: ClusterSpec) -> dict[str, Any]:
    """Cluster-wide PostgreSQL parameters: the program's defaults, then the user's."""
    params: dict[str, Any] = {
        "password_encryption": "scram-sha-256",
        "wal_level": "replica",
        "hot_standby": "on",
        # pg_rewind needs checksums (initdb) or hint-bit WAL logging; both is belt and braces.
        "wal_log_hints": "on",
        "max_wal_senders": 10,
        "max_replication_slots": 10,
        "wal_keep_size": "256MB",
        # A demoting primary waits for its walsenders; with the link cut that is this long.
        "wal_sender_timeout": "10s",
        "wal_receiver_timeout": "10s",
    }
    params.update(spec.postgres_parameters)
    return params


def _b64(text: str) -> str:
    return "\n".join(textwrap.wrap(base64.b64encode(text.encode()).decode(), 76))


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)), undefined=jinja2.StrictUndefined,
    trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True, autoescape=False)
_env.filters["b64"] = _b64
_env.filters["shq"] = shlex.quote
_env.filters["dirname"] = posixpath.dirname


def _render(template: str, **values: Any) -> str:
    return _env.get_template(template).render(ports=PORTS, users=USERS, **values)


def render_template(template: str, **values: Any) -> str:
    """Any template of templates/, with the filters and names every script has."""
    return _render(template, **values)


@dataclass(frozen=True)
class NodeTlsPems:
    """A node's TLS files' contents: the CA, its certificate and its key (a secret)."""
    ca: str
    cert: str
    key: str


def node_tls(spec: ClusterSpec, paths: NodePaths) -> TlsFiles | None:
    """The node's TLS files, or None with TLS off."""
    return tls_files(paths.tls_dir) if spec.tls is not None else None


def rest_scheme(spec: ClusterSpec) -> str:
    return "https" if spec.tls is not None else "http"


def _peers(node: NodeSpec, addresses: Mapping[str, str]) -> list[str]:
    own = addresses[node.name]
    # Patroni must never list itself as a Raft partner (patroni#1701).
    return [ip for name, ip in addresses.items() if name != node.name and ip != own]


def render_patroni_yml(spec: ClusterSpec, node: NodeSpec, addresses: Mapping[str, str],
                       secrets: ClusterSecrets, paths: NodePaths | None = None,
                       backup: Mapping[str, Any] | None = None,
                       bootstrap: Mapping[str, Any] | None = None) -> str:
    """patroni.yml for `node`; `addresses` maps every node name to its IP, in node order.
    `backup`: what backups add (components.backup.patroni_settings), or None.
    `bootstrap`: a method that creates the cluster from a backup instead of initdb (a
    clone's, components.clone.bootstrap); else the one in `backup`, if any."""
    parameters = postgres_parameters(spec)
    bootstrap = bootstrap or (backup or {}).get("bootstrap")
    if backup:
        # Archiving is the backup's (config refuses a user's archive_command with backups
        # on); archive_timeout is the user's to trade against WAL volume, if they set it.
        users = {name.lower() for name in spec.postgres_parameters}
        parameters.update({name: value for name, value in backup["parameters"].items()
                           if name != "archive_timeout" or name not in users})
    paths = paths or node_paths(spec)
    return _render(
        "patroni.yml.j2", spec=spec, node=node, address=addresses[node.name],
        peers=_peers(node, addresses), members=list(addresses.values()),
        client_cidrs=spec.hba_cidrs, parameters=parameters, backup=backup,
        bootstrap=bootstrap, secrets=secrets, paths=paths, tags=node.tags,
        tls=node_tls(spec, paths))


def render_unit(spec: ClusterSpec) -> str:
    return _render("patroni.service.j2", spec=spec, paths=node_paths(spec))


def render_raft_flush_unit(spec: ClusterSpec) -> str:
    return _render("raft-flush.service.j2", spec=spec, paths=node_paths(spec))


def render_cloud_init(spec: ClusterSpec, node: NodeSpec, ssh_public_key: str,
                      host_private_key: str, host_public_key: str) -> str:
    return _render("cloud-init.yaml.j2", spec=spec, node=node,
                   ssh_public_key=ssh_public_key.strip(),
                   host_private_key=host_private_key, host_public_key=host_public_key.strip())


SSH_OPTIONS = ("-i pgha-key -o UserKnownHostsFile=pgha-known-hosts "
               "-o StrictHostKeyChecking=yes")


def ssh_command(spec: ClusterSpec, name: str, ip: str) -> str:
    """How the user logs in to node (or repository) `name` at `ip`, with the stack's key
    and pinned host keys (saved as the README says); through its hypervisor when its host
    has sshJump (that hop uses the user's own SSH configuration and known hosts)."""
    host = jump_of(spec.host_of(name))
    jump = f"-J {host.ssh_jump} " if host is not None else ""
    return f"ssh {jump}{SSH_OPTIONS} {spec.ssh_user}@{ip}"


# The node's interface on the hosts' LAN, named by its MAC (a name of the program's own,
# the same on every distribution and virtual NIC model).
LAN_INTERFACE = "lan0"


def render_network_config(spec: ClusterSpec, node: NodeSpec) -> str | None:
    """cloud-init network configuration: a static address on the hosts' LAN; None where
    libvirt's DHCP serves the node (one host)."""
    if not spec.hosts:
        return None
    prefix = ipaddress.ip_network(spec.network_cidr).prefixlen
    return _render("cloud-init-network.yaml.j2", spec=spec, node=node,
                   interface=LAN_INTERFACE, prefix=prefix)


def _proxy_files(spec: ClusterSpec) -> dict[str, str]:
    proxy = spec.http_proxy
    no_proxy = ",".join(["localhost", "127.0.0.1"] + ([spec.network_cidr]
                                                      if spec.knows_addresses else []))
    env = "" if not proxy else (
        f"export http_proxy={shlex.quote(proxy)} https_proxy={shlex.quote(proxy)}\n"
        f"export no_proxy={shlex.quote(no_proxy)}\n")
    apt = "" if not proxy else (f'Acquire::http::Proxy "{proxy}";\n'
                                f'Acquire::https::Proxy "{proxy}";\n')
    # pip takes the proxy from proxy.env, which also exempts the cluster network (a
    # wheelhouse there must be reached directly).
    pip = ["[global]"]
    if spec.python_index_url:
        pip.append(f"index-url = {spec.python_index_url}")
        host = spec.python_index_url.split("/")[2].split(":")[0]
        pip.append(f"trusted-host = {host}")
    if spec.extra_ca_certificates:
        pip.append("cert = " + ("/etc/ssl/certs/ca-certificates.crt"
                                if spec.layout.package_manager == "apt"
                                else "/etc/pki/tls/certs/ca-bundle.crt"))
    header = "# Managed by Pulumi (pgha).\n"
    return {"proxy_env": header + env, "apt_proxy_conf": header + apt,
            "pip_conf": header + "\n".join(pip) + "\n"}


# Where a node image (components/node_image.py) says what it holds and is built for.
IMAGE_MANIFEST = "/etc/pgha/image.json"


def image_built_for(spec: ClusterSpec) -> dict[str, Any]:
    """The settings a node image is built for and a stack must match: a node from an
    image built for another PostgreSQL would get a second one installed beside it. (A
    different patroniVersion is not refused: the install step installs the stack's over
    it, as an in-place change does on a running node.)"""
    return {"osFamily": spec.os_family, "postgresSource": spec.postgres_source,
            "postgresVersion": spec.postgres_version}


def image_built_for_line(built_for: Mapping[str, Any]) -> str:
    """The same, as one line the prepare step compares."""
    return " ".join(f"{key}={value}" for key, value in built_for.items())


def render_prepare_script(spec: ClusterSpec) -> str:
    return _render("prepare-node.sh.j2", spec=spec, layout=spec.layout, **_proxy_files(spec),
                   image_manifest=IMAGE_MANIFEST, patroni_config=node_paths(spec).config,
                   built_for_line=image_built_for_line(image_built_for(spec)))


def render_install_postgres_script(spec: ClusterSpec) -> str:
    return _render("install-postgres.sh.j2", spec=spec, layout=spec.layout)


def render_watchdog_script(spec: ClusterSpec) -> str:
    paths = node_paths(spec)
    return _render("setup-watchdog.sh.j2", spec=spec, paths=paths,
                   watchdog_script=_render("ensure-softdog.sh.j2"))


def render_install_patroni_script(spec: ClusterSpec) -> str:
    return _render("install-patroni.sh.j2", spec=spec, layout=spec.layout,
                   paths=node_paths(spec), pip_requirements=pip_requirements(spec),
                   journal_check=(TEMPLATES_DIR / "raft-journal-check.py").read_text())


def render_configure_script(spec: ClusterSpec, node: NodeSpec, addresses: Mapping[str, str],
                            secrets: ClusterSecrets,
                            backup: Mapping[str, Any] | None = None,
                            bootstrap: Mapping[str, Any] | None = None,
                            tls_pems: NodeTlsPems | None = None) -> str:
    """`tls_pems`: the node's TLS files, required with TLS on (installed before Patroni
    reads them; PostgreSQL and Patroni reload them when they change)."""
    paths = node_paths(spec)
    assert (tls_pems is not None) == (spec.tls is not None), "TLS files iff TLS is on"
    return _render("configure-patroni.sh.j2", spec=spec, node=node, paths=paths,
                   tls=node_tls(spec, paths), tls_pems=tls_pems,
                   patroni_yml=render_patroni_yml(spec, node, addresses, secrets,
                                                  backup=backup, bootstrap=bootstrap),
                   unit=render_unit(spec), flush_unit=render_raft_flush_unit(spec),
                   apply_dcs_py=_render("apply-dcs.py.j2", paths=paths).rstrip("\n"),
                   tool_py=MEMBERSHIP_TOOL.read_text(),
                   raft_command=_render("pgha-raft.sh.j2", paths=paths,
                                        tool="/usr/local/lib/pgha/raft-membership.py"))


def restore_marker(paths: NodePaths) -> str:
    """Where a node records the last restore (spec.restore_request) it carried out."""
    return f"{posixpath.dirname(paths.raft_dir)}/restored-target"


def render_start_script(spec: ClusterSpec, node: NodeSpec) -> str:
    paths = node_paths(spec)
    return _render("start-patroni.sh.j2", spec=spec, node=node, paths=paths,
                   restore_request=spec.restore_request, marker=restore_marker(paths),
                   tls=node_tls(spec, paths), scheme=rest_scheme(spec))


def render_health_gate_script(spec: ClusterSpec, addresses: Mapping[str, str]) -> str:
    paths = node_paths(spec)
    gate = _render("health-gate.py.j2", spec=spec, members=dict(addresses), paths=paths,
                   timeout=spec.health_timeout_seconds, tls=node_tls(spec, paths),
                   scheme=rest_scheme(spec))
    return _render("health-gate.sh.j2", paths=paths, gate_py=gate.rstrip("\n"),
                   tool_py=MEMBERSHIP_TOOL.read_text().rstrip("\n"),
                   candidates=",".join(addresses))


def render_health_probe(spec: ClusterSpec, addresses: Mapping[str, str],
                        ca_cert: str = "") -> str:
    """The read-only probe that components/health.py judges on every up and preview;
    with TLS on it verifies every node against `ca_cert` (PEM)."""
    assert bool(ca_cert) == (spec.tls is not None), "the CA iff TLS is on"
    return _render("health-probe.py.j2", spec=spec, members=dict(addresses),
                   scheme=rest_scheme(spec), ca_cert=ca_cert)


def libpq_dsn(spec: ClusterSpec, addresses: Mapping[str, str], session_attrs: str,
              dbname: str = "postgres", user: str = USERS["superuser"],
              ca_file: str | None = None) -> str:
    """A libpq multi-host URI (no password: use ~/.pgpass or PGPASSWORD). With TLS on
    the client verifies each node's certificate and address against the cluster's CA,
    saved as `ca_file` (default: ca_file_name, relative to the client's directory)."""
    hosts = ",".join(f"{ip}:{POSTGRES_PORT}" for ip in addresses.values())
    dsn = (f"postgresql://{user}@{hosts}/{dbname}"
           f"?target_session_attrs={session_attrs}&connect_timeout=5")
    if spec.tls is not None:
        dsn += f"&sslmode=verify-full&sslrootcert={ca_file or ca_file_name(spec)}"
    return dsn


def parse_patroni_yml(text: str) -> dict:
    return yaml.safe_load(text)


def with_local_paths(config: dict, paths: NodePaths, watchdog_device: str) -> dict:
    """The only changes a non-VM run (the real-cluster tests) may make to patroni.yml:
    filesystem paths, bin_dir, the unix socket dir and the watchdog device (Patroni's
    testing driver on `watchdog_device`, a named pipe that records keepalives: network
    namespaces have no softdog). The watchdog mode stays as rendered."""
    config = yaml.safe_load(yaml.safe_dump(config))
    config["raft"]["data_dir"] = paths.raft_dir
    pg = config["postgresql"]
    pg.update(data_dir=paths.data_dir, bin_dir=paths.bin_dir, pgpass=paths.pgpass)
    pg["parameters"]["unix_socket_directories"] = paths.socket_dir
    if "post_bootstrap" in config["bootstrap"]:  # its last argument is the node's psql
        command = config["bootstrap"]["post_bootstrap"].rsplit(" ", 1)[0]
        config["bootstrap"]["post_bootstrap"] = f"{command} {paths.bin_dir}/psql"
    config["watchdog"].update(driver="testing", device=watchdog_device)
    if "ssl_cert_file" in pg["parameters"]:
        files = tls_files(paths.tls_dir)
        pg["parameters"].update(ssl_cert_file=files.cert, ssl_key_file=files.key)
        config["restapi"].update(certfile=files.cert, keyfile=files.key)
        config["ctl"]["cacert"] = files.ca
        for role in ("replication", "rewind"):
            pg["authentication"][role]["sslrootcert"] = files.ca
    return config

