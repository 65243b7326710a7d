"""The deployed model of a run: one float model behind every view of a deploy folder.

A deploy folder ``RUN/<profile>/`` holds the fixed-point network
(``network.net``), the float exports (``model.nir``, ``model_step.onnx``) and
the reports. All of them, the attacks of ``evaluate`` and the float side of
every hardware noise come from one :class:`Deployment`: the *deployable float
model* (the trained model with every DLIF gain ``p[t]`` folded to its mean,
which is what a Loihi weight can express, after quantization-aware
fine-tuning when asked) and its quantization.

``RUN/<profile>/deployment.json`` records how the folder was made (fine-tune
epochs, digests of the trained and fine-tuned checkpoints), so ``evaluate``
loads exactly the model the pipeline deployed, and a retrained run is never
silently paired with a stale fine-tuned one.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch

from ..config import RunConfig
from ..fileio import inside, write_text_atomic
from ..ir import Network
from ..models import SNNClassifier
from ..models.folding import fold_batchnorm
from ..neurons.modules import spiking_layers
from ..quant import HardwareProfile, load_profile, quantize_model
from ..quant.quantizer import QuantizationResult, input_encoding_for
from ..train.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ..train.loop import RunError, load_model_state, load_run
from .inputs import ChipInputs, chip_inputs, encode_inputs, encoding_generator

MANIFEST_NAME = "deployment.json"
FINETUNED_NAME = "finetuned.pt"


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def deployable_model(model: SNNClassifier) -> SNNClassifier:
    """A copy of ``model`` with BatchNorm folded into its convs and every DLIF gain ``p[t]`` fixed at its mean.

    Frozen, in eval mode. Loihi weights do not vary over time, so the
    quantizer folds the mean gain into the weights, and BatchNorm (eval
    statistics) becomes the conv's weight and bias
    (:func:`~neurodeploy.models.folding.fold_batchnorm`); this float model is
    exactly what is quantized and exported.
    """
    out = fold_batchnorm(model)  # a copy; a plain copy without BatchNorm
    with torch.no_grad():
        for layer in spiking_layers(out):
            if layer.gain is not None:
                layer.gain.fill_(float(layer.gain.double().mean()))
                layer.gain.requires_grad_(False)
    out.eval()
    return out


@dataclass
class Deployment:
    """A run's trained model, its deployable float model and their fixed-point network."""

    run_dir: Path
    cfg: RunConfig
    checkpoint: dict
    trained: SNNClassifier
    model: SNNClassifier              # deployable float: what the fixed-point network is quantized from
    quantized: QuantizationResult
    profile: HardwareProfile
    finetune_epochs: int

    @property
    def network(self) -> Network:
        return self.quantized.network

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.checkpoint["input_shape"])

    @property
    def time_steps(self) -> int:
        return int(self.cfg.data.time_steps or self.input_shape[0])

    @property
    def folder(self) -> Path:
        """``RUN/<profile name>``, refused if the profile's name would lead out of the run folder."""
        return deploy_folder(self.run_dir, self.profile)

    def describe(self) -> str:
        """One line: what the deployable float model is."""
        gains = any(layer.gain is not None for layer in spiking_layers(self.trained))
        parts = [f"{self.profile.name}"]
        if gains:
            parts.append("DLIF gain folded to its mean")
        parts.append(f"{self.finetune_epochs} epoch(s) of quantization-aware fine-tuning"
                     if self.finetune_epochs else "post-training quantization")
        return ", ".join(parts)

    def inputs(self, x: np.ndarray | torch.Tensor, generator: Optional[torch.Generator] = None) -> ChipInputs:
        """Chip inputs of samples ``x`` for this network (see :func:`chip_inputs`)."""
        return chip_inputs(self.model, self.network, x, generator)


CALIBRATION_SAMPLES = 256


def deploy_folder(run_dir: Path, profile: HardwareProfile) -> Path:
    """The deploy folder ``run_dir/<profile name>``: a :class:`~neurodeploy.fileio.FileAccessError` if the
    name (read from the profile file) is absolute, holds ``..`` or otherwise leaves ``run_dir``."""
    return inside(run_dir, profile.name, what=f"{getattr(profile, 'source', '') or 'hardware profile'}: name")


