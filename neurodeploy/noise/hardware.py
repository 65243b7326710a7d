"""Network (hardware) noise: seeded transforms of the deployed network and of the float model.

This module documents the noise models and re-exports their implementation:

* :mod:`.draws`: the seeded random draws both sides share
  (:func:`draw_network_noise`, :func:`step_noise_draws`);
* :mod:`.ir_transforms`: network noises on the IR (:func:`perturb_network`);
* :mod:`.torch_transforms`: the float model's mirrors (:func:`perturb_float_model`,
  :func:`float_step_noise_model`, :class:`FloatStepNoise`);
* :mod:`.step`: the step noises (:class:`StepNoise`, :func:`fixed_step_noise`),
  what the backends' ``step_noise=`` takes.

One semantics, implemented once on the IR (:func:`perturb_network`), so the
emulator and Lava run the *identical* perturbed :class:`~neurodeploy.ir.Network`
(both backends reproduce Lava's ``fixed_pt`` arithmetic bit for bit), and
mirrored on the float model (:func:`perturb_float_model`) with the *same random
draws*.

Shared draw protocol
--------------------
``rng = numpy.random.default_rng(seed)``; layers are visited in IR order
(= the deployable layer order of the float model, one spiking population per
layer, then a linear readout's integrator layer) and every layer draws,
whatever the level (common random numbers: the perturbation grows smoothly
with the level and level 0 is the clean network); a potential readout's
integrator layer (the last) draws for the weight noises only (see "Linear
readout" below):

===================== ====================================================================
noise                 draws per layer, in this order
===================== ====================================================================
weight-mismatch       ``z = rng.standard_normal(weight.shape)``, then, for a recurrent
                      layer, ``z_rec = rng.standard_normal(weight_rec.shape)``
bit-flip              ``u = rng.random(weight.shape + (num_weight_bits,))`` (bit b of
                      the mantissa flips where ``u[..., b] < level``), then ``u_rec``
dead-neuron,          ``perm = rng.permutation(n_neurons)``; the chosen neurons are
stuck-neuron          ``sorted(perm[:round(level * n_neurons)])`` (nested over levels)
threshold-mismatch    ``z = rng.standard_normal()`` (one factor per population)
===================== ====================================================================

:func:`draw_network_noise` returns exactly these draws; both sides use it.

Semantics
---------
* ``weight-mismatch`` (level = relative std ``s``): device mismatch of the
  synaptic weights, fixed per chip instance (the seed). IR: the effective
  mantissas (what Lava's Dense uses after its clip/truncation) become
  ``w * (1 + s*z)``, rounded to the nearest representable mantissa (multiples
  of ``2**(8 - num_weight_bits + mixed)``; mixed 8-bit: even numbers) and
  clipped to the sign mode's range (mixed ``[-256, 255 & ~(step-1)]``,
  excitatory ``[0, ...]``, inhibitory ``[..., 0]``). Float: the weights are
  multiplied by the same factors ``1 + s*z`` (no re-quantization).
* ``bit-flip`` (level = bit error rate): each weight is stored as an
  ``num_weight_bits``-wide mantissa ``m = |w| >> k`` (excitatory/inhibitory,
  unsigned) or ``w >> k`` (mixed, two's complement), ``k = 8 - bits + mixed``;
  each bit flips independently with probability ``level``; the weight becomes
  ``m' << k`` (with the sign mode's sign), always a value Lava keeps unchanged.
  Float: a weight whose mantissa changed takes the float value of the flipped
  mantissa, ``w' * 2**(weight_exp + 6) / scale`` (divided by the folded DLIF
  gain, times the input scale for the first, graded layer; needs the
  :class:`~neurodeploy.quant.quantizer.QuantizationResult`); the others keep
  their float values.
* ``dead-neuron`` (level = fraction per layer): the chosen neurons never spike.
  IR: dense (and recurrent) layers get the neuron's incoming weight rows
  (feed-forward and recurrent) zeroed and its bias set to 0, so ``u`` and ``v``
  stay exactly 0 and ``v > vth << 6`` never holds (``vth >= 0``). Conv
  neurons share their kernel, so their weights cannot be zeroed per neuron:
  they get a bias that is *provably* enough: with ``-N <= u <= P`` bounds of
  the current (every positive / negative weight's input at its maximum at
  every step, times ``4096 / (du + 1)``; see ``_drive_bound`` for the 24-bit
  wrap case), ``bias <= -P`` keeps ``v <= 0`` at every step (decays round
  toward zero).
* ``stuck-neuron`` (level = fraction per layer): the chosen neurons spike at
  every step, the first included. Lava's order is ``v = decay(v) + u + bias``,
  spike where ``v > vth << 6``, then ``v = 0``: after a spike (and at the first
  step) ``v = u + bias``. IR: incoming rows zeroed as above (``u = 0``) and the
  smallest bias with ``bias > (vth << 6) + N`` (``N = 0`` for dense, the bound
  above for conv), so ``v > vth << 6`` at every step.

  Both: the layer keeps its bias exponent where the int16 mantissa reaches the
  bias needed; otherwise it takes the smallest larger exponent (up to 16) at
  which every other neuron keeps its bias exactly (always so for the default
  bias-free layers). A fault model needs only what Lava's fixed-point CPU
  models (and the emulator) compute exactly, int32 sums included, not the
  chip's 13-bit/3-bit bias fields. :class:`HardwareNoiseError` names the layer
  where no exponent does it. Float (every layer kind): forward hooks force the
  chosen neurons' spikes to 0 or 1 at every step, where they leave the layer
  and, for a recurrent layer, where they are fed back (from the second step
  on: the first feeds the initial zeros, as on the chip); the float model's
  parameters are untouched, so a gradient computed on the perturbed copy
  belongs to the same named parameters (straight-through training, see
  :func:`perturb_float_model`).
* ``threshold-mismatch`` (level = relative std ``s``): the threshold of each
  *population* becomes ``vth * (1 + s*z)``, rounded and clipped to
  ``[1, 2**17 - 1]`` (a threshold of 0 stays 0). Per population, not per neuron: the IR and Lava's LIF
  hold one ``vth`` per population (a ``Var`` of shape ``(1,)``); per-neuron
  thresholds need an IR and backend extension (part 2). Float: the layer's
  threshold is scaled by the same factor, ``theta * vth' / vth`` (so the float
  threshold moves exactly as the rounded fixed-point one).

Linear readout (``Network.readout == "potential"``)
---------------------------------------------------
A ``model.readout: linear`` model deploys its readout Linear as an extra,
last IR layer of non-spiking integrators (du 4095, dv 0, vth at the maximum;
the class is the argmax of its final v; :func:`readout_index`). Decision:

* ``weight-mismatch`` and ``bit-flip`` perturb its weights too: on the chip the
  readout synapses are ordinary synapses. IR: exactly as for any layer (the
  noises act on the mantissas; the layer's ``weight_exp``, possibly negative,
  is untouched). Float: the readout Linear's weights (``_readout_layer``) get
  the same factors / flipped mantissas, a mantissa unit being ``2**(weight_exp
  + 6) / scale`` with the readout layer's scale from the quantization report
  (no gain; times the input scale when it reads the graded input directly).
  The quantizer's worst-case bound on ``|v|`` holds for the clean weights; a
  perturbed readout could in principle exceed it (v clips or spikes), which the
  emulator and Lava reproduce alike (a worst case far above any real input).
* ``dead-neuron``, ``stuck-neuron``, ``threshold-mismatch`` and ``spike-drop``
  act on spiking populations only: the integrator has no spikes to kill,
  force or drop, and its threshold must stay at the maximum (a lower one would
  make it spike and reset). The last hidden layer's spikes *are* dropped on
  their way to the readout (they reach a synapse).
* ``current-noise`` and ``membrane-noise`` act on spiking populations only,
  too, in the float model, the emulator and Lava alike. Their level is a
  fraction of the population's threshold, and the integrator has none: its
  ``vth`` is the profile's maximum only to keep it from spiking, so ``level *
  vth`` would be a per-step noise of ``level`` times the whole 24-bit range of
  v (it would dwarf the readout's signal, clip v and make it spike), with no
  float counterpart. A readout noise needs its own reference amplitude (an
  extension; not modelled).

The integrator sums all ``P = T + L`` simulated steps, the float readout the
``T`` aligned ones: spikes a hidden layer sends outside its aligned window add
to v and not to the float logits (as the quantizer notes for bias-driven
spikes); notably a stuck neuron of the last hidden layer puts ``P - 1`` spikes
into v, ``T`` into the float logits. Weight mismatch clips on the chip, not in
float (as for every layer), which matters more for a readout whose mantissas
fill the range.

Step noises (drawn anew at every simulated step)
------------------------------------------------
``spike-drop``, ``current-noise`` and ``membrane-noise`` are a
:class:`StepNoise` ``(name, level, seed)`` passed to a backend
(``run_network(..., step_noise=StepNoise(...), sample_ids=...)``) or attached
to the float model (:func:`float_step_noise_model`). Draws:
:func:`step_noise_draws`, one generator per data-set sample
(``default_rng([seed, crc32(name), layer, sample])``), one row of ``n`` per
simulated step ``s = 0 .. T + latency - 1``, so batching (the emulator's
batches, Lava's one sample at a time) never changes the numbers; integers:
:func:`step_noise_integers`. Level 0 adds nothing anywhere (the clean result
exactly); spike-drop is nested over levels (dropped where ``u < level``).

Where the noise enters Lava's step order (PyLifResetModelBitAcc: receive
``a_in``; ``u = wrap24(decay(u) + (a_in << 6))``; ``v = clip24(decay(v) + u +
bias)``; spike where ``v > vth << 6``; ``v = 0`` there; send):

* ``current-noise``: integers ``rint(level * vth * z)`` join the synaptic input
  ``a_in`` of step ``s`` (the InPort's int32 sum of feed-forward, recurrent and
  noise inputs), so ``u`` gets about ``level * (vth << 6) * z``. Lava: a stock
  ``RingBuffer`` (fixed_pt) playing the integers into ``LIF.a_in``.
* ``membrane-noise``: integers ``rint(level * (vth << 6) * z)`` join the int32
  sum for ``v`` of step ``s``, ``v = clip24(decay(v) + u + bias + noise)``,
  before the threshold comparison. Lava: ``LIFResetVNoise``, whose fixed-point
  model is Lava's ``PyLifResetModelBitAcc`` with the step's noise added to the
  bias term (noise on ``v`` cannot come from outside: ``u`` carries memory).
* ``spike-drop``: a spike of population ``l`` emitted at step ``s`` is lost
  where its U[0,1) draw is below ``level`` (keep mask ``draw >= level``): it reaches no
  synapse (neither the next layer's nor the layer's own recurrent one); the
  neuron still spikes and resets, and the readout, spike counts and recorded
  spikes are the neurons' own. The readout layer's spikes are never dropped
  (only its recurrent copy, if any). Lava: ``SpikeDrop`` between ``LIF.s_out``
  and the synapses it feeds.

Timing: every noise process receives and sends within the same step (as the
LIF does), so none adds delay: the emulator and Lava keep the timing of
:mod:`neurodeploy.backends.base`, noise row ``s`` acting at simulated step
``s``. The float model's step ``t`` of layer ``l`` is simulated step
``t + l + 1`` (:func:`float_step_rows`); the float model adds ``level *
threshold * z`` to the (gain-scaled) input current of the step (box (D)LIF:
the same as adding it to ``v``; CUBA: current noise enters ``i``, membrane
noise ``v``) and multiplies the spikes leaving a layer by the same keep masks
(:class:`FloatStepNoise`). The float and fixed-point networks agree only as
far as quantization lets them; the *draws* are identical.

Every function returns a new object and never mutates its input; level 0
returns an identical copy. Noises compose (apply one after the other); the
perturbed network lists what was applied in ``metadata["noise"]``.
"""

from __future__ import annotations

from .draws import (
    WEIGHT_NOISES,
    HardwareNoiseError,
    LayerDraws,
    chosen_neurons,
    draw_network_noise,
    float_step_rows,
    readout_index,
    spiking_layer_indices,
    step_noise_draws,
)
from .ir_transforms import _flip_weights, _mismatch_weights, perturb_network, weight_grid  # noqa: F401
from .step import StepNoise, fixed_step_noise, step_noise_integers, step_noise_layers
from .torch_transforms import FloatStepNoise, float_step_noise_model, perturb_float_model

__all__ = [
    "HardwareNoiseError",
    "LayerDraws",
    "draw_network_noise",
    "weight_grid",
    "perturb_network",
    "perturb_float_model",
    "chosen_neurons",
    "readout_index",
    "spiking_layer_indices",
    "step_noise_draws",
    "float_step_rows",
    "step_noise_integers",
    "StepNoise",
    "step_noise_layers",
    "fixed_step_noise",
    "FloatStepNoise",
    "float_step_noise_model",
    "WEIGHT_NOISES",
]
