"""Where the lab's training jobs run: in this process (the default), or on a Dask cluster
(``saelab lab --cluster``): ``local[:N]`` starts a dask.distributed LocalCluster of N worker
processes, ``tcp://HOST:PORT`` connects to a running scheduler, ``slurm`` starts workers as SLURM
jobs through dask_jobqueue.SLURMCluster with the options of ``--cluster-config``. Dask schedules;
saelab only submits ``saelab.execution.jobs.run_job`` per job and collects the outcomes.

A worker that dies mid-job (killed, preempted, out of memory) loses its task; the scheduler gives it
to another worker, where ``run_job`` resumes from the job's last checkpoint, so the numbers equal
an uninterrupted run. The run directories must be on a filesystem every worker sees (on SLURM, the
shared one the lab's --out is on).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from saelab.execution.jobs import WORKER_THREADS_ENV, Job, run_job

CONNECT_TIMEOUT_S = 5  # an unreachable scheduler is reported after this long, not after Dask's 30 s
WORKER_MEMORY = 2**30  # bytes a local worker needs: its interpreter, torch and one job's tensors (about 0.5 GiB at smoke size)
ALLOWED = "local, local:N (N >= 1 worker processes), tcp://HOST:PORT (a running Dask scheduler) or slurm"


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed --cluster value."""

    kind: Literal["local", "address", "slurm"]
    workers: int = 0  # local: worker processes (0: one per CPU core)
    address: str = ""  # address: the scheduler's
    config: Path | None = None  # slurm: the --cluster-config file


