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
from typing import Any, Mapping

from dsbs_jax.locks import LockedError, ProcessLock


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


JobLockedError = LockedError  # the name the rationale CLI and tests use


class JobLock(ProcessLock):
    """The rationale job's lock on a shard's work dir (or, with `wait=True`, on a manifest merge)."""

    def __init__(self, path: str, wait: bool = False):
        super().__init__(path, command="`dsbs rationales`", consequence="two jobs would pay for every request twice",
                         wait=wait)
