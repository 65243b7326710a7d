"""Noise models: seeded input corruptions, the noise vocabulary and network (hardware) noise.

* :mod:`.input_noise`: Gaussian, uniform, salt-and-pepper on samples;
* :mod:`.specs`: every noise name, its kind (input / network / step), level
  meaning and range, the ``NAME:LEVELS`` parser and profile defaults;
* :mod:`.hardware`: network noises as pure seeded transforms of the IR and of
  the float model, with one shared draw protocol; per-step noises
  (:class:`StepNoise`) for the backends' ``step_noise=`` and the float model.
  It documents the semantics and re-exports :mod:`.draws` (the seeded draws),
  :mod:`.ir_transforms` (:func:`perturb_network`), :mod:`.torch_transforms`
  (:func:`perturb_float_model`, :func:`float_step_noise_model`) and :mod:`.step`
  (:class:`StepNoise`, :func:`fixed_step_noise`).
"""

from .input_noise import (
    INPUT_NOISES,
    apply_input_noise,
    gaussian_noise,
    salt_pepper_noise,
    uniform_noise,
)
from .specs import (
    NETWORK_NOISE_NAMES,
    NOISES,
    STEP_NOISE_NAMES,
    NoiseProfileError,
    NoiseSpec,
    NoiseSpecError,
    NoiseType,
    noise_from_profile,
    parse_noise_spec,
    resolve_noise_specs,
)
from .hardware import (
    HardwareNoiseError,
    StepNoise,
    draw_network_noise,
    fixed_step_noise,
    float_step_noise_model,
    perturb_float_model,
    perturb_network,
)

__all__ = [
    "gaussian_noise",
    "uniform_noise",
    "salt_pepper_noise",
    "INPUT_NOISES",
    "apply_input_noise",
    "NOISES",
    "NETWORK_NOISE_NAMES",
    "STEP_NOISE_NAMES",
    "NoiseType",
    "NoiseSpec",
    "NoiseSpecError",
    "NoiseProfileError",
    "parse_noise_spec",
    "noise_from_profile",
    "resolve_noise_specs",
    "HardwareNoiseError",
    "draw_network_noise",
    "perturb_network",
    "perturb_float_model",
    "StepNoise",
    "fixed_step_noise",
    "float_step_noise_model",
]
