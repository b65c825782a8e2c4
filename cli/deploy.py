"""`deploy` and `plan`: bundle the migrations folder and start a run of the deploy workflow."""

from __future__ import annotations

import getpass
import os
import subprocess
import uuid
from pathlib import Path

import typer
from temporalio.client import WorkflowExecutionStatus
from temporalio.exceptions import WorkflowAlreadyStartedError

from cli.app import app
from cli.common import console, err_console, fail, load_settings, print_json, run, run_url, temporal
from cli.follow import final_status, follow, outcome_line, snapshot
from cli.render import render_plan
from cli.launch import start_run
from domain.bundle import BundleTooLarge, build_bundle, bundle_problems, pack
from domain.models import (
    BundlePart,
    DeployRequest,
    MigrationBundle,
    Operation,
    workflow_id_for,
)
from domain.prisma.folder import MigrationFolderError, read_folder

EnvOpt = typer.Option(..., "--env", "-e", help="Environment name, as configured on the worker (e.g. prod).")
DirOpt = typer.Option(..., "--migrations-dir", "-d", help="The Prisma migrations folder (prisma/migrations).")


def git_revision(folder: Path) -> str | None:
    """The commit the folder was read from, with '-dirty' when the folder has uncommitted changes."""
    try:
        head = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
        )
        if head.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=10
        )
        return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def bundle_folder(migrations_dir: Path) -> tuple[MigrationBundle, list[BundlePart]]:
    """The folder as Prisma reads it (a missing folder is empty, with a warning; a directory without
    migration.sql travels by name: the plan says where Prisma would stop), as it travels: inline,
    or a header and the parts sent after the start (cli/launch.py)."""
    try:
        folder = read_folder(migrations_dir)
    except MigrationFolderError as exc:
        fail(str(exc))
    if folder.problem:
        err_console.print(f"warning: {folder.problem}", markup=False, soft_wrap=True)
    problems = bundle_problems(folder.migrations)
    if problems:  # preflight refuses these too (bundles not built here); say it before starting a run
        fail(problems[0].message + (f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""))
    bundle = build_bundle(folder.migrations, revision=git_revision(migrations_dir), source=str(migrations_dir),
                          unreadable=folder.unreadable, folder_problem=folder.problem)
    try:
        return pack(bundle)
    except BundleTooLarge as exc:
        fail(str(exc))


def default_requester() -> str:
    return os.environ.get("GITHUB_ACTOR") or os.environ.get("USER") or getpass.getuser()


@app.command()
@run
async def deploy(
    env: str = EnvOpt,
    migrations_dir: Path = DirOpt,
    operation: Operation = typer.Option(
        Operation.full, "--operation", "-o", help="full = resolve+deploy+verify; migrate = deploy+verify."
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan and pass the gates, write nothing."),
    requested_by: str = typer.Option(None, "--requested-by", help="Who asks for this run (default: $USER)."),
    wait: bool = typer.Option(False, "--wait", help="Follow the run to its end; exit 0 only when it succeeded."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object instead of text."),
) -> int:
    """Start a deploy run of the migrations folder on ENV and print its id and Temporal UI link.

    Without --wait it returns once the plan is ready or a gate waits for approval."""
    settings = load_settings()
    bundle, parts = bundle_folder(migrations_dir)
    request = DeployRequest(
        environment=env,
        operation=operation,
        dry_run=dry_run,
        requested_by=requested_by or default_requester(),
        bundle=bundle,
    )
    client = await temporal(settings)
    workflow_id = workflow_id_for(env)
    try:
        handle = await start_run(client, request, parts, task_queue=settings.task_queue, quiet=json_out)
    except WorkflowAlreadyStartedError:
        fail(
            f"a run is already open for environment '{env}' ({workflow_id}); only one run per database at a time "
            f"— follow it with: starter.py watch {env}"
        )
    url = run_url(settings, workflow_id, handle.result_run_id)
    if not json_out:
        console.print(f"started run {workflow_id}/{handle.result_run_id}", markup=False)
        console.print(f"Temporal UI: {url}", markup=False)
        console.print(f"the plan and how to approve: {url.rsplit('/', 1)[0]}/user-metadata (Current Details)",
                      markup=False)
    snap = await follow(handle, until_gate=not wait, quiet=json_out)
    status = snap.status
    if json_out:
        print_json(
            {
                "workflow_id": workflow_id,
                "run_id": handle.result_run_id,
                "url": url,
                "closed": snap.closed,
                "outcome": status.outcome if status else None,
                "awaiting": status.awaiting if status else None,
                "error": status.error if status else None,
                "status": status.model_dump(mode="json") if status else None,
            }
        )
    elif snap.closed:
        console.print(outcome_line(status, snap.execution_status), markup=False)
    if snap.closed:
        return 0 if status and status.outcome == "succeeded" else 1
    return 0


@app.command()
@run
async def plan(
    env: str = EnvOpt,
    migrations_dir: Path = DirOpt,
    operation: Operation = typer.Option(Operation.full, "--operation", "-o"),
    json_out: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> int:
    """Run preflight as a dry run on ENV and print the plan: actions, SQL safety notes, rollbacks, fingerprint.

    Nothing is written to the database and no approval is needed."""
    settings = load_settings()
    bundle, parts = bundle_folder(migrations_dir)
    request = DeployRequest(
        environment=env,
        operation=operation,
        dry_run=True,
        plan_only=True,
        requested_by=default_requester(),
        bundle=bundle,
    )
    client = await temporal(settings)
    handle = await start_run(client, request, parts, task_queue=settings.task_queue,
                             workflow_id=f"prisma-plan-{env}-{uuid.uuid4().hex[:8]}", quiet=json_out)
    status = await final_status(handle)
    if status is None or status.plan is None:
        if status is not None and status.error:
            fail(f"no plan for '{env}': {status.error}")
        snap = await snapshot(handle)
        fail(outcome_line(status, snap.execution_status if snap.closed else WorkflowExecutionStatus.FAILED))
    if json_out:
        print_json(status.plan)
    else:
        render_plan(status.plan)
        if status.error:
            console.print(f"[red]{status.error}[/red]")
    return 1 if status.plan.blockers or status.error else 0
