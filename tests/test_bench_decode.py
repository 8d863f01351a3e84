"""benchmarks/bench_decode.py runs end to end at tiny dims (no timing assertions): a real subprocess."""
import json
import math
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def _positive(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x) and x > 0


def test_bench_decode_tiny(tmp_path, release_dir):
    out = tmp_path / "bench.json"
    env = {**os.environ, "DSBS_RELEASE_DIR": str(release_dir),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.pop("XLA_FLAGS", None)  # the benchmark runs on the one real CPU device, not conftest's 8 fake ones
    result = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_decode.py"), "--size", "tiny", "--vocab_size", "128",
         "--batches", "1,2", "--reps", "1", "--input_len", "16", "--new_tokens", "4", "--bandwidth_mb", "16",
         "--matmul_size", "128", "--matmul_gflop", "0.05", "--predict", "--predict_records", "6",
         "--predict_batch", "4", "--predict_input_length", "32", "--spm_vocab", "100", "--json_out", str(out)],
        env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(out.read_text())
    rows = {r["batch"]: r for r in data["decode"]}
    assert sorted(rows) == [1, 2]
    for row in rows.values():
        assert row["identical"] is True and row["tokens_matching"] == 1.0
        for key in ("ours_min_s", "ours_median_s", "hf_min_s", "hf_median_s", "hf_over_ours_min", "flops",
                    "bytes_total", "fraction_of_bandwidth", "fraction_of_matmul_peak"):
            assert _positive(row[key]), (key, row[key])
    assert len(data["limits"]["bandwidth"]) == 3 and all(map(_positive, data["limits"]["bandwidth"].values()))
    assert len(data["limits"]["matmul"]) == 3 and all(map(_positive, data["limits"]["matmul"].values()))
    pred = data["predict"]
    assert pred["records"] == 6 and pred["predict_output_ok"] is True and pred["cli_output_same"] is True
    assert pred["full_length_same_tokens"] is True
    for key in ("raw_generate_s", "raw_generate_full_length_s", "predict_warm_s", "predict_cold_s", "restore_s",
                "cli_s", "raw_examples_per_s", "predict_examples_per_s", "predict_over_raw"):
        assert _positive(pred[key]), (key, pred[key])
    # The printed table has the rows too.
    for line in ("| 1 | ", "| 2 | ", "| raw `decoding.generate`", "| `predict.main` warm", "| `dsbs predict` CLI"):
        assert line in result.stdout, line
