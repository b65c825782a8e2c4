"""The codec server for the Temporal UI and CLI, and the `prisma-deploy-codec` command.

    prisma-deploy-codec keygen                   # a new random key (base64)
    prisma-deploy-codec serve --port 8888        # codec server for the Temporal UI and CLI
"""

from __future__ import annotations

import base64
import json
import os
import sys
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads

from runtime.codec import EncryptionCodec, PayloadKeyError

if TYPE_CHECKING:
    from runtime.settings import Settings

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
        from runtime.logs import get_logger

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

        from runtime.logs import configure_logging
        from runtime.settings import Settings

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


def main() -> None:
    """The `prisma-deploy-codec` console script (also `python -m runtime.codec_server`)."""
    try:
        _cli()(prog_name="prisma-deploy-codec")
    except SystemExit as exc:
        if isinstance(exc.code, str):
            print(exc.code, file=sys.stderr)
            raise SystemExit(3) from None
        raise


if __name__ == "__main__":
    main()
