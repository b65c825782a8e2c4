"""`rollout start | watch | show | pause | resume | cancel`: one bundle through stages and fleets.

A rollout is a RolloutWorkflow (id `prisma-rollout-<name>`); every database it deploys is a normal
deploy run (`starter.py watch|show <target>` work on each). Approve its gates with
`starter.py approve prisma-rollout-<name> --stage <stage|wave> --by <you> --fingerprint <fp>`.
"""

from __future__ import annotations

from pathlib import Path

import typer
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowUpdateFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from cli.app import app
from cli.common import console, describe_or_fail, fail, load_settings, print_json, run, run_url, temporal
from cli.deploy import bundle_folder, default_requester
from cli.rollout_view import follow, outcome_line, snapshot
from domain import rollout as rollout_rules
from domain.models import ApprovalAnswer, Operation
from domain.rollout_details import report
from domain.rollout_models import ControlPayload, RolloutRequest, RolloutStatus
from workflows.history import build_audit
from workflows.messages import CANCEL_UPDATE, PAUSE_UPDATE, RESUME_UPDATE
from workflows.rollout_history import final_rollout_status, run_chain
from workflows.rollout_start import ROLLOUT_WORKFLOW_NAME, rollout_start_options, rollout_workflow_id

rollout_app = typer.Typer(name="rollout", no_args_is_help=True,
                          help="Promote one bundle through stages (environments, fleets in waves).")
app.add_typer(rollout_app)

NameArg = typer.Argument(..., help="The rollout's name (or its workflow id prisma-rollout-<name>).")


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


@rollout_app.command("start")
@run
async def start(
    stages: str = typer.Option(..., "--stages", "-s", help="Environments or fleets in order, e.g. staging,prod,tenants."),
    migrations_dir: Path = typer.Option(..., "--migrations-dir", "-d", file_okay=False, help="The Prisma migrations folder."),
    name: str = typer.Option(None, "--name", "-n", help="The rollout's name (default: the stages joined by '-')."),
    waves: str = typer.Option(None, "--waves", "-w", help="Fleet waves, e.g. 1,25%,100% or 1,group:eu,rest "
                                                           "(default: the fleet's, else 1,25%,100%)."),
    concurrency: int = typer.Option(8, "--concurrency", "-c", min=1, max=64, help="Databases deployed at once."),
    max_failures: str = typer.Option("0", "--max-failures", help="Failures a wave tolerates (N or P%); more halt it."),
    operation: Operation = typer.Option(Operation.full, "--operation", "-o"),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan and pass the gates, write nothing."),
    requested_by: str = typer.Option(None, "--requested-by", help="Who asks for this rollout (default: $USER)."),
    wait: bool = typer.Option(False, "--wait", help="Follow it to its end; exit 0 only when it succeeded."),
    json_out: bool = typer.Option(False, "--json"),
) -> int:
    """Start a rollout and follow it until it waits for an approval (or, with --wait, ends)."""
    stage_list = _split(stages)
    wave_list = _split(waves) if waves else None
    try:
        if not stage_list or len(set(stage_list)) != len(stage_list):
            raise rollout_rules.RolloutSpecError("--stages needs distinct names, e.g. staging,prod")
        if wave_list is not None:
            rollout_rules.check_waves(wave_list)
        rollout_rules.allowed_failures(max_failures, 1)
    except rollout_rules.RolloutSpecError as exc:
        fail(str(exc))
    settings = load_settings()
    bundle, parts = bundle_folder(migrations_dir)
    if parts:  # a rollout's children get the bundle from the rollout's request: inline only, for now
        fail(f"this folder's {bundle.count} migrations are more than one Temporal payload holds; a rollout carries "
             "its bundle inline, so deploy each environment with `starter.py deploy` (which sends it in parts)")
    request = RolloutRequest(name=name or "-".join(stage_list), stages=stage_list, waves=wave_list,
                             concurrency=concurrency, max_failures=max_failures, operation=operation, dry_run=dry_run,
                             requested_by=requested_by or default_requester(), bundle=bundle)
    client = await temporal(settings)
    options = rollout_start_options(request, task_queue=settings.task_queue)
    try:
        handle = await client.start_workflow(ROLLOUT_WORKFLOW_NAME, request, result_type=RolloutStatus, **options)
    except WorkflowAlreadyStartedError:
        fail(f"a rollout named '{request.name}' is already open ({options['id']}); follow it with: "
             f"starter.py rollout watch {request.name}")
    url = run_url(settings, options["id"], handle.result_run_id)
    if not json_out:
        console.print(f"started rollout {options['id']}/{handle.result_run_id}", markup=False)
        console.print(f"Temporal UI: {url}", markup=False)
    snap = await follow(handle, until_gate=not wait, quiet=json_out)
    if json_out:
        print_json({"workflow_id": options["id"], "run_id": handle.result_run_id, "url": url, "closed": snap.closed,
                    "status": snap.status.model_dump(mode="json") if snap.status else None})
    elif snap.closed:
        console.print(outcome_line(snap.status, snap.execution_status), markup=False)
    if snap.closed:
        return 0 if snap.status and snap.status.outcome == "succeeded" else 1
    return 0


def _handle(client: Client, name: str):
    return client.get_workflow_handle(rollout_workflow_id(name))


