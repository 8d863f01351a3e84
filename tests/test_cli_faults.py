"""Bad inputs and faults through the real `dsbs` CLI, one subprocess per case (issue 12).

Every case in `CASES` runs `python -m dsbs_jax.cli <command> ...` and asserts:
  * the exit status;
  * exactly one stderr line starting `dsbs <command>...: error:` that contains the case's
    substring (the file:line, field, flag or URL at fault);
  * no "Traceback" anywhere in the output;
  * nothing changed in the outputs that existed before (sha256 of every file of the watched
    trees), and with `creates_nothing` no new file either.

Cases are data: append a `Case` (its `setup` prepares files in `ctx`, its `argv` builds the
command line from `ctx`). `tree_hashes`, `run_cli` and `assert_one_error_line` are reusable
for other commands' cases (train, eval, predict, sweep).

Plus the fault test of issue 12: two concurrent rationale jobs on the same shard; the second
exits at once naming the first's pid and host, and the first's output equals a solo run.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import time
from typing import Callable, Optional, Sequence

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from teacher_server import FaultPlan, ServerThread, free_port  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
CHOICES = ["ignore", "enforce", "authoritarian", "yell at", "avoid"]
SECRET = "s3cret-SENTINEL-9d2c"


# --- reusable helpers --------------------------------------------------------------------------

def tree_hashes(*roots: pathlib.Path) -> dict[str, str]:
    """sha256 of every file under the roots, keyed by path (absent roots give nothing)."""
    hashes = {}
    for root in roots:
        root = pathlib.Path(root)
        if root.is_file():
            hashes[str(root)] = hashlib.sha256(root.read_bytes()).hexdigest()
            continue
        for path in sorted(root.rglob("*")) if root.exists() else ():
            if path.is_file():
                hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def run_cli(argv: Sequence[str], env: Optional[dict] = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """`python -m dsbs_jax.cli ARGV` in a subprocess (CPU only, TF quiet)."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu",
                "PYTHONPATH": str(REPO)}
    for inherited in ("DSBS_DATA_ROOT", "DSBS_SPM_PATH"):  # only what a case sets
        full_env.pop(inherited, None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "dsbs_jax.cli", *argv], capture_output=True, text=True,
                          env=full_env, timeout=timeout, cwd=str(REPO))


def assert_one_error_line(result: subprocess.CompletedProcess, prog: str, *fragments: str) -> str:
    """The single `prog...: error:` line of stderr, checked for `fragments`; no traceback anywhere."""
    output = result.stdout + result.stderr
    assert "Traceback" not in output, output[-3000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith(prog) and ": error: " in line]
    assert len(lines) == 1, result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    return lines[0]


def assert_unchanged(before: dict[str, str], after: dict[str, str], creates_nothing: bool) -> None:
    changed = sorted(path for path, digest in before.items() if after.get(path) != digest)
    assert not changed, f"changed or removed: {changed}"
    if creates_nothing:
        assert sorted(set(after) - set(before)) == [], "new files were written"


# --- fixtures shared by every case --------------------------------------------------------------

def cqa_release(root: pathlib.Path, n: int = 12) -> pathlib.Path:
    """A small release-format CQA folder with PaLM-style outputs."""
    folder = root / "cqa"
    (folder / "llm").mkdir(parents=True, exist_ok=True)
    (folder / "cqa_test.json").write_text("".join(
        json.dumps({"id": f"id{i}", "question": f"Question {i}?", "choices": CHOICES, "answer": CHOICES[i % 5]})
        + "\n" for i in range(n)))
    outputs = [f"Because {i}. So the answer is ({'abcde'[i % 5]}) {CHOICES[i % 5]}.\n\nQ: next" for i in range(n)]
    (folder / "llm" / "test_CoT_0.json").write_text(json.dumps(outputs))
    return root


def write_jsonl(path: pathlib.Path, records) -> pathlib.Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


