"""Prisma's checksum rules (REPORT.md §4.3), checked against hashlib and hand-made legacy strings."""

import hashlib

from domain.prisma.checksum import checksum_matches, sha256_hex

LF = b'CREATE TABLE "a" (id int);\nCREATE TABLE "b" (id int);\n'
CRLF = LF.replace(b"\n", b"\r\n")


def test_stored_checksum_is_sha256_of_the_raw_bytes() -> None:
    assert sha256_hex(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert sha256_hex(CRLF) == hashlib.sha256(CRLF).hexdigest() != sha256_hex(LF)
    bom = "\ufeffSELECT 1;\n".encode()
    assert sha256_hex(bom) != sha256_hex(b"SELECT 1;\n")


def test_line_ending_variants_match_both_ways() -> None:
    assert checksum_matches(sha256_hex(LF), LF)
    assert checksum_matches(sha256_hex(LF), CRLF)  # file converted to CRLF after applying
    assert checksum_matches(sha256_hex(CRLF), LF)  # applied from a Windows checkout
    mixed = LF.replace(b"\n", b"\r\n", 1)
    assert checksum_matches(sha256_hex(LF), mixed)


def test_real_edits_do_not_match() -> None:
    stored = sha256_hex(LF)
    assert not checksum_matches(stored, LF + b"\n")  # an extra blank line at the end
    assert not checksum_matches(stored, LF.rstrip(b"\n"))  # trailing newline removed
    assert not checksum_matches(stored, LF.replace(b"int", b"bigint"))
    assert not checksum_matches(sha256_hex("\ufeffSELECT 1;".encode()), b"SELECT 1;")  # BOM removed
    assert not checksum_matches("", LF)


def _unpadded(data: bytes) -> str:
    return "".join(f"{b:x}" for b in hashlib.sha256(data).digest())


def test_legacy_unpadded_checksums_match() -> None:
    # Find a script whose digest has a byte below 0x10, so the legacy string is shorter than 64.
    script = next(s for s in (f"SELECT {i};\n".encode() for i in range(1000)) if len(_unpadded(s)) < 64)
    legacy = _unpadded(script)
    assert checksum_matches(legacy, script)
    assert checksum_matches(legacy, script.replace(b"\n", b"\r\n"))
    assert not checksum_matches(legacy, script + b"-- changed\n")
    # A 64-character stored value is compared padded: the unpadded rendering never matches it.
    assert not checksum_matches(legacy.ljust(64, "0"), script)
