"""The launch scripts: exact commands under --dry_run, fail-fast errors, shellcheck."""
from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
SCRIPTS = sorted(p for p in LAUNCH.glob("*.sh") if p.name != "common.sh")
TPU = ["--name", "dsbs-test", "--zone", "us-central2-b", "--project", "proj-123"]
DATA = "gs://bucket-x/dsbs/data"


def launch(script: str, *args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if path is not None:
        env["PATH"] = path
    return subprocess.run([str(LAUNCH / script), *args], capture_output=True, text=True, env=env, timeout=60,
                          cwd=REPO)


def dry(script: str, *args: str) -> list[str]:
    result = launch(script, "--dry_run", *args)  # before any `--`, which ends our flags
    assert result.returncode == 0, f"{script} failed:\n{result.stderr}"
    return [line for line in result.stdout.splitlines() if line and not line.startswith("#")]


def test_every_script_is_strict_bash_with_help():
    assert {p.name for p in SCRIPTS} >= {"create_tpu.sh", "setup_tpu.sh", "rationales_tpu.sh", "train_t5x.sh",
                                         "eval_t5x.sh", "resume_t5x.sh", "delete_tpu.sh", "train_gpu.sh"}
    for script in SCRIPTS:
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script.name
        assert "set -euo pipefail" in text, script.name
        assert os.access(script, os.X_OK), f"{script.name} is not executable"
        result = launch(script.name, "--help")
        assert result.returncode == 0, result.stderr
        # The header's first lines: what it does, then the exact command that runs it.
        assert f"launch/{script.name} --" in result.stdout, f"{script.name} --help lacks its command line"
        assert "Expected runtime" in result.stdout and "--dry_run" in result.stdout, script.name


def test_create_queued_spot_v4():
    (create, describe) = dry("create_tpu.sh", *TPU, "--accelerator_type", "v4-8", "--spot", "--queued")
    assert create.startswith("gcloud compute tpus queued-resources create dsbs-test ")
    for part in ("--node-id dsbs-test", "--zone us-central2-b", "--project proj-123", "--accelerator-type v4-8",
                 "--runtime-version tpu-ubuntu2204-base", "--spot"):
        assert part in create, (part, create)
    assert describe.startswith("gcloud compute tpus queued-resources describe dsbs-test")


def test_create_direct_v5e_preemptible_with_runtime_default():
    (create,) = dry("create_tpu.sh", *TPU, "--accelerator_type", "v5litepod-8", "--preemptible")
    assert create.startswith("gcloud compute tpus tpu-vm create dsbs-test ")
    assert "--accelerator-type v5litepod-8" in create and "--version v2-alpha-tpuv5-lite" in create
    assert create.endswith("--preemptible") and "--spot" not in create
    (custom,) = dry("create_tpu.sh", *TPU, "--accelerator_type=v4-32", "--runtime_version=my-runtime")
    assert "--version my-runtime" in custom and "--accelerator-type v4-32" in custom


def test_setup_installs_on_all_workers():
    commands = dry("setup_tpu.sh", *TPU)
    assert any(c.startswith("gcloud compute tpus tpu-vm scp ") and "--worker=all" in c for c in commands)
    install = commands[-1]
    assert install.startswith("gcloud compute tpus tpu-vm ssh dsbs-test --zone us-central2-b --project proj-123 "
                              "--worker=all --command ")
    for part in ("pip install -q -e", ".[tpu]", "t5x @ git+https://github.com/google-research/t5x@main",
                 "jestimator @ git+", "airio @ git+", "--no-deps", "import jax, t5x.train"):
        assert part in install, part
    cloned = dry("setup_tpu.sh", *TPU, "--repo_url", "https://example.org/dsbs.git", "--t5x_ref", "abc123")
    assert "git clone https://example.org/dsbs.git dsbs-jax" in cloned[0] and "--worker=all" in cloned[0]
    assert "t5x@abc123" in cloned[-1]


@pytest.mark.parametrize("num_hosts", [1, 4])
def test_rationales_one_shard_per_host_then_merge(num_hosts):
    commands = dry("rationales_tpu.sh", *TPU, "--num_hosts", str(num_hosts), "--dataset", "cqa",
                   "--data_root", DATA, "--", "--backend", "openai", "--model", "my teacher")
    shards, merge = commands[:-1], commands[-1]
    assert len(shards) == num_hosts
    for host, command in enumerate(shards):
        assert f"--worker={host} " in command
        assert f"--num_shards {num_hosts} --shard_index {host} " in command
        assert f"export DSBS_DATA_ROOT={DATA}" in command
        assert "dsbs rationales --dataset cqa --split train" in command
        assert "--backend openai --model '\\''my teacher'\\''" in command  # quoted through ssh
    assert "--worker=0 " in merge and "--merge" in merge and "--shard_index" not in merge


def test_train_t5x_runs_on_all_workers_with_timestamped_gs_dir():
    result = launch("train_t5x.sh", "--dry_run", *TPU, "--experiment", "cqa_dsbs_gold_base", "--data_root", DATA,
                    "--model_dir", "gs://bucket-x/dsbs/runs/", "--", "--gin.EVAL_PERIOD=500")
    assert result.returncode == 0, result.stderr
    (command,) = result.stdout.splitlines()
    model_dir = re.search(r"MODEL_DIR=(\S+)", result.stderr).group(1)
    assert re.fullmatch(r"gs://bucket-x/dsbs/runs/cqa_dsbs_gold_base/\d{8}_\d{6}", model_dir), model_dir
    assert "--worker=all" in command and "--zone us-central2-b" in command
    assert f"export DSBS_DATA_ROOT={DATA}" in command
    assert "python -m t5x.train --gin_file=gin/t5x/experiments/cqa_dsbs_gold_base.gin" in command
    assert f'--gin.MODEL_DIR="{model_dir}"' in command and command.endswith("--gin.EVAL_PERIOD=500'")
    assert (REPO / "gin/t5x/experiments/cqa_dsbs_gold_base.gin").is_file()


def test_eval_restores_latest_or_a_step():
    run_dir = "gs://bucket-x/dsbs/runs/cqa_dsbs_gold_base/20260101_000000"
    latest = dry("eval_t5x.sh", *TPU, "--eval_config", "cqa_eval_base", "--data_root", DATA, "--model_dir", run_dir)
    assert "--worker=all" in latest[0] and "python -m t5x.eval --gin_file=gin/t5x/experiments/cqa_eval_base.gin" in latest[0]
    assert f'--gin.CHECKPOINT_PATH="{run_dir}"' in latest[0] and 'RestoreCheckpointConfig.mode="latest"' in latest[0]
    assert f'--gin.EVAL_OUTPUT_DIR="{run_dir}/eval_test"' in latest[0]
    assert latest[1] == f"gsutil cat '{run_dir}/eval_test/inference_eval/*-metrics.jsonl'"
    step = dry("eval_t5x.sh", *TPU, "--eval_config", "cqa_eval_base", "--data_root", DATA, "--model_dir", run_dir,
               "--checkpoint_step", "1010000", "--split", "validation")
    assert f'--gin.CHECKPOINT_PATH="{run_dir}/checkpoint_1010000"' in step[0] and "mode=" not in step[0]
    assert 'DatasetConfig.split="validation"' in step[0]


def test_resume_checks_state_and_reuses_model_dir():
    run_dir = "gs://bucket-x/dsbs/runs/cqa_dsbs_gold_base/20260101_000000"
    args = [*TPU, "--accelerator_type", "v4-8", "--queued", "--spot", "--experiment", "cqa_dsbs_gold_base",
            "--data_root", DATA, "--model_dir", run_dir]
    commands = dry("resume_t5x.sh", *args)
    assert commands[0].startswith("gcloud compute tpus queued-resources describe dsbs-test")
    assert f'--gin.MODEL_DIR="{run_dir}"' in commands[-1] and "--worker=all" in commands[-1]
    recreated = dry("resume_t5x.sh", *args, "--recreate")
    assert recreated[0].startswith("gcloud compute tpus queued-resources delete dsbs-test")
    assert recreated[1].startswith("gcloud compute tpus queued-resources create dsbs-test") and "--spot" in recreated[1]
    assert any("pip install" in c for c in recreated), "recreated slices must be set up again"
    assert f'--gin.MODEL_DIR="{run_dir}"' in recreated[-1]


def test_delete():
    assert dry("delete_tpu.sh", *TPU, "--queued") == [
        "gcloud compute tpus queued-resources delete dsbs-test --zone us-central2-b --project proj-123 --force --quiet"]
    assert dry("delete_tpu.sh", *TPU) == [
        "gcloud compute tpus tpu-vm delete dsbs-test --zone us-central2-b --project proj-123 --quiet"]


def test_gpu_single_and_multi_host():
    (single,) = dry("train_gpu.sh", "--trainer", "dsbs", "--gin_file", "gin/t5x/finetune.gin",
                    "--data_root", "/data/dsbs", "--model_dir", "/ckpt")
    assert single.startswith("env DSBS_DATA_ROOT=/data/dsbs python -m dsbs_jax.cli train --gin_file=gin/t5x/finetune.gin")
    assert "JAX_COORDINATOR_ADDRESS" not in single
    multi = dry("train_gpu.sh", "--trainer", "t5x", "--gin_file", "gin/t5x/experiments/cqa_dsbs_gold_base.gin",
                "--data_root", DATA, "--model_dir", "gs://bucket-x/runs", "--num_processes", "4", "--process_id", "3",
                "--coordinator_address", "10.1.2.3:1234", "--run_id", "r7")
    (command,) = multi
    for part in ("JAX_COORDINATOR_ADDRESS=10.1.2.3:1234", "JAX_NUM_PROCESSES=4", "JAX_PROCESS_ID=3",
                 '--gin.MODEL_DIR="gs://bucket-x/runs/cqa_dsbs_gold_base/r7"', "--multiprocess_gpu",
                 "--coordinator_address=10.1.2.3:1234", "--process_count=4", "--process_index=3"):
        assert part in command, part


@pytest.mark.parametrize("script,args,expected", [
    ("create_tpu.sh", ["--name", "x", "--zone", "z"], ["--project", "--accelerator_type"]),
    ("train_t5x.sh", [*TPU, "--experiment", "cqa_dsbs_gold_base"], ["--data_root", "--model_dir"]),
    ("rationales_tpu.sh", TPU, ["--num_hosts", "--dataset", "--data_root"]),
    ("train_gpu.sh", ["--trainer", "t5x"], ["--gin_file", "--data_root", "--model_dir"]),
    ("delete_tpu.sh", [], ["--name", "--zone", "--project"]),
])
def test_missing_flags_fail_fast_naming_them(script, args, expected):
    result = launch(script, "--dry_run", *args)
    assert result.returncode != 0 and result.stdout == ""
    assert "missing required flag" in result.stderr
    for flag in expected:
        assert flag in result.stderr, (flag, result.stderr)


@pytest.mark.parametrize("script,args,message", [
    ("train_t5x.sh", [*TPU, "--experiment", "no_such_exp", "--data_root", DATA, "--model_dir", "gs://b/r"],
     "gin/t5x/experiments/no_such_exp.gin does not exist"),
    ("train_t5x.sh", [*TPU, "--experiment", "cqa_dsbs_gold_base", "--data_root", DATA, "--model_dir", "/local/dir"],
     "--model_dir must be a gs:// URL"),
    ("create_tpu.sh", [*TPU, "--accelerator_type", "tpu9-8"], "pass --runtime_version"),
    ("create_tpu.sh", [*TPU, "--accelerator_type", "v4-8", "--zonee", "x"], "unknown flag --zonee"),
    ("create_tpu.sh", [*TPU, "--accelerator_type", "v4-8", "--spot", "--preemptible"], "exclusive"),
    ("rationales_tpu.sh", [*TPU, "--num_hosts", "two", "--dataset", "cqa", "--data_root", DATA], "positive integer"),
    ("train_gpu.sh", ["--trainer", "t5x", "--gin_file", "gin/t5x/finetune.gin", "--data_root", "/d",
                      "--model_dir", "/m", "--num_processes", "2", "--coordinator_address", "h:1"], "--run_id is required"),
    ("train_gpu.sh", ["--trainer", "t5x", "--gin_file", "gin/t5x/finetune.gin", "--data_root", "/d",
                      "--model_dir", "/m", "--num_processes", "2", "--process_id", "2", "--coordinator_address", "h:1",
                      "--run_id", "r"], "--process_id must be in 0..1"),
])
def test_bad_values_fail_with_a_clear_message(script, args, message):
    result = launch(script, "--dry_run", *args)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_missing_gcloud_fails_fast_without_dry_run(tmp_path):
    # A PATH with the basic tools the scripts use, but no gcloud/gsutil.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "basename", "sed", "date", "env"):
        found = shutil.which(tool)
        assert found, tool
        (bin_dir / tool).symlink_to(found)
    result = launch("create_tpu.sh", *TPU, "--accelerator_type", "v4-8", path=str(bin_dir))
    assert result.returncode != 0
    assert "'gcloud' not found on PATH" in result.stderr and "--dry_run" in result.stderr
    result = launch("train_gpu.sh", "--trainer", "t5x", "--gin_file", "gin/t5x/finetune.gin", "--data_root", "/d",
                    "--model_dir", "/m", path=str(bin_dir))
    assert result.returncode != 0 and "'nvidia-smi' not found on PATH" in result.stderr


def test_shellcheck_clean():
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install -y shellcheck)")
    scripts = [str(p) for p in sorted(LAUNCH.glob("*.sh"))]
    result = subprocess.run([shellcheck, "-x", *scripts], capture_output=True, text=True, cwd=LAUNCH, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dry_run_after_double_dash_is_refused():
    """`--` passes the rest to the remote program: a --dry_run there would not protect anything."""
    result = launch("train_t5x.sh", *TPU, "--experiment", "cqa_dsbs_gold_base", "--data_root", DATA,
                    "--model_dir", "gs://b/r", "--", "--dry_run")
    assert result.returncode != 0 and "put it before '--'" in result.stderr and result.stdout == ""