class Shared:
    """What the cases share: a release, an import of it, user files and teacher servers."""

    def __init__(self, root: pathlib.Path):
        from dsbs_jax.data import import_cli

        self.root = root
        self.release = cqa_release(root / "release")
        self.imported = root / "imported"  # an import root: {imported}/cqa
        assert import_cli.main(["--format", "release", "--dataset", "cqa", "--src", str(self.release), "--out",
                                str(self.imported), "--splits", "test"]) == 0
        self.user = write_jsonl(root / "mine.jsonl", [{"q": f"Is {i} even?", "a": ["yes", "no"][i % 2],
                                                       "why": f"{i} mod 2 is {i % 2}."} for i in range(6)])
        self.user_root = root / "user_data"
        assert import_cli.main(["--format", "jsonl", "--dataset", "mine_faults", "--src", str(self.user), "--out",
                                str(self.user_root), "--template", "{q}", "--label_field", "a",
                                "--rationale_field", "why", "--label_set", "yes,no"]) == 0
        self.plain = root / "plain.txt"
        self.plain.write_text("a file, not a directory\n")
        self.servers = {kind: ServerThread(FaultPlan(default=kind)).__enter__()
                        for kind in ("ok", "500", "html", "401", "junk")}
        self.down = f"http://127.0.0.1:{free_port()}"  # nothing listens there

    def close(self) -> None:
        for server in self.servers.values():
            server.__exit__(None, None, None)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    state = Shared(tmp_path_factory.mktemp("faults"))
    yield state
    state.close()


@dataclasses.dataclass
class Ctx:
    """One case's paths: `out` is a fresh directory; `watch` lists the trees that must not change."""

    shared: Shared
    tmp: pathlib.Path
    out: pathlib.Path
    watch: list

    def url(self, kind: str) -> str:
        return self.shared.servers[kind].url


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    command: str  # the `dsbs` subcommand
    argv: Callable[[Ctx], list]
    code: int
    message: Callable[[Ctx], Sequence[str]]  # substrings of the one error line
    setup: Optional[Callable[[Ctx], None]] = None
    creates_nothing: bool = True
    check: Optional[Callable[[Ctx, subprocess.CompletedProcess], None]] = None  # more assertions
    env: Optional[Callable[[Ctx], dict]] = None  # environment variables the command runs with


def _msg(*fragments: str) -> Callable[[Ctx], Sequence[str]]:
    return lambda ctx: fragments


# --- dsbs import --------------------------------------------------------------------------------

def _release_import(ctx: Ctx, *extra: str) -> list:
    return ["--format", "release", "--dataset", "cqa", "--src", str(ctx.shared.release), "--out", str(ctx.out),
            "--splits", "test", *extra]


def _user_import(ctx: Ctx, src: pathlib.Path, *extra: str) -> list:
    return ["--format", src.suffix.lstrip("."), "--dataset", "mine", "--src", str(src), "--out", str(ctx.out),
            "--template", "{q}", "--label_field", "a", *extra]


def _existing_import(ctx: Ctx) -> None:
    from dsbs_jax.data import import_cli

    assert import_cli.main(_release_import(ctx)) == 0


def _existing_import_and_other_source(ctx: Ctx) -> None:
    _existing_import(ctx)
    write_jsonl(ctx.tmp / "cqa.jsonl", [{"id": "x1", "question": "Q?", "choices": CHOICES, "answer": "avoid"}])


def _big_field(ctx: Ctx) -> None:
    records = [{"q": "short", "a": "yes"}, {"q": "Is it long?", "context": "x" * (2 << 20), "a": "yes"}]
    write_jsonl(ctx.tmp / "big.jsonl", records)


def _big_csv(ctx: Ctx) -> None:
    (ctx.tmp / "big.csv").write_text("q,a\nshort,yes\n" + "y" * (1 << 20 | 7) + ",no\n")


def _bad_utf8(ctx: Ctx) -> None:
    lines = [json.dumps({"q": f"Q{i}?", "a": "yes"}).encode() for i in range(5)]
    lines[2] = lines[2][:8] + b"\xff\xfe" + lines[2][8:]
    (ctx.tmp / "bad.jsonl").write_bytes(b"\n".join(lines) + b"\n")


