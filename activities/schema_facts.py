"""The schema facts of a run, from its shadow replay: compared inside the activity, so what crosses
into workflow history is differences and verdicts, never whole models (documenso's is ~266 KB).

- `replay_for_run` then `preflight_schema_facts`: one replay of the run's sequence
  (domain.schema.replay), read at every prefix the plan needs (run beside preflight's other reads);
  then the live model compared with the applied prefix (drift) and, around each failed migration,
  with the models before and after it (its effects).
- `schema_checks`: after deploy, the live model against the replay of the whole folder in the order
  the plan expected (history's drops and renames included), with the drift the approved plan
  showed accepted by digest.

The shadow database is named from the run (`run_key`: workflow id, run id, environment), so every attempt
of every activity of one run uses the same name, and a killed attempt's shadow is dropped by the
next; the workflow also drops it when the run ends (activities/cleanup.py).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

import asyncpg
from pydantic import BaseModel
from temporalio import activity

from activities.catalog import read_live_roles, read_schema_model
from activities.shadow import ExpectedSchemas, ShadowError, expected_schemas, server_identity
from domain.drift import split_after_deploy
from domain.facts import SchemaFacts, SchemaState
from domain.models import BundledMigration, VerifyCheck
from domain.prisma.diagnosis import HistoryDiagnosis
from domain.schema import RoleMap, SchemaModel, compare, default_role_map, migration_effects
from domain.schema.evidence import effects_of_unreplayable
from domain.schema.replay import ReplaySequence, replay_sequence

SCHEMA_CHECK = "schema equals the migrations folder"
ACCEPTED_CHECK = "drift accepted with the plan"
_SHOWN = 20  # differences a failed check names in its detail


def run_key(environment: str) -> str:
    """The same for every attempt of every activity of one workflow run on one database, different
    for any other (a rollout plans many databases in one activity: each gets its own shadow)."""
    info = activity.info()
    return f"{info.workflow_id}/{info.workflow_run_id}/{environment}"


class RunReplay(BaseModel):
    """The run's replay, before it is compared with the live schema: the sequence, and its models
    or why there are none (the shadow database could not be used)."""

    sequence: ReplaySequence
    replay: ExpectedSchemas | None = None
    unavailable: str | None = None


async def replay_for_run(
    dsn: str,
    bundle: Sequence[BundledMigration],
    diagnosis: HistoryDiagnosis,
    *,
    key: str,
    statement_timeout: float | str | None = None,
    on_progress: Callable[[int, int, str], None] | None = None,
    server: str | None = None,
) -> RunReplay:
    """Replay the run's sequence once, reading the model at every prefix the plan needs. Uses its
    own connections only (none when every model is cached and `server`, the caller's
    server_identity, is given), so preflight runs it beside its other reads."""
    by_name = {m.name: m for m in bundle}
    sequence = replay_sequence(diagnosis, by_name)
    try:
        replay = await expected_schemas(dsn, [by_name[n] for n in sequence.names], sequence.prefixes(), run_key=key,
                                        statement_timeout=statement_timeout, on_progress=on_progress,
                                        keep_template=True, server=server)
    except ShadowError as exc:
        return RunReplay(sequence=sequence, unavailable=str(exc))
    return RunReplay(sequence=sequence, replay=replay)


ConfiguredRoles = Mapping[str, str | Sequence[str]]


async def run_role_map(conn: asyncpg.Connection, replay: ExpectedSchemas, configured: ConfiguredRoles) -> RoleMap:
    """Which live roles the shadow's roles stand for (domain/schema/roles.py), from the live
    session, the owner of its ledger and the environment's `role_map` setting."""
    return default_role_map(replay.shadow_role, await read_live_roles(conn), configured)


