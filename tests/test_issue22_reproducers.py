"""Issue 22's reproducers that no other test ran as the issue states them (docs/reliability.md maps
every reproducer to its test): a run's recorded commit and a file rewritten in place as part of a
job's identity, a NaN in one latent's encoder, TopK ``"k": 1e9`` as JSON writes it, ``--cluster
local:1000`` and an HTTP server as ``--cluster`` through the CLI, ``-p overrides=...`` as the CLI parses
it reaching phase 00's seed-pipeline job, and the probes the issue found to hold (safetensors header
tricks, symlink loops, legacy pickles), kept from regressing. Each bad input is one line on stderr,
exit code 2 and nothing written."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from test_reliability import file_job, inspect_cli, one_line, saelens, write_acts

from saelab import cli, fileio
from saelab.execution import jobs
from saelab.report.batch import plan_jobs
from saelab.version import KEY

D, S = 8, 16


@pytest.fixture()
def acts(tmp_path) -> Path:
    return write_acts(tmp_path)


# ----- finding 2 / deliver 2: the commit and the data's contents are part of a job's identity -------


@pytest.fixture()
def done_job(tmp_path) -> jobs.Job:
    acts = tmp_path / "acts.npy"
    np.save(acts, np.random.default_rng(0).normal(size=(2000, D)).astype(np.float32))
    job = file_job(tmp_path, acts)
    jobs.run_job(job)
    assert jobs.job_state(job) == "done"
    return job


def test_a_run_whose_config_names_another_saelab_commit_is_stale(done_job):
    path = Path(done_job.out) / "base" / "config.json"
    cfg = fileio.read_json(path)
    assert "commit" in cfg[KEY]
    cfg[KEY]["commit"] = "0123456789ab"  # what a run trained by another checkout of saelab records
    path.write_text(json.dumps(cfg))
    assert jobs.job_state(done_job) == "stale"
    assert "commit '0123456789ab'" in jobs.stale_reason(done_job)
    record = jobs.run_job(done_job)  # retrained, saying why
    assert record["state"] == "stale" and "commit" in record["stale"]
    assert jobs.job_state(done_job) == "done"


def test_data_rewritten_in_place_with_the_same_size_and_time_is_stale(done_job, tmp_path):
    """``cp -p`` of other rows of the same shape: only the sampled hash of the contents tells."""
    acts = tmp_path / "acts.npy"
    st = acts.stat()
    np.save(acts, (50 + np.random.default_rng(1).normal(size=(2000, D))).astype(np.float32))
    os.utime(acts, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert acts.stat().st_size == st.st_size and acts.stat().st_mtime_ns == st.st_mtime_ns
    assert jobs.job_state(done_job) == "stale"
    assert "changed since" in jobs.stale_reason(done_job)


def test_the_data_fingerprint_follows_a_model_folder_and_every_shard_of_a_folder(tmp_path):
    """Deliver 2 beyond one file: a local model folder whose config changes, and a folder source whose
    second shard is rewritten in place (same size and time) each get a new fingerprint."""
    from saelab.training.identity import data_fingerprint

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"hidden_size": 8}')
    before = data_fingerprint(f"hf:{model}")
    (model / "config.json").write_text('{"hidden_size": 9}')
    assert data_fingerprint(f"hf:{model}") != before

    shards = tmp_path / "shards"
    shards.mkdir()
    for i in range(2):
        np.save(shards / f"{i}.npy", np.random.default_rng(i).normal(size=(500, D)).astype(np.float32))
    before = data_fingerprint(f"file:{shards}")
    assert len(before["files"]) == 2
    st = (shards / "1.npy").stat()
    np.save(shards / "1.npy", np.random.default_rng(9).normal(size=(500, D)).astype(np.float32))
    os.utime(shards / "1.npy", ns=(st.st_atime_ns, st.st_mtime_ns))
    assert data_fingerprint(f"file:{shards}") != before


def test_force_documents_what_it_reuses_and_the_lab_says_what_it_retrained(capsys):
    with pytest.raises(SystemExit):
        cli.main(["lab", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    force = text[text.index("--force rerun"):text.index("--cluster WHERE run")]
    for words in ("(version and commit)", "torch and numpy", "same data", "reused", "retrained"):
        assert words in force, (words, force)

    from saelab.execution import cluster

    runner = cluster.Runner(progress=False)
    runner._done("p/seed0", {"state": "done", "from_step": None, "wall_s": 0.0, "stale": ""}, None)
    runner._done("p/seed1", {"state": "stale", "from_step": None, "wall_s": 1.0, "stale": "torch '2.12.0' -> '2.13.0'"}, None)
    err = capsys.readouterr().err
    assert "job p/seed1 retrained: its earlier runs were made by other code or data (torch '2.12.0' -> '2.13.0')" in err
    assert "p/seed0" not in err  # a reused job is counted, not listed
    assert ("1 already done (same saelab, torch, numpy and data), 1 retrained (made by other code or data)"
            in cluster.summary(runner))


# ----- finding 3: inspect on broken weights and impossible settings ---------------------------------


def _nan_encoder_column(sd):
    sd["W_enc"][:, 3] = float("nan")


def _nan_encoder_bias(sd):
    sd["b_enc"][3] = float("nan")


@pytest.mark.parametrize("mutate, needle", [(_nan_encoder_column, "W_enc"), (_nan_encoder_bias, "b_enc")])
def test_a_nan_in_one_latent_is_refused_not_reported_as_a_median(tmp_path, acts, capsys, mutate, needle):
    out = tmp_path / "report"
    assert inspect_cli(saelens(tmp_path / "ck", mutate=mutate), acts, tmp_path) == 2
    err = one_line(capsys, needle, "latent 3", "NaN or Inf")
    assert "median" not in err
    assert not out.exists()


@pytest.mark.parametrize("k", [1e9, 8.0])
def test_topk_k_written_as_a_json_float_is_one_line(tmp_path, acts, capsys, k):
    out = tmp_path / "report"
    assert inspect_cli(saelens(tmp_path / "ck", "topk", k=k), acts, tmp_path) == 2
    one_line(capsys, f"k={k!r}", "integer")
    assert not out.exists()


# ----- finding 4 through the CLI: bounded and answered clusters -------------------------------------


def test_cli_local_cluster_1000_is_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    out = tmp_path / "lab"
    assert cli.main(["lab", "--profile", "smoke", "--only", "02", "--out", str(out), "--cluster", "local:1000"]) == 2
    err = one_line(capsys, "--cluster 'local:1000'", "at most")
    assert "cores" in err and "memory" in err  # says what the machine can hold
    assert not out.exists()


@pytest.mark.timeout(60)
def test_cli_cluster_at_an_http_server_is_one_line_exit_2_and_nothing_written(tmp_path, capsys):
    pytest.importorskip("distributed")
    import http.server
    import threading

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    address = f"tcp://127.0.0.1:{server.server_address[1]}"
    out = tmp_path / "lab"
    try:
        assert cli.main(["lab", "--profile", "smoke", "--only", "02", "--out", str(out), "--cluster", address]) == 2
    finally:
        server.shutdown()
    one_line(capsys, f"--cluster {address}", "no Dask scheduler answered")
    assert not out.exists()


# ----- finding 8: -p overrides as the CLI parses it reaches every job of phase 00 ---------------------


def test_cli_overrides_parameter_reaches_the_seed_pipeline_job(tmp_path):
    name, value = cli._parse_param('overrides={"steps": 40}')
    planned = plan_jobs("00_reproduce", {"profile": "smoke", "out_dir": str(tmp_path / "runs"), name: value})
    assert len(planned) >= 2  # the seed-pipeline arm is a job of its own
    assert {c.steps for j in planned for c in j.arms.values()} == {40}


# ----- held in issue 22: header tricks, symlink loops, legacy pickles stay one line ------------------


def _header_tricks():
    def with_header(good: bytes, edit) -> bytes:
        n = struct.unpack("<Q", good[:8])[0]
        header = json.loads(good[8:8 + n])
        name = next(k for k in header if k != "__metadata__")
        header[name] = edit(dict(header[name]))
        text = json.dumps(header).encode()
        return struct.pack("<Q", len(text)) + text + good[8 + n:]

    return {
        "huge header length": lambda good: struct.pack("<Q", 2**62) + good[8:],
        "header not JSON": lambda good: struct.pack("<Q", 5) + b"hello" + good[8:],
        "offsets past the end": lambda good: with_header(good, lambda t: {**t, "data_offsets": [0, 10**12]}),
        "unknown dtype": lambda good: with_header(good, lambda t: {**t, "dtype": "F99"}),
        "overflowing shape": lambda good: with_header(good, lambda t: {**t, "shape": [10**9, 10**9]}),
        "empty file": lambda good: b"",
    }


@pytest.mark.parametrize("trick", list(_header_tricks()))
def test_safetensors_header_tricks_are_one_line(tmp_path, acts, capsys, trick):
    ck = saelens(tmp_path / "ck")
    weights = ck / "sae_weights.safetensors"
    weights.write_bytes(_header_tricks()[trick](weights.read_bytes()))
    out = tmp_path / "report"
    assert inspect_cli(ck, acts, tmp_path) == 2
    one_line(capsys, "sae_weights.safetensors", "not a readable safetensors file")
    assert not out.exists()


@pytest.mark.parametrize("looped", ["cfg.json", "sae_weights.safetensors", "data"])
def test_symlink_loops_are_one_line(tmp_path, acts, capsys, looped):
    ck = saelens(tmp_path / "ck")
    data = acts
    if looped == "data":
        data = tmp_path / "loop.npy"
        data.symlink_to(data.name)
    else:
        (ck / looped).unlink()
        (ck / looped).symlink_to(looped)
    out = tmp_path / "report"
    assert inspect_cli(ck, data, tmp_path) == 2
    one_line(capsys, "loop.npy" if looped == "data" else looped, "symbolic link that loops back on itself")
    assert not out.exists()


def test_a_link_to_nothing_names_its_target(tmp_path, capsys):
    data = tmp_path / "acts.npy"
    data.symlink_to("moved_away.npy")
    assert cli.main(["check-data", f"file:{data}"]) == 2
    one_line(capsys, "acts.npy", "symbolic link to 'moved_away.npy', which does not exist")


def test_legacy_pickled_pt_files_are_refused_never_unpickled(tmp_path, capsys):
    """torch.save's pre-1.6 format (not a zip): refused like the zip format, as activations and as a
    dictionary_learning checkpoint; the payload (os.mkdir of a marker) never runs."""

    class Payload:
        def __init__(self, marker: Path):
            self.marker = str(marker)

        def __reduce__(self):
            return (os.mkdir, (self.marker,))

    x = torch.randn(300, D)
    torch.save({"acts": x, "evil": Payload(tmp_path / "pwned_acts")}, tmp_path / "acts.pt",
               _use_new_zipfile_serialization=False)
    assert cli.main(["check-data", f"file:{tmp_path / 'acts.pt'}"]) == 2
    one_line(capsys, "acts.pt", "refused")
    dl = tmp_path / "dl"
    dl.mkdir()
    torch.save({"encoder.weight": torch.zeros(S, D), "evil": Payload(tmp_path / "pwned_ae")}, dl / "ae.pt",
               _use_new_zipfile_serialization=False)
    (dl / "config.json").write_text(json.dumps({"trainer": {"dict_class": "AutoEncoder"}}))
    np.save(tmp_path / "rows.npy", x.numpy())
    assert inspect_cli(dl, tmp_path / "rows.npy", tmp_path) == 2
    one_line(capsys, "ae.pt", "refused")
    assert not (tmp_path / "pwned_acts").exists() and not (tmp_path / "pwned_ae").exists()
    assert not (tmp_path / "report").exists()


# ----- finding 6: Ctrl-C on a lab on --cluster local:2 is the one line, no Dask traceback ------------


def test_a_bar_drawn_before_any_job_finished_ends_its_line_when_closed(capsys):
    """Ctrl-C (or an error) before the first job finishes: the lab's message starts a line of its own,
    not the end of the progress bar's."""
    import sys

    from saelab.execution import cluster

    runner = cluster.Runner(progress=True)
    runner.submit([object(), object()])  # drawn: "jobs: 0/2"
    runner.close()
    print("saelab: interrupted", file=sys.stderr)
    err = capsys.readouterr().err
    assert "0/2" in err and "\nsaelab: interrupted" in err, repr(err)


