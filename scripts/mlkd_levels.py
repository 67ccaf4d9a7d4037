"""How large MLKD's three levels are against cross-entropy at the start of training, for a batch size and a
class count: a confident teacher (logit 10 on the true class, unit noise) and a student near zero.

    python -m scripts.mlkd_levels                       # CIFAR-100 at mdistiller's batch 64, ours at 128 on 10 classes
    python -m scripts.mlkd_levels --pairs 256x10 64x1000

MLKD's reference weights (ce 0.1, mlkd 0.9) come from CIFAR-100 with batch 64. Its batch and class levels
compare Gram matrices whose entries grow with b / C, so on a 10-class set with batch 128 they dominate the loss
(docs/losses.md).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from distill.losses.mlkd import mlkd_levels

TEMPERATURES = (2.0, 3.0, 4.0, 5.0, 6.0)  # conf/loss/mlkd.yaml


def levels(batch: int, classes: int, seed: int = 0) -> dict[str, float]:
    """CE of the student and MLKD's instance, batch and class levels (masked and summed over the temperatures)."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.randint(classes, (batch,), generator=generator)
    teacher = torch.randn(batch, classes, generator=generator) + 10 * F.one_hot(labels, classes)
    student = 0.1 * torch.randn(batch, classes, generator=generator)
    instance, batch_level, class_level = mlkd_levels(student, teacher, TEMPERATURES)
    return {"ce": F.cross_entropy(student, labels).item(), "instance": instance.item(), "batch": batch_level.item(),
            "class": class_level.item()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=["64x100", "128x10"], help="BATCHxCLASSES")
    args = parser.parse_args(argv)
    print("| batch | classes | CE | instance | batch level | class level | MLKD | 0.9 MLKD / 0.1 CE |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for pair in args.pairs:
        batch, classes = (int(n) for n in pair.lower().split("x"))
        v = levels(batch, classes)
        mlkd = v["instance"] + v["batch"] + v["class"]
        print(f"| {batch} | {classes} | {v['ce']:.2f} | {v['instance']:.2f} | {v['batch']:.2f} | {v['class']:.2f} | "
              f"{mlkd:.2f} | {0.9 * mlkd / (0.1 * v['ce']):.0f} |")


if __name__ == "__main__":
    main()
