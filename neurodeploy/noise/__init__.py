"""Input-noise corruptions (Gaussian, uniform, salt-and-pepper), all seeded."""

from .input_noise import (
    INPUT_NOISES,
    apply_input_noise,
    gaussian_noise,
    salt_pepper_noise,
    uniform_noise,
)

__all__ = [
    "gaussian_noise",
    "uniform_noise",
    "salt_pepper_noise",
    "INPUT_NOISES",
    "apply_input_noise",
]
