"""The cluster's TLS, the pure part: where a node keeps its files, what names its
certificate is valid for, and what the stack's clients call the CA file.

PostgreSQL and Patroni's REST API serve each node's certificate; replication, pg_rewind,
patronictl, the health gate and the clients of the stack's DSNs verify it against the
cluster's CA (components.certificates issues them; the node's configure step installs the
files and reloads what serves them).
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass

from components.config import ClusterSpec


@dataclass(frozen=True)
class TlsFiles:
    """Where a node keeps its TLS files (readable by postgres: Patroni and PostgreSQL)."""
    dir: str
    ca: str
    cert: str
    key: str


def tls_files(tls_dir: str) -> TlsFiles:
    return TlsFiles(dir=tls_dir, ca=posixpath.join(tls_dir, "ca.crt"),
                    cert=posixpath.join(tls_dir, "server.crt"),
                    key=posixpath.join(tls_dir, "server.key"))


def server_names(node_name: str, ip: str) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) a node's certificate is valid for: its name and address,
    and loopback (the node's own checks). The address is a DNS name too: libpq before
    PostgreSQL 15 matches the host it dials against DNS names only."""
    return [node_name, ip, "localhost"], [ip, "127.0.0.1"]


def ca_file_name(spec: ClusterSpec) -> str:
    """The file the stack's DSNs name as sslrootcert (where a client saves caCertificate)."""
    return f"{spec.cluster_name}-ca.crt"
