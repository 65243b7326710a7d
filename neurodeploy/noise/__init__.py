"""Noise models: seeded input corruptions, the noise vocabulary and network (hardware) noise.

* :mod:`.input_noise`: Gaussian, uniform, salt-and-pepper on samples;
* :mod:`.vocabulary`: every noise name, its kind (input / network / step), level
  meaning and range, the ``NAME:LEVELS`` parser (no profile, no model: the
  profile loader and the config checks read it);
* :mod:`.specs`: the vocabulary plus the profile defaults
  (:func:`~.specs.noise_from_profile`, :func:`~.specs.resolve_noise_specs`,
  :class:`~.specs.NoiseProfileError`);
* :mod:`.hardware`: network noises as pure seeded transforms of the IR and of
  the float model, with one shared draw protocol; per-step noises
  (:class:`~.step.StepNoise`) for the backends' ``step_noise=`` and the float model.
  It documents the semantics and re-exports :mod:`.draws` (the seeded draws),
  :mod:`.ir_transforms` (:func:`~.ir_transforms.perturb_network`), :mod:`.torch_transforms`
  (:func:`~.torch_transforms.perturb_float_model`, :func:`~.torch_transforms.float_step_noise_model`)
  and :mod:`.step` (:class:`~.step.StepNoise`, :func:`~.step.fixed_step_noise`).

The package itself exports the input noises and the vocabulary only: the
profile defaults and the noise models sit above the hardware profile and the
quantizer (which read the vocabulary), so importing them here would make the
package import itself back; take them from :mod:`.specs` and :mod:`.hardware`.
"""

from .input_noise import (
    INPUT_NOISES,
    apply_input_noise,
    gaussian_noise,
    salt_pepper_noise,
    uniform_noise,
)
from .vocabulary import (
    NETWORK_NOISE_NAMES,
    NOISES,
    STEP_NOISE_NAMES,
    NoiseSpec,
    NoiseSpecError,
    NoiseType,
    parse_noise_spec,
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
    "parse_noise_spec",
]
