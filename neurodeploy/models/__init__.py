"""Network builders (MLP, VGG-style conv net, recurrent SNN from a config) and the one walk over a model's
body (:mod:`neurodeploy.models.walk`: its layers and its :class:`~neurodeploy.graph.FloatGraph`)."""

from .builders import ModelBuildError, SNNClassifier, TimeFolded, build_model
from .walk import graph_from_model, model_layers

__all__ = ["ModelBuildError", "SNNClassifier", "TimeFolded", "build_model", "graph_from_model", "model_layers"]
