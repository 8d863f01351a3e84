"""One process at a time in a directory: an exclusive `fcntl.flock` held for the life of a job.

    with ProcessLock(os.path.join(model_dir, "lock"), command="`dsbs train`",
                     consequence="both would write every step"):
        ...

Used by the rationale job (one per shard) and by `dsbs train` (one per MODEL_DIR). The kernel
drops the lock when the holder exits, however it exits (SIGKILL included), so a stale lock file
never blocks a restart; its content (pid, host, start time) only names the holder in the error.
A refused process changes nothing: it neither truncates nor writes the file.
"""
from __future__ import annotations

import json
import os
from typing import Optional


class LockedError(RuntimeError):
    """Another live process holds the lock (its pid and host are in the message)."""


class ProcessLock:
    """An exclusive lock on the file `path` (created with its directory if absent).

    Args:
      path: the lock file.
      command: who takes it, as the error names it, e.g. "`dsbs rationales`".
      consequence: why two at once are refused, for the error, e.g. "two jobs would pay twice".
      fix: what to do instead.
      wait: block until the holder is done instead of failing (short critical sections).
    """

    def __init__(self, path: str, *, command: str, consequence: str,
                 fix: str = "Wait for it to finish, or stop that process first.", wait: bool = False):
        self.path, self.command, self.consequence, self.fix, self.wait = path, command, consequence, fix, wait
        self._fd: Optional[int] = None

    def __enter__(self) -> "ProcessLock":
        import fcntl
        import socket
        import time

        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            os.close(fd)
            raise LockedError(
                f"{os.path.dirname(self.path)} is in use by another {self.command} (pid {holder.get('pid', '?')} "
                f"on host {holder.get('host', '?')}, started {holder.get('started', '?')}); {self.consequence}. "
                f"{self.fix}") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None