def jobqueue() -> Any:
    """``import dask_jobqueue``, keeping this process's Ctrl-C handler: its runner module replaces
    SIGINT's handler by ``sys.exit`` at import, which would skip the trainer's checkpoint-on-Ctrl-C.
    ImportError when it is not installed."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        import dask_jobqueue
        import dask_jobqueue.slurm  # noqa: F401
    finally:
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)
    return dask_jobqueue


def parse_cluster(text: str, config: Path | None = None) -> ClusterSpec:
    """``text`` as a ClusterSpec; ValueError naming the problem."""
    text = str(text).strip()
    if config is not None and text != "slurm":
        raise ValueError(f"--cluster-config is for --cluster slurm, not --cluster {text!r}")
    m = re.fullmatch(r"local(?::(\d+))?", text)
    if m:
        n = int(m[1]) if m[1] is not None else 0
        if m[1] is not None and n < 1:
            raise ValueError(f"--cluster {text!r}: the number of workers must be >= 1; expected {ALLOWED}")
        cap, why = local_capacity()
        if n > cap:
            raise ValueError(f"--cluster {text!r}: {why}, so at most {cap} workers; use --cluster local:{cap} "
                             f"(or --cluster local: as many as it can hold)")
        return ClusterSpec("local", workers=n)
    if re.fullmatch(r"(tcp|tls)://[^\s/:]+:\d{1,5}", text):
        return ClusterSpec("address", address=text)
    if text == "slurm":
        return ClusterSpec("slurm", config=config)
    raise ValueError(f"--cluster {text!r} is not a cluster; expected {ALLOWED}")


def _available_memory() -> int | None:
    """Bytes of memory available to new processes (MemAvailable), None when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def local_capacity() -> tuple[int, str]:
    """(the most local workers this machine holds, the sentence saying why): one per CPU core (each
    runs one job; more only wait on one another and the load climbs), and WORKER_MEMORY each."""
    cores = os.cpu_count() or 1
    mem = _available_memory()
    by_mem = cores if mem is None else max(1, mem // WORKER_MEMORY)
    gib = "" if mem is None else f" and {mem / 2**30:.1f} GiB of memory available (about {WORKER_MEMORY / 2**30:g} GiB a worker)"
    return int(min(cores, by_mem)), f"this machine has {cores} CPU cores{gib}"


def read_cluster_config(path: Path | None) -> dict[str, Any]:
    """The --cluster-config file (YAML or JSON): SLURMCluster's keyword arguments, plus ``jobs``
    (how many SLURM jobs of workers to start; default 1). ValueError naming the file and the key."""
    if path is None:
        return {}
    import inspect

    import yaml  # dask's own dependency

    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as e:
        raise ValueError(f"--cluster-config {path}: cannot be read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise ValueError(f"--cluster-config {path}: not valid YAML or JSON ({str(e).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"--cluster-config {path}: must be a mapping of SLURMCluster options, e.g. cores: 4")
    jq = jobqueue()
    SLURMCluster, JQJob, SLURMJob = jq.SLURMCluster, jq.core.Job, jq.slurm.SLURMJob

    known = {"jobs"} | {p for cls in (SLURMJob, JQJob) for p in inspect.signature(cls.__init__).parameters} \
        | set(inspect.signature(SLURMCluster.__init__).parameters)
    known -= {"self", "args", "kwargs", "scheduler", "name", "config_name"}
    for key in data:
        if key not in known:
            raise ValueError(f"--cluster-config {path}: unknown option {key!r}; SLURMCluster takes {sorted(known)}")
    jobs = data.get("jobs", 1)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"--cluster-config {path}: jobs={jobs!r} must be an integer >= 1")
    return data


class Runner:
    """Runs jobs and reports each one's outcome; ``submit`` queues, ``wait`` blocks until the named
    jobs are done and returns name -> None (done) or the error line. A failing job does not stop
    the others. ``bar`` (tqdm) counts jobs done of jobs submitted."""

    def __init__(self, progress: bool = True, log_dir: Path | None = None):
        from tqdm.auto import tqdm

        # delay: no empty "0job" bar before the first job is submitted
        self.bar = tqdm(total=0, desc="jobs", unit="job", disable=not progress, dynamic_ncols=True, delay=0.01)
        self.log_dir = log_dir  # a failed job's traceback goes to log_dir/jobs/<name>.log (None: not kept)
        self.outcome: dict[str, str | None] = {}
        self.closing = False  # set by close(): the jobs still running are being cancelled, not failing
        self.records: dict[str, dict] = {}
        self._lock = threading.Lock()

    def write(self, line: str) -> None:
        """Print a line on stderr without breaking the bar."""
        self.bar.write(line, file=sys.stderr)

    def _done(self, name: str, record: dict | None, error: str | None) -> None:
        with self._lock:
            self.outcome[name] = error
            if record is not None:
                self.records[name] = record
            self.bar.update(1)
        if error and self.closing:  # the jobs Ctrl-C or close() cancelled: the lab says so once itself
            return
        if error:
            self.write(f"job {name} failed: {error}")

        elif record is not None and record.get("stale"):  # never reused silently: say what differed
            self.write(f"job {name} retrained: its earlier runs were made by other code or data ({record['stale']})")

    def failed(self, name: str, exc: BaseException) -> None:
        """Job ``name`` raised ``exc``: its traceback goes to a file (on a cluster the worker's, as Dask
        sends it back), the console gets one line naming the job and that file."""
        error = _error_line(exc)
        if self.log_dir is not None:
            log = job_log(self.log_dir, name)
            try:
                log.parent.mkdir(parents=True, exist_ok=True)
                log.write_text("".join(traceback.format_exception(exc)))
                error += f" (traceback: {log})"
            except OSError as e:  # a full or read-only disk must not hide the job's own error
                error += f" (its traceback could not be saved: {e.strerror or e})"
        self._done(name, None, error)

    def submit(self, jobs: list[Job]) -> None:
        with self._lock:
            self.bar.total += len(jobs)
            self.bar.refresh()

    def wait(self, names: Iterable[str]) -> dict[str, str | None]:
        raise NotImplementedError

    def all_done(self, names: Iterable[str]) -> bool:
        """Whether every named job has finished (or failed), without waiting."""
        return all(n in self.outcome for n in names)

    def close(self) -> None:
        self.closing = True
        bar = self.bar
        if not bar.disable and bar.total:
            # tqdm ends a bar's line on close only once update() has printed it; a bar drawn by refresh()
            # alone (Ctrl-C or an error before the first job finished) had the lab's next line glued to it
            bar.last_print_t = max(bar.last_print_t, bar.start_t + bar.delay)
        bar.close()


def job_log(log_dir: Path, name: str) -> Path:
    """Where job ``name``'s traceback is saved when it fails ("01_l1_penalty/seed0" -> jobs/01_l1_penalty-seed0.log)."""
    return Path(log_dir) / "jobs" / f"{name.replace('/', '-')}.log"


def _error_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[-1] if lines else ''}".strip()


class InProcess(Runner):
    """The jobs one after another in this process, each when it is first waited for."""

    def __init__(self, progress: bool = True, log_dir: Path | None = None):
        super().__init__(progress, log_dir)
        self.queue: dict[str, Job] = {}

    def submit(self, jobs: list[Job]) -> None:
        super().submit(jobs)
        self.queue.update({j.name: j for j in jobs})

    def wait(self, names: Iterable[str]) -> dict[str, str | None]:
        names = list(names)
        for name in names:
            if name in self.outcome:
                continue
            job = self.queue.pop(name)
            self.bar.set_postfix_str(name, refresh=True)
            try:
                record = run_job(job)
            except Exception as e:  # noqa: BLE001 - one failing job must not stop the others
                self.failed(name, e)
            else:
                self._done(name, record, None)
        return {n: self.outcome[n] for n in names}


class OnDask(Runner):
    """The jobs on a Dask cluster, all of a batch submitted at once."""

    def __init__(self, client: Any, close: Callable[[], None], progress: bool = True, fn: Callable[[Job], dict] = run_job,
                 log_dir: Path | None = None):
        super().__init__(progress, log_dir)
        self.client, self._close, self.fn, self.futures = client, close, fn, {}

    def submit(self, jobs: list[Job]) -> None:
        super().submit(jobs)
        # the phases in order (their notebooks can then start early), the longest job of a phase first
        order = sorted(jobs, key=lambda j: (j.name.split("/")[0], -j.cost))
        for rank, job in enumerate(order):
            # pure=False: a job's outcome depends on its run directory, so Dask must run it every time
            f = self.client.submit(self.fn, job, key=f"saelab-job-{job.name}-{os.getpid()}-{id(job)}", pure=False,
                                   priority=len(order) - rank)
            self.futures[job.name] = f
            f.add_done_callback(lambda fut, name=job.name: self._settle(name, fut))

    def _settle(self, name: str, fut: Any) -> None:
        try:
            record = fut.result()
        except Exception as e:  # noqa: BLE001 - the job's error (or KilledWorker), reported by name
            self.failed(name, e)
        else:
            self._done(name, record, None)

    def wait(self, names: Iterable[str]) -> dict[str, str | None]:
        from distributed import wait

        names = list(names)
        wait([self.futures[n] for n in names])
        while any(n not in self.outcome for n in names):  # the done callbacks run on Dask's own thread
            threading.Event().wait(0.01)
        return {n: self.outcome[n] for n in names}

    def close(self) -> None:
        super().close()
        self._close()


def start(spec: ClusterSpec | None, progress: bool = True, log_dir: Path | None = None) -> Runner:
    """A Runner for ``spec`` (None: in this process); a failed job's traceback is saved under
    ``log_dir``. Raises ValueError (one line) when the cluster cannot be had: an unreachable
    scheduler, no dask-jobqueue for slurm."""
    if spec is None:
        return InProcess(progress, log_dir)
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("--cluster needs dask.distributed, which is not installed: "
                         "pip install -c constraints.txt 'dask[distributed]'") from None
    if spec.kind == "local":
        import logging

        from distributed import LocalCluster

        cores = os.cpu_count() or 1
        n = spec.workers or local_capacity()[0]
        # one task per worker (threads_per_worker=1) and the cores shared among the workers'
        # torch threads, so N workers never ask for more threads than the machine has. Worker logs
        # below CRITICAL stay quiet: a failing job's "Compute Failed / Key / State / Traceback" dump
        # (ERROR) came on top of the lab's own line; its traceback is saved by Runner.failed instead.
        with _workers_ignore_ctrl_c():
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                                   silence_logs=logging.CRITICAL, env={WORKER_THREADS_ENV: str(max(1, cores // n))})
        client = Client(cluster)

        def close() -> None:
            client.close()
            cluster.close()

        return OnDask(client, close, progress, log_dir=log_dir)
    if spec.kind == "address":
        client = connect(spec.address)
        workers = len(client.scheduler_info().get("workers", {}))
        if progress and not workers:
            print(f"the Dask scheduler at {spec.address} has no workers yet; the jobs wait for them to join "
                  f"(dask worker {spec.address})", file=sys.stderr)
        return OnDask(client, client.close, progress, log_dir=log_dir)
    try:
        SLURMCluster = jobqueue().SLURMCluster
    except ImportError:
        raise ValueError("--cluster slurm needs dask-jobqueue, which is not installed: "
                         "pip install -c constraints.txt 'saelab[slurm]'") from None
    options, jobs = slurm_options(spec.config)
    cluster = SLURMCluster(**options)
    cluster.scale(jobs=jobs)
    client = Client(cluster)

    def close_slurm() -> None:
        client.close()
        cluster.close()

    return OnDask(client, close_slurm, progress, log_dir=log_dir)


@contextlib.contextmanager
def _workers_ignore_ctrl_c() -> Iterator[None]:
    """Start processes that ignore SIGINT (an ignored signal stays ignored across exec, and Python
    installs its KeyboardInterrupt handler only over the default one). Ctrl-C reaches the whole
    terminal's process group: without this every worker printed its own traceback while the lab
    was already stopping them; this process keeps its handler and closes the cluster."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def connect(address: str) -> Any:
    """A dask.distributed Client of the scheduler at ``address``, or a ValueError once
    CONNECT_TIMEOUT_S have passed without one. Dask's own timeout covers reaching the port, not a
    server there that accepts and never speaks Dask (an HTTP server held the handshake for minutes),
    so the connection is made in a thread that is given up on at the deadline."""
    from distributed import Client

    box: dict[str, Any] = {}

    def attempt() -> None:
        try:
            box["client"] = Client(address, timeout=f"{CONNECT_TIMEOUT_S}s")
        except Exception as e:  # noqa: BLE001 - reported below by its type
            box["error"] = e

    thread = threading.Thread(target=attempt, name="saelab-dask-connect", daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_S + 1)
    if "client" in box:
        return box["client"]
    why = type(box["error"]).__name__ if "error" in box else "no Dask handshake"
    raise ValueError(f"--cluster {address}: no Dask scheduler answered within {CONNECT_TIMEOUT_S} s ({why}); start one "
                     f"with `dask scheduler` and workers with `dask worker {address}`")


def slurm_options(config: Path | None) -> tuple[dict[str, Any], int]:
    """SLURMCluster's keyword arguments from the --cluster-config file, and the number of SLURM jobs
    to start. Defaults: one core, 4 GB and one worker process per SLURM job. A worker runs
    cores / processes tasks at once (dask-jobqueue's threads per worker), so each job trains with
    one torch thread ($SAELAB_WORKER_THREADS=1): the SLURM job's cores are used, never oversubscribed."""
    options = read_cluster_config(config)
    jobs = options.pop("jobs", 1)
    options.setdefault("cores", 1)
    options.setdefault("memory", "4GB")
    options.setdefault("processes", 1)
    env = [f"export {WORKER_THREADS_ENV}=1"]
    options["job_script_prologue"] = [*env, *options.get("job_script_prologue", [])]
    return options, jobs


def describe(spec: ClusterSpec | None) -> str:
    if spec is None:
        return "in this process"
    return {"local": f"on a local Dask cluster of {spec.workers or os.cpu_count()} workers",
            "address": f"on the Dask scheduler at {spec.address}", "slurm": "on SLURM (dask-jobqueue)"}[spec.kind]


def summary(runner: Runner) -> str:
    """One line: jobs trained, resumed, already done (by this same code on the same data), retrained
    because other code or data made them, failed."""
    states = [r["state"] for r in runner.records.values()]
    failed = sum(e is not None for e in runner.outcome.values())
    resumed = sum(r["from_step"] is not None for r in runner.records.values())
    stale = states.count("stale")
    return (f"{len(runner.outcome)} jobs: {len(states) - states.count('done') - resumed - stale} trained, {resumed} "
            f"resumed from a checkpoint, {states.count('done')} already done (same saelab, torch, numpy and data), "
            f"{stale} retrained (made by other code or data), {failed} failed")
