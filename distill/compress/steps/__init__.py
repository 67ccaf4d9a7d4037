"""The compression steps: one module each, registered by importing it (``distill.compress.step.register_step``).

Every module of this package is imported here, so a new step is its module and its preset in conf/compress/.
"""

import importlib
import pkgutil

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")
