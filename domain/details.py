"""What the Temporal UI shows in a run's Current Details, as Markdown. Pure: the workflow sets it
with `workflow.set_current_details(...)` at each step and after every approval attempt; tests read
it here.

Where it appears (UI 2.54.1): the run's **User Metadata** tab, "Current Details", rendered in a
narrow frame (about 60 monospace characters wide) that refreshes when R is pressed. So: anything a
person copies (the fingerprint, the JSON to paste, commands) is inline code, which wraps, never a
code block, which is cut at the right edge; SQL is shown in a code block only when its lines fit;
HTML is stripped by the UI, and tables render without borders, so lists are used instead.

Layout: the latest approval attempts first (who, what, accepted or refused and why), then the
stage's own page: at a gate, everything the approver signs (the plan per migration: action, risk,
findings, rollback, backup, evidence, SQL when short; the drift proof; the fingerprint on its own
line) and how to approve; at the end, the run's record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from domain.approval import PROOF_SSH, PROOF_TYPED, approvers_of
from domain.models import (
    Action,
    ApprovalPolicy,
    ApprovalRecord,
    BundledMigration,
    DeployPlan,
    PlannedMigration,
    RunStatus,
    Stage,
)

ATTEMPTS_SHOWN = 5  # the latest attempts, at the top of every page
RECORD_APPROVALS_SHOWN = 30
SQL_LINE_WIDTH = 60  # wider lines are cut off by the UI's frame
SQL_LINES_SHOWN = 25
SQL_BUDGET = 6_000  # characters of SQL one page may hold
TEXT_LIMIT = 300  # characters of one user-supplied or per-line text
REFUSAL_LIMIT = 700  # a refusal is one sentence, but may hold a command and a signature's fingerprint
_MARKDOWN = str.maketrans({c: f"\\{c}" for c in "\\`*[]<>#|"})  # `_` inside words is no emphasis


def _plain(text: object, limit: int = TEXT_LIMIT) -> str:
    """User-supplied text (names, comments) shown as text, never as Markdown."""
    value = " ".join(str(text).split())
    if len(value) > limit:
        value = value[:limit - 1] + "…"
    return value.translate(_MARKDOWN)


def _sentence(text: str, limit: int) -> str:
    """One of our sentences (a refusal, an error): its `quoted` commands stay code, so they copy as
    written (prose would get typographic dashes and quotes); the rest is shown as text."""
    value = " ".join(text.split())
    if len(value) > limit:
        value = value[:limit - 1] + "…"
    parts = value.split("`")
    if len(parts) % 2 == 0:  # an odd backtick: no code at all
        return _plain(value, limit)
    return "".join(_code(p) if i % 2 else _plain(p, limit) for i, p in enumerate(parts) if p)


def _code(text: object) -> str:
    """Inline code: wraps in the UI's frame and copies exactly. Backticks inside get a longer fence."""
    value = str(text)
    fence = "``" if "`" in value else "`"
    pad = " " if value.startswith("`") or value.endswith("`") else ""
    return f"{fence}{pad}{value}{pad}{fence}"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC") if moment else "—"


# -- approval attempts ------------------------------------------------------------------------


def _proof_text(r: ApprovalRecord) -> str:
    if r.proof == PROOF_SSH:
        return f"proven: SSH key {_code(r.key_fingerprint)} of {_plain(r.principal or r.approver)}"
    if r.proof == PROOF_TYPED or (r.accepted and r.proof is None):
        return "typed name, **unproven**"
    return ""


def attempt_line(r: ApprovalRecord) -> str:
    who = _plain(r.approver) if r.approver else "(no name)"
    head = f"{r.decision} **{_plain(r.stage) if r.stage else '?'}** by {who} via {r.via}, {_when(r.at)}"
    if r.accepted:
        comment = f" · “{_plain(r.comment, 120)}”" if r.comment else ""
        unbacked = (f" · acknowledged **no backup** for {', '.join(_code(n) for n in r.no_backup)}"
                    if r.no_backup else "")
        return f"- accepted: {head} · {_proof_text(r)}{unbacked}{comment}"
    return f"- **REFUSED**: {head} — {_sentence(r.refusal or 'refused', REFUSAL_LIMIT)}"


def attempts(records: Sequence[ApprovalRecord], limit: int = ATTEMPTS_SHOWN) -> str:
    """The latest approval attempts, newest first ("" when there were none)."""
    if not records:
        return ""
    recent = list(reversed(records[-limit:]))
    older = len(records) - len(recent)
    lines = [f"#### Latest approval attempts (newest first; {len(records)} in all)", ""]
    lines += [attempt_line(r) for r in recent]
    if older:
        lines.append(f"- … {older} older attempt(s): `python starter.py show` lists them all")
    return "\n".join(lines)


