"""Write notebooks/NN_*.ipynb from saelab.phase_arms (outputs stripped, no execution counts).

Run after changing a phase's parameters: `.venv/bin/python tools/make_notebooks.py`; tests/test_notebooks.py
fails when the notebooks drift from phases.py."""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from saelab.phase_arms import PHASES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / "notebooks"

TYPES = {"profile": "str", "seeds": "list", "out_dir": "str", "source": "str", "steps": "int",
         "data_mean_offset": "float", "overrides": "dict", "explorer": "bool", "data_max_tokens": "int"}
COMMON_HELP = {
    "profile": ('"quick"', "smoke | quick | full: size of the runs (smoke: seconds; quick: the default, minutes on a laptop CPU; full: the seed's scale)"),
    "seeds": ("None", "seed replicates as a list, e.g. [0, 1, 2]; None: the profile's (3 in quick and full)"),
    "out_dir": ("None", "folder for this phase's runs, verdicts.json and validation.json; None: a new folder "
                "runs-<stem>-<date>-<time> in the working directory (beside the notebook in JupyterLab; saelab lab passes its own)"),
    "source": ('"synthetic"', "data.source: synthetic | minilm | hf:<model> | file:<path>"),
    "steps": ("None", "steps: optimizer steps per arm; None: the profile's"),
    "data_mean_offset": ("None", "data.mean_offset: norm of the synthetic rows' shared offset; None: the profile's (8, outlier severity ~2)"),
}
TAIL_HELP = {
    "overrides": ("{}", 'any config field for every arm, as {"dotted.path": value}, e.g. {"optim.lr": 1e-3}'),
    "explorer": ("False", "show the ipywidgets explorer (live in JupyterLab only; keep False for the static report)"),
}
PHASE_HELP = {
    "presets": "the seed's configurations to run: seed-pipeline (its failed run) and/or seed-test1 (its minimal reproduction)",
    "penalty_alpha": "penalty.alpha: the seed's l1_alpha on the mean over all elements; converted into every other form",
    "penalty_form": "penalty.form: forms trained at the alpha that gives the seed's gradient (losses.convert_alpha)",
    "penalty_alpha_multipliers": "penalty.alpha: multiples of the seed's alpha trained on its own form (mean_all)",
    "penalty_alpha_task22": "penalty.alpha: add the seed's Task 2.2 arm, per-sample sum at alpha x d_sae",
    "sae_decoder_constraint": "sae.decoder_constraint: an arm with this decoder constraint at the seed's penalty (none: no arm)",
    "schedule_shape": "schedule.shape: LR shapes besides the seed's linear_warmup (constant: no warmup)",
    "schedule_warmup_steps_fraction": "schedule.warmup_steps: other linear warmup lengths, as fractions of the steps (the seed's: 0.05)",
    "resample_strategy": "resample.strategy: strategies besides the seed's x*0.1 (off, seed-fix: Task 4.2, anthropic)",
    "resample_detector": "resample.detector: dead detectors besides the seed's single batch",
    "resample_reset_adam": "resample.reset_adam: values besides the seed's False (True: zero the rewritten rows' Adam moments)",
    "data_tiny_row_fraction": "data.tiny_row_fraction: fraction of rows scaled by 1e-6 (every arm sees the same rows)",
    "data_huge_row_fraction": "data.huge_row_fraction: fraction of rows scaled by 1e3",
    "normalize_mode": "normalize.mode: modes besides the seed's constant_norm_rescale",
    "normalize_clamp_min": "normalize.clamp_min: the Task 5.1 clamp on ||x|| of the clamped arm",
    "sae_b_dec_init": "sae.b_dec_init of the centered arm (H8; b_dec also subtracted before the encoder): mean | geometric_median; None: no such arm",
    "aux_reanimation_coef": "aux.reanimation_coef: coefficients > 0 trained besides 0 (seed 000 suggests 1e-4 to 1e-3)",
    "aux_reanimation_schedule": "aux.reanimation_schedule: linear_anneal adds an arm annealing the middle coefficient to 0 by mid-training",
    "aux_auxk_coef": "aux.auxk_coef: weight of the AuxK arm (Gao 2024: 1/32); 0: no AuxK arm",
    "sae_architecture": "sae.architecture: the first gets every coefficient; the others 0, the middle one and AuxK",
    "resample_strategy_base": "",
    "data_source_real": "data.source: the real-activation source trained beside the synthetic one ('' to skip)",
    "data_max_tokens": "data.max_tokens: tokens of text for the real source; None: the profile's (its cache is built once)",
    "recipes": "recipes to validate: seed-pipeline, seed-fixed (the seed's Expected Fixes), lab-fixed (this lab's)",
}

