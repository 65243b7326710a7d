"""Checkpoints that load with ``torch.load(weights_only=True)``.

Only tensors and plain Python containers are stored (the config as a nested
dict), so loading a checkpoint never executes code from the file. Writes are
atomic (temporary file, then rename), so an interrupted save never leaves a
half-written checkpoint behind.

A checkpoint is untrusted input: :func:`load_checkpoint` reads regular files
only (a named pipe never blocks), refuses a file that asks to import anything
(naming what it asked for, never loading it), and checks the structure of what
it read (:func:`check_structure`) so that every caller can index it;
:func:`check_state_dict` checks a state dict against the model it must fit.
Every problem is a one-line :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import math
import numbers
import os
import re
import stat
import warnings
from pathlib import Path
from typing import Any, Mapping, Union

import torch

from ..errors import NeurodeployError, bounded
from ..fileio import atomic_path

FORMAT = "neurodeploy-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"

# what save() writes (besides format and version); optimizer and scheduler are needed to resume only
REQUIRED_KEYS = ("config", "epoch", "model", "input_shape", "n_classes")
MAX_EPOCH = 10**9
MAX_DIM = 2**20           # one axis of a sample
MAX_SAMPLE = 2**28        # elements of one sample
MAX_CLASSES = 2**20


class CheckpointError(NeurodeployError, ValueError):
    """A checkpoint file is missing, unreadable or not ours."""


def save_checkpoint(path: Union[str, Path], payload: dict[str, Any]) -> None:
    """Atomically write ``payload`` (tensors and plain containers) to ``path``."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **payload}, tmp)


def _check_plain(value: object, where: str, depth: int = 0) -> None:
    """A config read from a checkpoint holds what YAML can: mappings with string keys, lists, scalars."""
    if depth > 8:
        raise CheckpointError(f"{where}: nested deeper than any config; the checkpoint is not ours")
    if isinstance(value, dict):
        if len(value) > 1000:
            raise CheckpointError(f"{where}: a mapping of {len(value)} keys; far more than any config section")
        for key, item in value.items():
            if not isinstance(key, str):
                raise CheckpointError(f"{where}: key {bounded(key)} is not a string")
            _check_plain(item, f"{where}.{key if key.isidentifier() else bounded(key, 40)}", depth + 1)
    elif isinstance(value, list):
        if len(value) > 10**5:
            raise CheckpointError(f"{where}: a list of {len(value)} items; far more than any config value")
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]", depth + 1)
    elif not (value is None or isinstance(value, (str, bool, int, float))):
        raise CheckpointError(f"{where} is a {type(value).__name__} {bounded(value)}; a config holds only "
                              f"mappings, lists, strings, numbers, booleans and nulls")


def _load_error(path: Path, exc: Exception) -> CheckpointError:
    """One line for what ``torch.load(weights_only=True)`` raised (never torch's weights_only=False advice)."""
    text = str(exc)
    found = re.search(r"GLOBAL (\S+)", text)
    if found:
        name = found.group(1).rstrip(".,;:")
        return CheckpointError(f"{path}: refused, NOT loaded: the file asks to import {bounded(name)}, which a "
                               f"checkpoint of tensors never needs (it may be malicious; do not load it elsewhere)")
    if isinstance(exc, EOFError):
        return CheckpointError(f"{path}: not a checkpoint (the file is empty or truncated)")
    if any(k in text for k in ("zip archive", "central directory", "PytorchStreamReader", "inline_container")):
        return CheckpointError(f"{path}: not a checkpoint (not a complete torch zip archive: corrupt or truncated)")
    operand = re.search(r"Unsupported operand (\S+)", text)
    if operand or "Weights only load failed" in text:
        what = f" (pickle opcode {bounded(operand.group(1))})" if operand else ""
        return CheckpointError(f"{path}: not a checkpoint: unreadable or unsupported pickle data{what}; "
                               f"NOT loaded")
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return CheckpointError(f"{path}: not a loadable checkpoint ({type(exc).__name__}: {bounded(first, 160)})")