@rollout_app.command("watch")
@run
async def watch(name: str = NameArg, json_out: bool = typer.Option(False, "--json")) -> int:
    """Live per-wave progress until the rollout ends or waits for a human.

    Exits 0 when it succeeded or waits for approval, 1 when it ended otherwise."""
    client = await temporal(load_settings())
    handle = _handle(client, name)
    await describe_or_fail(handle)
    snap = await follow(handle, until_gate=True, quiet=json_out)
    if json_out:
        print_json(snap.status.model_dump(mode="json") if snap.status else None)
    elif snap.closed:
        console.print(outcome_line(snap.status, snap.execution_status), markup=False)
    if snap.closed:
        return 0 if snap.status and snap.status.outcome == "succeeded" else 1
    return 0


async def load_rollout(client: Client, name: str) -> tuple[RolloutStatus, list[str], list[str], str]:
    """The rollout's status (final, or current), its run ids, the messages it received (approvals,
    controls) with the identity Temporal recorded for each sender, and its bundle's SQL (Markdown)."""
    handle = _handle(client, name)
    desc = await describe_or_fail(handle)
    chain = await run_chain(client, handle.id, desc.run_id)
    received = []
    first = chain[0][1].events[0].workflow_execution_started_event_attributes.input if chain else None
    decoded = client.data_converter.payload_converter.from_payloads(list(first.payloads)) if first else []
    request = RolloutRequest.model_validate(decoded[0]) if decoded else None
    for run_id, history in chain:
        audit = build_audit(client.data_converter.payload_converter, handle.id, run_id, "", history.events)
        for m in audit.messages:
            received.append(f"{m.at:%Y-%m-%d %H:%M:%S} UTC {m.kind} `{m.name}` from {m.identity or 'unknown'}: "
                            f"{m.payload}")
    if desc.status == WorkflowExecutionStatus.RUNNING:
        status = (await snapshot(handle)).status
        if status is None:
            fail(f"rollout {handle.id} is running but no worker answers its status query right now")
    else:
        status = await final_rollout_status(client.get_workflow_handle(handle.id, run_id=desc.run_id))
        if status is None:
            fail(f"rollout {handle.id} ended ({desc.status.name.lower() if desc.status else 'unknown'}) without a status")
    sql = ""
    if request is not None:
        sql = "\n## SQL of the bundle\n\n" + "".join(
            f"### `{m.name}` (sha256 `{m.checksum[:16]}…`)\n\n```sql\n{m.sql.rstrip()}\n```\n\n"
            for m in request.bundle.migrations)
    return status, [r for r, _ in chain], received, sql


@rollout_app.command("show")
@run
async def show(
    name: str = NameArg,
    format: str = typer.Option("text", "--format", "-f", help="text | markdown | json"),
    json_out: bool = typer.Option(False, "--json", help="Same as --format json."),
) -> int:
    """The audit of a rollout: its plans and who approved which, pauses, every database with its outcome and run.

    Each database's own audit: starter.py show <target>."""
    if format not in ("text", "markdown", "json"):
        fail("--format must be text, markdown or json")
    client = await temporal(load_settings())
    status, run_ids, received, sql = await load_rollout(client, name)
    if json_out or format == "json":
        print_json({"workflow_id": rollout_workflow_id(name), "runs": run_ids, "status": status.model_dump(mode="json"),
                    "messages": received})
        return 0
    text = report(status, rollout_workflow_id(name), run_ids)
    if received:
        text += "\n## Messages received (as recorded by Temporal)\n\n" + "\n".join(f"- {m}" for m in received) + "\n"
    text += sql
    if format == "markdown":
        print(text, end="")
    else:
        from rich.markdown import Markdown

        console.print(Markdown(text))
    return 0


async def _control(name: str, update: str, by: str, reason: str | None) -> int:
    client = await temporal(load_settings())
    handle = _handle(client, name)
    desc = await describe_or_fail(handle)
    if desc.status != WorkflowExecutionStatus.RUNNING:
        fail(f"rollout {handle.id} has already ended ({desc.status.name.lower() if desc.status else 'unknown'})")
    try:
        answer = await handle.execute_update(update, ControlPayload(by=by, reason=reason), result_type=ApprovalAnswer)
    except WorkflowUpdateFailedError as exc:
        fail(f"refused: {getattr(exc.cause, 'message', None) or exc.cause}", exit_code=1)
    except RPCError as exc:
        fail(f"Temporal refused the request: {exc.message}")
    console.print(answer.message, markup=False)
    return 0


ByOpt = typer.Option(..., "--by", help="Your name (kept in the audit).")
ReasonOpt = typer.Option(None, "--reason", "-m", help="Why (kept in the audit).")


@rollout_app.command("pause")
@run
async def pause(name: str = NameArg, by: str = ByOpt, reason: str = ReasonOpt) -> int:
    """Start no more databases; the deploys already running finish."""
    return await _control(name, PAUSE_UPDATE, by, reason)


@rollout_app.command("resume")
@run
async def resume(name: str = NameArg, by: str = ByOpt, reason: str = ReasonOpt) -> int:
    """Go on after a pause."""
    return await _control(name, RESUME_UPDATE, by, reason)


@rollout_app.command("cancel")
@run
async def cancel(name: str = NameArg, by: str = ByOpt, reason: str = ReasonOpt) -> int:
    """Cancel the rollout: running deploys are cancelled and undo their own changes.

    Databases already deployed stay as they are."""
    return await _control(name, CANCEL_UPDATE, by, reason)