INTRO = {
    "00_reproduce": """The seed's run went from 23% to 97% dead latents between steps 5,000 and 10,000, right after its
warmup ended and its first resampling ran (both at step 5,000). This phase trains the seed's pipeline as the seed
describes it (`config.seed_pipeline`: mean-over-all L1 at 0.003, linear warmup, per-sample norm rescale,
single-batch `x * 0.1` resampling) and its Test 1 (`config.seed_test1`), whose warmup end (5%) and first
resampling (25%) fall at different steps, so the autopsy can tell them apart.

The synthetic data has a shared offset (like a transformer's residual stream; parameter `data_mean_offset`).
Set it to 0 and see whether the collapse, and so the verdict, changes.""",
    "01_l1_penalty": """The seed's Bug #1: `z.abs().mean()` divides by batch x latents, so at alpha 0.003 the penalty may be
too weak ("L0 increases when it should decrease"). Its Task 2.2 proposes the per-sample sum with alpha multiplied
by d_sae. Here every form is trained at the alpha that gives the *same gradient* as the seed's
(`losses.convert_alpha`: the per-sample sum needs alpha / d_sae, not x d_sae), next to larger alphas on the
seed's own form, the Task 2.2 arm, and a unit-norm decoder at the seed's penalty.""",
    "02_lr_warmup": """The seed's Bug #2: "LR jumps from 0.00006 to 0.0003 (5x) at step 5,000". A linear warmup has no
jump: its largest step-to-step change at warmup end is 1/(warmup - 1). The arms change only the LR schedule:
no warmup, the seed's warmup, shorter and longer warmups, and warmup followed by cosine decay. Resampling stays as
in the seed (after warmup, every 25% of training).""",
    "03_resampling": """The seed's Bug #3: resampling fires at step 5,000, right before the collapse; it marks latents dead
from one batch of 128 rows and rewrites their encoder rows to `x * 0.1`. The arms change one piece of it at a time:
off, the detector (window of the seed's Task 4.1, tokens since fired), the re-init (the seed's Task 4.2 fix,
Anthropic 2023) and a reset of the rewritten rows' Adam moments (the seed leaves them stale).""",
    "04_normalization": """The seed's Bug #4: `x * sqrt(d_in) / ||x||` with no clamp could divide by near-zero norms. The data
here has rows scaled by 1e-6 and by 1e3 (the same rows for every arm); the arms change only the normalization:
none, the seed's rescale, the same with the Task 5.1 clamp, a dataset-wide scalar, layer norm.

One more arm tests what the lab found on the way (H8): the data has a shared offset, and the seed's SAE starts its
decoder bias at zero, so the offset pushes many latents' pre-activations below zero on every row before training
begins. The `centered` arm is the seed's with `b_dec` started at the data's geometric median and subtracted before
the encoder (Bricken 2023), nothing else changed.""",
    "05_reanimation": """Seed 000 proposes an auxiliary loss, `-coef * mean(pre_codes * is_dead)`, that pushes the
pre-activations of latents dead in the batch upwards, and claims it revives them "without simply creating dense
noise". Resampling is off here (the loss is the remedy under test); everything else is the seed's pipeline,
under which part of the dictionary dies early on data with a shared offset. Arms: coefficient 0, 1e-4, 1e-3,
1e-2, an annealed one and AuxK (Gao 2024) for ReLU; 0, 1e-3 and AuxK for TopK (k = 5% of the latents, no L1)
and JumpReLU. "Dense noise" is measured as the share of alive latents that fire on more than half of the rows.""",
    "06_validation": """The seed's Validation Metrics table: final L0 4-7% of latents (target 5%), dead < 20% (target
< 10%), L1/reconstruction ratio 0.01-0.5, reconstruction loss < 0.10 (target < 0.05), no collapse. Three recipes
on synthetic data and on real activations (MiniLM hidden states; the first run builds the cache): the seed's
pipeline, the seed's own "Expected Fixes", and this lab's recipe from phases 01-05.""",
}

EVIDENCE = {
    "00_reproduce": ("Collapse timing across replicates", "h0 h5", [
        "plots.replicate_spread(verdicts.replicate_frame(runs))",
        'plots.death_heatmap(run.first()[list(run.first())[-1]])']),
    "01_l1_penalty": ("The seed's Task 1.1 L1 breakdown", "h1 h1a h1b h7", ["verdicts.l1_breakdown(run.first())"]),
    "02_lr_warmup": ("LR schedules and their largest step-to-step change", "h2 h2a", [
        "plots.lr_schedules(run.first(), {arm: schedules.lr_curve(r.config) for arm, r in run.first().items()})"]),
    "03_resampling": ("Dead detectors against the held-out truth, and what each resampling did", "h3 h3a h3b h6", [
        "plots.detector_pr(run.first())", "verdicts.resample_table(run.first())"]),
    "04_normalization": ("The seed's Task 5.1 norm ranges; the centered decoder bias against the seed's", "h4 h4a h8", [
        "plots.norm_ranges(run.first())",
        'plots.training_curves({arm: r for arm, r in run.first().items() if arm in ("seed", "centered")}, first="dead fraction")']),
    "05_reanimation": ("Dead latents against L0, per coefficient", "r1", ["plots.dead_vs_l0(run.first())"]),
    "06_validation": ("The seed's Validation Metrics table", "validation", [
        "rows = verdicts.validation_rows(runs)\nplots.validation_table(rows)"]),
}


