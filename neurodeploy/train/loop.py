"""The training loop: clean, Gaussian-noise and FGSM adversarial training.

Reproducibility: all randomness of epoch ``e`` (shuffling, training noise,
FGSM random starts, Poisson spikes) comes from one generator seeded with
``(seed, e)``, so a run resumed from its epoch-``e`` checkpoint continues
exactly as the uninterrupted run would. Initialisation uses ``seed`` too, and
torch runs with a fixed thread count from the config, never the machine's.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import NeurodeployError, bounded
from ..attacks import fgsm
from ..config import ConfigError, RunConfig, config_from_dict, dump_config
from ..data import DatasetSplit, load_dataset
from ..fileio import atomic_path, require_regular_file, write_text_atomic
from ..models import SNNClassifier, build_model
from ..models.builders import ModelBuildError, data_driven_init
from ..neurons.modules import record_activity
from .checkpoint import CHECKPOINT_NAME, CheckpointError, check_state_dict, load_checkpoint, save_checkpoint
from .regularizers import bound_penalty, gain_penalty, mppd_penalty, select_layers, snn_rat_step

METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.yaml"


class RunError(NeurodeployError, RuntimeError):
    """A run folder is in a state the requested command cannot use."""


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The one random stream of an epoch (``epoch = -1`` for evaluation)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, epoch + 1]).generate_state(1)[0]))


def set_threads(threads: int) -> None:
    """Fix torch's intra-op threads so results do not depend on the machine."""
    torch.set_num_threads(threads)


def _set_encoder_generator(model: SNNClassifier, generator: Optional[torch.Generator]) -> None:
    if hasattr(model.encoder, "generator"):
        model.encoder.generator = generator


