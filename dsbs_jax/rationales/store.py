"""Exactly-once progress (an append-only JSONL log of finished ids, safe against SIGKILL) and the
job lock that keeps a second process off the same shard.

Each line is `{"id", "outputs", "prompt_tokens", "completion_tokens", "crc"}` where `crc` is a
sha256 prefix of the rest. A process killed mid-write leaves at most one torn last line, which
`open` truncates away; everything before it is committed. Lines are flushed as they finish
(enough against a killed process) and fsynced every `fsync_every` lines (against a lost machine).
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Mapping, Optional


def _crc(payload: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode("utf-8")).hexdigest()[:16]


class ProgressLog:
    """The committed results of one shard of a job (a local file: preemptible hosts resume locally
    or from a copied work dir; final outputs go to gs:// through tf.io.gfile)."""

    def __init__(self, path: str, fsync_every: int = 16):
        self.path = path
        self.fsync_every = fsync_every
        self.records: dict[str, dict] = {}
        self._unsynced = 0
        os.makedirs(os.path.dirname(path), exist_ok=True)
        good_bytes = 0
        if os.path.exists(path):
            with open(path, "rb") as f:
                for raw in f:
                    if not raw.endswith(b"\n"):
                        break  # torn tail
                    try:
                        record = json.loads(raw)
                        crc = record.pop("crc")
                    except (ValueError, KeyError):
                        break
                    if crc != _crc(record):
                        break
                    self.records.setdefault(record["id"], record)
                    good_bytes += len(raw)
            if good_bytes != os.path.getsize(path):
                with open(path, "r+b") as f:
                    f.truncate(good_bytes)
        self._file = open(path, "ab")

    def __contains__(self, example_id: str) -> bool:
        return example_id in self.records

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: Mapping[str, Any]) -> None:
        """Commits one finished id (ignored if already committed: exactly once)."""
        record = dict(record)
        if record["id"] in self.records:
            return
        line = json.dumps({**record, "crc": _crc(record)}, sort_keys=True).encode("utf-8") + b"\n"
        self._file.write(line)
        self._file.flush()
        self.records[record["id"]] = record
        self._unsynced += 1
        if self._unsynced >= self.fsync_every:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._file.fileno())
        self._unsynced = 0

    def close(self) -> None:
        if not self._file.closed:
            self.sync()
            self._file.close()


class JobLockedError(RuntimeError):
    """Another live process holds the lock (its pid and host are in the message)."""


class JobLock:
    """An exclusive `fcntl.flock` on a lock file, held for the life of a job.

    The kernel drops the lock when the holder exits, however it exits (SIGKILL included), so a
    stale lock file never blocks a restart; its content (pid, host, start time) only names the
    holder for the error message. A refused process changes nothing: it neither truncates nor
    writes the file. `wait=True` blocks instead of failing (short critical sections).
    """

    def __init__(self, path: str, wait: bool = False):
        self.path, self.wait = path, wait
        self._fd: Optional[int] = None

    def __enter__(self) -> "JobLock":
        import fcntl
        import socket
        import time

        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            os.close(fd)
            raise JobLockedError(
                f"{os.path.dirname(self.path)} is in use by another `dsbs rationales` (pid {holder.get('pid', '?')} "
                f"on host {holder.get('host', '?')}, started {holder.get('started', '?')}); two jobs would pay for "
                "every request twice. Wait for it to finish, or stop that process first.") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None