@pytest.mark.timeout(300)
def test_ctrl_c_on_a_lab_on_a_local_cluster_is_one_line_without_dask_tracebacks(tmp_path):
    """A terminal's Ctrl-C reaches the whole process group (the lab and its Dask workers) once a job
    is training: the lab says to rerun with --force, and neither a worker's traceback nor Dask's
    FutureCancelledError is printed; no process of the group outlives it."""
    pytest.importorskip("distributed")
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "lab"
    p = subprocess.Popen([sys.executable, "-m", "saelab.cli", "lab", "--profile", "smoke", "--only", "02", "--out", str(out),
                          "--cluster", "local:2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    deadline = time.monotonic() + 240
    while p.poll() is None and not any((out / "runs").rglob("config.json")) and time.monotonic() < deadline:
        time.sleep(0.1)  # until a worker has started a job
    assert p.poll() is None, p.communicate()
    os.killpg(p.pid, signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "CancelledError" not in err and "distributed." not in err, err
    lines = [line for line in err.splitlines() if line.startswith("saelab:")]
    assert len(lines) == 1 and "rerun the same command with --force" in lines[0], err
    while time.monotonic() < deadline:  # the workers are closed with the lab
        try:
            os.killpg(p.pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        pytest.fail("processes of the lab's group outlived it")


# ----- deliver 4: a failing notebook is said once, with its phase and its log --------------------------


@pytest.mark.slow
def test_a_failing_notebook_is_one_line_naming_the_phase_and_its_log(tmp_path, capfd):
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from fake_runs import write_test_notebooks

    from saelab.report.batch import kernel_log, run_lab

    nbs = write_test_notebooks(tmp_path / "notebooks", broken=True)
    out = tmp_path / "out"
    assert run_lab(profile="smoke", out=out, notebooks_dir=nbs, only=["01"], progress=True) == 1
    err = capfd.readouterr().err
    log = kernel_log(out.resolve(), "01_broken")
    assert err.count("deliberate failure for the test") == 1, err  # shown once
    assert "01_broken failed in " in err and f"(log: {log})" in err, err
    assert "Traceback" not in err and "IPKernelApp" not in err, err
    assert log.is_file()
