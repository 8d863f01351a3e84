"""The reference implementation's behaviour, pinned per dataset (../shared/REFERENCE.md).

* Input text and token ids: the reference formats x and tokenizes it with Hugging Face's T5
  tokenizer, which turns the NLI joiner `</s>` into EOS id 1; our SeqIO tasks must give the
  same ids on the same SentencePiece model.
* Split sizes: the release as imported, with the reference's 10 % validation hold-out
  (`datasets`' `train_test_split(test_size=0.1, seed=0)`), checked against `datasets` itself.
* The loss: our paired step on one real batch equals a PyTorch re-implementation of the
  reference's `TaskPrefixTrainer.compute_loss` (two forward passes of the same tiny HF T5, a
  mean cross-entropy each, alpha = 0.5), and standard finetuning equals HF's own loss.
"""
import json

import numpy as np
import pytest

from dsbs_jax import methods
from dsbs_jax.data import tfrecords
from dsbs_jax.data.splits import train_test_indices

NLI = ("esnli", "anli1")


@pytest.fixture(scope="module")
def registered(imported_release, spm_model):
    import tasks

    vocab = tasks.get_vocabulary(spm_model)
    for dataset in ("cqa",) + NLI:
        tasks.remove_dataset_tasks(dataset)
        split_map = None if dataset == "cqa" else {"train": "valid", "validation": "test", "test": "test"}
        tasks.register_dataset_tasks(dataset, str(imported_release / dataset), vocabulary=vocab, fractions=(100,),
                                     split_map=split_map)
    yield vocab
    for dataset in ("cqa",) + NLI:
        tasks.remove_dataset_tasks(dataset)


def _hf_tokenizer(spm_model):
    """Hugging Face's T5 tokenizer over our SentencePiece model, loaded the way the reference loads
    'google/t5-v1_1-base' (`from_pretrained` of a directory holding `spiece.model`)."""
    import shutil
    import tempfile

    transformers = pytest.importorskip("transformers")
    directory = tempfile.mkdtemp()
    shutil.copy(spm_model, f"{directory}/spiece.model")
    return transformers.T5Tokenizer.from_pretrained(directory, extra_ids=0)


@pytest.mark.parametrize("dataset", NLI)
def test_nli_input_ids_equal_hugging_face_tokenizer(registered, spm_model, release_dir, dataset):
    """premise</s>hypothesis -> the ids HF's tokenizer gives, with EOS id 1 between the two."""
    import seqio

    hf = _hf_tokenizer(spm_model)
    raw = [json.loads(line) for line in (release_dir / dataset / f"{dataset}_test.json").read_text().splitlines()[:8]]
    by_text = {f"{r['premise']}</s>{r['hypothesis']}": r for r in raw}
    checked = 0
    for variant, prefix in (("standard", ""), ("label", methods.PREDICT_PREFIX)):
        ds = seqio.get_mixture_or_task(f"{dataset}_{variant}_gold").get_dataset(
            {"inputs": 512, "targets": 64}, split="test", shuffle=False)
        for ex in ds.take(8).as_numpy_iterator():
            text = ex["inputs_pretokenized"].decode()
            assert text.startswith(prefix) and text[len(prefix):] in by_text
            reference_ids = hf(text)["input_ids"]  # the reference: tokenizer(['predict: ' + input])
            assert ex["inputs"].tolist() == reference_ids, text
            eos_positions = [i for i, t in enumerate(reference_ids) if t == 1]
            assert len(eos_positions) == 2 and eos_positions[-1] == len(reference_ids) - 1
            checked += 1
    assert checked == 16


def test_python_encoder_matches_the_tasks(registered, spm_model):
    """`dsbs predict` encodes inputs as the tasks do (`</s>` -> EOS id)."""
    from dsbs_jax.data.vocab import encode_text

    hf = _hf_tokenizer(spm_model)
    text = "predict: A man plays.</s>Someone is playing."
    assert encode_text(registered, text) + [1] == hf(text)["input_ids"]
    assert 1 in encode_text(registered, text)


def test_cqa_input_text_is_the_reference_template(imported_release, release_dir):
    raw = json.loads((release_dir / "cqa" / "cqa_test.json").read_text().splitlines()[0])
    example = next(e for e in tfrecords.read_split(str(imported_release / "cqa"), "test") if e.id == raw["id"])
    c = raw["choices"]
    assert example.input == (f"{raw['question']}\nAnswer Choices:\n(a) {c[0]}\n(b) {c[1]}\n(c) {c[2]}\n"
                             f"(d) {c[3]}\n(e) {c[4]}")


def test_split_sizes_are_the_papers(imported_release):
    """CQA 8,766 / 975 / 1,221 (REFERENCE.md); the NLI release keeps its own validation split."""
    splits = tfrecords.read_manifest(str(imported_release / "cqa"))["splits"]
    assert {s: e["num_examples"] for s, e in splits.items()} == {"train": 8766, "valid": 975, "test": 1221}
    assert splits["valid"]["holdout"]["test_size"] == 0.1 and splits["valid"]["holdout"]["seed"] == 0
    for dataset in NLI:
        assert set(tfrecords.read_manifest(str(imported_release / dataset))["splits"]) == {"valid", "test"}


