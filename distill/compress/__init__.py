"""Compression after distillation: ONNX export, int8 quantisation, structured pruning, quantisation-aware training.

``pipeline.compress`` runs the steps that ``conf/compress/`` asks for and measures every variant it makes. Each
step is one module of ``steps/`` registered in ``step.STEPS`` (its settings checks, what it needs, the rows it
adds); the tools they call live beside them (``onnx_io``, ``quantize``, ``prune``, ``qat``, ``recover``).
"""
