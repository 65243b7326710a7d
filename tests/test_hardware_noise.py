"""Noise vocabulary, profile noise sections, and network (hardware) noise on IR, emulator, Lava and torch."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from neurodeploy.backends import check_network, run_network
from neurodeploy.backends.base import BIAS_MANT_RANGE, VTH_MAX, effective_weights
from neurodeploy.ir import ConvLayer, DenseLayer, InputEncoding, Network, Neurons
from neurodeploy.noise import NETWORK_NOISE_NAMES, NOISES, STEP_NOISE_NAMES, NoiseSpecError, parse_noise_spec
from neurodeploy.noise.specs import NoiseProfileError, noise_from_profile, resolve_noise_specs
from neurodeploy.noise.hardware import (
    HardwareNoiseError,
    chosen_neurons,
    draw_network_noise,
    float_step_rows,
    step_noise_draws,
    step_noise_integers,
    perturb_float_model,
    perturb_network,
    weight_grid,
)
from neurodeploy.quant import ProfileError, load_profile
from neurodeploy.quant.quantizer import _float_layers

ALL = ("gaussian", "uniform", "salt-pepper", "fgsm", "pgd", "pgd10", "pgd20", "apgd-ce", "weight-mismatch", "bit-flip", "dead-neuron",
       "stuck-neuron", "spike-drop", "current-noise", "membrane-noise", "threshold-mismatch")


# --------------------------------------------------------------------------- networks
def dense_net(seed: int = 0, sign_mode: str = "mixed", bits: int = 8) -> Network:
    """Graded input (6,) -> recurrent dense 10 -> dense 5; active but not saturated."""
    rng = np.random.default_rng(seed)
    lo, hi, step = weight_grid(sign_mode, bits)

    def w(shape, scale):
        return np.clip(step * np.rint(rng.normal(0, scale, shape) / step), lo, hi).astype(np.int64)

    if sign_mode == "mixed":
        w0, wr, w1 = w((10, 6), 80), w((10, 10), 40), w((5, 10), 120)
    else:
        sgn = 1 if sign_mode == "excitatory" else -1
        w0, wr, w1 = (sgn * np.abs(w(s, sc)) for s, sc in (((10, 6), 80), ((10, 10), 40), ((5, 10), 120)))
    l0 = DenseLayer(weight=w0, weight_rec=wr, weight_exp=-3, num_weight_bits=bits, sign_mode=sign_mode,
                    neurons=Neurons(du=3000, dv=300, vth=900, bias_mant=rng.integers(-20, 40, 10), bias_exp=6),
                    name="rec")
    l1 = DenseLayer(weight=w1, weight_exp=0, num_weight_bits=bits, sign_mode=sign_mode,
                    neurons=Neurons(du=4095, dv=400, vth=250, bias_mant=rng.integers(-10, 10, 5), bias_exp=6),
                    name="out")
    return check_network(Network(input_shape=(6,), layers=[l0, l1], time_steps=6,
                                 input_encoding=InputEncoding("graded", 8, 255.0)))


def conv_net(seed: int = 1) -> Network:
    """Graded input (1, 4, 4) -> conv 2x3x3 (pad 1) -> dense 3. Bias exponent 7 makes dead/stuck conv provable."""
    rng = np.random.default_rng(seed)
    wc = (2 * rng.integers(-20, 21, (2, 1, 3, 3))).astype(np.int64)
    conv = ConvLayer(weight=wc, in_shape=(1, 4, 4), padding=(1, 1), weight_exp=-4,
                     neurons=Neurons(du=4095, dv=500, vth=400, bias_mant=rng.integers(-8, 8, 32), bias_exp=7),
                     name="conv")
    wd = (2 * rng.integers(-100, 101, (3, 32))).astype(np.int64)
    dense = DenseLayer(weight=wd, weight_exp=0,
                       neurons=Neurons(du=4095, dv=400, vth=300, bias_mant=np.zeros(3, np.int64), bias_exp=6))
    return check_network(Network(input_shape=(1, 4, 4), layers=[conv, dense], time_steps=5))


def inputs(net: Network, samples: int = 3, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (samples, net.time_steps, *net.input_shape)).astype(np.int64)


def truncated(net: Network, upto: int) -> Network:
    """The first ``upto + 1`` layers: the output is then layer ``upto``'s spikes."""
    return Network(input_shape=net.input_shape, layers=copy.deepcopy(net.layers[:upto + 1]),
                   time_steps=net.time_steps, input_encoding=net.input_encoding)


