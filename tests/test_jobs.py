"""Jobs: a phase's lockstep groups per replicate, what a run directory holds for a job, resume from
a checkpoint instead of retraining, and the in-process lab picking up an interrupted phase."""

from __future__ import annotations

import json

import pytest
import torch

from saelab.execution import jobs
from saelab.report.batch import plan_jobs, run_lab
from saelab.training import train

PHASE = "02_lr_warmup"


def smoke_jobs(out_dir, seeds=(0,)) -> list[jobs.Job]:
    return plan_jobs(PHASE, {"profile": "smoke", "out_dir": str(out_dir), "seeds": list(seeds)})


def same_runs(a, b) -> None:
    """Metrics (every column), latent history and final weights equal exactly; wall times differ."""
    assert list(a) == list(b)
    for name in a:
        ma, mb = a[name].metrics, b[name].metrics
        assert ma.equals(mb), name
        assert torch.equal(a[name].latents["fire_counts"], b[name].latents["fire_counts"]), name
        assert a[name].weights.keys() == b[name].weights.keys()
        assert all(torch.equal(a[name].weights[k], b[name].weights[k]) for k in a[name].weights), name


def test_a_phase_plans_one_job_per_lockstep_group_per_replicate(tmp_path):
    planned = smoke_jobs(tmp_path / "runs", seeds=(0, 1))
    assert [j.name for j in planned] == [f"{PHASE}/seed0", f"{PHASE}/seed1"]
    assert planned[0].out == tmp_path / "runs" / "seed0" and planned[0].threads == 1
    assert list(planned[0].arms)[0] == "base" and len(planned[0].arms) > 2
    # phase 00's seed-pipeline arm runs longer than the rest: a second group, a second job per replicate
    names = [j.name for j in plan_jobs("00_reproduce", {"profile": "smoke", "out_dir": str(tmp_path / "r0")})]
    assert len(names) >= 2 and all(n.startswith("00_reproduce/seed0/group") for n in names)


def test_job_states_new_partial_resumable_done_conflict(tmp_path):
    (job,) = smoke_jobs(tmp_path / "runs")
    assert jobs.job_state(job) == "new"
    train.train(dict(job.arms), job.out, progress=False, stop_at=30, factor=job.factor)
    assert jobs.job_state(job) == "resumable"
    other = jobs.Job(job.name, {k: v.with_overrides({"optim.lr": 1e-2}) for k, v in job.arms.items()}, job.out, job.factor)
    assert jobs.job_state(other) == "conflict"  # the folder holds a training of other configs
    train.checkpoint_path(job.out).unlink()
    assert jobs.job_state(job) == "partial"  # its own training, with nothing to resume from
    record = jobs.run_job(job)
    assert record["state"] == "partial" and record["from_step"] is None
    assert jobs.job_state(job) == "done"
    assert jobs.run_job(job)["state"] == "done"  # a finished job is never retrained


def test_an_interrupted_job_resumes_from_its_checkpoint_to_the_same_numbers(tmp_path, monkeypatch):
    (straight,) = smoke_jobs(tmp_path / "straight")
    jobs.run_job(straight)
    (job,) = smoke_jobs(tmp_path / "resumed")
    train.train(dict(job.arms), job.out, progress=False, stop_at=30, factor=job.factor)
    calls = []
    real = train.train
    monkeypatch.setattr(train, "train", lambda *a, **k: calls.append(k.get("resume", False)) or real(*a, **k))
    record = jobs.run_job(job)
    assert calls == [True] and record["state"] == "resumable" and record["from_step"] == 30
    same_runs(jobs.load_job(straight), jobs.load_job(job))


@pytest.mark.slow
def test_the_in_process_lab_resumes_a_half_finished_phase_instead_of_retraining_it(tmp_path, monkeypatch):
    """Issue 14: a lab interrupted mid-phase (here: the phase's job stopped at step 30 with its
    checkpoint) continues that job from its checkpoint when rerun; the notebook finds it trained."""
    out = tmp_path / "lab"
    (job,) = smoke_jobs(out / "runs" / PHASE)
    train.train(dict(job.arms), job.out, progress=False, stop_at=30, factor=job.factor)
    resumed = []
    real = train.train
    monkeypatch.setattr(train, "train", lambda *a, **k: resumed.append(k.get("resume", False)) or real(*a, **k))
    assert run_lab(profile="smoke", out=out, only=["02"], progress=False, force=True) == 0
    assert resumed == [True]  # once, resuming; the notebook trained nothing
    (straight,) = smoke_jobs(tmp_path / "straight")
    jobs.run_job(straight)
    same_runs(jobs.load_job(straight), jobs.load_job(job))
    executed = json.loads((out / f"{PHASE}.ipynb").read_text())
    text = json.dumps(executed)
    assert "1 of 1 lockstep groups were already trained" in text
    assert not [p.name for p in (out / "runs").iterdir() if p.name.startswith(".")]  # nothing set aside


def test_a_failing_job_is_reported_by_name_and_the_others_go_on(tmp_path, capsys):
    from saelab.execution.cluster import InProcess

    good, bad = smoke_jobs(tmp_path / "runs", seeds=(0, 1))
    bad = jobs.Job(bad.name, bad.arms, tmp_path / "a-file", bad.factor, bad.threads)
    bad.out.write_text("not a folder")  # training into it fails at once
    runner = InProcess(progress=False)
    runner.submit([bad, good])
    outcome = runner.wait([bad.name, good.name])
    runner.close()
    assert outcome[good.name] is None and jobs.job_state(good) == "done"
    assert outcome[bad.name].startswith("FileExistsError")
    assert f"job {bad.name} failed: FileExistsError" in capsys.readouterr().err


def test_a_lab_whose_job_fails_fails_that_phase_without_running_its_notebook(tmp_path, monkeypatch, capsys):
    import saelab.execution.cluster

    def boom(job):
        raise RuntimeError("boom")

    monkeypatch.setattr(saelab.execution.cluster, "run_job", boom)
    out = tmp_path / "lab"
    assert run_lab(profile="smoke", out=out, only=["02"], progress=True) == 1
    err = capsys.readouterr().err
    log = out / "logs" / "jobs" / f"{PHASE}-seed0.log"  # the job's traceback, kept off the console
    assert f"job {PHASE}/seed0 failed: RuntimeError: boom (traceback: {log})" in err
    assert err.count("boom") == 1 and f"{PHASE} failed: not run, its training job {PHASE}/seed0 failed (above)" in err  # shown once
    assert "in boom" in log.read_text()
    results = json.loads((out / "results.json").read_text())
    assert results[0]["status"] == "failed"
    assert results[0]["error"] == f"training job {PHASE}/seed0 failed: RuntimeError: boom (traceback: {log})"
    assert not (out / f"{PHASE}.ipynb").exists() and "boom" in (out / f"{PHASE}.html").read_text()
