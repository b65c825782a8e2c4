"""PostgreSQL connection strings: validation and redaction. Pure, no I/O."""

from __future__ import annotations

import re
from urllib.parse import urlsplit


class InvalidDsn(ValueError):
    pass


def check_dsn(dsn: str) -> None:
    """Reject connection strings we cannot use, with a message that never repeats the password."""
    try:
        parts = urlsplit(dsn)
    except ValueError as exc:
        raise InvalidDsn(f"database URL is malformed ({exc.__class__.__name__})") from None
    if parts.scheme not in ("postgres", "postgresql"):
        raise InvalidDsn("database URL must start with postgresql:// (got another scheme)")
    if not parts.path.strip("/"):
        raise InvalidDsn(
            f"database URL {redact_dsn(dsn)} names no database; add one, e.g. postgresql://user@host:5432/mydb"
        )


def redact_dsn(dsn: str) -> str:
    """`postgresql://user:***@host:port/db` — safe for logs and errors."""
    try:
        parts = urlsplit(dsn)
    except ValueError:
        return "<unparseable database URL>"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    return f"{parts.scheme}://{netloc}{parts.path}"


def scrub(text: str, *secrets: str | None) -> str:
    """Remove secrets (passwords, whole DSNs) and any URL credentials from free text."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return re.sub(r"(postgres(?:ql)?://[^:/@\s]+):[^@\s]+@", r"\1:***@", text)
