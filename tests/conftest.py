"""Shared fixtures. Eight fake CPU devices are set up before JAX is first imported."""
import os
import pathlib

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def release_dir() -> pathlib.Path:
    """The real PaLM-rationale release at ../shared/data/dsbs_release (or $DSBS_RELEASE_DIR)."""
    path = pathlib.Path(os.environ.get("DSBS_RELEASE_DIR", REPO_ROOT.parent / "shared" / "data" / "dsbs_release"))
    if not path.is_dir():
        pytest.skip(f"release data not found at {path}; set DSBS_RELEASE_DIR to its location")
    return path


@pytest.fixture(scope="session")
def spm_model(tmp_path_factory) -> str:
    """A small SentencePiece model trained on real release text (T5 ids: pad 0, eos 1, unk 2)."""
    from dsbs_jax.data.vocab import train_sentencepiece

    release = pathlib.Path(os.environ.get("DSBS_RELEASE_DIR", REPO_ROOT.parent / "shared" / "data" / "dsbs_release"))
    texts = []
    if (release / "cqa" / "cqa_test.json").exists():
        texts = (release / "cqa" / "cqa_test.json").read_text().splitlines()[:800]
    texts += [f"{a} plus {b} is {a + b}. So the answer is (a) yes." for a in range(40) for b in range(10)]
    out = tmp_path_factory.mktemp("spm") / "spm"
    return train_sentencepiece(texts, str(out), vocab_size=512)
