"""SentencePiece vocabularies: T5's public one by default, or a small one trained locally."""
from __future__ import annotations

import os
from typing import Iterable, Optional

# T5's public SentencePiece model (32000 pieces; T5X pads the embedding to 32128 with 100
# extra ids). TPU users read it from GCS; this machine never does.
DEFAULT_SPM_PATH = "gs://t5-data/vocabs/cc_all.32000/sentencepiece.model"
DEFAULT_EXTRA_IDS = 100


def extra_ids_for(path: str) -> int:
    """T5's model gets T5's 100 extra ids (T5X's 32100, embedded as 32128); a local model none."""
    return DEFAULT_EXTRA_IDS if path == DEFAULT_SPM_PATH else 0


# SentencePiece's byte fallback: one piece per byte value, so text the training corpus never showed
# (a teacher's "+" in a rationale, an accent) is spelled in bytes instead of becoming <unk> (⁇).
BYTE_PIECES = 256


def train_sentencepiece(texts: Iterable[str], model_prefix: str, vocab_size: int = 1000,
                        model_type: str = "unigram", byte_fallback: bool = False) -> str:
    """Trains a SentencePiece model (unigram by default) with T5's special ids (pad 0, eos 1, unk 2).

    Returns the path of the `.model` file. Used by tests and `dsbs demo`, which cannot
    download T5's vocabulary. `model_type="bpe"` suits tiny, repetitive corpora such as the
    demo's: there unigram training keeps mostly characters, BPE whole words. `byte_fallback`
    adds 256 byte pieces (and raises `vocab_size` to what they need).
    """
    import sentencepiece as spm

    text = "\n".join(t.replace("\n", " ") for t in texts if t.strip())
    if not text:
        raise ValueError("train_sentencepiece: no non-empty text to train on.")
    os.makedirs(os.path.dirname(model_prefix) or ".", exist_ok=True)
    if byte_fallback:  # SentencePiece refuses a size below the byte pieces + specials + every character
        vocab_size = max(vocab_size, BYTE_PIECES + 4 + len(set(text) - {"\n"}))
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
        byte_fallback=byte_fallback,
        num_threads=1,
        minloglevel=2,
    )
    return model_prefix + ".model"


# T5's EOS token as text: the reference joins NLI premise and hypothesis with it, and Hugging
# Face's tokenizer encodes it as id 1 rather than as SentencePiece pieces.
EOS_TEXT = "</s>"


def encode_text(vocabulary, text: str) -> list[int]:
    """Ids of `text` with each literal `</s>` encoded as the vocabulary's EOS id (no final EOS).

    The Python twin of `tasks.registry.encode_text_tf`: each piece between `</s>` markers is
    encoded on its own, as Hugging Face's T5 tokenizer does after splitting special tokens out.
    """
    ids: list[int] = []
    for index, piece in enumerate(text.split(EOS_TEXT)):
        if index:
            ids.append(int(vocabulary.eos_id))
        ids.extend(int(i) for i in vocabulary.encode(piece))
    return ids


VOCAB_DIR = "vocab"  # {data_root}/{dataset}/vocab/spm_{N}.model, recorded as manifest["vocabulary"]
# The task prefixes of tasks/registry.py: pieces of their own in a dataset's vocabulary.
_PREFIX_TEXT = "predict: explain: "


def train_dataset_vocabulary(dataset_dir: str, vocab_size: int, work_dir: str,
                             splits: Iterable[str] = ("train",)) -> str:
    """Trains a SentencePiece model on the text of `splits` of a TFRecord dataset directory.

    Inputs, gold and teacher labels and rationales of the training split only (the test split
    must not shape the vocabulary). With byte fallback: the teacher's rationales, written later,
    may hold characters the import never saw. Returns the local `.model` path under `work_dir`.
    """
    from dsbs_jax.data import tfrecords

    texts = [_PREFIX_TEXT] * 10
    for split in splits:
        for e in tfrecords.read_split(dataset_dir, split):
            texts += [e.input, e.label or "", e.teacher_label or "", *e.rationales]
    if len(texts) == 10:
        raise ValueError(f"{dataset_dir}: splits {list(splits)} hold no examples to train a vocabulary on.")
    return train_sentencepiece(texts, os.path.join(work_dir, f"spm_{vocab_size}"), vocab_size=vocab_size,
                               byte_fallback=True)


def install_dataset_vocabulary(dataset_dir: str, model_path: str, requested_size: int,
                               splits: Iterable[str] = ("train",)) -> dict:
    """Copies `model_path` to `{dataset_dir}/vocab/spm_{pieces}.model` and records it in the manifest.

    The file is named by the pieces it holds: SentencePiece stops short of the requested size
    when the text is small (`hard_vocab_limit=False`), and a file named `spm_32000.model` holding
    84 pieces used to mislead. `import tasks` tokenizes this dataset with it unless
    `$DSBS_SPM_PATH` names another model. Returns the record.
    """
    import sentencepiece as spm
    import tensorflow as tf

    from dsbs_jax.data import tfrecords

    pieces = spm.SentencePieceProcessor(model_file=model_path).get_piece_size()
    name = f"spm_{pieces}.model"
    tf.io.gfile.makedirs(f"{dataset_dir.rstrip('/')}/{VOCAB_DIR}")
    tf.io.gfile.copy(model_path, f"{dataset_dir.rstrip('/')}/{VOCAB_DIR}/{name}", overwrite=True)
    record = {"path": f"{VOCAB_DIR}/{name}", "vocab_size": pieces, "requested_vocab_size": requested_size,
              "trained_on": sorted(splits), "extra_ids": 0}
    manifest_path = f"{dataset_dir.rstrip('/')}/{tfrecords.MANIFEST}"
    manifest = tfrecords.read_manifest(dataset_dir)
    previous = (manifest.get("vocabulary") or {}).get("path")
    manifest["vocabulary"] = record
    tfrecords._write_manifest(manifest_path, manifest)  # same package: the atomic manifest write
    if previous and previous != record["path"] and tf.io.gfile.exists(f"{dataset_dir.rstrip('/')}/{previous}"):
        tf.io.gfile.remove(f"{dataset_dir.rstrip('/')}/{previous}")  # a re-import's stale model
    return record


def remove_dataset_vocabulary(dataset_dir: str) -> Optional[dict]:
    """Drops the dataset's own vocabulary (manifest record and file); returns the old record, or None.

    For an import that replaces the train split without `--train_vocab`: the model was trained on
    the text being replaced, and keeping it would override T5's vocabulary that the import asks for.
    """
    import tensorflow as tf

    from dsbs_jax.data import tfrecords

    manifest = tfrecords.read_manifest(dataset_dir)
    record = manifest.pop("vocabulary", None)
    if record is None:
        return None
    tfrecords._write_manifest(f"{dataset_dir.rstrip('/')}/{tfrecords.MANIFEST}", manifest)
    path = f"{dataset_dir.rstrip('/')}/{record['path']}"
    if tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)
    return record
