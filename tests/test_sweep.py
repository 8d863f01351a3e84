"""`dsbs sweep` on a tiny grid: results, skip-finished after an interruption, and T5X emission."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

from dsbs_jax.experiments import demo, sweep


def _command(out, data_root, spm):
    return [sys.executable, "-m", "dsbs_jax.cli", "sweep", "--dataset", "demo_math", "--data_root", str(data_root),
            "--out", str(out), "--spm_path", spm, "--methods", "standard,dsbs", "--fractions", "50,100",
            "--seeds", "0,1", "--sizes", "tiny", "--train_steps", "8", "--batch_size", "16", "--inputs_length", "64",
            "--targets_length", "48", "--eval_num_examples", "20"]


def test_sweep_skips_finished_runs_after_an_interruption(tmp_path):
    data_dir = demo.build_data(str(tmp_path / "demo"), {"train": 80, "valid": 10, "test": 20}, "annotations", None, 0)
    from dsbs_jax.data.vocab import train_sentencepiece
    from dsbs_jax.experiments import demo_data

    spm = train_sentencepiece(demo_data.vocabulary_texts(demo_data.generate({"train": 80}, 0)),
                              str(tmp_path / "spm"), vocab_size=128)
    out = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    # demo_math's spec must be known in the subprocess: the sweep registers tasks from the manifest.
    process = subprocess.Popen(_command(out, pathlib.Path(data_dir).parent, spm), env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / "runs" / "standard" / "tiny" / "frac50" / "seed0" / "result.json"
    deadline = time.time() + 300
    while not first.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert first.exists(), "the first run should have finished before the kill"
    finished_before = {p: p.stat().st_mtime_ns for p in out.glob("runs/**/result.json")}
    assert 1 <= len(finished_before) < 8

    result = subprocess.run(_command(out, pathlib.Path(data_dir).parent, spm), env=env, capture_output=True,
                            text=True, check=True)
    assert result.stdout.count("skipped (finished earlier)") == len(finished_before)
    for path, mtime in finished_before.items():
        assert path.stat().st_mtime_ns == mtime  # not retrained
    runs = json.loads((out / "results.json").read_text())["runs"]
    assert len(runs) == 8 and {(r["method"], r["fraction"], r["seed"]) for r in runs} == {
        (m, f, s) for m in ("standard", "dsbs") for f in (50.0, 100.0) for s in (0, 1)}
    table = (out / "results.md").read_text()
    assert "(n=2)" in table and "±" in table
    assert (out / "results.csv").read_text().count("\n") == 5
    assert (out / "accuracy_vs_data.png").stat().st_size > 10_000


def test_emit_t5x_commands(tmp_path, capsys):
    """Each grid point: the generated experiment's body plus the sweep's own steps, batch, lr, lengths and seed."""
    from dsbs_jax import gin_gen
    from dsbs_jax.data import schema, tfrecords

    for split in ("train", "valid", "test"):
        tfrecords.write_split(str(tmp_path / "cqa"), split, [schema.Example(
            id=f"{split}0", dataset="cqa", split=split, input="q", label="bank", teacher_label="bank",
            rationales=("r",))], num_shards=1)
    assert sweep.main(["--dataset", "cqa", "--data_root", str(tmp_path), "--out", str(tmp_path / "o"), "--emit", "t5x",
                       "--methods", "standard,dsbs_llm", "--fractions", "25,100", "--seeds", "3", "--sizes", "base",
                       "--model_dir_root", "gs://bucket/x", "--train_steps", "777", "--batch_size", "48",
                       "--learning_rate", "3e-4", "--inputs_length", "320", "--targets_length", "96"]) == 0
    assert "wrote 4 runs to" in capsys.readouterr().out
    commands = (tmp_path / "o" / "commands.sh").read_text().splitlines()
    trains = [line for line in commands if line.startswith("python -m t5x.train ")]
    assert len(trains) == 4 and commands[0] == "#!/usr/bin/env bash"
    gin_file = tmp_path / "o" / "gin" / "cqa_dsbs_llm_frac25_base_seed3.gin"
    assert any("--gin_file=gin/cqa_dsbs_llm_frac25_base_seed3.gin" in line and
               "gs://bucket/x/cqa_dsbs_llm_frac25_base_seed3" in line for line in trains)
    text = gin_file.read_text()
    assert "\n".join(gin_gen.t5x_experiment_body(gin_gen.Experiment("cqa", "dsbs_llm", "base", 25.0))) in text
    for setting in ("FINETUNE_STEPS = 777", "TRAIN_STEPS = 1000777", "BATCH_SIZE = 48", "LEARNING_RATE = 0.0003",
                    "RANDOM_SEED = 3", 'TASK_FEATURE_LENGTHS = {"inputs": 320, "targets": 96}',
                    'MIXTURE_OR_TASK_NAME = "cqa_paired_llm_frac25"', 'EVAL_MIXTURE_OR_TASK_NAME = "cqa_label_gold"',
                    "include 'gin/t5x/paired.gin'"):
        assert setting in text, setting
    standard = (tmp_path / "o" / "gin" / "cqa_standard_base_seed3.gin").read_text()
    assert 'EVAL_MIXTURE_OR_TASK_NAME = "cqa_standard_gold"' in standard and "paired.gin" not in standard
    assert (tmp_path / "o" / "run_all.sh").read_text().startswith("#!/usr/bin/env bash")
    assert sweep.main(["--dataset", "cqa", "--data_root", str(tmp_path), "--out", str(tmp_path / "o2"), "--emit",
                       "t5x", "--optimizer", "adafactor"]) == 2
    assert "--emit t5x" in capsys.readouterr().err
