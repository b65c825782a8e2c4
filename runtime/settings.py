"""Settings shared by the worker and the starter CLI (pydantic-settings: env vars, optional `.env`).

Every variable is prefixed `MIGRATOR_`. Environments (the databases the worker may touch) are a
JSON map or nested variables, e.g.

    MIGRATOR_ENVIRONMENTS='{"prod": {"database_url": "postgresql://...", "gates": ["resolve", "deploy"],
                            "approvers": ["alice", "bob"], "allowed_signers": "/etc/migrator/allowed_signers"}}'
    MIGRATOR_ENVIRONMENTS__STAGING__DATABASE_URL=postgresql://...

Database URLs are secrets: they live only here, on the worker, and never travel in workflow
inputs, results, errors or search attributes.

Approval defaults fit production (issue 15): an environment that says nothing accepts only
approvals signed with an SSH key its `allowed_signers` list for the approver, never from the
requester, and two approvers for a high-risk plan. Typed names must be allowed explicitly
(`approval_proofs: ["ssh", "typed"]`) and are recorded as unproven.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from domain.allowed_signers import AllowedSignersError, parse_allowed_signers
from domain.durations import InvalidDuration, parse_pg_duration
from domain.facts import EnvironmentPolicy
from domain.lock_waits import LockRetryPolicy
from domain.risk import Risk
from runtime.fleets import FleetSettings, split_member

GateStage = Literal["resolve", "deploy", "verify"]
# How an approver's identity may be established: "ssh" = a signature by a key the environment's
# allowed signers list for that name (domain/approval_proof.py); "typed" = the name as typed, unproven.
ApprovalProof = Literal["ssh", "typed"]

DURATION_SETTINGS = ("lock_timeout", "statement_timeout", "lock_wait_budget", "lock_attempt_timeout",
                     "lock_attempt_timeout_max")
LOCK_POLICY_SETTINGS = ("lock_wait_budget", "lock_attempt_timeout", "lock_attempt_timeout_max")
# Limits per setting: the lock attempts must stay under a second, the budget may not be "none".
_DURATION_RULES: dict[str, dict[str, Any]] = {
    "lock_wait_budget": {"allow_disabled": False},
    "lock_attempt_timeout": {"allow_disabled": False, "max_ms": 999},
    "lock_attempt_timeout_max": {"allow_disabled": False, "max_ms": 999},
}


class EnvironmentSettings(BaseModel):
    """One target database and the approval rules that guard it."""

    database_url: SecretStr
    # Stages that wait for a human before they run. prod: all; dev: none.
    gates: list[GateStage] = Field(default_factory=lambda: ["resolve", "deploy"])
    # Who may approve or reject. Empty means anyone whose approval is proven (or, with typed
    # names allowed, anyone at all).
    approvers: list[str] = Field(default_factory=list)
    # When false (the default), the person who requested the run may not approve it.
    allow_self_approval: bool = False
    approval_timeout: timedelta = timedelta(hours=24)
    # Distinct approvals a gate needs, by the plan's risk level (see domain.risk.Risk).
    required_approvals: dict[Risk, int] = Field(default_factory=lambda: {Risk.low: 1, Risk.medium: 1, Risk.high: 2})
    # Which proofs of the approver's identity count; ["ssh"] unless the environment says otherwise.
    approval_proofs: list[ApprovalProof] = Field(default_factory=lambda: ["ssh"])
    # The approvers' public keys, in ssh-keygen's ALLOWED SIGNERS format: a file path (read again
    # at every preflight, so a removed key stops counting for the next run), or the lines
    # themselves (one text with newlines, or a list of lines).
    allowed_signers: str | list[str] | None = None
    # Session settings of this environment's connections, and how politely a migration asks for its
    # locks (see Settings); each one unset here is the worker's.
    lock_timeout: str = "10s"
    statement_timeout: str = "0"
    lock_wait_budget: str = "5min"
    lock_attempt_timeout: str = "50ms"
    lock_attempt_timeout_max: str = "200ms"
    # Schema checks by shadow replay (a throwaway database on the same server, needs CREATEDB):
    # the drift proof, the effects of failed migrations and post-deploy schema verification.
    # auto = in every run, and a run without a usable shadow database goes on with what it could
    # check (the plan says so); always = such a run stops before any change; never = off.
    drift_proof: Literal["auto", "always", "never"] = "auto"
    # Which live roles a role of the shadow replay stands for when owners and grants are compared
    # ({"migrator": "app_owner"} or {"migrator": ["app_owner", "migrator"]}). Unset: the shadow's
    # role stands for the owner of _prisma_migrations and this connection's role
    # (domain/schema/roles.py); a role named here stands for exactly the roles given.
    role_map: dict[str, str | list[str]] = Field(default_factory=dict)
    # Backups before destructive statements (schema _migrator_backup in the target database): how
    # long they are kept, and the largest a run may take before the plan needs "no backup" approved.
    backup_retention: timedelta = timedelta(days=7)
    backup_max_bytes: int = Field(default=1 << 30, ge=0)

    def policy(self) -> EnvironmentPolicy:
        """The approval rules of this environment, as the plan needs them (no database URL)."""
        return EnvironmentPolicy(
            gates=list(self.gates),
            approvers=list(self.approvers),
            allow_self_approval=self.allow_self_approval,
            approval_timeout=self.approval_timeout,
            required_approvals=dict(self.required_approvals),
            approval_proofs=list(self.approval_proofs),
            allowed_signers=self.allowed_signers_text(),
            backup_max_bytes=self.backup_max_bytes,
            require_schema=self.drift_proof == "always",
        )

    def allowed_signers_text(self) -> str:
        """The allowed-signers list as text (read from its file when the setting is a path).
        Raises AllowedSignersError (one sentence) when the file cannot be read."""
        value = self.allowed_signers
        if value is None:
            return ""
        if isinstance(value, list):
            return "\n".join(value) + ("\n" if value else "")
        if _is_path(value):
            path = Path(value).expanduser()
            try:
                return path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
                raise AllowedSignersError(f"cannot read the allowed signers file {path}: {why.lower()}") from None
        return value

    def approval_warning(self, name: str) -> str | None:
        """Why no approval of this environment can ever count, if that is so (the worker logs it)."""
        if self.gates and "typed" not in self.approval_proofs and not parse_allowed_signers(self.allowed_signers_text()):
            return (f"environment {name} accepts only SSH-signed approvals but lists no allowed_signers: "
                    "every approval of its gates will be refused until their keys are listed")
        return None

    @field_validator(*DURATION_SETTINGS)
    @classmethod
    def _pg_duration(cls, value: Any, info: ValidationInfo) -> str:
        return _duration(value, info.field_name)

    @field_validator("role_map")
    @classmethod
    def _role_names(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for shadow, live in value.items():
            names = [live] if isinstance(live, str) else live
            if not shadow.strip() or not names or any(not n.strip() for n in names):
                raise ValueError("role_map maps a role name to a live role name or a non-empty list of them, "
                                 'e.g. {"migrator": "app_owner"}')
        return value

    @field_validator("approval_proofs")
    @classmethod
    def _some_proof(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError('approval_proofs must name at least one proof: ["ssh"], or ["ssh", "typed"]')
        return list(dict.fromkeys(value))

    @model_validator(mode="after")
    def _signers_parse(self) -> "EnvironmentSettings":
        # A typo in the list is said when the worker starts, not at the first approval.
        parse_allowed_signers(self.allowed_signers_text())
        return self

    @field_validator("database_url")
    @classmethod
    def _has_database_name(cls, value: SecretStr) -> SecretStr:
        from domain.dsn import check_dsn

        check_dsn(value.get_secret_value())
        return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MIGRATOR_",
        env_file=".env",
        env_nested_delimiter="__",
        extra="ignore",
        # A rejected value may be a secret (a payload key, a database URL): errors name the field only.
        hide_input_in_errors=True,
    )

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "prisma-migrations"
    temporal_ui_url: str = "http://localhost:8233"
    # Temporal Cloud / self-hosted TLS: mTLS client cert and key, optional CA, or an API key.
    temporal_tls: bool = False
    temporal_tls_cert: Path | None = None
    temporal_tls_key: Path | None = None
    temporal_tls_ca: Path | None = None
    temporal_api_key: SecretStr | None = None

    environments: dict[str, EnvironmentSettings] = Field(default_factory=dict)
    # Named sets of databases for rollouts (runtime/fleets.py): environments, or discovered on a server.
    fleets: dict[str, FleetSettings] = Field(default_factory=dict)

    # Session settings applied to every connection the worker opens on a target database
    # (PostgreSQL's syntax; a value the server would silently read as 0 = "no timeout", such as
    # '0.5ms', is refused when the settings load).
    lock_timeout: str = "10s"
    statement_timeout: str = "0"
    # How a migration asks for its locks (activities/locks.py): attempts with a short lock_timeout
    # (first .. max, each under a second, so an application statement queued behind one waits at
    # most that long), retried with jittered backoff for at most the budget; per environment too.
    lock_wait_budget: str = "5min"
    lock_attempt_timeout: str = "50ms"
    lock_attempt_timeout_max: str = "200ms"
    # How long deploy waits for Prisma's advisory lock before giving up.
    advisory_lock_timeout: timedelta = timedelta(seconds=60)
    # Activities heartbeat from a background task; when a worker dies (kill -9, lost node) Temporal
    # re-dispatches its attempt to a live worker after this long. Preflight returns it to the workflow.
    heartbeat_timeout: timedelta = timedelta(seconds=30)

    # Optional payload encryption (codec.py): base64 AES-256 keys, a JSON list. The first encrypts,
    # every one decrypts, so a key is rotated by putting the new one first and keeping the old one.
    payload_keys: Annotated[list[SecretStr], NoDecode] = []

    log_json: bool = False
    log_level: str = "INFO"

    # Worker health: readiness file, /healthz + /readyz HTTP port, Prometheus metrics port (0 disables).
    health_file: Path | None = None
    health_port: int = 0
    metrics_port: int = 0

    @field_validator(*DURATION_SETTINGS)
    @classmethod
    def _pg_duration(cls, value: Any, info: ValidationInfo) -> str:
        return _duration(value, info.field_name)

    @model_validator(mode="after")
    def _lock_policies(self) -> "Settings":
        # The first attempt may not exceed the longest, whichever level set each: said at load.
        for name in self.environments:
            self.lock_policy(name)
        return self

    def env_setting(self, name: str, field: str) -> str:
        """An environment's session or lock setting: its own when it sets one, else the worker's."""
        env = self.environment(name)
        return getattr(env if field in env.model_fields_set else self, field)

    def lock_policy(self, name: str) -> LockRetryPolicy:
        """How politely environment `name`'s migrations ask for their locks."""
        try:
            return LockRetryPolicy.from_settings(*(self.env_setting(name, f) for f in LOCK_POLICY_SETTINGS))
        except ValueError as exc:
            raise ValueError(f"environment {name}: {exc}") from None

    @field_validator("payload_keys", mode="before")
    @classmethod
    def _parse_payload_keys(cls, value: Any) -> list[SecretStr]:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    raise ValueError("MIGRATOR_PAYLOAD_KEYS is not valid JSON: expected a list of base64 keys") from None
            else:  # one key, or keys separated by commas (base64 has no commas)
                value = [part for part in text.split(",") if part.strip()]
        if not isinstance(value, list):
            raise ValueError("MIGRATOR_PAYLOAD_KEYS must be a JSON list of base64 keys")
        keys = [v if isinstance(v, SecretStr) else SecretStr(str(v)) for v in value]
        for position, key in enumerate(keys):
            payload_key_bytes(key, position)
        return keys

    def environment(self, name: str) -> EnvironmentSettings:
        """An environment, or a member `<fleet>:<database>` of a discovered fleet (whether the fleet's
        query lists that database is checked before connecting: activities/target.py)."""
        try:
            return self.environments[name]
        except KeyError:
            member = split_member(name)
            fleet = self.fleets.get(member[0]) if member else None
            if fleet is not None and fleet.discover is not None:
                return fleet.member_settings(member[1])
            known = ", ".join(sorted(self.environments)) or "none configured"
            raise UnknownEnvironment(f"unknown environment '{name}' (this worker knows: {known})") from None


