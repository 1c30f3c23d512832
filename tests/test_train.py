"""The lockstep trainer: files and columns, identical batches across arms, exact resume, and
non-finite losses."""

from __future__ import annotations

import json
import math
import os
import signal

import pandas as pd
import pytest
import torch

import saelab
from saelab.config import RunConfig
from saelab.data.sources import make_source, resolve
from saelab.training import metrics, runs, stack, train
from saelab.training.models import build

BASE = RunConfig().with_overrides({
    "sae.d_in": 16, "sae.d_sae": 32, "data.n_features": 48, "data.mean_active": 3.0, "data.batch_size": 32,
    "steps": 300, "log_interval": 50, "eval_rows": 512, "schedule.warmup_steps": 50,
    "penalty.form": "per_sample_sum", "penalty.alpha": 0.3, "optim.lr": 3e-3,  # strong enough that latents die
    "resample.strategy": "seed", "resample.interval": 80, "resample.after_warmup": True,
    "tracking.window_batches": 10, "tracking.dead_tokens": 320, "aux.auxk_k": 8,
})
# Arms covering every piece of state a checkpoint must carry: the tracker (three detectors),
# a fitted normalizer, Adam resets, the per-arm generators (anthropic sampling), the reanimation
# schedule, and a second stacked group (topk with AuxK).
ARMS = {
    "seed": BASE,
    "seed_twin": BASE,
    "fix": BASE.with_overrides({"resample.strategy": "seed-fix", "resample.detector": "window",
                                "normalize.mode": "dataset_scalar", "resample.reset_adam": True}),
    "anthropic": BASE.with_overrides({"resample.strategy": "anthropic", "resample.detector": "tokens",
                                      "aux.reanimation_coef": 1e-2, "aux.reanimation_schedule": "linear_anneal",
                                      "aux.reanimation_anneal_steps": 200}),
    "topk": BASE.with_overrides({"sae.architecture": "topk", "sae.k": 4, "penalty.form": "none",
                                 "aux.auxk_coef": 1 / 32, "resample.strategy": "off"}),
}
DOCUMENTED = [
    "step", "lr", "alpha", "loss", "mse", "fvu", "explained_variance", "l0", "l0_frac", "dead_frac", "dead_frac_heldout",
    "dead_frac_common", "nearly_dead_1e-3", "nearly_dead_1e-5", "dead_rows", "dead_window_tokens",
    "dead_frac_batch", "dead_frac_window", "dead_frac_tokens", "l1_recon_ratio", "l1_penalty", "reanim_coef",
    "l1_sum", "l1_mean", "l1_feature_mean", "mse_orig", "fvu_orig", "mmcs", "frac_recovered",
] + [f"det_{d}_{m}" for d in ("single_batch", "window", "tokens") for m in ("precision", "recall")]
FILES = ["config.json", "metrics.parquet", "events.jsonl", "latents.safetensors", "sae.safetensors",
         "summary.json", "autopsy.json", "init.json", "lifecycles.json"]



def _assert_same_runs(got: dict, want: dict, names, weights: bool = True) -> None:
    """Every metrics column exactly equal, and (weights=True) every final weight, arm by arm."""
    for name in names:
        pd.testing.assert_frame_equal(got[name].metrics, want[name].metrics, check_exact=True, obj=name)
        for w in want[name].weights if weights else ():
            assert torch.equal(got[name].weights[w], want[name].weights[w]), (name, w)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    return out, train.train(ARMS, out, progress=False, factor="resample")


