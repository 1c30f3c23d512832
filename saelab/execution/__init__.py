"""Where and how the lab's training jobs run.

``jobs`` (a job is one lockstep group of one seed of one phase: its state, ``run_job`` which resumes
and never retrains) and ``cluster`` (this process, or Dask: local:N, tcp://scheduler, SLURM).
May import: the top level, ``saelab.data`` and ``saelab.training``.
"""
