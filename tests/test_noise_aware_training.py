"""Noise-aware training on every chip-instance noise, for the MLP, the conv net and the SRNN.

Three claims per (architecture, noise): a tiny training run works (finite
loss), the straight-through gradient lands on the model's parameters of the
same name (never by position), and the float perturbation is the one the
emulator applies to the quantized network for that seed.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

from neurodeploy.backends import run_network
from neurodeploy.backends.base import shift
from neurodeploy.config import config_from_dict
from neurodeploy.data import load_dataset
from neurodeploy.ir import ConvLayer, Network
from neurodeploy.models import build_model
from neurodeploy.neurons.modules import record_activity
from neurodeploy.noise import NETWORK_NOISE_NAMES
from neurodeploy.noise.hardware import (
    chosen_neurons,
    draw_network_noise,
    perturb_float_model,
    perturb_network,
    weight_grid,
)
from neurodeploy.quant import load_profile, quantize_model
from neurodeploy.quant.quantizer import _float_layers
from neurodeploy.train import train
from neurodeploy.train.loop import _chip_noise_step, straight_through_grads, training_loss

ARCHS = ("mlp", "conv", "srnn")
LEVELS = {"weight-mismatch": 0.2, "bit-flip": 0.02, "dead-neuron": 0.3, "stuck-neuron": 0.3,
          "threshold-mismatch": 0.3}
SEED = 5


def _cfg(arch: str, **over):
    """A tiny config shaped like the shipped one of ``arch`` (DLIF, no bias, spike readout)."""
    if arch == "srnn":   # models/vowels-srnn-dlif.yaml, shrunk
        data = {"dataset": "vowels", "encoder": "temporal", "time_steps": None}
        model = {"arch": "srnn", "hidden": [8], "neuron": {"type": "dlif", "leak": 0.9}}
        reg = {"mppd": {"rho": 1.0}, "bound": {"weight": 0.1, "window": 5}}
    else:                # models/mnist5k-{mlp,conv}-dlif.yaml on 8x8 digits
        data = {"dataset": "digits", "encoder": "direct", "time_steps": 4}
        model = {"arch": arch, "hidden": [12], "neuron": {"type": "dlif"}}
        if arch == "conv":
            model.update(channels=[2], strides=[2])
        reg = {"mppd": {"rho": 1.0}}
    base = {"name": f"tiny-{arch}", "seed": 3, "threads": 1, "data": data, "model": model,
            "training": {"mode": "gaussian", "epochs": 1, "batch_size": 32, "lr": 0.05}, "regularizer": reg}
    for dotted, value in over.items():
        node = base
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return config_from_dict(base)


def _noise(name: str) -> dict:
    return {"training.hardware_noise": name, "training.hardware_noise_level": LEVELS[name]}


_DATA: dict = {}
_MODELS: dict = {}


def _data(arch: str):
    ds = "vowels" if arch == "srnn" else "digits"
    if ds not in _DATA:
        _DATA[ds] = load_dataset(ds, seed=0).subset(64, 40)
    return _DATA[ds]


def _activate(model, x: torch.Tensor, target: float = 0.22) -> None:
    """Scale each layer's weights, in order, until it spikes at about ``target`` (an untrained net is silent)."""
    layers = model.spiking_layers()
    for fl in _float_layers(model):
        i = next(k for k, m in enumerate(layers) if m is fl["neurons"])
        for _ in range(30):
            with torch.no_grad(), record_activity(model) as recs:
                model(x)
            rate = float(recs[i].spikes.mean())
            if abs(rate - target) < 0.07:
                break
            with torch.no_grad():
                fl["weight"].mul_(1.3 if rate < target else 0.8)


def _active_model(arch: str):
    """``(model, quantization, input_shape)``: a tiny active float model and its loihi2 quantization."""
    if arch not in _MODELS:
        cfg, data = _cfg(arch), _data(arch)
        torch.manual_seed(0)
        model = build_model(cfg, data.input_shape, data.n_classes)
        model.eval()
        _activate(model, torch.as_tensor(data.x_train[:64]).float())
        steps = cfg.data.time_steps or data.input_shape[0]
        _MODELS[arch] = (model, quantize_model(model, data.input_shape, load_profile("loihi2"), time_steps=steps),
                         data.input_shape)
    return _MODELS[arch]


def _chip_inputs(net: Network, x: np.ndarray, arch: str) -> np.ndarray:
    """Integer inputs of ``net`` for samples ``x`` in [0, 1] (what the float model sees, on the chip's grid)."""
    ints = net.input_encoding.encode(x)
    if arch == "srnn":          # temporal: the sequence is the input, step by step
        return ints
    return np.broadcast_to(ints[:, None], (ints.shape[0], net.time_steps, *ints.shape[1:]))