async def preflight_schema_facts(conn: asyncpg.Connection, run: RunReplay, *,
                                 single_creators: Collection[str] = (),
                                 role_map: ConfiguredRoles | None = None,
                                 live: SchemaModel | None = None) -> SchemaFacts:
    """The replay compared with the live schema (read-only on `conn`): drift, the effects of failed
    migrations. `single_creators`: migrations whose only statement creates an object (a failed one
    that fails in the shadow too is judged from the whole schema, effects_of_unreplayable).
    `role_map`: the environment's setting of that name. `live`: the live model when the caller
    read it already (preflight reads it while the replay runs), else it is read here."""
    sequence, replay = run.sequence, run.replay
    if replay is None:
        return SchemaFacts(state=SchemaState.unavailable, reason=run.unavailable, sequence=sequence)
    if live is None:
        live = await read_schema_model(conn)
    roles = await run_role_map(conn, replay, role_map or {})
    models = replay.models
    effects = {}
    for name, at in sequence.failed.items():
        if at - 1 in models and at in models:
            effects[name] = migration_effects(models[at - 1], models[at], live, roles=roles)
        elif (at - 1 in models and replay.failure is not None and replay.failure.migration == name
              and name in single_creators):
            found = effects_of_unreplayable(models[at - 1], live, roles=roles)  # it fails in the shadow too
            if found is not None:
                effects[name] = found
    return SchemaFacts(
        state=SchemaState.compared,
        shadow_database=replay.shadow_database,
        sequence=sequence,
        failure=replay.failure,
        drift=compare(models[sequence.applied], live, roles=roles) if sequence.applied in models else None,
        effects=effects,
        roles=roles,
        replayed=replay.replayed,
        seconds=replay.seconds,
    )


async def schema_checks(
    dsn: str,
    conn: asyncpg.Connection,
    migrations: Sequence[BundledMigration],
    sequence: Sequence[str],
    *,
    key: str,
    accepted: Sequence[str],
    accepted_moved: Sequence[str] = (),
    statement_timeout: float | str | None = None,
    role_map: ConfiguredRoles | None = None,
) -> list[VerifyCheck]:
    """The live schema against the replay of `sequence` (the plan's expected order of the whole
    folder: the applied history, then what the run brought in). Differences whose digest the
    approved plan showed are accepted; any other fails the check. Roles are mapped as in
    preflight (the same live roles: the ledger keeps its owner through a deploy)."""
    by_name = {m.name: m for m in migrations}
    n = len(sequence)
    replay = await expected_schemas(dsn, [by_name[name] for name in sequence], [n], run_key=key,
                                    statement_timeout=statement_timeout, keep_template=True,
                                    server=await server_identity(conn, dsn))
    if replay.failure is not None:
        return [VerifyCheck(check=SCHEMA_CHECK, passed=False, migration=replay.failure.migration,
                            detail=f"the expected schema could not be built: {replay.failure.sentence}")]
    live = await read_schema_model(conn)
    roles = await run_role_map(conn, replay, role_map or {})
    after = split_after_deploy(compare(replay.after(n), live, roles=roles), accepted, accepted_moved)
    seen, new = after.as_shown + after.moved, after.new
    checks = []
    if seen:
        moved = f" ({len(after.moved)} under a relation renamed since)" if after.moved else ""
        checks.append(VerifyCheck(
            check=ACCEPTED_CHECK, passed=True,
            detail=f"{len(seen)} difference(s) the approved plan showed, still as shown{moved}: "
            + "; ".join(d.sentence for d in seen[:_SHOWN]) + (" ..." if len(seen) > _SHOWN else ""),
        ))
    if new:
        checks.append(VerifyCheck(
            check=SCHEMA_CHECK, passed=False,
            detail=f"{len(new)} object(s) differ from the replay of the {n} migration(s) of the folder: "
            + "; ".join(d.sentence for d in new[:_SHOWN]) + (f"; and {len(new) - _SHOWN} more" if len(new) > _SHOWN else ""),
        ))
    else:
        checks.append(VerifyCheck(
            check=SCHEMA_CHECK, passed=True,
            detail=f"the live schema equals the replay of the {n} migration(s) of the folder"
            + (" apart from the accepted drift" if seen else ""),
        ))
    return checks
