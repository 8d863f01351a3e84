"""The Cloud TPU path rehearsed with real T5X: from a step-1,000,000 checkpoint, the emitted grid, run_all.sh.

What a TPU user does, at toy size on CPU: the real CQA release (a few hundred examples, its PaLM
rationales), a local SentencePiece vocabulary, a T5 1.1-architecture checkpoint in T5X's format at
step 1,000,000 with factored Adafactor slots (`dsbs rehearse`'s), `dsbs sweep --emit t5x
--initial_checkpoint`, the grid's own `run_all.sh` (real `t5x.train`, then `t5x.eval`), and
`dsbs sweep --collect`. Runs where T5X imports (CI installs it from ../shared/t5x).
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("t5x")

from dsbs_jax.experiments import t5x_grid, t5x_rehearsal, tpu_fit  # noqa: E402
from dsbs_jax.models import checkpoints  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
FINETUNE_STEPS = 4
FIRST = t5x_rehearsal.PRETRAINED_STEP
FINAL = FIRST + FINETUNE_STEPS
LEARNING_RATE = 5e-5
_TRAIN_LINE = re.compile(r"\[(\d+)\] collection=train (.*)")


def run_all(grid_dir: pathlib.Path, work_dir: pathlib.Path, *extra: str, env=None) -> subprocess.Popen:
    """The grid's own run_all.sh, as a user starts it (its own process group, so a test can kill it whole)."""
    return subprocess.Popen(["bash", str(grid_dir / "run_all.sh"), "--work_dir", str(work_dir), *extra],
                            cwd=str(grid_dir.parent), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, env=env or {**os.environ, "PYTHONPATH": str(REPO)})


def train_log(work_dir: pathlib.Path, run: t5x_grid.GridRun) -> str:
    return (work_dir / "logs" / f"{run.name}.train.log").read_text()


def logged_train_metrics(*logs: str) -> dict:
    """{step: {metric: value}} from T5X's `[step] collection=train name=value, ...` log lines."""
    steps = {}
    for log in logs:
        for step, body in _TRAIN_LINE.findall(log):
            values = dict(item.split("=", 1) for item in body.split(", ") if "=" in item)
            if "loss" in values:
                steps[int(step)] = {k: float(v) for k, v in values.items() if re.fullmatch(r"[-+0-9.e]+", v)}
    return steps


