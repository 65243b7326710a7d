"""Hardware noise on linear-readout models (``model.readout: linear`` -> a potential readout).

The readout Linear is the IR's last layer, a population of non-spiking
integrators. Weight noises (weight-mismatch, bit-flip) perturb its synapses,
in the IR and identically in the float Linear; the neuron noises (dead, stuck,
threshold mismatch) and the step noises (spike-drop, current and membrane
noise) act on the spiking populations only, on every side (see the module
docstring of neurodeploy.noise.hardware). Every noise runs through the
robustness sweep on float, emulator and Lava, the emulator and Lava bit for bit.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch

from _helpers import small_quantized_model

from neurodeploy.backends import check_network, run_network
from neurodeploy.config import config_from_dict
from neurodeploy.evaluate.inputs import chip_inputs, float_run
from neurodeploy.evaluate.robustness import noise_seed, sweep
from neurodeploy.models import build_model
from neurodeploy.noise import NETWORK_NOISE_NAMES, STEP_NOISE_NAMES
from neurodeploy.noise.hardware import (
    FloatStepNoise,
    HardwareNoiseError,
    StepNoise,
    _flip_weights,
    draw_network_noise,
    fixed_step_noise,
    float_step_noise_model,
    perturb_float_model,
    perturb_network,
    readout_index,
    spiking_layer_indices,
    step_noise_layers,
    weight_grid,
)
from neurodeploy.noise.specs import NoiseSpec
from neurodeploy.quant import load_profile, quantize_model
from neurodeploy.quant.quantizer import _readout_layer

T = 4
LEVELS = {"weight-mismatch": 0.2, "bit-flip": 0.03, "dead-neuron": 0.2, "stuck-neuron": 0.1,
          "threshold-mismatch": 0.2, "spike-drop": 0.2, "current-noise": 0.2, "membrane-noise": 0.2}


def _linear_model(hidden=(16, 12), gain=2.0):
    """Digits MLP with a linear readout, livelier than torch's init (spikes in every layer), and its quantization."""
    cfg = config_from_dict({"data": {"dataset": "digits", "time_steps": T},
                            "model": {"arch": "mlp", "hidden": list(hidden), "bias": True, "readout": "linear",
                                      "neuron": {"type": "dlif"}}})
    torch.manual_seed(0)
    model = build_model(cfg, (1, 8, 8), 3).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.weight.mul_(gain)
        # centre the logits on test digits, so the untrained model predicts every class (agreement means more)
        x = torch.as_tensor(_digits()[0][:200])
        model.body[-1].bias.sub_(model(x).mean(0))
    return model, quantize_model(model, (1, 8, 8), load_profile("loihi2"), time_steps=T)


@functools.lru_cache(maxsize=None)
def _digits():
    from neurodeploy.data import load_dataset

    data = load_dataset("digits", seed=0)
    return data.x_test, data.y_test


@functools.lru_cache(maxsize=None)
def _setup():
    model, res = _linear_model()
    xs, ys = _digits()
    return model, res, torch.as_tensor(xs[:40]), torch.as_tensor(ys[:40])


@functools.lru_cache(maxsize=None)
def _clean_rows():
    model, res, x, y = _setup()
    rows = sweep(model, x, y, [NoiseSpec("gaussian", (0.0,))], 1, 0, ("float", "emulator", "lava"), res,
                 lava_samples=2)
    return {r["backend"]: r for r in rows}


def test_the_model_has_a_potential_readout_and_active_hidden_layers():
    model, res, x, _ = _setup()
    net = res.network
    assert net.readout == "potential" and len(net.layers) == 3
    assert readout_index(net) == 2 and spiking_layer_indices(net) == [0, 1]
    emu = run_network(net, chip_inputs(model, net, x).values)
    assert np.all(emu.spike_counts[:, :2].sum(0) > 0) and emu.spike_counts[:, 2].sum() == 0
    assert len(np.unique(emu.predictions())) == 3


