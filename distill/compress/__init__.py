"""Compression after distillation: ONNX export, int8 quantisation, structured pruning, quantisation-aware training.

``pipeline.compress`` runs the steps that ``conf/compress/`` asks for and measures every variant it makes;
each step lives in its own module (``onnx_io``, ``quantize``, ``prune``, ``qat``).
"""
