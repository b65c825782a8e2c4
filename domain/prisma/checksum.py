"""Prisma's migration checksums (REPORT.md §4.3; prisma-engines `schema-connector/src/checksum.rs`).

Stored: lowercase hex SHA-256 of migration.sql's bytes exactly as read (no line-ending or BOM
normalisation). Compared: the file, its CRLF->LF and LF->CRLF variants all match, and when the
stored string is not 64 characters long (an old engine's bug, prisma-engines#1887) the candidates
are rendered without zero-padding each byte.
"""

from __future__ import annotations

import hashlib

CHECKSUM_LEN = 64


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _legacy_hex(digest: bytes) -> str:
    # Rust's `{:x}` per byte: 0x0a renders as "a", not "0a".
    return "".join(format(b, "x") for b in digest)


def _candidates(raw: bytes):
    yield raw
    yield raw.replace(b"\r\n", b"\n")
    # Like the engine's `replace('\n', "\r\n")`: a CRLF file becomes CR CR LF here, as there.
    yield raw.replace(b"\n", b"\r\n")


def checksum_matches(stored: str, raw: bytes) -> bool:
    """Whether a checksum from `_prisma_migrations` matches a local migration.sql, as Prisma decides."""
    legacy = bool(stored) and len(stored) != CHECKSUM_LEN
    for candidate in _candidates(raw):
        digest = hashlib.sha256(candidate).digest()
        rendered = _legacy_hex(digest) if legacy else digest.hex()
        if rendered == stored:
            return True
    return False