# --------------------------------------------------------------------------- the sweep, every noise
@pytest.mark.parametrize("name", list(NETWORK_NOISE_NAMES) + list(STEP_NOISE_NAMES))
def test_sweep_every_hardware_noise_on_a_linear_readout(name):
    model, res, x, y = _setup()
    rows = sweep(model, x, y, [NoiseSpec(name, (0.0, LEVELS[name]))], 1, 0, ("float", "emulator", "lava"), res,
                 lava_samples=2)
    assert {(r["backend"], r["level"]) for r in rows} == {(b, lv) for b in ("float", "emulator", "lava")
                                                          for lv in (0.0, LEVELS[name])}
    clean = _clean_rows()
    for r in rows:
        if r["backend"] == "lava":
            assert r["emulator_identical_spikes"] == 1.0 and r["first_difference"] is None, (name, r)
        if r["level"] == 0:   # computed afresh (the sweep's cache is per call): level 0 is the clean network
            ref = clean[r["backend"]]
            assert {k: v for k, v in r.items() if k != "noise"} == {k: v for k, v in ref.items() if k != "noise"}
    noisy = {r["backend"]: r for r in rows if r["level"] > 0}
    assert noisy["emulator"]["spikes_per_sample"] != clean["emulator"]["spikes_per_sample"], \
        f"{name} at {LEVELS[name]} must change the network's activity"


# --------------------------------------------------------------------------- float == fixed point
def _unit(res, i):
    rep = res.layers[i]
    assert rep.gain_mean is None
    return 2.0 ** (res.network.layers[i].weight_exp + 6) / rep.scale


def test_weight_mismatch_perturbs_the_readout_weights_identically():
    model, res, _, _ = _setup()
    net, r, s = res.network, readout_index(res.network), LEVELS["weight-mismatch"]
    seed = noise_seed(0, "weight-mismatch", 0)
    z = draw_network_noise(net, "weight-mismatch", seed)[r].weight
    pnet = perturb_network(net, "weight-mismatch", s, seed)
    check_network(pnet)
    pmodel = perturb_float_model(model, "weight-mismatch", s, seed, res)
    w0 = _readout_layer(model)["weight"].detach().double().numpy()
    w1 = _readout_layer(pmodel)["weight"].detach().double().numpy()
    np.testing.assert_allclose(w1, w0 * (1 + s * z), rtol=1e-6, atol=1e-7)     # float: the same factors
    q0, q1 = net.layers[r].weight, pnet.layers[r].weight
    assert not np.array_equal(q0, q1)
    lo, hi, step = weight_grid(net.layers[r].sign_mode, net.layers[r].num_weight_bits)
    np.testing.assert_array_equal(q1, np.clip(step * np.rint(q0 * (1 + s * z) / step), lo, hi))
    # dequantized: within the rounding of the clean and of the perturbed mantissa (where not clipped)
    unit = _unit(res, r)
    inside = (q1 > lo) & (q1 < hi)
    assert inside.mean() > 0.8
    err = np.abs(q1 * unit - w1)[inside]
    assert np.all(err <= (step / 2) * unit * (1 + np.abs(1 + s * z)[inside]) + 1e-9)
    # the rest of the readout is untouched, and so are its neurons
    assert pnet.layers[r].weight_exp == net.layers[r].weight_exp
    np.testing.assert_array_equal(pnet.layers[r].neurons.bias_mant, net.layers[r].neurons.bias_mant)
    assert pnet.layers[r].neurons.vth == net.layers[r].neurons.vth


def test_bit_flip_flips_the_readout_mantissas_in_float_too():
    model, res, _, _ = _setup()
    net, r, level = res.network, readout_index(res.network), 0.05
    layer = net.layers[r]
    u = draw_network_noise(net, "bit-flip", 7)[r].weight
    flipped = _flip_weights(layer.weight, u, level, layer.sign_mode, layer.num_weight_bits)
    pnet = perturb_network(net, "bit-flip", level, 7)
    check_network(pnet)
    np.testing.assert_array_equal(pnet.layers[r].weight, flipped)
    changed = flipped != layer.weight
    assert changed.any() and not changed.all()
    w0 = _readout_layer(model)["weight"].detach().double().numpy()
    w1 = _readout_layer(perturb_float_model(model, "bit-flip", level, 7, res))["weight"].detach().double().numpy()
    np.testing.assert_allclose(w1[changed], flipped[changed] * _unit(res, r), rtol=1e-6)
    np.testing.assert_array_equal(w1[~changed], w0[~changed])


