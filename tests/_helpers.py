"""Small shared builders for the tests."""

import torch

from neurodeploy.config import config_from_dict
from neurodeploy.models import build_model
from neurodeploy.quant import load_profile, quantize_model


def small_quantized_model(arch="mlp", hidden=(6,), **over):
    """A tiny float model (digits MLP/conv, or a CUBA SRNN on vowels) and its loihi2 quantization."""
    data = {"dataset": "digits", "time_steps": 4}
    model = {"arch": arch, "hidden": list(hidden), "bias": True, "neuron": {"type": "dlif"}, **over}
    if arch == "srnn":
        data = {"dataset": "vowels", "encoder": "temporal", "time_steps": None}
        model["neuron"] = {"type": "cuba-lif", "current_leak": 0.75}
    cfg = config_from_dict({"data": data, "model": model})
    torch.manual_seed(0)
    shape = (25, 12) if arch == "srnn" else (1, 8, 8)
    m = build_model(cfg, shape, 3)
    # these small models keep their synapse biases to exercise the bias path; on CUBA layers that is
    # Loihi's approximation (bias on v, not on the current), so they opt into it explicitly
    res = quantize_model(m, shape, load_profile("loihi2"), time_steps=25 if arch == "srnn" else 4,
                         cuba_bias="approximate")
    return m, res, shape


def require_module(name: str, reason: str):
    """Import ``name``; skip the test when it is missing, except under CI (``CI=true``), where it fails.

    The README's test command installs every optional extra, so in CI a
    missing package is a broken environment, not a reason to skip.
    """
    import importlib
    import os

    import pytest

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        return importlib.import_module(name)
    return pytest.importorskip(name, reason=reason)
