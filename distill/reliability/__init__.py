"""What keeps a run from losing work or misbehaving: config checks, exact resume, signals, divergence guard.

Import from the submodules: this package is imported by the command-line entry points before any heavy
library, so it imports nothing itself.
"""
