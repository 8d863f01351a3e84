"""`seqio.cache_tasks_main` (Apache Beam, DirectRunner) caches one of our tasks; it reads back cached."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("apache_beam", reason="pip install -e '.[test]' installs apache-beam for seqio caching")

from dsbs_jax.data import schema, tfrecords  # noqa: E402


def test_cache_tasks_main_then_use_cached(tmp_path, spm_model):
    root, cache = tmp_path / "data", tmp_path / "cache"
    examples = [schema.Example(id=f"c{i}", dataset="cachetoy", split="train", input=f"{i} plus 2", label=str(i + 2),
                               teacher_label=str(i + 2), rationales=(f"{i} plus 2 is {i + 2}",)) for i in range(30)]
    tfrecords.write_split(str(root / "cachetoy"), "train", examples, num_shards=2)
    env = {**os.environ, "DSBS_DATA_ROOT": str(root), "DSBS_SPM_PATH": spm_model}
    subprocess.run([sys.executable, "-m", "seqio.scripts.cache_tasks_main", "--module_import=tasks",
                    "--tasks=cachetoy_label_gold", f"--output_cache_dir={cache}", "--pipeline_options=--runner=DirectRunner"],
                   check=True, env=env, capture_output=True, text=True)
    script = (
        "import seqio, tasks\n"
        f"seqio.add_global_cache_dirs([{str(cache)!r}])\n"
        "task = seqio.get_mixture_or_task('cachetoy_label_gold')\n"
        "ds = task.get_dataset({'inputs': 32, 'targets': 8}, split='train', use_cached=True, shuffle=False)\n"
        "print(sorted(ex['targets_pretokenized'].decode() for ex in ds.as_numpy_iterator()))\n")
    out = subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True, text=True).stdout
    assert out.strip().splitlines()[-1] == str(sorted(str(i + 2) for i in range(30)))
    assert any(name.startswith("train.tfrecord") for name in os.listdir(cache / "cachetoy_label_gold"))
