"""The audit of one run, as reconstructed from its workflow history, and its Markdown report.

Pure: workflows/history.py builds it from history events; this module only holds the shape and the text.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from domain.models import Action, ApprovalRecord, BundledMigration, DeployRequest, RunStatus


class StageRecord(BaseModel):
    stage: str
    activity: str
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    attempts: int = 0
    result: str = ""  # completed | failed | timed out | canceled | running
    error: str | None = None


class SignalRecord(BaseModel):
    """A raw approval/rejection as it reached the run (signal or update), before validation."""

    kind: str  # signal | update
    name: str
    at: datetime
    identity: str | None = None
    payload: dict | None = None


class Audit(BaseModel):
    workflow_id: str
    run_id: str
    execution_status: str
    started_at: datetime | None = None
    closed_at: datetime | None = None
    started_by_identity: str | None = None
    request: DeployRequest | None = None
    status: RunStatus | None = None  # the run's final (or latest known) status
    stages: list[StageRecord] = Field(default_factory=list)
    messages: list[SignalRecord] = Field(default_factory=list)
    failure: str | None = None
    problems: list[str] = Field(default_factory=list)  # parts of the history that could not be read
    # A still-open run's live wait for locks (the deploy or compensate activity's heartbeat details).
    waiting: dict | None = None


def _t(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _duration(start: datetime | None, end: datetime | None) -> str:
    if not start or not end:
        return "—"
    return f"{(end - start).total_seconds():.2f} s"


def _cell(text: object) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def _proof(a: ApprovalRecord) -> str:
    """How the approver's identity was established (issue 15)."""
    if a.proof == "ssh":
        return f"ssh {a.key_fingerprint or ''}".strip()
    if a.proof == "typed" or (a.accepted and a.proof is None):
        return "typed (unproven)"
    return "—"


def _still_to_run(st: RunStatus | None, bundle: dict[str, BundledMigration]) -> list[BundledMigration]:
    """Migrations a still-open run's plan will apply and has not yet: the SQL its approvers sign."""
    if st is None or st.plan is None or st.outcome is not None:
        return []
    done = {a.name for a in st.applied}
    return [bundle[m.name] for m in st.plan.by_action(Action.apply, Action.reapply)
            if m.name not in done and m.name in bundle]


def _lock_waits(audit: Audit) -> list[str]:
    """Every wait for locks worth a line: now (a running run), per migration, per rollback."""
    st = audit.status
    lines = []
    if audit.waiting and audit.waiting.get("message"):
        lines.append(f"- **now:** {_cell(audit.waiting['message'])}")
    waits = [(f"`{a.name}`", a.lock_wait) for a in (st.applied if st else [])]
    if st and st.failed:
        waits.append((f"`{st.failed.name}` (failed)", st.failed.lock_wait))
    waits += [(f"rollback of `{c.name}`", c.lock_wait) for c in (st.compensation if st else [])]
    lines += [f"- {name}: {_cell(w.sentence())}" for name, w in waits if w is not None and w.waited]
    return ["## Lock waits", "", *lines, ""] if lines else []


