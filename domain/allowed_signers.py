"""The `ssh-keygen` ALLOWED SIGNERS format (man ssh-keygen; git's gpg.ssh.allowedSignersFile): who
may sign, with which key, for which namespaces, and when.

    # comment
    alice@example.com ssh-ed25519 AAAAC3... alice's laptop
    bob,bob@example.com namespaces="prisma-deploy-approval",valid-before="20271231Z" ecdsa-sha2-nistp256 AAAA...
    "carol smith" valid-after="20260101Z" ssh-rsa AAAAB3...

Each line: principals (a comma-separated pattern-list, double-quoted if it has spaces), optional
comma-separated options (`cert-authority`, `namespaces="pattern-list"`, `valid-after="time"`,
`valid-before="time"`; keywords case-insensitive), key type, base64 key, optional comment.

Two deliberate differences from ssh-keygen, both refusals rather than reinterpretations:
- times must end in `Z` (UTC). ssh-keygen reads a time without `Z` in the local time zone, which a
  workflow cannot use deterministically (workers may sit in different zones); the file stays
  valid for ssh-keygen, which accepts `Z` too;
- an unknown option or a key that does not decode is an error for the whole list, so a typo is
  reported when the settings are loaded instead of silently disabling one approver.

Pure: parsed from text (the settings travel to the workflow in the approval policy, so history
holds the list every verdict was made against).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone

from domain.sshsig import SshSigError, WireReader, key_fingerprint, load_public_key, unsupported_key_reason

_OPTIONS = ("cert-authority", "namespaces", "valid-after", "valid-before")
_TIME = re.compile(r"^(\d{8})(\d{4}(\d{2})?)?Z$")


class AllowedSignersError(ValueError):
    """The list cannot be used as written; the message names the line and says what to fix."""


@dataclass(frozen=True)
class AllowedSigner:
    """One line of the list, parsed. `principals` and `namespaces` are OpenSSH pattern-lists."""

    line: int
    principals: str
    key_type: str
    public_key: bytes  # SSH wire encoding, compared byte for byte with the signature's key
    namespaces: str | None = None
    valid_after: datetime | None = None
    valid_before: datetime | None = None
    cert_authority: bool = False
    comment: str = ""

    @property
    def key_fingerprint(self) -> str:
        return key_fingerprint(self.public_key)

    def holds(self, key_type: str, public_key: bytes) -> bool:
        """Whether a signature made with this plain key is one this line speaks about. A
        cert-authority line vouches for certificates only, never for its own key's signatures."""
        return not self.cert_authority and key_type == self.key_type and public_key == self.public_key

    def allows_principal(self, name: str) -> bool:
        return match_pattern_list(name, self.principals)

    def allows_namespace(self, namespace: str) -> bool:
        return self.namespaces is None or match_pattern_list(namespace, self.namespaces)

    def validity_refusal(self, at: datetime) -> str | None:
        """Why the key is not valid at `at` (timezone-aware), or None. Same bounds as ssh-keygen:
        valid at or after valid-after, at or before valid-before."""
        if self.valid_after is not None and at < self.valid_after:
            return f"is not valid before {_show(self.valid_after)} (allowed signers line {self.line})"
        if self.valid_before is not None and at > self.valid_before:
            return f"expired at {_show(self.valid_before)} (allowed signers line {self.line})"
        return None


def parse_allowed_signers(text: str | Iterable[str]) -> list[AllowedSigner]:
    """All the signers of a list given as one text or as lines (settings may hold either).
    Raises AllowedSignersError naming the first bad line."""
    lines = text.splitlines() if isinstance(text, str) else [part for item in text for part in item.splitlines()]
    signers: list[AllowedSigner] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            signers.append(_parse_line(line, number))
        except AllowedSignersError as exc:
            raise AllowedSignersError(f"allowed signers line {number}: {exc}") from None
    return signers


def match_pattern_list(name: str, patterns: str) -> bool:
    """OpenSSH's match_pattern_list (ssh_config(5) PATTERNS), case-sensitive as ssh-keygen uses it:
    `*` and `?` wildcards, comma-separated, a `!`-negated match refuses whatever else matched."""
    matched = False
    for pattern in patterns.split(","):
        negated = pattern.startswith("!")
        if negated:
            pattern = pattern[1:]
        if _wildcard(pattern).fullmatch(name):
            if negated:
                return False
            matched = True
    return matched


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


