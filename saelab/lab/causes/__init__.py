"""The lab's hypotheses, one home each, grouped into the phases (notebooks) that show them.

Each module holds one phase: its hypotheses (claim, factor, when it applies, arms, rule) and the
``PHASE`` that groups them. This registry lists the phases; no phase module imports it back.
Adding a cause means adding one ``Hypothesis`` block to a phase module (or a new module listed
here); the notebooks (tools/make_notebooks.py) and the tests pick it up.
"""

from saelab.lab.causes import l1, normalization, reanimation, reproduce, resampling, validation, warmup
from saelab.lab.hypothesis import Phase

PHASES: dict[str, Phase] = {p.stem: p for p in (reproduce.PHASE, l1.PHASE, warmup.PHASE, resampling.PHASE,
                                                normalization.PHASE, reanimation.PHASE, validation.PHASE)}
