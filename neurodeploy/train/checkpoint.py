"""Checkpoints that load with ``torch.load(weights_only=True)``.

Only tensors and plain Python containers are stored (the config as a nested
dict), so loading a checkpoint never executes code from the file. Writes are
atomic (temporary file, then rename), so an interrupted save never leaves a
half-written checkpoint behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

import torch

from ..errors import NeurodeployError
from ..fileio import atomic_path

FORMAT = "neurodeploy-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


class CheckpointError(NeurodeployError, ValueError):
    """A checkpoint file is missing, unreadable or not ours."""


def save_checkpoint(path: Union[str, Path], payload: dict[str, Any]) -> None:
    """Atomically write ``payload`` (tensors and plain containers) to ``path``."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)


def load_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check its format."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here (train a model first: neurodeploy train)")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe files
        raise CheckpointError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a neurodeploy checkpoint (missing format tag {FORMAT!r})")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {data.get('version')!r}, expected {VERSION}")
    return data