def render_markdown(audit: Audit) -> str:
    """A report fit to attach to a change ticket: who asked, who approved what, what SQL ran."""
    req, st = audit.request, audit.status
    out: list[str] = []
    title_env = req.environment if req else audit.workflow_id
    out.append(f"# Migration run on `{title_env}`")
    out.append("")
    out.append(f"- Run: `{audit.workflow_id}` / `{audit.run_id}`")
    out.append(f"- Outcome: **{(st.outcome if st and st.outcome else audit.execution_status)}**")
    if req:
        out.append(f"- Operation: {req.operation}{' (dry run)' if req.dry_run else ''}")
        out.append(f"- Requested by: {req.requested_by}")
        out.append(f"- Source revision: `{req.bundle.revision or 'unknown'}` ({req.bundle.source or 'bundle'})")
    out.append(f"- Started: {_t(audit.started_at)} · Closed: {_t(audit.closed_at)}")
    if st and st.error:
        out.append(f"- Error: {st.error}")
    elif audit.failure:
        out.append(f"- Error: {audit.failure}")
    if st and st.human_action:
        out.append(f"- **Human action needed:** {st.human_action}")
    for problem in audit.problems:
        out.append(f"- **Unreadable:** {problem}")
    out.append("")

    if st and st.plan:
        p = st.plan
        out += ["## Plan", "", f"Fingerprint `{p.fingerprint}` · risk **{p.risk}** · server {p.server_version}", ""]
        out += ["| migration | action | in transaction | rollback | risk | reason |", "|---|---|---|---|---|---|"]
        for m in p.migrations:
            if m.action == "already_applied":
                continue
            out.append(
                f"| `{m.name}` | {m.action} | {'yes' if m.in_transaction else 'no'} | {m.rollback or 'none'} "
                f"| {m.risk} | {_cell(m.reason)} |"
            )
        for b in p.blockers:
            out.append(f"\n**Blocked:** {b}")
        if p.no_backup and not p.blockers:
            out.append(f"\n**Runs without a backup** (each deploy approval had to acknowledge it; see Approvals): "
                       f"{', '.join(f'`{n}`' for n in p.no_backup)}")
        if p.drift:
            out.append(f"\nDrift proof: **{p.drift.verdict}** {p.drift.summary}")
        out.append("")

    out += ["## Stages", "", "| stage | started | ended | duration | attempts | result |", "|---|---|---|---|---|---|"]
    for s in audit.stages:
        out.append(
            f"| {s.stage} | {_t(s.started_at or s.scheduled_at)} | {_t(s.ended_at)} | "
            f"{_duration(s.started_at or s.scheduled_at, s.ended_at)} | {s.attempts} | "
            f"{s.result}{(': ' + _cell(s.error)) if s.error else ''} |"
        )
    out.append("")

    out += ["## Approvals", ""]
    approvals = st.approvals if st else []
    if approvals:
        out += ["| when | decision | stage | by | via | accepted | comment / refusal | fingerprint | proof "
                "| no backup acknowledged |", "|---|---|---|---|---|---|---|---|---|---|"]
        for a in approvals:
            out.append(
                f"| {_t(a.at)} | {a.decision} | {a.stage or '—'} | {_cell(a.approver) or '—'} | {a.via} | "
                f"{'yes' if a.accepted else '**refused**'} | {_cell(a.refusal or a.comment or '')} | "
                f"`{(a.fingerprint or '')[:12]}` | {_proof(a)} | {_cell(', '.join(a.no_backup)) or '—'} |"
            )
    else:
        out.append("No approvals were recorded.")
    out.append("")

    if st and st.resolved:
        out += ["## Resolve decisions", ""]
        for r in st.resolved:
            out.append(f"- `{r.name}` → **{r.resolution}**: {r.reason}")
        out.append("")

    out += ["## Migrations applied", ""]
    sql_by_name = {m.name: m for m in req.bundle.migrations} if req else {}
    if st and st.applied:
        out += ["| migration | checksum | started | duration | waiting for locks | lock attempts |",
                "|---|---|---|---|---|---|"]
        for a in st.applied:
            w = a.lock_wait
            out.append(f"| `{a.name}` | `{a.checksum[:16]}…` | {_t(a.started_at)} | {a.duration_ms:.0f} ms | "
                       f"{f'{w.waited_s:.2f} s' if w else '—'} | {w.attempts if w else '—'} |")
        out.append("")
        for a in st.applied:
            m = sql_by_name.get(a.name)
            if m:
                out += [f"### SQL of `{a.name}`", "", "```sql", m.sql.rstrip(), "```", ""]
    else:
        out += ["None.", ""]
    waiting = _still_to_run(st, sql_by_name)
    if waiting:
        out += ["## SQL the plan will run", "", "(the run has not finished: these are what its gates approve)", ""]
        for m in waiting:
            out += [f"### SQL of `{m.name}`", "", "```sql", m.sql.rstrip(), "```", ""]

    out += _lock_waits(audit)
    if st and st.verification:
        out += ["## Verification", ""]
        for v in st.verification:
            out.append(f"- {'SKIPPED' if v.skipped else 'PASS' if v.passed else 'FAIL'} {v.check}{' (' + v.migration + ')' if v.migration else ''}: {v.detail}")
        out.append("")
    if st and st.compensation:
        out += ["## Compensation (automatic rollback)", ""]
        for c in st.compensation:
            out.append(f"- `{c.name}`: {c.action} — {'ok' if c.ok else 'NOT DONE'} {c.detail}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