def _layer_spikes(net: Network, x: np.ndarray, i: int) -> np.ndarray:
    """Emulator spikes of layer ``i`` over every simulated step: (samples, steps, n)."""
    head = Network(input_shape=net.input_shape, layers=copy.deepcopy(net.layers[:i + 1]),
                   time_steps=net.time_steps, input_encoding=net.input_encoding)
    return run_network(head, x, backend="emulator").output_spikes


def bias_values(layer) -> np.ndarray:
    """Effective per-neuron bias of an IR layer (the exponent may differ between two networks)."""
    return shift(np.asarray(layer.neurons.bias_mant).astype(np.int64), int(layer.neurons.bias_exp))


def _unit(res, i: int, exp: int, recurrent: bool) -> float:
    """Float value of one weight mantissa unit of layer ``i`` (the quantizer's scale, DLIF gain folded)."""
    rep = res.layers[i]
    unit = 2.0 ** (exp + 6) / rep.scale / (rep.gain_mean or 1.0)
    if i == 0 and not recurrent and res.network.input_encoding.kind == "graded":
        unit *= res.network.input_encoding.scale
    return unit


def _weights(fl: dict, layer) -> list[tuple[str, torch.Tensor, np.ndarray, int]]:
    """(key, float weight, IR mantissas, weight exponent) of a layer's feed-forward and recurrent weights."""
    out = [("weight", fl["weight"], layer.weight, int(layer.weight_exp))]
    if fl.get("weight_rec") is not None:
        out.append(("weight_rec", fl["weight_rec"], layer.weight_rec, int(layer.weight_rec_exp)))
    return out


# --------------------------------------------------------------------------- (a) it trains
@pytest.mark.parametrize("name", NETWORK_NOISE_NAMES)
@pytest.mark.parametrize("arch", ARCHS)
def test_tiny_training_run(tmp_path, arch, name):
    cfg = _cfg(arch, **_noise(name))
    torch.manual_seed(0)
    before = build_model(cfg, _data(arch).input_shape, _data(arch).n_classes).state_dict()
    result = train(cfg, tmp_path / "run", progress=False, data=_data(arch), log=lambda s: None)
    rec = result.metrics[0]
    assert math.isfinite(rec["train_loss"]) and rec["train_loss"] > 0
    after = result.model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.isfinite(v).all() for v in after.values())


# --------------------------------------------------------------------------- (b) the right tensors
@pytest.mark.parametrize("name", NETWORK_NOISE_NAMES)
@pytest.mark.parametrize("arch", ARCHS)
def test_gradient_reaches_the_same_named_parameters(arch, name):
    """``_chip_noise_step`` gives each parameter exactly the gradient of its namesake in the perturbed copy."""
    cfg = _cfg(arch, **_noise(name))
    base, _, shape = _active_model(arch)
    data = _data(arch)
    x, y = torch.as_tensor(data.x_train[:32]).float(), torch.as_tensor(data.y_train[:32]).long()
    model, twin = copy.deepcopy(base), copy.deepcopy(base)
    model.train()
    twin.train()
    loss, _ = _chip_noise_step(model, cfg, x, y, torch.Generator().manual_seed(1), shape)
    # the same step by hand: the same chip instance, the copy's own gradients
    g = torch.Generator().manual_seed(1)
    quant = quantize_model(twin, shape, load_profile("loihi2"), time_steps=cfg.data.time_steps or shape[0])
    chip = int(torch.randint(0, 2**31 - 1, (1,), generator=g))
    noisy = perturb_float_model(twin, name, LEVELS[name], chip, quant)
    noisy.train()
    loss_copy, _ = training_loss(noisy, cfg, x, y, g)
    loss_copy.backward()
    assert torch.isfinite(loss) and float(loss.detach()) == pytest.approx(float(loss_copy.detach()), rel=1e-6)

    named, noisy_named = dict(model.named_parameters()), dict(noisy.named_parameters())
    assert named.keys() == noisy_named.keys()
    for key, p in named.items():
        q = noisy_named[key]
        assert p.shape == q.shape, key
        assert twin.get_parameter(key).grad is None, f"{key}: the clean twin got a gradient"
        assert (p.grad is None) == (q.grad is None), key
        if q.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=key)
    # every weight and gain influences the loss: each gets a non-zero gradient
    for key, p in named.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{key}: no gradient"
    if name in ("dead-neuron", "stuck-neuron"):
        # a forced neuron's own input weights do not matter on the chip: their rows get exactly 0
        draws = draw_network_noise(quant.network, name, chip)
        for fl, d, layer in zip(_float_layers(model), draws, quant.network.layers):
            idx = torch.as_tensor(chosen_neurons(d, LEVELS[name]))
            assert idx.numel() > 0
            if isinstance(layer, ConvLayer):
                continue     # the kernel is shared with neurons that are not forced
            for key in ("weight", "weight_rec"):
                if fl.get(key) is not None:
                    assert not fl[key].grad[idx].any(), f"{key} rows of forced neurons"
                    others = torch.ones(fl[key].shape[0], dtype=torch.bool)
                    others[idx] = False
                    assert fl[key].grad[others].any()