@torch.no_grad()
def predict(model: SNNClassifier, x: np.ndarray | torch.Tensor, batch_size: int = 500,
            generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Logits for all of ``x`` in eval mode, batched."""
    was_training = model.training
    model.eval()
    _set_encoder_generator(model, generator)
    x = torch.as_tensor(x)
    try:
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
    finally:
        model.train(was_training)


def accuracy(logits: torch.Tensor, y: np.ndarray | torch.Tensor) -> float:
    """Fraction of argmax predictions equal to ``y`` (ties: lowest index)."""
    return float((logits.argmax(1) == torch.as_tensor(y)).float().mean())


def random_shift(x: torch.Tensor, max_shift: int, g: torch.Generator) -> torch.Tensor:
    """Translate each image ``(B, C, H, W)`` by up to ``max_shift`` pixels, zero fill."""
    if max_shift == 0 or x.dim() != 4:
        return x
    b, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (max_shift,) * 4)
    offsets = torch.randint(0, 2 * max_shift + 1, (b, 2), generator=g)
    return torch.stack([padded[i, :, dy:dy + h, dx:dx + w] for i, (dy, dx) in enumerate(offsets.tolist())])


def _perturb(model: SNNClassifier, cfg: RunConfig, x: torch.Tensor, y: torch.Tensor,
             g: torch.Generator) -> Optional[torch.Tensor]:
    t = cfg.training
    if t.mode == "gaussian":
        # method.md: x~ = x + sigma*N(0,1), no clamp
        return x + t.sigma * torch.randn(x.shape, generator=g)
    if t.mode == "fgsm":
        return fgsm(model, x, y, t.fgsm_step, random_start_std=t.fgsm_init_std, generator=g)
    return None


def training_loss(model: SNNClassifier, cfg: RunConfig, x: torch.Tensor, y: torch.Tensor,
                  g: torch.Generator) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch: ``kappa*CE(x) + (1-kappa)*CE(x~) + rho*V + w*R`` and its terms."""
    t, r = cfg.training, cfg.regularizer
    x_pert = _perturb(model, cfg, x, y, g)
    layers = model.spiking_layers()
    with record_activity(model) as clean_rec:
        logits = model(x)
    ce = F.cross_entropy(logits, y)
    terms = {"ce_clean": float(ce.detach())}
    if x_pert is None:
        return ce, {**terms, "loss": float(ce.detach()), "acc": accuracy(logits.detach(), y)}
    with record_activity(model) as pert_rec:
        logits_p = model(x_pert)
    ce_p = F.cross_entropy(logits_p, y)
    loss = t.kappa * ce + (1 - t.kappa) * ce_p
    terms["ce_perturbed"] = float(ce_p.detach())
    # MS-MPPD is always measured when a perturbed pass exists (a robustness
    # diagnostic for unregularized runs too); it enters the loss when rho > 0.
    idx = select_layers(layers, r.mppd.layers, cfg.model.readout == "spikes")
    v = mppd_penalty(clean_rec, pert_rec, layers, idx)
    if r.mppd.rho > 0:
        loss = loss + r.mppd.rho * v
    terms["mppd"] = float(v.detach())
    if any(layers[i].gain is not None for i in idx):
        with torch.no_grad():
            terms["mppd_after_gain"] = float(mppd_penalty(clean_rec, pert_rec, layers, idx, after_gain=True))
    if r.bound.weight > 0:
        b = bound_penalty(clean_rec, pert_rec, layers, r.bound.window)
        loss = loss + r.bound.weight * b
        terms["bound"] = float(b.detach())
    if r.bound.gain_weight > 0:
        gp = gain_penalty(layers, r.bound.gain_target, r.bound.power_iterations)
        loss = loss + r.bound.gain_weight * gp
        terms["gain"] = float(gp.detach())
    terms["loss"] = float(loss.detach())
    terms["acc"] = accuracy(logits.detach(), y)
    return loss, terms


def straight_through_grads(model: torch.nn.Module, noisy: torch.nn.Module) -> None:
    """Add the gradients of the perturbed copy ``noisy`` to ``model``'s parameters of the same name.

    The straight-through estimator of noise-aware training: the gradient with
    respect to a perturbed weight is used as the gradient of the clean one.
    :func:`~neurodeploy.noise.hardware.perturb_float_model` keeps the model's
    named parameters and shapes; a copy that does not is a bug (pairing by
    position would put gradients on the wrong tensors), so it raises
    :class:`AssertionError` naming the parameters.
    """
    params = dict(model.named_parameters())
    noisy_params = dict(noisy.named_parameters())
    if params.keys() != noisy_params.keys():
        extra, missing = sorted(noisy_params.keys() - params.keys()), sorted(params.keys() - noisy_params.keys())
        raise AssertionError(f"the perturbed copy's parameters differ from the model's "
                             f"(extra {extra}, missing {missing}): a bug in the perturbation")
    for name, q in noisy_params.items():
        p = params[name]
        if q.shape != p.shape:
            raise AssertionError(f"parameter {name}: the perturbed copy has shape {tuple(q.shape)}, "
                                 f"the model {tuple(p.shape)}: a bug in the perturbation")
        if q.grad is not None:
            p.grad = q.grad.clone() if p.grad is None else p.grad + q.grad


def _chip_noise_step(model: SNNClassifier, cfg: RunConfig, x: torch.Tensor, y: torch.Tensor,
                     g: torch.Generator, input_shape: tuple[int, ...]) -> tuple[torch.Tensor, dict[str, float]]:
    """Noise-aware training step: the batch runs on a freshly drawn chip instance.

    The model is quantized for the profile (cheap) to get the layer scales, one
    chip-instance seed is drawn from the epoch's generator, and
    :func:`~neurodeploy.noise.hardware.perturb_float_model` applies exactly the
    perturbation the emulator and Lava would see for that seed. Gradients of
    the perturbed copy are passed straight through to the model's parameters
    (:func:`straight_through_grads`). Dead/stuck neurons are also applied to
    the fixed-point network, so a chip instance the emulator could not run
    (a conv layer whose bias cannot provably silence or saturate a neuron)
    stops training with a :class:`RunError` instead of training on it.
    """
    from ..noise.hardware import HardwareNoiseError, perturb_float_model, perturb_network
    from ..quant import load_profile, quantize_model

    t = cfg.training
    quant = quantize_model(model, input_shape, load_profile(t.hardware_profile),
                           time_steps=cfg.data.time_steps or input_shape[0])
    chip = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    if t.hardware_noise in ("dead-neuron", "stuck-neuron"):
        try:
            perturb_network(quant.network, t.hardware_noise, t.hardware_noise_level, chip)
        except HardwareNoiseError as exc:
            raise RunError(f"{cfg.name}: training.hardware_noise={t.hardware_noise} at level "
                           f"{t.hardware_noise_level} cannot be applied to the fixed-point network "
                           f"(chip instance {chip}): {exc}") from None
    noisy = perturb_float_model(model, t.hardware_noise, t.hardware_noise_level, chip, quant)
    noisy.train(model.training)
    loss, terms = training_loss(noisy, cfg, x, y, g)
    if torch.isfinite(loss):
        loss.backward()
        straight_through_grads(model, noisy)
    return loss, terms


@torch.no_grad()
def epoch_diagnostics(model: SNNClassifier) -> dict[str, float]:
    """Per-epoch state of the parameters the MS-MPPD/weight-decay trade-off acts on.

    ``gain{i}_min``, ``gain{i}_mean``, ``gain{i}_max``: the DLIF gain p[t] of
    spiking layer ``i`` (index into ``model.spiking_layers()``; LIF layers have
    none). ``wnorm.<parameter name>``: the Frobenius norm of every weight
    (dense, conv, recurrent and BatchNorm scales). Without weight decay,
    W -> cW, p -> p/c leaves the network unchanged but shrinks the penalty
    (measured before p), so the two together show whether p absorbs it.
    """
    out: dict[str, float] = {}
    for i, layer in enumerate(model.spiking_layers()):
        if layer.gain is not None:
            g = layer.gain.detach().double()
            out.update({f"gain{i}_min": float(g.min()), f"gain{i}_mean": float(g.mean()),
                        f"gain{i}_max": float(g.max())})
    for name, param in model.named_parameters():
        if name.endswith("weight"):
            out[f"wnorm.{name}"] = float(param.detach().double().norm())
    return out


def _optimizer(model: torch.nn.Module, cfg: RunConfig) -> torch.optim.Optimizer:
    """SGD or Adam over *all* parameters with the config's weight decay.

    One parameter group on purpose: the reference decays every parameter,
    the DLIF gain p included, so p cannot absorb the MS-MPPD penalty for free.
    """
    t = cfg.training
    if t.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.SGD(model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay)


def _scheduler(opt: torch.optim.Optimizer, cfg: RunConfig, steps_per_epoch: int):
    total = max(cfg.training.epochs * steps_per_epoch, 1)
    if cfg.training.schedule == "cosine":
        # per-step cosine to 0, as the reference (cosine over all iterations)
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)


