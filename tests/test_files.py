"""Activation-file sources with generated files: formats, shards, streaming order and every
rejection (NaN row, wrong shape, truncated, empty, unknown format, width, unpickling)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from safetensors.torch import save_file as save_torch

from saelab.config import RunConfig
from saelab.data.files import make_file_source

ROWS, D, EVAL = 300, 8, 20


def _data(rows: int = ROWS, d: int = D, start: int = 0) -> np.ndarray:
    """Column 0 holds the global row index, so a served row says where it came from."""
    x = np.random.default_rng(start).standard_normal((rows, d)).astype(np.float32)
    x[:, 0] = np.arange(start, start + rows)
    return x


def _cfg(path: Path | str, **top) -> RunConfig:
    return RunConfig().replace(data={"source": f"file:{path}", "shuffle_buffer": 50}, eval_rows=EVAL, **top)


def _source(path, **top):
    return make_file_source(_cfg(path, **top))


@pytest.fixture()
def npy(tmp_path) -> Path:
    path = tmp_path / "acts.npy"
    np.save(path, _data())
    return path


def test_one_epoch_visits_every_training_row_once_and_never_the_held_out(npy):
    src = _source(npy)
    assert (src.d_in, src.rows, src.train_rows, src.chunk_rows) == (D, ROWS, ROWS - EVAL, 50)
    seen = torch.cat([src.batch(step, 40) for step in range(7)])  # 7 * 40 = 280 training rows
    assert sorted(seen[:, 0].long().tolist()) == list(range(ROWS - EVAL))
    assert seen[:50, 0].long().tolist() != list(range(50))  # shuffled
    x = torch.from_numpy(_data())
    torch.testing.assert_close(src.eval_set(EVAL), x[-EVAL:])
    torch.testing.assert_close(src.eval_set(5), x[-5:])  # the last rows
    with pytest.raises(ValueError, match="held-out"):
        src.eval_set(EVAL + 1)
    assert len(src._chunks) == 1  # bounded: one chunk resident


def test_batches_are_a_pure_function_of_seed_and_step(npy):
    a, b = _source(npy), _source(npy)
    for step in range(30):  # a has streamed and cached other chunks; b starts cold at each step
        a.batch(step, 24)
    for step in (0, 5, 11, 29, 1000):
        torch.testing.assert_close(a.batch(step, 24), b.batch(step, 24), rtol=0, atol=0)
    assert not torch.equal(a.batch(0, 24), a.batch(1, 24))
    assert not torch.equal(a.batch(0, 24), _source(npy, seed=1).batch(0, 24))


def test_ordered_serves_the_training_rows_in_file_order_every_epoch(npy):
    src = make_file_source(_cfg(npy).replace(data={"order": "ordered"}))
    served = np.concatenate([src.batch(s, 40)[:, 0].numpy() for s in range(14)])  # 560 rows: two epochs and a bit
    train = ROWS - EVAL
    assert (served == np.arange(560) % train).all() and src.describe()["order"] == "ordered"
    shuffled = np.concatenate([_source(npy).batch(s, 40)[:, 0].numpy() for s in range(7)])[:train]
    assert sorted(shuffled.tolist()) == list(range(train)) and not (shuffled == np.arange(train)).all()


def test_drop_norm_above_drops_a_files_high_norm_rows(tmp_path):
    from saelab.data.sources import make_source

    x = _data()
    x[::25] *= 1000  # rows 0, 25, ..., 275: 12 sink rows, all among the 280 training rows
    np.save(tmp_path / "sinks.npy", x)
    src = make_source(_cfg(tmp_path / "sinks.npy").replace(data={"drop_norm_above": 10.0}))
    dropped = 0
    for s in range(7):  # one epoch
        b = src.batch(s, 40)
        dropped += src.last_dropped
        assert b.shape == (40, D) and float(b.norm(dim=-1).max()) <= src.threshold
    assert dropped == 12 and src.eval_set(EVAL).shape[0] == EVAL and src.describe()["order"] == "shuffled"


def test_a_batch_straddles_the_epoch_boundary(npy):
    src = _source(npy)
    stream = torch.cat([src.batch(s, 40) for s in range(14)])  # two epochs of 280
    straddle = src.batch(5, 48)  # stream positions 240..287
    torch.testing.assert_close(straddle, stream[240:288], rtol=0, atol=0)
    assert sorted(stream[280:, 0].long().tolist()) == list(range(ROWS - EVAL))
    assert not torch.equal(stream[:280], stream[280:])  # a new permutation each epoch


@pytest.mark.parametrize("dtype", ["float16", "float64"])
def test_npy_dtypes_are_served_as_float32(tmp_path, dtype):
    x = _data().astype(dtype)
    np.save(tmp_path / "x.npy", x)
    src = _source(tmp_path / "x.npy")
    assert src.batch(0, 4).dtype == torch.float32
    np.testing.assert_allclose(src.eval_set(EVAL).numpy(), x[-EVAL:].astype(np.float32))


def test_safetensors_single_named_and_bfloat16(tmp_path):
    x = _data()
    save_file({"acts": x}, str(tmp_path / "one.safetensors"))
    torch.testing.assert_close(_source(tmp_path / "one.safetensors").eval_set(EVAL), torch.from_numpy(x[-EVAL:]))
    save_file({"acts": x, "other": x[:, :3].copy()}, str(tmp_path / "two.safetensors"))
    with pytest.raises(ValueError, match=r"two.safetensors: holds 2 tensors \['acts', 'other'\]"):
        _source(tmp_path / "two.safetensors")
    assert _source(f"{tmp_path / 'two.safetensors'}#other").d_in == 3
    with pytest.raises(ValueError, match="has no tensor 'nope'"):
        _source(f"{tmp_path / 'two.safetensors'}#nope")
    bf = torch.from_numpy(x).to(torch.bfloat16)
    save_torch({"acts": bf}, str(tmp_path / "bf.safetensors"))
    torch.testing.assert_close(_source(tmp_path / "bf.safetensors").eval_set(EVAL), bf[-EVAL:].float(), rtol=0, atol=0)


def test_shards_in_a_folder_or_a_glob_concatenate_in_name_order(tmp_path):
    (tmp_path / "shards").mkdir()
    for i, start in enumerate((0, 120, 240)):
        save_file({"activations": _data(120 if i < 2 else 100, start=start)}, str(tmp_path / "shards" / f"s-{i:02d}.safetensors"))
    for spec in (tmp_path / "shards", f"{tmp_path}/shards/s-*.safetensors"):
        src = _source(spec)
        assert src.rows == 340 and src.train_rows == 320
        assert src.eval_set(EVAL)[:, 0].long().tolist() == list(range(320, 340))  # tail of the last shard
        seen = torch.cat([src.batch(s, 64) for s in range(5)])
        assert sorted(seen[:, 0].long().tolist()) == list(range(320))  # chunks span shard boundaries


def test_nan_row_is_named_by_file_and_row_before_training(tmp_path):
    """The whole file is checked when the source opens, so a bad row deep in the file stops the
    run before its first step (and again, at once, on resume) instead of minutes in."""
    x = _data()
    x[123, 4] = np.nan
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(ValueError, match=r"nan.npy: row 123 contains NaN or Inf.*data.skip_nonfinite=true"):
        _source(tmp_path / "nan.npy")  # a training row
    x = _data()
    x[ROWS - 3, 0] = np.inf
    np.save(tmp_path / "inf.npy", x)
    with pytest.raises(ValueError, match=rf"inf.npy: row {ROWS - 3} contains NaN or Inf"):
        _source(tmp_path / "inf.npy")  # a held-out row
    (tmp_path / "shards").mkdir()
    save_file({"a": _data(100)}, str(tmp_path / "shards" / "s0.safetensors"))
    bad = _data(250)
    bad[7, 1] = np.nan
    save_file({"a": bad}, str(tmp_path / "shards" / "s1.safetensors"))
    with pytest.raises(ValueError, match=r"s1.safetensors: row 7 contains"):
        _source(tmp_path / "shards")


def test_the_check_streams_in_bounded_blocks(tmp_path, monkeypatch):
    """The up-front check reads at most MAX_CHUNK_BYTES of rows at a time, whatever the file size."""
    from saelab.data import files
    monkeypatch.setattr(files, "MAX_CHUNK_BYTES", 40 * 4 * D)  # 40 rows per block
    reads = []
    real = files.Segment.read
    monkeypatch.setattr(files.Segment, "read", lambda self, a, b, out=None: reads.append(b - a) or real(self, a, b, out))
    x = _data()
    x[290, 2] = np.nan
    np.save(tmp_path / "late.npy", x)
    with pytest.raises(ValueError, match="row 290"):
        _source(tmp_path / "late.npy")
    assert max(reads) <= 40 and sum(reads) == ROWS  # every row read once, 40 at a time


def test_skip_nonfinite_trains_without_the_bad_rows_and_counts_them(tmp_path):
    x = _data()
    bad_rows = [0, 1, 57, 58, 200, ROWS - 1]  # at the start, adjacent, mid-chunk, in the held-out tail
    x[bad_rows, 3] = np.nan
    x[100, 5] = -np.inf
    np.save(tmp_path / "some.npy", x)
    src = make_file_source(_cfg(tmp_path / "some.npy").replace(data={"skip_nonfinite": True}))
    good = [i for i in range(ROWS) if i not in bad_rows + [100]]
    assert src.skipped_rows == 7 and src.rows == len(good) and src.describe()["skipped_nonfinite_rows"] == 7
    assert src.eval_set(EVAL)[:, 0].long().tolist() == good[-EVAL:]
    epoch = torch.cat([src.batch(s, 1) for s in range(src.train_rows)])
    assert sorted(epoch[:, 0].long().tolist()) == good[:-EVAL]  # each good training row once
    assert torch.isfinite(epoch).all()
    # in a run, the count is an event of every arm
    cfg = _cfg(tmp_path / "some.npy", steps=4, log_interval=2).replace(
        data={"skip_nonfinite": True, "batch_size": 16}, sae={"d_sae": 8})
    from saelab.training import train
    run = train.train(cfg, tmp_path / "run", progress=False)["run"]
    assert [e for e in run.events if e["kind"] == "skipped_rows"][0]["rows"] == 7


def test_constant_rows_too_few_rows_and_all_bad_rows_are_refused_by_name(tmp_path):
    np.save(tmp_path / "const.npy", np.ones((ROWS, D), np.float32))
    with pytest.raises(ValueError, match="every row is the same vector"):
        _source(tmp_path / "const.npy")
    np.save(tmp_path / "few.npy", _data(60))  # 40 training rows after the 20 held out
    with pytest.raises(ValueError, match=r"data.batch_size=128 is more than the 40 training rows"):
        _source(tmp_path / "few.npy")
    assert make_file_source(_cfg(tmp_path / "few.npy").replace(data={"batch_size": 40})).train_rows == 40
    np.save(tmp_path / "nan.npy", np.full((ROWS, D), np.nan, np.float32))
    with pytest.raises(ValueError, match="every one of its 300 rows contains NaN or Inf"):
        make_file_source(_cfg(tmp_path / "nan.npy").replace(data={"skip_nonfinite": True}))


@pytest.mark.parametrize("shape", [(ROWS * D,), (30, 10, D)])
def test_wrong_rank(tmp_path, shape):
    np.save(tmp_path / "x.npy", np.zeros(shape, np.float32))
    save_file({"x": np.zeros(shape, np.float32)}, str(tmp_path / "x.safetensors"))
    for name in ("x.npy", "x.safetensors"):
        with pytest.raises(ValueError, match=rf"{name}: has shape \[.*\] \(rank {len(shape)}\); activations must be 2-D"):
            _source(tmp_path / name)


def test_truncated_files(tmp_path):
    np.save(tmp_path / "x.npy", _data())
    save_file({"x": _data()}, str(tmp_path / "x.safetensors"))
    for name in ("x.npy", "x.safetensors"):
        path = tmp_path / name
        path.write_bytes(path.read_bytes()[:-100])
        with pytest.raises(
            ValueError, match=rf"{name}: is truncated: the header says the data ends at byte \d+ but the file has \d+ bytes"
        ):
            _source(path)
    (tmp_path / "h.safetensors").write_bytes((1000).to_bytes(8, "little") + b"{}")
    with pytest.raises(ValueError, match="h.safetensors: is truncated"):
        _source(tmp_path / "h.safetensors")


def test_empty_files(tmp_path):
    for name in ("e.npy", "e.safetensors", "e.pt"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(ValueError, match=rf"{name}: is empty \(0 bytes\)"):
            _source(tmp_path / name)
    np.save(tmp_path / "rows0.npy", np.zeros((0, D), np.float32))
    with pytest.raises(ValueError, match=r"rows0.npy: is empty: shape \[0, 8\] has no rows"):
        _source(tmp_path / "rows0.npy")


def test_unknown_format_missing_file_and_non_float(tmp_path):
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"x.csv: has an unknown format '.csv'; use one of .npy, .safetensors"):
        _source(tmp_path / "x.csv")
    with pytest.raises(ValueError, match="no such file or folder"):
        _source(tmp_path / "missing.npy")
    np.save(tmp_path / "int.npy", np.zeros((ROWS, D), np.int64))
    with pytest.raises(ValueError, match="int.npy: has dtype int64; activations must be floating point"):
        _source(tmp_path / "int.npy")
    np.save(tmp_path / "obj.npy", np.array([[object()]] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="obj.npy: holds Python objects; loading it would need unpickling"):
        _source(tmp_path / "obj.npy")


def test_d_in_mismatch_names_both_widths_and_the_file(npy):
    with pytest.raises(ValueError, match=rf"sae.d_in=16 but activation file {npy} has width d_in=8"):
        make_file_source(_cfg(npy).replace(sae={"d_in": 16}))
    assert make_file_source(_cfg(npy).replace(sae={"d_in": 8})).d_in == 8
    with pytest.raises(ValueError, match=f"{ROWS} rows is not more than eval_rows={ROWS}"):
        make_file_source(_cfg(npy).replace(eval_rows=ROWS))


class _Payload:
    """Unpickling this would create a file: proof that code in a .pt never runs."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pt_only_with_weights_only(tmp_path):
    x = torch.from_numpy(_data())
    torch.save(x, tmp_path / "t.pt")
    torch.testing.assert_close(_source(tmp_path / "t.pt").eval_set(EVAL), x[-EVAL:])
    torch.save({"acts": x, "step": 3}, tmp_path / "d.pt")  # one tensor among plain values
    assert _source(tmp_path / "d.pt").rows == ROWS
    marker = tmp_path / "pwned"
    torch.save({"acts": x, "evil": _Payload(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(ValueError, match=r"evil.pt: refused: .*weights_only=True"):
        _source(tmp_path / "evil.pt")
    assert not marker.exists()


def _write_saelens_cache(folder: Path, hook: str = "blocks.0.hook_resid_pre", context: int = 10, shards: int = 2,
                         contexts_per_batch: int = 5) -> np.ndarray:
    """What SAELens' CacheActivationsRunner leaves on disk (datasets' save_to_disk): Arrow IPC
    stream files data-0000i-of-0000n.arrow whose one column, named after the hook, holds an
    Array2D(context_size, d_in) per row, stored as list<list<float32>> (the extension type's
    storage; pyarrow reads it as such without `datasets`), beside dataset_info.json and
    state.json. Returns the token rows in order [n_tokens, D]."""
    import json

    import pyarrow as pa

    folder.mkdir(parents=True)
    n_ctx = ROWS // context
    x = _data()
    meta = {"ARROW:extension:name": "datasets.features.features.Array2DExtensionType",
            "ARROW:extension:metadata": json.dumps({"shape": [context, D], "dtype": "float32"})}
    field = pa.field(hook, pa.list_(pa.list_(pa.float32())), metadata=meta)
    schema = pa.schema([field], metadata={"huggingface": json.dumps({"info": {"features": {hook: {"_type": "Array2D"}}}})})
    per_shard = n_ctx // shards
    for s in range(shards):
        with pa.ipc.new_stream(str(folder / f"data-{s:05d}-of-{shards:05d}.arrow"), schema) as w:
            for b in range(s * per_shard, (s + 1) * per_shard, contexts_per_batch):
                ctx = x[b * context:(b + contexts_per_batch) * context].reshape(contexts_per_batch, context, D)
                w.write_batch(pa.record_batch([pa.array([[list(map(float, t)) for t in c] for c in ctx], field.type)], schema))
    (folder / "dataset_info.json").write_text("{}")
    (folder / "state.json").write_text('{"_data_files": []}')
    return x


def test_a_saelens_activation_cache_is_a_file_source(tmp_path):
    """Issue 15: the arrow files of SAELens' CacheActivationsRunner read as file:<folder>, every
    token row in order, streamed by positioned reads like any other file."""
    x = _write_saelens_cache(tmp_path / "cache")
    src = _source(tmp_path / "cache")
    assert src.rows == ROWS and src.train_rows == ROWS - EVAL
    assert torch.equal(src.eval_set(EVAL), torch.from_numpy(x[-EVAL:]))  # values exact, tokens in order
    seen = torch.cat([src.batch(s, 56) for s in range(5)])
    assert sorted(seen[:, 0].long().tolist()) == list(range(ROWS - EVAL))
    one = _source(tmp_path / "cache" / "data-00001-of-00002.arrow#blocks.0.hook_resid_pre")
    assert one.rows == ROWS // 2


def test_arrow_files_that_are_not_activations_are_refused_by_name(tmp_path):
    import pyarrow as pa

    ragged = tmp_path / "ragged.arrow"
    with pa.ipc.new_stream(str(ragged), pa.schema([("acts", pa.list_(pa.float32()))])) as w:
        w.write_batch(pa.record_batch([pa.array([[1.0, 2.0], [3.0]], pa.list_(pa.float32()))], names=["acts"]))
    with pytest.raises(ValueError, match="ragged rows"):
        _source(ragged)
    two = tmp_path / "two.arrow"
    vec = pa.list_(pa.float32())
    with pa.ipc.new_stream(str(two), pa.schema([("a", vec), ("b", vec)])) as w:
        w.write_batch(pa.record_batch([pa.array([[1.0, 2.0]], vec), pa.array([[3.0, 4.0]], vec)], names=["a", "b"]))
    with pytest.raises(ValueError, match=r"2 float columns \['a', 'b'\]; pick one"):
        _source(two)
    (tmp_path / "junk.arrow").write_bytes(b"not arrow at all")
    with pytest.raises(ValueError, match="not an Arrow IPC file"):
        _source(tmp_path / "junk.arrow")
