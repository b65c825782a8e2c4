"""Optional payload encryption (off unless MIGRATOR_PAYLOAD_KEYS is set).

Temporal stores every workflow input, result, signal, heartbeat, summary and failure detail in its
history; the deploy's SQL, migration names and approvers are in there. With keys configured, the
worker and the starter (both connect through runtime.connection.connect) encrypt every payload with
AES-256-GCM before it leaves the process, so the Temporal server, its database and anyone reading
the history without a key see ciphertext. Search attributes are never encrypted (Temporal indexes
them): they hold only the environment, operation, stage, outcome and requester.

Each encrypted payload names its key by id (a hash of the key, never the key): the first configured
key encrypts, every configured key decrypts, which is how keys rotate. Payloads this codec did not
produce pass through decoding untouched: the Temporal UI's "Send a Signal" sends plain JSON.

Keys and the codec server for the Temporal UI: `prisma-deploy-codec keygen|serve`
(runtime/codec_server.py). Reading a fetched history through the codec: runtime/history.py.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

if TYPE_CHECKING:
    from runtime.settings import Settings

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
        from runtime.settings import payload_key_bytes

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