def test_cqa_holdout_is_datasets_train_test_split(imported_release, release_dir):
    """The held-out ids, in order, are those of `datasets`' train_test_split(test_size=0.1, seed=0)."""
    datasets = pytest.importorskip("datasets")
    ids = [json.loads(line)["id"] for line in (release_dir / "cqa" / "cqa_train.json").read_text().splitlines()]
    split = datasets.Dataset.from_dict({"id": ids}).train_test_split(test_size=0.1, seed=0)
    assert [e.id for e in tfrecords.read_split(str(imported_release / "cqa"), "valid")] == split["test"]["id"]
    assert [e.id for e in tfrecords.read_split(str(imported_release / "cqa"), "train")] == split["train"]["id"]


@pytest.mark.parametrize("num_rows, expected", [(800, (720, 80)), (9741, (8766, 975)), (1001, (900, 101))])
def test_holdout_indices_equal_datasets(num_rows, expected):
    """SVAMP's 800 training rows give the paper's 720 / 80."""
    datasets = pytest.importorskip("datasets")
    split = datasets.Dataset.from_dict({"i": list(range(num_rows))}).train_test_split(test_size=0.1, seed=0)
    train, test = train_test_indices(num_rows, 0.1, 0)
    assert (len(train), len(test)) == expected
    assert train.tolist() == split["train"]["i"] and test.tolist() == split["test"]["i"]


# --- the loss --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_hf_t5(registered, tmp_path_factory):
    """A tiny random T5 v1.1 in Hugging Face's format, and the same weights in ours."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from dsbs_jax.models import checkpoints

    torch.manual_seed(0)
    config = transformers.T5Config(
        vocab_size=-(-registered.vocab_size // 128) * 128, d_model=32, d_kv=8, d_ff=64, num_layers=2,
        num_decoder_layers=2, num_heads=4, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        dropout_rate=0.0, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(config).eval()
    path = tmp_path_factory.mktemp("hf_t5")
    model.save_pretrained(path)
    params, our_config = checkpoints.load_hf_checkpoint(str(path))
    return model, params, our_config


def _batch(task: str, paired: bool, size: int = 6):
    from dsbs_jax.train import input_pipeline

    return next(input_pipeline.BatchIterator(input_pipeline.DataConfig(
        mixture_or_task_name=task, task_feature_lengths={"inputs": 128, "targets": 64}, batch_size=size,
        paired=paired, pack=False, shuffle=False), shard_index=0, num_shards=1))


def _hf_mean_ce(model, batch, prefix=""):
    """HF's T5 loss: mean token cross-entropy over labels that are not -100 (padding)."""
    import torch

    enc = torch.tensor(np.asarray(batch[prefix + "encoder_input_tokens"]), dtype=torch.long)
    labels = torch.tensor(np.asarray(batch[prefix + "decoder_target_tokens"]), dtype=torch.long)
    labels = labels.masked_fill(labels == 0, -100)
    with torch.no_grad():
        return float(model(input_ids=enc, attention_mask=(enc != 0).long(), labels=labels).loss)


def _our_loss(params, our_config, batch, method_name):
    from dsbs_jax.models import network
    from dsbs_jax.train import train_step

    loss_config = methods.get(method_name).loss
    loss, _ = train_step.loss_and_metrics(
        params, apply_fn=network.Transformer(our_config).apply, batch=batch,
        weights=train_step.normalizers(batch, loss_config), config=loss_config, dropout_rng=None,
        enable_dropout=False)
    return float(loss)


@pytest.mark.parametrize("dataset", ("cqa",) + NLI)
def test_paired_loss_equals_the_reference_trainer(tiny_hf_t5, registered, dataset):
    """alpha * CE(predict: x -> label) + (1 - alpha) * CE(explain: x -> rationale), alpha = 0.5."""
    model, params, our_config = tiny_hf_t5
    batch = _batch(f"{dataset}_paired_gold", paired=True)
    # Both halves come from the same examples: the same x behind the two prefixes.
    for label_row, rationale_row in zip(batch["encoder_input_tokens"], batch["rationale_encoder_input_tokens"]):
        label_x = registered.decode(label_row.tolist()).removeprefix(methods.PREDICT_PREFIX.strip())
        rationale_x = registered.decode(rationale_row.tolist()).removeprefix(methods.EXPLAIN_PREFIX.strip())
        shorter = min(len(label_x), len(rationale_x)) - 4  # truncation cuts the two prefixes' rows apart
        assert label_x[:shorter] == rationale_x[:shorter] and shorter > 20
    alpha = methods.get("dsbs").loss.alpha
    reference = alpha * _hf_mean_ce(model, batch) + (1 - alpha) * _hf_mean_ce(model, batch, "rationale_")
    assert _our_loss(params, our_config, batch, "dsbs") == pytest.approx(reference, abs=1e-4)


