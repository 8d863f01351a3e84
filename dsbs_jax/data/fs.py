"""The few file operations the data side needs: `os` for local paths, `tf.io.gfile` for URLs.

The subset of `tf.io.gfile`'s API used here (`exists`, `isdir`, `listdir`, `makedirs`, `remove`,
`rmtree`, `rename`, `GFile`). Local paths never import TensorFlow, so a command that stops at a
bad flag, path or record answers in a fraction of a second instead of after TF's import; `gs://`
and other URLs go through `tf.io.gfile` as before.
"""
from __future__ import annotations

import os
import shutil
from typing import IO


def _tf_gfile():
    import tensorflow as tf

    return tf.io.gfile


def is_url(path: str) -> bool:
    return "://" in str(path)


def exists(path: str) -> bool:
    return _tf_gfile().exists(path) if is_url(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    return _tf_gfile().isdir(path) if is_url(path) else os.path.isdir(path)


def listdir(path: str) -> list[str]:
    return _tf_gfile().listdir(path) if is_url(path) else os.listdir(path)


def makedirs(path: str) -> None:
    _tf_gfile().makedirs(path) if is_url(path) else os.makedirs(path, exist_ok=True)


def remove(path: str) -> None:
    _tf_gfile().remove(path) if is_url(path) else os.remove(path)


def rmtree(path: str) -> None:
    _tf_gfile().rmtree(path) if is_url(path) else shutil.rmtree(path)


def rename(src: str, dst: str, overwrite: bool = False) -> None:
    if is_url(src) or is_url(dst):
        return _tf_gfile().rename(src, dst, overwrite=overwrite)
    if not overwrite and os.path.exists(dst):
        raise FileExistsError(f"{dst} exists")
    os.replace(src, dst)


def GFile(path: str, mode: str = "r") -> IO:  # noqa: N802 (tf.io.gfile's name)
    if is_url(path):
        return _tf_gfile().GFile(path, mode)
    return open(path, mode) if "b" in mode else open(path, mode, encoding="utf-8")
