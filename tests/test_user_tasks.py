"""A user's JSONL dataset becomes registered tasks and a mixture: `dsbs import` + `import tasks`."""
import json
import os
import subprocess
import sys


def test_user_jsonl_to_tasks_with_one_import(tmp_path, spm_model):
    src = tmp_path / "reviews.jsonl"
    with open(src, "w") as f:
        for i in range(40):
            good = i % 2 == 0
            f.write(json.dumps({"uid": f"r{i}", "title": f"Item {i}", "body": "great value" if good else "broke fast",
                                "sentiment": "positive" if good else "negative",
                                "why": "The reviewer praises it." if good else "The reviewer complains."}) + "\n")
    root = tmp_path / "data"
    env = {**os.environ, "DSBS_DATA_ROOT": str(root), "DSBS_SPM_PATH": spm_model}
    subprocess.run([sys.executable, "-m", "dsbs_jax.cli", "import", "--format", "jsonl", "--dataset", "reviews",
                    "--src", str(src), "--out", str(root), "--template", "Review of {title}: {body}",
                    "--label_field", "sentiment", "--rationale_field", "why", "--id_field", "uid",
                    "--holdout", "0"],
                   check=True, env=env, capture_output=True)
    script = (
        "import seqio, tasks\n"
        "names = sorted(n for n in seqio.TaskRegistry.names() | seqio.MixtureRegistry.names() if n.startswith('reviews_'))\n"
        "print(names)\n"
        "ds = seqio.get_mixture_or_task('reviews_dsbs_gold').get_dataset({'inputs': 64, 'targets': 32}, split='train')\n"
        "print(sum(1 for _ in ds.take(20)))\n"
        "ex = next(seqio.get_mixture_or_task('reviews_label_gold').get_dataset(None, split='train', shuffle=False)"
        ".as_numpy_iterator())\n"
        "print(ex['inputs_pretokenized'].decode(), '|', ex['targets_pretokenized'].decode())\n")
    out = subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True, text=True).stdout
    names_line, count, example = out.strip().splitlines()[-3:]
    for name in ("reviews_dsbs_gold", "reviews_label_gold", "reviews_rationale", "reviews_standard_gold",
                 "reviews_single_gold", "reviews_paired_gold", "reviews_dsbs_gold_frac12.5"):
        assert f"'{name}'" in names_line
    assert int(count) == 20
    assert example == "predict: Review of Item 0: great value | positive"


def test_no_data_root_registers_nothing(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "DSBS_DATA_ROOT"}
    out = subprocess.run([sys.executable, "-c", "import seqio, tasks; print(len(seqio.TaskRegistry.names()))"],
                         check=True, env=env, capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == "0"


def test_missing_data_root_is_a_clear_error(tmp_path):
    env = {**os.environ, "DSBS_DATA_ROOT": str(tmp_path / "nowhere")}
    result = subprocess.run([sys.executable, "-c", "import tasks"], env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert "DSBS_DATA_ROOT" in result.stderr and "nowhere" in result.stderr
