"""Ctrl-C and SIGTERM as one typed exception, so a stopped run ends with one line, not a traceback.

    with interrupts.raise_on_signals():
        trainer.train(config)          # raises Interrupted; the CLI prints `e.describe()`

Python turns SIGINT into `KeyboardInterrupt` wherever the main thread is, often deep inside
TensorFlow or orbax, and prints a 40-line traceback that says nothing about the run; SIGTERM (a
preempted VM, `kill`) ends the process without a word. Both become `Interrupted`, which the trainer
annotates with the step it reached and the step a restart resumes from.

A signal handler raises wherever the main thread happens to be, and Python swallows an exception
raised inside a garbage-collector callback or a `__del__` (JAX registers one: the run went on to
the end, after an "Exception ignored in _xla_gc_callback" traceback). So the signal is also kept
as pending, the swallowed report is not printed, and `check()`, which the training loop calls at
every step, raises it again. And an exception raised inside orbax while it waits for a checkpoint
write left its manager unable to finish that write (seen once in the tests: a hang, "cannot
schedule new futures after shutdown"): checkpoint calls run under `deferred()`, where a signal
only marks itself pending and is raised when the call is done.
"""
from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator, Optional

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """The job was stopped by a signal (a BaseException, like KeyboardInterrupt: no `except Exception` eats it).

    Attributes:
      signum: the signal.
      step: the last step the trainer ran (None: stopped before training started).
      resume_step: the newest complete checkpoint, where the same command resumes (0: none yet).
    """

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum
        self.step: Optional[int] = None
        self.resume_step: Optional[int] = None

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process ended by a signal: 128 + its number (130 for Ctrl-C)."""
        return 128 + int(self.signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def describe(self) -> str:
        """The training report: the step reached and where the same command resumes."""
        name = self.signal_name
        if self.step is None:
            return f"interrupted ({name}) before training started; nothing was trained"
        resume = (f"resumes from step {self.resume_step}" if self.resume_step
                  else "starts again from step 0 (no checkpoint was complete)")
        return f"interrupted at step {self.step} ({name}); the same command {resume}"


_pending: Optional[int] = None  # the signal received inside `raise_on_signals`, until the block ends
_deferring = False  # inside `deferred()`: a signal is only recorded


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """A block a signal must not cut short (a checkpoint write); its `Interrupted` comes after it."""
    global _deferring
    outer, _deferring = _deferring, True
    try:
        yield
    finally:
        _deferring = outer
    if not outer:
        check()


def check() -> None:
    """Raises `Interrupted` if a signal arrived and its first raise was swallowed (see the module doc)."""
    if _pending is not None:
        raise Interrupted(_pending)


@contextlib.contextmanager
def raise_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted` in the main thread (elsewhere: no-op).

    After the first signal the default handlers are back, so a second Ctrl-C during the cleanup
    (waiting for a checkpoint write) still stops the process.
    """
    global _pending
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        global _pending
        _pending = signum
        for s in SIGNALS:
            signal.signal(s, signal.SIG_DFL if s == signal.SIGTERM else signal.default_int_handler)
        if not _deferring:
            raise Interrupted(signum)

    def unraisable(report) -> None:  # an Interrupted swallowed by a gc callback: `check()` raises it again
        if not isinstance(report.exc_value, Interrupted):
            previous_hook(report)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    previous_hook, sys.unraisablehook = sys.unraisablehook, unraisable
    try:
        yield
    finally:
        sys.unraisablehook = previous_hook
        for s, old in previous.items():
            signal.signal(s, old)
        _pending = None