def test_readout_reading_the_graded_input_scales_bit_flips_by_the_input_scale():
    """hidden: [] -- the readout is layer 0 and reads round(255 x): a mantissa unit is 255 times larger."""
    model, res = _linear_model(hidden=())
    net = res.network
    assert len(net.layers) == 1 and readout_index(net) == 0 and spiking_layer_indices(net) == []
    layer = net.layers[0]
    flipped = perturb_network(net, "bit-flip", 0.05, 3).layers[0].weight
    changed = flipped != layer.weight
    assert changed.any()
    w1 = _readout_layer(perturb_float_model(model, "bit-flip", 0.05, 3, res))["weight"].detach().double().numpy()
    np.testing.assert_allclose(w1[changed], flipped[changed] * _unit(res, 0) * net.input_encoding.scale, rtol=1e-6)


@pytest.mark.parametrize("name", ["dead-neuron", "stuck-neuron", "threshold-mismatch"])
def test_neuron_noises_leave_the_integrator_readout_alone(name):
    model, res, _, _ = _setup()
    net, r = res.network, readout_index(res.network)
    draws = draw_network_noise(net, name, 5)
    assert draws[r].neurons is None and draws[r].factor is None      # the readout draws nothing
    pnet = perturb_network(net, name, 0.5, 5)
    check_network(pnet)
    a, b = net.layers[r], pnet.layers[r]
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.neurons.bias_mant, b.neurons.bias_mant)
    assert (a.neurons.bias_exp, a.neurons.vth) == (b.neurons.bias_exp, b.neurons.vth)
    assert any(not np.array_equal(net.layers[i].weight, pnet.layers[i].weight)
               or net.layers[i].neurons.vth != pnet.layers[i].neurons.vth
               or not np.array_equal(net.layers[i].neurons.bias_mant, pnet.layers[i].neurons.bias_mant)
               for i in spiking_layer_indices(net)), "the spiking layers must be perturbed"
    pmodel = perturb_float_model(model, name, 0.5, 5, res)
    torch.testing.assert_close(_readout_layer(pmodel)["weight"], _readout_layer(model)["weight"])
    torch.testing.assert_close(_readout_layer(pmodel)["bias"], _readout_layer(model)["bias"])


@functools.lru_cache(maxsize=None)
def _agreement_setup():
    """200 test digits as chip inputs, and how often float and emulator agree on the clean model."""
    model, res, _, _ = _setup()
    inputs = chip_inputs(model, res.network, torch.as_tensor(_digits()[0][:200]))
    clean = np.mean(float_run(model, inputs)["predictions"] == run_network(res.network, inputs.values).predictions())
    assert clean >= 0.75
    return inputs, float(clean)


@pytest.mark.parametrize("name", list(NETWORK_NOISE_NAMES))
def test_network_noise_float_predictions_follow_the_emulator(name):
    """Untrained and centred, the model's logits are close calls: float and fixed point agree as much under
    the noise as without it (give or take), far above chance (1/3)."""
    model, res, _, _ = _setup()
    inputs, clean = _agreement_setup()
    seed = noise_seed(0, name, 0)
    f = float_run(perturb_float_model(model, name, LEVELS[name], seed, res), inputs)
    e = run_network(perturb_network(res.network, name, LEVELS[name], seed), inputs.values)
    assert np.mean(f["predictions"] == e.predictions()) >= min(clean - 0.2, 0.6)


@pytest.mark.parametrize("name,level", [("weight-mismatch", 0.1), ("bit-flip", 0.05)])
def test_perturbed_readout_v_estimates_the_perturbed_float_logits(name, level):
    """hidden: [] -- no spiking layer in between, only rounding differs: under the weight noises too,
    v / (S * T) is the perturbed float model's logits. Weight mismatch clips the mantissas that leave the
    range on the chip, not in float (documented): with those weights set to their clipped values the float
    logits match as closely as the clean ones do."""
    model, res = _linear_model(hidden=())
    net = res.network
    x = torch.as_tensor(_digits()[0][:50])
    inputs = chip_inputs(model, net, x)
    pmodel = perturb_float_model(model, name, level, 9, res)
    pnet = perturb_network(net, name, level, 9)

    def gap(m, n):
        with torch.no_grad():
            logits = m(x).double().numpy()
        est = run_network(n, inputs.values).output_v / (res.layers[-1].scale * T)
        return np.abs(est - logits).max() / np.abs(logits).max(), np.mean(est.argmax(1) == logits.argmax(1))

    with torch.no_grad():
        assert (pmodel(x) - model(x)).abs().max() > 0.05 * model(x).abs().max(), "the noise must matter"
    assert gap(pmodel, pnet)[1] >= 0.9
    lo, hi, _ = weight_grid(net.layers[0].sign_mode, net.layers[0].num_weight_bits)
    q = pnet.layers[0].weight
    clipped = (q == lo) | (q == hi)
    if name == "weight-mismatch":
        assert clipped.any()
        with torch.no_grad():
            w = _readout_layer(pmodel)["weight"]
            unit = _unit(res, 0) * net.input_encoding.scale
            w.copy_(torch.where(torch.as_tensor(clipped), torch.as_tensor(q * unit, dtype=w.dtype), w))
    clean_gap = gap(model, net)[0]
    assert gap(pmodel, pnet)[0] <= 2 * clean_gap + 2e-3, (gap(pmodel, pnet), clean_gap)