def _quantize(run_dir: Path, cfg: RunConfig, ckpt: dict, trained: SNNClassifier, deploy: SNNClassifier,
              profile: HardwareProfile, finetune_epochs: int) -> Deployment:
    """Quantize ``deploy``, calibrated on the first training samples (deterministic: the same network
    every time the deployment is made or loaded)."""
    from ..data import load_dataset

    shape = tuple(ckpt["input_shape"])
    T = cfg.data.time_steps or shape[0]
    data = load_dataset(cfg.data.dataset, seed=cfg.seed, data_dir=cfg.data.data_dir)
    cal = encode_inputs(deploy, input_encoding_for(deploy, profile), T, data.x_train[:CALIBRATION_SAMPLES],
                        encoding_generator(cfg.seed, "calibration"))
    # netx_exact: the exported network.net runs in lava-dl's netx with our spikes (integer first-layer weights)
    quant = quantize_model(deploy, shape, profile, time_steps=T, name=cfg.name, netx_exact=True,
                           calibration=cal.float_sequence(0, len(cal)), calibration_repeat=T if cal.repeated else None)
    return Deployment(Path(run_dir), cfg, ckpt, trained, deploy, quant, profile, finetune_epochs)


def prepare_deployment(run_dir: Path, profile: str, finetune: int = 0, *, progress: bool = True,
                       log: Callable[[str], None] = print) -> Deployment:
    """Make (or reuse) the deployment of a run for ``profile`` and record it in ``deployment.json``.

    ``finetune`` epochs of quantization-aware fine-tuning; a fine-tuned model
    of the same trained checkpoint and epoch count is reused.
    """
    run_dir = Path(run_dir)
    hw = load_profile(profile)
    folder = deploy_folder(run_dir, hw)   # before anything is written there
    cfg, trained, ckpt = load_run(run_dir)
    source = file_digest(run_dir / CHECKPOINT_NAME)
    deploy, tuned_digest = None, None
    if finetune > 0:
        old = _read_manifest(folder)
        tuned = folder / FINETUNED_NAME
        if (old is not None and old.get("checkpoint_sha256") == source and old.get("finetune_epochs") == finetune
                and tuned.is_file() and old.get("finetuned_sha256") == file_digest(tuned)):
            log(f"reusing the fine-tuned model in {tuned}")
        else:
            from ..quant.finetune import finetune_quantized

            log(f"quantization-aware fine-tuning for {finetune} epoch(s)")
            finetune_quantized(run_dir, profile, finetune, progress=progress)
        deploy = _load_finetuned(folder / FINETUNED_NAME, trained)
        tuned_digest = file_digest(folder / FINETUNED_NAME)
    deployment = _quantize(run_dir, cfg, ckpt, trained, deploy or deployable_model(trained), hw, finetune)
    write_text_atomic(folder / MANIFEST_NAME, json.dumps({"profile": hw.name, "finetune_epochs": finetune,
                                                          "checkpoint_sha256": source,
                                                          "finetuned_sha256": tuned_digest}, indent=1))
    return deployment


def load_deployment(run_dir: Path, profile: str, log: Callable[[str], None] = print) -> Deployment:
    """The deployment ``prepare_deployment`` recorded for ``profile``, or post-training quantization if none.

    A deploy folder made from an earlier checkpoint of the run is an error:
    its fixed-point network no longer belongs to the trained model.
    """
    run_dir = Path(run_dir)
    hw = load_profile(profile)
    folder = deploy_folder(run_dir, hw)
    cfg, trained, ckpt = load_run(run_dir)
    manifest = _read_manifest(folder)
    if manifest is None:
        return _quantize(run_dir, cfg, ckpt, trained, deployable_model(trained), hw, 0)
    if manifest.get("checkpoint_sha256") != file_digest(run_dir / CHECKPOINT_NAME):
        raise RunError(f"{folder / MANIFEST_NAME}: made from an earlier checkpoint of {run_dir} (it was trained "
                       f"again since); rerun `neurodeploy pipeline` or `neurodeploy quantize {run_dir}`")
    epochs = int(manifest.get("finetune_epochs") or 0)
    if epochs == 0:
        return _quantize(run_dir, cfg, ckpt, trained, deployable_model(trained), hw, 0)
    tuned = folder / FINETUNED_NAME
    if not tuned.is_file() or file_digest(tuned) != manifest.get("finetuned_sha256"):
        raise RunError(f"{tuned}: missing or changed since {folder / MANIFEST_NAME} was written; "
                       f"rerun `neurodeploy pipeline` or `neurodeploy quantize --finetune {epochs}`")
    deploy = _load_finetuned(tuned, trained)
    return _quantize(run_dir, cfg, ckpt, trained, deploy, hw, epochs)


def _read_manifest(folder: Path) -> Optional[dict]:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("finetune_epochs", 0), int):
        raise RunError(f"{path}: expected an object with an integer 'finetune_epochs', got {data!r}")
    return data


def _load_finetuned(path: Path, trained: SNNClassifier) -> SNNClassifier:
    model = copy.deepcopy(trained)
    load_model_state(model, load_checkpoint(path)["model"], path)
    return deployable_model(model)