def test_a_lockstep_run_writes_the_documented_files_and_columns(straight):
    out, result = straight
    assert list(result) == list(ARMS)
    assert json.loads((out / "arms.json").read_text()) == {"arms": list(ARMS), "factor": "resample"}
    assert list(runs.load_arms(out)) == list(ARMS)
    for name, run in result.items():
        files = {f.name for f in (out / name).iterdir()}
        assert set(FILES) <= files, name
        assert not [f for f in files if f.startswith(".")]  # no temporary files left
        df = runs.load_run(out / name).metrics
        assert set(DOCUMENTED) <= set(df.columns), sorted(set(DOCUMENTED) - set(df.columns))
        assert df["step"].tolist() == [0, 50, 100, 150, 200, 250, 300]
        assert run.config.sae.d_in == 16  # resolved from the source
        lat = run.latents
        assert lat["steps"].tolist() == df["step"].tolist()
        assert lat["fire_counts"].shape == (7, 32) and int(lat["eval_rows"]) == 512
        # the derived columns agree with their definitions
        final = df.iloc[-1]
        assert final["dead_frac_heldout"] == pytest.approx(float((lat["fire_counts"][-1] == 0).double().mean()))
        assert final["dead_frac"] <= final["dead_frac_heldout"]  # dead also needs silence over the training window
        assert final["l0_frac"] == pytest.approx(final["l0"] / 32)
        assert final["explained_variance"] == pytest.approx(1 - final["fvu"])
        assert final["l1_recon_ratio"] == pytest.approx(final["alpha"] * final["l1_penalty"] / final["rec_loss"])
        assert not math.isnan(final["mmcs"]) and 0 <= final["frac_recovered"] <= 1  # synthetic: truth known
        assert run.summary["arm"] == name and run.summary["steps"] == 300
        assert run.summary["dead_frac"] == final["dead_frac"]
        assert run.summary["saelab"]["version"] == saelab.__version__  # which saelab computed the numbers
        assert {w: tuple(t.shape) for w, t in run.weights.items() if w.startswith("W_")} == {"W_enc": (32, 16), "W_dec": (32, 16)}


def test_saved_metrics_match_the_saved_weights(straight):
    """Rebuild the final model from sae.safetensors and recompute the last row's held-out numbers."""
    out, result = straight
    run = result["seed"]  # normalize.mode none: the model sees the raw rows
    source = make_source(run.config)
    x = source.eval_set(run.config.eval_rows).unsqueeze(0)
    model = build(resolve(run.config, source).sae, n_arms=1)
    model.load_state_dict({k: v.unsqueeze(0) for k, v in run.weights.items()})
    model.eval()
    with torch.no_grad():
        _, codes, x_hat = model(x)
    final = run.metrics.iloc[-1]
    assert final["mse"] == pytest.approx(metrics.mse(x, x_hat).item(), rel=1e-4)
    assert final["fvu"] == pytest.approx(metrics.fvu(x, x_hat).item(), rel=1e-4)
    assert final["l0"] == pytest.approx(metrics.l0(codes).item(), rel=1e-6)
    assert final["dead_frac_heldout"] == pytest.approx(metrics.dead_fraction(metrics.fire_counts(codes)).item())
    assert final["mmcs"] == pytest.approx(metrics.mmcs(model.W_dec[0].detach(), source.ground_truth).item(), rel=1e-5)


def test_arms_see_identical_batches(straight):
    _, result = straight
    a, b = result["seed"].metrics, result["seed_twin"].metrics
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    for w in result["seed"].weights:
        assert torch.equal(result["seed"].weights[w], result["seed_twin"].weights[w])
    # every arm, in either stacked group, logged the same raw training batch statistics
    cols = ["norm_x_norm_min", "norm_x_norm_max"]
    for name, run in result.items():
        pd.testing.assert_frame_equal(run.metrics[cols], a[cols], check_exact=True, obj=name)


def test_the_run_exercised_what_the_resume_test_relies_on(straight):
    _, result = straight
    for name in ("seed", "fix", "anthropic"):
        resampled = [e["n_resampled"] for e in result[name].events if e["kind"] == "resample"]
        # interval 80 over 300 steps: never after the last step, as in the seed's loop
        assert [e["step"] for e in result[name].events if e["kind"] == "resample"] == [80, 160, 240]
        assert sum(resampled) > 0, f"{name}: nothing was resampled, so resume would not be tested on it"
    assert any(e["kind"] == "warmup_end" and e["step"] == 50 for e in result["seed"].events)
    assert result["topk"].metrics["dead_frac_tokens"].max() > 0, "AuxK never had a dead latent to train"
    assert result["anthropic"].metrics["reanim_coef"].iloc[-1] == 0.0  # annealed to 0 by step 200