class UnknownEnvironment(ValueError):
    pass


def _duration(value: Any, name: str) -> str:
    """A PostgreSQL duration setting, refused (one sentence) where the server would read it as
    something else than written, e.g. '0.5ms' as 0 = no timeout."""
    try:
        parse_pg_duration(value, name, **_DURATION_RULES.get(name, {}))
    except InvalidDuration as exc:
        raise ValueError(str(exc)) from None
    return str(value)


def _is_path(value: str) -> bool:
    """A one-word setting is a file path; a list's line always has spaces (principals, type, key)."""
    text = value.strip()
    return bool(text) and not any(c.isspace() for c in text)


def payload_key_bytes(key: SecretStr, position: int = 0) -> bytes:
    """The 32 raw bytes of one MIGRATOR_PAYLOAD_KEYS entry (standard or URL-safe base64). Errors
    say which entry is wrong and how, never what it holds."""
    text = key.get_secret_value().strip().replace("-", "+").replace("_", "/")
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(
            f"MIGRATOR_PAYLOAD_KEYS[{position}] is not base64 (generate a key with: prisma-deploy-codec keygen)"
        ) from None
    if len(raw) != 32:
        raise ValueError(
            f"MIGRATOR_PAYLOAD_KEYS[{position}] decodes to {len(raw)} bytes; AES-256 needs exactly 32 "
            "(generate a key with: prisma-deploy-codec keygen)"
        )
    return raw


def load_settings(**overrides: object) -> Settings:
    return Settings(**overrides)  # type: ignore[arg-type]