def test_straight_through_refuses_a_copy_with_other_parameters():
    model = _active_model("srnn")[0]
    extra = copy.deepcopy(model)
    lin = _float_layers(extra)[0]["neurons"].input_weights
    lin.bias = torch.nn.Parameter(torch.zeros(lin.out_features))   # what dead-neuron used to add
    with pytest.raises(AssertionError, match=r"extra \['body\.0\.input_weights\.bias'\]"):
        straight_through_grads(model, extra)
    reshaped = copy.deepcopy(model)
    rec = _float_layers(reshaped)[0]["neurons"].recurrent_weights
    rec.weight = torch.nn.Parameter(rec.weight.detach()[:, :4].clone())
    with pytest.raises(AssertionError, match="recurrent_weights.weight.*shape"):
        straight_through_grads(model, reshaped)


# --------------------------------------------------------------------------- (c) the emulator's perturbation
@pytest.mark.parametrize("name", NETWORK_NOISE_NAMES)
@pytest.mark.parametrize("arch", ARCHS)
def test_float_perturbation_is_the_emulators(arch, name):
    model, res, _ = _active_model(arch)
    level = LEVELS[name]
    before = copy.deepcopy(model.state_dict())
    noisy = perturb_float_model(model, name, level, SEED, res)
    ir = perturb_network(res.network, name, level, SEED)
    draws = draw_network_noise(res.network, name, SEED)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()), "the model must not change"
    assert [(k, p.shape) for k, p in noisy.named_parameters()] == [(k, p.shape) for k, p in model.named_parameters()]

    x = _data(arch).x_test[:40].astype(np.float32)
    chip_x = _chip_inputs(res.network, x, arch)
    layers0, layers1 = _float_layers(model), _float_layers(noisy)
    for i, (fl0, fl1, clean, new, d) in enumerate(zip(layers0, layers1, res.network.layers, ir.layers, draws)):
        w0, w1 = _weights(fl0, clean), _weights(fl1, new)
        if name == "weight-mismatch":
            lo, hi, step = weight_grid(new.sign_mode, new.num_weight_bits)
            for (key, f0, m0, exp), (_, f1, m1, _), z in zip(w0, w1, (d.weight, d.weight_rec)):
                factor = 1 + level * z
                np.testing.assert_allclose((f1 / f0).detach().double().numpy(), factor, rtol=1e-5)
                # dequantized at the layer's scale, the float weight is the IR's mantissa up to the two roundings
                back = f1.detach().double().numpy() / _unit(res, i, exp, key == "weight_rec")
                inside = (m1 > lo) & (m1 < hi)
                tol = step / 2 * np.abs(factor) + step / 2 + 1e-6
                assert np.all(np.abs(back - m1)[inside] <= tol[inside]), (i, key)
        elif name == "bit-flip":
            for (key, f0, m0, exp), (_, f1, m1, _) in zip(w0, w1):
                changed = m0 != m1
                assert np.array_equal(changed, (f0 != f1).numpy()), (i, key)
                back = np.rint(f1.detach().double().numpy() / _unit(res, i, exp, key == "weight_rec"))
                np.testing.assert_array_equal(back[changed], m1[changed], err_msg=f"layer {i} {key}")
        elif name == "threshold-mismatch":
            ratio = float(fl1["neurons"].p.v_th) / float(fl0["neurons"].p.v_th)
            assert ratio == pytest.approx(new.neurons.vth / clean.neurons.vth, rel=1e-6)
        else:
            idx = chosen_neurons(d, level)
            value = 1 if name == "stuck-neuron" else 0
            assert idx.size > 0
            # the IR changes only the chosen neurons' bias (and their rows)
            changed = bias_values(clean) != bias_values(new)
            if not isinstance(clean, ConvLayer):
                changed |= np.any(clean.weight != new.weight, axis=1)
            assert set(np.flatnonzero(changed)) <= set(idx.tolist())
            fixed = _layer_spikes(ir, chip_x, i)[:, :, idx]          # every simulated step
            assert np.all(fixed == value), f"layer {i}: emulator"
    if name in ("dead-neuron", "stuck-neuron"):
        noisy.eval()
        with torch.no_grad(), record_activity(noisy) as recs:
            noisy(torch.as_tensor(x))
        for i, (rec, d) in enumerate(zip(recs, draws)):
            idx = chosen_neurons(d, level)
            assert torch.all(rec.spikes.flatten(2)[:, :, idx] == (name == "stuck-neuron")), f"layer {i}: float"

    # the perturbed float model and the perturbed fixed-point network agree as well as the clean pair does
    def counts(m, net):
        m.eval()
        with torch.no_grad(), record_activity(m) as recs:
            logits = m(torch.as_tensor(x))
        emu = run_network(net, chip_x, backend="emulator")
        return recs[-1].spikes.sum(0).numpy(), emu.aligned_output().sum(1), logits.argmax(1).numpy(), emu.predictions()

    fc0, ec0, _, _ = counts(model, res.network)
    fc1, ec1, fp1, ep1 = counts(noisy, ir)
    assert not np.array_equal(ec1, ec0), "the noise changed nothing"
    clean_gap, noisy_gap = np.abs(fc0 - ec0).mean(), np.abs(fc1 - ec1).mean()
    assert noisy_gap <= 2 * clean_gap + 0.25, (clean_gap, noisy_gap)
    assert np.mean(fp1 == ep1) >= 0.8