@dataclass
class TrainResult:
    """What a finished training run left behind."""

    out_dir: Path
    model: SNNClassifier
    data: DatasetSplit
    metrics: list[dict]


# --------------------------------------------------------------------------- run folders


def checkpoint_config(ckpt: dict, path: str | Path) -> RunConfig:
    """The run config a checkpoint (from :func:`load_checkpoint`) holds, validated.

    A config that fails validation is the config loader's one-line error,
    prefixed with ``path``; an epoch past the config's ``training.epochs`` is
    a :class:`CheckpointError`.
    """
    cfg = config_from_dict(ckpt["config"], f"{path}:config")
    if ckpt["epoch"] > cfg.training.epochs:
        raise CheckpointError(f"{path}: epoch {ckpt['epoch']} is past the config's training.epochs "
                              f"{cfg.training.epochs}; the checkpoint is inconsistent")
    return cfg


def load_model_state(model: torch.nn.Module, state: dict, where: str | Path) -> None:
    """``model.load_state_dict(state)`` after :func:`check_state_dict` (one line per mismatch, finite values)."""
    check_state_dict(model.state_dict(), state, str(where))
    model.load_state_dict(state)


def model_from_checkpoint(cfg: RunConfig, ckpt: dict, path: str | Path) -> SNNClassifier:
    """The model ``cfg`` builds for the checkpoint's sample shape and classes, with the checkpoint's weights.

    The model is first built on the meta device (no memory) and the state dict
    checked against it, so a config with huge layers that its weights do not
    match is refused before anything is allocated.
    """
    shape, n_classes = tuple(int(d) for d in ckpt["input_shape"]), int(ckpt["n_classes"])
    try:
        with torch.device("meta"):
            skeleton = build_model(cfg, shape, n_classes)
    except ModelBuildError as exc:
        raise CheckpointError(f"{path}: its config cannot be built for input_shape {list(shape)}: {exc}") from None
    check_state_dict(skeleton.state_dict(), ckpt["model"], f"{path}: model")
    model = build_model(cfg, shape, n_classes)
    model.load_state_dict(ckpt["model"])
    return model


