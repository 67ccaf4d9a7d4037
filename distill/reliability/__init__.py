"""What keeps a run from losing work or misbehaving: config checks, exact resume, signals, divergence guard."""

from distill.reliability.checkpoints import LastCheckpoint
from distill.reliability.errors import DivergenceError, RunInterrupted, RunStopped
from distill.reliability.interrupts import CheckpointOnSignal
from distill.reliability.seeding import StepSeeder

__all__ = ["CheckpointOnSignal", "LastCheckpoint", "DivergenceError", "RunInterrupted", "RunStopped", "StepSeeder"]