def page(body: str, records: Sequence[ApprovalRecord]) -> str:
    """A stage's page with the latest approval attempts on top."""
    block = attempts(records)
    return f"{block}\n\n---\n\n{body}" if block else body


# -- stage pages ------------------------------------------------------------------------------


def receiving(environment: str, migrations: int, parts: int) -> str:
    return (f"### Receiving the migrations for `{environment}`\n{migrations} migration(s), too many for one "
            f"message: waiting for the starter's {parts} part(s), each checked against the request.")


def preflight(environment: str, migrations: int) -> str:
    return f"### Preflight on `{environment}`\nReading the ledger and analysing {migrations} migration(s)."


def gate(
    stage: Stage | str,
    plan: DeployPlan,
    policy: ApprovalPolicy,
    requested_by: str,
    *,
    workflow_id: str,
    records: Sequence[ApprovalRecord] = (),
    bundle: Sequence[BundledMigration] = (),
) -> str:
    """A gate waiting for a human: what is to be approved (the plan as signed), by whom, and how."""
    so_far = sorted(approvers_of(list(records), str(stage)))
    who = ", ".join(policy.approvers) or ("anyone the allowed signers list" if PROOF_SSH in policy.proofs
                                          and PROOF_TYPED not in policy.proofs else "anyone")
    lines = [
        f"### Waiting for approval: **{stage}** on `{plan.environment}`",
        "",
        f"- Approvals: {len(so_far)} of {policy.required_approvals} distinct approver(s)"
        + (f" so far ({', '.join(_plain(n) for n in so_far)})" if so_far else " so far"),
        f"- Who may approve: {who}" + ("" if policy.allow_self_approval else f"; not the requester, {_plain(requested_by)}"),
        f"- Proof required: {_proofs_text(plan.environment, policy)}",
        f"- Expires after {policy.approval_timeout} without a decision.",
        "",
        *_plan_section(plan, bundle, workflow_id),
        "",
        *_how_to_approve(stage, plan, policy, workflow_id),
    ]
    return "\n".join(lines)


def _proofs_text(environment: str, policy: ApprovalPolicy) -> str:
    parts = []
    if PROOF_SSH in policy.proofs:
        parts.append(f"a signature by the approver's SSH key, as listed in {environment}'s allowed signers")
    if PROOF_TYPED in policy.proofs:
        parts.append("or a typed name (allowed here, recorded as **unproven**)" if parts
                     else "none: typed names are accepted here, recorded as **unproven**")
    return " ".join(parts)


def _plan_section(plan: DeployPlan, bundle: Sequence[BundledMigration], workflow_id: str) -> list[str]:
    running = [m for m in plan.migrations if m.action != Action.already_applied]
    unchanged = len(plan.migrations) - len(running)
    lines = [
        "#### The plan you approve",
        "",
        "Plan fingerprint:",
        "",
        _code(plan.fingerprint),
        "",
        f"Operation {plan.operation} · risk **{plan.risk}** · server {plan.server_version or '?'} · "
        f"{len(running)} migration(s) with an action, {unchanged} already applied and unchanged",
        "",
        f"Drift proof: {_drift_text(plan)}",
        "",
    ]
    sql = {m.name: m for m in bundle}
    budget = [SQL_BUDGET]
    for number, m in enumerate(running, start=1):
        lines += _migration(number, m, sql.get(m.name), budget, workflow_id)
    lines += [f"- Note: {_plain(n)}" for n in plan.notes]
    lines += [f"- **Blocked:** {_plain(b.message)}" for b in plan.blockers]
    if plan.no_backup and not plan.blockers:
        lines += ["", "#### Runs WITHOUT a backup", "",
                  "These migrations destroy data that no backup will hold (see each one's backup line): "
                  "compensation cannot put it back. The deploy approval must acknowledge exactly them "
                  "(`no_backup` in the approval; it is signed with it):", ""]
        lines += [f"- {_code(n)}" for n in plan.no_backup]
    lines += ["", f"Full SQL of every migration: {_code(f'python starter.py show {workflow_id}')} "
              "(section “SQL the plan will run”)."]
    return lines


def _drift_text(plan: DeployPlan) -> str:
    drift = plan.drift
    if not drift:
        return "not run for this plan (schema checks are off for this environment)"
    text = f"**{_plain(drift.verdict)}** — {_plain(drift.summary, 600)}"
    if drift.count:
        text += f" ({drift.count} difference(s))"
    return text


