"""Digests that bind an approval to what was reviewed: the ledger as others left it, and the plan.

An approval given for one fingerprint cannot approve a different plan, and resolve / deploy refuse
to act when the ledger they find under Prisma's lock no longer has the digest the plan was made from.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from domain.models import DeployPlan, DeployRequest, RunMarks
from domain.prisma.diagnosis import HistoryDiagnosis
from domain.prisma.ledger import LedgerRow


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def ledger_digest(rows: Iterable[LedgerRow], marks: RunMarks | None = None) -> str:
    """A hash of the ledger as others left it: rows this run wrote are left out, and failed rows
    this run's resolve marked rolled back count as they were before. Equal digests before and after
    a stage mean nobody else touched `_prisma_migrations` in between."""
    own = marks.own_ids() if marks else set()
    resolve_at = marks.resolve_at if marks else None
    items = []
    for r in rows:
        if r.id in own:
            continue
        rolled = None if (resolve_at is not None and r.rolled_back_at == resolve_at) else r.rolled_back_at
        items.append(
            [r.id, r.migration_name, r.checksum, _iso(r.started_at), _iso(r.finished_at), _iso(rolled),
             r.applied_steps_count, r.logs]
        )
    items.sort(key=lambda item: item[0])
    return _sha256(items)


def plan_fingerprint(plan: DeployPlan, request: DeployRequest) -> str:
    return _sha256(
        {
            "environment": plan.environment,
            "operation": str(plan.operation),
            "bundle": [[m.name, m.checksum] for m in request.bundle.migrations],
            "ledger": plan.ledger_digest,
            "actions": [[m.name, str(m.action)] for m in plan.migrations],
            # What runs without a backup is part of what is approved (only when there is any, so
            # every other plan keeps the fingerprint it always had).
            **({"no_backup": sorted(plan.no_backup)} if plan.no_backup else {}),
        }
    )


def state_fingerprint(plan: DeployPlan, request: DeployRequest, diagnosis: HistoryDiagnosis) -> str:
    """The plan's identity across databases: the bundle's checksums, the ledger's (name, checksum,
    state) per migration, and everything the plan decided from them (actions, how each runs and is
    undone, risk, approvals needed, blockers, the drift verdict). No environment name, row id or
    timestamp: two databases with equal state fingerprints get the same plan, so one approval of
    it covers both (a rollout's groups, domain/rollout.py). Anything that could make a reviewer
    judge them differently is in the hash, so they land in different groups."""
    return _sha256(
        {
            "operation": str(plan.operation),
            "bundle": [[m.name, m.checksum] for m in request.bundle.migrations],
            "ledger_table": diagnosis.table_exists,
            "ledger": sorted([m.name, m.checksum_db, str(m.state)] for m in diagnosis.migrations
                             if m.checksum_db is not None or m.attempts),
            "actions": [
                [m.name, str(m.action), m.in_transaction, str(m.rollback) if m.rollback else None, str(m.risk),
                 sorted(f.code for f in m.findings)]
                for m in plan.migrations
            ],
            "risk": str(plan.risk),
            "required_approvals": plan.required_approvals,
            "blockers": sorted([str(b.code), b.migration or ""] for b in plan.blockers),
            # The verdict and every difference shown (by digest): other drift, another review.
            "drift": [str(plan.drift.verdict), sorted(plan.drift.accepted)] if plan.drift else None,
            **({"no_backup": sorted(plan.no_backup)} if plan.no_backup else {}),
        }
    )