def test_resume_continues_to_identical_metrics_and_weights(straight, tmp_path):
    out, result = straight
    split = tmp_path / "split"
    partial = train.train(ARMS, split, progress=False, stop_at=150, factor="resample")
    assert partial["seed"].metrics["step"].tolist() == [0, 50, 100, 150]
    assert train.checkpoint_path(split).exists()
    assert not (split / "seed" / "sae.safetensors").exists()  # not finished
    with pytest.raises(ValueError, match="before the checkpoint at step 150"):
        train.train(None, split, resume=True, progress=False, stop_at=100)
    resumed = train.train(None, split, resume=True, progress=False)
    assert list(resumed) == list(ARMS)
    for name in ARMS:
        a, b = result[name], resumed[name]
        pd.testing.assert_frame_equal(b.metrics, a.metrics, check_exact=True, obj=name)
        assert b.events == a.events, name
        assert set(b.weights) == set(a.weights)
        for w in a.weights:
            assert torch.equal(b.weights[w], a.weights[w]), (name, w)
        for k in a.latents:
            assert torch.equal(b.latents[k], a.latents[k]), (name, k)
        timing = {"wall_seconds", "steps_per_second"}
        # the wall time spans both segments, so the rate counts all 300 steps
        assert b.summary["steps_per_second"] * b.summary["wall_seconds"] == pytest.approx(300)
        sa, sb = (runs.load_run(r.path).summary for r in (a, b))  # from JSON, where NaN is null
        assert {k: v for k, v in sb.items() if k not in timing} == {k: v for k, v in sa.items() if k not in timing}
        assert b.autopsy == a.autopsy and b.lifecycles == a.lifecycles


def test_an_interrupt_between_steps_resumes_exactly(straight, tmp_path):
    """A KeyboardInterrupt (raised here while the next batch is drawn) checkpoints and resumes."""
    out, result = straight
    cfgs = {"seed": ARMS["seed"], "fix": ARMS["fix"]}
    source = make_source(BASE)
    real = source.batch

    def interrupted(step, batch_size):
        if step == 120:
            raise KeyboardInterrupt
        return real(step, batch_size)

    source.batch = interrupted
    with pytest.raises(KeyboardInterrupt):
        train.train(cfgs, tmp_path / "r", progress=False, source=source)
    resumed = train.train(None, tmp_path / "r", resume=True, progress=False)
    _assert_same_runs(resumed, result, cfgs)


def test_a_non_finite_loss_stops_with_the_arm_and_step_and_leaves_a_checkpoint(tmp_path):
    cfg = BASE.with_overrides({"steps": 40, "log_interval": 20, "schedule.shape": "constant", "resample.strategy": "off"})
    arms = {"ok": cfg, "boom": cfg.with_overrides({"optim.lr": 1e30})}  # one Adam step of 1e30 overflows the next loss
    with pytest.raises(RuntimeError, match=r"arm 'boom'.*not finite at step 1"):
        train.train(arms, tmp_path, progress=False)
    assert train.checkpoint_path(tmp_path).exists()
    ok = runs.load_run(tmp_path / "ok")
    assert ok.metrics["step"].tolist() == [0]
    boom = runs.load_run(tmp_path / "boom").events
    assert [e for e in boom if e["kind"] == "nonfinite"] == [{"step": 1, "kind": "nonfinite", "quantity": "loss (inf)"}]
    with pytest.raises(RuntimeError, match="arm 'boom'"):  # the checkpoint loads, and the failure is reproducible
        train.train(None, tmp_path, resume=True, progress=False)


def test_a_single_arm_trains_into_its_own_directory(tmp_path):
    cfg = BASE.with_overrides({"steps": 20, "log_interval": 10, "resample.strategy": "off"})
    result = train.train(cfg, tmp_path / "one", progress=False)
    assert list(result) == ["one"]
    assert not (tmp_path / "one" / "arms.json").exists()
    assert runs.load_run(tmp_path / "one").metrics["step"].tolist() == [0, 10, 20]


def test_arms_must_share_data_and_steps(tmp_path):
    with pytest.raises(ValueError, match="'steps'"):
        train.train({"a": BASE, "b": BASE.with_overrides({"steps": 100})}, tmp_path, progress=False)
    with pytest.raises(ValueError, match="not a saelab run directory"):
        train.train(BASE, tmp_path / "nothing", resume=True, progress=False)


def test_each_arm_uses_its_own_tracking_config(tmp_path):
    """Arms that differ only in how death is detected train identically and detect differently."""
    cfg = BASE.with_overrides({"steps": 150, "log_interval": 50, "resample.strategy": "off", "tracking.dead_tokens": 64})
    result = train.train({"short": cfg, "long": cfg.with_overrides({"tracking.dead_tokens": 10**9})}, tmp_path, progress=False)
    short, long = result["short"].metrics, result["long"].metrics
    pd.testing.assert_frame_equal(short[["mse", "l0", "dead_frac"]], long[["mse", "l0", "dead_frac"]], check_exact=True)
    assert short["dead_frac_tokens"].max() > 0
    assert long["dead_frac_tokens"].max() == 0


