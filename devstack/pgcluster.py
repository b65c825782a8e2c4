"""A throwaway PostgreSQL cluster started from the server binaries on this machine.

Used by the tests, the demo and the benchmarks. `initdb`/`pg_ctl` refuse to run as root, so when
we are root they run as the `postgres` OS user, and the data directory lives outside
root-only temporary folders (pytest's tmp_path is mode 700 under root).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"


class PostgresUnavailable(RuntimeError):
    pass


def find_pg_bin() -> Path:
    """The newest PostgreSQL server bin directory (PG_BIN overrides)."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    candidates = [Path(p) for p in glob.glob(PG_BIN_GLOB) if (Path(p) / "initdb").exists()]
    if not candidates:
        found = shutil.which("initdb")
        if found:
            return Path(found).parent
        raise PostgresUnavailable(
            "PostgreSQL server binaries not found (looked in /usr/lib/postgresql/*/bin); "
            "install the 'postgresql' package or set DATABASE_URL to an existing server"
        )
    return sorted(candidates, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)[-1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PgCluster:
    """One initdb'd cluster on 127.0.0.1:<port>, trust auth for the superuser `postgres`.

    `password` (optional) is set for the `postgres` role and md5/scram auth is required on TCP,
    so tests can check that a real password never leaks.
    """

    password: str | None = None
    # Tests trade durability for speed (fsync off); benchmarks need production-like commits.
    durable: bool = False
    port: int = field(default_factory=free_port)
    base_dir: Path | None = None
    _owned: bool = False
    _stopped: bool = False

    def __post_init__(self) -> None:
        self.bin = find_pg_bin()
        if self.base_dir is None:
            # /var/tmp is world-writable and not pytest's root-only tmp tree.
            self.base_dir = Path(tempfile.mkdtemp(prefix="pgcluster-", dir="/var/tmp"))
            self._owned = True
        self.data_dir = self.base_dir / "data"
        self.run_dir = self.base_dir / "run"
        self.log_file = self.base_dir / "postgres.log"

    # -- process helpers -------------------------------------------------
    def _as_pg_user(self) -> dict:
        if os.geteuid() != 0:
            return {}
        pw = pwd.getpwnam("postgres")

        def demote() -> None:
            os.setgid(pw.pw_gid)
            os.setuid(pw.pw_uid)

        return {"preexec_fn": demote}

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _run(self, *args: str) -> None:
        proc = subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            env={**os.environ, "LC_ALL": "C.UTF-8"},
            **self._as_pg_user(),
        )
        if proc.returncode != 0:
            log = self.log_file.read_text(errors="replace")[-2000:] if self.log_file.exists() else ""
            raise PostgresUnavailable(f"{args[0]} failed: {proc.stderr.strip()} {log}")

    # -- lifecycle -------------------------------------------------------
    def start(self) -> "PgCluster":
        assert self.base_dir is not None
        os.chmod(self.base_dir, 0o755)
        self._chown(self.base_dir)
        if not (self.data_dir / "PG_VERSION").exists():
            pwfile = None
            args = ["initdb", "-D", str(self.data_dir), "-U", "postgres", "-E", "UTF8", "--no-sync"]
            if self.password:
                pwfile = self.base_dir / "pwfile"
                pwfile.write_text(self.password + "\n")
                self._chown(pwfile)
                args += ["--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
            else:
                args += ["-A", "trust"]
            self._run(*args)
            if pwfile:
                pwfile.unlink()
        self.run_dir.mkdir(exist_ok=True)
        self._chown(self.run_dir)
        fast = "" if self.durable else "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
        self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60",
            "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.run_dir} {fast}-c max_connections=200",
            "start",
        )
        self._stopped = False
        _register_cleanup(self)
        return self

    def stop(self, mode: str = "fast") -> None:
        if self._stopped or not (self.data_dir / "postmaster.pid").exists():
            self._stopped = True
            return
        with contextlib.suppress(PostgresUnavailable):
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "stop")
        self._stopped = True

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop(mode="immediate")
        if self._owned and self.base_dir is not None:
            shutil.rmtree(self.base_dir, ignore_errors=True)

    # -- addresses -------------------------------------------------------
    def url(self, database: str = "postgres", *, with_password: bool = True) -> str:
        auth = "postgres"
        if self.password and with_password:
            auth += f":{self.password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"


_live: list[PgCluster] = []


def _cleanup_all(*_args: object) -> None:
    while _live:
        _live.pop().destroy()


def _register_cleanup(cluster: PgCluster) -> None:
    if cluster in _live:
        return
    if not _live:
        atexit.register(_cleanup_all)
        for sig in (signal.SIGTERM, signal.SIGHUP):
            previous = signal.getsignal(sig)

            def handler(signum, frame, previous=previous):  # noqa: ANN001
                _cleanup_all()
                if callable(previous):
                    previous(signum, frame)
                else:
                    raise SystemExit(128 + signum)

            with contextlib.suppress(ValueError):  # not in the main thread
                signal.signal(sig, handler)
    _live.append(cluster)
