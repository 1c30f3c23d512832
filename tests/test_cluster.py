"""The lab's jobs on Dask: a LocalCluster of 2 workers trains the same numbers as this process; a
worker killed mid-job has its job retried on another worker from its last checkpoint, to the same
numbers; a bad --cluster value, an unreachable scheduler and a missing dask-jobqueue are one line
and exit code 2."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
from test_jobs import same_runs, smoke_jobs

from saelab import cli
from saelab.execution import cluster, jobs

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def local2():
    """A LocalCluster of 2 worker processes, one task and one torch thread each, as --cluster local:2 starts."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the killing job below lives in this test module
    lc = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.ERROR, env={jobs.WORKER_THREADS_ENV: "1"})
    client = distributed.Client(lc)
    yield client
    client.close()
    lc.close()


def on_cluster(client, planned, fn=jobs.run_job) -> dict[str, str | None]:
    runner = cluster.OnDask(client, lambda: None, progress=False, fn=fn)
    runner.submit(planned)
    outcome = runner.wait(j.name for j in planned)
    runner.close()
    return outcome, runner.records


@pytest.mark.slow
def test_a_cluster_of_two_workers_trains_the_same_numbers_as_this_process(local2, tmp_path):
    here = smoke_jobs(tmp_path / "here", seeds=(0, 1))
    for job in here:
        jobs.run_job(job)
    there = smoke_jobs(tmp_path / "there", seeds=(0, 1))
    outcome, records = on_cluster(local2, there)
    assert outcome == {j.name: None for j in there}
    assert {r["pid"] for r in records.values()} - {os.getpid()}  # trained in the workers, not here
    for a, b in zip(here, there):
        same_runs(jobs.load_job(a), jobs.load_job(b))


def kill_once(job: jobs.Job) -> dict:
    """run_job, but the first worker to reach step 35 kills itself with SIGKILL (after the step-30
    checkpoint), leaving its pid in a marker file; the retry runs unharmed."""
    marker = Path(job.out).parent / "killed.pid"

    def hook(done: int) -> None:
        if done == 35 and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

    return jobs.run_job(job, on_step=hook)


@pytest.mark.slow
def test_a_killed_worker_s_job_is_retried_from_its_checkpoint_to_the_same_numbers(local2, tmp_path):
    (straight,) = smoke_jobs(tmp_path / "straight")
    jobs.run_job(straight)
    (job,) = smoke_jobs(tmp_path / "killed")
    outcome, records = on_cluster(local2, [job], fn=kill_once)
    assert outcome == {job.name: None}
    killed = int((tmp_path / "killed" / "killed.pid").read_text())
    record = records[job.name]
    assert record["pid"] != killed and record["state"] == "resumable" and record["from_step"] == 30
    same_runs(jobs.load_job(straight), jobs.load_job(job))


@pytest.mark.parametrize("text", ["lokal", "local:0", "local:x", "tcp://nohost", "http://h:1", "slurm:3"])
def test_a_bad_cluster_value_is_one_line_and_exit_2(text, tmp_path, capsys):
    assert cli.main(["lab", "--profile", "smoke", "--out", str(tmp_path / "o"), "--only", "02", "--cluster", text]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--cluster {text!r}" in err and "local:N" in err
    assert not (tmp_path / "o").exists()


def test_an_unreachable_scheduler_is_one_line_and_exit_2(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    assert cli.main(["lab", "--profile", "smoke", "--out", str(tmp_path / "o"), "--only", "02", "--cluster", address]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"--cluster {address}: no Dask scheduler answered within" in err
    assert not (tmp_path / "o").exists()


def test_slurm_without_dask_jobqueue_is_one_line_and_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_jobqueue", None)  # import dask_jobqueue now raises ImportError
    assert cli.main(["lab", "--profile", "smoke", "--out", str(tmp_path / "o"), "--only", "02", "--cluster", "slurm"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "needs dask-jobqueue" in err and "saelab[slurm]" in err


def test_the_slurm_config_file_becomes_the_job_script(tmp_path, capsys):
    before = signal.getsignal(signal.SIGINT)
    try:
        SLURMJob = cluster.jobqueue().slurm.SLURMJob
    except ImportError:
        pytest.skip("dask-jobqueue is not installed (the slurm extra)")
    assert signal.getsignal(signal.SIGINT) is before  # importing it kept Ctrl-C's handler

    path = tmp_path / "slurm.yaml"
    path.write_text("queue: gpu\naccount: sae\ncores: 8\nprocesses: 2\nmemory: 32GB\nwalltime: '02:00:00'\n"
                    "job_extra_directives: ['--gres=gpu:2']\njobs: 3\n")
    options, n = cluster.slurm_options(path)
    assert n == 3
    script = SLURMJob(None, name="w", **options).job_script()  # no scheduler started, no SLURM needed
    for line in ("#SBATCH -p gpu", "#SBATCH -A sae", "#SBATCH --gres=gpu:2", "#SBATCH -t 02:00:00",
                 f"export {jobs.WORKER_THREADS_ENV}=1"):
        assert line in script
    path.write_text("cores: 4\nqeue: gpu\n")
    with pytest.raises(ValueError, match="unknown option 'qeue'"):
        cluster.slurm_options(path)
    assert cli.main(["lab", "--profile", "smoke", "--out", str(tmp_path / "o"), "--only", "02",
                     "--cluster", "local:2", "--cluster-config", str(path)]) == 2
    assert "--cluster-config is for --cluster slurm" in capsys.readouterr().err


def fails(job: jobs.Job) -> dict:
    raise ValueError("the data went bad")


@pytest.mark.slow
def test_a_job_failing_on_a_local_cluster_is_one_line_naming_its_saved_traceback(tmp_path, capfd):
    """No Dask "Compute Failed / Key / State / Traceback" dump (issue 22, finding 6): one line names
    the job and the file holding the worker's traceback."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # ``fails`` lives in this test module
    runner = cluster.start(cluster.parse_cluster("local:1"), progress=True, log_dir=tmp_path / "logs")
    runner.fn = fails
    (job,) = smoke_jobs(tmp_path / "runs")
    try:
        runner.submit([job])
        outcome = runner.wait([job.name])
    finally:
        runner.close()
    err = capfd.readouterr().err
    log = cluster.job_log(tmp_path / "logs", job.name)
    assert outcome[job.name] == f"ValueError: the data went bad (traceback: {log})"
    assert "Key:" not in err and "State:" not in err and "Compute Failed" not in err and "Traceback" not in err, err
    assert f"job {job.name} failed: ValueError: the data went bad (traceback: {log})" in err
    assert "in fails" in log.read_text() and "ValueError: the data went bad" in log.read_text()