def _migration(number: int, m: PlannedMigration, bundled: BundledMigration | None, budget: list[int],
               workflow_id: str) -> list[str]:
    txn = "in a transaction" if m.in_transaction else "**not in a transaction** (statement by statement)"
    lines = [f"{number}. {_code(m.name)} — **{m.action}** · risk **{m.risk}** · {txn}",
             f"   - why: {_plain(m.reason)}"]
    for f in m.findings:
        where = f" (line {f.line})" if f.line else ""
        lines.append(f"   - finding {_code(f.code)} [{f.severity}]{where}: {_plain(f.message)}")
    for e in m.evidence:
        lines.append(f"   - evidence: {_plain(e)}")
    if m.action in (Action.apply, Action.reapply):
        lines.append(f"   - rollback: {_rollback_text(m)}")
    backup = _backup_text(m)
    if backup:
        lines.append(f"   - backup: {backup}")
    if bundled is not None and m.action in (Action.apply, Action.reapply, Action.resolve_applied):
        lines += _sql_lines(bundled, budget, workflow_id)
    return lines


def _rollback_text(m: PlannedMigration) -> str:
    if m.rollback is None:
        return "**none** (no down.sql and none derivable): compensation stops here for a person"
    sql = (m.rollback_sql or "").strip()
    if sql and "\n" not in sql and len(sql) <= 200:
        return f"{m.rollback} — {_code(sql)}"
    return f"{m.rollback} ({len(sql.splitlines())} line(s))"


def _backup_text(m: PlannedMigration) -> str:
    """The plan's backup of this migration's data, when the plan has one (issue 13 adds it)."""
    for name in ("backup", "backups"):
        value = getattr(m, name, None)
        if value:
            return _describe(value)
    return ""


