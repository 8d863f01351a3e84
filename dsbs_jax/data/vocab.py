"""SentencePiece vocabularies: T5's public one by default, or a small one trained locally."""
from __future__ import annotations

import io
import os
from typing import Iterable

# T5's public SentencePiece model (32000 pieces; T5X pads the embedding to 32128 with 100
# extra ids). TPU users read it from GCS; this machine never does.
DEFAULT_SPM_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
DEFAULT_EXTRA_IDS = 100


def train_sentencepiece(texts: Iterable[str], model_prefix: str, vocab_size: int = 1000,
                        model_type: str = "unigram") -> str:
    """Trains a SentencePiece model (unigram by default) with T5's special ids (pad 0, eos 1, unk 2).

    Returns the path of the `.model` file. Used by tests and `dsbs demo`, which cannot
    download T5's vocabulary. `model_type="bpe"` suits tiny, repetitive corpora such as the
    demo's: there unigram training keeps mostly characters, BPE whole words.
    """
    import sentencepiece as spm

    text = "\n".join(t.replace("\n", " ") for t in texts if t.strip())
    if not text:
        raise ValueError("train_sentencepiece: no non-empty text to train on.")
    os.makedirs(os.path.dirname(model_prefix) or ".", exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(text.splitlines()),
        model_prefix=model_prefix,
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
        character_coverage=1.0,
        hard_vocab_limit=False,
        # "\n" separates premise/hypothesis and answer choices; keep it as a piece.
        user_defined_symbols=["\n"],
        normalization_rule_name="identity",
        num_threads=1,
        minloglevel=2,
    )
    return model_prefix + ".model"
