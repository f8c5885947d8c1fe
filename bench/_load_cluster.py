"""bench/load.py's machinery for faults: a throwaway PostgreSQL cluster it can restart, and a tmpfs it fills."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path


# ---- a throwaway PostgreSQL cluster ------------------------------------------------------------------
def _pg_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise SystemExit(f"no {name} under /usr/lib/postgresql: install postgresql")
    return str(found[-1])


def _as_postgres(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(["runuser", "-u", "postgres", "--", *argv], capture_output=True, text=True)
    if check and done.returncode:
        raise SystemExit(f"{Path(argv[0]).name} failed (rc {done.returncode}): {done.stderr.strip()[-500:]}")
    return done


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """initdb + pg_ctl in a temporary folder on a free port; ``restart`` stops it for ``outage`` seconds."""

    def __init__(self, root: Path, max_connections: int) -> None:
        self.data, self.port = root / "pgdata", _free_port()
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root.parent, 0o755)  # mkdtemp's 0700 would keep the postgres user out
        shutil.chown(root, "postgres")
        _as_postgres(_pg_bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres")
        self.options = f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections={max_connections}"
        self.log = root / "pg.log"
        self.start()
        _as_postgres(_pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(self.port), "load")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/load"
        self.peak_connections = 0

    def start(self) -> None:
        _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-o", self.options, "-l", str(self.log), "-w", "start")

    def stop(self) -> None:
        _as_postgres(_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop", check=False)

    def count_connections(self) -> None:
        """Note the client connections open now (the peak is a figure); nothing while the server is down."""
        import psycopg

        with contextlib.suppress(Exception), psycopg.connect(self.url, connect_timeout=2) as conn:
            row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'").fetchone()
            self.peak_connections = max(self.peak_connections, int(row[0]) - 1 if row else 0)

    def restart(self, outage: float) -> None:
        self.stop()
        time.sleep(outage)
        self.start()


def fill_disk(folder: Path, seconds: float) -> None:
    """Fill the tmpfs under ``folder`` to the last byte for ``seconds``, then free it."""
    filler = folder / "filler.bin"
    with contextlib.suppress(OSError), open(filler, "wb") as f:
        while True:
            f.write(b"\0" * 2**20)
    with contextlib.suppress(OSError), open(folder / "filler2.bin", "wb") as f:
        while True:
            f.write(b"\0" * 4096)
    time.sleep(seconds)
    filler.unlink(missing_ok=True)
    (folder / "filler2.bin").unlink(missing_ok=True)


@contextlib.contextmanager
def tmpfs(path: Path, size_mb: int) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
