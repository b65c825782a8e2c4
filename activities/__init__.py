"""All I/O of a run: one module per stage (preflight, resolve, apply, verify, compensate), each an
activity class holding the shared `TargetDatabases` resource (target.py), plus what they share: the
Prisma-exact ledger (ledger.py), connections (db.py), failure classification (failures.py),
background heartbeats (heartbeat.py), and the evidence and drift-proof readers."""
