"""A rollout's decisions, pure: waves, failure thresholds, plan groups and the gate before a wave.

- Waves split a fleet's databases in order: `N` (the next N), `P%` (up to P % of the fleet in
  total), `group:NAME` (a named group from the worker's settings), `rest`. Databases the spec
  leaves out form a last wave, so none is skipped silently. An environment stage is one wave.
- A threshold (`max_failures`) is a number of databases or a percentage of the wave; more failures
  than that in a wave halt the rollout: no further database is started.
- Plan groups: databases whose plans have one state fingerprint (domain/fingerprint.py) under one
  approval policy. A group is approved once, under that policy, for all its databases.
- The gate before a wave asks for the approvals of every group in the wave not approved yet; when
  every group was approved earlier, a wave after the first asks for one `wave` approval (the
  previous waves' results are shown with it). Nothing is asked where the policy has no gates.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from datetime import datetime

from domain.models import ApprovalPolicy, DeployPlan, PreflightResult
from domain.rollout_models import ControlPayload, ControlRecord, PlanGroup, PlannedGroup, RolloutGate, WaveState
from domain.stages import run_stages


class RolloutSpecError(ValueError):
    """A rollout request that cannot be carried out as written (one sentence)."""


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


# -- waves -----------------------------------------------------------------------------------


def _percent(token: str) -> float:
    try:
        value = float(token[:-1])
    except ValueError:
        raise RolloutSpecError(f"wave '{token}' is not a percentage like 25%") from None
    if not 0 < value <= 100:
        raise RolloutSpecError(f"wave '{token}' must be more than 0% and at most 100%")
    return value


def check_waves(spec: Sequence[str], groups: Iterable[str] | None = None) -> None:
    """Refuse a wave spec that cannot be read (before anything starts)."""
    if not spec:
        raise RolloutSpecError("no waves given: e.g. 1,25%,100%")
    known = None if groups is None else set(groups)
    for token in spec:
        token = token.strip()
        if token == "rest":
            continue
        if token.endswith("%"):
            _percent(token)
        elif token.startswith("group:"):
            name = token.removeprefix("group:")
            if not name:
                raise RolloutSpecError("wave 'group:' names no group")
            if known is not None and name not in known:
                raise RolloutSpecError(
                    f"wave '{token}': the fleet has no group '{name}' (groups: {', '.join(sorted(known)) or 'none'})")
        elif token.isdigit() and int(token) >= 1:
            continue
        else:
            raise RolloutSpecError(f"wave '{token}' is not a count (1), a percentage (25%), group:NAME or rest")


def split_waves(targets: Sequence[str], spec: Sequence[str], groups: dict[str, list[str]] | None = None
                ) -> list[tuple[str, list[str]]]:
    """(label, targets) per wave, in order; empty waves dropped; leftovers in a last 'rest' wave."""
    groups = groups or {}
    check_waves(spec, groups)
    remaining = list(targets)
    total = len(targets)
    assigned = 0
    waves: list[tuple[str, list[str]]] = []
    for position, raw in enumerate(spec):
        token = raw.strip()
        if token == "rest":
            take = list(remaining)
        elif token.endswith("%"):
            upto = min(total, math.ceil(total * _percent(token) / 100))
            take = remaining[: max(0, upto - assigned)]
        elif token.startswith("group:"):
            members = set(groups.get(token.removeprefix("group:"), []))
            take = [t for t in remaining if t in members]
        else:
            take = remaining[: int(token)]
        if not take:
            continue
        chosen = set(take)
        remaining = [t for t in remaining if t not in chosen]
        assigned += len(take)
        label = "canary" if position == 0 and token == "1" else token
        waves.append((label, take))
    if remaining:
        waves.append(("rest", remaining))
    return waves


# -- thresholds ------------------------------------------------------------------------------


def allowed_failures(max_failures: str, wave_size: int) -> int:
    """How many failed databases a wave of `wave_size` tolerates."""
    text = (max_failures or "0").strip()
    if text.endswith("%"):
        try:
            percent = float(text[:-1])
        except ValueError:
            raise RolloutSpecError(f"max failures '{text}' is not a number or a percentage like 10%") from None
        if not 0 <= percent <= 100:
            raise RolloutSpecError(f"max failures '{text}' must be between 0% and 100%")
        return math.floor(wave_size * percent / 100)
    if not text.isdigit():
        raise RolloutSpecError(f"max failures '{text}' is not a number or a percentage like 10%")
    return int(text)


def threshold_passed(wave: WaveState, max_failures: str) -> bool:
    return len(wave.failures()) > allowed_failures(max_failures, len(wave.targets))


# -- plan groups -----------------------------------------------------------------------------


def policy_digest(policy: ApprovalPolicy) -> str:
    return _sha256(policy.model_dump(mode="json"))


def group_key(state_fingerprint: str, policy: ApprovalPolicy) -> str:
    """One key per (plan state, approval policy): equal plans under different rules are approved apart."""
    return f"{state_fingerprint[:16]}.{policy_digest(policy)[:8]}"


def plan_gates(plan: DeployPlan, policy: ApprovalPolicy) -> list[str]:
    """The gates every run with this plan will wait at (as DeployWorkflow computes them)."""
    if plan.blockers:
        return []
    return [str(s) for s in run_stages(plan) if s in policy.gates]


def group_plans(planned: Iterable[tuple[str, PreflightResult]]) -> list[PlannedGroup]:
    """Preflight results of several databases, grouped by state and policy, in first-seen order."""
    groups: dict[str, PlannedGroup] = {}
    for target, result in planned:
        key = group_key(result.plan.state_fingerprint, result.policy)
        if key in groups:
            groups[key].members.append(target)
        else:
            groups[key] = PlannedGroup(key=key, state_fingerprint=result.plan.state_fingerprint, plan=result.plan,
                                       policy=result.policy, members=[target])
    return list(groups.values())


def review_plan(plan: DeployPlan) -> DeployPlan:
    """The plan as a rollout keeps it for its gates and audit: actions, reasons, risk and blockers,
    without the review detail (findings, evidence, rollback SQL, drift) its planning activity's
    result already holds in history. Keeps what the rollout carries across continue-as-new small."""
    return plan.model_copy(update={
        "migrations": [m.model_copy(update={"findings": [], "evidence": [], "rollback_sql": None, "creates": []})
                       for m in plan.migrations],
        "drift": None,
    })


def _group(groups: dict[str, PlanGroup], key: str, state_fingerprint: str, plan: DeployPlan,
           policy: ApprovalPolicy) -> PlanGroup:
    group = groups.get(key)
    if group is None:  # an existing group keeps its approvals
        group = groups[key] = PlanGroup(key=key, state_fingerprint=state_fingerprint, plan=review_plan(plan),
                                        policy=policy, gates=plan_gates(plan, policy))
    return group


def absorb(groups: dict[str, PlanGroup], planned: Iterable[PlannedGroup]) -> dict[str, str]:
    """Add newly planned groups to the rollout's; returns target -> group key."""
    membership: dict[str, str] = {}
    for pg in planned:
        _group(groups, pg.key, pg.state_fingerprint, pg.plan, pg.policy).members += len(pg.members)
        for target in pg.members:
            membership[target] = pg.key
    return membership


