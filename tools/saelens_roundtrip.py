"""Round trip through the real clients: saelab trains small SAEs, ``saelab export`` writes them in
SAELens' (and sparsify's) format, and the library itself loads them and reconstructs 1,000 raw rows;
the max abs difference from saelab's own reconstruction is printed per architecture.

    .venv/bin/python tools/saelens_roundtrip.py --client .venv-sae-lens/bin/python [--sparsify .venv-sparsify/bin/python]

The clients run in their own virtual environments (.ci/run creates them; torch pinned through
constraints.txt), each through ``--worker``, which imports only the client library, torch and
safetensors. Exit code 1 when a difference exceeds TOL (float32 agreement), 2 on bad input.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from clients import clients as client_pythons  # tools/clients.py (this script's folder is on sys.path)
from clients import parser as client_parser

TOL = 1e-4  # max abs difference, in units of the activations (rows of norm ~5-10 here)
ROWS = 1000
ARMS = {  # name -> (config overrides, formats to try)
    "relu_scalar_centered": ({"sae.architecture": "relu", "normalize.mode": "dataset_scalar",
                              "sae.b_dec_init": "geometric_median", "sae.apply_b_dec_to_input": True}, ("saelens",)),
    "topk_scalar": ({"sae.architecture": "topk", "sae.k": 8, "normalize.mode": "dataset_scalar",
                     "penalty.form": "none", "penalty.alpha": 0.0}, ("saelens", "sparsify")),
    "topk_uncentered": ({"sae.architecture": "topk", "sae.k": 8, "sae.b_dec_init": "mean", "penalty.form": "none",
                         "penalty.alpha": 0.0}, ("saelens", "sparsify")),
    "jumprelu": ({"sae.architecture": "jumprelu", "sae.jumprelu_threshold": 0.05}, ("saelens",)),
    "batchtopk_scalar": ({"sae.architecture": "batchtopk", "sae.k": 8, "normalize.mode": "dataset_scalar",
                          "penalty.form": "none", "penalty.alpha": 0.0}, ("saelens",)),
}


def worker(jobs_path: str) -> None:
    """Runs in the client's environment, once for all its jobs (importing sae_lens takes a while):
    load each exported folder with the library, reconstruct the rows, save."""
    import torch
    from safetensors.torch import load_file, save_file

    spec = json.loads(Path(jobs_path).read_text())
    x = load_file(spec["rows"])["x"]
    for job in spec["jobs"]:
        if job["format"] == "saelens":
            from sae_lens import SAE

            sae = SAE.load_from_disk(job["folder"], device="cpu")
            with torch.no_grad():
                y = sae.decode(sae.encode(x))
        else:
            from sparsify import SparseCoder

            sae = SparseCoder.load_from_disk(job["folder"], device="cpu")
            with torch.no_grad():
                y = sae(x).sae_out
        save_file({"y": y.float().contiguous()}, job["out"])


def main() -> int:
    args = client_parser(__doc__).parse_args()
    if args.worker:
        worker(args.worker)
        return 0
    clients = client_pythons(args, "roundtrip")
    if clients is None:
        return 2
    from safetensors.torch import load_file, save_file

    from saelab import config
    from saelab.data.sources import make_source, resolve
    from saelab.interop.export import export
    from saelab.interop.foreign import load_checkpoint
    from saelab.training import train

    base = config.RunConfig().with_overrides({
        "sae.d_in": 48, "sae.d_sae": 96, "data.n_features": 192, "data.mean_active": 6.0, "data.mean_offset": 4.0,
        "data.batch_size": 64, "steps": 150, "log_interval": 50, "eval_rows": 512, "schedule.warmup_steps": 10,
        "optim.lr": 1e-3, "penalty.form": "per_sample_sum", "penalty.alpha": 0.01})
    arms = {name: base.with_overrides(o) for name, (o, _) in ARMS.items()}
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train.train(arms, tmp / "runs", progress=False)
        src = make_source(base)
        base = resolve(base, src)
        x = src.batch(10**6, ROWS)  # raw rows the SAEs never trained on (a step far past the run)
        save_file({"x": x.contiguous()}, str(tmp / "rows.safetensors"))
        ours, back, jobs = {}, {}, {fmt: [] for fmt in clients}
        for name, (_, formats) in ARMS.items():
            ours[name] = load_checkpoint(tmp / "runs" / name).reconstruct(x)
            for fmt in formats:
                if clients[fmt] is None:
                    continue
                folder = export(tmp / "runs" / name, fmt, tmp / "export" / fmt / name)
                back[fmt, name] = load_checkpoint(folder).reconstruct(x)  # saelab's own loader of the export
                jobs[fmt].append({"format": fmt, "name": name, "folder": str(folder),
                                  "out": str(tmp / f"{fmt}-{name}.safetensors")})
        for fmt, todo in jobs.items():
            if not todo:
                continue
            spec = tmp / f"jobs-{fmt}.json"
            spec.write_text(json.dumps({"rows": str(tmp / "rows.safetensors"), "jobs": todo}))
            res = subprocess.run([str(clients[fmt]), __file__, "--worker", str(spec)], capture_output=True, text=True)
            if res.returncode:
                print(f"roundtrip {fmt}: FAILED in the client:\n{res.stderr.strip()[-2000:]}")
                worst = float("inf")
                continue
            for job in todo:
                name = job["name"]
                diff = float((load_file(job["out"])["y"] - ours[name]).abs().max())
                loader_diff = float((back[fmt, name] - ours[name]).abs().max())
                worst = max(worst, diff)
                print(f"roundtrip {fmt:8s} {name:22s} rows={ROWS} max|x|={float(x.abs().max()):.3g} "
                      f"max_abs_diff(client vs saelab)={diff:.3g} max_abs_diff(saelab loader of export)={loader_diff:.3g}")
    ok = worst <= TOL
    print(json.dumps({"roundtrip_max_abs_diff": worst, "tolerance": TOL, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