def load_checkpoint(path: Union[str, Path]) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only=True``) and check its format and structure."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no checkpoint here (train a model first: neurodeploy train)") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: checkpoint cannot be read ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        mode = os.fstat(fh.fileno()).st_mode
        if not stat.S_ISREG(mode):
            kind = "a folder" if stat.S_ISDIR(mode) else "a named pipe" if stat.S_ISFIFO(mode) else "not a regular file"
            raise CheckpointError(f"{path}: checkpoint is {kind}; expected a regular file")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. torch's note on a legacy pickle protocol
                data = torch.load(fh, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for corrupt or unsafe files
            raise _load_error(path, exc) from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a neurodeploy checkpoint (missing format tag {FORMAT!r})")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {bounded(data.get('version'))}, expected {VERSION}")
    check_structure(data, path)
    return data


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_structure(data: Mapping[str, Any], path: Union[str, Path]) -> None:
    """Check the keys and types of a checkpoint's payload; raise :class:`CheckpointError` naming the first problem.

    Required: ``config`` (a mapping, validated by the config loader later),
    ``epoch`` (integer >= 0), ``model`` (a state dict: names to finite
    tensors), ``input_shape`` (1 to 4 positive integers) and ``n_classes``
    (a positive integer); ``optimizer`` and ``scheduler``, where present,
    are mappings.
    """
    missing = [k for k in REQUIRED_KEYS if k not in data]
    if missing:
        raise CheckpointError(f"{path}: checkpoint lacks {', '.join(missing)} (a neurodeploy checkpoint holds "
                              f"{', '.join(REQUIRED_KEYS)}); it is damaged or was not written by neurodeploy")
    if not isinstance(data["config"], dict):
        raise CheckpointError(f"{path}: config is {type(data['config']).__name__} {bounded(data['config'])}; "
                              f"expected a mapping")
    _check_plain(data["config"], f"{path}: config")
    epoch = data["epoch"]
    if not _is_int(epoch) or not 0 <= epoch <= MAX_EPOCH:
        raise CheckpointError(f"{path}: epoch is {bounded(epoch)}; expected an integer in [0, {MAX_EPOCH}]")
    shape = data["input_shape"]
    if (not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 4
            or not all(_is_int(d) and 1 <= d <= MAX_DIM for d in shape) or math.prod(shape) > MAX_SAMPLE):
        raise CheckpointError(f"{path}: input_shape is {bounded(shape)}; expected a list of 1 to 4 integers in "
                              f"[1, {MAX_DIM}] (the shape of one sample, at most {MAX_SAMPLE} elements)")
    n = data["n_classes"]
    if not _is_int(n) or not 1 <= n <= MAX_CLASSES:
        raise CheckpointError(f"{path}: n_classes is {bounded(n)}; expected an integer in [1, {MAX_CLASSES}]")
    state = data["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: model is {type(state).__name__} {bounded(state)}; expected a state dict "
                              f"(parameter names to tensors)")
    for key, value in state.items():
        if not isinstance(key, str):
            raise CheckpointError(f"{path}: model: key {bounded(key)} is not a parameter name (a string)")
        _check_tensor(value, f"{path}: model[{bounded(key)}]")
    for key in ("optimizer", "scheduler"):
        if key in data and not isinstance(data[key], dict):
            raise CheckpointError(f"{path}: {key} is {type(data[key]).__name__} {bounded(data[key])}; "
                                  f"expected a state dict (a mapping)")


def _check_tensor(value: object, where: str) -> None:
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"{where} is {type(value).__name__} {bounded(value)}; expected a tensor")
    if value.layout != torch.strided:
        raise CheckpointError(f"{where} is a {value.layout} tensor; expected a dense tensor")
    if value.is_complex() or value.is_quantized or value.dtype == torch.bool:
        raise CheckpointError(f"{where} has dtype {value.dtype}; expected real numbers")
    if value.is_floating_point():
        bad = ~torch.isfinite(value)
        if bool(bad.any()):
            first = float(value[bad].reshape(-1)[0])
            raise CheckpointError(f"{where} holds {int(bad.sum())} non-finite value(s) of {value.numel()} (e.g. "
                                  f"{first}); the weights are corrupt or training diverged: NOT loaded")


def check_state_dict(expected: Mapping[str, torch.Tensor], state: Mapping[str, Any], where: str) -> None:
    """Check that ``state`` fits a model whose state dict is ``expected`` (a meta-device model's is enough).

    Same names, shapes and dtypes (BatchNorm's batch count is an integer
    tensor), finite values. The first mismatch is a one-line :class:`CheckpointError`
    (``load_state_dict``'s own message lists every key over many lines).
    """
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (first {bounded(missing[0])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (first {bounded(unexpected[0])})")
        raise CheckpointError(f"{where}: the state dict does not fit the model its config builds: "
                              f"{' and '.join(parts)} tensor name(s)")
    for key, want in expected.items():
        got = state[key]
        name = f"{where}[{bounded(key)}]"
        _check_tensor(got, name)
        if tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(f"{name} has shape {bounded(tuple(got.shape))}, but the model its config "
                                  f"builds needs {tuple(want.shape)}")
        if got.dtype != want.dtype:
            # exact: a float64 value past float32's range would load as inf
            raise CheckpointError(f"{name} has dtype {got.dtype}; the model needs {want.dtype}")
