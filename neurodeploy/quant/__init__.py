"""Quantization to Loihi-style fixed point for a hardware profile."""

from .profile import HardwareProfile, ProfileError, load_profile
from .quantizer import QuantizationError, QuantizationResult, check_resources, quantize_graph, quantize_model

__all__ = [
    "HardwareProfile",
    "ProfileError",
    "load_profile",
    "QuantizationError",
    "QuantizationResult",
    "check_resources",
    "quantize_graph",
    "quantize_model",
]