@pytest.fixture(scope="module")
def rehearsal(release_dir, tmp_path_factory):
    """standard, dsbs and single on 200 CQA examples, each FINETUNE_STEPS past step 1,000,000."""
    out = tmp_path_factory.mktemp("rehearsal")
    grid = t5x_rehearsal.prepare(
        str(out), src=str(release_dir), data_root=None, dataset="cqa", limit=200, vocab_pieces=400,
        methods_=("standard", "dsbs", "single"), fractions=(100.0,), seeds=(0,), train_steps=FINETUNE_STEPS,
        batch_size=8, lengths={"inputs": 96, "targets": 64}, num_partitions=1, eval_period=2, checkpoint_period=2,
        log=lambda _: None)
    grid_dir, work = out / "grid", out / "work"
    proc = run_all(grid_dir, work, "--devices_per_process", "1")
    output, _ = proc.communicate(timeout=1500)
    collected = subprocess.run([sys.executable, "-m", "dsbs_jax.cli", "sweep", "--collect", "--out", "grid"],
                               cwd=str(out), capture_output=True, text=True, timeout=300,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    return {"out": out, "grid": grid, "grid_dir": grid_dir, "work": work, "code": proc.returncode,
            "output": output, "collected": collected}


def test_run_all_trains_and_evaluates_every_run(rehearsal):
    assert rehearsal["code"] == 0, rehearsal["output"][-4000:]
    assert f"{len(rehearsal['grid'].runs)} finished, 0 skipped (finished earlier), 0 failed" in rehearsal["output"]
    assert {r.method for r in rehearsal["grid"].runs} == {"standard", "dsbs", "single"}
    # Progress lines name the step and the ETA, read from T5X's own logs.
    assert re.search(rf"cqa_dsbs_small_seed0: step {FINAL} of {FINAL} \(100 %\), [0-9.]+ steps/s, ETA",
                     rehearsal["output"])


def test_every_run_trains_exactly_the_finetuning_steps_past_the_checkpoint(rehearsal):
    for run in rehearsal["grid"].runs:
        assert (run.first_step, run.final_step) == (FIRST, FINAL)
        steps = sorted(logged_train_metrics(train_log(rehearsal["work"], run)))
        assert steps == list(range(FIRST + 1, FINAL + 1)), (run.name, steps)
        saved = sorted(int(p.name.split("_")[1]) for p in pathlib.Path(run.model_dir).glob("checkpoint_*"))
        assert saved[-1] == FINAL and all(FIRST <= s <= FINAL for s in saved), saved
        state = checkpoints.load_t5x_checkpoint(f"{run.model_dir}/checkpoint_{FINAL}", include_optimizer_state=True,
                                                dtype=None)["state"]
        assert int(state["step"]) == FINAL
        adam = state["param_states"]["1"]["0"]  # chain(clip_by_global_norm, adamw): adamw's ScaleByAdamState
        assert int(adam["count"]) == FINETUNE_STEPS, "AdamW must start fresh at the checkpoint and count only fine-tuning"
        assert set(adam) == {"count", "mu", "nu"}


def test_the_public_style_checkpoint_holds_factored_adafactor_slots_that_t5x_drops(rehearsal):
    run = rehearsal["grid"].runs[0]
    initial = checkpoints.load_t5x_checkpoint(run.initial_checkpoint, include_optimizer_state=True, dtype=None)
    slots = initial["state"]["param_states"]["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"]
    assert slots["v_row"].shape == (32,) and slots["v_col"].shape == (64,), "factored like the public checkpoints"
    assert int(initial["state"]["step"]) == FIRST
    restored = checkpoints.load_t5x_checkpoint(f"{run.model_dir}/checkpoint_{FINAL}", include_optimizer_state=True,
                                               dtype=None)["state"]["param_states"]
    assert "v_row" not in json.dumps(list(_paths(restored)))


def _paths(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _paths(value, prefix + (key,))
    else:
        yield "/".join(prefix)


def test_logged_learning_rate_decays_linearly_from_5e_5_to_zero(rehearsal):
    for run in rehearsal["grid"].runs:
        metrics = logged_train_metrics(train_log(rehearsal["work"], run))
        rates = [metrics[step]["learning_rate/current"] for step in range(FIRST + 1, FINAL + 1)]
        # Hugging Face's linear schedule, as the reference: lr(k) = 5e-5 * (1 - k / N) for fine-tuning step k.
        assert rates == pytest.approx([LEARNING_RATE * (1 - k / FINETUNE_STEPS) for k in range(FINETUNE_STEPS)],
                                      rel=1e-5), (run.name, rates)
        assert rates[0] == pytest.approx(LEARNING_RATE) and rates[-1] <= LEARNING_RATE / FINETUNE_STEPS * 1.0001


def test_each_run_is_evaluated_on_test_and_collect_tables_every_run(rehearsal):
    grid = rehearsal["grid"]
    for run in grid.runs:
        lines = [json.loads(line) for line in pathlib.Path(grid.eval_metrics_file(run)).read_text().splitlines()]
        assert lines[-1]["step"] == FINAL and 0.0 <= lines[-1]["accuracy"] <= 100.0
        assert pathlib.Path(run.model_dir, "eval_test", "inference_eval", f"{run.eval_task}-{FINAL}.jsonl").exists()
    collected = rehearsal["collected"]
    assert collected.returncode == 0, collected.stderr[-3000:]
    table = (rehearsal["grid_dir"] / "results.md").read_text()
    for label in ("Standard finetuning (gold)", "Distilling step-by-step (gold labels)", "Single-task"):
        assert f"| {label}" in table
    teacher = re.search(r"\| Teacher \(PaLM-540B\), few-shot CoT, test \| – \| ([0-9.]+) \|", table)
    assert teacher and 50 < float(teacher.group(1)) < 100  # PaLM's CQA test labels, parsed from the release
    payload = json.loads((rehearsal["grid_dir"] / "results.json").read_text())
    assert len(payload["runs"]) == 3 and "unfinished" not in payload
    assert (rehearsal["grid_dir"] / "accuracy_vs_data.png").stat().st_size > 5_000
    assert table in collected.stdout


def test_a_second_run_all_skips_every_finished_run(rehearsal):
    proc = run_all(rehearsal["grid_dir"], rehearsal["out"] / "work_again", "--devices_per_process", "1")
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "0 finished, 3 skipped (finished earlier), 0 failed" in output, output[-2000:]


def test_memory_estimate_equals_the_arrays_of_the_real_checkpoint(rehearsal):
    """tpu_fit's parameter and AdamW bytes and partition specs are those T5X wrote (toy size, one device).

    Broken variants this catches: an estimate that counted one moment or Adafactor's factored slots
    instead of AdamW's two full ones, or that replicated the `joined_kv`/`mlp`/`vocab`-sharded kernels.
    """
    run = next(r for r in rehearsal["grid"].runs if r.method == "dsbs")
    tree = checkpoints.orbax_tree_metadata(f"{run.model_dir}/checkpoint_{FINAL}/state")
    def arrays(node, prefix=()):
        if isinstance(node, dict):
            for key, value in node.items():
                yield from arrays(value, prefix + (key,))
        else:
            yield prefix, node
    stored = dict(arrays(tree))
    nbytes = lambda m: int(np.prod(m.shape)) * np.dtype(m.dtype).itemsize  # noqa: E731
    params = {"/".join(k[1:]): m for k, m in stored.items() if k[0] == "target"}
    moments = {k: m for k, m in stored.items() if k[:3] == ("state", "param_states", "1") and k[4] in ("mu", "nu")}
    vocab = t5x_rehearsal.padded_vocab_size(400)
    config = t5x_rehearsal.toy_config(vocab)
    total, per_device = tpu_fit.param_bytes_per_device(config, 1)
    assert total == per_device == sum(nbytes(m) for m in params.values())
    estimate = tpu_fit.estimate(config, batch_size=8, lengths={"inputs": 96, "targets": 64}, num_partitions=1,
                                paired=True, tpu=tpu_fit.TpuSlice("cpu", 1, 1 << 40))
    assert estimate.optimizer == sum(nbytes(m) for m in moments.values()) == 2 * total
    specs = tpu_fit.partition_specs(config)
    assert set(specs) == set(params)
    for name, meta in params.items():  # T5X's own partitioning of every parameter
        assert tuple(meta.sharding.partition_spec) == specs[name], name


def test_a_preempted_run_resumes_to_the_planned_step_and_sees_the_same_examples(rehearsal, tmp_path):
    """kill -9 of the whole run_all.sh between two checkpoints, then run_all.sh again.

    T5X restores MODEL_DIR's newest checkpoint (not INITIAL_CHECKPOINT_PATH), TRAIN_STEPS is absolute
    (no drift), and with the data iterator in every checkpoint the steps after the resume equal the
    uninterrupted dsbs run of the rehearsal: same losses, same final parameters. Broken variant this
    catches (tried by hand): `utils.SaveCheckpointConfig.save_dataset = False` restarts the data from
    its first batch, and step 3's loss differs.
    """
    reference = next(r for r in rehearsal["grid"].runs if r.method == "dsbs")
    grid_dir = tmp_path / "grid"
    config = t5x_grid.read_grid(str(rehearsal["grid_dir"]))
    extra = [str(rehearsal["grid_dir"] / "gin" / p) for p in config.extra_gin_files]
    grid = t5x_grid.emit(t5x_grid.EmitConfig(
        dataset="cqa", data_root=config.data_root, out=str(grid_dir), methods=("dsbs",), fractions=(100.0,),
        seeds=(0,), sizes=("small",), initial_checkpoint=reference.initial_checkpoint, finetune_steps=FINETUNE_STEPS,
        batch_size=8, lengths={"inputs": 96, "targets": 64}, num_partitions=1, extra_gin_files=tuple(extra)),
        log=lambda _: None)
    run = grid.runs[0]
    first = run_all(grid_dir, tmp_path / "work1", "--devices_per_process", "1")
    marker = pathlib.Path(run.model_dir) / f"checkpoint_{FIRST + 2}" / "commit_success.txt"
    deadline = time.time() + 600
    while not marker.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)  # the whole VM goes: runner and T5X
    first.communicate()
    assert marker.exists(), "the run should have reached its first periodic checkpoint"
    assert not pathlib.Path(run.model_dir, f"checkpoint_{FINAL}").exists(), "killed too late to test a resume"

    second = run_all(grid_dir, tmp_path / "work2", "--devices_per_process", "1", "--train_only")
    output, _ = second.communicate(timeout=900)
    assert second.returncode == 0, output[-3000:]
    resumed = logged_train_metrics(train_log(tmp_path / "work2", run))
    assert min(resumed) > FIRST + 1 and max(resumed) == FINAL, sorted(resumed)  # resumed, ended on plan
    saved = sorted(int(p.name.split("_")[1]) for p in pathlib.Path(run.model_dir).glob("checkpoint_*"))
    assert saved[-1] == FINAL
    expected = logged_train_metrics(train_log(rehearsal["work"], reference))
    for step in resumed:
        assert resumed[step]["loss"] == expected[step]["loss"], (step, resumed[step], expected[step])
    ours = checkpoints.load_t5x_checkpoint(f"{run.model_dir}/checkpoint_{FINAL}")
    theirs = checkpoints.load_t5x_checkpoint(f"{reference.model_dir}/checkpoint_{FINAL}")
    for (path, a), (_, b) in zip(sorted(_leaves(ours)), sorted(_leaves(theirs))):
        np.testing.assert_array_equal(a, b, err_msg=path)


def _leaves(tree, prefix=()):
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _leaves(value, prefix + (key,))
    else:
        yield "/".join(prefix), tree