def layer_spikes(net: Network, x: np.ndarray, i: int, backend: str = "emulator") -> np.ndarray:
    """(samples, steps, n) spikes of layer i over every simulated step."""
    return run_network(truncated(net, i), x, backend=backend).output_spikes


def networks_equal(a: Network, b: Network) -> bool:
    for la, lb in zip(a.layers, b.layers):
        for key in ("weight", "weight_rec"):
            x, y = getattr(la, key, None), getattr(lb, key, None)
            if (x is None) != (y is None) or (x is not None and not np.array_equal(x, y)):
                return False
        if la.neurons.vth != lb.neurons.vth or not np.array_equal(la.neurons.bias_mant, lb.neurons.bias_mant):
            return False
    return True


def assert_in_lava_ranges(net: Network) -> None:
    check_network(net)
    for layer in net.layers:
        for key in ("weight", "weight_rec"):
            w = getattr(layer, key, None)
            if w is None:
                continue
            lo, hi, step = weight_grid(layer.sign_mode, layer.num_weight_bits)
            assert w.min() >= lo and w.max() <= hi and np.all(w % step == 0)
            # Lava keeps every value unchanged
            np.testing.assert_array_equal(effective_weights(w, layer.sign_mode, layer.num_weight_bits), w)
        assert 0 <= layer.neurons.vth <= VTH_MAX
        b = layer.neurons.bias_mant
        assert b.min() >= BIAS_MANT_RANGE[0] and b.max() <= BIAS_MANT_RANGE[1]


LEVELS = {"weight-mismatch": 0.3, "bit-flip": 0.05, "dead-neuron": 0.3, "stuck-neuron": 0.3,
          "threshold-mismatch": 0.3}


# --------------------------------------------------------------------------- vocabulary and specs
def test_vocabulary_is_complete_and_kinded():
    assert set(NOISES) == set(ALL)
    assert set(NETWORK_NOISE_NAMES) == {"weight-mismatch", "bit-flip", "dead-neuron", "stuck-neuron",
                                        "threshold-mismatch"}
    assert set(STEP_NOISE_NAMES) == {"spike-drop", "current-noise", "membrane-noise"}
    for name in ("gaussian", "uniform", "salt-pepper", "fgsm", "pgd", "pgd10", "pgd20", "apgd-ce"):
        assert NOISES[name].kind == "input"
    for name in ("salt-pepper", "bit-flip", "dead-neuron", "stuck-neuron", "spike-drop"):
        assert NOISES[name].upper == 1.0
    for t in NOISES.values():
        assert t.meaning and t.describe().startswith(t.name)


def test_parse_noise_spec_ok():
    s = parse_noise_spec("pgd:0, 4/255,8/255")
    assert s.name == "pgd" and s.levels == (0.0, 4 / 255, 8 / 255) and s.kind == "input"
    assert parse_noise_spec("weight-mismatch:0,0.1,1.5").levels == (0.0, 0.1, 1.5)  # stds may exceed 1
    assert parse_noise_spec("bit-flip:1").levels == (1.0,)


@pytest.mark.parametrize("spec, needle", [
    ("gausian:0.1", "unknown noise 'gausian'"),
    ("weight-mismatch:-0.1", "negative"),
    ("dead-neuron:0,1.5", "above 1"),
    ("bit-flip:0.2,2", "above 1"),
    ("spike-drop:1.01", "above 1"),
    ("gaussian:0,abc", "not a number"),
    ("fgsm:8/0", "not a number"),
    ("gaussian:0,,0.1", "empty level"),
    ("gaussian", "expected NAME:LEVEL"),
    ("gaussian:", "no levels"),
    ("current-noise:inf", "not finite"),
])
def test_bad_specs_name_the_spec(spec, needle):
    with pytest.raises(NoiseSpecError) as err:
        parse_noise_spec(spec)
    assert repr(spec) in str(err.value) and needle in str(err.value)


