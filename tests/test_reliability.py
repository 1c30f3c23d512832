"""Issue 22: the reproducers of a hostile or careless user. Every bad input is ONE line and exit code
2 with nothing already written lost; an export never replaces files; a rerun never serves a run made
by other code or on other data; inspect never gives a confident answer on broken weights."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from safetensors.torch import save_file

import saelab.version
from saelab import cli
from saelab.config import RunConfig
from saelab.data.transformer import CACHE_FORMAT, built_once
from saelab.execution import cluster, jobs
from saelab.lab.phases import build
from saelab.report import batch
from saelab.report.batch import run_lab
from saelab.training import diagnose, train

D, S = 8, 16


def one_line(capsys, *needles: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, (n, err)
    return err


def snapshot(folder: Path) -> dict[str, str]:
    """name -> sha256 of every file under ``folder``: what must not change on a refusal."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(Path(folder).rglob("*")) if p.is_file() and p.name != ".lock"}


# ----- finding 1: export never destroys data ----------------------------------------------------


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = RunConfig().with_overrides({"sae.d_in": D, "sae.d_sae": S, "data.n_features": 32, "data.mean_active": 3.0,
                                       "steps": 20, "log_interval": 10, "eval_rows": 64})
    arms = {"relu": base, "topk": base.with_overrides({"sae.architecture": "topk", "sae.k": 4})}
    out = tmp_path_factory.mktemp("runs")
    train.train(arms, out, progress=False)
    return out


def test_export_refuses_a_folder_holding_an_earlier_export(runs, tmp_path, capsys):
    out = tmp_path / "exported"
    assert cli.main(["export", str(runs / "relu"), "--format", "saelens", str(out)]) == 0
    capsys.readouterr()
    before = snapshot(out)
    assert cli.main(["export", str(runs / "topk"), "--format", "saelens", str(out)]) == 2
    one_line(capsys, str(out), "cfg.json")
    assert cli.main(["export", str(runs / "topk"), "--format", "sparsify", str(out)]) == 2
    one_line(capsys, str(out))
    assert snapshot(out) == before  # nothing replaced, nothing added


def test_export_refuses_the_runs_own_folder_and_its_training_folder(runs, capsys):
    before = snapshot(runs)
    for target in (runs / "topk", runs):
        assert cli.main(["export", str(runs / "topk"), "--format", "sparsify", str(target)]) == 2
        one_line(capsys, "run")
    assert snapshot(runs) == before
    assert cli.main(["export", str(runs / "topk"), "--format", "sparsify", str(runs / "topk" / ".")]) == 2
    one_line(capsys)


