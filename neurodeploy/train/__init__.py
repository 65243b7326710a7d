"""Training: losses, perturbation regularizers, checkpoints and the loop."""

from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .loop import RunError, TrainResult, accuracy, load_run, predict, train
from .regularizers import bound_penalty, mppd_penalty, perturbation_dynamics, snn_rat_step

__all__ = [
    "CheckpointError",
    "load_checkpoint",
    "save_checkpoint",
    "RunError",
    "TrainResult",
    "accuracy",
    "load_run",
    "predict",
    "train",
    "bound_penalty",
    "mppd_penalty",
    "perturbation_dynamics",
    "snn_rat_step",
]
