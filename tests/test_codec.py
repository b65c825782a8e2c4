"""Optional payload encryption (codec.py) on the real dev server, a real worker and real PostgreSQL.

A deploy runs with MIGRATOR_PAYLOAD_KEYS set; its history, read by a client without the codec, must
show neither the SQL, the migration names, the approver nor the failure text, while the audit read
with the key shows all of them. The codec server is driven over HTTP as the Temporal UI and CLI do.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from google.protobuf import json_format
from pydantic import SecretStr, ValidationError
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client

from cli.common import CliError
from cli.show import load_audit
from devstack.services import REPO, WorkerProcess, free_port, wait_for_port
from devstack.temporal import dev_server_flags, temporal_cli_path
from domain.models import ApprovalAnswer, Outcome, RunStatus
from runtime import connection as temporal_client
from runtime.codec import ENCODING, KEY_ID, EncryptionCodec, PayloadKeyError, key_id
from runtime.history import decode_history
from runtime.settings import Settings
from tests.helpers import (
    approval,
    final_status,
    make_settings,
    migration,
    new_worker,
    request,
    start,
    wait_gate,
)
from tests.ui_helpers import wait_ui_backend
from workflows.start import WORKFLOW_NAME, start_options

SQL_MARKER = "codec_secret_ledger_tbl"
OK_NAME = "20240101000000_codec_marker_create"
BOOM_NAME = "20240102000000_codec_marker_boom"
APPROVER = "approver-zed-42"
UI_ORIGIN = "http://localhost:8233"


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def with_keys(settings: Settings, address: str, *keys: str) -> Settings:
    return settings.model_copy(update={"temporal_address": address, "payload_keys": [SecretStr(k) for k in keys]})


def texts(node: Any, out: list[str]) -> list[str]:
    """Every string in a JSON tree plus the bytes of every base64 `data` field, decoded."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "data" and isinstance(value, str):
                out.append(base64.b64decode(value).decode("utf-8", "replace"))
            texts(value, out)
    elif isinstance(node, list):
        for value in node:
            texts(value, out)
    elif isinstance(node, str):
        out.append(node)
    return out


PATCH_MARKER = "core_patch"  # workflow.patched(): written by the SDK's core, never through the codec


def patch_markers(node: Any) -> list[dict]:
    """The workflow.patched() markers of a history: their only payload is the patch id."""
    return [e["markerRecordedEventAttributes"] for e in node.get("history", node).get("events", [])
            if e.get("markerRecordedEventAttributes", {}).get("markerName") == PATCH_MARKER]


def payloads_in(node: Any, skip: tuple[str, ...] = ("searchAttributes", "header")) -> list[dict]:
    """Every proto-JSON Payload ({"metadata": ..., "data": ...}) outside search attributes, headers
    and patch markers (checked apart: they hold the patch id alone)."""
    found: list[dict] = []
    if isinstance(node, dict):
        if "metadata" in node and "data" in node:
            return [node]
        if node.get("markerName") == PATCH_MARKER:
            return []
        for key, value in node.items():
            if key not in skip:
                found += payloads_in(value, skip)
    elif isinstance(node, list):
        for value in node:
            found += payloads_in(value, skip)
    return found


def failures_in(node: Any) -> list[dict]:
    found: list[dict] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("failure", "cause") and isinstance(value, dict):
                found.append(value)
            found += failures_in(value)
    elif isinstance(node, list):
        for value in node:
            found += failures_in(value)
    return found


def encoding_of(payload: dict) -> bytes:
    return base64.b64decode(payload["metadata"].get("encoding", ""))


@dataclass
class EncryptedRuns:
    key: str
    address: str
    settings: Settings
    client: Client  # with the codec, as the worker and the starter connect
    plain: Client  # without it: what the Temporal server, its database or a UI without a codec see
    failed_id: str  # an approved deploy whose second migration fails: rolled back
    ui_signal_id: str  # a deploy approved by a plain-JSON signal, as the UI's "Send a Signal" sends it
    ui_signal_final: RunStatus


