"""Write notebooks/NN_*.ipynb from saelab.lab.causes (outputs stripped, no execution counts).

Run after changing a phase's hypotheses or parameters: `.venv/bin/python tools/make_notebooks.py`;
tests/test_notebooks.py fails when the notebooks drift from the package."""
import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from saelab.lab.causes import PHASES  # noqa: E402
from saelab.lab.params import parameters_cell  # noqa: E402

ROOT = Path(__file__).resolve().parents[1] / "notebooks"

def hypothesis_list(stem: str) -> str:
    return "\n".join(f"- **{h.id}** ({h.kind}): {h.claim}" + (f" — {h.source}" if h.source else "") for h in PHASES[stem].hypotheses)


def sections(pairs: tuple[tuple[str, str], ...]) -> list[nbformat.NotebookNode]:
    """A phase's own (Markdown, code) sections as cells."""
    return [cell for text, code in pairs for cell in (new_markdown_cell(text), new_code_cell(code))]


def notebook(stem: str) -> nbformat.NotebookNode:
    phase = PHASES[stem]
    title, evidence = phase.evidence
    anchors = " ".join(h.id.lower() for h in phase.hypotheses)
    cells = [
        new_markdown_cell(f"# {stem[:2]} · {phase.title}\n\n**{phase.question}**\n\n{phase.intro}\n\n"
                          f"Hypotheses of this phase:\n\n{hypothesis_list(stem)}\n\n"
                          "Every verdict is computed from these runs, across the replicates, by the rule in the "
                          f"hypothesis's home (`saelab/lab/causes/{phase_module(stem)}.py`); one that cannot act on the base is "
                          "*not applicable* and trains no arm."),
        new_code_cell(parameters_cell(phase), metadata={"tags": ["parameters"]}),
        new_code_cell("import plotly.io as pio\nfrom IPython.display import Markdown, display\n\n"
                      "from saelab.lab import phases, verdicts\nfrom saelab.report import plots, tables\n"
                      "from saelab.training import schedules\n\n"
                      'pio.renderers.default = "plotly_mimetype+notebook"\n'
                      f'run = phases.prepare("{stem}", globals())  # raises ValueError on an unknown or invalid parameter\n'
                      "display(Markdown(run.describe()))"),
        *sections(phase.before_training),
        new_markdown_cell("## Training\n\nAll arms of a replicate train in lockstep on identical batches."),
        new_code_cell("runs = run.train()"),
        *sections(phase.after_training),
        new_markdown_cell("## Verdicts\n\nEach applicable hypothesis judged by its rule; *confirmed* for a cause means it kills "
                          "latents in this setup, for a remedy that it works. Dead = never fired on the held-out rows nor in "
                          "the latest training window (`dead_frac`)."),
        new_code_cell("found = run.verdicts()\n"
                      f'verdicts.write(run.out_dir, found{", " + phase.verdicts_extra if phase.verdicts_extra else ""})\n'
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
                          "within a window) and the events each *coincides* with (`saelab.training.diagnose`). Coinciding is not "
                          "causing: only an arm that removes the event can show that."),
        new_code_cell("tables.autopsy_table(run.first())"),
        new_markdown_cell("".join(f'<a id="evidence-{a}"></a>' for a in anchors.split()) + f"\n\n## {title}"),
        *[new_code_cell(code) for code in evidence],
        new_markdown_cell("## Spread across replicates"),
        new_code_cell("plots.replicate_spread(verdicts.replicate_frame(runs))"),
        new_markdown_cell("## Explore (JupyterLab)\n\nWith `explorer = True` (the default here; `saelab lab` turns it off) "
                          "a live panel picks arms and replicates, a metric by its glossary name (the raw column is the "
                          "tooltip) and a step range (ipywidgets; the static report shows nothing here)."),
        new_code_cell("if run.explorer:\n    from saelab.report.explorer import explore\n\n    display(explore(run))"),
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
