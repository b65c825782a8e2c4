"""Proven approvers (issue 15): SSH signatures over the canonical approval message, checked against
an allowed-signers list. Keys and signatures are made by the real ssh-keygen, and every verdict on
a real signature is compared with `ssh-keygen -Y verify` on the same inputs."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import struct
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from temporalio.worker import Worker

from domain.allowed_signers import (
    AllowedSignersError,
    match_pattern_list,
    parse_allowed_signers,
)
from domain.approval_proof import (
    NAMESPACE,
    ApprovalStatement,
    Proven,
    Refused,
    verify_approval,
)
from tests.proof_workflow import ApprovalProofProbe
from tests.ssh_keys import SshKey, armor, dearmor, keygen_verifies, make_key, sign
from workflows.sandbox import workflow_runner

NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=timezone.utc)
FINGERPRINT = hashlib.sha256(b"the plan").hexdigest()
STATEMENT = ApprovalStatement(
    workflow_id="prisma-deploy-prod",
    run_id="0194f3a2-7c1e-7d55-9f5c-6d0b1e2a3c4d",
    stage="deploy",
    decision="approve",
    approver="alice",
    fingerprint=FINGERPRINT,
)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, SshKey]:
    d = tmp_path_factory.mktemp("keys")
    return {
        "alice": make_key(d, "alice", "ed25519"),
        "alice_laptop": make_key(d, "alice_laptop", "ecdsa", 256),
        "bob": make_key(d, "bob", "rsa", 2048),
        "carol": make_key(d, "carol", "ecdsa", 384),
        "dave": make_key(d, "dave", "ecdsa", 521),
        "mallory": make_key(d, "mallory", "ed25519"),
    }


@pytest.fixture(scope="module")
def allowed_text(keys) -> str:
    """A realistic list: comments, blank lines, a key comment, options, a quoted principal."""
    return "\n".join([
        "# approvers for prod, reviewed 2026-11",
        f"alice {keys['alice'].public} alice's workstation",
        "",
        f'alice namespaces="{NAMESPACE}",valid-after="20260101Z" {keys["alice_laptop"].public}',
        f"bob {keys['bob'].public}",
        f'"carol" VALID-BEFORE="20271231Z" {keys["carol"].public}',
        f"dave,dave@example.com {keys['dave'].public}",
        "   # an indented comment",
    ]) + "\n"


def check(signature: str, statement: ApprovalStatement, allowed: str, at: datetime = NOW, **claims):
    return verify_approval(signature, statement, parse_allowed_signers(allowed), at=at, claims=claims or None)


def openssh_agrees(allowed: str, statement: ApprovalStatement, signature: str, at: datetime = NOW) -> bool:
    return keygen_verifies(allowed, statement.approver, NAMESPACE, signature, statement.message(), at)


# -- what is signed ----------------------------------------------------------------------------


def test_the_canonical_message_is_exactly_the_v1_format() -> None:
    # The format is the contract between the CLI, people signing by hand and every worker version.
    assert STATEMENT.message() == (
        "prisma-temporal-deploy approval v1\n"
        "workflow: prisma-deploy-prod\n"
        "run: 0194f3a2-7c1e-7d55-9f5c-6d0b1e2a3c4d\n"
        "stage: deploy\n"
        "decision: approve\n"
        "approver: alice\n"
        f"fingerprint: {FINGERPRINT}\n"
    ).encode()
    assert replace(STATEMENT, fingerprint=FINGERPRINT.upper()).message() == STATEMENT.message()


@pytest.mark.parametrize("field, value, problem", [
    ("approver", "alice\nstage: verify", "control characters"),
    ("stage", " deploy", "surrounding spaces"),
    ("run_id", "", "run id to sign is empty"),
    ("decision", "maybe", "unknown decision"),
    ("fingerprint", "f" * 201, "longer than 200"),
])
def test_a_statement_that_could_forge_lines_cannot_be_signed(field: str, value: str, problem: str) -> None:
    bad = replace(STATEMENT, **{field: value})
    assert problem in bad.problem()
    with pytest.raises(ValueError):
        bad.message()
    assert problem in check("x", bad, "").reason


# -- accepted --------------------------------------------------------------------------------


@pytest.mark.parametrize("who, options", [
    ("alice", ()),  # ssh-ed25519
    ("alice", ("hashalg=sha256",)),
    ("bob", ()),  # ssh-rsa, signed rsa-sha2-512 by ssh-keygen
    ("carol", ()),  # ecdsa-sha2-nistp384
    ("dave", ()),  # ecdsa-sha2-nistp521
])
def test_a_signed_approval_proves_its_principal(keys, allowed_text: str, who: str, options: tuple[str, ...]) -> None:
    statement = replace(STATEMENT, approver=who)
    signature = sign(keys[who], statement.message(), NAMESPACE, *options)
    verdict = check(signature, statement, allowed_text)
    assert verdict == Proven(principal=who, key_fingerprint=keys[who].fingerprint, key_type=keys[who].key_type,
                             signer_line=verdict.signer_line)
    assert openssh_agrees(allowed_text, statement, signature)


def test_a_principal_with_several_keys_is_proven_by_each(keys, allowed_text: str) -> None:
    for key, line in (("alice", 2), ("alice_laptop", 4)):
        verdict = check(sign(keys[key], STATEMENT.message(), NAMESPACE), STATEMENT, allowed_text)
        assert isinstance(verdict, Proven) and verdict.principal == "alice" and verdict.signer_line == line
        assert verdict.key_fingerprint == keys[key].fingerprint
    # Two keys, one person: a gate counting distinct approvers sees one principal.
    assert keys["alice"].fingerprint != keys["alice_laptop"].fingerprint


def test_rsa_sha2_256_is_accepted_and_sha1_refused(keys, allowed_text: str) -> None:
    """ssh-keygen always signs RSA with rsa-sha2-512; agents and other tools may use rsa-sha2-256.
    Both are built here with `cryptography` and judged by ssh-keygen -Y verify as well."""
    statement = replace(STATEMENT, approver="bob")
    sha256 = _rsa_sshsig(keys["bob"], statement.message(), "rsa-sha2-256", hashes.SHA256())
    assert isinstance(check(sha256, statement, allowed_text), Proven)
    assert openssh_agrees(allowed_text, statement, sha256)
    sha1 = _rsa_sshsig(keys["bob"], statement.message(), "ssh-rsa", hashes.SHA1())
    assert "does not match this approval" in check(sha1, statement, allowed_text).reason


def _rsa_sshsig(key: SshKey, message: bytes, algorithm: str, digest: hashes.HashAlgorithm) -> str:
    def string(data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data

    private = load_ssh_private_key(key.path.read_bytes(), None)
    public = base64.b64decode(key.base64)
    signed = b"SSHSIG" + string(NAMESPACE.encode()) + string(b"") + string(b"sha512") + string(
        hashlib.sha512(message).digest())
    raw = private.sign(signed, padding.PKCS1v15(), digest)
    blob = (b"SSHSIG" + struct.pack(">I", 1) + string(public) + string(NAMESPACE.encode()) + string(b"")
            + string(b"sha512") + string(string(algorithm.encode()) + string(raw)))
    return armor(blob)


# -- refused ---------------------------------------------------------------------------------


@pytest.mark.parametrize("case, signed, checked, claims, reason", [
    ("another run", {"run_id": "0194f3a2-0000-7000-8000-000000000000"}, {}, {"run_id": "0194f3a2-0000-7000-8000-000000000000"},
     "the signature is for run prisma-deploy-prod/0194f3a2-0000-7000-8000-000000000000, not this run"),
    ("another workflow", {"workflow_id": "prisma-deploy-staging"}, {}, {"workflow_id": "prisma-deploy-staging"},
     "the signature is for run prisma-deploy-staging/"),
    ("another stage", {"stage": "resolve"}, {}, {}, "the signature is for the 'resolve' stage, not 'deploy'"),
    ("another decision", {"decision": "reject"}, {}, {}, "the signature is for the decision 'reject', not 'approve'"),
    ("another plan", {"fingerprint": "0" * 64}, {}, {"fingerprint": "0" * 64},
     f"the signature is for the plan fingerprint {'0' * 64}, but this run's plan is {FINGERPRINT}"),
    ("another plan, unsaid", {"fingerprint": "0" * 64}, {}, {}, "does not match this approval"),
    ("another name", {}, {"approver": "dave@example.com"}, {}, "made by dave, but the approval says dave@example.com"),
])
def test_a_signature_for_something_else_is_refused_with_what_it_was_for(
        keys, allowed_text: str, case: str, signed: dict, checked: dict, claims: dict, reason: str) -> None:
    base = replace(STATEMENT, approver="dave")
    signature = sign(keys["dave"], replace(base, **signed).message(), NAMESPACE)
    expected = replace(base, **checked)
    verdict = check(signature, expected, allowed_text, **claims)
    assert isinstance(verdict, Refused) and reason in verdict.reason, verdict
    assert verdict.key_fingerprint == keys["dave"].fingerprint
    assert not openssh_agrees(allowed_text, expected, signature)


def test_a_signature_by_another_key_is_refused(keys, allowed_text: str) -> None:
    unknown = sign(keys["mallory"], STATEMENT.message(), NAMESPACE)
    verdict = check(unknown, STATEMENT, allowed_text)
    assert verdict.reason == f"the signing key {keys['mallory'].fingerprint} is not in this environment's allowed signers"
    assert not openssh_agrees(allowed_text, STATEMENT, unknown)
    # Bob signs a statement naming alice: his key is listed, but for bob only.
    by_bob = sign(keys["bob"], STATEMENT.message(), NAMESPACE)
    assert check(by_bob, STATEMENT, allowed_text).reason == (
        f"the key {keys['bob'].fingerprint} is allowed for bob, not for alice")
    assert not openssh_agrees(allowed_text, STATEMENT, by_bob)


def test_a_tampered_signature_is_refused(keys, allowed_text: str) -> None:
    good = sign(keys["alice"], STATEMENT.message(), NAMESPACE)
    blob = bytearray(dearmor(good))
    blob[-5] ^= 0x01  # inside the ed25519 signature bytes
    tampered = armor(bytes(blob))
    assert "does not match this approval" in check(tampered, STATEMENT, allowed_text).reason
    assert not openssh_agrees(allowed_text, STATEMENT, tampered)


def test_a_signature_in_another_namespace_is_refused(keys, allowed_text: str) -> None:
    for_git = sign(keys["alice"], STATEMENT.message(), "git")
    assert check(for_git, STATEMENT, allowed_text).reason.startswith(
        "the signature was made for the namespace 'git', not 'prisma-deploy-approval'")
    assert not openssh_agrees(allowed_text, STATEMENT, for_git)


def test_a_key_limited_to_other_namespaces_is_refused(keys) -> None:
    allowed = f'alice namespaces="git,file" {keys["alice"].public}\n'
    signature = sign(keys["alice"], STATEMENT.message(), NAMESPACE)
    assert check(signature, STATEMENT, allowed).reason == (
        f'the key {keys["alice"].fingerprint} of alice may not sign deploy approvals (line 1: namespaces="git,file")')
    assert not openssh_agrees(allowed, STATEMENT, signature)


@pytest.mark.parametrize("options, at, reason", [
    ('valid-before="20261120115959Z"', NOW, "expired at 2026-11-20 11:59:59 UTC (allowed signers line 1)"),
    ('valid-after="20261121Z"', NOW, "is not valid before 2026-11-21 00:00:00 UTC (allowed signers line 1)"),
    ('valid-after="20261120Z",valid-before="202611201200Z"', NOW, None),  # both bounds are inclusive
    ('valid-before="202611201200Z"', NOW + timedelta(seconds=1), "expired at 2026-11-20 12:00:00 UTC (allowed signers line 1)"),
])
def test_validity_dates_are_those_of_the_approval_time(keys, options: str, at: datetime, reason: str | None) -> None:
    allowed = f"alice {options} {keys['alice'].public}\n"
    signature = sign(keys["alice"], STATEMENT.message(), NAMESPACE)
    verdict = check(signature, STATEMENT, allowed, at=at)
    if reason is None:
        assert isinstance(verdict, Proven)
    else:
        assert verdict.reason == f"the key {keys['alice'].fingerprint} of alice {reason}"
    assert openssh_agrees(allowed, STATEMENT, signature, at) is (reason is None)


@pytest.mark.parametrize("signature, reason", [
    (None, "the approval is not signed"),
    ("", "the approval is not signed"),
    (42, "'signature' must be a text"),
    ("ok, approved", "the signature is malformed: the signature is not valid base64"),
    ("-----BEGIN SSH SIGNATURE-----\nU1NIU0lH\n", "has no '-----END SSH SIGNATURE-----' line"),
    ("-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQ==\n-----END SSH SIGNATURE-----\n", "truncated or malformed"),
    ("-----BEGIN SSH SIGNATURE-----\nbm90IHNzaHNpZw==\n-----END SSH SIGNATURE-----\n", "no SSHSIG preamble"),
    ("-----BEGIN PGP SIGNATURE-----\nxyz\n-----END PGP SIGNATURE-----\n", "must start with '-----BEGIN SSH SIGNATURE-----'"),
])
def test_malformed_signatures_are_refused_in_one_sentence(allowed_text: str, signature, reason: str) -> None:
    verdict = check(signature, STATEMENT, allowed_text)
    assert isinstance(verdict, Refused) and reason in verdict.reason, verdict
    assert "\n" not in verdict.reason


def test_a_signature_survives_the_ways_people_paste_it(keys, allowed_text: str) -> None:
    good = sign(keys["alice"], STATEMENT.message(), NAMESPACE)
    body = "".join(line for line in good.splitlines() if not line.startswith("-----"))
    for pasted in (good.replace("\n", "\r\n"), good.replace("\n", " "), good.replace("\n", "\\n"), body):
        assert isinstance(check(pasted, STATEMENT, allowed_text), Proven), pasted


# -- the allowed-signers format --------------------------------------------------------------


def test_an_allowed_signers_file_with_comments_and_options(keys) -> None:
    text = (
        "# team keys\n"
        "\n"
        f'"carol smith,carol@example.com" Namespaces="prisma-*,git",cert-authority {keys["carol"].public}\n'
        f'*@example.com,!mallory@example.com valid-before="20270101Z" {keys["dave"].public} shared, do not copy\n'
    )
    ca, wildcard = parse_allowed_signers(text)
    assert (ca.line, ca.principals, ca.namespaces, ca.cert_authority) == (
        3, "carol smith,carol@example.com", "prisma-*,git", True)
    assert ca.allows_namespace(NAMESPACE) and not ca.allows_namespace("file")
    assert (wildcard.line, wildcard.comment) == (4, "shared, do not copy")
    assert wildcard.valid_before == datetime(2027, 1, 1, tzinfo=timezone.utc)
    # A cert-authority line vouches for certificates only, never for its own key's plain signatures.
    carol = replace(STATEMENT, approver="carol@example.com")
    signature = sign(keys["carol"], carol.message(), NAMESPACE)
    assert "not in this environment's allowed signers" in check(signature, carol, text).reason
    assert not openssh_agrees(text, carol, signature)
    # Patterns: any matching name is proven by the key (so prefer literal names), except a negated one.
    for name, proven in (("erin@example.com", True), ("mallory@example.com", False), ("erin@evil.org", False)):
        who = replace(STATEMENT, approver=name)
        signature = sign(keys["dave"], who.message(), NAMESPACE)
        assert isinstance(check(signature, who, text), Proven) is proven, name
        assert openssh_agrees(text, who, signature) is proven, name


@pytest.mark.parametrize("line, error", [
    ("alice ssh-ed25519", "line 1: expected principals, [options,] key type and base64 key"),
    ('alice expires="20270101Z" ssh-ed25519 AAAA', "line 1: unknown option 'expires'"),
    ('alice valid-before="20270101" KEY', 'must be YYYYMMDDZ or YYYYMMDDHHMM[SS]Z, in UTC with the Z'),
    ('alice valid-before="20271301Z" KEY', "is not a real date and time"),
    ("alice ssh-ed25519 not-base64!", "the ssh-ed25519 key is not valid base64 SSH key data"),
    ("alice ssh-rsa B64", "the key is labelled ssh-rsa but holds a ssh-ed25519 key"),
    ('"carol smith",carol KEY', "expected a space after the quoted principals"),
    ('"alice ssh-ed25519 KEY', "the quoted principals have no closing quote"),
    ("alice cert-authority=\"x\" KEY", "option 'cert-authority' takes no value"),
])
def test_a_bad_allowed_signers_line_is_reported_with_its_number(keys, line: str, error: str) -> None:
    with pytest.raises(AllowedSignersError) as err:
        parse_allowed_signers(line.replace("KEY", keys["alice"].public).replace("B64", keys["alice"].base64))
    assert error in str(err.value)


def test_weak_rsa_keys_are_refused_when_the_list_is_read(tmp_path) -> None:
    weak = make_key(tmp_path, "old", "rsa", 1024)
    with pytest.raises(AllowedSignersError) as err:
        parse_allowed_signers(f"# legacy\nold {weak.public}\n")
    assert str(err.value) == ("allowed signers line 2: RSA keys of 1024 bits are too weak to prove an approval "
                              "(at least 2048); use an ed25519 key")


def test_openssh_patterns() -> None:
    assert match_pattern_list("alice", "bob,alice")
    assert match_pattern_list("alice@example.com", "*@example.com")
    assert match_pattern_list("al", "a?")
    assert not match_pattern_list("alice", "Alice")  # case-sensitive, as ssh-keygen matches principals
    assert not match_pattern_list("root@example.com", "!root@example.com,*@example.com")
    assert not match_pattern_list("alice.x", "alice.")  # dots are literal


# -- inside the workflow sandbox -------------------------------------------------------------


async def test_verification_runs_in_an_update_handler_in_the_sandbox(
        time_skipping_env, keys, allowed_text, recwarn) -> None:
    """Every key type, verified where DeployWorkflow will verify: in an update handler, in the
    sandbox. A lazy import there would re-import cryptography's native module and fail the task,
    which Temporal retries for ever: hence the time limits and the check on the sandbox's warnings."""
    client = time_skipping_env.client
    queue = f"proof-{uuid.uuid4()}"

    async def update(handle, payload: dict) -> dict:
        return await asyncio.wait_for(handle.execute_update("approve_update", payload, result_type=dict), 30)

    async with Worker(client, task_queue=queue, workflows=[ApprovalProofProbe], workflow_runner=workflow_runner(strict=True)):
        for who in ("carol", "bob", "alice", "dave"):
            handle = await client.start_workflow(ApprovalProofProbe.run, args=[allowed_text, FINGERPRINT],
                                                 id=f"prisma-deploy-proof-{uuid.uuid4()}", task_queue=queue)
            run_id = (await handle.describe()).run_id
            statement = replace(STATEMENT, workflow_id=handle.id, run_id=run_id, approver=who)
            other_run = replace(statement, run_id=str(uuid.uuid4()))
            stale = sign(keys[who], other_run.message(), NAMESPACE)
            refused = await update(handle, {"stage": "deploy", "approver": who, "run_id": other_run.run_id,
                                            "signature": stale})
            assert not refused["accepted"]
            assert refused["reason"].startswith(f"the signature is for run {handle.id}/{other_run.run_id}, not this run")
            good = sign(keys[who], statement.message(), NAMESPACE)
            proven = await update(handle, {"stage": "deploy", "approver": who, "signature": good})
            assert proven == {"accepted": True, "principal": who, "key": keys[who].fingerprint}
            verdicts = await asyncio.wait_for(handle.result(), 30)
            assert [v["accepted"] for v in verdicts] == [False, True]
    late = [str(w.message) for w in recwarn if "imported after initial workflow load" in str(w.message)]
    assert not late, late
