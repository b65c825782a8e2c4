"""Decoding a fetched workflow history in place: every payload through the run's codec, and the
failure messages that DefaultFailureConverterWithEncodedAttributes moved into `encoded_attributes`
put back, so the audit reads an encrypted run exactly like a plain one."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter

from runtime.codec import ENCODING, KEY_ID, PayloadKeyError

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


