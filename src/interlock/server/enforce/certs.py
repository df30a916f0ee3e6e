"""The admission webhook's TLS certificate, generated on first use (``interlock serve
--admission`` without ``--admission-cert``/``--admission-key``).

    >>> import tempfile
    >>> from pathlib import Path
    >>> tls = ensure_admission_tls(Path(tempfile.mkdtemp()), ["interlock.interlock-system.svc"])
    >>> sorted(p.name for p in tls.folder.iterdir())
    ['ca.key', 'ca.pem', 'lock', 'server.key', 'server.pem']
    >>> ca_bundle(tls.ca).startswith("LS0tLS1CRUdJTi")   # base64 of "-----BEGIN"
    True

The Kubernetes API server calls a webhook over HTTPS only and verifies the server certificate
against the ``caBundle`` of the ``ValidatingWebhookConfiguration``. Without a certificate of its
own, Interlock makes a small private CA and a server certificate signed by it, in
``HOME/tls/admission/`` (folder 0700, keys 0600):

* ``ca.pem`` / ``ca.key`` — a self-signed CA (ECDSA P-256, 10 years, path length 0). Its PEM,
  base64-encoded (:func:`ca_bundle`, ``interlock serve --print-ca-bundle``), is the
  ``caBundle``. The CA key stays so the server certificate can be re-issued under the same
  bundle;
* ``server.pem`` / ``server.key`` — ECDSA P-256, 2 years, ``serverAuth``, with the DNS names
  asked for (``--admission-dns``, default ``interlock.interlock-system.svc``: the name the API
  server uses for a ``service`` reference) and the IP ``127.0.0.1``.

On each start the server certificate is kept when it still verifies under the CA, names every
DNS name and IP asked for and has more than 30 days left; otherwise it is re-issued from the
same CA (the ``caBundle`` does not change). Only a CA with 30 days or less left is replaced,
and then the ``caBundle`` must be updated (the start-up line says so). Generation holds an
exclusive lock on ``lock`` so two servers starting on one home do not mix a key with another's
certificate.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import fcntl
import ipaddress
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = [
    "DEFAULT_DNS",
    "AdmissionTls",
    "TlsError",
    "ca_bundle",
    "ensure_admission_tls",
]

#: the DNS name the API server uses for ``service: {name: interlock, namespace: interlock-system}``
DEFAULT_DNS = ("interlock.interlock-system.svc",)
_CA_DAYS = 3650
_SERVER_DAYS = 730
_RENEW_BEFORE = dt.timedelta(days=30)
_MAX_PEM = 64 << 10
_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"(\*\.)?{_LABEL}(\.{_LABEL})*\Z")


class TlsError(Exception):
    """The webhook's certificate could not be read or made; the message says why."""


@dataclass(frozen=True, slots=True)
class AdmissionTls:
    """Where the webhook's certificate, key and CA are (the CA is None for a supplied pair)."""

    cert: Path
    key: Path
    ca: Path | None = None

    @property
    def folder(self) -> Path:
        return self.cert.parent


def ca_bundle(ca: Path) -> str:
    """The ``caBundle`` of a webhook configuration: the CA's PEM, base64-encoded.

    Raises:
        TlsError: the file cannot be read or is not a PEM certificate.
    """
    try:
        pem = ca.read_bytes()[:_MAX_PEM]
        x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as exc:
        raise TlsError(f"cannot read the CA certificate {ca}: {exc}") from exc
    return base64.b64encode(pem).decode("ascii")


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _read_key(path: Path) -> ec.EllipticCurvePrivateKey:
    st = path.lstat()
    if not path.is_file() or path.is_symlink() or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise TlsError(f"{path} must be a regular file of this user, mode 0600")
    key = serialization.load_pem_private_key(path.read_bytes()[:_MAX_PEM], password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise TlsError(f"{path} is not an ECDSA key")
    return key


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _make_ca(folder: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    name = _name("Interlock admission CA")
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(folder / "ca.key", _key_pem(key), 0o600)
    _write(folder / "ca.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return cert, key


def _sans(dns: Sequence[str], ips: Sequence[str]) -> tuple[set[str], set[str]]:
    return set(dns), {str(ipaddress.ip_address(ip)) for ip in ips}


def _make_server(
    folder: Path,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    dns: Sequence[str],
    ips: Sequence[str],
) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    names: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(dns[0] if dns else ips[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=_SERVER_DAYS), ca.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    # the key first: a reader that sees the new certificate must find its key already there
    _write(folder / "server.key", _key_pem(key), 0o600)
    _write(folder / "server.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)


def _server_fits(
    folder: Path, ca: x509.Certificate, dns: Sequence[str], ips: Sequence[str]
) -> bool:
    try:
        cert = x509.load_pem_x509_certificate((folder / "server.pem").read_bytes()[:_MAX_PEM])
        key = _read_key(folder / "server.key")
        cert.verify_directly_issued_by(ca)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (OSError, ValueError, TlsError, InvalidSignature, x509.ExtensionNotFound, TypeError):
        return False
    want_dns, want_ips = _sans(dns, ips)
    have_dns = set(san.get_values_for_type(x509.DNSName))
    have_ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return (
        cert.public_key() == key.public_key()
        and want_dns <= have_dns
        and want_ips <= have_ips
        and cert.not_valid_after_utc - _now() > _RENEW_BEFORE
    )


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def ensure_admission_tls(
    home: Path, dns: Sequence[str] = DEFAULT_DNS, ips: Sequence[str] = ("127.0.0.1",)
) -> AdmissionTls:
    """The webhook's certificate in ``home/tls/admission/``, made or renewed as needed (module
    docstring). Returns where the certificate, key and CA are.

    Raises:
        TlsError: no name was given, a name is not a DNS name or an IP address, or the folder
            or its files cannot be written or read.
    """
    if not dns and not ips:
        raise TlsError("the certificate needs at least one DNS name or IP address")
    for name in dns:
        if len(name) > 253 or not _DNS_NAME.match(name):
            raise TlsError(f"not a DNS name: {name!r}")
    try:
        ip_list = [str(ipaddress.ip_address(ip)) for ip in ips]
    except ValueError as exc:
        raise TlsError(str(exc)) from exc
    folder = home / "tls" / "admission"
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder.parent, 0o700)
        os.chmod(folder, 0o700)
        with _locked(folder):
            ca: x509.Certificate | None = None
            ca_key: ec.EllipticCurvePrivateKey | None = None
            with contextlib.suppress(OSError, ValueError, TlsError):
                ca = x509.load_pem_x509_certificate((folder / "ca.pem").read_bytes()[:_MAX_PEM])
                ca_key = _read_key(folder / "ca.key")
                if ca.public_key() != ca_key.public_key():
                    ca = None
            if ca is None or ca_key is None or ca.not_valid_after_utc - _now() <= _RENEW_BEFORE:
                ca, ca_key = _make_ca(folder)
                _make_server(folder, ca, ca_key, list(dns), ip_list)
            elif not _server_fits(folder, ca, dns, ip_list):
                _make_server(folder, ca, ca_key, list(dns), ip_list)
    except OSError as exc:
        raise TlsError(f"cannot write the webhook certificate in {folder}: {exc}") from exc
    return AdmissionTls(cert=folder / "server.pem", key=folder / "server.key", ca=folder / "ca.pem")
