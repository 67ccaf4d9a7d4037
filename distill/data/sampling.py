"""A training order that a resumed run can reproduce: shuffles drawn from (seed, epoch), and mid-epoch skips.

The seed is Lightning's global seed (``PL_GLOBAL_SEED``, set by ``seed_everything`` before each fit), so
the teacher's fit and the student's fit each get their own order and a resumed fit gets the same one. A
checkpoint written in the middle of an epoch records how many batches of it were trained; the resumed run
starts that epoch's permutation after them (Lightning saves and restores the state of a train loader that
has ``state_dict``/``load_state_dict``), instead of starting the epoch over with other batches.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import BatchSampler, DataLoader, Sampler, SequentialSampler


def global_seed() -> int:
    """The seed of the current fit, as ``lightning.seed_everything`` recorded it (0 when none was set)."""
    return int(os.environ.get("PL_GLOBAL_SEED", 0))


def epoch_generator(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    """A CPU generator for one (seed, epoch, stream): independent of the global RNG and of everything before."""
    # Distinct large odd multipliers keep (seed, epoch, stream) triples from colliding in practice.
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7_919 + stream * 104_729) % 2**63)


class EpochShuffleSampler(Sampler[int]):
    """A random permutation per epoch from ``(global seed, epoch)``; can start an epoch after ``skip`` samples."""

    def __init__(self, num_samples: int) -> None:
        self.num_samples = num_samples
        self.epoch = 0
        self._resume: tuple[int, int] | None = None  # (epoch, samples already trained in it)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every epoch (as for DistributedSampler)."""
        self.epoch = epoch

    def resume_at(self, epoch: int, samples: int) -> None:
        self._resume = (epoch, samples)

    def permutation(self) -> torch.Tensor:
        """This epoch's order, after the samples a resumed checkpoint had already trained (once)."""
        order = torch.randperm(self.num_samples, generator=epoch_generator(global_seed(), self.epoch))
        start = 0
        if self._resume is not None:
            epoch, samples = self._resume
            self._resume = None
            start = samples if epoch == self.epoch else 0
        return order[start:]

    def __iter__(self) -> Iterator[int]:
        # A generator: the body runs at the first fetch, after Lightning has set this epoch.
        yield from self.permutation().tolist()

    def __len__(self) -> int:
        return self.num_samples


class TensorBatchSampler(BatchSampler):
    """``BatchSampler`` that hands out the batches of an ``EpochShuffleSampler`` or a ``SequentialSampler`` as
    slices of one index tensor: the same batches, in the same order.

    PyTorch's ``BatchSampler`` builds each batch as a list, one Python int at a time, which the dataset turns
    back into a tensor: about 20 µs a batch, 1 % of a small model's epoch (docs/performance.md). Any other
    sampler (DDP's ``DistributedSampler``: Lightning swaps it in by re-creating this class around it with the
    same batch size) is batched as lists, as before.
    """

    def __iter__(self) -> Iterator[Any]:
        if isinstance(self.sampler, EpochShuffleSampler):
            order = self.sampler.permutation()
        elif isinstance(self.sampler, SequentialSampler):
            order = torch.arange(len(self.sampler))
        else:
            yield from super().__iter__()
            return
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            yield order[start:start + self.batch_size]


class ResumableLoader(DataLoader):
    """A shuffling train loader whose state is the epoch and the number of batches trained in it.

    ``batches_done`` reads the trainer's progress when a checkpoint is written (the loader cannot count
    itself: the fetcher may already hold the next batch).
    """

    batch_sampler: BatchSampler  # the one given to __init__ (Lightning's DDP re-creation keeps a BatchSampler)

    def __init__(self, dataset: Any, batches_done: Callable[[], tuple[int, int]], batch_sampler: BatchSampler,
                 **kwargs: Any) -> None:
        # ``batch_sampler`` wraps an EpochShuffleSampler; under DDP Lightning re-creates the loader around its
        # DistributedSampler, passing the DataLoader defaults (batch_size=1, shuffle=False, ...) in ``kwargs``.
        super().__init__(dataset, batch_sampler=batch_sampler, **kwargs)
        self.batches_done = batches_done

    def state_dict(self) -> dict[str, int]:
        epoch, batches = self.batches_done()
        return {"epoch": epoch, "batches": batches}

    def load_state_dict(self, state: dict[str, int]) -> None:
        sampler = self.batch_sampler.sampler
        if isinstance(sampler, EpochShuffleSampler):  # DDP swaps in its DistributedSampler: no skip there
            sampler.resume_at(state["epoch"], state["batches"] * self.batch_sampler.batch_size)
