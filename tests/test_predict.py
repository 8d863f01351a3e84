"""`dsbs predict` batching: length-sorted, bucket-padded batches give the naive path's predictions.

A real run directory (orbax checkpoint written by the trainer's `Checkpointer`, `dsbs_run.json`, a
SentencePiece model trained on release text) of a tiny random model; `predict.main` is compared
with decoding every input padded to the run's full input length, in file order.
"""
import dataclasses
import json

import jax
import numpy as np
import optax
import pytest

from dsbs_jax import methods
from dsbs_jax.models import decoding, network
from dsbs_jax.models.config import T5Config
from dsbs_jax.train import checkpointing, inference, predict, train_state

MAX_INPUT, DECODE, BATCH = 64, 12, 4
CFG = T5Config(vocab_size=512, emb_dim=32, num_heads=4, num_encoder_layers=2, num_decoder_layers=2,
               head_dim=8, mlp_dim=64, dropout_rate=0.0)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, spm_model):
    run = tmp_path_factory.mktemp("predict") / "run"
    # Larger weights than the initialiser's: outputs then differ between inputs and often hit EOS.
    params = jax.tree.map(lambda x: 3.0 * x, network.unbox_params(network.init_params(CFG, jax.random.PRNGKey(3))))
    ckpt = checkpointing.Checkpointer(str(run / "checkpoints"), async_save=False)
    ckpt.save(train_state.create_train_state(params, optax.adafactor(1e-3)).replace(step=jax.numpy.asarray(2)),
              {"batches": 2})
    ckpt.close()
    method = methods.get("dsbs")
    record = {"model": dataclasses.asdict(CFG), "vocabulary": {"sentencepiece_model_file": spm_model, "extra_ids": 0},
              "method": method.name, "task_feature_lengths": {"inputs": MAX_INPUT, "targets": DECODE},
              "input_prefix": method.input_prefix, "postprocessor": method.postprocessor,
              "max_decode_length": DECODE}
    (run / inference.RUN_RECORD).write_text(json.dumps(record))
    return run


def _texts():
    """13 inputs (3 full batches of 4 + 1) of 2..~70 pieces: several buckets, one truncated input."""
    words = "the cat sat on a mat while seven birds sang loudly in green trees near".split()
    return [" ".join(words[: 1 + (7 * i) % len(words)] * (1 + i // 4)) for i in range(13)]


def _naive(run, texts):
    """The unbucketed path: file order, every batch padded to MAX_INPUT."""
    params, config, record = inference.load_for_inference(str(run))
    vocab = predict._vocabulary(record, None)
    out = []
    for start in range(0, len(texts), BATCH):
        chunk = texts[start:start + BATCH]
        rows = np.zeros((BATCH, MAX_INPUT), np.int32)
        rows[:, 0] = 1
        for r, text in enumerate(chunk):
            ids = predict._encode_ids(vocab, "predict: " + text, MAX_INPUT)
            rows[r, :len(ids)] = ids
        tokens = np.asarray(decoding.generate(params, config, rows, method="greedy", max_decode_length=DECODE))
        out += [predict._decode_row(vocab, row).strip() for row in tokens[:len(chunk)].tolist()]
    return out, vocab


def test_bucketed_sorted_predictions_equal_the_naive_path(run_dir, tmp_path):
    texts = _texts()
    src, dst = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    src.write_text("".join(json.dumps({"input": t, "n": i}) + "\n" for i, t in enumerate(texts)))
    assert predict.main(["--checkpoint", str(run_dir), "--input", str(src), "--output", str(dst),
                         "--batch_size", str(BATCH)]) == 0
    rows = [json.loads(line) for line in dst.read_text().splitlines()]
    expected, vocab = _naive(run_dir, texts)
    assert [r["n"] for r in rows] == list(range(len(texts)))  # input order restored
    assert [r["prediction"] for r in rows] == expected
    assert len(set(expected)) > 3  # the model's outputs depend on the input, so a mix-up would show

    # The batches really were of different padded lengths, and the partial batch added no shape.
    lengths = sorted((len(predict._encode_ids(vocab, "predict: " + t, MAX_INPUT)) for t in texts), reverse=True)
    buckets = {decoding.bucket_length(lengths[i], MAX_INPUT) for i in range(0, len(lengths), BATCH)}
    assert len(buckets) >= 2 and max(lengths) > MAX_INPUT - 1  # one input was truncated
    assert MAX_INPUT in buckets  # so the naive path's shape is one of them
    assert decoding._compiled(CFG, "greedy", DECODE, 0, 0, 1)._cache_size() == len(buckets)


def test_bucket_length():
    assert [decoding.bucket_length(n, 512) for n in (1, 16, 17, 100, 300, 512)] == [16, 16, 32, 128, 512, 512]
    assert decoding.bucket_length(40, 24) == 24
