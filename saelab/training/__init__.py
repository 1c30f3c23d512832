"""Training one or many SAE arms in lockstep, and the run directory each writes.

``models`` (one small class per variant, a registry), ``losses``, ``optim``, ``schedules``,
``normalize``, ``tracking`` (dead-latent counters), ``remedies`` (resampling), ``metrics``, ``stack``
(arms stacked into one model: the step, evaluation, resampling), ``train`` (the one training
function), ``runs`` (a run is a directory) and ``diagnose`` (collapse autopsy, lifecycles).
May import: ``saelab.config``/``fileio``/``version`` and ``saelab.data``.
"""
