"""Activation sources: where the rows an SAE trains on come from.

``sources`` (synthetic features with ground truth, in-memory tensors, the ``data.source`` dispatch),
``files`` (.npy / .safetensors / .pt / .arrow files and shard folders, streamed with bounded memory),
``transformer`` (MiniLM / Hugging Face hidden states cached as float16 shards) and ``corpus`` (the
default text). May import: ``saelab.config``, ``saelab.fileio``, ``saelab.version``.
"""