def _interrupting_tracker(at_call: int, action):
    """A DeadTracker whose update (inside a step, after the optimizer update) runs ``action`` on
    its ``at_call``-th call across all groups."""
    calls = {"n": 0}

    class Interrupting(stack.DeadTracker):
        def update(self, codes):
            calls["n"] += 1
            if calls["n"] == at_call:
                action()
            super().update(codes)

    return Interrupting


def test_a_ctrl_c_inside_a_step_is_held_until_the_step_completes(straight, tmp_path, monkeypatch):
    """Ctrl-C lands wherever the process is, usually inside a step: here right after the optimizer
    update. The trainer finishes the step, checkpoints it and stops; resume is exact."""
    out, result = straight
    cfgs = {"seed": ARMS["seed"], "fix": ARMS["fix"]}
    monkeypatch.setattr(stack, "DeadTracker", _interrupting_tracker(121, lambda: os.kill(os.getpid(), signal.SIGINT)))
    with pytest.raises(KeyboardInterrupt):
        train.train(cfgs, tmp_path / "r", progress=False)
    monkeypatch.undo()
    assert train.read_checkpoint_meta(tmp_path / "r")["step"] == 121
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
    resumed = train.train(None, tmp_path / "r", resume=True, progress=False)
    _assert_same_runs(resumed, result, cfgs, weights=False)


def test_an_interrupt_that_tears_a_step_keeps_the_previous_checkpoint(straight, tmp_path, monkeypatch):
    """A KeyboardInterrupt raised mid-step (a second Ctrl-C, or no signal handler off the main
    thread) leaves weights updated and trackers not: that state is not saved; resume starts from
    the last periodic checkpoint and still reproduces the straight run."""
    out, result = straight
    cfgs = {n: ARMS[n].with_overrides({"checkpoint_every": 50}) for n in ("seed", "fix")}

    def stop():
        raise KeyboardInterrupt

    monkeypatch.setattr(stack, "DeadTracker", _interrupting_tracker(121, stop))
    with pytest.raises(KeyboardInterrupt):
        train.train(cfgs, tmp_path / "r", progress=False)
    monkeypatch.undo()
    assert train.read_checkpoint_meta(tmp_path / "r")["step"] == 100
    resumed = train.train(None, tmp_path / "r", resume=True, progress=False)
    _assert_same_runs(resumed, result, cfgs)


def test_compiled_training_and_its_resume_follow_eager(tmp_path):
    """compile=True end to end (resampling, normalizers, a TopK+AuxK group, metrics, checkpoints):
    the metrics follow the eager run's within float tolerance, and stopping and resuming a compiled
    run reproduces the straight compiled run exactly."""
    cfgs = {n: ARMS[n].with_overrides({"steps": 120, "compile": True}) for n in ("seed", "fix", "topk")}
    compiled = train.train(cfgs, tmp_path / "c", progress=False)
    eager = train.train({n: c.replace(compile=False) for n, c in cfgs.items()}, tmp_path / "e", progress=False)
    for n in cfgs:
        a, b = compiled[n].metrics, eager[n].metrics
        for col in ("loss", "mse", "l0", "dead_frac"):
            assert a[col].to_numpy() == pytest.approx(b[col].to_numpy(), rel=1e-3, abs=1e-5, nan_ok=True), (n, col)
        assert runs.load_run(tmp_path / "c" / n).config.compile
    train.train(cfgs, tmp_path / "r", progress=False, stop_at=60)
    resumed = train.train(None, tmp_path / "r", resume=True, progress=False)
    _assert_same_runs(resumed, compiled, cfgs, weights=False)


# ----- issue 14: nothing lost --------------------------------------------------------------------