def test_export_into_a_new_or_unrelated_folder_works_and_keeps_other_files(runs, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert cli.main(["export", str(runs / "topk"), "--format", "sparsify", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "keep me" and (out / "sae.safetensors").exists()


# ----- finding 2: a run's identity includes what produced it -----------------------------------


def file_job(tmp_path: Path, acts: Path):
    cfg = RunConfig().with_overrides({"data.source": f"file:{acts}", "sae.d_in": 0, "sae.d_sae": S, "steps": 20,
                                      "log_interval": 10, "eval_rows": 64, "data.batch_size": 64})
    return jobs.Job("t/seed0", {"base": cfg, "wide": cfg.with_overrides({"sae.d_sae": 2 * S})}, tmp_path / "job", "width")


def test_a_finished_job_on_other_data_of_the_same_shape_is_retrained(tmp_path):
    acts = tmp_path / "acts.npy"
    np.save(acts, np.random.default_rng(0).normal(size=(2000, D)).astype(np.float32))
    job = file_job(tmp_path, acts)
    assert jobs.run_job(job)["state"] == "new"
    assert jobs.job_state(job) == "done"
    w0 = jobs.load_job(job)["base"].weights["W_enc"].clone()
    np.save(acts, (50 + np.random.default_rng(1).normal(size=(2000, D))).astype(np.float32))  # same shape, other rows
    assert jobs.job_state(job) == "stale"
    record = jobs.run_job(job)
    assert record["state"] == "stale" and record["stale"]  # what differed is said
    assert jobs.job_state(job) == "done"
    assert not torch.equal(jobs.load_job(job)["base"].weights["W_enc"], w0)


def test_a_finished_job_made_by_another_saelab_torch_or_numpy_is_stale(tmp_path, monkeypatch):
    acts = tmp_path / "acts.npy"
    np.save(acts, np.random.default_rng(0).normal(size=(2000, D)).astype(np.float32))
    job = file_job(tmp_path, acts)
    jobs.run_job(job)
    assert jobs.job_state(job) == "done"
    for module, attr in ((saelab.version, "__version__"), (torch, "__version__"), (np, "__version__")):
        with monkeypatch.context() as m:
            m.setattr(module, attr, "0.0.0-other")
            assert jobs.job_state(job) == "stale", module
            assert "0.0.0-other" in jobs.stale_reason(job)
    assert jobs.job_state(job) == "done"


# ----- finding 3: inspect on broken weights -----------------------------------------------------


def saelens(path: Path, arch: str = "standard", mutate=None, **cfg) -> Path:
    g = torch.Generator().manual_seed(0)
    sd = {"W_enc": torch.randn(D, S, generator=g), "b_enc": torch.zeros(S), "W_dec": torch.randn(S, D, generator=g),
          "b_dec": torch.zeros(D)}
    if arch == "jumprelu":
        sd["threshold"] = torch.full((S,), 0.1)
    if mutate:
        mutate(sd)
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in sd.items()}, str(path / "sae_weights.safetensors"))
    (path / "cfg.json").write_text(json.dumps({"architecture": arch, "d_in": D, "d_sae": S, "apply_b_dec_to_input": True,
                                               "normalize_activations": "none", **cfg}))
    return path


def sparsify(path: Path, **cfg) -> Path:
    g = torch.Generator().manual_seed(0)
    path.mkdir(parents=True, exist_ok=True)
    save_file({"encoder.weight": torch.randn(S, D, generator=g), "encoder.bias": torch.zeros(S),
               "W_dec": torch.randn(S, D, generator=g), "b_dec": torch.zeros(D)}, str(path / "sae.safetensors"))
    (path / "cfg.json").write_text(json.dumps({"activation": "topk", "num_latents": S, "k": 4, "d_in": D, **cfg}))
    return path


def write_acts(folder: Path) -> Path:
    """256 rows of width D as ``folder/acts.npy``: the activation file the inspect probes read."""
    p = folder / "acts.npy"
    np.save(p, np.random.default_rng(0).normal(size=(256, D)).astype(np.float32))
    return p


@pytest.fixture()
def acts(tmp_path) -> Path:
    return write_acts(tmp_path)


def inspect_cli(ckpt: Path, acts: Path, tmp_path: Path, *extra: str) -> int:
    return cli.main(["inspect", str(ckpt), "--data", f"file:{acts}", "--out", str(tmp_path / "report"), *extra])


def _nan_all(sd):
    sd["W_enc"][:] = float("nan")


def _inf_one(sd):
    sd["W_enc"][0, 3] = float("inf")


def _nan_decoder_row(sd):
    sd["W_dec"][5, 2] = float("nan")


@pytest.mark.parametrize("mutate, needle", [(_nan_all, "W_enc"), (_inf_one, "latent 3"), (_nan_decoder_row, "W_dec")])
def test_inspect_refuses_nonfinite_weights(tmp_path, acts, capsys, mutate, needle):
    ckpt = saelens(tmp_path / "sl", mutate=mutate)
    assert inspect_cli(ckpt, acts, tmp_path) == 2
    one_line(capsys, needle, "NaN or Inf")
    assert not (tmp_path / "report").exists()


@pytest.mark.parametrize("write, needle", [
    (lambda p: saelens(p, "topk", k=10**9), "k=1000000000"),
    (lambda p: saelens(p, "topk", k=0), "k=0"),
    (lambda p: sparsify(p, k=0), "k=0"),
    (lambda p: sparsify(p, k=10**9), "k=1000000000"),
    (lambda p: saelens(p, apply_b_dec_to_input="false"), "apply_b_dec_to_input"),
])
def test_inspect_refuses_impossible_settings(tmp_path, acts, capsys, write, needle):
    assert inspect_cli(write(tmp_path / "ck"), acts, tmp_path) == 2
    one_line(capsys, needle)


# ----- findings 5, 6: one line naming the field and the values ---------------------------------


@pytest.mark.parametrize("write, needle", [
    (lambda p: saelens(p, architecture=["standard"]), "architecture"),
    (lambda p: saelens(p, normalize_activations=["none"]), "normalize_activations"),
    (lambda p: saelens(p, architecture=None, activation_fn="topk", activation_fn_kwargs=[4]), "activation_fn_kwargs"),
    (lambda p: saelens(p, "topk", k=[4]), "k"),
    (lambda p: saelens(p, "topk", k="eight"), "k='eight'"),
    (lambda p: saelens(p, d_in=str(D)), f"d_in='{D}'"),
    (lambda p: saelens(p, "jumprelu", mutate=lambda sd: sd.update(threshold=torch.zeros(2, S))), "threshold"),
    (lambda p: sparsify(p, d_in=None), "d_in"),
    (lambda p: sparsify(p, k=None), "k"),
])
def test_a_malformed_foreign_config_is_one_line_naming_the_field(tmp_path, acts, capsys, write, needle):
    assert inspect_cli(write(tmp_path / "ck"), acts, tmp_path) == 2
    one_line(capsys, needle)


@pytest.mark.parametrize("trainer, needle", [([1], "trainer"), ({"dict_class": ["AutoEncoder"]}, "dict_class")])
def test_a_malformed_dictionary_learning_config_is_one_line(tmp_path, acts, capsys, trainer, needle):
    p = tmp_path / "dl"
    p.mkdir()
    g = torch.Generator().manual_seed(0)
    torch.save({"bias": torch.zeros(D), "encoder.weight": torch.randn(S, D, generator=g), "encoder.bias": torch.zeros(S),
                "decoder.weight": torch.randn(D, S, generator=g)}, p / "ae.pt")
    (p / "config.json").write_text(json.dumps({"trainer": trainer}))
    assert inspect_cli(p, acts, tmp_path) == 2
    one_line(capsys, needle)


def test_inspect_rows_must_be_positive_and_a_fifo_is_refused(tmp_path, acts, capsys):
    ckpt = saelens(tmp_path / "sl")
    assert inspect_cli(ckpt, acts, tmp_path, "--rows", "-5") == 2
    one_line(capsys, "--rows -5")
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    (fifo / "sae_weights.safetensors").write_bytes((ckpt / "sae_weights.safetensors").read_bytes())
    os.mkfifo(fifo / "cfg.json")  # reading it would block for ever
    assert inspect_cli(fifo, acts, tmp_path) == 2
    one_line(capsys, "cfg.json", "not a regular file")


def wandb_log(path: Path, steps) -> Path:
    pd.DataFrame({"Step": steps, "metrics/l0": np.linspace(50, 10, len(steps)),
                  "dead_frac": np.linspace(0, 0.5, len(steps))}).to_csv(path, index=False)
    return path


def test_autopsy_column_advice_works_and_absurd_steps_are_one_line(tmp_path, capsys):
    log = tmp_path / "log.csv"
    steps = np.arange(0, 1000, 10)
    pd.DataFrame({"step": steps, "Step": steps, "metrics/l0": np.where(steps < 500, 60.0, 5.0)}).to_csv(log, index=False)
    assert cli.main(["autopsy", str(log), "--out", str(tmp_path / "a")]) == 2
    one_line(capsys, "--column NAME=step")
    # the advice of the tool's own message, on a log with an L0 column and no dead-latent column
    assert cli.main(["autopsy", str(log), "--column", "Step=step", "--out", str(tmp_path / "a")]) == 0
    assert json.loads((tmp_path / "a" / "autopsy.json").read_text())["n_collapses"] == 1
    capsys.readouterr()
    for steps, needle in ((np.arange(100) * 1e30, "step"), (-np.arange(100) * 10, "negative")):
        log = wandb_log(tmp_path / "bad.csv", steps)
        assert cli.main(["autopsy", str(log), "--out", str(tmp_path / "b")]) == 2
        one_line(capsys, needle)


def test_a_run_killed_before_its_first_checkpoint_can_be_trained_again(tmp_path, capsys):
    """kill -9 before the first checkpoint leaves config.json and no checkpoint: --resume says there
    is nothing to resume and how to start again; the same train command then starts it afresh."""
    args = ["train", "--set", "steps=20", "--set", "sae.d_sae=32", "--set", "eval_rows=256", "--set", "log_interval=10",
            "--out", str(tmp_path / "run"), "--quiet"]
    cfg = RunConfig().with_overrides({"steps": 20, "sae.d_sae": 32, "eval_rows": 256, "log_interval": 10})
    train.train(cfg, tmp_path / "run", progress=False, stop_at=10)
    train.checkpoint_path(tmp_path / "run").unlink()  # what a kill -9 before the first checkpoint leaves
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--quiet"]) == 2
    err = one_line(capsys, "no checkpoint")
    assert "saelab train" in err and "--resume" not in err.split("no checkpoint", 1)[1]
    assert cli.main(args) == 0
    assert "run directory" in capsys.readouterr().out


def test_the_interrupted_lab_says_to_rerun_with_force(tmp_path, monkeypatch, capsys):
    """After Ctrl-C the folder holds runs/, which a plain rerun refuses; the advice must be a
    command that is accepted: the same one with --force (finished jobs kept, the last one resumed)."""
    def interrupted(**kwargs):
        (tmp_path / "lab" / "runs").mkdir(parents=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(batch, "run_lab", interrupted)  # the CLI imports it when it runs a lab
    assert cli.main(["lab", "--profile", "smoke", "--only", "02", "--out", str(tmp_path / "lab")]) == 130
    err = one_line(capsys, "--force")
    assert "rerun the same command to continue" not in err


# ----- finding 4: autopsy in O(n log n), bounded clusters ----------------------------------------


def detect_reference(metrics, dead_rise=0.2, window_steps=None, l0_drop_factor=4.0):
    """The O(n x window) detection issue 22 replaced, kept verbatim as the reference its spans must equal."""
    df = metrics.sort_values("step", kind="stable")
    steps = df["step"].to_numpy(dtype=np.int64)
    dead = df["dead_frac"].to_numpy(dtype=np.float64)
    l0 = df["l0"].to_numpy(dtype=np.float64)
    window = diagnose.default_window(steps) if window_steps is None else window_steps
    spans = []
    for i in range(len(steps)):
        hi = int(np.searchsorted(steps, steps[i] + window, side="right"))
        if hi <= i + 1:
            continue
        hit_dead = dead[i + 1 : hi] - dead[i] > dead_rise
        hit_l0 = (l0[i] > 0) & (l0[i] > l0_drop_factor * l0[i + 1 : hi])
        hits = np.nonzero(hit_dead | hit_l0)[0]
        if len(hits) == 0:
            continue
        span = [i, i + 1 + int(hits[-1]), bool(hit_dead.any()), bool(hit_l0.any())]
        if spans and span[0] <= spans[-1][1]:
            last = spans[-1]
            spans[-1] = [last[0], max(last[1], span[1]), last[2] or span[2], last[3] or span[3]]
        else:
            spans.append(span)
    return spans


@pytest.mark.parametrize("seed", range(12))
def test_collapse_spans_equal_the_quadratic_reference(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 400))
    steps = np.cumsum(rng.integers(0 if seed % 3 == 0 else 1, 30, n))  # repeated steps in some tables
    dead = np.clip(np.cumsum(rng.normal(0, 0.08, n)) + rng.choice([0, 0.5], n, p=[0.97, 0.03]), 0, 1)
    l0 = np.abs(50 + np.cumsum(rng.normal(0, 8, n))) * rng.choice([1, 0.1], n, p=[0.95, 0.05])
    for arr in (dead, l0):
        arr[rng.random(n) < 0.05] = np.nan
    m = pd.DataFrame({"step": steps, "dead_frac": dead, "l0": l0})
    window = None if seed % 2 else int(rng.integers(0, 300))
    assert diagnose.collapse_spans(m, 0.2, window, 4.0) == detect_reference(m, 0.2, window, 4.0)


def test_local_cluster_beyond_the_machine_is_refused_saying_what_it_can(capsys):
    with pytest.raises(ValueError, match=r"at most \d+ workers"):
        cluster.parse_cluster("local:1000")
    assert cluster.parse_cluster("local:1").workers == 1


@pytest.mark.timeout(60)
def test_a_tcp_address_that_is_not_a_dask_scheduler_is_refused():
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # Dask's handshake is a bad HTTP request: not worth a line
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with pytest.raises(ValueError, match="no Dask scheduler answered"):
            cluster.start(cluster.parse_cluster(f"tcp://127.0.0.1:{server.server_address[1]}"), progress=False)
    finally:
        server.shutdown()


# ----- finding 7: check-data describes any data ------------------------------------------------


def check_data(capsys, data: np.ndarray, path: Path, *extra: str) -> tuple[int, str, str]:
    np.save(path, data.astype(np.float32))
    rc = cli.main(["check-data", f"file:{path}", *extra])
    got = capsys.readouterr()
    return rc, got.out, got.err


def test_check_data_on_huge_rows_warns_of_overflow(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(10_000, D)) * 1e30
    rc, out, err = check_data(capsys, x, tmp_path / "huge.npy")
    assert rc == 0 and "overflow" in out


def test_check_data_describes_data_with_zero_rows_and_few_rows(tmp_path, capsys):
    x = np.random.default_rng(0).normal(size=(10_000, D))
    x[:100] = x[-100:] = 0.0  # all-zero rows among the training and the held-out ones
    rc, out, err = check_data(capsys, x, tmp_path / "zeros.npy")
    assert rc == 0, err
    assert "gamma" in out and "all-zero" in out
    rc, out, err = check_data(capsys, x[:3000], tmp_path / "few.npy")
    assert rc == 0, err
    assert "1500 rows x d_in 8" in out  # half held out for the measurement at init


# ----- finding 8 and -p checks before anything is written ---------------------------------------


def test_overrides_steps_reach_the_seed_pipeline_arm():
    built = build("00_reproduce", "smoke", 0, None, overrides={"steps": 40})
    assert {c.steps for c in built.plan.arms.values()} == {40}


def test_a_bad_explorer_flag_is_refused_before_anything_is_written(tmp_path, capsys):
    out = tmp_path / "lab"
    assert cli.main(["lab", "--profile", "smoke", "--only", "02", "--out", str(out), "-p", "explorer=maybe"]) == 2
    one_line(capsys, "explorer='maybe'")
    assert not out.exists()


@pytest.mark.timeout(60)
def test_a_running_scheduler_is_still_reached():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=0, processes=False, protocol="tcp", dashboard_address=None) as lc:
        runner = cluster.start(cluster.parse_cluster(lc.scheduler_address), progress=False)
        runner.close()