def _parse_line(line: str, number: int) -> AllowedSigner:
    principals, rest = _take_principals(line)
    options: dict[str, str | None] = {}
    first = rest.split(None, 1)[0] if rest else ""
    if first and not _looks_like_key_type(first):
        options, rest = _take_options(rest)
    fields = rest.split(None, 2)
    if len(fields) < 2:
        raise AllowedSignersError("expected principals, [options,] key type and base64 key")
    key_type, key_b64 = fields[0], fields[1]
    comment = fields[2] if len(fields) > 2 else ""
    try:
        blob = base64.b64decode(key_b64, validate=True)
        inner_type = WireReader(blob).text()
    except (binascii.Error, ValueError, SshSigError):
        raise AllowedSignersError(f"the {key_type} key is not valid base64 SSH key data") from None
    if inner_type != key_type:
        raise AllowedSignersError(f"the key is labelled {key_type} but holds a {inner_type} key")
    cert_authority = "cert-authority" in options
    if not cert_authority and unsupported_key_reason(key_type) is None:
        try:
            load_public_key(key_type, blob)
        except SshSigError as exc:
            raise AllowedSignersError(str(exc)) from None
    return AllowedSigner(
        line=number,
        principals=principals,
        key_type=key_type,
        public_key=blob,
        namespaces=options.get("namespaces"),
        valid_after=_time(options.get("valid-after"), "valid-after"),
        valid_before=_time(options.get("valid-before"), "valid-before"),
        cert_authority=cert_authority,
        comment=comment,
    )


def _take_principals(line: str) -> tuple[str, str]:
    if line.startswith('"'):
        end = line.find('"', 1)
        if end < 0:
            raise AllowedSignersError("the quoted principals have no closing quote")
        principals, rest = line[1:end], line[end + 1:]
        if rest and not rest[0].isspace():
            raise AllowedSignersError("expected a space after the quoted principals")
    else:
        parts = line.split(None, 1)
        principals, rest = parts[0], parts[1] if len(parts) > 1 else ""
    if not principals:
        raise AllowedSignersError("the principals are empty")
    return principals, rest.lstrip()


def _looks_like_key_type(token: str) -> bool:
    return (token.startswith(("ssh-", "ecdsa-", "sk-")) and "=" not in token and '"' not in token)


def _take_options(rest: str) -> tuple[dict[str, str | None], str]:
    """Comma-separated options up to the first space outside double quotes."""
    options: dict[str, str | None] = {}
    at = 0
    while True:
        match = re.match(r'([A-Za-z-]+)(="([^"]*)")?', rest[at:])
        if not match or not match.group(1):
            raise AllowedSignersError(f"cannot read the options at '{rest[at:at + 30]}'")
        name = match.group(1).lower()
        if name not in _OPTIONS:
            raise AllowedSignersError(f"unknown option '{match.group(1)}' (known: {', '.join(_OPTIONS)})")
        if name in options:
            raise AllowedSignersError(f"option '{name}' is given twice")
        has_value = match.group(2) is not None
        if (name == "cert-authority") == has_value:
            needs = "takes no value" if name == "cert-authority" else 'needs a value in double quotes, e.g. ="..."'
            raise AllowedSignersError(f"option '{name}' {needs}")
        options[name] = match.group(3)
        at += match.end()
        if rest[at:at + 1] == ",":
            at += 1
            continue
        if at < len(rest) and not rest[at].isspace():
            raise AllowedSignersError(f"unexpected '{rest[at]}' after option '{name}'")
        return options, rest[at:].lstrip()


def _time(value: str | None, option: str) -> datetime | None:
    if value is None:
        return None
    match = _TIME.match(value)
    if not match:
        raise AllowedSignersError(
            f'{option}="{value}" must be YYYYMMDDZ or YYYYMMDDHHMM[SS]Z, in UTC with the Z '
            "(a time without Z would depend on the worker's time zone)")
    digits = value[:-1].ljust(14, "0")
    try:
        return datetime.strptime(digits, "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    except ValueError:
        raise AllowedSignersError(f'{option}="{value}" is not a real date and time') from None


def _show(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")
