"""Ctrl-C and SIGTERM as one typed exception, so a stopped run ends with one line, not a traceback.

    with interrupts.raise_on_signals():
        trainer.train(config)          # raises Interrupted; the CLI prints `e.describe()`

Python turns SIGINT into `KeyboardInterrupt` wherever the main thread is, often deep inside
TensorFlow or orbax, and prints a 40-line traceback that says nothing about the run; SIGTERM (a
preempted VM, `kill`) ends the process without a word. Both become `Interrupted`, which the trainer
annotates with the step it reached and the step a restart resumes from.
"""
from __future__ import annotations

import contextlib
import signal
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

    def describe(self) -> str:
        name = signal.Signals(self.signum).name
        if self.step is None:
            return f"interrupted ({name}) before training started; nothing was trained"
        resume = (f"resumes from step {self.resume_step}" if self.resume_step
                  else "starts again from step 0 (no checkpoint was complete)")
        return f"interrupted at step {self.step} ({name}); the same command {resume}"


@contextlib.contextmanager
def raise_on_signals() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM raise `Interrupted` in the main thread (elsewhere: no-op).

    After the first signal the default handlers are back, so a second Ctrl-C during the cleanup
    (waiting for a checkpoint write) still stops the process.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        for s in SIGNALS:
            signal.signal(s, signal.SIG_DFL if s == signal.SIGTERM else signal.default_int_handler)
        raise Interrupted(signum)

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)
