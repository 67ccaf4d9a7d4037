"""The teacher: where its weights come from and what is kept of it.

- ``teachers/`` (top level) builds the network from ``teacher:`` config (timm, our own, a file or the hub);
- ``obtain``: its final weights for a run: loaded, reused from the weights cache, or trained here;
- ``weights_cache``: teachers trained here, kept under a key of their recipe and data (``paths.teacher_cache``);
- ``logits_cache``: a trained teacher's outputs on every image (``teacher_cache.enabled``), so a student run
  reads them instead of running the teacher;
- ``ensemble``: several teachers read as one (``teachers=[...]``).
"""
