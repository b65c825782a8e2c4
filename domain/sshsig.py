"""SSH signatures in the SSHSIG format (`ssh-keygen -Y sign`, git's SSH commit signing): the envelope
is read here, every cryptographic step is done by the `cryptography` library.

Why not the `sshsig` package: it verifies ssh-ed25519 and ssh-rsa only (no ECDSA), and its
allowed-signers verification accepts only `*` principals without validity dates. The envelope is
framing (PROTOCOL.sshsig in openssh-portable; RFC 4251 strings), not cryptography, so parsing it is
a few lines; key decoding, hashing rules and signature checks are `cryptography`'s.

Pure and deterministic (no I/O, no clock): it runs inside the workflow's update and signal handlers,
in Temporal's workflow sandbox. `cryptography` is a native (Rust) module that can be loaded only once
per process and imports Python modules lazily on first use: the sandbox passes the whole package
through (workflows/sandbox.py), which every worker and replayer of this project uses.

Signed data, per PROTOCOL.sshsig:
    "SSHSIG" || string(namespace) || string("") || string(hash_algorithm) || string(H(message))
and the armored signature is base64 of
    "SSHSIG" || uint32(1) || string(public key) || string(namespace) || string(reserved)
             || string(hash_algorithm) || string(signature)
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

ARMOR_BEGIN = "-----BEGIN SSH SIGNATURE-----"
ARMOR_END = "-----END SSH SIGNATURE-----"
MAGIC = b"SSHSIG"
VERSION = 1
# An RSA-16384 signature with its key is under 5 KB of base64; anything far larger is not a signature.
MAX_ARMORED_CHARS = 16_000
# ssh-keygen signs with sha512 by default; `-O hashalg=sha256` is the only alternative it offers.
MESSAGE_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}

ED25519 = "ssh-ed25519"
RSA = "ssh-rsa"
# Built once, at import: `ec.ECDSA()` imports the OpenSSL backend lazily.
ECDSA_CURVES: dict[str, tuple[type[ec.EllipticCurve], ec.ECDSA]] = {
    # RFC 5656 §6.2.1: the curve fixes the hash.
    "ecdsa-sha2-nistp256": (ec.SECP256R1, ec.ECDSA(hashes.SHA256())),
    "ecdsa-sha2-nistp384": (ec.SECP384R1, ec.ECDSA(hashes.SHA384())),
    "ecdsa-sha2-nistp521": (ec.SECP521R1, ec.ECDSA(hashes.SHA512())),
}
# RFC 8332; plain "ssh-rsa" signatures use SHA-1 and are refused, as OpenSSH does for SSHSIG.
RSA_SIGNATURES = {"rsa-sha2-256": hashes.SHA256(), "rsa-sha2-512": hashes.SHA512()}
_PKCS1 = padding.PKCS1v15()
SUPPORTED_KEY_TYPES = (ED25519, RSA, *ECDSA_CURVES)
# OpenSSH's own floor is 1024 bits; 2048 is the floor NIST SP 800-131A allows for signatures.
MIN_RSA_BITS = 2048


class SshSigError(ValueError):
    """The signature text or a key cannot be used; the message is one sentence for the user."""


@dataclass(frozen=True)
class SshSignature:
    """A parsed SSHSIG envelope. Nothing in it is trusted until `verifies` says so."""

    key_type: str
    public_key: bytes  # the signer's key, SSH wire encoding (what allowed-signers lines hold in base64)
    namespace: str
    hash_algorithm: str
    signature: bytes  # string(signature algorithm) || string(raw signature)

    @property
    def key_fingerprint(self) -> str:
        return key_fingerprint(self.public_key)

    def verifies(self, message: bytes, namespace: str) -> bool:
        """Whether this is a valid signature by its embedded key over `message` in `namespace`."""
        if namespace != self.namespace:
            return False
        signed = _signed_data(namespace, self.hash_algorithm, message)
        return verify_raw(self.key_type, self.public_key, self.signature, signed)


def key_fingerprint(public_key: bytes) -> str:
    """The key's fingerprint as `ssh-keygen -l` and `ssh-add -l` print it (SHA256:base64, no padding)."""
    digest = hashlib.sha256(public_key).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def parse_armored(text: str) -> SshSignature:
    """Read `-----BEGIN SSH SIGNATURE----- ... -----END SSH SIGNATURE-----` (or its base64 body alone).

    Lenient about whitespace and line breaks (a signature pasted into a JSON string or a browser
    keeps them unpredictably), strict about everything else."""
    if not isinstance(text, str) or not text.strip():
        raise SshSigError("the signature is empty")
    if len(text) > MAX_ARMORED_CHARS:
        raise SshSigError(f"the signature is {len(text)} characters long, too long to be an SSH signature")
    # A literal backslash-n (the signature escaped twice on its way through JSON) is never base64.
    body = text.replace("\\r", "").replace("\\n", "\n").strip()
    if body.startswith(ARMOR_BEGIN):
        body = body[len(ARMOR_BEGIN):]
        end = body.find(ARMOR_END)
        if end < 0:
            raise SshSigError(f"the signature has no '{ARMOR_END}' line: paste all of it")
        if body[end + len(ARMOR_END):].strip():
            raise SshSigError(f"the signature has text after '{ARMOR_END}'")
        body = body[:end]
    elif "-----" in body:
        raise SshSigError(f"the signature must start with '{ARMOR_BEGIN}'")
    compact = "".join(body.split())
    try:
        blob = base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError):
        raise SshSigError("the signature is not valid base64 between its armor lines") from None
    return parse_blob(blob)


