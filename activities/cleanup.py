"""The cleanup activity (type name `drop_shadow`): when a run ends, drop its shadow database.

Every replay drops the run's shadow when it ends, also when cancelled; what this catches is a
worker killed (kill -9, OOM, lost host) in the middle of a replay whose activity is then never
tried again (its retries exhausted, or the run moved on), or a replay whose own drop failed. The
name comes from the run (activities/schema_facts.py run_key), so this drops exactly that run's
shadow, if it is there.

`shadow_left` is how preflight and verify tell the workflow that it can skip this: at the end of a
first attempt (no earlier attempt can have been cut off mid-replay), the run's shadow database
is not on the server.
"""

from __future__ import annotations

import asyncpg
from temporalio import activity

from activities.schema_facts import run_key
from activities.shadow import ShadowError, drop_shadow, shadow_database_name
from activities.target import TargetDatabases


async def shadow_left(conn: asyncpg.Connection, environment: str) -> bool:
    """Whether this run's shadow database may still exist, from the current activity on `conn` (a
    session on the environment's server): yes after a retried attempt (the one before may have
    been killed mid-replay, and its session may still be creating it), else if it is there."""
    if activity.info().attempt > 1:
        return True
    return bool(await conn.fetchval("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)",
                                    shadow_database_name(run_key(environment))))


class CleanupActivities:
    def __init__(self, targets: TargetDatabases) -> None:
        self.targets = targets

    @activity.defn(name="drop_shadow")
    async def drop_shadow(self, environment: str) -> str | None:
        """Drop this run's shadow database if it exists; a sentence when it could not be dropped."""
        env = self.targets.environment(environment)
        if env.drift_proof == "never":
            return None
        try:
            await drop_shadow(env.database_url.get_secret_value(), run_key(environment))
        except ShadowError as exc:
            return self.targets.scrub(str(exc))
        return None
