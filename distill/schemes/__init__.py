"""Training schemes (docs/schemes.md): arrangements of teachers, loss terms and the Lightning module.

Each is a config choice of ``distill-train``: ``teachers=[...]`` (an ensemble read as one teacher),
``chain=[...]`` (teacher assistants), ``generations=N`` (born-again), ``stage=mutual`` (mutual learning).
"""

from distill.config.schemes import check_scheme, scheme_name
from distill.schemes.mutual import run_mutual
from distill.schemes.run import run_scheme

__all__ = ["check_scheme", "run_mutual", "run_scheme", "scheme_name"]
