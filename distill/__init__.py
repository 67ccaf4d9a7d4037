"""distill: knowledge distillation for vision models (Hydra configs, Lightning training, timm models)."""

__version__ = "0.1.0"
