"""SAEs trained and saved by the real SAELens and sparsify (tools/real_clients.py, run by .ci/run
in the clients' own virtual environments) go through saelab: their configs map field by field,
``saelab inspect`` reads how they were trained, every phase builds its arms from their saved
config, and gated is refused by name.

The fixtures' folder comes from SAELAB_REAL_CLIENTS. Outside CI the tests skip when it is absent;
in CI (CI=true) they fail, so they cannot silently not run. The labs themselves (every saved config
through ``saelab lab --profile smoke``, and the planted offset ranked first) run after the suite in
.ci/run (tools/real_clients_lab.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from conftest import in_ci

from saelab.cli import main
from saelab.interop.fields import SAELENS, SPARSIFY, lookup
from saelab.lab import phases
from saelab.lab.base import load_base

FIXTURES = os.environ.get("SAELAB_REAL_CLIENTS", "")


def _manifest() -> list[dict]:
    path = Path(FIXTURES) / "manifest.json" if FIXTURES else None
    if path is None or not path.is_file():
        return []
    return json.loads(path.read_text())


MANIFEST = _manifest()
IDS = [f"{m['library']}-{m.get('case', m['architecture'])}-{m['kind']}" for m in MANIFEST]


@pytest.fixture(scope="module")
def fixtures() -> list[dict]:
    libraries = {m["library"] for m in MANIFEST}
    if libraries != {"saelens", "sparsify"}:
        msg = (f"SAELAB_REAL_CLIENTS={FIXTURES!r} holds {sorted(libraries) or 'no'} real-client SAEs; run "
               f"tools/real_clients.py with each client's python (.ci/run does)")
        if in_ci():
            pytest.fail(msg)
        pytest.skip(msg)
    return MANIFEST



@pytest.fixture(params=MANIFEST or [None], ids=IDS or ["absent"])
def sae(request, fixtures) -> dict:
    return request.param


def _configs(folder: Path) -> dict[str, dict]:
    """The folder's JSON files, and sparsify's Trainer config.json in the run folder above it."""
    found = {p.name: json.loads(p.read_text()) for p in folder.glob("*.json")}
    above = folder.parent / "config.json"
    if above.is_file():
        found["../config.json"] = json.loads(above.read_text())
    return found


def test_every_field_the_clients_wrote_has_a_decision(sae):
    """Each key of cfg.json, runner_cfg.json (with its nested sae and the metadata's training
    details) and sparsify's config.json is in the table docs/interop-fields.md prints."""
    table = SAELENS if sae["library"] == "saelens" else SPARSIFY
    missing = []
    for name, cfg in _configs(Path(sae["folder"])).items():
        if name == "activation_scaler.json":
            continue  # SAELens' fitted scale, not a config (null unless normalize_activations is set)
        keys = set(cfg) | set(cfg.get("sae") or {})
        for meta in (cfg.get("metadata") or {}, (cfg.get("sae") or {}).get("metadata") or {}):
            keys |= set(meta.get("training_architecture_details") or {})
        missing += [f"{name}:{k}" for k in sorted(keys) if lookup(table, k) is None]
    assert missing == []


def test_inspect_reads_the_training_and_never_recommends_what_was_used(sae, tmp_path, capsys):
    out = tmp_path / "inspect"
    rc = main(["inspect", sae["folder"], "--data", f"file:{sae['data']}", "--out", str(out)])
    err = capsys.readouterr().err.strip()
    if sae["architecture"] == "gated":
        assert rc == 2 and len(err.splitlines()) == 1 and "'gated'" in err and not out.exists()
        return
    assert rc == 0, err
    rec = json.loads((out / "inspect.json").read_text())
    defs = rec["dead_definitions"]
    assert {d["name"] for d in defs} >= {"never fired on these rows", "fired on < 1e-5 of rows", "fired on < 1e-6 of rows"}
    assert sum(d["used_by_verdict"] for d in defs) == 1
    if sae["library"] == "saelens":
        saved = next(d for d in defs if d["name"].startswith("SAELens"))
        assert saved["n"] == sae["trainer_dead"]  # the trainer's own count, from cfg.json's metadata
    trained = rec["trained_with"]
    if trained.get("auxk"):
        assert "add the AuxK loss" not in rec["verdict"]
        assert all("add the AuxK loss" not in r["remedy"] for r in rec["reason_summary"])
    command = (out / "lab_command.txt").read_text()
    assert command.startswith("saelab lab --base ") and f"--data file:{sae['data']}" in command


def test_the_saved_config_is_a_base_every_phase_builds_its_arms_from(sae):
    folder = Path(sae["folder"])
    spec = folder / "runner_cfg.json" if (folder / "runner_cfg.json").exists() else (
        folder if sae["library"] == "sparsify" else folder / "cfg.json")
    if sae["architecture"] == "gated":
        with pytest.raises(ValueError, match="architecture='gated' is not supported"):
            load_base(str(spec))
        return
    base = load_base(str(spec))
    if sae["library"] == "sparsify":  # the Trainer's config.json, one folder up, was read too
        assert base.config.aux.auxk_coef == 1 / 32 and not any("not in this config" in a for a in base.assumed)
        assert base.config.sae.init == "tied"  # SparseCoder starts W_dec as a copy of the encoder's rows
    arch = {"standard": "relu", "matryoshka_batchtopk": "batchtopk"}.get(sae["architecture"], sae["architecture"])
    assert base.config.sae.architecture == arch and base.config.sae.d_sae == sae["d_sae"]
    for stem in phases.PHASES:
        built = phases.build(stem, "smoke", 0, base, f"file:{sae['data']}")
        assert built.plan.arms