def _describe(value: Any) -> str:
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json", exclude_none=True)
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_describe(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return "; ".join(_describe(v) for v in value)
    return _plain(value)


def _sql_lines(bundled: BundledMigration, budget: list[int], workflow_id: str) -> list[str]:
    text = bundled.sql.strip()
    lines = text.splitlines()
    fits = (lines and len(lines) <= SQL_LINES_SHOWN and all(len(line) <= SQL_LINE_WIDTH for line in lines)
            and "```" not in text and len(text) <= budget[0])
    if not fits:
        return [f"   - SQL: {len(lines)} line(s), shown by {_code(f'python starter.py show {workflow_id}')}"]
    budget[0] -= len(text)
    return ["   - SQL:", "", "     ```sql", *[f"     {line}" for line in lines], "     ```", ""]


def _how_to_approve(stage: Stage | str, plan: DeployPlan, policy: ApprovalPolicy, workflow_id: str) -> list[str]:
    env = plan.environment
    unbacked = list(plan.no_backup) if str(stage) == Stage.deploy.value else []
    ack = f', "no_backup": {json.dumps(unbacked)}' if unbacked else ""
    flags = "".join(f" --no-backup {n}" for n in unbacked)
    typed = (f'{{"stage": "{stage}", "approver": "<your name>", "comment": "ok", '
             f'"fingerprint": "{plan.fingerprint}"{ack}}}')
    lines = ["#### How to approve", ""]
    if PROOF_SSH in policy.proofs:
        lines += [
            "1. On your machine, sign this plan with your SSH key (the one the allowed signers list for you): "
            + _code(f"python starter.py sign {workflow_id} --stage {stage} --by <you> --key ~/.ssh/id_ed25519{flags}")
            + " prints one line of JSON (a key in ssh-agent: give its .pub file).",
            "2. Here: **More Actions → Send an Update → `approve_update`**, paste that line as Data, Submit. "
            "It answers at once: a refusal stays in the dialog with its reason; an accepted approval closes "
            "it (“Update successful”).",
            "3. Or **More Actions → Send a Signal → `approve`** with the same line: it answers nothing there; "
            "the result appears at the top of these details (press R to refresh them).",
            "",
            "Or in one step from a terminal: "
            + _code(f"python starter.py approve {workflow_id} --stage {stage} --by <you> --sign-with ~/.ssh/id_ed25519{flags}"),
            "",
        ]
        if PROOF_TYPED in policy.proofs:
            lines += [f"{env} also accepts a typed name, recorded as **unproven**: send this JSON instead:", "",
                      _code(typed), ""]
    else:
        lines += [
            f"{env} accepts typed names (recorded as **unproven**). **More Actions → Send an Update → "
            "`approve_update`** (answers in the dialog), or Send a Signal → `approve`, with Data:",
            "",
            _code(typed),
            "",
            "Or from a terminal: " + _code(f"python starter.py approve {workflow_id} --stage {stage} --by <you>{flags}"),
            "",
        ]
    lines.append(
        "To reject: the same with `reject_update` / `reject` (sign with `--decision reject`), or "
        + _code(f'python starter.py reject {workflow_id} --stage {stage} --by <you> --comment "why"')
        + ". The run then undoes anything it changed.")
    return lines


def resolving(environment: str, todo: Sequence[PlannedMigration]) -> str:
    return f"### Resolving on `{environment}`\n" + "\n".join(f"- `{m.name}`: {m.action}" for m in todo)


def deploying(environment: str, todo: Sequence[BundledMigration]) -> str:
    return (f"### Deploying {len(todo)} migration(s) on `{environment}`\n"
            + "\n".join(f"- `{m.name}`" for m in todo)
            + "\n\nProgress, and any wait for a lock with the sessions that hold it, are in the deploy activity's "
              "heartbeat details (`python starter.py watch` shows both).")


def verifying(environment: str) -> str:
    return f"### Verifying `{environment}`"


def undoing(environment: str, undo_names: Sequence[tuple[str, str | None]], restores_resolve: bool) -> str:
    """`undo_names`: (migration, its rollback source or None), newest first."""
    return (f"### Undoing this run's changes on `{environment}`\n"
            + "\n".join(f"- `{name}` ({rollback or 'no rollback'})" for name, rollback in undo_names)
            + ("\n- restore resolve decisions" if restores_resolve else ""))


# -- the record of a finished run -------------------------------------------------------------


def finished(status: RunStatus, *, workflow_id: str = "", run_id: str = "") -> str:
    """The run's record: outcome, approvals (who, how proven, when), what ran, verification,
    compensation, and where the full audit is."""
    lines = [f"### Run {status.outcome} on `{status.environment}`"]
    if status.error:
        lines += ["", _sentence(status.error, 1000)]
    if status.human_action:
        lines += ["", f"**Needs a person:** {_sentence(status.human_action, 2000)}"]
    lines += ["", f"Requested by {_plain(status.requested_by)} · operation {status.operation}"
              + (" (dry run: nothing was written)" if status.dry_run else "")]
    if status.plan is not None:
        lines += ["", "Plan fingerprint:", "", _code(status.plan.fingerprint), "", f"Risk **{status.plan.risk}**"]
    lines += ["", *_record_approvals(status.approvals), "", *_what_ran(status)]
    if status.verification:
        lines += ["", "#### Verification", ""]
        lines += [f"- {'PASS' if v.passed else '**FAIL**'} {_plain(v.check)}"
                  + (f" ({_code(v.migration)})" if v.migration else "") + f": {_plain(v.detail)}"
                  for v in status.verification]
    if status.compensation:
        lines += ["", "#### Compensation (automatic rollback)", ""]
        lines += [f"- {_code(c.name)}: {_plain(c.action)} — {'ok' if c.ok else '**NOT DONE**'} {_plain(c.detail)}"
                  for c in status.compensation]
    for note in status.notes:
        lines.append(f"- Note: {_plain(note)}")
    ref = f"{workflow_id}/{run_id}" if workflow_id and run_id else workflow_id
    if ref:
        lines += ["", "Full audit with the SQL that ran: " + _code(f"python starter.py show {ref}")]
    return "\n".join(lines)


def _record_approvals(records: Sequence[ApprovalRecord]) -> list[str]:
    lines = ["#### Approvals", ""]
    if not records:
        return lines + ["No approval attempts were recorded."]
    accepted = [r for r in records if r.accepted]
    refused = [r for r in records if not r.accepted]
    shown = accepted[:RECORD_APPROVALS_SHOWN]
    lines += [attempt_line(r) for r in shown] or ["- none accepted"]
    if refused:
        lines += ["", f"{len(refused)} refused attempt(s), latest first:"]
        lines += [attempt_line(r) for r in list(reversed(refused))[:ATTEMPTS_SHOWN]]
    return lines


def _what_ran(status: RunStatus) -> list[str]:
    lines = ["#### What ran", ""]
    for r in status.resolved:
        lines.append(f"- resolved {_code(r.name)} as **{r.resolution}**: {_plain(r.reason)}")
    for a in status.applied:
        waited = f"; {_plain(a.lock_wait.sentence(), 600)}" if a.lock_wait and a.lock_wait.waited else ""
        lines.append(f"- applied {_code(a.name)} at {_when(a.started_at)} in {a.duration_ms:.0f} ms "
                     f"(checksum {_code(a.checksum[:16] + '…')}){waited}")
    failed = status.failed
    if failed is not None:
        waited = f"; {_plain(failed.lock_wait.sentence(), 600)}" if failed.lock_wait and failed.lock_wait.waited else ""
        lines.append(f"- **failed** {_code(failed.name)}: {_plain(failed.error.strip().splitlines()[0] if failed.error.strip() else '', 600)}{waited}")
    if not status.resolved and not status.applied:
        lines.append("- nothing was resolved or applied")
    return lines