def _same_value(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(b, (list, tuple)):
        return isinstance(a, (list, tuple)) and len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(b, (int, float)):
        return isinstance(a, (int, float)) and (a == b or (a != a and b != b))
    return type(a) is type(b) and a == b


def _record_difference(record: object, expected: dict, defaults: Optional[dict], prefix: str = ""
                       ) -> Optional[tuple[str, str, str]]:
    """The first dotted key where ``record`` differs from ``expected``: ``(key, record's, expected's)``.

    A key missing from the record is no difference when the expected value is
    the default (a record written before the key existed).
    """
    if not isinstance(record, dict):
        return prefix or "<top level>", bounded(record), "a mapping"
    for key in record:
        if key not in expected:
            return (f"{prefix}.{key}" if prefix else str(key)), bounded(record[key]), "no such key"
    for key, want in expected.items():
        where = f"{prefix}.{key}" if prefix else key
        default = defaults.get(key) if isinstance(defaults, dict) else None
        if key not in record:
            if isinstance(defaults, dict) and key in defaults and _same_value(want, default):
                continue
            return where, "missing", bounded(want)
        if isinstance(want, dict):
            found = _record_difference(record[key], want, default if isinstance(default, dict) else None, where)
            if found:
                return found
        elif not _same_value(record[key], want):
            return where, bounded(record[key]), bounded(want)
    return None


MAX_RECORD_BYTES = 1 << 20


def check_config_record(run_dir: str | Path, cfg: RunConfig) -> None:
    """Check the run folder's ``config.yaml`` against the checkpoint's config ``cfg``.

    ``config.yaml`` is a record, written by ``train`` from the checkpoint's
    config; it is never what a run uses. So that editing it never passes
    without a word, a record that differs is a :class:`RunError` naming the
    first differing key. No ``config.yaml`` is no error (nothing to contradict).
    """
    from ..yamlio import load_yaml

    path = Path(run_dir) / CONFIG_NAME
    if not os.path.lexists(path):
        return
    # hardened reading (regular file, size cap, UTF-8, no aliases, depth caps), one-line RunErrors
    record = load_yaml(path, f"run config record (of {CHECKPOINT_NAME}'s config; restore it or delete it)",
                       error=RunError, max_bytes=MAX_RECORD_BYTES)
    found = _record_difference(record, cfg.to_dict(), RunConfig().to_dict())
    if found:
        key, there, want = found
        if want == "no such key":
            what = f"{key} is {there} there but not a key of {CHECKPOINT_NAME}'s config"
        elif there == "missing":
            what = f"{key} is missing there but {want} in {CHECKPOINT_NAME}"
        else:
            what = f"{key} is {there} there but {want} in {CHECKPOINT_NAME}"
        raise RunError(f"{path}: {what}; config.yaml is only a "
                       f"record of the checkpoint's config, which the run uses: undo the edit (or delete the "
                       f"file), or train a new run folder with the changed config")


def load_run_checkpoint(run_dir: str | Path) -> tuple[RunConfig, dict]:
    """The validated checkpoint of a run folder and its config, checked against ``config.yaml``.

    Everything a command needs before it uses a run: :func:`load_checkpoint`
    (safe load, structure), :func:`checkpoint_config` and
    :func:`check_config_record`. The weights are checked against the config by
    :func:`model_from_checkpoint`.
    """
    run_dir = Path(run_dir)
    path = run_dir / CHECKPOINT_NAME
    ckpt = load_checkpoint(path)
    cfg = checkpoint_config(ckpt, path)
    check_config_record(run_dir, cfg)
    return cfg, ckpt


def load_run(run_dir: str | Path) -> tuple[RunConfig, SNNClassifier, dict]:
    """Rebuild the trained model of a run folder from its checkpoint (all of it checked first)."""
    cfg, ckpt = load_run_checkpoint(run_dir)
    model = model_from_checkpoint(cfg, ckpt, Path(run_dir) / CHECKPOINT_NAME)
    model.eval()
    return cfg, model, ckpt


def read_metrics(path: str | Path, epochs: int) -> list[dict]:
    """The records of the first ``epochs`` epochs in a run's ``metrics.jsonl``, checked.

    Line ``n`` must be a JSON object with ``"epoch": n`` and numbers as
    values. Lines after ``epochs`` belong to an epoch that crashed before its
    checkpoint was written (possibly cut short) and are not read. Any problem
    is a :class:`RunError` naming the file and the line.
    """
    path = Path(path)
    if epochs == 0:
        return []
    hint = "restore it, or train a new run folder"
    if not os.path.lexists(path):
        raise RunError(f"{path}: missing, but {CHECKPOINT_NAME} is at epoch {epochs}: the metrics of its epochs "
                       f"would be lost; {hint}")
    require_regular_file(path, "metrics file")
    records: list[dict] = []
    with open(path, "rb") as fh:
        for n in range(1, epochs + 1):
            raw = fh.readline()
            if not raw:
                raise RunError(f"{path}: {n - 1} epoch record(s), but {CHECKPOINT_NAME} is at epoch {epochs}; {hint}")
            where = f"{path}: line {n}"
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                raise RunError(f"{where}: not UTF-8 text; {hint}") from None
            except json.JSONDecodeError as exc:
                raise RunError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}; a truncated or edited "
                               f"line); {hint}") from None
            except (ValueError, RecursionError):
                raise RunError(f"{where}: not a JSON object neurodeploy writes (too deeply nested or a huge "
                               f"number); {hint}") from None
            if not isinstance(record, dict):
                raise RunError(f"{where}: {bounded(record)} is not an epoch record (a JSON object); {hint}")
            if not (type(record.get("epoch")) is int and record["epoch"] == n):
                raise RunError(f"{where}: epoch is {bounded(record.get('epoch'))}, expected {n}; {hint}")
            for key, value in record.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    raise RunError(f"{where}: {bounded(key)} is {bounded(value)}, expected a number; {hint}")
            records.append(record)
    return records