def absorb_run(groups: dict[str, PlanGroup], plan: DeployPlan, policy: ApprovalPolicy) -> str:
    """The group of a database its own run planned (a stage without gates is not pre-planned)."""
    key = group_key(plan.state_fingerprint, policy)
    _group(groups, key, plan.state_fingerprint, plan, policy).members += 1
    return key


def wave_groups(wave: WaveState, membership: dict[str, str]) -> list[str]:
    seen: list[str] = []
    for target in wave.targets:
        key = membership.get(target)
        if key is not None and key not in seen:
            seen.append(key)
    return seen


def gate_for(wave: WaveState, keys: Sequence[str], groups: dict[str, PlanGroup], first: bool) -> RolloutGate | None:
    """What the rollout must wait for before starting `wave` (None: start at once)."""
    live = [groups[k] for k in keys if not groups[k].blocked and groups[k].gates]
    if not live:
        return None
    new = [g.key for g in live if not g.approved]
    if new:
        return RolloutGate(wave=wave.number, groups=new)
    if first:
        return None
    approvers: set[str] | None = None
    for g in live:  # a wave approval must satisfy every policy in the wave
        if g.policy.approvers:
            approvers = set(g.policy.approvers) if approvers is None else approvers & set(g.policy.approvers)
    return RolloutGate(
        wave=wave.number,
        wave_approval=True,
        approvals_needed=max(g.policy.required_approvals for g in live),
        approvers=sorted(approvers) if approvers is not None else [],
        allow_self_approval=all(g.policy.allow_self_approval for g in live),
    )


def gate_timeout_policy(gate: RolloutGate, groups: dict[str, PlanGroup], wave_keys: Sequence[str]) -> ApprovalPolicy:
    """The policy whose approval timeout bounds the gate: the shortest among the groups concerned."""
    keys = gate.groups or [k for k in wave_keys if groups[k].gates]
    return min((groups[k].policy for k in keys), key=lambda p: p.approval_timeout)


def wave_fingerprint(wave: WaveState, earlier: Sequence[WaveState]) -> str:
    """What a `wave` approval names: this wave's databases and every result before it."""
    return _sha256({
        "wave": wave.number,
        "stage": wave.stage,
        "targets": wave.targets,
        "before": sorted([r.target, r.outcome, r.run_id] for w in earlier for r in w.results.values()),
    })


# -- pause, resume, cancel -------------------------------------------------------------------


def check_control(payload: Any, action: str, *, at: datetime, paused: bool, cancelling: bool, finished: bool
                  ) -> ControlRecord:
    """One pause / resume / cancel, judged: anyone may ask (none bypasses a gate); who asked is recorded."""
    data = payload.model_dump() if isinstance(payload, ControlPayload) else payload if isinstance(payload, dict) else None
    by = (data or {}).get("by")
    by = by.strip() or None if isinstance(by, str) else None
    reason = (data or {}).get("reason")
    reason = reason if isinstance(reason, str) else None

    def record(refusal: str | None) -> ControlRecord:
        return ControlRecord(action=action, by=by, reason=reason, at=at, accepted=refusal is None, refusal=refusal)

    if data is None:
        return record('the payload must be a JSON object like {"by": "<your name>", "reason": "..."}')
    if by is None:
        return record("'by' is missing or not a text: say who you are")
    if finished:
        return record("the rollout has ended")
    if cancelling:
        return record("the rollout is being cancelled")
    if action == "pause" and paused:
        return record("the rollout is paused already")
    if action == "resume" and not paused:
        return record("the rollout is not paused")
    return record(None)