def test_profile_noise_section():
    defaults = noise_from_profile("noisy-edge")
    assert set(defaults) == set(ALL)  # every noise type declared
    assert all(levels[0] == 0 and len(levels) == 5 for levels in defaults.values())
    assert defaults["fgsm"][-1] == pytest.approx(16 / 255)
    assert noise_from_profile("loihi2") == {}
    assert load_profile("noisy-edge").weights == load_profile("loihi2").weights  # a copy of loihi2
    # command line over profile: NAME:LEVELS wins, bare NAME takes the profile's levels
    specs = resolve_noise_specs(["gaussian:0,0.5", "bit-flip"], "noisy-edge")
    assert specs[0].levels == (0.0, 0.5) and specs[1].levels == defaults["bit-flip"]
    assert len(resolve_noise_specs(["all"], "noisy-edge")) == len(ALL) == 16
    with pytest.raises(NoiseSpecError, match="no levels given"):
        resolve_noise_specs(["bit-flip"], "loihi2")


@pytest.mark.parametrize("section, needle", [
    ("  gausian: [0, 0.1]\n", "noise.gausian"),
    ("  dead-neuron: [0, 1.2]\n", "noise.dead-neuron"),
    ("  weight-mismatch: [0, -0.1]\n", "noise.weight-mismatch"),
    ("  fgsm: [0, eight]\n", "noise.fgsm"),
    ("  gaussian: []\n", "noise.gaussian"),
])
def test_bad_profile_noise_names_file_and_key(tmp_path, section, needle):
    base = (load_profile("loihi2").source)
    text = open(base).read() + "noise:\n" + section
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(NoiseProfileError) as err:
        noise_from_profile(str(path))
    assert needle in str(err.value) and "bad.yaml" in str(err.value)
    assert isinstance(err.value, ProfileError)


# --------------------------------------------------------------------------- IR transforms
@pytest.mark.parametrize("name", NETWORK_NOISE_NAMES)
def test_level0_identity_purity_and_seeds(name):
    net = dense_net()
    before = copy.deepcopy(net)
    same = perturb_network(net, name, 0.0, seed=3)
    assert same is not net and networks_equal(same, net)
    a = perturb_network(net, name, LEVELS[name], seed=3)
    b = perturb_network(net, name, LEVELS[name], seed=3)
    c = perturb_network(net, name, LEVELS[name], seed=4)
    assert networks_equal(net, before), "the input network must not change"
    assert networks_equal(a, b)
    assert not networks_equal(a, c)
    assert not networks_equal(a, net)
    assert_in_lava_ranges(a)
    assert a.metadata["noise"] == [{"name": name, "level": LEVELS[name], "seed": 3}]
    both = perturb_network(a, "weight-mismatch" if name != "weight-mismatch" else "bit-flip", 0.1, 5)
    assert len(both.metadata["noise"]) == 2 and len(a.metadata["noise"]) == 1  # noises compose


def test_network_noise_rejects_other_kinds_and_bad_levels():
    net = dense_net()
    with pytest.raises(NoiseSpecError, match="input noise"):
        perturb_network(net, "gaussian", 0.1, 0)
    with pytest.raises(NoiseSpecError, match="above 1"):
        perturb_network(net, "bit-flip", 1.5, 0)
    with pytest.raises(NoiseSpecError, match="negative"):
        perturb_network(net, "weight-mismatch", -0.1, 0)


@pytest.mark.parametrize("sign_mode, bits", [("mixed", 8), ("mixed", 5), ("excitatory", 6), ("inhibitory", 7)])
def test_weight_mismatch_statistics_and_grid(sign_mode, bits):
    net = dense_net(sign_mode=sign_mode, bits=bits)
    level = 0.1
    out = perturb_network(net, "weight-mismatch", level, seed=11)
    assert_in_lava_ranges(out)
    draws = draw_network_noise(net, "weight-mismatch", 11)
    for layer, new, d in zip(net.layers, out.layers, draws):
        lo, hi, step = weight_grid(sign_mode, bits)
        target = np.clip(layer.weight * (1 + level * d.weight), lo, hi)
        assert np.all(np.abs(new.weight - target) <= step / 2 + 1e-9)  # nearest representable mantissa
    # relative std of the factor over large weights ~ level
    big = np.random.default_rng(0).choice([-200, 200], (400, 400)).astype(np.int64)
    layer = DenseLayer(weight=big, neurons=Neurons(4095, 0, 100, np.zeros(400, np.int64)))
    huge = Network(input_shape=(400,), layers=[layer], time_steps=1)
    rel = perturb_network(huge, "weight-mismatch", 0.1, seed=0).layers[0].weight / big - 1
    assert abs(rel.std() - 0.1) < 0.005 and abs(rel.mean()) < 0.005