def _bad_record_with_overwrite(ctx: Ctx) -> None:
    _existing_import(ctx)
    write_jsonl(ctx.tmp / "broken.jsonl", [{"q": "fine", "a": "yes"}, {"q": None, "a": "no"}])


IMPORT_CASES = [
    Case("import-negative-limit", "import", lambda c: _release_import(c, "--limit", "-5"), 2,
         _msg("argument --limit: expected an integer >= 1, found -5")),
    Case("import-limit-not-a-number", "import", lambda c: _release_import(c, "--limit", "ten"), 2,
         _msg("argument --limit", "'ten'")),
    Case("import-zero-shards", "import", lambda c: _release_import(c, "--num_shards", "0"), 2,
         _msg("argument --num_shards: expected an integer >= 1, found 0")),
    Case("import-zero-max-field-bytes", "import", lambda c: _release_import(c, "--max_field_bytes", "0"), 2,
         _msg("argument --max_field_bytes")),
    Case("import-into-dataset-of-another-source", "import",
         lambda c: ["--format", "jsonl", "--dataset", "cqa", "--src", str(c.tmp / "cqa.jsonl"), "--out", str(c.out),
                    "--id_field", "id"], 2,
         lambda c: (f"{c.out}/cqa already holds an import of 'cqa' from release 'release'", "--overwrite"),
         setup=_existing_import_and_other_source),
    # A bad record under --overwrite: the old dataset stays whole (the replacement is atomic).
    Case("import-overwrite-with-bad-record-keeps-old", "import",
         lambda c: ["--format", "jsonl", "--dataset", "cqa", "--src", str(c.tmp / "broken.jsonl"), "--out",
                    str(c.out), "--template", "{q}", "--label_field", "a", "--overwrite"],
         1, _msg("broken.jsonl:2: field 'q': missing"), setup=_bad_record_with_overwrite),
    Case("import-field-over-limit", "import", lambda c: _user_import(c, c.tmp / "big.jsonl"), 1,
         _msg("big.jsonl:2: field 'context': value is at least", "over the limit of 1048576 (--max_field_bytes)"),
         setup=_big_field),
    Case("import-csv-field-over-limit", "import", lambda c: _user_import(c, c.tmp / "big.csv"), 1,
         _msg("big.csv:3: field 'q': value is 1048583 bytes", "--max_field_bytes"), setup=_big_csv),
    Case("import-bad-utf8-names-line", "import", lambda c: _user_import(c, c.tmp / "bad.jsonl"), 1,
         _msg("bad.jsonl:3: not UTF-8 text at column 9 (byte 0xff)"), setup=_bad_utf8),
    Case("import-missing-src-file", "import", lambda c: _user_import(c, c.tmp / "absent.jsonl"), 1,
         _msg("absent.jsonl: file not found (fix: check --src")),
    Case("import-out-is-a-file", "import",
         lambda c: _release_import(c)[:-3] + [str(c.shared.plain), "--splits", "test"], 2,
         _msg("--out", "is a file, not a directory")),
    Case("import-unknown-dataset", "import",
         lambda c: ["--format", "release", "--dataset", "nope", "--src", str(c.shared.release), "--out", str(c.out),
                    "--splits", "test"], 2, _msg("Unknown dataset 'nope'")),
    Case("import-missing-split", "import",
         lambda c: _release_import(c)[:-1] + ["valid"], 1, _msg("cqa_valid.json: file not found", "--splits")),
]

# --- dsbs rationales ----------------------------------------------------------------------------

def _job(ctx: Ctx, *extra: str, url: Optional[str] = None, src: Optional[str] = None,
         out: Optional[pathlib.Path] = None, split: str = "test", dataset: str = "cqa") -> list:
    """A rationale job on the imported CQA TFRecords (or `src`, e.g. the JSON release, which a
    process reads without importing TensorFlow: cases that fail before writing stay quick)."""
    return ["--dataset", dataset, "--split", split, "--src", src or str(ctx.shared.imported / "cqa"),
            "--out", str(out or ctx.out), "--base_url", url or ctx.url("ok"), "--model", "toy", "--no_progress",
            "--concurrency", "2", *extra]


