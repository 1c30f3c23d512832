"""The investigation: the user's base, its data check, the hypotheses and their verdicts.

``base`` (the user's base config and the profiles that size it), ``params`` (the notebooks'
parameters), ``datacheck``, ``hypothesis`` (a hypothesis, its arms, the rule of intervention),
``causes/`` (one module per phase, one block per hypothesis), ``verdicts`` (numbers read from runs,
replicate statistics), ``wording`` (what a verdict means, as text), ``phases`` (parameters -> base ->
arms -> jobs -> verdicts) and ``answer`` (the ranked causes and the fixed configuration).
May import: the top level, ``saelab.data``, ``saelab.training``, ``saelab.interop`` and
``saelab.execution``.
"""