@pytest.mark.parametrize("name", list(STEP_NOISE_NAMES))
def test_step_noise_acts_on_the_spiking_layers_only(name):
    model, res, _, _ = _setup()
    net, r = res.network, readout_index(res.network)
    noise = StepNoise(name, LEVELS[name], 11)
    assert step_noise_layers(net, name) == [0, 1]      # spike-drop too: the last hidden layer feeds the readout
    arrays = fixed_step_noise(net, noise, np.arange(3))
    assert arrays[r] is None and all(a is not None for a in arrays[:r])
    flt, hooks = float_step_noise_model(model, noise, res)
    assert isinstance(hooks, FloatStepNoise) and hooks.active_layers == [0, 1]
    inputs, clean = _agreement_setup()
    f = float_run(flt, inputs, on_batch=hooks.set_samples)
    e = run_network(net, inputs.values, step_noise=noise)
    assert not np.array_equal(e.output_v, run_network(net, inputs.values).output_v)
    assert np.mean(f["predictions"] == e.predictions()) >= min(clean - 0.2, 0.6)


@pytest.mark.parametrize("name", list(STEP_NOISE_NAMES))
def test_without_spiking_layers_step_noise_changes_nothing(name):
    """hidden: [] -- only the integrator readout, which gets no step noise: float and fixed point stay clean."""
    model, res = _linear_model(hidden=())
    net = res.network
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    inputs = chip_inputs(model, net, x)
    noise = StepNoise(name, 0.5, 2)
    assert fixed_step_noise(net, noise, np.arange(5)) == [None]
    np.testing.assert_array_equal(run_network(net, inputs.values, step_noise=noise).output_v,
                                  run_network(net, inputs.values).output_v)
    flt, hooks = float_step_noise_model(model, noise, res)
    hooks.set_samples(np.arange(5))
    with torch.no_grad():
        torch.testing.assert_close(flt(x), model(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", list(NETWORK_NOISE_NAMES))
def test_level_zero_is_the_clean_linear_readout_model(name):
    model, res, x, _ = _setup()
    pnet = perturb_network(res.network, name, 0.0, 4)
    for a, b in zip(res.network.layers, pnet.layers):
        np.testing.assert_array_equal(a.weight, b.weight)
        np.testing.assert_array_equal(a.neurons.bias_mant, b.neurons.bias_mant)
        assert a.neurons.vth == b.neurons.vth
    with torch.no_grad():
        torch.testing.assert_close(perturb_float_model(model, name, 0.0, 4, res)(x), model(x), rtol=0, atol=0)


def test_mismatched_quantization_is_refused():
    spiking, spiking_res, _ = small_quantized_model(hidden=(16, 12))
    linear, linear_res = _linear_model()
    for model, res in ((linear, spiking_res), (spiking, linear_res)):
        with pytest.raises(HardwareNoiseError, match="pass the quantization of this model"):
            perturb_float_model(model, "weight-mismatch", 0.1, 0, res)
        with pytest.raises(HardwareNoiseError, match="pass the quantization of this model"):
            float_step_noise_model(model, StepNoise("current-noise", 0.1, 0), res)


# --------------------------------------------------------------------------- run_encoded without neurons
def test_run_encoded_repeat_without_spiking_layers():
    model, _ = _linear_model(hidden=())
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        xq = model.quantize_input(x)
        once = model.run_encoded(xq.unsqueeze(0), repeat=T)
        full = model.run_encoded(xq.unsqueeze(0).expand(T, *xq.shape))
        logits = model(x)
        lin = model.body[-1](xq.reshape(6, -1))
    assert once.shape == full.shape == (T, 6, 3)
    torch.testing.assert_close(once, full, rtol=0, atol=0)
    torch.testing.assert_close(logits, lin, rtol=1e-6, atol=1e-6)