@pytest.fixture(scope="module")
async def runs(dev_env, pg_server) -> EncryptedRuns:
    plain = dev_env.client
    address = plain.service_client.config.target_host
    key = new_key()
    db = await pg_server.create_database("codec")
    env = f"enc{uuid.uuid4().hex[:8]}"
    settings = with_keys(make_settings(env, pg_server.url(db), gates=["deploy"], approvers=[APPROVER, "ursula"]),
                         address, key)
    client = await temporal_client.connect(settings)
    try:
        async with new_worker(client, settings) as worker:
            # 1. Approved through the codec (the CLI's way), then a migration fails inside PostgreSQL.
            failing = request(env, [
                migration(OK_NAME, f"CREATE TABLE {SQL_MARKER} (id int);\n"),
                migration(BOOM_NAME, "SELECT 1/0;\n"),
            ])
            handle = await start(client, worker, failing)
            status = await wait_gate(handle, "deploy")
            answer = await handle.execute_update("approve_update", approval("deploy", APPROVER, status.plan.fingerprint),
                                                 result_type=ApprovalAnswer)
            assert answer.accepted, answer.message
            final = await final_status(handle)
            assert final.outcome == Outcome.failed_rolled_back and "division by zero" in (final.error or ""), final.error

            # 2. Approved by a plain JSON signal sent without the codec, as the Temporal UI does.
            handle2 = await start(client, worker, request(env, [migration("20240103000000_plain", "SELECT 1;\n")]))
            status2 = await wait_gate(handle2, "deploy")
            await plain.get_workflow_handle(handle2.id).signal("approve", approval("deploy", "ursula", status2.plan.fingerprint))
            final2 = await final_status(handle2)
        yield EncryptedRuns(key, address, settings, client, plain, handle.id, handle2.id, final2)
    finally:
        await pg_server.drop_database(db)


async def plain_view(runs: EncryptedRuns, workflow_id: str) -> dict:
    """History and describe of a run as seen without the codec, in proto-JSON."""
    handle = runs.plain.get_workflow_handle(workflow_id)
    history = json.loads((await handle.fetch_history()).to_json())
    desc = json.loads(json_format.MessageToJson((await handle.describe()).raw_description))
    return {"history": history, "describe": desc}


async def test_history_is_unreadable_without_the_key(runs: EncryptedRuns) -> None:
    view = await plain_view(runs, runs.failed_id)
    secrets = [SQL_MARKER, OK_NAME, BOOM_NAME, APPROVER, "division by zero"]

    # Every payload (inputs, results, update arguments, summaries, details, failure details) is the codec's.
    payloads = payloads_in(view)
    assert len(payloads) >= 10, len(payloads)
    assert {encoding_of(p) for p in payloads} == {ENCODING}
    assert {base64.b64decode(p["metadata"][KEY_ID]).decode() for p in payloads} == {key_id(base64.b64decode(runs.key))}
    # Patch markers are plain JSON (core writes them): they must hold nothing but the patch id.
    markers = patch_markers(view["history"])
    assert markers, "no workflow.patched() marker: this check would prove nothing"
    for marker in markers:
        for p in payloads_in(marker["details"]):
            assert set(json.loads(base64.b64decode(p["data"]))) == {"id", "deprecated"}
    # Failure messages and stack traces are moved into an encrypted attribute.
    failures = failures_in(view["history"])
    assert failures, "the run's history records no failure"
    assert all(f.get("message") == "Encoded failure" and "encodedAttributes" in f for f in failures), failures
    assert not any(f.get("stackTrace") for f in failures)

    seen = "\n".join(texts(view, []))
    for s in secrets:
        assert s not in seen, f"{s!r} is readable in the history without the key"

    # The same history decoded with the key holds every one of them: the search above is not vacuous.
    history = await runs.plain.get_workflow_handle(runs.failed_id).fetch_history()
    await decode_history(runs.client.data_converter, history.events)
    decoded = "\n".join(texts(json.loads(history.to_json()), []))
    for s in secrets:
        assert s in decoded, f"{s!r} missing from the decoded history"
    assert "Encoded failure" not in decoded