@pytest.mark.parametrize("sign_mode, bits", [("mixed", 8), ("mixed", 4), ("excitatory", 8), ("inhibitory", 5)])
def test_bit_flip_rate_and_values(sign_mode, bits):
    rng = np.random.default_rng(5)
    lo, hi, step = weight_grid(sign_mode, bits)
    w = (step * rng.integers(lo // step, hi // step + 1, (300, 300))).astype(np.int64)
    net = Network(input_shape=(300,), time_steps=1, layers=[DenseLayer(
        weight=w, sign_mode=sign_mode, num_weight_bits=bits, neurons=Neurons(4095, 0, 100, np.zeros(300, np.int64)))])
    ber = 0.02
    out = perturb_network(net, "bit-flip", ber, seed=9).layers[0].weight
    assert_in_lava_ranges(Network(input_shape=(300,), time_steps=1, layers=[DenseLayer(
        weight=out, sign_mode=sign_mode, num_weight_bits=bits, neurons=net.layers[0].neurons)]))
    k = 8 - bits + (sign_mode == "mixed")
    mant = lambda x: ((x >> k) & ((1 << bits) - 1)) if sign_mode == "mixed" else (np.abs(x) >> k)  # noqa: E731
    flipped = np.unpackbits((mant(w) ^ mant(out)).astype(np.uint8)[..., None], axis=-1).sum()
    rate = flipped / (w.size * bits)
    assert abs(rate - ber) < 0.002
    # every bit position flips (including the sign bit of mixed mantissas)
    per_bit = [np.mean(((mant(w) ^ mant(out)) >> b) & 1) for b in range(bits)]
    assert min(per_bit) > ber / 2


def test_dead_and_stuck_fractions_nested():
    net = dense_net()
    for name in ("dead-neuron", "stuck-neuron"):
        draws = draw_network_noise(net, name, 2)
        for level in (0.1, 0.3, 0.5, 1.0):
            for d, layer in zip(draws, net.layers):
                n = layer.neurons.size
                idx = chosen_neurons(d, level)
                assert idx.size == int(np.floor(level * n + 0.5))
                assert set(chosen_neurons(d, level / 2)) <= set(idx)  # nested over levels


def test_threshold_mismatch_values():
    net = dense_net()
    out = perturb_network(net, "threshold-mismatch", 0.2, seed=1)
    d = draw_network_noise(net, "threshold-mismatch", 1)
    for layer, new, dr in zip(net.layers, out.layers, d):
        assert new.neurons.vth == int(np.clip(np.rint(layer.neurons.vth * (1 + 0.2 * dr.factor)), 1, VTH_MAX))
    zero = copy.deepcopy(net)
    zero.layers[0].neurons.vth = 0
    assert perturb_network(zero, "threshold-mismatch", 0.5, seed=1).layers[0].neurons.vth == 0
    # clipped into [1, VTH_MAX]
    for seed in range(20):
        low = perturb_network(net, "threshold-mismatch", 5.0, seed=seed)
        assert all(1 <= lay.neurons.vth <= VTH_MAX for lay in low.layers)


@pytest.mark.parametrize("make", [dense_net, conv_net], ids=["dense", "conv"])
def test_dead_and_stuck_on_emulator(make):
    net = make()
    x = inputs(net, samples=4)
    for name in ("dead-neuron", "stuck-neuron"):
        out = perturb_network(net, name, 0.3, seed=7)
        draws = draw_network_noise(net, name, 7)
        for i, d in enumerate(draws):
            idx = chosen_neurons(d, 0.3)
            assert idx.size > 0
            s = layer_spikes(out, x, i)  # (samples, steps, n): every simulated step
            if name == "dead-neuron":
                assert s[:, :, idx].sum() == 0
            else:
                assert s[:, :, idx].all(), "stuck neurons spike at every step, the first included"
            others = np.setdiff1d(np.arange(s.shape[-1]), idx)
            clean = layer_spikes(net, x, i)
            if i == 0 and getattr(net.layers[0], "weight_rec", None) is None:  # others untouched
                np.testing.assert_array_equal(s[:, :, others], clean[:, :, others])


def test_conv_dead_and_stuck_hold_under_extreme_inputs():
    """The bias bounds are proofs, not luck: random conv layers (current decay, negative weight
    exponents) under all-max, all-zero and random inputs; a layer the bound cannot cover must raise."""
    applied = 0
    for seed in range(12):
        rng = np.random.default_rng(100 + seed)
        wc = (2 * rng.integers(-128, 128, (2, 2, 3, 3))).astype(np.int64)
        e = int(rng.integers(4, 9))
        nrn = Neurons(du=int(rng.choice([4095, 3000, 2047, 800])), dv=int(rng.choice([0, 300, 4095])),
                      vth=int(rng.integers(1, 3000)), bias_mant=rng.integers(-50, 50, 2 * 4 * 4), bias_exp=e)
        layer = ConvLayer(weight=wc, in_shape=(2, 4, 4), padding=(1, 1), weight_exp=int(rng.integers(-6, 1)),
                          neurons=nrn)
        net = check_network(Network(input_shape=(2, 4, 4), layers=[layer], time_steps=12))
        x = np.concatenate([np.full((1, 12, 2, 4, 4), 255), np.zeros((1, 12, 2, 4, 4)),
                            inputs(net, samples=2, seed=seed)]).astype(np.int64)
        x[-1, :, 0] = 255  # one channel saturated, the other random
        for name in ("dead-neuron", "stuck-neuron"):
            try:
                out = perturb_network(net, name, 0.5, seed=seed)
            except HardwareNoiseError:
                continue
            applied += 1
            idx = chosen_neurons(draw_network_noise(net, name, seed)[0], 0.5)
            s = run_network(out, x, backend="emulator").output_spikes[:, :, idx]
            assert (s.sum() == 0) if name == "dead-neuron" else s.all(), (seed, name)
    assert applied >= 6


def test_conv_dead_neuron_needs_provable_bias():
    net = conv_net()
    net.layers[0].neurons.bias_exp = 0  # bias too small to outweigh the worst-case conv drive
    net.layers[0].weight_exp = 0
    with pytest.raises(HardwareNoiseError, match="layer 0.*conv"):
        perturb_network(net, "dead-neuron", 0.3, seed=0)


def test_stuck_neuron_bias_out_of_range_is_an_error():
    net = dense_net()
    net.layers[1].neurons.vth = 100000  # vth << 6 >> 6 + 1 > int16
    with pytest.raises(HardwareNoiseError, match="layer 1.*stuck"):
        perturb_network(net, "stuck-neuron", 0.5, seed=0)


# --------------------------------------------------------------------------- Lava
def _assert_same(a, b, what):
    np.testing.assert_array_equal(a.output_spikes, b.output_spikes, err_msg=f"{what}: output spikes")
    np.testing.assert_array_equal(a.spike_counts, b.spike_counts, err_msg=f"{what}: spike counts")
    for key in ("final_u", "final_v"):
        for i, (p, q) in enumerate(zip(getattr(a, key), getattr(b, key))):
            np.testing.assert_array_equal(p, q, err_msg=f"{what}: {key} layer {i}")


@pytest.mark.parametrize("name", NETWORK_NOISE_NAMES)
def test_emulator_and_lava_identical_under_network_noise(name):
    net = perturb_network(dense_net(), name, LEVELS[name], seed=21)
    x = inputs(net, samples=2, seed=1)
    emu = run_network(net, x, backend="emulator", record_state=True)
    lava = run_network(net, x, backend="lava", record_state=True)
    _assert_same(emu, lava, name)
    assert emu.spike_counts.sum() > 0
    if name in ("dead-neuron", "stuck-neuron"):
        # the output layer's chosen neurons, seen on Lava itself
        idx = chosen_neurons(draw_network_noise(dense_net(), name, 21)[-1], LEVELS[name])
        assert idx.size > 0
        s = lava.output_spikes[:, :, idx]
        assert (s.sum() == 0) if name == "dead-neuron" else s.all()
        # the hidden recurrent layer's chosen neurons, on Lava (network truncated after layer 0)
        idx0 = chosen_neurons(draw_network_noise(dense_net(), name, 21)[0], LEVELS[name])
        s0 = layer_spikes(net, x, 0, backend="lava")[:, :, idx0]
        assert (s0.sum() == 0) if name == "dead-neuron" else s0.all()
        if name == "dead-neuron":  # dead dense neurons keep u = v = 0
            assert not lava.final_u[0][:, idx0].any() and not lava.final_v[0][:, idx0].any()


@pytest.mark.parametrize("name", ["dead-neuron", "stuck-neuron"])
def test_conv_dead_and_stuck_on_lava(name):
    net = perturb_network(conv_net(), name, 0.3, seed=5)
    idx = chosen_neurons(draw_network_noise(conv_net(), name, 5)[0], 0.3)
    x = inputs(net, samples=2, seed=2)
    conv_only = truncated(net, 0)
    emu = run_network(conv_only, x, backend="emulator", record_state=True)
    lava = run_network(conv_only, x, backend="lava", record_state=True)
    _assert_same(emu, lava, name)
    s = lava.output_spikes[:, :, idx]
    assert (s.sum() == 0) if name == "dead-neuron" else s.all()


# --------------------------------------------------------------------------- torch side
def _model(arch="mlp", hidden=(6,), **over):
    from _helpers import small_quantized_model

    return small_quantized_model(arch, hidden, **over)


@pytest.mark.parametrize("arch", ["mlp", "srnn"])
def test_float_weight_mismatch_uses_the_same_factors(arch):
    model, res, _ = _model(arch)
    before = copy.deepcopy(model.state_dict())
    out = perturb_float_model(model, "weight-mismatch", 0.2, 13, res)
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), "the input model must not change"
    draws = draw_network_noise(res.network, "weight-mismatch", 13)
    for fl0, fl1, d in zip(_float_layers(model), _float_layers(out), draws):
        factor = (fl1["weight"] / fl0["weight"]).detach().double().numpy()
        np.testing.assert_allclose(factor, 1 + 0.2 * d.weight, rtol=1e-5)
        if d.weight_rec is not None:
            np.testing.assert_allclose((fl1["weight_rec"] / fl0["weight_rec"]).detach().double().numpy(),
                                       1 + 0.2 * d.weight_rec, rtol=1e-5)
    same = perturb_float_model(model, "weight-mismatch", 0.0, 13, res)
    for key, value in model.state_dict().items():
        assert torch.equal(value, same.state_dict()[key])


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_float_dead_and_stuck_use_the_same_neurons(arch):
    over = {"channels": [2], "strides": [2]} if arch == "conv" else {}
    model, res, shape = _model(arch, hidden=(12,), **over)
    x = torch.rand(5, *shape)
    for name, value in (("dead-neuron", 0.0), ("stuck-neuron", 1.0)):
        out = perturb_float_model(model, name, 0.34, 3, res)
        draws = draw_network_noise(res.network, name, 3)
        from neurodeploy.neurons.modules import record_activity
        out.eval()
        with torch.no_grad(), record_activity(out) as recs:
            out(x)
        for rec, d in zip(recs, draws):
            idx = chosen_neurons(d, 0.34)
            assert idx.size > 0
            spikes = rec.spikes.flatten(2)[:, :, idx]
            assert torch.all(spikes == value)
        # the IR picks the same neurons: they are the ones whose bias/weights changed
        ir = perturb_network(res.network, name, 0.34, 3)
        for layer, new, d in zip(res.network.layers, ir.layers, draws):
            changed = layer.neurons.bias_mant != new.neurons.bias_mant
            if isinstance(layer, DenseLayer):
                changed |= np.any(layer.weight != new.weight, axis=1)
            assert set(np.flatnonzero(changed)) <= set(chosen_neurons(d, 0.34))


def test_float_recurrent_dead_and_stuck():
    model, res, shape = _model("srnn", hidden=(8,))
    x = torch.rand(3, *shape)
    from neurodeploy.neurons.modules import record_activity
    for name, value in (("dead-neuron", 0.0), ("stuck-neuron", 1.0)):
        out = perturb_float_model(model, name, 0.25, 4, res)
        out.eval()
        with torch.no_grad(), record_activity(out) as recs:
            out(x)
        idx = chosen_neurons(draw_network_noise(res.network, name, 4)[0], 0.25)
        assert torch.all(recs[0].spikes[:, :, idx] == value)


def test_float_threshold_and_bit_flip_follow_the_ir():
    model, res, _ = _model(hidden=(6,))
    out = perturb_float_model(model, "threshold-mismatch", 0.2, 8, res)
    ir = perturb_network(res.network, "threshold-mismatch", 0.2, 8)
    for fl0, fl1, a, b in zip(_float_layers(model), _float_layers(out), res.network.layers, ir.layers):
        ratio = float(fl1["neurons"].p.v_th) / float(fl0["neurons"].p.v_th)
        assert ratio == pytest.approx(b.neurons.vth / a.neurons.vth, rel=1e-6)
    flipped = perturb_float_model(model, "bit-flip", 0.05, 8, res)
    ir = perturb_network(res.network, "bit-flip", 0.05, 8)
    for i, (fl0, fl1, a, b) in enumerate(zip(_float_layers(model), _float_layers(flipped),
                                             res.network.layers, ir.layers)):
        changed_ir = a.weight != b.weight
        changed_f = (fl0["weight"] != fl1["weight"]).numpy()
        assert changed_ir.any() and np.array_equal(changed_ir, changed_f)
        # the float value of a flipped weight quantizes back to the flipped mantissa
        rep = res.layers[i]
        unit = 2.0 ** (a.weight_exp + 6) / rep.scale / (rep.gain_mean or 1.0)
        if i == 0:
            unit *= res.network.input_encoding.scale
        back = np.rint(fl1["weight"].detach().double().numpy() / unit)
        np.testing.assert_array_equal(back[changed_ir], b.weight[changed_ir])
    with pytest.raises(HardwareNoiseError, match="QuantizationResult"):
        perturb_float_model(model, "bit-flip", 0.05, 8, res.network)


# --------------------------------------------------------------------------- step-noise draw protocol
@pytest.mark.parametrize("name", STEP_NOISE_NAMES)
def test_step_noise_draws_are_batch_invariant(name):
    full = step_noise_draws(name, 7, 1, range(5), 9, 4)
    part = step_noise_draws(name, 7, 1, [3, 1], 9, 4)
    np.testing.assert_array_equal(part, full[[3, 1]])
    assert not np.array_equal(full, step_noise_draws(name, 8, 1, range(5), 9, 4))
    assert not np.array_equal(full, step_noise_draws(name, 7, 0, range(5), 9, 4))
    # a per-step process (Lava, one sample at a time) drawing row by row gets the same numbers
    import zlib
    g = np.random.default_rng([7, zlib.crc32(name.encode()), 1, 2])
    rows = [g.random(4) if name == "spike-drop" else g.standard_normal(4) for _ in range(9)]
    np.testing.assert_array_equal(np.stack(rows), full[2])
    assert float_step_rows(1, 6) == slice(2, 8)


def test_step_noise_integers():
    z = step_noise_draws("membrane-noise", 0, 0, range(50), 20, 50)
    ints = step_noise_integers("membrane-noise", 0.1, 100, z)
    assert ints.dtype == np.int64 and abs(ints.std() / (0.1 * 6400) - 1) < 0.05
    assert not step_noise_integers("current-noise", 0.0, 100, z).any()
    u = step_noise_draws("spike-drop", 0, 0, range(50), 20, 50)
    keep = step_noise_integers("spike-drop", 0.2, 100, u)
    assert abs(1 - keep.mean() - 0.2) < 0.01
    assert np.all(step_noise_integers("spike-drop", 0.1, 100, u) >= keep)  # nested over levels
    with pytest.raises(NoiseSpecError, match="above 1"):
        step_noise_integers("spike-drop", 1.5, 100, u)
    with pytest.raises(NoiseSpecError, match="not a step noise"):
        step_noise_draws("bit-flip", 0, 0, [0], 2, 2)
