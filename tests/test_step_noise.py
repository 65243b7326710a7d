"""Per-step noises (spike-drop, current-noise, membrane-noise): one semantics in the
emulator, in Lava (noise-injection processes in the graph) and in torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurodeploy.backends import run_network
from neurodeploy.backends import emulator as emu_mod
from neurodeploy.ir import ConvLayer, DenseLayer, InputEncoding, Network, Neurons
from neurodeploy.noise.hardware import (
    StepNoise,
    fixed_step_noise,
    float_step_noise_model,
    float_step_rows,
    step_noise_draws,
    step_noise_layers,
)
from neurodeploy.noise.specs import STEP_NOISE_NAMES, NoiseSpecError

LEVELS = {"spike-drop": 0.3, "current-noise": 0.4, "membrane-noise": 0.4}


def rec_net(seed: int = 0, T: int = 6) -> Network:
    """Dense 8-10-7-5: a recurrent first layer, a du=4095 middle layer, a recurrent output layer."""
    rng = np.random.default_rng(seed)

    def nrn(n, du, dv, vth):
        return Neurons(du=du, dv=dv, vth=vth, bias_mant=rng.integers(-20, 40, n).astype(np.int64), bias_exp=3)

    layers = [
        DenseLayer(weight=rng.integers(-60, 120, (10, 8)), neurons=nrn(10, 1000, 500, 6000), weight_exp=1,
                   weight_rec=rng.integers(-100, 100, (10, 10)), weight_rec_exp=2),
        DenseLayer(weight=rng.integers(-80, 200, (7, 10)), neurons=nrn(7, 4095, 300, 3000), weight_exp=3),
        DenseLayer(weight=rng.integers(-80, 200, (5, 7)), neurons=nrn(5, 2000, 1000, 3000), weight_exp=3,
                   weight_rec=rng.integers(-150, 150, (5, 5)), weight_rec_exp=3),
    ]
    return Network(input_shape=(8,), layers=layers, time_steps=T,
                   input_encoding=InputEncoding("graded", bits=4, scale=15))


def conv_net(seed: int = 2) -> Network:
    """Spiking input -> conv (2, 4, 4) -> dense 4 (3-D populations in Lava's (W, H, C) order)."""
    rng = np.random.default_rng(seed)
    conv = ConvLayer(weight=rng.integers(-50, 120, (2, 1, 2, 2)), in_shape=(1, 5, 5), weight_exp=2,
                     neurons=Neurons(du=3000, dv=2000, vth=40, bias_mant=rng.integers(0, 30, 32).astype(np.int64)))
    dense = DenseLayer(weight=rng.integers(-40, 120, (4, 32)), weight_exp=2,
                       neurons=Neurons(du=4095, dv=1000, vth=3000, bias_mant=np.zeros(4, dtype=np.int64)))
    return Network(input_shape=(1, 5, 5), layers=[conv, dense], time_steps=5,
                   input_encoding=InputEncoding("spikes"))


def rec_inputs(n=4, seed=1):
    return np.random.default_rng(seed).integers(0, 16, (n, 6, 8))


def conv_inputs(n=3, seed=3):
    return (np.random.default_rng(seed).random((n, 5, 1, 5, 5)) < 0.5).astype(np.int64)


def assert_same(a, b, what=""):
    np.testing.assert_array_equal(a.output_spikes, b.output_spikes, err_msg=f"{what} output spikes")
    np.testing.assert_array_equal(a.spike_counts, b.spike_counts, err_msg=f"{what} counts")
    if a.final_u is not None or b.final_u is not None:
        for i, (x, y) in enumerate(zip(a.final_u + a.final_v, b.final_u + b.final_v)):
            np.testing.assert_array_equal(x, y, err_msg=f"{what} final u/v {i}")


def emulate(net, x, noise=None, **kw):
    return run_network(net, x, backend="emulator", record_state=True, step_noise=noise, **kw)


# --------------------------------------------------------------------------- emulator vs Lava
@pytest.mark.parametrize("name", STEP_NOISE_NAMES)
def test_emulator_and_lava_identical_under_step_noise(name):
    net, x = rec_net(), rec_inputs()
    noise = StepNoise(name, LEVELS[name], 11)
    ids = [7, 3, 12, 0]
    emu = emulate(net, x, noise, sample_ids=ids)
    lava = run_network(net, x, backend="lava", record_state=True, step_noise=noise, sample_ids=ids)
    assert_same(emu, lava, name)
    clean = emulate(net, x)
    assert not np.array_equal(emu.spike_counts, clean.spike_counts), "the noise must change something"


@pytest.mark.parametrize("name", STEP_NOISE_NAMES)
def test_emulator_and_lava_identical_on_conv(name):
    net, x = conv_net(), conv_inputs()
    noise = StepNoise(name, LEVELS[name], 5)
    emu = emulate(net, x, noise)
    lava = run_network(net, x, backend="lava", record_state=True, step_noise=noise)
    assert_same(emu, lava, name)
    assert not np.array_equal(emu.spike_counts, emulate(net, x).spike_counts)


# --------------------------------------------------------------------------- emulator properties
@pytest.mark.parametrize("name", STEP_NOISE_NAMES)
def test_level0_seeds_batching_and_paths(name, monkeypatch):
    net, x = rec_net(), rec_inputs(6)
    clean = emulate(net, x)
    assert_same(emulate(net, x, StepNoise(name, 0.0, 3)), clean, "level 0")
    assert all(a is None for a in fixed_step_noise(net, StepNoise(name, 0.0, 3), range(6)))
    a = emulate(net, x, StepNoise(name, LEVELS[name], 3))
    assert_same(emulate(net, x, StepNoise(name, LEVELS[name], 3)), a, "same seed")
    assert not np.array_equal(emulate(net, x, StepNoise(name, LEVELS[name], 4)).spike_counts, a.spike_counts)
    # batching does not change the numbers; a sample's draws follow its data-set index
    assert_same(emulate(net, x, StepNoise(name, LEVELS[name], 3), batch_size=1), a, "batch 1")
    part = emulate(net, x[[4, 1]], StepNoise(name, LEVELS[name], 3), sample_ids=[4, 1])
    np.testing.assert_array_equal(part.output_spikes, a.output_spikes[[4, 1]])
    # the emulator's fast paths stay exact next to noisy layers (general path everywhere agrees)
    monkeypatch.setattr(emu_mod, "FAST_A_LIMIT", 0)
    assert_same(emulate(net, x, StepNoise(name, LEVELS[name], 3)), a, "general path")


def test_bad_step_noise():
    with pytest.raises(NoiseSpecError, match="above 1"):
        StepNoise("spike-drop", 1.5, 0)
    with pytest.raises(NoiseSpecError, match="negative"):
        StepNoise("current-noise", -0.1, 0)
    with pytest.raises(NoiseSpecError, match="not a step noise"):
        StepNoise("gaussian", 0.1, 0)


def relay_net(T: int = 40, n: int = 16) -> Network:
    """Layer 0 spikes at every step (bias above threshold); layer 1 spikes iff it received a spike."""
    l0 = DenseLayer(weight=np.zeros((n, 1), dtype=np.int64),
                    neurons=Neurons(du=4095, dv=4095, vth=1, bias_mant=np.full(n, 100, dtype=np.int64)))
    l1 = DenseLayer(weight=np.eye(n, dtype=np.int64) * 100,
                    neurons=Neurons(du=4095, dv=4095, vth=10, bias_mant=np.zeros(n, dtype=np.int64)))
    return Network(input_shape=(1,), layers=[l0, l1], time_steps=T, input_encoding=InputEncoding("spikes"))


def test_spike_drop_fraction_and_exact_mask():
    net = relay_net()
    x = np.zeros((20, 40, 1), dtype=np.int64)
    p = 0.25
    noise = StepNoise("spike-drop", p, 9)
    res = emulate(net, x, noise)
    assert step_noise_layers(net, "spike-drop") == [0]      # the readout layer is never masked
    keep = fixed_step_noise(net, noise, range(20))[0]        # (20, 42, 16)
    assert keep.dtype == bool and abs(1 - keep.mean() - p) < 0.02
    # layer 0 spikes every step; layer 1 spikes at s+1 exactly where layer 0's spike of step s was kept
    assert res.spike_counts[:, 0].tolist() == [42 * 16] * 20
    np.testing.assert_array_equal(res.output_spikes[:, 1:], keep[:, :-1].astype(np.uint8))
    delivered = res.spike_counts[:, 1].sum() / (20 * 41 * 16)
    assert abs(delivered - (1 - p)) < 0.02
    # nested over levels: a higher level drops a superset
    more = fixed_step_noise(net, StepNoise("spike-drop", 0.5, 9), range(20))[0]
    assert np.all(keep >= more)


# --------------------------------------------------------------------------- torch
def _model(arch="mlp", hidden=(6,)):
    from _helpers import small_quantized_model

    m, res, shape = small_quantized_model(arch, hidden)
    m.eval()
    return m, res, shape


@pytest.mark.parametrize("arch", ["mlp", "srnn"])
@pytest.mark.parametrize("name", STEP_NOISE_NAMES)
def test_float_model_uses_the_same_draws(arch, name):
    from neurodeploy.neurons.modules import record_activity

    model, res, shape = _model(arch, hidden=(12,))
    net = res.network
    x = torch.rand(5, *shape)
    with torch.no_grad():
        clean = model(x)
        zero, hooks0 = float_step_noise_model(model, StepNoise(name, 0.0, 2), res)
        hooks0.set_samples(range(5))
        assert torch.equal(zero(x), clean), "level 0 is the clean float model"
        noisy, hooks = float_step_noise_model(model, StepNoise(name, 0.5, 2), res)
        hooks.set_samples(np.arange(10, 15))
        with record_activity(noisy) as recs:
            noisy(x)
        with record_activity(model) as clean_recs:
            assert torch.equal(model(x), clean), "the input model must not change"
        # the perturbation shows in what the layers saw (an untrained output may stay silent)
        assert any(not torch.equal(r.current, c.current) or not torch.equal(r.spikes, c.spikes)
                   for r, c in zip(recs, clean_recs))
    T = net.time_steps
    fixed = fixed_step_noise(net, StepNoise(name, 0.5, 2), np.arange(10, 15))
    for i in step_noise_layers(net, name):
        got = hooks.values[i].numpy().transpose(1, 0, 2)       # (B, T, n)
        rows = float_step_rows(i, T)
        if name == "spike-drop":   # the hook's masks are the emulator's masks, aligned
            np.testing.assert_array_equal(got.astype(bool), fixed[i][:, rows])
        else:                      # the same N(0,1) draws: float level*theta*z, fixed rint(level*scale*z)
            z = step_noise_draws(name, 2, i, np.arange(10, 15), T + net.latency, got.shape[-1])[:, rows]
            np.testing.assert_allclose(got, 0.5 * z, rtol=1e-6)


def test_float_spike_drop_masks_the_delivered_spikes():
    """With p = 1 no hidden spike reaches the output layer: the float output equals a
    model whose hidden layer is silent (its recorded activity still shows the spikes)."""
    from neurodeploy.neurons.modules import record_activity

    model, res, shape = _model("mlp", hidden=(12,))
    x = torch.rand(4, *shape)
    noisy, hooks = float_step_noise_model(model, StepNoise("spike-drop", 1.0, 0), res)
    hooks.set_samples(range(4))
    with torch.no_grad(), record_activity(noisy) as recs:
        noisy(x)
    with torch.no_grad(), record_activity(model) as clean_recs:
        model(x)
    assert torch.equal(recs[0].spikes, clean_recs[0].spikes)      # the hidden neurons still spike
    assert clean_recs[0].spikes.sum() > 0
    # the output layer only sees its bias (the same current at every step, for every sample)
    cur = recs[1].current.flatten(1)
    assert torch.equal(cur, cur[:1].expand_as(cur))
    clean_cur = clean_recs[1].current.flatten(1)
    assert not torch.equal(clean_cur, clean_cur[:1].expand_as(clean_cur))


def test_sweep_runs_step_noise_on_every_backend():
    from neurodeploy.evaluate.robustness import parse_noise_spec, sweep

    model, res, shape = _model("mlp", hidden=(12,))
    torch.manual_seed(1)
    x, y = torch.rand(12, *shape), torch.randint(0, 3, (12,))
    specs = [parse_noise_spec(s) for s in ("spike-drop:0,0.5", "current-noise:0,1", "membrane-noise:0,1")]
    rows = sweep(model, x, y, specs, 1, 0, ("float", "emulator", "lava"), res, lava_samples=2)
    by = {(r["backend"], r["noise"], r["level"]): r for r in rows}
    clean = sweep(model, x, y, [parse_noise_spec("gaussian:0")], 1, 0, ("float", "emulator"), res)
    for r in clean:
        for name in ("spike-drop", "current-noise", "membrane-noise"):
            assert by[(r["backend"], name, 0.0)]["accuracy"] == r["accuracy"]
            assert by[(r["backend"], name, 0.0)]["spikes_per_sample"] == r["spikes_per_sample"]
    assert all(r["emulator_identical_spikes"] == 1.0 for r in rows if r["backend"] == "lava")
    for backend in ("float", "emulator"):
        assert by[(backend, "current-noise", 1.0)]["spikes_per_sample"] != by[(backend, "current-noise", 0.0)][
            "spikes_per_sample"]
