"""What the Temporal UI shows in a run's Current Details, as Markdown. Pure: the workflow sets it
with `workflow.set_current_details(...)` at each step; tests read it here."""

from __future__ import annotations

from collections.abc import Sequence

from domain.models import Action, ApprovalPolicy, BundledMigration, DeployPlan, PlannedMigration, RunStatus, Stage


def preflight(environment: str, migrations: int) -> str:
    return f"### Preflight on `{environment}`\nReading the ledger and analysing {migrations} migration(s)."


def gate(stage: Stage | str, plan: DeployPlan, policy: ApprovalPolicy, requested_by: str, approvals_so_far: int) -> str:
    """A gate waiting for a human: what is to be approved, by whom, and the exact JSON to send."""
    lines = [
        f"### Waiting for approval: **{stage}** on `{plan.environment}`",
        "",
        f"Plan fingerprint: `{plan.fingerprint}` · risk **{plan.risk}** · "
        f"{policy.required_approvals} distinct approval(s) needed, {approvals_so_far} so far",
        f"Approvers: {', '.join(policy.approvers) or 'anyone'}"
        + ("" if policy.allow_self_approval else f" (not the requester, {requested_by})"),
        f"Expires after {policy.approval_timeout} without a decision.",
        "",
    ]
    for m in plan.migrations:
        if m.action != Action.already_applied:
            lines.append(f"- `{m.name}`: **{m.action}** — {m.reason}")
    lines += [
        "",
        "To approve: More Actions → Send a Signal → `approve`, input:",
        "```json",
        f'{{"stage": "{stage}", "approver": "<your name>", "comment": "ok", "fingerprint": "{plan.fingerprint}"}}',
        "```",
        f"To reject: signal `reject` with the same payload. CLI: `starter.py approve {plan.environment} "
        f"--stage {stage} --by <you> --fingerprint {plan.fingerprint}` (or `reject`).",
    ]
    return "\n".join(lines)


def resolving(environment: str, todo: Sequence[PlannedMigration]) -> str:
    return f"### Resolving on `{environment}`\n" + "\n".join(f"- `{m.name}`: {m.action}" for m in todo)


def deploying(environment: str, todo: Sequence[BundledMigration]) -> str:
    return (f"### Deploying {len(todo)} migration(s) on `{environment}`\n"
            + "\n".join(f"- `{m.name}`" for m in todo)
            + "\n\nProgress is in the deploy activity's heartbeat details.")


def verifying(environment: str) -> str:
    return f"### Verifying `{environment}`"


def undoing(environment: str, undo_names: Sequence[tuple[str, str | None]], restores_resolve: bool) -> str:
    """`undo_names`: (migration, its rollback source or None), newest first."""
    return (f"### Undoing this run's changes on `{environment}`\n"
            + "\n".join(f"- `{name}` ({rollback or 'no rollback'})" for name, rollback in undo_names)
            + ("\n- restore resolve decisions" if restores_resolve else ""))


def finished(status: RunStatus) -> str:
    return (f"### {status.outcome} on `{status.environment}`" + (f"\n\n{status.error}" if status.error else "")
            + (f"\n\n**Needs a person:** {status.human_action}" if status.human_action else ""))
