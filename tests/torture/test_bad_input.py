"""Case 4: the bad-input corpus. Each case names the message a user must see; every one must be a
single line without a traceback, apply nothing, and leave the catalog and `_prisma_migrations`
exactly as they were (a full dump compared before and after).

Entry points are the real ones: `starter.py deploy` (folders, environments, DSNs), signals as the
Temporal UI sends them and updates as `starter.py approve` sends them (approval payloads)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import asyncpg
import pytest

from domain.models import MAX_BUNDLE_BYTES, Outcome
from tests.conftest import PG_TEST_PASSWORD
from tests.helpers import approval, catalog_dump, migration
from tests.torture import report, scenario
from tests.torture.harness import (
    ARTIFACTS,
    assert_clean,
    astarter,
    env_config,
    make_request,
    new_env_name,
    run_result,
    start_run,
    wait_status,
    write_folder,
)

pytestmark = pytest.mark.torture

GOOD = scenario.bundle()[:1]  # m1, applied before every case: the ledger exists and has a row
NEW = "20240105000000_next"


async def dump(url: str) -> dict:
    conn = await asyncpg.connect(url)
    try:
        return await catalog_dump(conn)
    finally:
        await conn.close()


def _folder(root: Path, extra: dict[str, dict[str, bytes]], *, lock: bytes | None = None) -> Path:
    """GOOD plus `extra` migration folders ({name: {file: bytes}})."""
    if root.exists():
        shutil.rmtree(root)
    write_folder(root, GOOD)
    if lock is not None:
        (root / "migration_lock.toml").write_bytes(lock)
    for name, files in extra.items():
        (root / name).mkdir()
        for file, data in files.items():
            (root / name / file).write_bytes(data)
    return root


OK_SQL = b"CREATE TABLE next_t (id int);\n"
# name -> (folder content, expected message substring). Rejected by the CLI before any run starts.
CLI_FOLDER_CASES = {
    "non-UTF-8 migration.sql": ({NEW: {"migration.sql": b"CREATE TABLE caf\xe9 (id int);\n"}}, "is not valid UTF-8"),
    "non-UTF-8 down.sql": ({NEW: {"migration.sql": OK_SQL, "down.sql": b"DROP TABLE \xff;\n"}}, "is not valid UTF-8"),
    "non-UTF-8 verify.sql": ({NEW: {"migration.sql": OK_SQL, "verify.sql": b"SELECT '\xc3';\n"}}, "is not valid UTF-8"),
    "lock file for another provider": ({}, "P3019"),
    "bundle over the payload limit": (
        {NEW: {"migration.sql": b"INSERT INTO t VALUES ('" + b"x" * (MAX_BUNDLE_BYTES + 1000) + b"');\n"}},
        "more than one Temporal payload holds"),
    # PostgreSQL rejects a BOM ("syntax error at or near \ufeffCREATE"): say what it is.
    "UTF-8 BOM": ({NEW: {"migration.sql": b"\xef\xbb\xbf" + OK_SQL}}, "byte order mark"),
    # Two folders on Linux, one on macOS/Windows checkouts: the history would differ by machine.
    "names differing only in case": (
        {NEW: {"migration.sql": OK_SQL}, NEW.upper(): {"migration.sql": b"CREATE TABLE other_t (id int);\n"}},
        "differ only in case"),
}
# Accepted by the CLI, stopped by the run's preflight before any change (outcome != succeeded).
RUN_FOLDER_CASES = {
    # Prisma's deploy would apply what comes before it and stop there (P3015): the run refuses first.
    "no migration.sql": ({NEW: {"down.sql": b"SELECT 1;\n"}}, "has no migration.sql: Prisma's deploy would apply"),
    "unparseable SQL": ({NEW: {"migration.sql": b"CREATE TABEL next_t (id int);\n"}}, "does not parse at line 1"),
    "applied migration edited": ({}, "was modified after it was applied"),
}


@pytest.fixture
async def corpus_db(pg_server, tclient, workers):
    """A database where m1 is applied (by a real run), and a worker knowing `ok` plus broken DSNs."""
    name = await pg_server.create_database("bad")
    url = pg_server.url(name)
    env = new_env_name("bad")
    wrong = pg_server.url(name).replace(PG_TEST_PASSWORD, "not-the-password-9f3a")
    port = pg_server.url(name).split("@127.0.0.1:")[1].split("/")[0]
    dsns = {
        "wrong password": (wrong, "authentication failed for user postgres"),
        "wrong host": (url.replace("127.0.0.1", "db.does-not-exist.invalid"), "cannot resolve database host"),
        "wrong database": (pg_server.url("no_such_db_x"), "database no_such_db_x does not exist"),
        "wrong port": (url.replace(f":{port}/", ":1/"), "cannot reach the database server at 127.0.0.1:1"),
    }
    envs = {env: env_config(url)}
    envs.update({f"{env}-{k.replace(' ', '-')}": env_config(v[0]) for k, v in dsns.items()})
    worker = workers(envs)
    handle = await start_run(tclient, make_request(env, GOOD), worker.env["MIGRATOR_TASK_QUEUE"])
    assert (await run_result(handle)).outcome == Outcome.succeeded
    yield name, url, env, worker, dsns
    await pg_server.drop_database(name)


def _one_line_error(rc: int, out: str, err: str, expected_rc: int) -> str:
    text = (out + err).strip()
    assert rc == expected_rc, f"exit {rc}, expected {expected_rc}: {text[-500:]}"
    assert "Traceback" not in text, text[-1500:]
    return text


async def test_bad_folders_and_environments(corpus_db, temporal_server, pg_server) -> None:
    db, url, env, worker, dsns = corpus_db
    cli_env = {"MIGRATOR_TEMPORAL_ADDRESS": temporal_server.address,
               "MIGRATOR_TASK_QUEUE": worker.env["MIGRATOR_TASK_QUEUE"]}
    before = await dump(url)
    failures: list[str] = []
    root = ARTIFACTS / "bad-input" / env

    async def deploy(case: str, folder: Path, target: str, *, wait: bool) -> tuple[int, str, str]:
        args = ["deploy", "--env", target, "--migrations-dir", str(folder), "--requested-by", "carol"]
        return await astarter(cli_env, *(args + ["--wait"] if wait else args), timeout=180)

    async def check(case: str, coro, expected: str, rc: int, category: str, *, same_db: bool = True) -> None:
        with report.Trial(f"bad input: {category}"):
            try:
                code, out, err = await coro
                text = _one_line_error(code, out, err, rc)
                line = next((ln for ln in text.splitlines() if expected in ln), None)
                assert line is not None, f"expected {expected!r} in: {text[-600:]}"
                assert PG_TEST_PASSWORD not in text and "not-the-password-9f3a" not in text, "a password leaked"
                if rc == 3:  # refused by the CLI: one line on stderr, nothing else
                    assert err.strip().count("\n") == 0 and err.startswith("error: "), err
                if same_db:  # other targets are checked once all cases are done
                    assert await dump(url) == before, "the database changed"
            except AssertionError as exc:
                failures.append(f"{case}: {str(exc).splitlines()[0][:300]}")
                raise

    jobs = []
    for case, (extra, expected) in CLI_FOLDER_CASES.items():
        lock = b'provider = "mysql"\n' if case == "lock file for another provider" else None
        folder = _folder(root / case.replace(" ", "-"), extra, lock=lock)
        jobs.append(check(case, deploy(case, folder, env, wait=False), expected, 3, "folders (CLI)"))

    async def run_cases_in_turn() -> None:  # one open run per environment: these share `env`
        for case, (extra, expected) in RUN_FOLDER_CASES.items():
            folder = _folder(root / case.replace(" ", "-"), extra)
            if case == "applied migration edited":
                (folder / GOOD[0].name / "migration.sql").write_text(GOOD[0].sql + "-- edited\n")
            try:
                await check(case, deploy(case, folder, env, wait=True), expected, 1, "folders (run)")
            except AssertionError:
                continue
        # Prisma reads a missing folder as empty: nothing to apply (the applied ones are phantoms now),
        # said in a warning; the run changes nothing.
        with contextlib.suppress(AssertionError):
            await check("missing folder", deploy("missing folder", root / "nope", env, wait=True),
                        "does not exist; Prisma reads it as an empty folder", 0, "folders (run)")

    jobs.append(run_cases_in_turn())
    jobs.append(check("unknown environment", deploy("unknown environment", _folder(root / "unknown-env", {}),
                                                    "nosuchenv", wait=True),
                      "unknown environment 'nosuchenv'", 1, "unknown environment", same_db=False))
    for case, (_, expected) in dsns.items():
        target = f"{env}-{case.replace(' ', '-')}"
        folder = _folder(root / f"dsn-{case.replace(' ', '-')}", {NEW: {"migration.sql": OK_SQL}})
        jobs.append(check(f"DSN {case}", deploy(case, folder, target, wait=True), expected, 1, "database URLs",
                          same_db=False))
    await asyncio.gather(*jobs, return_exceptions=True)
    assert await dump(url) == before, "the database changed"
    assert not failures, f"{len(failures)} case(s) failed:\n" + "\n".join(failures)
    await assert_clean(pg_server.admin_url, db)


async def test_duplicate_names_in_a_bundle_stop_before_any_change(corpus_db, tclient) -> None:
    """A bundle built by hand (API, UI) can repeat a name a folder cannot: refused by preflight."""
    db, url, env, worker, _ = corpus_db
    before = await dump(url)
    with report.Trial("bad input: duplicate names in a bundle"):
        twice = [*GOOD, migration(NEW, "CREATE TABLE d1 (id int);\n"), migration(NEW, "CREATE TABLE d2 (id int);\n")]
        handle = await start_run(tclient, make_request(env, twice), worker.env["MIGRATOR_TASK_QUEUE"])
        final = await run_result(handle)
        assert final.outcome != Outcome.succeeded and "more than once" in (final.error or ""), (final.outcome, final.error)
        assert await dump(url) == before


# payload -> expected refusal; sent while the run waits at its deploy gate.
def approval_cases(fingerprint: str) -> dict[str, tuple[object, str]]:
    return {
        "not a JSON object": ("yes", "the payload must be a JSON object"),
        "empty object": ({}, "'stage' is missing"),
        "missing stage": ({"approver": "alice", "fingerprint": fingerprint}, "'stage' is missing"),
        "missing approver": ({"stage": "deploy", "fingerprint": fingerprint}, "'approver' is missing"),
        "stage of the wrong type": ({"stage": 1, "approver": "alice"}, "'stage' is missing or not a text"),
        "approver of the wrong type": ({"stage": "deploy", "approver": ["alice"]}, "'approver' is missing or not a text"),
        "fingerprint of the wrong type": ({"stage": "deploy", "approver": "alice", "fingerprint": 12},
                                          "'fingerprint' must be a text"),
        "unknown stage": (approval("deploy-all", "alice"), "unknown stage 'deploy-all'"),
        "wrong stage": (approval("resolve", "alice"), "this run has no 'resolve' gate"),
        "stale fingerprint": (approval("deploy", "alice", "0" * 64), "does not match this run's plan"),
        "unknown approver": (approval("deploy", "mallory", fingerprint), "mallory is not an approver"),
        "self-approval in prod": (approval("deploy", "carol", fingerprint), "carol requested this run and may not approve it"),
    }


async def test_malformed_approvals_are_refused_recorded_and_change_nothing(pg_server, tclient, workers,
                                                                           temporal_server) -> None:
    name = await pg_server.create_database("appr")
    url = pg_server.url(name)
    env = new_env_name("prod")
    worker = workers({env: env_config(url, gates=["deploy"], approvers=["alice", "bob", "carol"],
                                      allow_self_approval=False)})
    before = await dump(url)
    handle = await start_run(tclient, make_request(env, scenario.bundle(), requested_by="carol"),
                             worker.env["MIGRATOR_TASK_QUEUE"])
    st = await wait_status(handle, lambda s: s.awaiting == "deploy", 60, "the deploy gate")
    cases = approval_cases(st.plan.fingerprint)
    failures = []
    sent = 0
    for via in ("signal", "update"):
        for case, (payload, expected) in cases.items():
            if via == "update" and not isinstance(payload, dict):
                continue  # the CLI only ever sends objects
            with report.Trial(f"bad input: approval payloads ({via})"):
                try:
                    sent += 1
                    if via == "signal":
                        await handle.signal("approve", payload)
                    else:
                        from temporalio.client import WorkflowUpdateFailedError

                        with pytest.raises(WorkflowUpdateFailedError) as refused:
                            await handle.execute_update("approve_update", payload)
                        assert expected in refused.value.cause.message, refused.value.cause.message
                    # (the status lists the latest refused attempts; every one is counted, and all are in history)
                    st = await wait_status(handle, lambda s: len(s.approvals) + s.refused_not_kept == sent, 10,
                                           "the attempt to be recorded")
                    last = st.approvals[-1]
                    assert not last.accepted and expected in (last.refusal or ""), (case, last)
                    assert "\n" not in last.refusal
                    assert st.awaiting == "deploy" and st.gates_passed == []
                except AssertionError as exc:
                    failures.append(f"{via} {case}: {str(exc).splitlines()[0][:300]}")
    # The CLI path: one line, exit 1.
    with report.Trial("bad input: approval payloads (CLI)"):
        cli_env = {"MIGRATOR_TEMPORAL_ADDRESS": temporal_server.address}
        rc, out, err = await astarter(cli_env, "approve", env, "--stage", "deploy", "--by", "mallory")
        _one_line_error(rc, out, err, 1)
        assert err.strip() == "error: refused: mallory is not an approver for " + env + " (allowed: alice, bob, carol)", err
    assert await dump(url) == before
    await handle.signal("reject", approval("deploy", "alice", comment="corpus done"))
    final = await run_result(handle)
    assert final.outcome == Outcome.rejected
    assert await dump(url) == before
    assert not failures, f"{len(failures)} case(s) failed:\n" + "\n".join(failures)
    await pg_server.drop_database(name)



async def test_empty_migration_is_applied_like_prisma_does(corpus_db, tclient) -> None:
    """Not an error: Prisma records an empty (or comment-only) migration as applied, so a folder
    Prisma deploys must deploy here too (it crashed on asyncpg's empty-query answer before)."""
    db, url, env, worker, _ = corpus_db
    with report.Trial("bad input: empty migration.sql (Prisma parity)"):
        migs = [*GOOD, migration("20240106000000_empty", ""), migration("20240107000000_comment", "-- nothing yet\n")]
        handle = await start_run(tclient, make_request(env, migs), worker.env["MIGRATOR_TASK_QUEUE"])
        final = await run_result(handle)
        assert final.outcome == Outcome.succeeded, final.error
        rows = await asyncpg_rows(url)
        assert [(r["migration_name"], r["logs"], r["applied_steps_count"]) for r in rows[1:]] == [
            ("20240106000000_empty", None, 1), ("20240107000000_comment", None, 1)]
        from tests.torture.test_crash import oracle_ready
        if oracle_ready():
            from tests.oracle import prisma

            folder = write_folder(ARTIFACTS / "bad-input" / env / "empty" / "migrations", migs)
            res = prisma(url, folder, "status")
            assert res.returncode == 0 and "up to date" in res.stdout, res.stdout + res.stderr


async def asyncpg_rows(url: str) -> list:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch("SELECT * FROM _prisma_migrations ORDER BY started_at, id")
    finally:
        await conn.close()
