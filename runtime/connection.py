"""Connecting to Temporal with the project's settings and the pydantic data converter.

Three ways to reach a server, all from settings (MIGRATOR_ env vars):

- plain: a local dev server or a self-hosted cluster without TLS (the default);
- mTLS: MIGRATOR_TEMPORAL_TLS_CERT + MIGRATOR_TEMPORAL_TLS_KEY (PEM files), optionally
  MIGRATOR_TEMPORAL_TLS_CA for a private CA; MIGRATOR_TEMPORAL_TLS=true alone means server TLS only;
- API key (Temporal Cloud): MIGRATOR_TEMPORAL_API_KEY, which always travels over TLS.

Every misconfiguration is a TemporalConfigError with one line naming the variable and the file.

Payloads are encrypted when MIGRATOR_PAYLOAD_KEYS is set (see codec.py and `data_converter`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from temporalio.client import Client, TLSConfig
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter, DefaultFailureConverterWithEncodedAttributes
from temporalio.runtime import Runtime

from runtime.codec import EncryptionCodec
from runtime.settings import Settings


class TemporalConfigError(ValueError):
    pass


# Which file is which, for messages: (setting attribute, env var, what it is, PEM marker).
_CERT = ("temporal_tls_cert", "MIGRATOR_TEMPORAL_TLS_CERT", "client certificate", b"-----BEGIN")
_KEY = ("temporal_tls_key", "MIGRATOR_TEMPORAL_TLS_KEY", "client key", b"-----BEGIN")
_CA = ("temporal_tls_ca", "MIGRATOR_TEMPORAL_TLS_CA", "CA certificate", b"-----BEGIN")


def _path(settings: Settings, attr: str) -> Path | None:
    value = getattr(settings, attr)
    # An empty variable parses as Path("."): CI systems expand unset secrets to "", so it means unset.
    if value is None or str(value) in ("", "."):
        return None
    return value


def _read_pem(settings: Settings, spec: tuple[str, str, str, bytes]) -> bytes | None:
    attr, env, what, marker = spec
    path = _path(settings, attr)
    if path is None:
        return None
    try:
        data = path.read_bytes()
    except OSError as exc:
        reason = (exc.strerror or type(exc).__name__).lower()
        raise TemporalConfigError(f"cannot read the Temporal TLS {what} {path} ({env}): {reason}") from None
    if marker not in data:
        raise TemporalConfigError(f"the Temporal TLS {what} {path} ({env}) is not a PEM file (no '-----BEGIN' line)")
    return data


def tls_config(settings: Settings) -> TLSConfig | bool:
    """mTLS from cert/key files (Temporal Cloud or self-hosted), server-only TLS, or none."""
    has_cert = _path(settings, "temporal_tls_cert") is not None
    has_key = _path(settings, "temporal_tls_key") is not None
    has_ca = _path(settings, "temporal_tls_ca") is not None
    if has_cert != has_key:
        given, missing = ("MIGRATOR_TEMPORAL_TLS_CERT", "MIGRATOR_TEMPORAL_TLS_KEY")[:: 1 if has_cert else -1]
        raise TemporalConfigError(f"{given} is set but {missing} is not: mTLS needs both the client certificate and its key")
    if not (settings.temporal_tls or has_cert or has_ca):
        # API keys are only accepted over TLS (Temporal Cloud); the system trust store verifies the server.
        return bool(settings.temporal_api_key)
    return TLSConfig(
        client_cert=_read_pem(settings, _CERT),
        client_private_key=_read_pem(settings, _KEY),
        server_root_ca_cert=_read_pem(settings, _CA),
    )


def api_key(settings: Settings) -> str | None:
    key = settings.temporal_api_key.get_secret_value().strip() if settings.temporal_api_key else ""
    return key or None


def data_converter(settings: Settings) -> DataConverter:
    """The pydantic converter; with payload keys, also the encryption codec and a failure converter
    that moves failure messages and stack traces into an (encrypted) payload: by default Temporal
    stores them in clear, and they can quote SQL and database errors."""
    codec = EncryptionCodec.from_settings(settings)
    if codec is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


async def connect(settings: Settings, *, runtime: Runtime | None = None) -> Client:
    """A client for the configured namespace. The worker passes `runtime` to export SDK metrics
    (see health.worker_runtime); everything else uses the default runtime."""
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=tls_config(settings),
        api_key=api_key(settings),
        data_converter=data_converter(settings),
        runtime=runtime,
    )