async def test_audit_reads_everything_with_the_key_and_refuses_without(runs: EncryptedRuns) -> None:
    audit = await load_audit(runs.client, runs.failed_id + "/")
    assert audit.request is not None
    assert [m.name for m in audit.request.bundle.migrations] == [OK_NAME, BOOM_NAME]
    assert SQL_MARKER in audit.request.bundle.migrations[0].sql
    assert any(m.kind == "update" and (m.payload or {}).get("approver") == APPROVER for m in audit.messages)
    assert audit.status is not None and audit.status.outcome == Outcome.failed_rolled_back
    assert audit.failure and "division by zero" in audit.failure, audit.failure
    assert any(a.approver == APPROVER and a.accepted for a in audit.status.approvals)

    # Without a key, or with another one, the audit says so in one sentence instead of coming out empty.
    with pytest.raises(CliError) as no_key:
        await load_audit(runs.plain, runs.failed_id + "/")
    assert "encrypted" in str(no_key.value) and "MIGRATOR_PAYLOAD_KEYS" in str(no_key.value)
    other = new_key()
    wrong = await temporal_client.connect(with_keys(runs.settings, runs.address, other))
    with pytest.raises(CliError) as wrong_key:
        await load_audit(wrong, runs.failed_id + "/")
    message = str(wrong_key.value)
    assert "not in MIGRATOR_PAYLOAD_KEYS" in message and key_id(base64.b64decode(runs.key)) in message, message
    assert "\n" not in message and runs.key not in message and other not in message

    # Rotation: a new key first, the old one kept, reads the old runs and encrypts with the new key.
    rotated = await temporal_client.connect(with_keys(runs.settings, runs.address, other, runs.key))
    again = await load_audit(rotated, runs.failed_id + "/")
    assert again.request == audit.request
    [p] = await rotated.data_converter.encode(["x"])
    assert p.metadata[KEY_ID].decode() == key_id(base64.b64decode(other))


async def test_a_plain_json_signal_from_the_ui_is_honoured(runs: EncryptedRuns) -> None:
    assert runs.ui_signal_final.outcome == Outcome.succeeded, runs.ui_signal_final.error
    assert [a.approver for a in runs.ui_signal_final.approvals if a.accepted] == ["ursula"]
    history = await runs.plain.get_workflow_handle(runs.ui_signal_id).fetch_history()
    [signal] = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED]
    # The signal really arrived as plain JSON (not through the codec), and the codec let it through.
    assert signal.workflow_execution_signaled_event_attributes.input.payloads[0].metadata["encoding"] == b"json/plain"
    audit = await load_audit(runs.client, runs.ui_signal_id + "/")
    assert any(m.kind == "signal" and (m.payload or {}).get("approver") == "ursula" for m in audit.messages)


# --- codec server -------------------------------------------------------------------------------


class CodecServerProcess:
    def __init__(self, *keys: str, origin: str = UI_ORIGIN) -> None:
        env = {**os.environ, "MIGRATOR_PAYLOAD_KEYS": json.dumps(list(keys)), "MIGRATOR_TEMPORAL_NAMESPACE": "default",
               "MIGRATOR_LOG_LEVEL": "DEBUG"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "runtime.codec_server", "serve", "--port", "0", "--cors-origin", origin],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        line = self.proc.stdout.readline()
        assert "listening on http://" in line, line
        self.url = line.split("listening on ", 1)[1].split()[0]
        self.banner = line

    def stop(self) -> str:
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        return self.banner + out