_OPT_STATE_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step")


def _fits(got: object, want: object, where: str) -> None:
    """``got`` (from a checkpoint) has the structure and types of ``want`` (a fresh state dict's)."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            raise CheckpointError(f"{where} is {bounded(got)}; expected a mapping")
        extra = [k for k in got if k not in want]
        if extra:
            raise CheckpointError(f"{where}: unexpected key {bounded(extra[0])}")
        for key in want:
            if key in got:
                _fits(got[key], want[key], f"{where}[{bounded(key)}]")
    elif isinstance(want, (list, tuple)):
        if not isinstance(got, (list, tuple)) or len(got) != len(want):
            raise CheckpointError(f"{where} is {bounded(got)}; expected {len(want)} item(s)")
        for i, (g, w) in enumerate(zip(got, want)):
            _fits(g, w, f"{where}[{i}]")
    elif isinstance(want, torch.Tensor):
        if not isinstance(got, torch.Tensor) or tuple(got.shape) != tuple(want.shape):
            raise CheckpointError(f"{where} is {bounded(got)}; expected a tensor of shape {tuple(want.shape)}")
        if got.is_floating_point() and not bool(torch.isfinite(got).all()):
            raise CheckpointError(f"{where} holds non-finite values")
    elif isinstance(want, bool) or want is None or isinstance(want, str):
        if type(got) is not type(want):
            raise CheckpointError(f"{where} is {bounded(got)}; expected {type(want).__name__}")
    elif isinstance(want, (int, float)):
        if isinstance(got, bool) or not isinstance(got, (int, float)) or not math.isfinite(got):
            raise CheckpointError(f"{where} is {bounded(got)}; expected a finite number")
    elif type(got) is not type(want):
        raise CheckpointError(f"{where} is {bounded(got)}; expected {type(want).__name__}")


def _restore_training_state(model: torch.nn.Module, opt: torch.optim.Optimizer, sched, state: dict,
                            path: Path) -> None:
    """Load the optimizer and scheduler states of a checkpoint being resumed, each checked first."""
    for key in ("optimizer", "scheduler"):
        if key not in state:
            raise CheckpointError(f"{path}: no {key} state, so the run cannot be resumed (it can still be "
                                  f"evaluated or quantized); train a new run folder to continue training")
    fresh, saved = opt.state_dict(), state["optimizer"]
    extra = [k for k in saved if k not in ("state", "param_groups")]
    if extra or "param_groups" not in saved:
        what = f"unexpected key {bounded(extra[0])}" if extra else "no param_groups"
        raise CheckpointError(f"{path}: optimizer: {what}; expected an optimizer state dict")
    _fits(saved["param_groups"], fresh["param_groups"], f"{path}: optimizer param_groups")
    groups = []
    for got, want in zip(saved["param_groups"], fresh["param_groups"]):
        if list(got.get("params", [])) != list(want["params"]):
            raise CheckpointError(f"{path}: optimizer: param_groups lists other parameters than the model has")
        groups.append({**want, **got})   # keys a newer torch added keep the config's values
    params = [p for group in opt.param_groups for p in group["params"]]
    opt_state = saved.get("state", {})
    if not isinstance(opt_state, dict):
        raise CheckpointError(f"{path}: optimizer state is {bounded(opt_state)}; expected a mapping")
    for index, entry in opt_state.items():
        where = f"{path}: optimizer state[{bounded(index)}]"
        if type(index) is not int or not 0 <= index < len(params) or not isinstance(entry, dict):
            raise CheckpointError(f"{where}: not the state of one of the model's {len(params)} parameters")
        for key, value in entry.items():
            if key not in _OPT_STATE_KEYS:
                raise CheckpointError(f"{where}: unknown entry {bounded(key)}")
            if value is None and key == "momentum_buffer":
                continue
            want = torch.zeros(()) if key == "step" else params[index].detach()
            _fits(value, want, f"{where}[{key!r}]")
    opt.load_state_dict({"state": opt_state, "param_groups": groups})
    _fits(state["scheduler"], sched.state_dict(), f"{path}: scheduler")
    sched.load_state_dict(state["scheduler"])


def train(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, force: bool = False,
          progress: bool = True, data: Optional[DatasetSplit] = None,
          log: Callable[[str], None] = print, stop_after: Optional[int] = None,
          extend_to: Optional[int] = None) -> TrainResult:
    """Train ``cfg`` into ``out_dir`` (config, per-epoch metrics, checkpoint).

    ``resume`` continues from the folder's last checkpoint (the folder's own
    config wins, except that ``extend_to`` raises its epoch count); otherwise
    a folder that already holds a checkpoint is an error unless ``force``.
    ``stop_after`` stops after that many epochs in total (the run stays
    resumable), e.g. to train in chunks.

    Each line of ``metrics.jsonl`` is one epoch: ``train_<term>`` (batch means
    of :func:`training_loss`'s terms; ``train_mppd`` is the MS-MPPD value V of
    the regularized layers under the training perturbation, logged whenever a
    perturbed pass exists, ``train_mppd_after_gain`` the same after p[t]),
    ``test_acc``, ``lr``, timings and :func:`epoch_diagnostics` (gain p per
    spiking layer, the norm of every weight) at the end of the epoch.

    Files: only ``checkpoint.pt``, ``metrics.jsonl`` and ``config.yaml``,
    directly inside ``out_dir``, each written atomically. ``config.yaml`` is
    a record of the checkpoint's config (resuming checks it:
    :func:`check_config_record`); a resumed run's ``metrics.jsonl`` is
    checked line by line (:func:`read_metrics`).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise RunError(f"{out}: exists and is not a folder; expected a run folder (or a new path for one)")
    # every file train writes is one of these three, directly inside `out`, written atomically
    # (temporary file beside it, then a rename; a symbolic link there is replaced, never followed)
    ckpt_path, metrics_path, record_path = out / CHECKPOINT_NAME, out / METRICS_NAME, out / CONFIG_NAME
    start_epoch = 0
    state = None
    if resume:
        if not os.path.lexists(ckpt_path):
            raise RunError(f"{out}: nothing to resume (no {CHECKPOINT_NAME}); drop --resume to start a new run")
        # the run folder's own config wins: the resumed run is the same run
        cfg, state = load_run_checkpoint(out)
        if extend_to is not None and extend_to > cfg.training.epochs:
            cfg.training.epochs = int(extend_to)  # the cosine schedule stretches over the new total
        start_epoch = int(state["epoch"])
    elif os.path.lexists(ckpt_path) and not force:
        raise RunError(f"{out}: already holds a trained run; use --resume to continue it or --force to overwrite")

    if cfg.training.hardware_noise is not None:
        # checked before any work (the config module cannot load profiles: it sits below the quantizer)
        from ..quant.profile import ProfileError, load_profile

        try:
            load_profile(cfg.training.hardware_profile)
        except ProfileError as exc:
            raise ConfigError(f"training.hardware_profile: {exc}") from None
    set_threads(cfg.threads)
    if data is None:
        data = load_dataset(cfg.data.dataset, seed=cfg.seed, data_dir=cfg.data.data_dir)
    if state is not None and tuple(state["input_shape"]) != tuple(data.input_shape):
        raise RunError(f"{ckpt_path}: trained on samples of shape {list(state['input_shape'])}, but data set "
                       f"{cfg.data.dataset!r} now has {list(data.input_shape)}; it cannot be resumed on it")
    torch.manual_seed(cfg.seed)  # parameter initialisation
    model = build_model(cfg, data.input_shape, data.n_classes)
    if state is None and cfg.model.init_current_std is not None:
        data_driven_init(model, torch.as_tensor(data.x_train[:256]), cfg.model.init_current_std)
    x_train = torch.as_tensor(data.x_train)
    y_train = torch.as_tensor(data.y_train)
    steps_per_epoch = math.ceil(len(x_train) / cfg.training.batch_size)
    opt = _optimizer(model, cfg)
    sched = _scheduler(opt, cfg, steps_per_epoch)
    if state is not None:
        load_model_state(model, state["model"], f"{ckpt_path}: model")
        _restore_training_state(model, opt, sched, state, ckpt_path)
        metrics = read_metrics(metrics_path, start_epoch)
    else:
        metrics = []
    try:
        out.mkdir(parents=True, exist_ok=True)  # only once data and model are known to work
    except OSError as exc:
        raise RunError(f"{out}: cannot create the run folder ({exc.strerror})") from None

    def write_record() -> None:
        with atomic_path(record_path) as tmp:
            dump_config(cfg, tmp)

    def write_metrics() -> None:
        write_text_atomic(metrics_path, "".join(json.dumps(m) + "\n" for m in metrics))

    record_written = False

    def save(epochs_done: int) -> None:
        nonlocal record_written
        save_checkpoint(ckpt_path, {
            "config": cfg.to_dict(), "epoch": epochs_done, "model": model.state_dict(),
            "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "input_shape": list(data.input_shape), "n_classes": data.n_classes,
        })
        if not record_written:
            # config.yaml records the checkpoint's config: rewritten right after the first checkpoint
            # of a resumed (extended) or overwritten run, so the two never disagree for an epoch
            write_record()
            record_written = True

    if not os.path.lexists(ckpt_path):
        write_record()   # a new run: its config is on record from the start
        record_written = True
    if state is not None or not os.path.lexists(ckpt_path):
        # rewrite the metrics file to exactly the completed epochs (drops lines of a crashed epoch);
        # a run being overwritten (--force) keeps its files until its first new epoch is saved
        write_metrics()

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[info]}")]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(f"train {cfg.name}", total=(cfg.training.epochs - start_epoch) * steps_per_epoch, info="")
        last_epoch = cfg.training.epochs if stop_after is None else min(stop_after, cfg.training.epochs)
        for epoch in range(start_epoch, last_epoch):
            g = epoch_generator(cfg.seed, epoch)
            model.train()
            _set_encoder_generator(model, g)
            perm = torch.randperm(len(x_train), generator=g)
            sums: dict[str, float] = {}
            seen = 0
            t0 = time.perf_counter()
            for b in range(steps_per_epoch):
                idx = perm[b * cfg.training.batch_size:(b + 1) * cfg.training.batch_size]
                xb, yb = random_shift(x_train[idx], cfg.training.augment_shift, g), y_train[idx]
                opt.zero_grad(set_to_none=True)
                if cfg.training.hardware_noise:
                    loss, terms = _chip_noise_step(model, cfg, xb, yb, g, data.input_shape)
                else:
                    loss, terms = training_loss(model, cfg, xb, yb, g)
                    if torch.isfinite(loss):
                        loss.backward()
                if not torch.isfinite(loss):
                    raise RunError(f"{cfg.name}: loss became {float(loss)} at epoch {epoch + 1}, batch {b + 1}; "
                                   f"lower training.lr or the regularizer weight")
                if cfg.training.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.training.grad_clip)
                opt.step()
                snn_rat_step(model, cfg.regularizer.rat_beta)
                sched.step()
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + v * len(idx)
                seen += len(idx)
                bar.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.training.epochs} loss {terms['loss']:.3f}")
            train_time = time.perf_counter() - t0
            logits = predict(model, data.x_test, generator=epoch_generator(cfg.seed, -1))
            record = {"epoch": epoch + 1, **{f"train_{k}": v / seen for k, v in sums.items()},
                      "test_acc": accuracy(logits, data.y_test), "lr": opt.param_groups[0]["lr"],
                      "train_seconds": train_time, "train_samples_per_s": seen / train_time,
                      **epoch_diagnostics(model)}
            metrics.append(record)
            write_metrics()   # before the checkpoint: a crash in between leaves a line resume drops
            save(epoch + 1)
            if not progress:
                log(f"epoch {epoch + 1}/{cfg.training.epochs}: loss {record['train_loss']:.4f} "
                    f"test acc {record['test_acc']:.4f}")
    if state is None and cfg.training.epochs == 0:
        write_metrics()
        save(0)  # an untrained run is still a run (useful for tests and export checks)
    model.eval()
    return TrainResult(out, model, data, metrics)