def test_resume_on_changed_data_is_refused(tmp_path, capsys):
    acts = tmp_path / "acts.npy"
    np.save(acts, np.random.default_rng(0).normal(size=(2000, D)).astype(np.float32))
    cfg = RunConfig().with_overrides({"data.source": f"file:{acts}", "sae.d_in": 0, "sae.d_sae": S, "steps": 20,
                                      "log_interval": 10, "eval_rows": 64, "data.batch_size": 64})
    train.train(cfg, tmp_path / "run", progress=False, stop_at=10)
    np.save(acts, np.random.default_rng(1).normal(size=(2000, D)).astype(np.float32))
    before = snapshot(tmp_path / "run")
    assert cli.main(["train", "--resume", str(tmp_path / "run"), "--quiet"]) == 2
    one_line(capsys, "changed since")
    assert snapshot(tmp_path / "run") == before


# ----- deliver 3: an activation cache is built once ------------------------------------------


def test_two_jobs_needing_one_cache_build_it_once(tmp_path):
    """Two workers reach a missing cache at once: one builds it under the lock, the other waits and
    reads it (a thread each here; the lock is per open file, so it holds between processes too)."""
    import threading
    import time

    folder = tmp_path / "cache" / "minilm-L3-x"
    builds = []

    def build():
        builds.append(threading.get_ident())
        time.sleep(0.5)  # long enough for the other worker to arrive while this one builds
        folder.mkdir(parents=True)
        manifest = {"format": CACHE_FORMAT, "shards": []}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return manifest

    got = []
    workers = [threading.Thread(target=lambda: got.append(built_once(folder, build))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert len(builds) == 1
    assert sorted(hit for _, hit in got) == [False, True]


# ----- deliver 4: a quiet console and a truthful time ------------------------------------------


@pytest.mark.slow
def test_a_lab_prints_no_kernel_chatter_and_its_index_shows_the_wall_time(tmp_path, capfd):
    out = tmp_path / "lab"
    assert run_lab(profile="smoke", out=out, only=["02"], progress=True) == 0
    console = capfd.readouterr()
    assert "IPKernelApp" not in console.err + console.out
    assert "Passed unknown parameter" not in console.err and "jobs: 0job" not in console.err  # no other chatter
    assert "lab: 100%" in console.err and "notebook 02_lr_warmup" in console.err  # one bar: its job, then its notebook
    assert "02_lr_warmup ok in" not in console.err  # success is the bar alone
    assert "IPKernelApp" in (out / "logs" / "02_lr_warmup.log").read_text()  # kept, in the phase's log
    timing = json.loads((out / "lab.json").read_text())
    assert timing["wall_s"] >= timing["notebooks_s"] > 0 and timing["training_s"] > 0
    assert f"last run {timing['wall_s']:.0f} s wall clock" in (out / "index.html").read_text()


# ----- finding 6: a non-numeric training setting in a base is one line naming it -------------------


@pytest.mark.parametrize("name, base, needle", [
    ("cfg.json", {"d_in": 8, "d_sae": 16, "architecture": "standard", "lr": "fast", "l1_coefficient": 1.0}, "lr='fast'"),
    ("runner_cfg.json", {"sae": {"d_in": 8, "d_sae": 16, "architecture": "standard"}, "lr": 3e-4,
                         "train_batch_size_tokens": "many", "training_tokens": 100000}, "train_batch_size_tokens='many'"),
    ("cfg.json", {"d_in": 8, "d_sae": 16, "architecture": "standard", "l1_coefficient": "high"}, "l1_coefficient='high'"),
    ("config.json", {"optim": {"lr": "fast"}}, "optim.lr='fast'"),
])
def test_a_base_with_a_word_for_a_number_is_one_line_and_nothing_written(tmp_path, capsys, name, base, needle):
    path = tmp_path / name
    path.write_text(json.dumps(base))
    out = tmp_path / "lab"
    assert cli.main(["lab", "--profile", "smoke", "--only", "01", "--base", str(path), "--out", str(out)]) == 2
    one_line(capsys, needle, str(path))
    assert not out.exists()


def test_the_autopsy_command_loads_neither_torch_nor_dask_nor_the_lab(tmp_path):
    """The 500 MB budget of issue 22 on a 3.3M-row log: the autopsy's process must not pay for the
    trainer's imports (torch alone is most of the 290 MB the CLI's imports took)."""
    import subprocess
    import sys

    log = tmp_path / "log.csv"
    pd.DataFrame({"step": np.arange(0, 2000, 10), "l0": 50.0, "dead_frac": np.linspace(0, 0.5, 200)}).to_csv(log, index=False)
    code = ("import sys; from saelab import cli; rc = cli.main(['autopsy', sys.argv[1], '--out', sys.argv[2]]); "
            "print([m for m in ('torch', 'dask', 'distributed', 'saelab.lab.answer', 'saelab.training.train') if m in sys.modules]); "
            "sys.exit(rc)")
    done = subprocess.run([sys.executable, "-c", code, str(log), str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    assert (tmp_path / "out" / "autopsy.html").exists()