async def announced_too_large(url: str) -> httpx.Response:
    """A request announcing a 9 MB body: refused from its headers, before any of it is read."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"POST /decode HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 9437184\r\n\r\n{")
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, body = raw.split(b"\r\n\r\n", 1)
    return httpx.Response(int(head.split()[1]), content=body)


def to_json(payload: Payload) -> dict:
    return json_format.MessageToDict(payload)


async def test_codec_server_decodes_history_for_the_ui_and_cli(runs: EncryptedRuns) -> None:
    history = await runs.plain.get_workflow_handle(runs.failed_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    assert started.metadata["encoding"] == ENCODING
    newer = new_key()
    server = CodecServerProcess(newer, runs.key)  # the worker's key second: rotation on the server too
    headers = {"X-Namespace": "default", "Origin": UI_ORIGIN, "Content-Type": "application/json"}
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            # The UI's preflight, then its decode call.
            pre = await http.options("/decode", headers={"Origin": UI_ORIGIN, "Access-Control-Request-Method": "POST",
                                                          "Access-Control-Request-Headers": "content-type,x-namespace"})
            assert pre.status_code == 204
            assert pre.headers["access-control-allow-origin"] == UI_ORIGIN
            assert "x-namespace" in pre.headers["access-control-allow-headers"]
            resp = await http.post("/decode", headers=headers, json={"payloads": [to_json(started)]})
            assert resp.status_code == 200, resp.text
            assert resp.headers["access-control-allow-origin"] == UI_ORIGIN
            [decoded] = resp.json()["payloads"]
            assert base64.b64decode(decoded["metadata"]["encoding"]) == b"json/plain"
            request_json = json.loads(base64.b64decode(decoded["data"]))
            assert request_json["bundle"]["migrations"][0]["name"] == OK_NAME

            # /encode (the UI sending a signal with a codec configured): the first key encrypts, and a
            # worker holding that key reads it.
            enc = await http.post("/encode", headers=headers, json={"payloads": [{"metadata": {"encoding": base64.b64encode(b"json/plain").decode()},
                                                                                   "data": base64.b64encode(b'{"a": 1}').decode()}]})
            assert enc.status_code == 200, enc.text
            [encrypted] = enc.json()["payloads"]
            assert base64.b64decode(encrypted["metadata"]["encoding"]) == ENCODING
            assert base64.b64decode(encrypted["metadata"][KEY_ID]).decode() == key_id(base64.b64decode(newer))
            worker_side = temporal_client.data_converter(with_keys(runs.settings, runs.address, newer, runs.key))
            assert await worker_side.decode([json_format.ParseDict(encrypted, Payload())]) == [{"a": 1}]

            # What it refuses, each with one sentence.
            refusals = {
                "other origin": await http.post("/decode", headers={**headers, "Origin": "http://evil.example"},
                                                json={"payloads": [to_json(started)]}),
                "other origin preflight": await http.options("/decode", headers={"Origin": "http://evil.example"}),
                "other namespace": await http.post("/decode", headers={**headers, "X-Namespace": "other-ns"},
                                                   json={"payloads": [to_json(started)]}),
                "not json": await http.post("/decode", headers=headers, content=b"payloads please"),
                "wrong content type": await http.post("/decode", headers={**headers, "Content-Type": "text/plain"},
                                                      content=b'{"payloads": []}'),
                "unknown path": await http.post("/admin", headers=headers, json={"payloads": []}),
                "GET decode": await http.get("/decode"),
                "too large": await announced_too_large(server.url),
            }
            expected = {"other origin": 403, "other origin preflight": 403, "other namespace": 403, "not json": 400,
                        "wrong content type": 415, "unknown path": 404, "GET decode": 405, "too large": 413}
            assert {k: r.status_code for k, r in refusals.items()} == expected
            for name, r in refusals.items():
                assert r.json()["error"] and "\n" not in r.json()["error"], name
            assert "access-control-allow-origin" not in refusals["other origin"].headers

            # The Temporal CLI reads the run through the same endpoint.
            cmd = [temporal_cli_path(), "workflow", "show", "-w", runs.failed_id, "--address", runs.address,
                   "--namespace", "default", "-o", "json"]
            without = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=60)
            with_codec = await asyncio.to_thread(subprocess.run, [*cmd, "--codec-endpoint", server.url],
                                                 capture_output=True, text=True, timeout=60)
            assert without.returncode == 0 and with_codec.returncode == 0, with_codec.stderr
            plain_text = "\n".join(texts(json.loads(without.stdout), []))
            decoded_text = "\n".join(texts(json.loads(with_codec.stdout), []))
            assert OK_NAME not in plain_text and "division by zero" not in plain_text
            assert OK_NAME in decoded_text and SQL_MARKER in decoded_text and "division by zero" in decoded_text
    finally:
        log = server.stop()
    assert "POST /decode" in log  # requests are logged (line and status only) ...
    assert runs.key not in log and newer not in log and SQL_MARKER not in log  # ... never keys nor payloads


async def test_a_server_with_the_wrong_key_refuses_clearly(runs: EncryptedRuns) -> None:
    history = await runs.plain.get_workflow_handle(runs.failed_id).fetch_history()
    started = history.events[0].workflow_execution_started_event_attributes.input.payloads[0]
    other = new_key()
    server = CodecServerProcess(other)
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            resp = await http.post("/decode", headers={"Content-Type": "application/json"},
                                   json={"payloads": [to_json(started)]})
    finally:
        log = server.stop()
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert f"encrypted with key {key_id(base64.b64decode(runs.key))}" in error and "not in MIGRATOR_PAYLOAD_KEYS" in error
    for text in (error, log):
        assert runs.key not in text and other not in text


@pytest.mark.browser
@pytest.mark.timeout(120)
async def test_the_temporal_ui_decodes_a_run_through_the_codec_server() -> None:
    """`temporal server start-dev --ui-codec-endpoint` + `prisma-deploy-codec serve`: the real UI in
    Chromium shows the decrypted request of an encrypted run (CORS preflight and all)."""
    from tests.test_ui_approval import CHROMIUM, CHROMIUM_ARGS, _chromium_or_fail

    _chromium_or_fail()
    from playwright.async_api import async_playwright

    key, port, ui_port = new_key(), free_port(), free_port()
    ui = f"http://127.0.0.1:{ui_port}"
    codec_server = CodecServerProcess(key, origin=ui)
    server = subprocess.Popen([temporal_cli_path(), "server", "start-dev", "--ip", "127.0.0.1", "--port", str(port),
                               "--ui-port", str(ui_port), "--http-port", str(free_port()), "--metrics-port", str(free_port()),
                               "--log-level", "error", "--ui-codec-endpoint", codec_server.url, *dev_server_flags()],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        await asyncio.to_thread(wait_for_port, port, 60)
        await asyncio.to_thread(wait_for_port, ui_port, 60)
        await wait_ui_backend(ui)
        client = await temporal_client.connect(with_keys(Settings(_env_file=None), f"127.0.0.1:{port}", key))
        req = request("uienv", [migration(OK_NAME, "SELECT 1;\n")])
        # No worker: the run just waits, and its encrypted input is all the UI needs to show.
        handle = await client.start_workflow(WORKFLOW_NAME, req, **start_options(req, task_queue="nobody", workflow_id="ui-codec"))
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
            try:
                page = await browser.new_page()
                # No page.route(): with interception on, Playwright answers CORS preflights itself.
                await page.goto(f"{ui}/namespaces/default/workflows/ui-codec/{handle.result_run_id}/history")
                await page.get_by_text(OK_NAME).first.wait_for(timeout=30_000)
            finally:
                await browser.close()
    finally:
        os.killpg(server.pid, 15)
        server.wait(15)
        log = codec_server.stop()
    assert "OPTIONS /decode" in log and "POST /decode" in log, log[-1500:]
    assert key not in log


def test_codec_roundtrip_rotation_tampering_and_passthrough() -> None:
    old, new = os.urandom(32), os.urandom(32)
    plain = Payload(metadata={"encoding": b"json/plain"}, data=b'{"approver": "ursula"}')
    before = EncryptionCodec([old])
    [enc] = before.encode_sync([plain])
    assert enc.metadata["encoding"] == ENCODING and b"ursula" not in enc.data
    assert before.encode_sync([enc]) == [enc]  # never encrypted twice
    assert EncryptionCodec([new, old]).decode_sync([enc]) == [plain]
    [enc_new] = EncryptionCodec([new, old]).encode_sync([plain])
    assert enc_new.metadata[KEY_ID].decode() == key_id(new)
    with pytest.raises(PayloadKeyError, match="not in MIGRATOR_PAYLOAD_KEYS"):
        before.decode_sync([enc_new])
    tampered = Payload()
    tampered.CopyFrom(enc)
    tampered.data = enc.data[:-1] + bytes([enc.data[-1] ^ 1])
    with pytest.raises(PayloadKeyError, match="failed authentication"):
        before.decode_sync([tampered])
    # Not the codec's: returned untouched (plain JSON from the UI, binary/null, anything else).
    others = [plain, Payload(metadata={"encoding": b"binary/null"}), Payload(metadata={"encoding": b"binary/plain"}, data=b"x")]
    assert before.decode_sync(others) == others


def test_payload_key_settings_errors_are_one_line_and_never_show_the_key() -> None:
    short = base64.b64encode(os.urandom(16)).decode()
    cases = {
        json.dumps([short]): "MIGRATOR_PAYLOAD_KEYS[0] decodes to 16 bytes; AES-256 needs exactly 32",
        json.dumps([new_key(), "not-base64-at-all!!"]): "MIGRATOR_PAYLOAD_KEYS[1] is not base64",
        '["unterminated': "MIGRATOR_PAYLOAD_KEYS is not valid JSON",
    }
    for value, expected in cases.items():
        with pytest.raises(ValidationError) as err:
            Settings(_env_file=None, payload_keys=value)
        assert expected in err.value.errors()[0]["msg"]
        assert value not in str(err.value) and "not-base64-at-all" not in str(err.value)
    good = new_key()
    assert [k.get_secret_value() for k in Settings(_env_file=None, payload_keys=good).payload_keys] == [good]
    assert good not in repr(Settings(_env_file=None, payload_keys=json.dumps([good])))
    assert temporal_client.data_converter(Settings(_env_file=None)).payload_codec is None  # off by default

    # The processes refuse to start, in one sentence, without echoing the key.
    env = {**os.environ, "MIGRATOR_PAYLOAD_KEYS": json.dumps([short])}
    for cmd in ([sys.executable, "-m", "runtime.codec_server", "serve", "--port", "0"], [sys.executable, "worker.py"]):
        done = subprocess.run(cmd, check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
        out = done.stdout + done.stderr
        assert done.returncode == 3, out
        assert "MIGRATOR_PAYLOAD_KEYS[0] decodes to 16 bytes" in out and len(out.strip().splitlines()) == 1, out
        assert short not in out


async def test_the_worker_process_encrypts_and_never_logs_the_key(dev_env, database_url: str, tmp_path) -> None:
    """`python worker.py` (MIGRATOR_* only, DEBUG JSON log) with a key: its run is encrypted end to end."""
    key = new_key()
    env = f"encw{uuid.uuid4().hex[:8]}"
    address = dev_env.client.service_client.config.target_host
    queue = f"tq-{uuid.uuid4()}"
    log_file = tmp_path / "worker.log"
    proc = WorkerProcess({
        "MIGRATOR_TEMPORAL_ADDRESS": address, "MIGRATOR_TASK_QUEUE": queue,
        "MIGRATOR_ENVIRONMENTS": json.dumps({env: {"database_url": database_url, "gates": []}}),
        "MIGRATOR_PAYLOAD_KEYS": json.dumps([key]), "MIGRATOR_LOG_JSON": "true", "MIGRATOR_LOG_LEVEL": "DEBUG",
    }, log_file=log_file).start()
    try:
        settings = with_keys(Settings(_env_file=None), address, key)
        client = await temporal_client.connect(settings)
        req = request(env, [migration(OK_NAME, f"CREATE TABLE {SQL_MARKER} (id int);\n")])
        handle = await client.start_workflow(WORKFLOW_NAME, req, result_type=RunStatus,
                                             **start_options(req, task_queue=queue, workflow_id=f"test-{uuid.uuid4()}"))
        final = await asyncio.wait_for(handle.result(), 90)
        assert final.outcome == Outcome.succeeded, final.error
        view = json.loads((await dev_env.client.get_workflow_handle(handle.id).fetch_history()).to_json())
        assert {encoding_of(p) for p in payloads_in(view)} == {ENCODING}
        assert OK_NAME not in "\n".join(texts(view, []))
    finally:
        proc.stop()
    deadline = time.monotonic() + 5
    while "preflight" not in log_file.read_text() and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    log = log_file.read_text()
    assert "worker started" in log and "preflight" in log, log[-800:]
    assert key not in log
