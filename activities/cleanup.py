"""The cleanup activity (type name `drop_shadow`): when a run ends, drop its shadow database.

Every replay drops the run's shadow when it ends, also when cancelled; what this catches is a
worker killed (kill -9, OOM, lost host) in the middle of a replay whose activity is then never
tried again (its retries exhausted, or the run moved on). The name comes from the run
(activities/schema_facts.py run_key), so this drops exactly that run's shadow, if it is there.
"""

from __future__ import annotations

from temporalio import activity

from activities.schema_facts import run_key
from activities.shadow import ShadowError, drop_shadow
from activities.target import TargetDatabases


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
