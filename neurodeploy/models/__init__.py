"""Network builders: MLP, VGG-style conv net and recurrent SNN from a config."""

from .builders import ModelBuildError, SNNClassifier, TimeFolded, build_model

__all__ = ["ModelBuildError", "SNNClassifier", "TimeFolded", "build_model"]