def _served(ctx: Ctx, kind: str, *extra: str, url: Optional[str] = None) -> list:
    return _job(ctx, *extra, url=url or ctx.url(kind), src=str(ctx.shared.release))


def _watch_import_root(ctx: Ctx) -> None:
    ctx.watch.append(ctx.shared.imported)


def _hold_lock(ctx: Ctx) -> None:
    from dsbs_jax.rationales.store import JobLock

    ctx.lock = JobLock(str(ctx.out / "cqa" / "_work" / "test.shard-00000-of-00001" / "lock")).__enter__()


def _no_secret(ctx: Ctx, result: subprocess.CompletedProcess) -> None:
    assert SECRET not in result.stdout + result.stderr
    written = "".join(p.read_text(errors="replace") for p in ctx.out.rglob("*") if p.is_file())
    assert SECRET not in written and "user:" not in written


def _nothing_published(ctx: Ctx, result: subprocess.CompletedProcess) -> None:
    assert not (ctx.out / "cqa" / "manifest.json").exists()
    report = json.loads((ctx.out / "cqa" / "_work" / "test.shard-00000-of-00001" / "report.json").read_text())
    assert report["parse_rate"] == 0.0 and report["min_parse_rate"] == 0.5


def _finished_other_job(ctx: Ctx) -> None:
    from dsbs_jax.rationales import cli

    assert cli.main(_job(ctx, "--limit", "3")) == 0  # in this process: TF is loaded here already


