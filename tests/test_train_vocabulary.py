"""The vocabulary a run trains with is said and fits the model (`dsbs_jax.train.vocabulary`).

A student trained from scratch on a dataset's 84-piece vocabulary inside T5's 32,128 embedding rows
predicted `⁇ ⁇ ⁇`: from scratch the trainer now narrows the embedding to the vocabulary (T5X's
padding to a multiple of 128); a pretrained model cannot change, so it is refused in one line.
"""
from __future__ import annotations

import pytest

from dsbs_jax.models.config import t5_1_1_config
from dsbs_jax.train import vocabulary

T5 = vocabulary.VocabularyChoice(path="gs://t5-data/vocabs/cc_all.32000/sentencepiece.model", pieces=32000,
                                 extra_ids=100, origin="T5's")
OWN = vocabulary.VocabularyChoice(path="/data/mine/vocab/spm_84.model", pieces=84, extra_ids=0,
                                  origin="the dataset's own")
MODEL = t5_1_1_config("tiny")  # vocab_size 32128, T5's


def test_t5_vocabulary_keeps_t5_rows_from_scratch_and_pretrained():
    assert vocabulary.padded_size(T5.ids) == 32128
    assert vocabulary.fit_model(MODEL, T5, pretrained=None) == MODEL
    assert vocabulary.fit_model(MODEL, T5, pretrained="/ckpts/t5-v1_1-base") == MODEL


def test_a_small_vocabulary_narrows_a_model_from_scratch():
    fitted = vocabulary.fit_model(MODEL, OWN, pretrained=None)
    assert fitted.vocab_size == 128 and fitted.replace(vocab_size=MODEL.vocab_size) == MODEL
    # Already within the padding: left alone (the tests' VOCAB_SIZE=128 for 64 pieces, say).
    assert vocabulary.fit_model(MODEL.replace(vocab_size=128), OWN, pretrained=None).vocab_size == 128


def test_a_run_recorded_at_the_unfitted_size_resumes_at_it():
    """Runs trained before this rule have 32,128 rows in their checkpoints: resuming keeps them."""
    assert vocabulary.fit_model(MODEL, OWN, pretrained=None, recorded_vocab_size=32128) == MODEL
    assert vocabulary.fit_model(MODEL, OWN, pretrained=None, recorded_vocab_size=128).vocab_size == 128


def test_a_pretrained_model_with_another_vocabulary_is_refused_in_one_line():
    with pytest.raises(vocabulary.VocabularyMismatchError) as raised:
        vocabulary.fit_model(MODEL, OWN, pretrained="/ckpts/t5-v1_1-base")
    message = str(raised.value)
    assert "\n" not in message and "INITIAL_CHECKPOINT_PATH=/ckpts/t5-v1_1-base has 32128 embedding rows" in message
    assert "84 ids (/data/mine/vocab/spm_84.model, 84 pieces + 0 extra ids (the dataset's own))" in message
    assert "--train_vocab" in message and "DSBS_SPM_PATH" in message


def test_a_model_too_small_for_the_vocabulary_names_the_size_to_set():
    with pytest.raises(vocabulary.VocabularyMismatchError, match=r"set --gin.VOCAB_SIZE=32128"):
        vocabulary.fit_model(MODEL.replace(vocab_size=1000), T5, pretrained=None)


def test_describe_reads_the_file_and_keeps_the_origin(spm_model):
    import tasks

    choice = vocabulary.describe(tasks.get_vocabulary(spm_model, origin="a test's"))
    assert (choice.path, choice.extra_ids, choice.origin) == (spm_model, 0, "a test's") and 100 < choice.pieces <= 512
