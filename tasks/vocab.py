"""The SentencePiece vocabulary the tasks tokenize with.

Configured by arguments and `$DSBS_SPM_PATH` only, never by gin: T5X parses its gin flags after
importing `MIXTURE_OR_TASK_MODULE`, and refuses task modules that register gin configurables
("Your Task/Mixture module contains gin configurables that must be loaded before gin flag
parsing"), so nothing in `tasks` may be `@gin.configurable`.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Tuple

import seqio

from dsbs_jax.data.vocab import DEFAULT_SPM_PATH, extra_ids_for
from dsbs_jax.train.input_pipeline import DataError

SPM_PATH_ENV = "DSBS_SPM_PATH"


class VocabularyError(DataError):
    """The SentencePiece model cannot be read; the message names `$DSBS_SPM_PATH` and the fix.

    A `DataError` (a ValueError), so `dsbs train/eval` print it as one line and exit 2.
    """


def _explain(path: str, error: Exception) -> str:
    reason = " ".join(str(error).split())[:300]
    if path == DEFAULT_SPM_PATH:
        return (f"The default vocabulary {path} (T5's, on Google Cloud Storage) cannot be read here "
                f"({type(error).__name__}: {reason}). Off GCP, set {SPM_PATH_ENV} to a local SentencePiece "
                f"model, e.g. the one `dsbs import ... --train_vocab 32000` writes and records in the dataset's "
                "manifest.json (vocabulary.path).")
    return (f"The vocabulary {path} cannot be read ({type(error).__name__}: {reason}). Point {SPM_PATH_ENV} "
            "(or spm_path) at a readable SentencePiece .model file.")


class SentencePieceVocabulary(seqio.SentencePieceVocabulary):
    """seqio's vocabulary (equal to it for T5X's model/task check) with a one-line error on a bad path.

    `origin` says why this file was chosen (`dsbs train` prints it and records it in the run).
    """

    origin: str = ""

    def __init__(self, sentencepiece_model_file: str, extra_ids: int = 0, *, origin: str = ""):
        super().__init__(sentencepiece_model_file, extra_ids=extra_ids)
        self.origin = origin

    def __getstate__(self):
        # seqio compares vocabularies by this state (path string and extra ids), and T5X refuses a
        # model whose vocabulary is not equal to the task's: `origin` is a note, not part of it.
        state = super().__getstate__()
        state.pop("origin", None)
        return state

    def _model_context(self):
        try:
            return super()._model_context()
        except VocabularyError:
            raise
        except Exception as e:  # noqa: BLE001 - tf.errors.*, OSError: all mean "cannot read the file"
            raise VocabularyError(_explain(self.sentencepiece_model_file, e)) from None


ORIGIN_ENV = f"${SPM_PATH_ENV}"
ORIGIN_T5 = "T5's public vocabulary, what pretrained T5 checkpoints need"


def get_vocabulary(spm_path: Optional[str] = None, extra_ids: Optional[int] = None,
                   origin: Optional[str] = None) -> seqio.SentencePieceVocabulary:
    """`spm_path`, else `$DSBS_SPM_PATH`, else T5's public `cc_all.32000` model (on GCS).

    T5's model gets T5's 100 extra ids (T5X's vocabulary of 32100, embedded as 32128); a
    locally trained model gets none unless `extra_ids` says so. The file is read on first use;
    an unreadable one raises `VocabularyError` naming `$DSBS_SPM_PATH`. `origin` (default: which
    of the three it is) is kept on the vocabulary for `dsbs train` to print and record.
    """
    env = os.environ.get(SPM_PATH_ENV)
    path = spm_path or env or DEFAULT_SPM_PATH
    if origin is None:
        origin = "the caller's" if spm_path else ORIGIN_ENV if env else ORIGIN_T5
    return SentencePieceVocabulary(path, extra_ids=extra_ids_for(path) if extra_ids is None else extra_ids,
                                   origin=origin)


def dataset_vocabulary(dataset_dirs: Sequence[str], manifests: Sequence[Mapping],
                       spm_path: Optional[str] = None) -> Tuple[str, str]:
    """(model path, why) of the SentencePiece model a dataset's tasks tokenize with, as the exact string.

    `spm_path`, else `$DSBS_SPM_PATH`, else the model `dsbs import --train_vocab` recorded in the
    first of the dataset's directories whose manifest has one, else T5's. T5X compares vocabularies
    by this string (seqio's `==`), so the model gin of `dsbs sweep --emit t5x` takes it from here.
    """
    env = os.environ.get(SPM_PATH_ENV)
    if spm_path or env:
        return spm_path or env, "the caller's" if spm_path else ORIGIN_ENV
    for dataset_dir, manifest in zip(dataset_dirs, manifests):
        recorded = manifest.get("vocabulary", {}).get("path")
        if recorded:
            return (os.path.join(dataset_dir, recorded),
                    f"the dataset's own, from `dsbs import --train_vocab` in {dataset_dir}")
    return DEFAULT_SPM_PATH, ORIGIN_T5
