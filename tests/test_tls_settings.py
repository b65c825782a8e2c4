"""Temporal Cloud / TLS settings: env vars -> Settings -> TLSConfig, one-line errors for every way the
files can be wrong, and a real mTLS handshake through a TLS-terminating proxy in front of the dev server."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import TLSConfig

from runtime.connection import TemporalConfigError, api_key, connect, tls_config
from runtime.settings import Settings

# -- a throwaway PKI ----------------------------------------------------------------------------


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer_name: x509.Name, issuer_key, *, ca: bool = False, usage=None, san=None):
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if san:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


class Pki:
    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca = _cert("test-ca", ca_key, _name("test-ca"), ca_key, ca=True)
        server_key = ec.generate_private_key(ec.SECP256R1())
        server = _cert(
            "localhost", server_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
            san=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
        )
        client_key = ec.generate_private_key(ec.SECP256R1())
        client = _cert("migrator-worker", client_key, ca.subject, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        other_ca_key = ec.generate_private_key(ec.SECP256R1())
        other_ca = _cert("other-ca", other_ca_key, _name("other-ca"), other_ca_key, ca=True)

        self.ca = root / "ca.pem"
        self.other_ca = root / "other-ca.pem"
        self.server_cert, self.server_key = root / "server.pem", root / "server.key"
        self.client_cert, self.client_key = root / "client.pem", root / "client.key"
        self.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        self.other_ca.write_bytes(other_ca.public_bytes(serialization.Encoding.PEM))
        self.server_cert.write_bytes(server.public_bytes(serialization.Encoding.PEM))
        self.server_key.write_bytes(_pem_key(server_key))
        self.client_cert.write_bytes(client.public_bytes(serialization.Encoding.PEM))
        self.client_key.write_bytes(_pem_key(client_key))


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def env(monkeypatch):
    """Settings from the process environment only, as the worker and starter read them."""
    for name in ("MIGRATOR_TEMPORAL_TLS", "MIGRATOR_TEMPORAL_TLS_CERT", "MIGRATOR_TEMPORAL_TLS_KEY",
                 "MIGRATOR_TEMPORAL_TLS_CA", "MIGRATOR_TEMPORAL_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # no stray .env file from the repo root

    def load(**values: str) -> Settings:
        for key, value in values.items():
            monkeypatch.setenv(f"MIGRATOR_{key.upper()}", value)
        return Settings()

    return load


# -- parsing ------------------------------------------------------------------------------------


def test_no_tls_settings_means_a_plain_connection(env) -> None:
    settings = env()
    assert tls_config(settings) is False
    assert api_key(settings) is None


def test_mtls_files_from_env_vars_become_a_tls_config(env, pki: Pki) -> None:
    settings = env(temporal_tls_cert=str(pki.client_cert), temporal_tls_key=str(pki.client_key), temporal_tls_ca=str(pki.ca))
    config = tls_config(settings)
    assert isinstance(config, TLSConfig)
    assert config.client_cert == pki.client_cert.read_bytes()
    assert config.client_private_key == pki.client_key.read_bytes()
    assert config.server_root_ca_cert == pki.ca.read_bytes()


def test_mtls_without_a_ca_trusts_the_system_store(env, pki: Pki) -> None:
    # Temporal Cloud's endpoints carry publicly trusted certificates: cert + key are enough.
    config = tls_config(env(temporal_tls_cert=str(pki.client_cert), temporal_tls_key=str(pki.client_key)))
    assert isinstance(config, TLSConfig) and config.server_root_ca_cert is None and config.client_cert


def test_a_ca_alone_or_the_tls_flag_means_server_tls_without_client_certs(env, pki: Pki) -> None:
    ca_only = tls_config(env(temporal_tls_ca=str(pki.ca)))
    assert isinstance(ca_only, TLSConfig) and ca_only.client_cert is None and ca_only.server_root_ca_cert
    flag_only = tls_config(env(temporal_tls_ca="", temporal_tls="true"))
    assert isinstance(flag_only, TLSConfig) and flag_only.client_cert is None and flag_only.server_root_ca_cert is None


def test_an_api_key_turns_tls_on_and_is_sent_trimmed(env) -> None:
    settings = env(temporal_api_key="  tcld-key-123\n")
    assert tls_config(settings) is True
    assert api_key(settings) == "tcld-key-123"
    assert "tcld-key-123" not in repr(settings)  # a SecretStr: never in logs or tracebacks


def test_empty_variables_count_as_unset(env) -> None:
    # What CI produces for secrets that are not configured: `VAR: ${{ secrets.MISSING }}` is "".
    settings = env(temporal_tls_cert="", temporal_tls_key="", temporal_tls_ca="", temporal_api_key="")
    assert tls_config(settings) is False
    assert api_key(settings) is None


# -- errors ---------------------------------------------------------------------------------------


def _one_line(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert "\n" not in message and message.strip() == message
    return message


def test_cert_without_key_names_the_missing_variable(env, pki: Pki) -> None:
    with pytest.raises(TemporalConfigError) as err:
        tls_config(env(temporal_tls_cert=str(pki.client_cert)))
    message = _one_line(err)
    assert "MIGRATOR_TEMPORAL_TLS_KEY is not" in message and "MIGRATOR_TEMPORAL_TLS_CERT is set" in message


def test_key_without_cert_names_the_missing_variable(env, pki: Pki) -> None:
    with pytest.raises(TemporalConfigError) as err:
        tls_config(env(temporal_tls_key=str(pki.client_key)))
    message = _one_line(err)
    assert "MIGRATOR_TEMPORAL_TLS_CERT is not" in message and "MIGRATOR_TEMPORAL_TLS_KEY is set" in message


@pytest.mark.parametrize("which", ["cert", "key", "ca"])
def test_a_missing_file_is_named_with_its_variable(env, pki: Pki, tmp_path: Path, which: str) -> None:
    files = {"cert": str(pki.client_cert), "key": str(pki.client_key), "ca": str(pki.ca)}
    missing = tmp_path / f"nowhere-{which}.pem"
    files[which] = str(missing)
    with pytest.raises(TemporalConfigError) as err:
        tls_config(env(**{f"temporal_tls_{k}": v for k, v in files.items()}))
    message = _one_line(err)
    assert str(missing) in message
    assert f"MIGRATOR_TEMPORAL_TLS_{which.upper()}" in message
    assert "no such file" in message


def test_an_unreadable_path_is_one_line(env, pki: Pki, tmp_path: Path) -> None:
    # A directory where the key should be: unreadable as a file, even for root (tests may run as root).
    with pytest.raises(TemporalConfigError) as err:
        tls_config(env(temporal_tls_cert=str(pki.client_cert), temporal_tls_key=str(tmp_path)))
    message = _one_line(err)
    assert "cannot read the Temporal TLS client key" in message and "is a directory" in message


def test_a_file_that_is_not_pem_is_rejected_before_connecting(env, pki: Pki, tmp_path: Path) -> None:
    der = tmp_path / "client.der"
    der.write_bytes(b"\x30\x82\x01\x0a not pem at all")
    with pytest.raises(TemporalConfigError) as err:
        tls_config(env(temporal_tls_cert=str(der), temporal_tls_key=str(pki.client_key)))
    assert "not a PEM file" in _one_line(err) and str(der) in str(err.value)


def test_settings_never_show_file_contents_in_errors(env, pki: Pki, tmp_path: Path) -> None:
    bad = tmp_path / "key.txt"
    bad.write_text("super-secret-key-material")
    with pytest.raises(TemporalConfigError) as err:
        tls_config(env(temporal_tls_cert=str(pki.client_cert), temporal_tls_key=str(bad)))
    assert "super-secret-key-material" not in str(err.value)


# -- a real mTLS handshake --------------------------------------------------------------------------


class MtlsProxy:
    """Terminates TLS (client certificate required, signed by our CA) and forwards to the dev server."""

    def __init__(self, pki: Pki, upstream: str) -> None:
        self.upstream_host, port = upstream.rsplit(":", 1)
        self.upstream_port = int(port)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki.server_cert, pki.server_key)
        ctx.load_verify_locations(pki.ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.set_alpn_protocols(["h2"])
        self.ctx = ctx
        self.client_names: list[str] = []
        self.tasks: set[asyncio.Task] = set()

    async def __aenter__(self) -> MtlsProxy:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0, ssl=self.ctx)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert") or {}
        self.client_names += [v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"]
        up_reader, up_writer = await asyncio.open_connection(self.upstream_host, self.upstream_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            with contextlib.suppress(Exception):
                dst.close()

        for coro in (pipe(reader, up_writer), pipe(up_reader, writer)):
            task = asyncio.create_task(coro)
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)


async def test_mtls_settings_complete_a_real_handshake_and_reach_temporal(env, pki: Pki, dev_env) -> None:
    upstream = dev_env.client.service_client.config.target_host
    async with MtlsProxy(pki, upstream) as proxy:
        settings = env(
            temporal_address=proxy.address,
            temporal_namespace=dev_env.client.namespace,
            temporal_tls_cert=str(pki.client_cert),
            temporal_tls_key=str(pki.client_key),
            temporal_tls_ca=str(pki.ca),
        )
        client = await connect(settings)
        info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
        assert info.server_version
        assert "migrator-worker" in proxy.client_names


async def test_without_the_client_certificate_the_server_refuses(env, pki: Pki, dev_env) -> None:
    upstream = dev_env.client.service_client.config.target_host
    async with MtlsProxy(pki, upstream) as proxy:
        settings = env(temporal_address=proxy.address, temporal_tls_ca=str(pki.ca))
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(connect(settings), 30)
        assert proxy.client_names == []


async def test_a_server_not_signed_by_the_configured_ca_is_refused(env, pki: Pki, dev_env) -> None:
    upstream = dev_env.client.service_client.config.target_host
    async with MtlsProxy(pki, upstream) as proxy:
        settings = env(
            temporal_address=proxy.address,
            temporal_tls_cert=str(pki.client_cert),
            temporal_tls_key=str(pki.client_key),
            temporal_tls_ca=str(pki.other_ca),
        )
        with pytest.raises(RuntimeError, match="(?i)certificate|issuer"):
            await asyncio.wait_for(connect(settings), 30)
        assert proxy.client_names == []