def test_sigterm_mid_run_checkpoints_names_the_resume_command_and_resumes_exactly(straight, tmp_path):
    """A SIGTERM (a `timeout`, a preemption) sent at step 137 stops at that step boundary with a
    checkpoint; the message names the real directory and the command; resume ends with the
    straight run's metrics and weights exactly."""
    out, result = straight
    cfgs = {"seed": ARMS["seed"], "fix": ARMS["fix"]}
    on_step = lambda done: os.kill(os.getpid(), signal.SIGTERM) if done == 137 else None  # noqa: E731
    with pytest.raises(train.Interrupted) as caught:
        train.train(cfgs, tmp_path / "r", progress=False, on_step=on_step)
    e = caught.value
    assert (e.signum, e.step, e.saved) == (signal.SIGTERM, 137, 137)
    assert f"checkpoint at step 137 in {(tmp_path / 'r').resolve()}" in str(e)
    assert f"resume with: saelab train --resume {tmp_path / 'r'}" in str(e)
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is given back
    assert train.read_checkpoint_meta(tmp_path / "r")["step"] == 137
    resumed = train.train(None, tmp_path / "r", resume=True, progress=False)
    _assert_same_runs(resumed, result, cfgs)


KILL9 = """
import os, signal, sys
from saelab.training import train
from saelab.config import RunConfig
cfg = RunConfig.from_json(open(sys.argv[1]).read())
train.train(cfg, sys.argv[2], progress=False,
            on_step=lambda done: os.kill(os.getpid(), signal.SIGKILL) if done == int(sys.argv[3]) else None)
"""


