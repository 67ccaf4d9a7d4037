"""Run distill-train with a disk that fills up: the Nth write of a checkpoint (``DISK_FULL_AT``, counting the
temporary files ``atomic_write`` saves checkpoints to) writes half its bytes, then fails with ENOSPC, as a
real full disk fails a write part-way.

``python -m scripts.bad_inputs.disk_full <distill-train arguments>``
"""

from __future__ import annotations

import errno
import io
import os
import sys

import torch

real_save = torch.save
calls = 0


def save_until_full(obj, f, *args, **kwargs):
    global calls
    if isinstance(f, (str, os.PathLike)) and str(f).endswith(".tmp") and ".ckpt." in str(f):
        calls += 1
        if calls == int(os.environ["DISK_FULL_AT"]):
            buffer = io.BytesIO()
            real_save(obj, buffer, *args, **kwargs)
            with open(f, "wb") as handle:
                handle.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(f))
    return real_save(obj, f, *args, **kwargs)


if __name__ == "__main__":
    torch.save = save_until_full
    from distill.train import main

    sys.argv = ["distill-train", *sys.argv[1:]]
    main()
