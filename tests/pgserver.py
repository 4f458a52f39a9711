"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl in a temp dir, no service.

The server listens on a free loopback port, keeps its unix socket inside its
own directory, runs with fsync on and trusts loopback connections (nothing but
this machine's tests reach it). PostgreSQL refuses to run as root, so when the
tests run as root (CI does) the data directory belongs to ``nobody`` and the
server runs as that user. Each test gets its own schema (``fresh_url``), so
one server serves the whole run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import psycopg
from testkit import free_port, wait_until

__all__ = ["PostgresServer", "find_pg_bin", "missing_message"]

_UNPRIVILEGED = "nobody"


def find_pg_bin() -> Path | None:
    """The directory holding initdb and pg_ctl (PATH first, then Debian's versioned dirs)."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(found).resolve().parent
    versions = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0,
    )
    return Path(versions[-1]).parent if versions else None


def missing_message() -> str:
    return (
        "PostgreSQL (initdb, pg_ctl) is not installed (./bin/test installs it with apt-get as root)"
    )


class PostgresServer:
    """One PostgreSQL server in a temp dir, on a free loopback port.

    Attributes:
        port: the TCP port it listens on (127.0.0.1).
        url: a superuser URL of its ``postgres`` database.
    """

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.root = Path(tempfile.mkdtemp(prefix="actorflow-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self._as_root = os.geteuid() == 0
        if self._as_root:
            user = pwd.getpwnam(_UNPRIVILEGED)
            os.chown(self.root, user.pw_uid, user.pw_gid)
            self._ids = (user.pw_uid, user.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-instructions",
        )
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(
                f"listen_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.root}'\nfsync = on\n"
                "synchronous_commit = on\nmax_connections = 200\nshared_buffers = 64MB\n"
            )
        self.start()

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def fresh_url(self, prefix: str = "t") -> str:
        """The URL of a new, empty schema (the store creates its tables there)."""
        schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
        return f"{self.url}?options=-csearch_path%3D{schema}"

    def start(self) -> None:
        """Start the server and wait until it takes connections."""
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "start"
        )
        wait_until(self._answers, timeout=30, what="postgres accepting connections")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: disconnect clients; ``immediate``: like a crash)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop", check=False)

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _answers(self) -> bool:
        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def _run(self, tool: str, *args: str, check: bool = True) -> None:
        command = [str(self.bindir / tool), *args]
        if self._as_root:
            uid, gid = self._ids
            command = [
                "setpriv",
                f"--reuid={uid}",
                f"--regid={gid}",
                "--clear-groups",
                "--",
                *command,
            ]
        done = subprocess.run(
            command, capture_output=True, text=True, cwd=self.root, check=False, timeout=120
        )
        if check and done.returncode != 0:
            log = self.root / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}\n{tail}")