@pytest.mark.parametrize("method_name, variant", [("standard", "standard"), ("single", "single")])
def test_one_target_methods_equal_hugging_face_loss(tiny_hf_t5, method_name, variant):
    model, params, our_config = tiny_hf_t5
    batch = _batch(f"cqa_{variant}_gold", paired=False)
    assert _our_loss(params, our_config, batch, method_name) == pytest.approx(_hf_mean_ce(model, batch), abs=1e-4)


def test_t5x_model_loss_equals_the_embedded_trainers(tiny_hf_t5):
    """The T5X class's loss (its T5X-free mixin, fed the same batch) is the embedded trainer's."""
    from dsbs_jax import t5x_model
    from dsbs_jax.models import network

    model, params, our_config = tiny_hf_t5
    batch = _batch("cqa_paired_gold", paired=True)

    class T5XStyleHost(t5x_model.PairedLossMixin):
        module = network.Transformer(our_config)
        paired_loss_config = t5x_model.paired_loss_config(alpha=0.5, z_loss=0.0, label_smoothing=0.0)

    loss, sums = T5XStyleHost().paired_loss(params, batch, dropout_rng=None)
    assert float(loss) == pytest.approx(_our_loss(params, our_config, batch, "dsbs"), abs=1e-6)
    assert float(sums["label/weight_sum"]) == float(np.sum(batch["decoder_target_tokens"] > 0))
    assert float(sums["rationale/weight_sum"]) == float(np.sum(batch["rationale_decoder_target_tokens"] > 0))


def test_t5x_paired_model_class(tiny_hf_t5):
    """With T5X installed: the real class, configured as gin/t5x/paired.gin does, gives the same loss."""
    pytest.importorskip("t5x")
    from dsbs_jax import t5x_model
    from dsbs_jax.models import network

    model, params, our_config = tiny_hf_t5
    batch = _batch("cqa_paired_gold", paired=True)
    t5x = t5x_model.PairedEncoderDecoderModel(module=network.Transformer(our_config), input_vocabulary=None,
                                              output_vocabulary=None, optimizer_def=None, alpha=0.5)
    loss, metrics = t5x.loss_fn(params, batch, dropout_rng=None)
    assert float(loss) == pytest.approx(_our_loss(params, our_config, batch, "dsbs"), abs=1e-6)
    assert "rationale/loss" in metrics


def test_methods_use_the_references_settings():
    """alpha 0.5, no z-loss, mean token cross-entropy; labels decoded <= 64 tokens."""
    for name in ("dsbs", "dsbs_llm"):
        loss = methods.get(name).loss
        assert (loss.mode, loss.alpha, loss.z_loss) == ("paired", 0.5, 0.0)
    for name in ("standard", "distill", "single"):
        loss = methods.get(name).loss
        assert (loss.mode, loss.z_loss, loss.loss_normalizing_factor) == ("target", 0.0, "NUM_REAL_TARGET_TOKENS")
    assert methods.get("dsbs_mixture").loss.loss_normalizing_factor == "AVERAGE_PER_SEQUENCE"
    assert methods.get("dsbs").decode_length({"targets": 256}) == 64
    assert methods.get("single").decode_length({"targets": 256}) == 256


def test_incomplete_examples_are_kept_as_the_reference_does(tmp_path, spm_model):
    """A training example without a rationale or teacher label still trains (empty target = EOS)."""
    import seqio
    import tasks
    from dsbs_jax.data import schema

    examples = [schema.Example(id=f"t{i}", dataset="holes", split="train", input=f"q {i}", label="yes",
                               teacher_label=None if i % 2 else "yes", rationales=() if i % 3 == 0 else ("r",),
                               teacher_meta={"parse_failure": "no_label" if i % 2 else None})
                for i in range(12)]
    tfrecords.write_split(str(tmp_path / "holes"), "train", examples)
    manifest = tfrecords.read_manifest(str(tmp_path / "holes"))["splits"]["train"]
    assert (manifest["num_with_rationale"], manifest["num_with_teacher_label"]) == (8, 6)
    vocab = tasks.get_vocabulary(spm_model)
    counts = {}
    for drop in (False, True):
        tasks.remove_dataset_tasks("holes")
        tasks.register_dataset_tasks("holes", str(tmp_path / "holes"), vocabulary=vocab, fractions=(100,),
                                     options=tasks.TaskOptions(drop_incomplete=drop), split_map={"train": "train"})
        for task in ("holes_paired_gold", "holes_paired_llm", "holes_standard_llm"):
            ds = seqio.get_mixture_or_task(task).get_dataset({"inputs": 32, "targets": 16}, split="train",
                                                             shuffle=False)
            counts[(task, drop)] = sum(1 for _ in ds)
    tasks.remove_dataset_tasks("holes")
    assert counts[("holes_paired_gold", False)] == counts[("holes_paired_llm", False)] == 12
    assert counts[("holes_standard_llm", False)] == 12
    assert counts[("holes_paired_gold", True)] == 8
    assert counts[("holes_paired_llm", True)] == sum(1 for i in range(12) if i % 2 == 0 and i % 3)
    assert counts[("holes_standard_llm", True)] == 6
