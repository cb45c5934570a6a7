"""One server per database: an exclusive lock beside the database file, held for the
process's life, and this server's identity as its turns record it.

Restart recovery marks every unfinished turn interrupted and kills its processes; a second
server started on the same database would do that to the first one's live turns. With the
lock, a second server refuses to start instead, naming the database and the pid of the
server that holds it (written into the lock file). The lock is ``flock``: the kernel lets
go of it when its holder dies, even by SIGKILL, so a crash never leaves it stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
import uuid
from pathlib import Path

# Locks this process holds, by lock file: the server's command line takes the lock before
# it binds its port, and the app takes it again (a no-op) when it opens the database.
_held: dict[Path, InstanceLock] = {}


class DatabaseInUse(Exception):
    """Another server holds the database."""


def in_use_message(database: str, holder: str = "") -> str:
    return (
        f"database {database} is in use by another claude-server{holder}; stop it, or start this one "
        "with another --db (or --data-dir)"
    )


def server_id() -> str:
    """This process's identity in the turns it records: host, pid and a random part (a pid
    alone repeats after a reboot or in another container)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class InstanceLock:
    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd = fd
        self._users = 1

    @staticmethod
    def lock_path(db_file: Path) -> Path:
        return db_file.with_name(db_file.name + ".lock")

    @classmethod
    def acquire(cls, db_file: Path, url: str = "") -> InstanceLock:
        """Take the database's lock, or raise ``DatabaseInUse`` naming its holder."""
        path = cls.lock_path(db_file)
        held = _held.get(path)
        if held is not None:
            held._users += 1
            return held
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").split()
            os.close(fd)
            pid = holder[0] if holder else "unknown"
            raise DatabaseInUse(in_use_message(str(db_file), f" (pid {pid})")) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {int(time.time())} {url}\n".encode(), 0)
        lock = cls(path, fd)
        _held[path] = lock
        return lock

    def release(self) -> None:
        self._users -= 1
        if self._users > 0:
            return
        _held.pop(self.path, None)
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