def test_conv_dead_and_stuck_raise_the_bias_exponent_exactly():
    """The default bias-free conv layers: a bias exponent above the profile's keeps the dead/stuck
    neurons provable, the other neurons' biases exact (all 0), and the emulator equals Lava."""
    _, res, _ = _active_model("conv")
    x = _chip_inputs(res.network, _data("conv").x_test[:2].astype(np.float32), "conv")
    x = np.concatenate([x, np.full_like(x[:1], 255)])    # a saturated input too
    for name in ("dead-neuron", "stuck-neuron"):
        ir = perturb_network(res.network, name, 1.0, SEED)   # every neuron forced
        conv = ir.layers[0]
        assert not np.any(res.network.layers[0].neurons.bias_mant)
        assert conv.neurons.bias_exp > res.network.layers[0].neurons.bias_exp  # the layer's 6 is not enough
        head = Network(input_shape=ir.input_shape, layers=copy.deepcopy(ir.layers[:1]),
                       time_steps=ir.time_steps, input_encoding=ir.input_encoding)
        emu = run_network(head, x, backend="emulator")
        lava = run_network(head, x, backend="lava")
        np.testing.assert_array_equal(emu.output_spikes, lava.output_spikes)
        assert np.all(emu.output_spikes == (name == "stuck-neuron"))


# --------------------------------------------------------------------------- the command line
def test_cli_trains_the_shipped_srnn_with_dead_neurons(tmp_path):
    """The acceptance command of issue 8 (one noise; the others are the in-process tests above)."""
    from neurodeploy.cli import main

    rc = main(["train", "--config", "models/vowels-srnn-dlif.yaml", "--epochs", "1", "--out", str(tmp_path / "r"),
               "--set", "training.hardware_noise=dead-neuron", "--set", "training.hardware_noise_level=0.2",
               "--quiet"])
    assert rc == 0 and (tmp_path / "r" / "checkpoint.pt").is_file()


def test_cli_refuses_a_chip_instance_the_fixed_point_network_cannot_hold(tmp_path, monkeypatch, capsys):
    from neurodeploy.cli import main
    from neurodeploy.noise import hardware

    def refuse(network, name, level, seed):
        raise hardware.HardwareNoiseError(f"{name} in layer 0: conv neurons share their kernel, so ...")

    monkeypatch.setattr(hardware, "perturb_network", refuse)
    rc = main(["train", "--config", "models/vowels-srnn-dlif.yaml", "--epochs", "1", "--out", str(tmp_path / "r"),
               "--set", "training.hardware_noise=stuck-neuron", "--set", "training.hardware_noise_level=0.2",
               "--set", "model.hidden=[8]", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1
    assert "training.hardware_noise=stuck-neuron" in err[0] and "stuck-neuron in layer 0" in err[0]
    assert "Traceback" not in err[0]