def parse_blob(blob: bytes) -> SshSignature:
    reader = WireReader(blob)
    if reader.take(len(MAGIC)) != MAGIC:
        raise SshSigError("this is not an SSH signature (no SSHSIG preamble); make it with `ssh-keygen -Y sign`")
    version = reader.uint32()
    if version != VERSION:
        raise SshSigError(f"SSH signature format version {version} is not supported (only {VERSION})")
    public_key = reader.string()
    namespace = reader.text()
    reader.string()  # reserved: ignored, as OpenSSH does
    hash_algorithm = reader.text()
    signature = reader.string()
    if not reader.done():
        raise SshSigError("the SSH signature has trailing data")
    key_type = WireReader(public_key).text()
    if hash_algorithm not in MESSAGE_HASHES:
        raise SshSigError(f"the signature hashes with '{hash_algorithm}'; only sha256 and sha512 are accepted")
    return SshSignature(key_type, public_key, namespace, hash_algorithm, signature)


def unsupported_key_reason(key_type: str) -> str | None:
    """Why keys of this type cannot prove anything here, or None if they can."""
    if key_type in SUPPORTED_KEY_TYPES:
        return None
    if key_type.endswith("-cert-v01@openssh.com"):
        return "SSH certificates are not supported: sign with the plain key listed in the allowed signers"
    if key_type.startswith("sk-"):
        return (f"security-key ({key_type}) signatures are not supported yet: "
                "use an ed25519, RSA or ECDSA key (or the ssh-agent holding one)")
    return f"keys of type {key_type} are not supported (supported: {', '.join(SUPPORTED_KEY_TYPES)})"


def load_public_key(key_type: str, public_key: bytes):
    """The `cryptography` key for an SSH wire-encoded public key; SshSigError if unusable."""
    reason = unsupported_key_reason(key_type)
    if reason:
        raise SshSigError(reason)
    line = key_type.encode("ascii") + b" " + base64.b64encode(public_key)
    try:
        key = load_ssh_public_key(line)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise SshSigError(f"the {key_type} public key cannot be read ({exc})") from None
    expected = {ED25519: ed25519.Ed25519PublicKey, RSA: rsa.RSAPublicKey}.get(key_type, ec.EllipticCurvePublicKey)
    if not isinstance(key, expected):
        raise SshSigError(f"the public key is not a {key_type} key")
    if key_type in ECDSA_CURVES and not isinstance(key.curve, ECDSA_CURVES[key_type][0]):
        raise SshSigError(f"the public key's curve does not match {key_type}")
    if key_type == RSA and key.key_size < MIN_RSA_BITS:
        raise SshSigError(f"RSA keys of {key.key_size} bits are too weak to prove an approval "
                          f"(at least {MIN_RSA_BITS}); use an ed25519 key")
    return key


def verify_raw(key_type: str, public_key: bytes, signature: bytes, signed: bytes) -> bool:
    """One SSH signature blob (RFC 4253 §6.6 framing) checked by `cryptography` over `signed`."""
    key = load_public_key(key_type, public_key)
    try:
        return _verify(key, key_type, signature, signed)
    except (InvalidSignature, SshSigError, ValueError):
        return False


def _verify(key, key_type: str, signature: bytes, signed: bytes) -> bool:
    """Raises InvalidSignature (or returns False) unless the signature is good."""
    reader = WireReader(signature)
    algorithm = reader.text()
    raw = reader.string()
    if not reader.done():
        return False
    if key_type == ED25519:
        if algorithm != ED25519:
            return False
        key.verify(raw, signed)
    elif key_type == RSA:
        if algorithm not in RSA_SIGNATURES:
            return False
        key.verify(raw, signed, _PKCS1, RSA_SIGNATURES[algorithm])
    else:
        if algorithm != key_type:
            return False
        # RFC 5656 §3.1.2: mpint r || mpint s, which `cryptography` takes as DER.
        parts = WireReader(raw)
        r, s = parts.mpint(), parts.mpint()
        if not parts.done():
            return False
        key.verify(encode_dss_signature(r, s), signed, ECDSA_CURVES[key_type][1])
    return True


def _signed_data(namespace: str, hash_algorithm: str, message: bytes) -> bytes:
    digest = MESSAGE_HASHES[hash_algorithm](message).digest()
    return MAGIC + _string(namespace.encode()) + _string(b"") + _string(hash_algorithm.encode()) + _string(digest)


def _string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


class WireReader:
    """RFC 4251 §5 data types over a byte string; a short or malformed input is an SshSigError."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, n: int) -> bytes:
        if n < 0 or self._at + n > len(self._data):
            raise SshSigError("the SSH signature is truncated or malformed")
        chunk = self._data[self._at:self._at + n]
        self._at += n
        return chunk

    def uint32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def string(self) -> bytes:
        return self.take(self.uint32())

    def text(self) -> str:
        try:
            return self.string().decode("ascii")
        except UnicodeDecodeError:
            raise SshSigError("the SSH signature holds a name that is not ASCII") from None

    def mpint(self) -> int:
        raw = self.string()
        if raw and raw[0] & 0x80:
            raise SshSigError("negative integer in an ECDSA signature")
        return int.from_bytes(raw, "big")

    def done(self) -> bool:
        return self._at == len(self._data)
