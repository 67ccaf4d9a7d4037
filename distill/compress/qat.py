"""Quantisation-aware training with torchao's PT2E flow, and its export to an int8 ONNX file.

``prepare_qat_pt2e`` with the x86 quantizer inserts fake quantisation (uint8 activations per tensor,
int8 weights per channel) into an exported copy of the student; distillation fine-tunes that copy;
``convert_pt2e`` turns it into quantize/dequantize ops, which the dynamo ONNX exporter writes as
QuantizeLinear/DequantizeLinear pairs that onnxruntime runs with int8 kernels.
"""

from __future__ import annotations

import copy
from pathlib import Path

import onnx
import torch
from torch import nn

from distill.compress.onnx_io import INPUT_NAME, OUTPUT_NAME, save_onnx


def versions() -> dict[str, str]:
    """The versions a QAT result (or failure) depends on, for the record."""
    import onnxruntime
    import torchao

    return {"torch": torch.__version__, "torchao": torchao.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


class FunctionalReLU(nn.Module):
    """``nn.ReLU`` as one function call per use.

    The x86 quantizer groups graph nodes by the module that made them; a ReLU module called twice (our
    CIFAR ResNets reuse ``self.relu`` after the first convolution and after the residual sum) becomes
    one group with two outputs, and ``prepare_qat_pt2e`` stops with "Input partition has more than one
    output node" (torchao 0.18.0, torch 2.14.1). A functional call per use gives one group per use.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.relu(x)


def unshare_relus(module: nn.Module) -> nn.Module:
    """Replace every ``nn.ReLU`` below ``module`` with a FunctionalReLU (no weights change)."""
    for name, child in module.named_children():
        if isinstance(child, nn.ReLU):
            setattr(module, name, FunctionalReLU())
        else:
            unshare_relus(child)
    return module


class QATStudent(nn.Module):
    """The fake-quantised graph as a module whose ``training`` flag alone decides how it computes.

    A torch.export graph ignores train()/eval(); torchao rewrites its BatchNorm ops between the two modes
    on request. Lightning (2.6) ends a validation pass by setting ``training`` back on every submodule
    directly, without calling train(), so after the first validation the graph kept inference-mode
    BatchNorm for the rest of QAT: the network trained without batch statistics and diverged (Fashion-MNIST
    resnet8x4, lr 0.005: loss 0.22, 1.5, 8.9 over the first three steps). Each forward therefore brings the
    graph to the mode of the flag, whoever set it. Outside training the observers are also frozen, so
    validation and test images never move the quantisation ranges that ``convert_pt2e`` bakes in.
    """

    def __init__(self, graph: nn.Module) -> None:
        super().__init__()
        self.graph = graph
        self._graph_training: bool | None = None  # the mode the graph's ops are in; None: not yet synced

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self._graph_training is not self.training:
            self._sync_mode()
        return self.graph(images)

    def _sync_mode(self) -> None:
        from torchao.quantization.pt2e import (
            disable_observer,
            enable_observer,
            move_exported_model_to_eval,
            move_exported_model_to_train,
        )

        if self.training:
            move_exported_model_to_train(self.graph)
            self.graph.apply(enable_observer)
        else:
            move_exported_model_to_eval(self.graph)
            self.graph.apply(disable_observer)
        self._graph_training = self.training


def remove_dropout(graph: torch.fx.GraphModule) -> None:
    """Take every dropout out of an exported graph.

    torchao 0.18 switches an exported graph between train and eval by pattern-rewriting dropout as well
    as BatchNorm, and the rewrite matches any dropout but writes back its own ``p=0.5``: our heads' dropout
    with ``p=0`` became ``p=0.5`` in front of the classifier after the first eval(), which cut the digits
    student's training-mode accuracy from 99 % to 79 % during QAT. A short fine-tune needs no dropout.
    """
    dropouts = [node for node in graph.graph.nodes if node.target is torch.ops.aten.dropout.default]
    for node in dropouts:
        node.replace_all_uses_with(node.args[0])
        graph.graph.erase_node(node)
    graph.recompile()


def prepare_qat(model: nn.Module, input_shape: tuple[int, ...]) -> QATStudent:
    """A fake-quantised copy of ``model`` (a torch.export graph) that trains like a module.

    The copy is exported in train mode, as PT2E QAT requires, with a dynamic batch axis, and without dropout.
    """
    from torchao.quantization.pt2e import allow_exported_model_train_eval
    from torchao.quantization.pt2e.quantize_pt2e import prepare_qat_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    float_copy = unshare_relus(copy.deepcopy(model).cpu().train())
    example = (torch.randn(4, *input_shape),)
    exported = torch.export.export(float_copy, example, dynamic_shapes=({0: torch.export.Dim.DYNAMIC},)).module()
    remove_dropout(exported)
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config(is_qat=True))
    prepared = prepare_qat_pt2e(exported, quantizer)
    allow_exported_model_train_eval(prepared)  # exported graphs raise on train()/eval() otherwise
    return QATStudent(prepared).train()


def calibrate(prepared: nn.Module, images: torch.Tensor, batch_size: int = 32) -> None:
    """Set the fake quantisers' ranges from training images before any weight moves.

    Without this the first training steps quantise with ranges seen on one batch, the outputs are
    garbage, and their gradients undo much of what distillation built (measured on digits: training
    accuracy 25 % in the first QAT epoch without calibration, the fp32 accuracy with it).
    """
    prepared.train()
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            prepared(images[start:start + batch_size])


def convert_to_onnx(prepared: QATStudent, input_shape: tuple[int, ...], path: str | Path, opset: int = 18) -> Path:
    """Fold BatchNorm and the learnt ranges into int8 weights + QDQ ops and write them as ONNX (dynamo)."""
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e

    path = Path(path)
    prepared.cpu().eval()._sync_mode()
    converted = convert_pt2e(prepared.graph)
    converted.training = False  # only the flag the exporter checks: the graph's ops are in inference mode
    raw = path.with_name(f".{path.name}.raw")
    try:
        torch.onnx.export(converted, (torch.zeros(2, *input_shape),), str(raw), dynamo=True,
                          opset_version=max(opset, 18), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), external_data=False, verbose=False)
        save_onnx(onnx.load(str(raw)), path)
    finally:
        raw.unlink(missing_ok=True)
    return path
