"""T5X checkpoint format: our writer, a T5X-style writer written here, Orbax layout, errors.

The independent writer below follows t5x/checkpoints.py (google-research/t5x @ cc342d4):
`Checkpointer.save` -> msgpack `{'version': 3, 'optimizer': state_dict}` (flax
`serialization.to_bytes`), partitioned arrays written by `_write_array` through tensorstore
with the spec from `_get_spec` (zarr driver, kvstore path = name.replace('/', '.'), relative to
the checkpoint dir), and the msgpack keeps `ts.Spec(...).to_json()` in place of the array.
"""
import os

import jax
import ml_dtypes
import numpy as np
import pytest
import tensorstore as ts
from flax import serialization

from dsbs_jax.models import checkpoints
from dsbs_jax.models.config import t5_1_1_config
from dsbs_jax.models.network import init_params, unbox_params

CONFIG = t5_1_1_config("tiny", vocab_size=64)


@pytest.fixture(scope="module")
def params():
    tree = jax.device_get(unbox_params(init_params(CONFIG, jax.random.PRNGKey(3))))
    return jax.tree_util.tree_map(np.asarray, tree)


def _flat(tree):
    return {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _assert_same(got, want):
    got, want = _flat(got), _flat(want)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == np.float32, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def test_round_trip_exact(params, tmp_path):
    ckpt_dir = checkpoints.save_t5x_checkpoint(params, str(tmp_path), step=42)
    assert ckpt_dir == f"{tmp_path}/checkpoint_42"
    # T5X's layout: one zarr dir per parameter named by its dotted path, plus the msgpack.
    assert os.path.isfile(os.path.join(ckpt_dir, "target.encoder.layers_0.attention.query.kernel", ".zarray"))
    contents = serialization.msgpack_restore(open(os.path.join(ckpt_dir, "checkpoint"), "rb").read())
    assert contents["version"] == 3 and int(contents["optimizer"]["state"]["step"]) == 42
    spec = contents["optimizer"]["target"]["decoder"]["logits_dense"]["kernel"]
    assert spec["driver"] == "zarr" and spec["kvstore"]["path"].rstrip("/") == "target.decoder.logits_dense.kernel"
    assert spec["metadata"]["shape"] == [CONFIG.emb_dim, CONFIG.vocab_size]
    # The model dir, the step dir and the msgpack file all resolve to the same checkpoint.
    for path in (str(tmp_path), ckpt_dir, os.path.join(ckpt_dir, "checkpoint")):
        _assert_same(checkpoints.load_t5x_checkpoint(path), params)
    with pytest.raises(FileExistsError, match="checkpoint_42"):
        checkpoints.save_t5x_checkpoint(params, str(tmp_path), step=42)


def test_saves_boxed_params_from_init(params, tmp_path):
    # network.init_params returns nn.LogicallyPartitioned boxes; the trainer may pass those.
    boxed = init_params(CONFIG, jax.random.PRNGKey(3))
    ckpt_dir = checkpoints.save_t5x_checkpoint(boxed, str(tmp_path), step=2)
    _assert_same(checkpoints.load_t5x_checkpoint(ckpt_dir), params)


def test_latest_step_and_explicit_step(params, tmp_path):
    checkpoints.save_t5x_checkpoint(params, str(tmp_path), step=1)
    later = jax.tree_util.tree_map(lambda x: x + 1.0, params)
    checkpoints.save_t5x_checkpoint(later, str(tmp_path), step=10)
    _assert_same(checkpoints.load_t5x_checkpoint(str(tmp_path)), later)
    _assert_same(checkpoints.load_t5x_checkpoint(str(tmp_path), step=1), params)
    with pytest.raises(FileNotFoundError, match=r"checkpoint_5.*\[1, 10\]"):
        checkpoints.load_t5x_checkpoint(str(tmp_path), step=5)


def test_adafactor_slots_follow_t5x_factoring_rule():
    # t5x/adafactor.py `_factored_dims` + `init_param_state`: factor a 2-D param when its
    # second-largest dim >= min_dim_size_to_factor (128); v_row drops the largest dim, v_col
    # the second largest; unused slots are zeros((1,)); m is (1,) since beta1 is None.
    tree = {"big": np.ones((256, 128), np.float32), "tall": np.ones((128, 512), np.float32),
            "small": np.ones((64, 32), np.float32), "scale": np.ones((32,), np.float32)}
    slots = jax.tree_util.tree_map(np.shape, checkpoints.t5x_adafactor_zero_state(tree))
    assert slots["big"] == {"v_row": (128,), "v_col": (256,), "v": (1,), "m": (1,)}
    assert slots["tall"] == {"v_row": (128,), "v_col": (512,), "v": (1,), "m": (1,)}
    assert slots["small"] == {"v_row": (1,), "v_col": (1,), "v": (64, 32), "m": (1,)}
    assert slots["scale"] == {"v_row": (1,), "v_col": (1,), "v": (32,), "m": (1,)}


def test_optimizer_state_written_like_t5x(params, tmp_path):
    ckpt_dir = checkpoints.save_t5x_checkpoint(params, str(tmp_path), step=3)
    state = checkpoints.load_t5x_checkpoint(ckpt_dir, include_optimizer_state=True)
    assert int(state["state"]["step"]) == 3
    slots = state["state"]["param_states"]["encoder"]["layers_0"]["mlp"]["wo"]["kernel"]
    assert slots["v"].shape == (CONFIG.mlp_dim, CONFIG.emb_dim) and not slots["v"].any()
    # Full `v` is partitioned in T5X (tensorstore); (1,) placeholders stay in the msgpack.
    assert os.path.isdir(os.path.join(ckpt_dir, "state.param_states.encoder.layers_0.mlp.wo.kernel.v"))
    assert not os.path.exists(os.path.join(ckpt_dir, "state.param_states.encoder.layers_0.mlp.wo.kernel.m"))


def _t5x_style_checkpoint(ckpt_dir, params, step):
    """Writes a checkpoint the way T5X's Checkpointer does, without our saver.

    Variants T5X produces that a reader must handle: zstd-compressed chunked zarr (jax.Array
    path, `array_serialization._get_metadata`), gzip (numpy path), natively stored bfloat16
    (`save_dtype='bfloat16'`, VERSION 3), unpartitioned params inline in the msgpack, and the
    pre-0.1.14 tensorstore spec with a top-level 'path'.
    """
    os.makedirs(ckpt_dir)
    flat = {"/".join(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
    written, expected = {}, {}
    for i, (name, arr) in enumerate(sorted(flat.items())):
        full_name = f"target/{name}"
        if name == "encoder/encoder_norm/scale":  # unpartitioned -> raw array in the msgpack
            written[name], expected[name] = arr, arr
            continue
        store_arr = arr.astype(ml_dtypes.bfloat16) if name == "token_embedder/embedding" else arr
        expected[name] = store_arr.astype(np.float32)
        compressor = {"id": "zstd"} if i % 2 else {"id": "gzip"}
        chunks = [max(1, d // 2) for d in arr.shape]
        rel = {"driver": "zarr", "dtype": np.dtype(store_arr.dtype).name,
               "kvstore": {"driver": "file", "path": full_name.replace("/", ".")},
               "metadata": {"compressor": compressor, "shape": list(arr.shape), "chunks": chunks}}
        absolute = dict(rel, kvstore={"driver": "file", "path": os.path.join(ckpt_dir, full_name.replace("/", "."))})
        ts.open(absolute, create=True, open=True).result().write(store_arr).result()
        spec_json = ts.Spec(rel).to_json()
        if name == "decoder/decoder_norm/scale":  # tensorstore < 0.1.14 layout
            spec_json = {"driver": "zarr", "dtype": spec_json["dtype"], "kvstore": {"driver": "file"},
                         "path": full_name.replace("/", "."), "metadata": spec_json["metadata"]}
        written[name] = ts.Spec(spec_json) if "path" not in spec_json else spec_json
    tree = {}
    for name, leaf in written.items():
        node = tree
        *parents, last = name.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = leaf
    state = {"target": tree, "state": {"step": np.asarray(step, np.int32), "param_states": {}}}
    # T5X `register_ts_spec_for_serialization`: a ts.Spec leaf serialises as its JSON dict.
    serialization.register_serialization_state(
        ts.Spec, ty_to_state_dict=lambda t: t.to_json(),
        ty_from_state_dict=lambda t, s: ts.Spec(s) if isinstance(s, dict) else s, override=True)
    with open(os.path.join(ckpt_dir, "checkpoint"), "wb") as f:
        f.write(serialization.to_bytes({"version": 3, "optimizer": state}))
    return expected


def test_reads_checkpoint_written_the_t5x_way(params, tmp_path):
    ckpt_dir = str(tmp_path / "checkpoint_1000")
    expected = _t5x_style_checkpoint(ckpt_dir, params, 1000)
    loaded = checkpoints.load_t5x_checkpoint(str(tmp_path))
    flat_loaded = {"/".join(k.key for k in p): v for p, v in jax.tree_util.tree_flatten_with_path(loaded)[0]}
    assert sorted(flat_loaded) == sorted(expected)
    for name, want in expected.items():
        assert flat_loaded[name].dtype == np.float32, name
        np.testing.assert_array_equal(flat_loaded[name], want, err_msg=name)
    # bfloat16 really was stored (and rounding happened): the loader did not read our float32.
    emb = params["token_embedder"]["embedding"]
    assert not np.array_equal(flat_loaded["token_embedder/embedding"], emb)
    np.testing.assert_allclose(flat_loaded["token_embedder/embedding"], emb, rtol=1e-2)
    assert checkpoints.load_pretrained(ckpt_dir, CONFIG)[1] == CONFIG


def test_reads_orbax_state_layout(params, tmp_path):
    # T5X's OrbaxCheckpointManagerInterface saves train_state.state_dict() (no 'optimizer'
    # wrapper) as item 'state' of step `step`: {model_dir}/checkpoint_{step}/state/.
    import orbax.checkpoint as ocp

    state = {"target": params, "state": {"step": np.asarray(7, np.int32)}}
    ocp.PyTreeCheckpointer().save(str(tmp_path / "checkpoint_7" / "state"), state)
    _assert_same(checkpoints.load_t5x_checkpoint(str(tmp_path)), params)


def test_missing_and_bad_paths_are_named(params, tmp_path):
    missing = str(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=missing):
        checkpoints.load_t5x_checkpoint(missing)
    empty = tmp_path / "empty"
    (empty / "junk").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=f"{empty} is not a T5X checkpoint"):
        checkpoints.load_t5x_checkpoint(str(empty))
    garbage = tmp_path / "garbage" / "checkpoint_1"
    garbage.mkdir(parents=True)
    (garbage / "checkpoint").write_bytes(b"\xc1 not msgpack")
    with pytest.raises(ValueError, match=str(garbage / "checkpoint")):
        checkpoints.load_t5x_checkpoint(str(garbage))
    # A checkpoint whose array directory was lost names the parameter.
    ckpt_dir = checkpoints.save_t5x_checkpoint(params, str(tmp_path / "model"), step=1)
    import shutil

    shutil.rmtree(os.path.join(ckpt_dir, "target.decoder.layers_1.mlp.wo.kernel"))
    with pytest.raises(ValueError, match="decoder/layers_1/mlp/wo/kernel"):
        checkpoints.load_t5x_checkpoint(ckpt_dir)


def test_shape_mismatch_names_param_and_both_shapes(params, tmp_path):
    ckpt_dir = checkpoints.save_t5x_checkpoint(params, str(tmp_path), step=1)
    wider = CONFIG.replace(mlp_dim=CONFIG.mlp_dim * 2)
    with pytest.raises(checkpoints.CheckpointMismatchError) as err:
        checkpoints.load_pretrained(ckpt_dir, wider)
    msg = str(err.value)
    assert ckpt_dir in msg
    assert (f"'encoder/layers_0/mlp/wo/kernel' has shape ({CONFIG.mlp_dim}, {CONFIG.emb_dim}) in the checkpoint "
            f"but the model expects ({wider.mlp_dim}, {CONFIG.emb_dim})") in msg


def test_missing_and_unexpected_params_listed(params, tmp_path):
    pruned = jax.tree_util.tree_map(lambda x: x, params)
    del pruned["decoder"]["layers_1"]["pre_mlp_layer_norm"]
    pruned["decoder"]["extra"] = {"kernel": np.zeros((2, 2), np.float32)}
    ckpt_dir = checkpoints.save_t5x_checkpoint(pruned, str(tmp_path), step=1)
    with pytest.raises(checkpoints.CheckpointMismatchError) as err:
        checkpoints.load_pretrained(ckpt_dir, CONFIG)
    msg = str(err.value)
    assert "missing from the checkpoint: ['decoder/layers_1/pre_mlp_layer_norm/scale']" in msg
    assert "not in the model: ['decoder/extra/kernel']" in msg


def test_load_pretrained_infers_config_from_t5x_shapes(params, tmp_path):
    ckpt_dir = checkpoints.save_t5x_checkpoint(params, str(tmp_path), step=1)
    loaded, config = checkpoints.load_pretrained(ckpt_dir)
    _assert_same(loaded, params)
    for field in ("vocab_size", "emb_dim", "num_heads", "head_dim", "mlp_dim", "num_encoder_layers",
                  "num_decoder_layers", "mlp_activations", "logits_via_embedding"):
        assert getattr(config, field) == getattr(CONFIG, field), field


def test_real_t5x_round_trip(tmp_path):
    """With T5X installed (`pip install -e ".[t5x]"`): T5X's Checkpointer reads ours and vice versa.

    Skipped where T5X is absent (it is git-only); it was run against T5X's source at cc342d4.
    Dims >= 128 exercise Adafactor's factored slots; all sharded dims divide by 8 because the 8
    fake devices of conftest.py make T5X's partitioner write 8-way sharded arrays.
    """
    t5x_checkpoints = pytest.importorskip("t5x.checkpoints")
    from t5x import adafactor, partitioning
    from t5x import train_state as t5x_train_state
    from t5x.examples.t5 import network as t5x_network

    t5x_config = t5x_network.T5Config(vocab_size=256, emb_dim=128, num_heads=8, num_encoder_layers=1,
                                      num_decoder_layers=1, head_dim=16, mlp_dim=256,
                                      mlp_activations=("gelu", "linear"), dropout_rate=0.0)
    tokens = np.ones((1, 4), np.int32)
    variables = t5x_network.Transformer(t5x_config).init(jax.random.PRNGKey(0), tokens, tokens, tokens,
                                                         enable_dropout=False)
    optimizer = adafactor.Adafactor(decay_rate=0.8, step_offset=0,
                                    logical_factor_rules=adafactor.standard_logical_factor_rules())
    state = t5x_train_state.FlaxOptimTrainState.create(optimizer, variables)
    partitioner = partitioning.PjitPartitioner(num_partitions=1)

    t5x_checkpoints.Checkpointer(state, partitioner, str(tmp_path / "t5x")).save(state)
    written_by_t5x = checkpoints.load_t5x_checkpoint(str(tmp_path / "t5x"), include_optimizer_state=True)
    _assert_same(written_by_t5x["target"], jax.tree_util.tree_map(np.asarray, dict(variables["params"])))
    assert (jax.tree_util.tree_map(np.shape, written_by_t5x["state"]["param_states"])
            == jax.tree_util.tree_map(np.shape, checkpoints.t5x_adafactor_zero_state(written_by_t5x["target"])))

    ours = jax.tree_util.tree_map(lambda x: x + 1.0, written_by_t5x["target"])
    path = checkpoints.save_t5x_checkpoint(ours, str(tmp_path / "ours"), step=5)
    restored = t5x_checkpoints.Checkpointer(state, partitioner, str(tmp_path / "ours")).restore(path=path)
    assert int(restored.step) == 5
    _assert_same(jax.tree_util.tree_map(np.asarray, dict(restored.params)), ours)