RATIONALE_CASES = [
    Case("rationales-zero-concurrency", "rationales", lambda c: _job(c, "--concurrency", "0"), 2,
         _msg("argument --concurrency: expected an integer >= 1, found 0")),
    Case("rationales-negative-limit", "rationales", lambda c: _job(c, "--limit", "-5"), 2,
         _msg("argument --limit: expected an integer >= 1, found -5")),
    Case("rationales-parse-rate-above-one", "rationales", lambda c: _job(c, "--min_parse_rate", "1.5"), 2,
         _msg("argument --min_parse_rate: expected a number in [0, 1], found 1.5")),
    Case("rationales-zero-timeout", "rationales", lambda c: _job(c, "--timeout", "0"), 2,
         _msg("argument --timeout: expected a number > 0, found 0")),
    Case("rationales-negative-retries", "rationales", lambda c: _job(c, "--max_retries", "-1"), 2,
         _msg("argument --max_retries: expected an integer >= 0, found -1")),
    Case("rationales-nan-temperature", "rationales", lambda c: _job(c, "--temperature", "nan"), 2,
         _msg("argument --temperature")),
    Case("rationales-shard-index-out-of-range", "rationales",
         lambda c: _job(c, "--num_shards", "2", "--shard_index", "2"), 2, _msg("--shard_index must be in [0, 2)")),
    Case("rationales-unknown-dataset", "rationales", lambda c: _job(c, dataset="nope"), 2,
         _msg("Unknown dataset 'nope'")),
    Case("rationales-missing-split", "rationales", lambda c: _job(c, split="valid"), 2,
         _msg("Split 'valid' is not in", "manifest.json")),
    Case("rationales-missing-data-root", "rationales", lambda c: _job(c, src=str(c.tmp / "no_such_root" / "cqa")),
         2, lambda c: (f"--src {c.tmp}/no_such_root/cqa does not exist",),
         check=lambda c, r: ("never finished" not in r.stderr) or pytest.fail("says 'never finished'")),
    Case("rationales-out-is-a-file", "rationales", lambda c: _job(c, out=c.shared.plain), 2,
         _msg("--out", "is a file, not a directory")),
    Case("rationales-out-is-an-import-root", "rationales", lambda c: _job(c, out=c.shared.imported), 2,
         _msg("holds `dsbs import` output", "--out"), setup=_watch_import_root),
    Case("rationales-missing-prompt-file", "rationales",
         lambda c: _job(c, "--prompt_file", str(c.tmp / "absent.txt")), 2,
         lambda c: (f"Prompt file {c.tmp}/absent.txt does not exist (--prompt_file)",)),
    Case("rationales-user-data-needs-prompt", "rationales",
         lambda c: ["--dataset", "mine_faults", "--split", "train", "--src", str(c.shared.user_root / "mine_faults"),
                    "--out", str(c.out), "--base_url", c.url("ok"), "--model", "toy"], 2,
         _msg("'mine_faults' has no bundled few-shot prompt; pass --prompt_file")),
    Case("rationales-server-down", "rationales", lambda c: _served(c, "ok", "--max_retries", "0", url=c.shared.down), 1,
         lambda c: (f"Teacher {c.shared.down}/v1/completions failed after 1 attempts", "ClientConnectorError"),
         creates_nothing=False),
    Case("rationales-credentials-in-url-redacted", "rationales",
         lambda c: _served(c, "ok", "--max_retries", "0", url=c.shared.down.replace("//", f"//user:{SECRET}@")), 1,
         lambda c: (f"Teacher {c.shared.down}/v1/completions failed",), creates_nothing=False, check=_no_secret),
    Case("rationales-http-500-forever", "rationales", lambda c: _served(c, "500", "--max_retries", "1"), 1,
         _msg("failed after 2 attempts", "HTTP 500", "--max_retries"), creates_nothing=False),
    Case("rationales-non-json-reply", "rationales", lambda c: _served(c, "html"), 1,
         _msg("HTTP 200 with a body that is not an OpenAI completions reply", "nginx", "--base_url"),
         creates_nothing=False),
    Case("rationales-http-401-not-retried", "rationales", lambda c: _served(c, "401"), 1,
         _msg("HTTP 401", "not retryable"), creates_nothing=False),
    Case("rationales-junk-teacher-below-min-parse-rate", "rationales", lambda c: _served(c, "junk"), 1,
         _msg("parse rate 0.0% (0/12 outputs) is below --min_parse_rate 0.5", "no_answer=12"),
         creates_nothing=False, check=_nothing_published),
    Case("rationales-shard-locked-by-another-process", "rationales", lambda c: _served(c, "ok"), 1,
         lambda c: ("is in use by another `dsbs rationales`", f"pid {os.getpid()} on host {socket.gethostname()}"),
         setup=_hold_lock),
    Case("rationales-other-arguments-than-the-work-dir", "rationales", lambda c: _job(c, "--temperature", "0.7"), 2,
         _msg("holds progress of a job with other arguments", "temperature"), setup=_finished_other_job),
    Case("rationales-merge-unfinished-shard", "rationales",
         lambda c: ["merge", "--out", str(c.out), "--dataset", "cqa", "--split", "test", "--num_shards", "2"], 2,
         _msg("Shard 0 of 2 is not finished")),
]

# --- issue 24: a new user's first tries (import, train, predict, export, demo, sweep) -------------

UNWRITABLE = "/proc/dsbs_no_such_dir"  # exists nowhere and cannot be created, even by root


def _unwritable(flag: str) -> Callable[[Ctx], Sequence[str]]:
    return _msg(f"{flag} {UNWRITABLE}", "pass a directory you can write to")


def _train(ctx: Ctx, dataset: str, *extra: str) -> list:
    return ["--gin_file=models/tiny.gin", "--gin_file=runs/finetune.gin", "--gin.METHOD=standard",
            f"--gin.DATASET={dataset}", "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 8}",
            "--gin.TRAIN_STEPS=2", f"--gin.MODEL_DIR={ctx.out / 'run'}", *extra]


def _dataset_vocabulary(ctx: Ctx) -> None:
    from dsbs_jax.data import import_cli

    assert import_cli.main(["--format", "jsonl", "--dataset", "mine", "--src", str(ctx.shared.user), "--out",
                            str(ctx.tmp / "vdata"), "--template", "{q}", "--label_field", "a",
                            "--train_vocab", "300"]) == 0


