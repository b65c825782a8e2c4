"""What the Temporal UI shows in a rollout's Current Details, and the rollout's audit report, as
Markdown. Pure: the workflow sets the details at each step; `starter.py rollout show` prints the report."""

from __future__ import annotations

import json
from collections import Counter
from datetime import datetime

from domain.models import Action
from domain.rollout_approval import WAVE, no_backup_to_acknowledge
from domain.rollout_models import PlanGroup, RolloutGate, RolloutStatus, WaveState


def _t(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _cell(text: object) -> str:
    return str(text if text is not None else "").replace("|", "\\|").replace("\n", " ")


def wave_name(wave: WaveState) -> str:
    """`tenants, 25%` for a fleet's wave; the environment's name for an environment stage."""
    return wave.stage if wave.label == wave.stage else f"{wave.stage}, {wave.label}"


def wave_line(wave: WaveState, running: list[str]) -> str:
    counts = Counter(r.outcome for r in wave.results.values())
    here = sum(1 for t in running if t in set(wave.targets))
    parts = [f"{n} {o}" for o, n in sorted(counts.items())] + ([f"{here} running"] if here else [])
    return (f"wave {wave.number} ({wave_name(wave)}): {len(wave.results)}/{len(wave.targets)} done"
            + (f" — {', '.join(parts)}" if parts else ""))


def plan_summary(group: PlanGroup) -> list[str]:
    plan = group.plan
    lines = [f"**Plan `{group.state_fingerprint}`** — {group.members} database(s), e.g. `{plan.environment}`; "
             f"risk **{plan.risk}**; gates: {', '.join(group.gates) or 'none'}; "
             f"{group.policy.required_approvals} distinct approval(s) per gate; "
             f"approvers: {', '.join(group.policy.approvers) or 'anyone'}"]
    for m in plan.migrations:
        if m.action != Action.already_applied:
            lines.append(f"  - `{m.name}`: **{m.action}** — {m.reason}")
    for b in plan.blockers:
        lines.append(f"  - blocked: {b.message}")
    if plan.no_backup and not plan.blockers:
        lines.append(f"  - runs WITHOUT a backup: {', '.join(f'`{n}`' for n in plan.no_backup)} (the data it destroys "
                     "is over backup_max_bytes or cannot be backed up): the deploy approval must acknowledge exactly "
                     "that (`no_backup`; signed with it)")
    return lines


def gate(status: RolloutStatus, gate: RolloutGate, workflow_id: str) -> str:
    wave = status.wave(gate.wave)
    lines = [f"### Rollout `{status.name}` waits before wave {wave.number} ({wave_name(wave)}: "
             f"{len(wave.targets)} database(s))", ""]
    earlier = [w for w in status.waves if w.number < wave.number and w.results]
    if earlier:
        lines.append("Results so far:")
        for w in earlier:
            lines.append(f"- {wave_line(w, [])}")
            for r in w.failures()[:10]:
                lines.append(f"  - `{r.target}`: **{r.outcome}** — {r.error or ''}")
        lines.append("")
    if gate.groups:
        lines.append("Approve each plan's gates (same rules as a single deploy):")
        for key in gate.groups:
            group = status.groups[key]
            lines += plan_summary(group)
            for stage in group.gates:
                unbacked = no_backup_to_acknowledge(group, stage)
                if stage not in group.gates_passed and "typed" in group.policy.proofs:
                    ack = f', "no_backup": {json.dumps(unbacked)}' if unbacked else ""
                    lines += ["```json", f'{{"stage": "{stage}", "approver": "<your name>", "comment": "ok", '
                              f'"fingerprint": "{group.state_fingerprint}"{ack}}}', "```"]
                elif stage not in group.gates_passed:  # only signed approvals count: sign, then paste
                    flags = "".join(f" --no-backup {n}" for n in unbacked)
                    lines += [f"  - {stage}: only SSH-signed approvals count. Run `starter.py sign {workflow_id} "
                              f"--stage {stage} --by <you> --key <your key>{flags}` and paste the line it prints "
                              "(Send an Update → `approve_update`, or Send a Signal → `approve`)."]
    else:
        lines += [f"Every plan of this wave is approved. To continue, {gate.approvals_needed} approval(s) of the wave "
                  f"by {', '.join(gate.approvers) or 'anyone'}"
                  + ("" if gate.allow_self_approval else f" (not the requester, {status.requested_by})") + ":",
                  "```json",
                  f'{{"stage": "{WAVE}", "approver": "<your name>", "comment": "ok", "fingerprint": "{wave.fingerprint}"}}',
                  "```",
                  f"Where only SSH-signed approvals count: `starter.py sign {workflow_id} --stage {WAVE} --by <you> "
                  "--key <your key>`, and paste the line it prints."]
    lines += ["", f"More Actions → Send a Signal → `approve` (or `reject`) with that input, or "
              f"`starter.py approve {workflow_id} --stage <stage> --by <you> --fingerprint <fingerprint>`."]
    return "\n".join(lines)


def progress(status: RolloutStatus) -> str:
    lines = [f"### Rollout `{status.name}`: {status.phase}" + (" (paused)" if status.paused else ""), ""]
    lines += [f"- {wave_line(w, status.running)}" for w in status.waves]
    if status.running:
        lines.append(f"\nRunning now: {', '.join(f'`{t}`' for t in status.running[:20])}"
                     + (" …" if len(status.running) > 20 else ""))
    return "\n".join(lines)


def finished(status: RolloutStatus) -> str:
    return (f"### Rollout `{status.name}`: {status.outcome}" + (f"\n\n{status.error}" if status.error else "")
            + "\n\n" + "\n".join(f"- {wave_line(w, [])}" for w in status.waves))


def report(status: RolloutStatus, workflow_id: str, run_ids: list[str]) -> str:
    """The audit of a rollout, fit for a change ticket: who asked, who approved which plan and wave,
    which database got what, and how it ended. Each database's own audit: `starter.py show <target>`."""
    st = status
    out = [f"# Rollout `{st.name}`: {' → '.join(st.stages)}", "",
           f"- Rollout: `{workflow_id}` ({len(run_ids)} run(s): {', '.join(f'`{r}`' for r in run_ids)})",
           f"- Outcome: **{st.outcome or st.phase}**" + (f" — {st.error}" if st.error else ""),
           f"- Requested by: {st.requested_by}; operation {st.operation}{' (dry run)' if st.dry_run else ''}; "
           f"revision `{st.revision or 'unknown'}`",
           f"- {st.concurrency} database(s) at a time; a wave halts past {st.max_failures} failure(s)",
           f"- Started: {_t(st.started_at)} · Ended: {_t(st.ended_at)}", ""]
    out += ["## Plans", ""]
    for group in st.groups.values():
        out += plan_summary(group)
        out.append("")
    out += ["## Approvals", ""]
    if st.attempts:
        out += ["| when | decision | gate | by | via | accepted | comment / refusal | fingerprint | no backup acknowledged |",
                "|---|---|---|---|---|---|---|---|---|"]
        for a in st.attempts:
            r = a.record
            gate_name = r.stage or "—"
            if a.groups:
                gate_name += " of plan " + ", ".join(st.groups[k].state_fingerprint[:12] for k in a.groups if k in st.groups)
            out.append(f"| {_t(r.at)} | {r.decision} | {_cell(gate_name)} | {_cell(r.approver) or '—'} | {r.via} | "
                       f"{'yes' if r.accepted else '**refused**'} | {_cell(r.refusal or r.comment or '')} | "
                       f"`{(r.fingerprint or '')[:12]}` | {_cell(', '.join(r.no_backup)) or '—'} |")
    else:
        out.append("No approvals were needed or recorded.")
    out.append("")
    if st.controls:
        out += ["## Pause, resume, cancel", ""]
        for c in st.controls:
            out.append(f"- {_t(c.at)} **{c.action}** by {c.by or '—'}" + (f": {c.reason}" if c.reason else "")
                       + ("" if c.accepted else f" — refused: {c.refusal}"))
        out.append("")
    out += ["## Databases", ""]
    for w in st.waves:
        out += [f"### {wave_line(w, [])}", "", "| database | outcome | plan | approvals | applied | run | error |",
                "|---|---|---|---|---|---|---|"]
        for target in w.targets:
            r = w.results.get(target)
            if r is None:
                out.append(f"| `{target}` | not started | | | | | |")
                continue
            plan = st.groups[r.group].state_fingerprint[:12] if r.group in st.groups else "—"
            out.append(f"| `{r.target}` | {r.outcome} | `{plan}` | {r.approvals or '—'} | {r.applied} | "
                       f"`{r.run_id or '—'}` | {_cell(r.error or '')} |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"
