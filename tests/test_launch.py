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
SRC = "gs://bucket-x/dsbs/inputs/cqa"


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
    for part in ("pip install -q -e", ".[tpu,t5x]", "pip install -q --no-deps -r requirements-t5x.txt",
                 "import jax, t5x.train"):
        assert part in install, part
    assert "@main" not in install and "t5x @" not in install  # the pins come from requirements-t5x.txt
    cloned = dry("setup_tpu.sh", *TPU, "--repo_url", "https://example.org/dsbs.git", "--t5x_ref", "abc123")
    assert "git clone https://example.org/dsbs.git dsbs-jax" in cloned[0] and "--worker=all" in cloned[0]
    assert "t5x @ git+https://github.com/google-research/t5x@abc123" in cloned[-1]


def test_t5x_pins_are_verified_commits_in_one_place():
    """requirements-t5x.txt pins T5X cc342d4 and the airio/jestimator commits of docs/tpu.md."""
    lines = [line for line in (REPO / "requirements-t5x.txt").read_text().splitlines()
             if line and not line.startswith("#")]
    pins = dict(re.fullmatch(r"(\w+) @ git\+https://github\.com/[\w-]+/\w+@([0-9a-f]{40})", line).groups()
                for line in lines)
    assert set(pins) == {"t5x", "airio", "jestimator"}
    assert pins["t5x"].startswith("cc342d4")
    doc = (REPO / "docs" / "tpu.md").read_text()
    for name, commit in pins.items():
        assert commit[:7] in doc, f"docs/tpu.md does not name the verified {name} commit {commit[:7]}"
    # The `t5x` extra adds what the three import beyond the core pins, and never an unpinned git URL.
    setup = (REPO / "setup.py").read_text()
    extra = re.search(r'"t5x": \[(.*?)\]', setup, re.S).group(1)
    assert "grain==0.2.12" in extra and "git+" not in extra


def test_help_shows_no_shellcheck_directives():
    for script in SCRIPTS:
        result = launch(script.name, "--help")
        assert "shellcheck" not in result.stdout, f"{script.name} --help prints a shellcheck directive"


@pytest.mark.parametrize("num_hosts", [1, 4])
def test_rationales_one_shard_per_host_then_merge(num_hosts):
    commands = dry("rationales_tpu.sh", *TPU, "--num_hosts", str(num_hosts), "--dataset", "cqa",
                   "--src", SRC, "--out", DATA, "--", "--teacher", "openai", "--model", "my teacher")
    shards = commands[:num_hosts]
    assert len(commands) == num_hosts + (num_hosts > 1)  # one host merges by itself
    for host, command in enumerate(shards):
        assert f"--worker={host} " in command
        assert f"--num_shards {num_hosts} --shard_index {host} " in command
        assert f"export DSBS_DATA_ROOT={DATA}" in command
        assert f"dsbs rationales --dataset cqa --split train --src {SRC} --out {DATA}" in command
        assert "--teacher openai --model '\\''my teacher'\\''" in command  # quoted through ssh
    if num_hosts > 1:
        merge = commands[-1]
        assert "--worker=0 " in merge and "--shard_index" not in merge
        assert f"dsbs rationales merge --out {DATA} --dataset cqa --split train --num_shards {num_hosts}" in merge


def test_train_t5x_runs_on_all_workers_with_timestamped_gs_dir():
    result = launch("train_t5x.sh", "--dry_run", *TPU, "--experiment", "cqa_dsbs_base", "--data_root", DATA,
                    "--model_dir", "gs://bucket-x/dsbs/runs/", "--", "--gin.EVAL_PERIOD=500")
    assert result.returncode == 0, result.stderr
    (command,) = result.stdout.splitlines()
    model_dir = re.search(r"MODEL_DIR=(\S+)", result.stderr).group(1)
    assert re.fullmatch(r"gs://bucket-x/dsbs/runs/cqa_dsbs_base/\d{8}_\d{6}", model_dir), model_dir
    assert "--worker=all" in command and "--zone us-central2-b" in command
    assert f"export DSBS_DATA_ROOT={DATA}" in command
    assert "python -m t5x.train --gin_file=gin/t5x/experiments/cqa_dsbs_base.gin" in command
    assert f'--gin.MODEL_DIR="{model_dir}"' in command and command.endswith("--gin.EVAL_PERIOD=500'")
    assert (REPO / "gin/t5x/experiments/cqa_dsbs_base.gin").is_file()


