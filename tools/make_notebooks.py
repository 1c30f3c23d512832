"""Write notebooks/NN_*.ipynb from saelab.causes (outputs stripped, no execution counts).

Run after changing a phase's hypotheses or parameters: `.venv/bin/python tools/make_notebooks.py`;
tests/test_notebooks.py fails when the notebooks drift from the package."""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from saelab.causes import PHASES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / "notebooks"

TYPES = {"profile": "str", "seeds": "list", "out_dir": "str", "base": "str", "source": "str", "steps": "int",
         "data_mean_offset": "float", "overrides": "dict", "explorer": "bool", "data_max_tokens": "int", "presets": "list",
         "sae_b_dec_init": "str", "data_tiny_row_fraction": "float", "data_huge_row_fraction": "float"}
COMMON_HELP = {
    "profile": ('"quick"', "smoke | quick | full: size of the runs where the base leaves it open (smoke: seconds; quick: minutes on a laptop CPU; full: the seed's scale)"),
    "seeds": ("None", "replicates, each named by its random number seed, e.g. [0, 1, 2]; None: the profile's (3 replicates in quick and full)"),
    "out_dir": ("None", "folder for this phase's runs, verdicts.json and validation.json; None: a new folder "
                "runs-<stem>-<date>-<time> in the working directory (beside the notebook in JupyterLab; saelab lab passes its own)"),
    "base": ("None", "your base config: a preset name, a saelab config.json (full or partial), a run directory, or a SAELens config; None: the seed's Test 1"),
    "source": ("None", "data.source: synthetic | minilm | hf:<model> | file:<path>; None: the base's"),
    "steps": ("None", "steps: optimizer steps per arm; None: the base's if it sets them, else the profile's"),
    "data_mean_offset": ("None", "data.mean_offset: norm of the synthetic rows' shared offset; None: the base's or the profile's (8, outlier severity ~2)"),
}
TAIL_HELP = {
    "overrides": ("{}", 'config fields for every arm, as {"dotted.path": value}; a field this phase varies is refused (put it in the base)'),
    "explorer": ("False", "show the ipywidgets explorer (live in JupyterLab only; keep False for the static report)"),
}


def param_lines(stem: str) -> str:
    phase = PHASES[stem]
    lines = []
    for name, (default, help_) in COMMON_HELP.items():
        lines.append(f"{name}: {TYPES[name]} = {default}  # {help_}")
    for name, (path, default, help_) in phase.params.items():
        kind = TYPES.get(name) or type(default).__name__
        field = f"{path}: " if path and not help_.startswith(path) else ""
        lines.append(f"{name}: {kind} = {default!r}  # {field}{help_}")
    for name, (default, help_) in TAIL_HELP.items():
        lines.append(f"{name}: {TYPES[name]} = {default}  # {help_}")
    return "\n".join(lines)


def hypothesis_list(stem: str) -> str:
    return "\n".join(f"- **{h.id}** ({h.kind}): {h.claim}" + (f" — {h.source}" if h.source else "") for h in PHASES[stem].hypotheses)


