"""Multi-host `dsbs train`: two real processes on 127.0.0.1 joined by `jax.distributed` (gloo).

Each process has 4 fake CPU devices; together they form an 8-device (data 4, model 2) mesh, train
a tiny T5 for 5 steps and checkpoint. The final parameters must equal a one-process run on 8
devices. For that the two runs must see the same global batches: SeqIO shuffles after repeating,
so a batch of a one-host and of a two-host stream only hold the same examples when every training
example is the same; which shard each host reads is checked from SeqIO's own log lines instead.
"""
from __future__ import annotations

import json
import os
import pathlib
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from dsbs_jax.data import schema, tfrecords
from dsbs_jax.train import distributed

REPO = pathlib.Path(__file__).resolve().parents[1]
STEPS = 5


def _example(split: str, i: int) -> schema.Example:
    return schema.Example(id=f"{split}-{i}", dataset="same", split=split, input="4 k 9 1", label="k",
                          teacher_label="k", rationales=("the letter among 4 k 9 1 is k",), teacher_meta={})


@pytest.fixture(scope="module")
def data(tmp_path_factory, letters_root):
    root = tmp_path_factory.mktemp("multihost")
    spm = letters_root[1]
    for split, n in (("train", 32), ("test", 8)):
        tfrecords.write_split(str(root / "data" / "same"), split, [_example(split, i) for i in range(n)],
                              num_shards=2)
    return root / "data", spm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(model_dir: pathlib.Path, data, devices: int, extra_env=None) -> subprocess.Popen:
    data_root, spm = data
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JAX_", "SLURM_", "OMPI_", "TPU_"))}
    env.update({"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu",
                "JAX_CPU_COLLECTIVES_IMPLEMENTATION": "gloo", "DSBS_DATA_ROOT": str(data_root),
                "DSBS_SPM_PATH": spm, "PYTHONPATH": str(REPO), **(extra_env or {})})
    # SeqIO logs the shard each host reads at INFO, which `dsbs` hides unless --verbose.
    env["DSBS_VERBOSE"] = "1"
    command = [sys.executable, "-m", "dsbs_jax.cli", "train", "--gin_file=models/tiny.gin",
               "--gin_file=runs/finetune.gin", "--gin.MIXTURE_OR_TASK_MODULE='tasks'",
               "--gin.MIXTURE_OR_TASK_NAME='same_standard_gold'",
               "--gin.TASK_FEATURE_LENGTHS={'inputs': 16, 'targets': 8}", f"--gin.MODEL_DIR='{model_dir}'",
               f"--gin.TRAIN_STEPS={STEPS}", "--gin.BATCH_SIZE=8", "--gin.VOCAB_SIZE=128", "--gin.MESH_SHAPE=(4, 2)",
               "--gin.PACK=False", "--gin.DROPOUT_RATE=0.0", "--gin.EVAL_PERIOD=-1", f"--gin.CHECKPOINT_PERIOD={STEPS}",
               "--gin.LEARNING_RATE=0.01", "--gin.trainer.TrainConfig.progress_bar=False",
               "--gin.trainer.TrainConfig.log_period=1"]
    return subprocess.Popen(command, env=env, cwd=str(REPO), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(proc: subprocess.Popen, name: str) -> tuple[str, str]:
    try:
        out, err = proc.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{err[-4000:]}"
    return out, err


def _params(model_dir: pathlib.Path):
    import jax

    from dsbs_jax.train.inference import load_for_inference

    params, _, record = load_for_inference(str(model_dir))
    assert record["step"] == STEPS
    return {jax.tree_util.keystr(k): np.asarray(v) for k, v in jax.tree_util.tree_leaves_with_path(params)}


@pytest.fixture(scope="module")
def runs(data, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    port = _free_port()
    hosts = [_train(base / "two", data, 4, {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
                                           "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": str(i)}) for i in range(2)]
    one = _train(base / "one", data, 8)  # at the same time: it shares nothing with the two-process run
    host_logs = [_finish(p, f"process {i}") for i, p in enumerate(hosts)]
    single = _finish(one, "one-process run")
    for name, (out, err) in [("process0", host_logs[0]), ("process1", host_logs[1]), ("single", single)]:
        (base / f"{name}.log").write_text(out + "\n--- stderr ---\n" + err)  # for a failing assertion's reader
    return base, host_logs, single


def test_two_processes_train_like_one(runs):
    base, host_logs, _ = runs
    for i, (_, err) in enumerate(host_logs):
        assert f"process {i} of 2, 4 local / 8 global devices" in err, err[-3000:]
    one, two = _params(base / "one"), _params(base / "two")
    assert one.keys() == two.keys() and len(one) > 20
    init_like = 0
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-6, err_msg=name)
        init_like += np.allclose(one[name], 0)
    assert init_like < len(one)
    losses = [json.loads(line)["loss"] for line in (base / "one" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == STEPS and losses[-1] < losses[0]  # it trained


def test_checkpoint_written_once_by_both_hosts_together(runs):
    base, host_logs, _ = runs
    ckpt = base / "two" / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == [str(STEPS)], "one step directory, no tmp leftovers"
    state = ckpt / str(STEPS) / "state"
    # OCDBT: each process writes only its own shards, into its own sub-store; the metadata once.
    assert sorted(p.name for p in state.glob("ocdbt.process_*")) == ["ocdbt.process_0", "ocdbt.process_1"]
    assert len(list(state.glob("_METADATA"))) == 1
    # Only process 0 writes the run record and the metrics log (one line per step, not two).
    lines = (base / "two" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == list(range(1, STEPS + 1))
    assert (base / "two" / "dsbs_run.json").is_file()
    for out, _ in host_logs:  # both print the final metrics (the JSON object that ends stdout)
        assert json.loads(out[out.rindex("\n{"):])["step"] == STEPS, out[-2000:]


def test_each_host_reads_its_own_shard(runs):
    _, host_logs, (_, single_err) = runs

    def shards(err):  # SeqIO logs the seqio.ShardInfo(process_index, process_count) it reads
        return re.findall(r"Sharding at the [\w ]+: (\d+) of (\d+)", err)

    assert shards(host_logs[0][1]) == [("1", "2")]
    assert shards(host_logs[1][1]) == [("2", "2")]
    assert shards(single_err) == [("1", "1")]


@pytest.mark.parametrize("env,kwargs,expected", [
    ({}, {}, None),
    ({"JAX_NUM_PROCESSES": "1"}, {}, None),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"}, {},
     distributed.DistributedSettings("flags/env", "h:1", 2, 1)),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
     {"process_id": 0, "coordinator_address": "g:2"}, distributed.DistributedSettings("flags/env", "g:2", 2, 0)),
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2", "SLURM_PROCID": "1",
      "SLURM_LOCALID": "0"}, {}, distributed.DistributedSettings("slurm")),
    ({"SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n1", "SLURM_NTASKS": "1", "SLURM_PROCID": "0",
      "SLURM_LOCALID": "0"}, {}, None),
    ({"OMPI_MCA_orte_hnp_uri": "1;tcp://10.0.0.1:1", "OMPI_COMM_WORLD_SIZE": "4"}, {},
     distributed.DistributedSettings("ompi")),
    ({"TPU_WORKER_HOSTNAMES": "t0,t1,t2,t3"}, {}, distributed.DistributedSettings("cloud_tpu")),
    ({"TPU_WORKER_HOSTNAMES": "t0"}, {}, None),
    # Explicit address on SLURM: the count and index come from SLURM (JAX fills them in).
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "SLURM_JOB_ID": "7", "SLURM_STEP_NODELIST": "n[1-2]", "SLURM_NTASKS": "2",
      "SLURM_PROCID": "1", "SLURM_LOCALID": "0"}, {}, distributed.DistributedSettings("flags/env", "h:1")),
])
def test_detect(env, kwargs, expected):
    assert distributed.detect(env, **kwargs) == expected


@pytest.mark.parametrize("env,message", [
    ({"JAX_COORDINATOR_ADDRESS": "h:1"}, "JAX_NUM_PROCESSES (or --process_count), JAX_PROCESS_ID"),
    ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"}, "not in 0..1"),
    ({"JAX_NUM_PROCESSES": "two"}, "JAX_NUM_PROCESSES='two' is not an integer"),
])
def test_detect_names_what_is_missing(env, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        distributed.detect(env)


def test_t5x_flag_names_are_accepted():
    found, rest = distributed.pop_flags(["--gin.X=1", "--coordinator_address", "h:1", "--process_count=2",
                                         "--process_index=0", "--multiprocess_gpu"])
    assert found == {"coordinator_address": "h:1", "num_processes": 2, "process_id": 0} and rest == ["--gin.X=1"]