def test_eval_restores_latest_or_a_step():
    run_dir = "gs://bucket-x/dsbs/runs/cqa_dsbs_base/20260101_000000"
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
    run_dir = "gs://bucket-x/dsbs/runs/cqa_dsbs_base/20260101_000000"
    args = [*TPU, "--accelerator_type", "v4-8", "--queued", "--spot", "--experiment", "cqa_dsbs_base",
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
    multi = dry("train_gpu.sh", "--trainer", "t5x", "--gin_file", "gin/t5x/experiments/cqa_dsbs_base.gin",
                "--data_root", DATA, "--model_dir", "gs://bucket-x/runs", "--num_processes", "4", "--process_id", "3",
                "--coordinator_address", "10.1.2.3:1234", "--run_id", "r7")
    (command,) = multi
    for part in ("JAX_COORDINATOR_ADDRESS=10.1.2.3:1234", "JAX_NUM_PROCESSES=4", "JAX_PROCESS_ID=3",
                 '--gin.MODEL_DIR="gs://bucket-x/runs/cqa_dsbs_base/r7"', "--multiprocess_gpu",
                 "--coordinator_address=10.1.2.3:1234", "--process_count=4", "--process_index=3"):
        assert part in command, part


@pytest.mark.parametrize("script,args,expected", [
    ("create_tpu.sh", ["--name", "x", "--zone", "z"], ["--project", "--accelerator_type"]),
    ("train_t5x.sh", [*TPU, "--experiment", "cqa_dsbs_base"], ["--data_root", "--model_dir"]),
    ("rationales_tpu.sh", TPU, ["--num_hosts", "--dataset", "--src", "--out"]),
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
    ("train_t5x.sh", [*TPU, "--experiment", "cqa_dsbs_base", "--data_root", DATA, "--model_dir", "/local/dir"],
     "--model_dir must be a gs:// URL"),
    ("create_tpu.sh", [*TPU, "--accelerator_type", "tpu9-8"], "pass --runtime_version"),
    ("create_tpu.sh", [*TPU, "--accelerator_type", "v4-8", "--zonee", "x"], "unknown flag --zonee"),
    ("create_tpu.sh", [*TPU, "--accelerator_type", "v4-8", "--spot", "--preemptible"], "exclusive"),
    ("rationales_tpu.sh", [*TPU, "--num_hosts", "two", "--dataset", "cqa", "--src", SRC, "--out", DATA],
     "positive integer"),
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
    result = launch("train_t5x.sh", *TPU, "--experiment", "cqa_dsbs_base", "--data_root", DATA,
                    "--model_dir", "gs://b/r", "--", "--dry_run")
    assert result.returncode != 0 and "put it before '--'" in result.stderr and result.stdout == ""


# --------------------------------------------------------------------------------------------
# Every command the scripts generate, parsed by the real CLIs
# --------------------------------------------------------------------------------------------

RUN_DIR = "gs://bucket-x/dsbs/runs/cqa_dsbs_base/20260101_000000"
# One --dry_run per script and mode; together they print every command the scripts can generate.
DRY_RUNS = [
    ("create_tpu.sh", [*TPU, "--accelerator_type", "v4-8", "--spot", "--queued"]),
    ("setup_tpu.sh", TPU),
    ("setup_tpu.sh", [*TPU, "--repo_url", "https://example.org/dsbs.git"]),
    ("rationales_tpu.sh", [*TPU, "--num_hosts", "1", "--dataset", "cqa", "--src", SRC, "--out", DATA, "--",
                           "--teacher", "jax", "--jax_checkpoint", "gs://bucket-x/teacher"]),
    ("rationales_tpu.sh", [*TPU, "--num_hosts", "4", "--dataset", "cqa", "--src", SRC, "--out", DATA, "--",
                           "--teacher", "openai", "--base_url", "http://10.0.0.5:8000", "--model", "m"]),
    ("train_t5x.sh", [*TPU, "--experiment", "cqa_dsbs_base", "--data_root", DATA, "--model_dir", "gs://b/r"]),
    ("eval_t5x.sh", [*TPU, "--eval_config", "cqa_eval_base", "--data_root", DATA, "--model_dir", RUN_DIR]),
    ("eval_t5x.sh", [*TPU, "--eval_config", "cqa_eval_base", "--data_root", DATA, "--model_dir", RUN_DIR,
                     "--checkpoint_step", "1010000"]),
    ("resume_t5x.sh", [*TPU, "--accelerator_type", "v4-8", "--queued", "--spot", "--experiment",
                       "cqa_dsbs_base", "--data_root", DATA, "--model_dir", RUN_DIR, "--recreate"]),
    ("delete_tpu.sh", [*TPU, "--queued"]),
    ("train_gpu.sh", ["--trainer", "dsbs", "--gin_file", "gin/experiments/cqa_dsbs_base.gin",
                      "--data_root", "/data", "--model_dir", "/ckpt", "--num_processes", "2", "--process_id", "1",
                      "--coordinator_address", "10.0.0.2:1234", "--run_id", "r1"]),
    ("train_gpu.sh", ["--trainer", "t5x", "--gin_file", "gin/t5x/experiments/cqa_dsbs_base.gin",
                      "--data_root", "/data", "--model_dir", "/ckpt", "--num_processes", "2", "--process_id", "0",
                      "--coordinator_address", "10.0.0.2:1234", "--run_id", "r1"]),
]
# Flags of T5X's entry points at git cc342d4 (t5x/train.py, t5x/eval.py `flags.DEFINE_*`), plus
# absl's logging flag; `--gin.NAME=VALUE` is T5X's shorthand for a binding.
T5X_FLAGS = {
    "t5x.train": {"gin_file", "gin_bindings", "gin_search_paths", "tfds_data_dir", "seqio_additional_cache_dirs",
                  "multiprocess_gpu", "coordinator_address", "process_count", "process_index",
                  "initialization_timeout", "alsologtostderr"},
    "t5x.eval": {"gin_file", "gin_bindings", "gin_search_paths", "tfds_data_dir", "alsologtostderr"},
}


def statements(line: str) -> list[list[str]]:
    """The commands in one printed line: itself, and the `;`/`&&`/`||`-separated parts of an ssh --command."""
    import shlex

    argv = shlex.split(line)
    out = [argv]
    if "--command" in argv:
        lexer = shlex.shlex(argv[argv.index("--command") + 1], posix=True, punctuation_chars=";&|()")
        lexer.whitespace_split = True
        current: list[str] = []
        for token in lexer:
            if set(token) <= set(";&|()"):
                out.append(current)
                current = []
            else:
                current.append(token)
        out.append(current)
    commands = []
    for command in out:
        while command and (command[0] == "env" or re.fullmatch(r"[A-Z_]+=.*", command[0])):
            command = command[1:]  # `env VAR=... cmd`
        if command:
            commands.append(command)
    return commands


def _dsbs_errors(args: list[str]) -> list[str]:
    """Parses `dsbs ARGS` with the parser its subcommand really uses."""
    from dsbs_jax import cli, gin_utils
    from dsbs_jax.data import import_cli
    from dsbs_jax.rationales import cli as rationales_cli

    name, rest = args[0], args[1:]
    if name not in cli.SUBCOMMANDS:
        return [f"dsbs {name}: no such subcommand"]
    if name in ("train", "eval"):
        flags = gin_utils.parse_flags(rest)
        errors = [f"dsbs {name}: unknown flags {list(flags.rest)}"] if flags.rest else []
        errors += [f"dsbs {name}: --gin_file={f} does not resolve" for f in flags.files
                   if not (REPO / f).is_file() and not (gin_utils.GIN_DIR / f).is_file()]
        return errors
    parser = {"import": import_cli._parser, "rationales": rationales_cli._job_parser}.get(name)
    if name == "rationales" and rest[:1] == ["merge"]:
        parser, rest = rationales_cli._merge_parser, rest[1:]
    if parser is None:
        return [f"dsbs {name}: this test does not know its parser; add it"]
    import contextlib
    import io

    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser().parse_args(rest)
    except SystemExit:
        return [f"dsbs {' '.join(args)}: {stderr.getvalue().strip().splitlines()[-1]}"]
    return []


def _t5x_errors(entry: str, args: list[str]) -> list[str]:
    import test_gin_t5x

    errors, gin_files, flag_macros = [], [], set()
    for arg in args:
        name, _, value = arg.lstrip("-").partition("=")
        if name == "gin_file":
            gin_files.append(value)
        elif name.startswith("gin."):
            if re.fullmatch(r"[A-Z0-9_]+", name[4:]):
                flag_macros.add(name[4:])
        elif name not in T5X_FLAGS[entry]:
            errors.append(f"python -m {entry}: unknown flag {arg}")
    if not gin_files:
        errors.append(f"python -m {entry}: no --gin_file")
    return errors + test_gin_t5x.t5x_command_errors(entry, gin_files, flag_macros)


@pytest.mark.parametrize("script,args", DRY_RUNS, ids=[f"{s}-{i}" for i, (s, _) in enumerate(DRY_RUNS)])
def test_generated_commands_parse_with_the_real_clis(script, args, monkeypatch):
    checked, errors = 0, []
    for line in dry(script, *args):
        for command in statements(line):
            if command[0] == "dsbs":
                errors += _dsbs_errors(command[1:])
            elif command[:3] == ["python", "-m", "dsbs_jax.cli"]:
                errors += _dsbs_errors(command[3:])
            elif command[:2] == ["python", "-m"] and command[2].startswith("t5x."):
                errors += _t5x_errors(command[2], command[3:])
            else:
                continue
            checked += 1
    assert not errors, "\n".join(errors)
    if script in ("rationales_tpu.sh", "train_t5x.sh", "eval_t5x.sh", "resume_t5x.sh", "train_gpu.sh"):
        assert checked, f"{script}: no dsbs/t5x command found in its --dry_run output"


def test_run_grid_runs_the_emitted_grid_on_all_workers():
    grid = "gs://bucket-x/dsbs/grids/cqa"
    (command,) = dry("run_grid_t5x.sh", *TPU, "--grid", grid + "/", "--only", "cqa_dsbs_base_seed0", "--",
                     "--gin.EVAL_PERIOD=500")
    assert command.startswith("gcloud compute tpus tpu-vm ssh dsbs-test --zone us-central2-b --project proj-123 "
                              "--worker=all --command ")
    assert (f"python -m dsbs_jax.experiments.t5x_runner --grid {grid} --work_dir dsbs_grid_logs "
            "--only cqa_dsbs_base_seed0 -- --gin.EVAL_PERIOD=500") in command
    refused = launch("run_grid_t5x.sh", *TPU, "--grid", "/local/grid", "--dry_run")
    assert refused.returncode == 2 and "--grid must be a gs:// URL" in refused.stderr
