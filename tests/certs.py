"""Test certificates made as pulumi-tls makes the program's: an ECDSA P-256 CA, and
certificates it signs with the names and uses asked for (cryptography, no network)."""
from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

USES = {"server_auth": ExtendedKeyUsageOID.SERVER_AUTH,
        "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH}


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key_pem(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


@dataclass(frozen=True)
class Issued:
    key: str  # PEM
    cert: str  # PEM


class TestCa:
    """A CA valid for a day; `issue` signs a leaf certificate."""
    __test__ = False  # not a pytest class

    def __init__(self, common_name: str = "pgha test CA"):
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._subject = _name(common_name)
        self.cert = self._build(self._subject, self._key.public_key(), [
            (x509.BasicConstraints(ca=True, path_length=None), True)])

    def _build(self, subject: x509.Name, public_key, extensions: list) -> str:
        now = dt.datetime.now(dt.timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(self._subject).public_key(public_key)
                   .serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5))
                   .not_valid_after(now + dt.timedelta(days=1)))
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical=critical)
        return builder.sign(self._key, hashes.SHA256()).public_bytes(
            serialization.Encoding.PEM).decode()

    def issue(self, common_name: str, dns_names: list[str] = (),
              ip_addresses: list[str] = (), uses: tuple[str, ...] = ("server_auth",)
              ) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        sans = [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
        sans += [x509.DNSName(name) for name in dns_names]
        extensions = [(x509.ExtendedKeyUsage([USES[u] for u in uses]), False)]
        if sans:
            extensions.append((x509.SubjectAlternativeName(sans), False))
        return Issued(_key_pem(key), self._build(_name(common_name), key.public_key(),
                                                 extensions))