def _no_gin_chatter(ctx: Ctx, result: subprocess.CompletedProcess) -> None:
    assert "system_path_file_exists" not in result.stderr, "gin's include log shows despite the quiet screen"


NEW_USER_CASES = [
    Case("import-misspelled-flag-named-before-missing-ones", "import",
         lambda c: ["--fromat", "jsonl", "--dataset", "mine", "--src", str(c.shared.user)], 2,
         _msg("unrecognized argument --fromat (did you mean --format?)")),
    Case("import-out-cannot-be-created", "import",
         lambda c: ["--format", "jsonl", "--dataset", "mine", "--src", str(c.shared.user), "--out", UNWRITABLE,
                    "--template", "{q}", "--label_field", "a"], 2, _unwritable("--out")),
    Case("rationales-out-cannot-be-created", "rationales", lambda c: _job(c, out=pathlib.Path(UNWRITABLE)), 2,
         _unwritable("--out")),
    Case("demo-out-cannot-be-created", "demo", lambda c: ["--out", UNWRITABLE, "--quick"], 2, _unwritable("--out")),
    Case("sweep-out-cannot-be-created", "sweep",
         lambda c: ["--dataset", "cqa", "--data_root", str(c.shared.imported), "--out", UNWRITABLE], 2,
         _unwritable("--out")),
    Case("export-out-cannot-be-created", "export",
         lambda c: ["--checkpoint", str(c.tmp), "--format", "hf", "--out", UNWRITABLE], 2, _unwritable("--out")),
    Case("export-misspelled-flag", "export", lambda c: ["--chekpoint", str(c.tmp), "--format", "hf", "--out",
                                                        str(c.out)], 2,
         _msg("unrecognized argument --chekpoint (did you mean --checkpoint?)")),
    Case("predict-input-is-a-directory", "predict",
         lambda c: ["--checkpoint", str(c.tmp), "--input", str(c.shared.root), "--output", str(c.out / "p.jsonl")], 2,
         lambda c: (f"--input {c.shared.root}: is a directory; pass a JSONL file",)),
    Case("predict-output-cannot-be-created", "predict",
         lambda c: ["--checkpoint", str(c.tmp), "--input", str(c.shared.user), "--output", f"{UNWRITABLE}/p.jsonl"], 2,
         _unwritable("--output")),
    Case("train-model-dir-cannot-be-created", "train",
         lambda c: _train(c, "mine_faults")[:-1] + [f"--gin.MODEL_DIR={UNWRITABLE}"], 2,
         _unwritable("--gin.MODEL_DIR"), check=_no_gin_chatter),
    # No --train_vocab, no GCS: one line naming the flags, before MODEL_DIR exists (creates nothing).
    Case("train-default-vocabulary-off-gcs-names-the-flags", "train", lambda c: _train(c, "mine_faults"), 2,
         _msg("gs://t5-data/vocabs/cc_all.32000/sentencepiece.model", "DSBS_SPM_PATH", "--train_vocab"),
         env=lambda c: {"DSBS_DATA_ROOT": str(c.shared.user_root)}, check=_no_gin_chatter),
    # A pretrained model with a dataset's own vocabulary: refused before any work, naming both fixes.
    Case("train-pretrained-checkpoint-with-a-dataset-vocabulary", "train",
         lambda c: _train(c, "mine", f"--gin.INITIAL_CHECKPOINT_PATH={c.tmp}"), 2,
         lambda c: (f"INITIAL_CHECKPOINT_PATH={c.tmp} has 32128 embedding rows (VOCAB_SIZE)",
                    "only works with the vocabulary it was trained with", "--train_vocab"),
         setup=_dataset_vocabulary, env=lambda c: {"DSBS_DATA_ROOT": str(c.tmp / "vdata")}),
]

