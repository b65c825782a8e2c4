"""Fleets in the worker's settings: named sets of databases a rollout deploys in waves.

    MIGRATOR_FLEETS='{
      "regions": {"environments": ["eu", "us"]},
      "tenants": {"discover": {"query": "SELECT datname FROM pg_database WHERE datname LIKE 'tenant\\\\_%'"},
                  "rules": {"gates": ["deploy"], "approvers": ["alice", "bob"], "allow_self_approval": false},
                  "groups": {"early": ["tenant_001", "tenant_002"]}, "waves": ["1", "group:early", "25%", "rest"]}
    }'
    MIGRATOR_FLEETS__TENANTS__DISCOVER__SERVER_URL='postgresql://migrator:...@tenants-db:5432/postgres'

A fleet lists environments (each with its own URL and rules in MIGRATOR_ENVIRONMENTS), or discovers
its databases with a query run on a server (`server_url`, a secret like every URL): each database
the query lists is a member named `<fleet>:<database>`, reached at the server URL with that database,
under the fleet's `rules` (any EnvironmentSettings field but the URL). Only databases the query
lists can be targeted (checked before every connection, activities/target.py).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator

MEMBER_SEPARATOR = ":"
DEFAULT_QUERY = (
    "SELECT datname FROM pg_database WHERE NOT datistemplate AND datallowconn AND datname <> 'postgres' "
    "ORDER BY datname"
)


class Discovery(BaseModel):
    server_url: SecretStr  # a database on the server to run `query` in (e.g. .../postgres)
    query: str = DEFAULT_QUERY  # one text column: database names on that server

    @field_validator("server_url")
    @classmethod
    def _valid(cls, value: SecretStr) -> SecretStr:
        from domain.dsn import check_dsn

        check_dsn(value.get_secret_value())
        return value


class FleetSettings(BaseModel):
    environments: list[str] = Field(default_factory=list)
    discover: Discovery | None = None
    rules: dict[str, Any] = Field(default_factory=dict)  # EnvironmentSettings fields for discovered members
    groups: dict[str, list[str]] = Field(default_factory=dict)  # named groups: databases or environments
    waves: list[str] | None = None  # default waves for rollouts of this fleet

    @model_validator(mode="after")
    def _one_source(self) -> FleetSettings:
        if bool(self.environments) == (self.discover is not None):
            raise ValueError("a fleet lists 'environments' or has a 'discover' query, exactly one of them")
        if "database_url" in self.rules:
            raise ValueError("a fleet's rules hold no database_url: members are reached through discover.server_url")
        if self.discover is not None:
            self.member_settings("rules_check")  # the rules must be valid environment settings
        if self.waves is not None:
            from domain.rollout import RolloutSpecError, check_waves

            try:
                check_waves(self.waves, self.groups)
            except RolloutSpecError as exc:
                raise ValueError(str(exc)) from None
        return self

    def member_settings(self, database: str) -> Any:
        """EnvironmentSettings of one discovered member (no check that the query lists it)."""
        from runtime.settings import EnvironmentSettings

        assert self.discover is not None
        parts = urlsplit(self.discover.server_url.get_secret_value())
        url = urlunsplit(parts._replace(path="/" + quote(database, safe="")))
        return EnvironmentSettings(database_url=SecretStr(url), **self.rules)

    def target(self, fleet: str, member: str) -> str:
        """The target name of a member (an environment name, or `<fleet>:<database>`)."""
        return member if self.discover is None else f"{fleet}{MEMBER_SEPARATOR}{member}"


def split_member(name: str) -> tuple[str, str] | None:
    """(fleet, database) of a discovered member's name, or None."""
    fleet, sep, database = name.partition(MEMBER_SEPARATOR)
    return (fleet, database) if sep and fleet and database else None
