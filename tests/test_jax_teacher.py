"""The in-process JAX teacher: a tiny random T5X checkpoint writes (noise) rationales through the job."""
import pytest

from dsbs_jax.data import schema, tfrecords
from dsbs_jax.models import checkpoints, network
from dsbs_jax.models.config import t5_1_1_config
from dsbs_jax.rationales.job import JobConfig, run_job


def test_jax_teacher_end_to_end(tmp_path, spm_model):
    config = t5_1_1_config("tiny", vocab_size=512)
    params = network.unbox_params(network.init_params(config))
    checkpoint = checkpoints.save_t5x_checkpoint(params, str(tmp_path / "teacher"), step=1)
    src = tmp_path / "src" / "cqa"
    choices = ("river", "ocean", "lake", "pond", "sea")
    examples = [schema.Example(id=f"j{i}", dataset="cqa", split="test", label=choices[i % 5], choices=choices,
                               input=f"Where do fish {i} live?\nAnswer Choices:\n" + "\n".join(
                                   f"({l}) {c}" for l, c in zip("abcde", choices))) for i in range(11)]
    tfrecords.write_split(str(src), "test", examples)
    manifest = run_job(JobConfig(dataset="cqa", split="test", out=str(tmp_path / "out"), src=str(src), teacher="jax",
                                 jax_checkpoint=checkpoint, spm_path=spm_model, batch_size=4, max_tokens=8,
                                 progress=False))
    entry = manifest["splits"]["test"]
    # 11 inputs in micro-batches of 4: every id decoded once, in three batches.
    assert entry["num_examples"] == 11 and entry["requests"] == 11
    assert entry["num_with_teacher_output"] == 11
    assert sum(entry["parse_failures"].values()) + round(entry["parse_rate"] * 11) == 11
    assert manifest["teacher"]["backend"] == "jax" and entry["output_tokens"] > 0
    got = {e.id: e for e in tfrecords.read_split(str(tmp_path / "out" / "cqa"), "test")}
    assert set(got) == {e.id for e in examples}
    assert all(len(e.teacher_meta["output_sha256"]) == 64 for e in got.values())


def test_jax_teacher_whose_vocabulary_is_wider_than_its_sentencepiece_model(tmp_path, spm_model):
    """T5 pads its vocabulary past the SentencePiece model (32128 ids for 32100 pieces); ids beyond the
    pieces decode as <unk>, as seqio's vocabulary does, instead of failing the job."""
    import sentencepiece

    pieces = sentencepiece.SentencePieceProcessor(model_file=spm_model).get_piece_size()
    config = t5_1_1_config("tiny", vocab_size=pieces + 256)  # half the ids have no piece
    params = network.unbox_params(network.init_params(config))
    checkpoint = checkpoints.save_t5x_checkpoint(params, str(tmp_path / "teacher"), step=1)
    src = tmp_path / "src" / "cqa"
    examples = [schema.Example(id=f"w{i}", dataset="cqa", split="test", label="lake", choices=("lake", "sea"),
                               input=f"Where do fish {i} live?\nAnswer Choices:\n(a) lake\n(b) sea") for i in range(4)]
    tfrecords.write_split(str(src), "test", examples)
    manifest = run_job(JobConfig(dataset="cqa", split="test", out=str(tmp_path / "out"), src=str(src), teacher="jax",
                                 jax_checkpoint=checkpoint, spm_path=spm_model, batch_size=4, max_tokens=16,
                                 temperature=1.0, progress=False))
    entry = manifest["splits"]["test"]
    assert entry["num_with_teacher_output"] == 4 and entry["output_tokens"] > 0
    assert {e.id for e in tfrecords.read_split(str(tmp_path / "out" / "cqa"), "test")} == {e.id for e in examples}