CASES = IMPORT_CASES + RATIONALE_CASES + NEW_USER_CASES


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_cli_fault(case: Case, shared: Shared, tmp_path: pathlib.Path):
    out = tmp_path / "out"
    out.mkdir()
    ctx = Ctx(shared=shared, tmp=tmp_path, out=out, watch=[out])
    if case.setup:
        case.setup(ctx)
    argv = [case.command, *case.argv(ctx)]
    before = tree_hashes(*ctx.watch)
    try:
        result = run_cli(argv, env=case.env(ctx) if case.env else None)
    finally:
        if getattr(ctx, "lock", None):
            ctx.lock.__exit__(None, None, None)
    assert result.returncode == case.code, result.stderr[-3000:]
    assert_one_error_line(result, f"dsbs {case.command}", *case.message(ctx))
    assert_unchanged(before, tree_hashes(*ctx.watch), case.creates_nothing)
    if case.check:
        case.check(ctx, result)


def test_the_table_covers_enough_cases():
    assert len(CASES) >= 22 and len({case.name for case in CASES}) == len(CASES)


# --- two concurrent jobs on one shard -----------------------------------------------------------

N = 24
_TIMING = ("wall_time_s", "outputs_per_s")


def _job_command(url: str, src: pathlib.Path, out: pathlib.Path) -> list:
    return ["rationales", "--dataset", "cqa", "--split", "test", "--src", str(src), "--out", str(out),
            "--base_url", url, "--model", "toy", "--concurrency", "1", "--no_progress"]


def _wait_for(predicate, process, what: str) -> None:
    deadline = time.time() + 300
    while not predicate():
        assert process.poll() is None, f"the first job ended before {what}: {process.communicate()}"
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_second_concurrent_job_fails_at_once_and_the_first_equals_a_solo_run(tmp_path):
    from dsbs_jax.data import tfrecords

    src = cqa_release(tmp_path / "release", n=N) / "cqa"
    with ServerThread(FaultPlan()) as server:
        solo = tmp_path / "solo"
        assert run_cli(_job_command(server.url, src, solo)).returncode == 0
        assert len(server.plan.seen) == N
        server.plan.hold_after = N + 3  # the first job answers 3, then waits until the second is done

        first_out = tmp_path / "first"
        env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "JAX_PLATFORMS": "cpu"}
        first = subprocess.Popen([sys.executable, "-m", "dsbs_jax.cli", *_job_command(server.url, src, first_out)],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=str(REPO))
        work = first_out / "cqa" / "_work" / "test.shard-00000-of-00001"
        _wait_for(lambda: (work / "progress.jsonl").exists()
                  and (work / "progress.jsonl").read_bytes().count(b"\n") == 3, first, "its 3 committed outputs")
        before = tree_hashes(first_out / "cqa" / "_work" / "test.shard-00000-of-00001" / "job.json",
                             work / "lock")
        second = run_cli(_job_command(server.url, src, first_out))
        still_running = first.poll() is None
        server.plan.release.set()
        stdout, stderr = first.communicate(timeout=300)

    assert second.returncode == 1
    assert_one_error_line(second, "dsbs rationales", "is in use by another `dsbs rationales`",
                          f"pid {first.pid} on host {socket.gethostname()}")
    assert still_running, "the second job did not fail while the first was running"
    assert first.returncode == 0, stderr[-3000:]
    assert tree_hashes(work / "job.json") == {k: v for k, v in before.items() if k.endswith("job.json")}
    assert len(server.plan.seen) == 2 * N  # the second job sent no request

    got = list(tfrecords.read_split(str(first_out / "cqa"), "test", verify=True))
    want = list(tfrecords.read_split(str(solo / "cqa"), "test", verify=True))
    assert got == want and len(got) == N
    got_manifest, want_manifest = (tfrecords.read_manifest(str(d / "cqa")) for d in (first_out, solo))
    for manifest in (got_manifest, want_manifest):
        for key in _TIMING:
            manifest["splits"]["test"].pop(key)
    got_entry, want_entry = got_manifest["splits"].pop("test"), want_manifest["splits"].pop("test")
    assert {k: (v, want_entry.get(k)) for k, v in got_entry.items() if want_entry.get(k) != v} == {}
    assert got_manifest == want_manifest
    assert got_entry["requests"] == N and got_entry["segments"] == 1
