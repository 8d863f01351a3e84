"""The SeqIO task family over the real CQA release (PaLM rationales), read through SeqIO."""
import collections
import math

import pytest
import seqio

import tasks
from dsbs_jax import methods
from dsbs_jax.data import import_cli, tfrecords

LENGTHS = {"inputs": 256, "targets": 128}
N = 240


@pytest.fixture(scope="module")
def cqa(release_dir, tmp_path_factory, spm_model):
    root = tmp_path_factory.mktemp("data")
    assert import_cli.main(["--format", "release", "--dataset", "cqa", "--src", str(release_dir), "--out", str(root),
                            "--splits", "test", "--limit", str(N)]) == 0
    vocab = tasks.get_vocabulary(spm_model)
    # The test split stands in for train so that the test stays small.
    names = tasks.register_dataset_tasks("cqa", str(root / "cqa"), vocabulary=vocab,
                                         split_map={"train": "test", "test": "test"})
    yield {"dir": str(root / "cqa"), "vocab": vocab, "names": names,
           "examples": {e.id: e for e in tfrecords.read_split(str(root / "cqa"), "test")}}
    tasks.remove_dataset_tasks("cqa")


def _decode(vocab, ids):
    return vocab.decode([int(i) for i in ids if i != 1])


def test_the_family_is_what_the_methods_name(cqa):
    """Every training and scoring task of every method, at every fraction, and nothing else."""
    expected = set()
    for fraction in tasks.DEFAULT_FRACTIONS:
        for method in methods.METHODS.values():
            expected |= {*method.component_tasks("cqa", fraction), method.train_task("cqa", fraction),
                         method.eval_task("cqa")}
    assert set(cqa["names"]) == expected
    assert {"cqa_paired_gold_frac12.5", "cqa_paired_llm", "cqa_standard_llm_frac80", "cqa_label_gold",
            "cqa_single_gold", "cqa_rationale_frac25"} <= expected
    assert isinstance(seqio.get_mixture_or_task("cqa_dsbs_gold"), seqio.Mixture)


def test_mixture_prefixes_targets_and_rate(cqa):
    vocab, examples = cqa["vocab"], cqa["examples"]
    rate = methods.get("dsbs_mixture").mixture_rate
    # Mixtures keep only the output features, so examples are matched by their (untruncated) input text.
    by_input = {" ".join(e.input.split()): e for e in examples.values()}
    ds = seqio.get_mixture_or_task("cqa_dsbs_gold").get_dataset({"inputs": 1024, "targets": 256}, split="train",
                                                                shuffle=True, seed=3)
    counts = collections.Counter()
    for ex in ds.take(1200).as_numpy_iterator():
        text = _decode(vocab, ex["inputs"])
        target = _decode(vocab, ex["targets"])
        prefix, _, x = text.partition(": ")
        counts[prefix] += 1
        example = by_input[" ".join(x.split())]
        if prefix == "predict":
            assert target == example.label  # gold labels: the mixture method trains on them
        else:
            assert prefix == "explain" and target == example.rationales[0]
        assert ex["targets"][-1] == 1  # EOS appended
    total = sum(counts.values())
    sigma = math.sqrt(total * rate * (1 - rate))
    assert abs(counts["predict"] - total * rate) < 4 * sigma, counts


def test_gold_vs_llm_labels_and_gold_for_evaluation(cqa):
    examples = cqa["examples"]
    disagree = {e.id for e in examples.values() if e.teacher_label != e.label}
    assert disagree, "the real teacher disagrees with gold on some CQA examples"

    def targets(name, split):
        ds = seqio.get_mixture_or_task(name).get_dataset(None, split=split, shuffle=False)
        return {ex["id"].decode(): ex["targets_pretokenized"].decode() for ex in ds.as_numpy_iterator()}

    llm_train, gold_train = targets("cqa_standard_llm", "train"), targets("cqa_standard_gold", "train")
    llm_test = targets("cqa_paired_llm", "test")
    for example_id in disagree:
        assert llm_train[example_id] == examples[example_id].teacher_label
        assert gold_train[example_id] == examples[example_id].label
        assert llm_test[example_id] == examples[example_id].label  # evaluation is always against gold


def test_standard_has_no_prefix_single_joins_rationale_and_label(cqa):
    ex = next(seqio.get_mixture_or_task("cqa_standard_gold").get_dataset(None, split="train", shuffle=False)
              .as_numpy_iterator())
    assert not ex["inputs_pretokenized"].decode().startswith(("predict: ", "explain: "))
    single = seqio.get_mixture_or_task("cqa_single_gold")
    ex = next(single.get_dataset(None, split="train", shuffle=False).as_numpy_iterator())
    target = ex["targets_pretokenized"].decode()
    example = cqa["examples"][ex["id"].decode()]
    assert target == f"{example.rationales[0]} So the answer is {example.label}"
    assert single.postprocess_fn(target.encode()) == example.label


def test_paired_task_carries_both_targets(cqa):
    ex = next(seqio.get_mixture_or_task("cqa_paired_llm").get_dataset(LENGTHS, split="train", shuffle=False)
              .as_numpy_iterator())
    example = cqa["examples"][ex["id"].decode()]
    assert _decode(cqa["vocab"], ex["inputs"]) == "predict: " + example.input
    assert _decode(cqa["vocab"], ex["targets"]) == example.teacher_label
    assert _decode(cqa["vocab"], ex["rationale_inputs"]) == "explain: " + example.input
    assert _decode(cqa["vocab"], ex["rationale_targets"]) == example.rationales[0]


def test_reregistration_is_idempotent_but_conflicts_are_errors(cqa):
    again = tasks.register_dataset_tasks("cqa", cqa["dir"], vocabulary=cqa["vocab"],
                                         split_map={"train": "test", "test": "test"})
    assert again == cqa["names"]
    with pytest.raises(ValueError, match="already registered with a different definition"):
        tasks.register_dataset_tasks("cqa", cqa["dir"], vocabulary=cqa["vocab"],
                                     split_map={"train": "test", "test": "test"},
                                     options=tasks.TaskOptions(fraction_seed=3))


def test_missing_data_dir_is_a_clear_error(tmp_path, spm_model):
    with pytest.raises(Exception, match="manifest.json"):
        tasks.register_dataset_tasks("nothing", str(tmp_path / "absent"), vocabulary=tasks.get_vocabulary(spm_model))
