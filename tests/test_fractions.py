"""Data fractions: deterministic, nested, identical across methods for one seed."""
import math

import pytest
import seqio

import tasks
from dsbs_jax.data import schema, tfrecords

N = 200
FRACTIONS = (12.5, 25, 50, 100)


@pytest.fixture(scope="module")
def registered(tmp_path_factory, spm_model):
    data_dir = str(tmp_path_factory.mktemp("data") / "frac")
    examples = [schema.Example(id=f"ex{i}", dataset="frac", split="train", input=f"{i} plus 1", label=str(i + 1),
                               teacher_label=str(i + 1), rationales=(f"{i} plus 1 is {i + 1}",)) for i in range(N)]
    tfrecords.write_split(data_dir, "train", examples, num_shards=3)
    vocab = tasks.get_vocabulary(spm_model)
    for name, seed in (("frac", 0), ("fracb", 1)):
        tasks.register_dataset_tasks(name, data_dir, vocabulary=vocab, fractions=FRACTIONS + (37,),
                                     options=tasks.TaskOptions(fraction_seed=seed))
    yield
    tasks.remove_dataset_tasks("frac")
    tasks.remove_dataset_tasks("fracb")


def _ids(name):
    ds = seqio.get_mixture_or_task(name).get_dataset(None, split="train", shuffle=False)
    return {ex["id"].decode() for ex in ds.as_numpy_iterator()}


@pytest.mark.usefixtures("registered")
def test_sizes_and_nesting():
    previous = set()
    for fraction in FRACTIONS:
        ids = _ids(tasks.task_name("frac", "label", "gold", fraction))
        assert len(ids) == math.ceil(N * fraction / 100)
        assert previous <= ids
        previous = ids
    assert len(_ids("frac_label_gold_frac37")) == math.ceil(N * 0.37)  # any user value


@pytest.mark.usefixtures("registered")
def test_identical_across_methods_and_label_sources():
    from dsbs_jax import methods

    reference = _ids("frac_label_gold_frac25")
    for method in methods.METHODS.values():
        for task in method.component_tasks("frac", 25):
            assert _ids(task) == reference, (method.name, task)


@pytest.mark.usefixtures("registered")
def test_another_seed_gives_another_subset_of_the_same_size():
    a, b = _ids("frac_label_gold_frac25"), _ids("fracb_label_gold_frac25")
    assert len(a) == len(b) and a != b
    assert _ids("frac_label_gold_frac25") == a  # deterministic
