"""Approval settings per environment (issue 15): production defaults, the allowed-signers list as a
file or inline, and mistakes refused when the settings load, in one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from domain.risk import Risk
from runtime.settings import EnvironmentSettings, Settings
from tests.ssh_keys import make_key

URL = "postgresql://migrator:secret@db:5432/app"


def _load(env: dict[str, str]) -> Settings:
    import os
    from unittest import mock

    with mock.patch.dict(os.environ, env, clear=False):
        return Settings(_env_file=None)


def test_an_environment_that_says_nothing_gets_production_rules() -> None:
    prod = EnvironmentSettings(database_url=URL)
    assert prod.approval_proofs == ["ssh"]
    assert prod.allow_self_approval is False
    assert prod.required_approvals[Risk.high] == 2
    policy = prod.policy()
    assert policy.approval_proofs == ["ssh"] and policy.allowed_signers == ""
    assert "lists no allowed_signers" in prod.approval_warning("prod")
    assert EnvironmentSettings(database_url=URL, gates=[]).approval_warning("dev") is None
    assert EnvironmentSettings(database_url=URL, approval_proofs=["ssh", "typed"]).approval_warning("demo") is None


def test_allowed_signers_from_a_file_inline_or_as_lines(tmp_path: Path) -> None:
    alice, bob = make_key(tmp_path, "alice", "ed25519"), make_key(tmp_path, "bob", "ecdsa", 256)
    listing = tmp_path / "allowed_signers"
    listing.write_text(f"# prod approvers\nalice {alice.public}\n")
    from_file = EnvironmentSettings(database_url=URL, allowed_signers=str(listing))
    assert from_file.policy().allowed_signers == listing.read_text()
    listing.write_text(f"alice {alice.public}\nbob {bob.public}\n")  # read again at every preflight
    assert "bob " in from_file.policy().allowed_signers
    inline = EnvironmentSettings(database_url=URL, allowed_signers=f"alice {alice.public}\nbob {bob.public}")
    lines = EnvironmentSettings(database_url=URL, allowed_signers=[f"alice {alice.public}", f"bob {bob.public}"])
    assert inline.policy().allowed_signers.splitlines() == lines.policy().allowed_signers.splitlines()
    assert inline.approval_warning("prod") is None
    # Through MIGRATOR_* variables, as the worker reads them: rules in JSON, the list nested.
    settings = _load({
        "MIGRATOR_ENVIRONMENTS": json.dumps({"prod": {"database_url": URL, "approvers": ["alice", "bob"]}}),
        "MIGRATOR_ENVIRONMENTS__PROD__ALLOWED_SIGNERS": str(listing),
    })
    assert settings.environments["prod"].policy().allowed_signers == listing.read_text()


@pytest.mark.parametrize("value, words", [
    ("/no/such/allowed_signers", "cannot read the allowed signers file /no/such/allowed_signers"),
    ("alice ssh-ed25519 AAAA-not-base64", "allowed signers line 1"),
    (["alice ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", 'bob valid-before="20270101" ssh-ed25519 AAAA'], "line 1"),
])
def test_a_bad_list_is_refused_when_the_settings_load(value, words: str) -> None:
    with pytest.raises(ValidationError) as err:
        EnvironmentSettings(database_url=URL, allowed_signers=value)
    assert words in str(err.value)


def test_proofs_must_be_known_and_not_empty() -> None:
    with pytest.raises(ValidationError, match="at least one proof"):
        EnvironmentSettings(database_url=URL, approval_proofs=[])
    with pytest.raises(ValidationError):
        EnvironmentSettings(database_url=URL, approval_proofs=["password"])
    assert EnvironmentSettings(database_url=URL, approval_proofs=["typed", "typed"]).approval_proofs == ["typed"]
