"""Network builders: MLP, VGG-style conv net and recurrent SNN from a config."""

from .builders import SNNClassifier, TimeFolded, build_model

__all__ = ["SNNClassifier", "TimeFolded", "build_model"]
