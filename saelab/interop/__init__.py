"""Other libraries' SAEs, configs and logs: SAELens, sparsify, dictionary_learning.

``foreign`` (load their checkpoints), ``saelens_config`` (their config fields -> saelab's),
``inspection`` (which latents of a trained SAE are dead on the user's rows, and why), ``export``
(a saelab run in their formats) and ``logs`` (collapse autopsy of a training log).
May import: the top level, ``saelab.data`` and ``saelab.training``.
"""