def param_lines(stem: str) -> str:
    phase = PHASES[stem]
    lines = []
    for name, (default, help_) in COMMON_HELP.items():
        lines.append(f"{name}: {TYPES[name]} = {default}  # {help_}")
    for name, (path, default) in phase.params.items():
        kind = TYPES.get(name) or type(default).__name__
        lines.append(f"{name}: {kind} = {default!r}  # {PHASE_HELP[name]}")
    for name, (default, help_) in TAIL_HELP.items():
        lines.append(f"{name}: {TYPES[name]} = {default}  # {help_}")
    return "\n".join(lines)


def notebook(stem: str) -> nbformat.NotebookNode:
    phase = PHASES[stem]
    title, anchors, evidence = EVIDENCE[stem]
    cells = [
        new_markdown_cell(f"# {stem[:2]} · {phase.title}\n\n**{phase.question}**\n\n{INTRO[stem]}\n\n"
                          "Every verdict below is computed by `saelab.verdicts` from these runs, across the seed "
                          "replicates, by a rule with explicit thresholds (see `saelab/verdict_rules.py`)."),
        new_code_cell(param_lines(stem), metadata={"tags": ["parameters"]}),
        new_code_cell("import plotly.io as pio\nfrom IPython.display import Markdown, display\n\n"
                      "from saelab import phases, plots, schedules, verdicts\n\n"
                      'pio.renderers.default = "plotly_mimetype+notebook"\n'
                      f'run = phases.prepare("{stem}", globals())  # raises ValueError on an unknown or invalid parameter\n'
                      "display(Markdown(run.describe()))"),
        new_markdown_cell("## Training\n\nAll arms of a seed train in lockstep on identical batches; each seed is one replicate."),
        new_code_cell("runs = run.train()"),
        new_markdown_cell("## Training curves\n\nPick the metric in the dropdown. Dead fraction: solid = never fired on "
                          "the held-out rows (the truth), dashed = the seed's single-batch count. Markers: warmup end, "
                          "resampling, collapses found by the autopsy. First seed shown; the spread across seeds is below."),
        new_code_cell("plots.training_curves(run.first())"),
        new_markdown_cell("## Firing frequencies and latent deaths\n\nThe histogram counts latents by how often they "
                          "fire on the held-out rows at the end; the heatmap shows, for the seed's arm, which latents "
                          "die when."),
        new_code_cell("plots.firing_histogram(run.first())"),
        new_code_cell("plots.death_heatmap(run.first()[list(run.first())[0]])"),
        new_markdown_cell("## Autopsy\n\nCollapses (dead fraction up by more than 20 points, or L0 down more than 4x, "
                          "within a window) and the event that preceded each (`saelab.diagnose`)."),
        new_code_cell("plots.autopsy_table(run.first())"),
        new_markdown_cell("".join(f'<a id="evidence-{a}"></a>' for a in anchors.split()) + f"\n\n## {title}"),
        *[new_code_cell(code) for code in evidence],
        new_markdown_cell("## Spread across seed replicates"),
        new_code_cell("plots.replicate_spread(verdicts.replicate_frame(runs))"),
        new_markdown_cell("## Verdicts"),
        new_code_cell(f'found = verdicts.phase_verdicts("{stem}", runs)\n'
                      + ("verdicts.write(run.out_dir, found, verdicts.validation_rows(runs))\n" if stem == "06_validation"
                         else "verdicts.write(run.out_dir, found)\n")
                      + "display(Markdown(verdicts.narrative(found)))"),
        new_markdown_cell("## Explore (JupyterLab)\n\nWith `explorer = True` a live panel picks runs, a metric and a "
                          "step range (ipywidgets; the static report shows nothing here)."),
        new_code_cell("if run.explorer:\n    from saelab.explorer import explore\n\n    display(explore(run))"),
    ]
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"},
        "language_info": {"name": "python"}})
    for i, c in enumerate(nb.cells):
        c["id"] = f"{stem[:2]}-{i:02d}"  # stable ids: regenerating gives no diff
    return nb


if __name__ == "__main__":
    ROOT.mkdir(exist_ok=True)
    for stem in PHASES:
        nb = notebook(stem)
        nbformat.validate(nb)
        nbformat.write(nb, str(ROOT / f"{stem}.ipynb"))
        print("wrote", stem)