def test_kill_9_with_the_default_cadence_loses_at_most_one_interval(tmp_path):
    """No checkpoint_every set: the automatic cadence (a tenth of the run, at least one log
    interval) bounds what a kill -9 loses, and resume from what is left is exact."""
    import subprocess
    import sys

    cfg = BASE.with_overrides({"steps": 300, "resample.strategy": "anthropic"})
    assert cfg.checkpoint_every == 0 and train.checkpoint_interval(cfg) == 50
    (tmp_path / "cfg.json").write_text(cfg.to_json())
    proc = subprocess.run([sys.executable, "-c", KILL9, str(tmp_path / "cfg.json"), str(tmp_path / "r"), "137"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    saved = train.read_checkpoint_meta(tmp_path / "r")["step"]
    assert 137 - train.checkpoint_interval(cfg) <= saved <= 137 and saved == 100
    resumed = train.train(None, tmp_path / "r", resume=True, progress=False)
    straight = train.train(cfg, tmp_path / "straight" / "r", progress=False)
    _assert_same_runs(resumed, straight, ["r"])


class _Killed(BaseException):
    """Stands for a kill -9: nothing of saelab runs after it (not a KeyboardInterrupt)."""


def test_a_kill_between_the_files_and_the_checkpoint_resumes_exactly(straight, tmp_path, monkeypatch):
    """The arms' files are flushed first and the one-file checkpoint last. Killed in between (at
    the step-150 checkpoint), the files are ahead of the step-100 checkpoint; resume cuts them back
    and reproduces the straight run."""
    out, result = straight
    cfgs = {n: ARMS[n].with_overrides({"checkpoint_every": 50}) for n in ("seed", "fix")}
    real = runs.write_tensors

    def dying(path, tensors, metadata=None):
        if path.name == train.CHECKPOINT and json.loads(metadata["saelab"])["step"] == 150:
            raise _Killed
        return real(path, tensors, metadata)

    monkeypatch.setattr(runs, "write_tensors", dying)
    with pytest.raises(_Killed):
        train.train(cfgs, tmp_path / "r", progress=False)
    monkeypatch.undo()
    assert runs.load_run(tmp_path / "r" / "seed").metrics["step"].max() == 150  # files ahead ...
    assert train.read_checkpoint_meta(tmp_path / "r")["step"] == 100  # ... of the checkpoint
    resumed = train.train(None, tmp_path / "r", resume=True, progress=False)
    _assert_same_runs(resumed, result, cfgs)


def _rewrite_checkpoint(out, **changes):
    from safetensors.torch import save_file

    path = train.checkpoint_path(out)
    meta = {**train.read_checkpoint_meta(out), **changes}
    save_file(runs.read_tensors(path), str(path), metadata={"saelab": json.dumps(meta)})


def test_a_checkpoint_that_disagrees_with_itself_or_the_run_is_refused(tmp_path, capsys):
    from saelab.cli import main

    cfg = BASE.with_overrides({"steps": 100, "resample.strategy": "off"})
    train.train({"a": cfg, "b": cfg}, tmp_path / "r", progress=False, stop_at=50)
    meta = train.read_checkpoint_meta(tmp_path / "r")
    assert meta["step"] == 50 and meta["arms"] == ["a", "b"]
    for changes, why in [({"step": 100}, "says step 100 but group 0's Adam state has taken 50 steps"),
                         ({"step": 0}, "says step 0 but group 0's Adam state has taken 50 steps"),
                         ({"arms": ["b", "a"]}, "is for arms"),
                         ({"configs": ["x", "y"]}, "other configs")]:
        _rewrite_checkpoint(tmp_path / "r", **{**meta, **changes})
        assert main(["train", "--resume", str(tmp_path / "r"), "--quiet"]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and why in err and "refusing" in err, err
    _rewrite_checkpoint(tmp_path / "r", **meta)  # put right: resumes
    assert main(["train", "--resume", str(tmp_path / "r"), "--quiet"]) == 0


def test_a_finished_run_drops_its_checkpoint_unless_kept(tmp_path):
    cfg = BASE.with_overrides({"steps": 20, "log_interval": 10, "resample.strategy": "off"})
    train.train(cfg, tmp_path / "a", progress=False)
    assert not train.checkpoint_path(tmp_path / "a").exists()
    with pytest.raises(ValueError, match="the run is finished and its checkpoint was dropped"):
        train.train(None, tmp_path / "a", resume=True, progress=False)
    train.train(cfg, tmp_path / "b", progress=False, keep_checkpoint=True)
    assert train.read_checkpoint_meta(tmp_path / "b")["step"] == 20


def test_a_second_training_on_the_same_directory_is_refused_while_the_first_runs(tmp_path):
    cfg = BASE.with_overrides({"steps": 20, "log_interval": 10, "resample.strategy": "off"})
    seen = []

    def intrude(done):
        if done == 5:
            with pytest.raises(ValueError, match=r"is in use by another saelab training \(pid \d+\)"):
                train.train(cfg, tmp_path / "r", progress=False)
            seen.append(done)

    result = train.train(cfg, tmp_path / "r", progress=False, on_step=intrude)
    assert seen == [5] and result["r"].metrics["step"].tolist() == [0, 10, 20]  # the first one finished intact
    train.train(cfg, tmp_path / "r2", progress=False)  # the lock is released after a run


def test_stale_temporary_files_from_a_kill_are_removed(tmp_path):
    cfg = BASE.with_overrides({"steps": 20, "log_interval": 10, "resample.strategy": "off"})
    train.train(cfg, tmp_path / "r", progress=False, stop_at=10)
    stale = [tmp_path / "r" / ".metrics.parquet.a1b2c3d4", tmp_path / "r" / ".checkpoint.safetensors.zz_9x8y7"]
    for p in stale:
        p.write_bytes(b"half a file")
    (tmp_path / "r" / ".mine").write_text("not saelab's")
    train.train(None, tmp_path / "r", resume=True, progress=False)
    assert not any(p.exists() for p in stale) and (tmp_path / "r" / ".mine").exists()


# ----- issue 11: rows dropped by norm, weight decay, b_enc init ----------------------------------


def test_dropped_rows_are_counted_per_log_and_a_resumed_run_counts_the_same(tmp_path):
    """data.drop_norm_above on synthetic sink rows: a dropped_rows event for the held-out set at
    step 0 and one per log for the training batches; stopping mid-interval (step 70, logs every 50)
    and resuming gives the same events and weights as the straight run (the pending count is in
    the checkpoint)."""
    cfg = BASE.with_overrides({"steps": 120, "data.outlier_fraction": 0.05, "data.drop_norm_above": 10.0,
                               "optim.weight_decay": 0.1, "sae.b_enc_init": -0.05, "resample.strategy": "off"})
    straight_run = train.train({"a": cfg}, tmp_path / "s", progress=False)["a"]
    drops = [e for e in straight_run.events if e["kind"] == "dropped_rows"]
    assert drops[0]["where"] == "held-out set" and drops[0]["rows"] > 0 and drops[0]["threshold"] > 0
    training = [e for e in drops if e["where"] == "training batches"]
    assert [e["step"] for e in training] == [50, 100, 120]
    assert 0.03 < sum(e["rows"] for e in training) / (120 * 32) < 0.07  # about the 5% planted
    train.train({"a": cfg}, tmp_path / "r", progress=False, stop_at=70)
    resumed = train.train(None, tmp_path / "r", resume=True, progress=False)["a"]
    assert [e for e in resumed.events if e["kind"] == "dropped_rows"] == drops
    for name, w in straight_run.weights.items():
        assert torch.equal(resumed.weights[name], w), name
