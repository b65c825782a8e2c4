"""Optional payload encryption (off unless MIGRATOR_PAYLOAD_KEYS is set).

Temporal stores every workflow input, result, signal, heartbeat, summary and failure detail in its
history; the deploy's SQL, migration names and approvers are in there. With keys configured, the
worker and the starter (both connect through temporal_client.connect) encrypt every payload with
AES-256-GCM before it leaves the process, so the Temporal server, its database and anyone reading
the history without a key see ciphertext. Search attributes are never encrypted (Temporal indexes
them): they hold only the environment, operation, stage, outcome and requester.

Each encrypted payload names its key by id (a hash of the key, never the key): the first configured
key encrypts, every configured key decrypts, which is how keys rotate. Payloads this codec did not
produce pass through decoding untouched: the Temporal UI's "Send a Signal" sends plain JSON.

    python -m codec keygen                       # a new random key (base64)
    python -m codec serve --port 8888            # codec server for the Temporal UI and CLI
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import sys
from collections.abc import Iterable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import json_format
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.converter import DataConverter, PayloadCodec

if TYPE_CHECKING:
    from settings import Settings

# The encoding Temporal's samples and UI know as "encrypted"; the key id travels beside it.
ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
_NONCE = 12


class PayloadKeyError(ValueError):
    """A payload this codec encrypted cannot be decrypted with the configured keys."""


def key_id(key: bytes) -> str:
    """A stable, public name for a key: a truncated keyed hash, from which the key cannot be recovered."""
    return "k-" + hashlib.sha256(b"prisma-temporal-deploy payload key\x00" + key).hexdigest()[:16]


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM. Payload data = 12-byte random nonce + ciphertext of the serialized original
    payload (its metadata included); the encoding and key id are authenticated as associated data."""

    def __init__(self, keys: Sequence[bytes]) -> None:
        if not keys:
            raise ValueError("EncryptionCodec needs at least one key")
        self._ciphers = {key_id(k): AESGCM(k) for k in keys}
        self._encrypt_id = key_id(keys[0])

    @classmethod
    def from_settings(cls, settings: Settings) -> EncryptionCodec | None:
        from settings import payload_key_bytes

        keys = [payload_key_bytes(k, i) for i, k in enumerate(settings.payload_keys)]
        return cls(keys) if keys else None

    @property
    def key_ids(self) -> list[str]:
        return list(self._ciphers)

    @staticmethod
    def _aad(kid: str) -> bytes:
        return ENCODING + b"\x00" + kid.encode()

    def encode_sync(self, payloads: Iterable[Payload]) -> list[Payload]:
        out: list[Payload] = []
        for p in payloads:
            if p.metadata.get("encoding") == ENCODING:
                out.append(p)  # already ours (e.g. the UI's /encode on an encrypted value): never twice
                continue
            nonce = os.urandom(_NONCE)
            data = nonce + self._ciphers[self._encrypt_id].encrypt(nonce, p.SerializeToString(), self._aad(self._encrypt_id))
            out.append(Payload(metadata={"encoding": ENCODING, KEY_ID: self._encrypt_id.encode()}, data=data))
        return out

    def decode_sync(self, payloads: Iterable[Payload]) -> list[Payload]:
        out: list[Payload] = []
        for p in payloads:
            if p.metadata.get("encoding") != ENCODING:
                out.append(p)
                continue
            kid = p.metadata.get(KEY_ID, b"").decode("utf-8", "replace")
            cipher = self._ciphers.get(kid)
            if cipher is None:
                raise PayloadKeyError(
                    f"a payload is encrypted with key {kid or '(no key id)'}, which is not in MIGRATOR_PAYLOAD_KEYS "
                    f"(configured: {', '.join(self._ciphers)}); add the key that encrypted it"
                )
            try:
                plain = cipher.decrypt(p.data[:_NONCE], p.data[_NONCE:], self._aad(kid))
            except (InvalidTag, ValueError):
                raise PayloadKeyError(
                    f"a payload encrypted with key {kid} failed authentication: it was altered or truncated"
                ) from None
            out.append(Payload.FromString(plain))
        return out

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.encode_sync(payloads)

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return self.decode_sync(payloads)


# --- Reading a fetched history -------------------------------------------------------------------

