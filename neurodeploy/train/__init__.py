"""Training: losses, perturbation regularizers, checkpoints and the loop."""

from .checkpoint import CheckpointError, check_state_dict, load_checkpoint, save_checkpoint
from .loop import (RunError, TrainResult, accuracy, check_config_record, checkpoint_config, load_model_state,
                   load_run, load_run_checkpoint, model_from_checkpoint, predict, read_metrics, train)
from .regularizers import bound_penalty, mppd_penalty, perturbation_dynamics, snn_rat_step

__all__ = [
    "CheckpointError",
    "check_state_dict",
    "load_checkpoint",
    "save_checkpoint",
    "RunError",
    "TrainResult",
    "accuracy",
    "check_config_record",
    "checkpoint_config",
    "load_model_state",
    "load_run",
    "load_run_checkpoint",
    "model_from_checkpoint",
    "predict",
    "read_metrics",
    "train",
    "bound_penalty",
    "mppd_penalty",
    "perturbation_dynamics",
    "snn_rat_step",
]
