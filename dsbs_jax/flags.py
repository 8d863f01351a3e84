"""Flag parsing shared by the `dsbs` subcommands: one-line errors and checked numbers.

    p = OneLineParser(prog="dsbs import")
    p.add_argument("--limit", type=int_at_least(1))
    ...
    except Exception as error:
        return report_error("dsbs import", error, verbose=a.verbose, code=2)

Every usage error is one line, `prog: error: argument --limit: expected an integer >= 1, found -5
(see --help)`, with exit status 2, and no usage block or traceback in front of it.
"""
from __future__ import annotations

import argparse
import difflib
import math
import os
import sys
import tempfile
import traceback
from typing import Callable, NoReturn, Optional, Sequence

USAGE_EXIT = 2


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr (argparse prints the usage block too)."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_EXIT, f"{self.prog}: error: {message} (see --help)\n")

    def parse_args(self, args: Optional[Sequence[str]] = None, namespace=None) -> argparse.Namespace:
        """argparse's parse, but a mistyped flag is named before any missing required one.

        argparse checks required flags first, so `--fromat jsonl` used to say "--format is
        required" without naming the typo.
        """
        args = list(sys.argv[1:] if args is None else args)
        unknown = self._unknown_flag(args)
        if unknown:
            self.error(unknown)
        return super().parse_args(args, namespace)

    def _unknown_flag(self, args: Sequence[str]) -> Optional[str]:
        known = [s for action in self._actions for s in action.option_strings]
        for arg in args:
            if arg == "--":
                break
            name = arg.split("=", 1)[0]
            if not name.startswith("--") or name in known:
                continue
            if self.allow_abbrev and any(k.startswith(name) for k in known):
                continue  # a prefix: argparse takes it, or names the ambiguity itself
            close = difflib.get_close_matches(name, known, n=1)
            return f"unrecognized argument {name}" + (f" (did you mean {close[0]}?)" if close else "")
        return None


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse `type`: an integer >= `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, found {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, found {text}")
        return value

    parse.__name__ = f"integer >= {minimum}"
    return parse


def float_in(low: float, high: float = math.inf, *, low_open: bool = False) -> Callable[[str], float]:
    """An argparse `type`: a finite float in [low, high] (or (low, high] with `low_open`)."""
    bracket = "(" if low_open else "["
    what = f"a number in {bracket}{low:g}, {high:g}]" if high != math.inf else (
        f"a number > {low:g}" if low_open else f"a number >= {low:g}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text!r}") from None
        if not math.isfinite(value) or value < low or (low_open and value == low) or value > high:
            raise argparse.ArgumentTypeError(f"expected {what}, found {text}")
        return value

    parse.__name__ = what
    return parse


def report_error(prog: str, error: BaseException, *, verbose: bool = False, code: int = 1,
                 redact: Callable[[str], str] = lambda text: text) -> int:
    """Prints `prog: error: <one line>` (the traceback too, first, under --verbose); returns `code`.

    `dsbs CMD --verbose` reaches here as $DSBS_VERBOSE (the dispatcher takes the flag out).
    """
    if verbose or os.environ.get("DSBS_VERBOSE"):
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    message = error.args[0] if isinstance(error, KeyError) and error.args else (
        str(error) or getattr(error, "message", ""))  # tf.errors.* may keep theirs in .message only
    message = " ".join(redact(str(message)).split()) or type(error).__name__
    print(f"{prog}: error: {message}", file=sys.stderr)
    return code


def check_writable(path: str, flag: str) -> Optional[str]:
    """Why `path` (a local output directory, created later if absent) cannot be written, or None.

    Creates and removes an empty directory in the nearest existing ancestor, so a refusal (and
    an acceptance) leaves the tree as it was: `os.access` alone says yes to root for read-only
    and virtual filesystems (`/proc`), where the later `makedirs` failed with a raw `[Errno 2]`.
    `gs://` and other URLs are not checked here (the write itself reports).
    """
    if "://" in path:
        return None
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        parent = os.path.dirname(probe)
        if parent == probe:
            break
        probe = parent
    if not os.path.isdir(probe):
        return f"{flag} {path}: {probe} is a file, not a directory; pass a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{flag} {path}: {probe} is not writable; pass a directory you can write to"
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".dsbs-write-probe-", dir=probe))
    except OSError as error:
        return (f"{flag} {path}: cannot create a directory in {probe} ({error.strerror or error}); "
                "pass a directory you can write to")
    return None