_PAYLOAD = Payload.DESCRIPTOR.full_name
_SKIPPED = {"temporal.api.common.v1.SearchAttributes"}  # indexed by the server, never encoded
_FAILURE = "temporal.api.failure.v1.Failure"


def _collect(msg: Message, payloads: list[Payload], failures: list[Message]) -> None:
    name = msg.DESCRIPTOR.full_name
    if name == _PAYLOAD:
        payloads.append(msg)  # type: ignore[arg-type]
        return
    if name in _SKIPPED:
        return
    if name == _FAILURE:
        failures.append(msg)
    for field, value in msg.ListFields():
        if field.type != field.TYPE_MESSAGE:
            continue
        if field.message_type.GetOptions().map_entry:
            if field.message_type.fields_by_name["value"].type == field.TYPE_MESSAGE:
                for item in value.values():
                    _collect(item, payloads, failures)
        elif field.is_repeated:
            for item in value:
                _collect(item, payloads, failures)
        else:
            _collect(value, payloads, failures)


async def decode_history(converter: DataConverter, messages: Iterable[Message]) -> None:
    """Decode, in place, every payload in fetched history events (`fetch_history()` returns them as
    stored) and put back the failure messages DefaultFailureConverterWithEncodedAttributes moved into
    `encoded_attributes`. Raises PayloadKeyError for a wrong key, or for encrypted payloads read
    without any key (rather than an audit that silently misses the request and the results)."""
    payloads: list[Payload] = []
    failures: list[Any] = []
    for msg in messages:
        _collect(msg, payloads, failures)
    codec = converter.payload_codec
    if codec is None:
        encrypted = next((p for p in payloads if p.metadata.get("encoding") == ENCODING), None)
        if encrypted is not None:
            kid = encrypted.metadata.get(KEY_ID, b"").decode("utf-8", "replace") or "(no key id)"
            raise PayloadKeyError(f"its payloads are encrypted (key {kid}): set MIGRATOR_PAYLOAD_KEYS to read them")
        return
    if payloads:
        for original, decoded in zip(payloads, await codec.decode(payloads), strict=True):
            if decoded is not original:
                original.CopyFrom(decoded)
    for failure in failures:
        if not failure.HasField("encoded_attributes"):
            continue
        try:
            attrs = converter.payload_converter.from_payloads([failure.encoded_attributes])[0]
        except Exception:  # noqa: BLE001 - not the SDK's {"message", "stack_trace"}: leave as stored
            continue
        if isinstance(attrs, dict) and isinstance(attrs.get("message"), str):
            failure.message = attrs["message"]
            failure.stack_trace = attrs.get("stack_trace") or ""
            failure.ClearField("encoded_attributes")


# --- Codec server for the Temporal UI and CLI ----------------------------------------------------
#
# Protocol (docs.temporal.io/production-deployment/data-encryption): POST {endpoint}/encode and
# {endpoint}/decode with body {"payloads": [...]} in proto-JSON, answer the same shape. The UI calls it
# from the browser (CORS preflight, X-Namespace header); `temporal ... --codec-endpoint` from the CLI.

MAX_BODY = 8 * 1024 * 1024  # Temporal refuses payloads over 2 MB, transactions over 4 MB
_ALLOWED_HEADERS = "content-type, x-namespace, authorization"


class CodecServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], codec: EncryptionCodec, *, origins: Iterable[str],
                 namespaces: Iterable[str]) -> None:
        self.codec = codec
        self.origins = {o.rstrip("/") for o in origins if o}
        self.namespaces = set(namespaces)
        super().__init__(address, _CodecHandler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class _CodecHandler(BaseHTTPRequestHandler):
    server: CodecServer
    server_version = "prisma-temporal-deploy-codec"

    def _origin_ok(self) -> bool:
        origin = self.headers.get("Origin")
        return origin is None or origin.rstrip("/") in self.server.origins

    def _send(self, status: int, body: dict[str, Any] | str | None = None) -> None:
        data = b"" if body is None else (body if isinstance(body, str) else json.dumps(body)).encode()
        self.send_response(status)
        origin = self.headers.get("Origin")
        if origin and origin.rstrip("/") in self.server.origins:
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", _ALLOWED_HEADERS)
            self.send_header("Access-Control-Allow-Credentials", "true")
            self.send_header("Access-Control-Max-Age", "600")
        self.send_header("Vary", "Origin")
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def do_OPTIONS(self) -> None:
        if not self._origin_ok():
            self._error(403, "origin not allowed (codec serve --cors-origin)")
        else:
            self._send(204)

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/healthz", ""):
            self._send(200, {"status": "ok", "keys": self.server.codec.key_ids})
        else:
            self._error(405, "use POST /encode or POST /decode")

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        action = path.rsplit("/", 1)[-1]
        if action not in ("encode", "decode"):
            return self._error(404, "unknown endpoint: POST /encode or /decode")
        if not self._origin_ok():
            return self._error(403, "origin not allowed (codec serve --cors-origin)")
        namespace = self.headers.get("X-Namespace")
        if namespace and namespace not in self.server.namespaces:
            return self._error(403, f"namespace {namespace!r} is not served here (codec serve --namespace)")
        if self.headers.get_content_type() != "application/json":
            return self._error(415, "the body must be application/json")
        try:
            length = int(self.headers.get("Content-Length") or "")
        except ValueError:
            return self._error(411, "Content-Length is required")
        if length < 0 or length > MAX_BODY:
            return self._error(413, f"the body is over {MAX_BODY // (1024 * 1024)} MB")
        body = self.rfile.read(length)
        try:
            payloads = json_format.Parse(body, Payloads()).payloads
        except (json_format.ParseError, UnicodeDecodeError, ValueError):
            return self._error(400, 'the body is not {"payloads": [...]} in proto-JSON')
        try:
            fn = self.server.codec.encode_sync if action == "encode" else self.server.codec.decode_sync
            result = Payloads(payloads=fn(payloads))
        except PayloadKeyError as exc:
            return self._error(422, str(exc))
        self._send(200, json_format.MessageToJson(result))

    def log_message(self, format: str, *args: Any) -> None:
        from logconfig import get_logger

        # The request line and status only: bodies (payloads) are never logged.
        get_logger("codec-server").info(format % args, client=self.client_address[0])


def serve(settings: Settings, *, host: str, port: int, origins: list[str], namespaces: list[str]) -> None:
    codec = EncryptionCodec.from_settings(settings)
    if codec is None:
        raise SystemExit("error: MIGRATOR_PAYLOAD_KEYS is not set: the codec server needs the worker's keys")
    try:
        server = CodecServer((host, port), codec, origins=origins, namespaces=namespaces)
    except OSError as exc:
        raise SystemExit(f"error: cannot listen on {host}:{port}: {(exc.strerror or str(exc)).lower()}") from None
    print(
        f"codec server listening on {server.url} (keys: {', '.join(codec.key_ids)}; "
        f"UI origins: {', '.join(sorted(server.origins)) or 'none'}; namespaces: {', '.join(sorted(server.namespaces))})",
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


def _cli() -> Any:
    import typer

    cli = typer.Typer(add_completion=False, no_args_is_help=True, help="Payload encryption: keys and the codec server.")

    @cli.command()
    def keygen() -> None:
        """Print a new random AES-256 key (base64) for MIGRATOR_PAYLOAD_KEYS."""
        print(base64.b64encode(os.urandom(32)).decode())

    @cli.command("serve")
    def serve_command(
        port: int = typer.Option(8888, help="Port to listen on (0: any free port)."),
        host: str = typer.Option("127.0.0.1", help="Address to bind; whoever reaches it can decrypt."),
        cors_origin: list[str] = typer.Option(None, help="Temporal UI origin allowed to call (default: MIGRATOR_TEMPORAL_UI_URL)."),
        namespace: list[str] = typer.Option(None, help="Namespace served (default: MIGRATOR_TEMPORAL_NAMESPACE)."),
    ) -> None:
        """Serve POST /encode and /decode for the Temporal UI (Remote Codec Endpoint) and CLI (--codec-endpoint)."""
        from pydantic import ValidationError

        from logconfig import configure_logging
        from settings import Settings

        try:
            settings = Settings()
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise SystemExit(f"error: invalid settings ({where}): {first['msg']}") from None
        configure_logging(json=settings.log_json, level=settings.log_level)
        serve(
            settings,
            host=host,
            port=port,
            origins=cors_origin or [settings.temporal_ui_url],
            namespaces=namespace or [settings.temporal_namespace],
        )

    return cli


if __name__ == "__main__":
    try:
        _cli()(prog_name="python -m codec")
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            raise SystemExit(3) from None
        raise
