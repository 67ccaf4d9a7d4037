"""Read an offline wandb run's ``.wandb`` file (LevelDB log of protobuf records) so tests can check what was logged.

wandb >= 0.19 writes this file from its Go core and ships no Python reader, so we read the framing
ourselves: a 7-byte W&B header, then 32 KiB blocks of chunks (crc32 4 bytes, length 2, type 1).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2

BLOCK_SIZE = 32 * 1024
HEADER_SIZE = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: Path) -> list[wandb_internal_pb2.Record]:
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a wandb transaction log")
    records, pending, offset = [], b"", HEADER_SIZE
    while offset + HEADER_SIZE <= len(data):
        if BLOCK_SIZE - offset % BLOCK_SIZE < HEADER_SIZE:  # block trailer too small for a chunk: padding
            offset += BLOCK_SIZE - offset % BLOCK_SIZE
            continue
        length = int.from_bytes(data[offset + 4: offset + 6], "little")
        kind = data[offset + 6]
        chunk = data[offset + HEADER_SIZE: offset + HEADER_SIZE + length]
        offset += HEADER_SIZE + length
        if kind == 0 and length == 0:
            continue
        pending = chunk if kind in (FULL, FIRST) else pending + chunk
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def logged_history(run_dir: Path) -> dict[str, list[Any]]:
    """Every value logged with ``run.log`` in an offline run folder, by metric name, in order."""
    (wandb_file,) = run_dir.glob("run-*.wandb")
    history: dict[str, list[Any]] = {}
    for record in read_records(wandb_file):
        if record.WhichOneof("record_type") == "history":
            for item in record.history.item:
                key = item.key or "/".join(item.nested_key)
                history.setdefault(key, []).append(json.loads(item.value_json))
    return history
