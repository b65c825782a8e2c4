"""Connecting to Temporal with the project's settings and the pydantic data converter."""

from __future__ import annotations

from temporalio.client import Client, TLSConfig
from temporalio.contrib.pydantic import pydantic_data_converter

from settings import Settings


class TemporalConfigError(ValueError):
    pass


def tls_config(settings: Settings) -> TLSConfig | bool:
    """mTLS from cert/key files (Temporal Cloud or self-hosted), plain TLS, or none."""
    if not (settings.temporal_tls or settings.temporal_tls_cert or settings.temporal_tls_key):
        return bool(settings.temporal_api_key)  # API keys need TLS
    def read(path, what):
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise TemporalConfigError(f"cannot read the Temporal TLS {what} file {path}: {exc.strerror}") from None
    if bool(settings.temporal_tls_cert) != bool(settings.temporal_tls_key):
        raise TemporalConfigError("set both MIGRATOR_TEMPORAL_TLS_CERT and MIGRATOR_TEMPORAL_TLS_KEY for mTLS, or neither")
    return TLSConfig(
        client_cert=read(settings.temporal_tls_cert, "client certificate"),
        client_private_key=read(settings.temporal_tls_key, "client key"),
        server_root_ca_cert=read(settings.temporal_tls_ca, "CA certificate"),
    )


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_address,
        namespace=settings.temporal_namespace,
        tls=tls_config(settings),
        api_key=settings.temporal_api_key.get_secret_value() if settings.temporal_api_key else None,
        data_converter=pydantic_data_converter,
    )
