"""H27 (phase 04): the first position's (BOS) rows kill latents. ``data.exclude_first_positions``
drops the rows at the first positions of every ``data.context_length``-row sequence of a file from
training and held-out rows alike; H27 acts where the rows at position 0 have a mean norm well above
the others' median, and its one arm drops position 0."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from saelab.config import RunConfig
from saelab.data.sources import make_source
from saelab.lab.base import PROFILES
from saelab.lab.causes import normalization as norm
from saelab.lab.hypothesis import Context, diff
from saelab.training.train import train

SEQ, D = 16, 8
STEPS = np.arange(0, 401, 50)


def sequences(path, n_seq: int = 40, bos: float = 8.0, seed: int = 0):
    """``n_seq`` sequences of SEQ rows; row j of a sequence has its position j in column 0 (so a
    served row tells where it came from) and its sequence in column 1; position 0 is at ``bos``
    times the others' norm."""
    g = np.random.default_rng(seed)
    x = g.standard_normal((n_seq * SEQ, D)).astype(np.float32)
    x[:, 0] = np.tile(np.arange(SEQ), n_seq)
    x[:, 1] = np.repeat(np.arange(n_seq), SEQ)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x[::SEQ] *= bos
    np.save(path, x)
    return x


def cfg(path, **changes) -> RunConfig:
    fields = {"data.source": f"file:{path}", "data.context_length": SEQ, "data.batch_size": 32, "eval_rows": 64, "steps": 20,
              "log_interval": 10, "sae.d_sae": 16, "data.shuffle_buffer": 100}
    return RunConfig().with_overrides(fields | {k.replace("__", "."): v for k, v in changes.items()})


def positions(x: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """File row index of each served row (matched on the position and sequence columns)."""
    key = {(round(float(a), 5), round(float(b), 5)): i for i, (a, b) in enumerate(raw[:, :2])}
    return np.array([key[(round(float(a), 5), round(float(b), 5))] for a, b in x[:, :2]])


@pytest.mark.parametrize("first", [1, 3])
def test_exclusion_drops_exactly_the_first_positions_from_training_and_held_out_rows(tmp_path, first):
    raw = sequences(tmp_path / "a.npy")
    src = make_source(cfg(tmp_path / "a.npy", data__exclude_first_positions=first))
    assert src.rows == 40 * (SEQ - first)
    train_rows = np.concatenate([src.batch(s, 32).numpy() for s in range(-(-src.train_rows // 32))])
    held = src.eval_set(64).numpy()
    seen = positions(train_rows, raw)
    assert set(seen) == set(np.flatnonzero(np.arange(len(raw)) % SEQ >= first)) - set(positions(held, raw))  # every kept row, once
    assert (positions(held, raw) % SEQ >= first).all() and (seen % SEQ >= first).all()
    assert src.excluded_rows + src.excluded_eval_rows == 40 * first
    full = make_source(cfg(tmp_path / "a.npy"))  # without the field every row is served
    assert full.rows == 40 * SEQ and full.excluded_rows == 0


def test_the_run_records_the_dropped_rows(tmp_path):
    sequences(tmp_path / "a.npy")
    run = train(cfg(tmp_path / "a.npy", data__exclude_first_positions=1), tmp_path / "run", progress=False)["run"]
    (ev,) = [e for e in run.events if e["kind"] == "dropped_rows"]
    assert ev["where"] == "positions" and ev["positions"] == 1 and ev["rows"] + ev["held_out_rows"] == 40


@pytest.mark.parametrize(("changes", "field"), [
    ({"data.exclude_first_positions": -1}, "data.exclude_first_positions"),
    ({"data.exclude_first_positions": SEQ}, "data.exclude_first_positions"),  # every row of a sequence
    ({"data.source": "synthetic", "data.exclude_first_positions": 1}, "data.exclude_first_positions"),  # no positions
])
def test_invalid_settings_name_the_field(tmp_path, changes, field):
    with pytest.raises(ValueError, match=field.replace(".", r"\.")):
        cfg(tmp_path / "a.npy", **{k.replace(".", "__"): v for k, v in changes.items()})


def test_a_file_of_partial_sequences_is_refused_naming_context_length(tmp_path):
    sequences(tmp_path / "a.npy")
    with pytest.raises(ValueError, match=r"not whole sequences of data\.context_length=24"):
        make_source(cfg(tmp_path / "a.npy", data__context_length=24, data__exclude_first_positions=1))


def ctx(path, **changes) -> Context:
    return Context(cfg(path, **changes), PROFILES["smoke"], {}, False)


def test_applies_where_position_0_is_high_norm_and_not_already_excluded(tmp_path):
    sequences(tmp_path / "bos.npy", bos=8.0)
    sequences(tmp_path / "flat.npy", bos=1.0)
    assert norm.H27.applies(ctx(tmp_path / "bos.npy")) is None
    assert "already drops the first 1" in norm.H27.applies(ctx(tmp_path / "bos.npy", data__exclude_first_positions=1))
    assert "mean norm 1x the other rows' median, below 3x" in norm.H27.applies(ctx(tmp_path / "flat.npy"))
    # positions unknown: 640 rows are not whole sequences of 24
    assert "positions unknown" in norm.H27.applies(ctx(tmp_path / "bos.npy", data__context_length=24))
    assert "no positions" in norm.H27.applies(Context(RunConfig(), PROFILES["smoke"], {}, False))
    assert norm.H27 in norm.PHASE.hypotheses


def test_the_arm_changes_one_field(tmp_path):
    sequences(tmp_path / "bos.npy")
    c = ctx(tmp_path / "bos.npy")
    (arm,) = norm.H27.arms(c)
    assert arm.name == "exclude_bos" and dict(arm.changes) == {"data.exclude_first_positions": 1}
    assert list(diff(c.base, c.base.with_overrides(dict(arm.changes)))) == ["data.exclude_first_positions"]


def run(dead: float, c: RunConfig, dropped: int = 0) -> SimpleNamespace:
    m = pd.DataFrame({"step": STEPS, "dead_frac": np.full(STEPS.shape, dead), "l0_frac": np.full(STEPS.shape, 4 / 16)})
    m["l0"] = m["l0_frac"] * 16
    events = [{"step": 0, "kind": "dropped_rows", "where": "positions", "rows": dropped}] if dropped else []
    return SimpleNamespace(metrics=m, events=events, autopsy=None, latents={}, weights={}, config=c, summary={})


@pytest.mark.parametrize(("fix_dead", "word"), [(0.05, "confirmed"), (0.39, "refuted")])
def test_the_judge_confirms_when_dropping_position_0_removes_the_deaths(tmp_path, fix_dead, word):
    sequences(tmp_path / "bos.npy")
    c = ctx(tmp_path / "bos.npy")
    arms = norm.H27.arms(c)
    runs = {s: {"base": run(0.4, c.base), "exclude_bos": run(fix_dead, c.base, dropped=36)} for s in range(3)}
    v = norm.H27.judge(runs, c, arms)
    assert v["id"] == "H27" and v["verdict"] == word, v["effect"]
    assert v["numbers"]["bos_norm_ratio"] > 3 and v["numbers"]["dropped_training_rows"] == 36
    assert "position-0 rows at" in v["effect"] and "H23's cut" in v["effect"]
    if word == "confirmed":
        assert v["fix"] == {"arm": "exclude_bos", "changes": {"data.exclude_first_positions": 1}}
