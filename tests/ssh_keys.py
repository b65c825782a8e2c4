"""Real SSH keys and signatures for tests, made and judged by OpenSSH's own `ssh-keygen`.

`ssh-keygen -Y verify` is the reference our verifier must agree with (as the real Prisma CLI is
for the ledger): tests call `keygen_verifies` on the same allowed-signers text, principal,
namespace, message and time.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

KEYGEN = shutil.which("ssh-keygen")


def keygen() -> str:
    """The ssh-keygen binary; a missing one is a broken test machine, never a skip."""
    assert KEYGEN, "ssh-keygen not found: install the Debian package openssh-client (make system-deps)"
    return KEYGEN


@dataclass(frozen=True)
class SshKey:
    path: Path  # private key (no passphrase); `path.with_suffix(".pub")`-style public file beside it
    key_type: str
    base64: str

    @property
    def pub_path(self) -> Path:
        return Path(f"{self.path}.pub")

    @property
    def public(self) -> str:
        """`TYPE BASE64`, as an allowed-signers line holds it."""
        return f"{self.key_type} {self.base64}"

    @property
    def fingerprint(self) -> str:
        out = subprocess.run([keygen(), "-l", "-E", "sha256", "-f", str(self.pub_path)],
                             capture_output=True, text=True, check=True).stdout
        return out.split()[1]


def make_key(directory: Path, name: str, kind: str, bits: int | None = None) -> SshKey:
    path = directory / name
    cmd = [keygen(), "-q", "-t", kind, "-N", "", "-C", f"{name}@test", "-f", str(path)]
    if bits:
        cmd += ["-b", str(bits)]
    subprocess.run(cmd, check=True, capture_output=True)
    key_type, b64 = Path(f"{path}.pub").read_text().split()[:2]
    return SshKey(path, key_type, b64)


def sign(key: SshKey | Path, message: bytes, namespace: str, *options: str) -> str:
    """`ssh-keygen -Y sign` over `message`; options such as "hashalg=sha256" go to -O."""
    key_path = key.path if isinstance(key, SshKey) else key
    with tempfile.TemporaryDirectory() as tmp:
        msg = Path(tmp) / "message"
        msg.write_bytes(message)
        cmd = [keygen(), "-Y", "sign", "-f", str(key_path), "-n", namespace]
        for option in options:
            cmd += ["-O", option]
        subprocess.run([*cmd, str(msg)], check=True, capture_output=True)
        return Path(f"{msg}.sig").read_text()


def keygen_verifies(allowed_signers: str, principal: str, namespace: str, signature: str, message: bytes,
                    at: datetime | None = None) -> bool:
    """OpenSSH's verdict: `ssh-keygen -Y verify -f ALLOWED -I PRINCIPAL -n NS -s SIG [-O verify-time]`."""
    with tempfile.TemporaryDirectory() as tmp:
        allowed = Path(tmp) / "allowed_signers"
        allowed.write_text(allowed_signers)
        sig = Path(tmp) / "message.sig"
        sig.write_text(signature)
        cmd = [keygen(), "-Y", "verify", "-f", str(allowed), "-I", principal, "-n", namespace, "-s", str(sig)]
        if at is not None:
            cmd += ["-O", f"verify-time={at.strftime('%Y%m%d%H%M%S')}Z"]
        return subprocess.run(cmd, input=message, capture_output=True).returncode == 0


def armor(blob: bytes) -> str:
    """ssh-keygen's armor: 70 base64 characters a line."""
    b64 = base64.b64encode(blob).decode()
    lines = [b64[i:i + 70] for i in range(0, len(b64), 70)]
    return "-----BEGIN SSH SIGNATURE-----\n" + "\n".join(lines) + "\n-----END SSH SIGNATURE-----\n"


def dearmor(text: str) -> bytes:
    body = [line for line in text.strip().splitlines() if not line.startswith("-----")]
    return base64.b64decode("".join(body))
