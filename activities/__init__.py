"""All I/O of a run: one module per stage (preflight, resolve, apply, verify, compensate), each an
activity class holding the shared `TargetDatabases` resource (target.py), plus what they share: the
Prisma-exact ledger (ledger.py), connections (db.py), failure classification (failures.py),
background heartbeats (heartbeat.py), and the schema's: the live model (catalog.py), the run's
shadow replay (shadow.py), the comparisons preflight and verify make with them (schema_facts.py)
and the end-of-run drop of the shadow (cleanup.py)."""
