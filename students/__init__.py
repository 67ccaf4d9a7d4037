"""Small-input architectures registered into timm's registry.

Importing this package is enough: afterwards ``timm.create_model("cifar_resnet8x4", num_classes=10)``
builds our models through the same door as every timm model.
"""

from students import cifar_resnet, mlp, simkd, small_cnn  # noqa: F401  (registers the models)