def notebook(stem: str) -> nbformat.NotebookNode:
    phase = PHASES[stem]
    title, evidence = phase.evidence
    anchors = " ".join(h.id.lower() for h in phase.hypotheses)
    cells = [
        new_markdown_cell(f"# {stem[:2]} · {phase.title}\n\n**{phase.question}**\n\n{phase.intro}\n\n"
                          f"Hypotheses of this phase:\n\n{hypothesis_list(stem)}\n\n"
                          "Every verdict is computed from these runs, across the replicates, by the rule in the "
                          f"hypothesis's home (`saelab/causes/{phase_module(stem)}.py`); one that cannot act on the base is "
                          "*not applicable* and trains no arm."),
        new_code_cell(param_lines(stem), metadata={"tags": ["parameters"]}),
        new_code_cell("import plotly.io as pio\nfrom IPython.display import Markdown, display\n\n"
                      "from saelab import phases, plots, schedules, verdicts\n\n"
                      'pio.renderers.default = "plotly_mimetype+notebook"\n'
                      f'run = phases.prepare("{stem}", globals())  # raises ValueError on an unknown or invalid parameter\n'
                      "display(Markdown(run.describe()))"),
        *([new_markdown_cell("## Data check (before any training)\n\nWhat the activations alone say: outlier severity "
                             "gamma predicts the latents dead at initialization (Simon, Adams & Zou 2026), shown beside the "
                             "dead fraction measured on the base's initialized SAE; the same as `saelab check-data`."),
           new_code_cell("from saelab import datacheck\n\ndisplay(Markdown(datacheck.markdown(run.data_check())))")]
          if stem == "00_reproduce" else []),
        new_markdown_cell("## Training\n\nAll arms of a replicate train in lockstep on identical batches."),
        new_code_cell("runs = run.train()"),
        *([new_markdown_cell("## What kills the latents of this setup\n\nThe causes the other phases tested, ranked by how "
                             "many deaths their fix removes (peak, then final dead fraction; mean over replicates), each with "
                             "its verdict and the change that fixes it; then the fixed configuration, trained below as the "
                             "`fixed` arm and checked against the validation table."),
           new_code_cell("from saelab.causes import validation\n\nanswer = validation.write_answer(run)\n"
                         "display(Markdown(validation.answer_markdown(answer)))\nplots.answer_bars(answer)")]
          if stem == "06_validation" else []),
        new_markdown_cell("## Verdicts\n\nEach applicable hypothesis judged by its rule; *confirmed* for a cause means it kills "
                          "latents in this setup, for a remedy that it works. Dead = never fired on the held-out rows nor in "
                          "the latest training window (`dead_frac`)."),
        new_code_cell(f'found = run.verdicts()\nverdicts.write(run.out_dir, found{", verdicts.validation_rows(runs)" if stem == "06_validation" else ""})\n'
                      "display(Markdown(verdicts.narrative(found)))"),
        new_markdown_cell("## Training curves\n\nPick the metric in the dropdown. Dead fraction: solid = dead by the "
                          "held-out rows and the training window, dashed = a single batch (as the seed counted). Markers: "
                          "warmup end, resampling, collapses found by the autopsy. First replicate shown; the spread across "
                          "replicates is below."),
        new_code_cell("plots.training_curves(run.first())"),
        new_markdown_cell("## Firing frequencies and latent deaths\n\nThe histogram counts latents by how often they "
                          "fire on the held-out rows at the end; the heatmap shows, for the base, which latents die when."),
        new_code_cell("plots.firing_histogram(run.first())"),
        new_code_cell('plots.death_heatmap(run.first()["base"])'),
        new_markdown_cell("## Autopsy\n\nCollapses (dead fraction up by more than 20 points, or L0 down more than 4x, "
                          "within a window) and the events each *coincides* with (`saelab.diagnose`). Coinciding is not "
                          "causing: only an arm that removes the event can show that."),
        new_code_cell("plots.autopsy_table(run.first())"),
        new_markdown_cell("".join(f'<a id="evidence-{a}"></a>' for a in anchors.split()) + f"\n\n## {title}"),
        *[new_code_cell(code) for code in evidence],
        new_markdown_cell("## Spread across replicates"),
        new_code_cell("plots.replicate_spread(verdicts.replicate_frame(runs))"),
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


def phase_module(stem: str) -> str:
    return sys.modules[PHASES[stem].hypotheses[0].judge.__module__].__name__.rsplit(".", 1)[1]


if __name__ == "__main__":
    ROOT.mkdir(exist_ok=True)
    for stem in PHASES:
        nb = notebook(stem)
        nbformat.validate(nb)
        nbformat.write(nb, str(ROOT / f"{stem}.ipynb"))
        print("wrote", stem)
