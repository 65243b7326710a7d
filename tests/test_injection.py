"""Noise-agnostic injections (neurodeploy.backends.injection): any injector, every kind and combination of
kinds (a_in, v, keep) on any layer, the emulator (fast and general paths) and Lava bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

from neurodeploy.backends import BackendError, LayerInjection, StepInjector, run_network
from neurodeploy.backends import emulator as emu_mod
from neurodeploy.backends.injection import INJECTION_KINDS, injection_layout
from neurodeploy.ir import ConvLayer, DenseLayer, InputEncoding, Network, Neurons
from neurodeploy.noise.step import StepNoise, fixed_step_noise


class Injector:
    """Not a noise: fixed kinds per layer, integers from a seed (what a new noise would provide)."""

    def __init__(self, layout, seed=0, scale=3000):
        self.layout, self.seed, self.scale = [tuple(k) for k in layout], seed, scale

    def injection_layout(self, network):
        return list(self.layout)

    def injections(self, network, samples):
        P = network.time_steps + len(network.layers)
        out = []
        for i, (kinds, layer) in enumerate(zip(self.layout, network.layers)):
            if not kinds:
                out.append(None)
                continue
            n = int(np.prod(layer.out_shape))
            arrays = {}
            for k in kinds:
                per = [np.random.default_rng([self.seed, i, INJECTION_KINDS.index(k), int(s)]) for s in samples]
                if k == "keep":
                    arrays[k] = np.stack([g.random((P, n)) >= 0.3 for g in per])
                else:
                    arrays[k] = np.stack([g.integers(-self.scale, self.scale, (P, n)) for g in per])
            out.append(LayerInjection(**arrays))
        return out


def _net(seed=0, T=5) -> Network:
    rng = np.random.default_rng(seed)

    def nrn(n, du, dv, vth):
        return Neurons(du=du, dv=dv, vth=vth, bias_mant=rng.integers(-20, 40, n).astype(np.int64), bias_exp=3)

    conv = ConvLayer(weight=rng.integers(-50, 120, (2, 1, 2, 2)), in_shape=(1, 4, 4), weight_exp=2,
                     neurons=nrn(18, 3000, 2000, 40))
    rec = DenseLayer(weight=rng.integers(-60, 120, (6, 18)), neurons=nrn(6, 1000, 500, 600), weight_exp=1,
                     weight_rec=rng.integers(-100, 100, (6, 6)), weight_rec_exp=2)
    out = DenseLayer(weight=rng.integers(-80, 200, (3, 6)), neurons=nrn(3, 4095, 300, 300), weight_exp=3)
    return Network(input_shape=(1, 4, 4), layers=[conv, rec, out], time_steps=T,
                   input_encoding=InputEncoding("spikes"))


def _inputs(n=3, seed=1):
    return (np.random.default_rng(seed).random((n, 5, 1, 4, 4)) < 0.5).astype(np.int64)


def _same(a, b):
    np.testing.assert_array_equal(a.output_spikes, b.output_spikes)
    np.testing.assert_array_equal(a.spike_counts, b.spike_counts)
    for x, y in zip(a.final_u + a.final_v, b.final_u + b.final_v):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(a.layer_spikes, b.layer_spikes):
        np.testing.assert_array_equal(x, y)


LAYOUTS = {
    "all-kinds-everywhere": [("a_in", "v", "keep"), ("a_in", "v", "keep"), ("a_in", "v")],
    "keep-only": [("keep",), ("keep",), ()],
    "mixed": [("v",), ("a_in", "keep"), ("keep",)],
}


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_any_injector_emulator_equals_lava(name, monkeypatch):
    net, x = _net(), _inputs()
    inj = Injector(LAYOUTS[name], seed=4)
    kw = dict(record_state=True, record_spikes=True, step_noise=inj, sample_ids=[7, 2, 9])
    emu = run_network(net, x, **kw)
    with monkeypatch.context() as m:
        m.setattr(emu_mod, "FAST_A_LIMIT", 0)
        _same(emu, run_network(net, x, **kw))
    _same(emu, run_network(net, x, backend="lava", **kw))
    clean = run_network(net, x, record_state=True, record_spikes=True)
    assert not all(np.array_equal(p, q) for p, q in zip(emu.final_v, clean.final_v))
    # per sample: batching and the other samples change nothing
    one = run_network(net, x[1:2], record_state=True, record_spikes=True, step_noise=inj, sample_ids=[2])
    np.testing.assert_array_equal(one.output_spikes[0], emu.output_spikes[1])


def test_step_noise_is_an_injector():
    net = _net()
    noise = StepNoise("membrane-noise", 0.4, 3)
    assert isinstance(noise, StepInjector)
    layout = injection_layout(net, noise)
    assert layout == [("v",), ("v",), ("v",)]
    arrays = fixed_step_noise(net, noise, [0, 5])
    for a, inj in zip(arrays, noise.injections(net, [0, 5])):
        np.testing.assert_array_equal(inj.v, a)
        assert inj.kinds == ("v",)
    assert injection_layout(net, StepNoise("spike-drop", 0.2, 3)) == [("keep",), ("keep",), ()]
    assert injection_layout(net, StepNoise("current-noise", 0.0, 3)) == [(), (), ()]


def test_a_bad_injector_is_a_backend_error():
    net, x = _net(), _inputs(1)
    with pytest.raises(BackendError, match="step injector"):
        run_network(net, x, step_noise=object())
    with pytest.raises(BackendError, match="layout"):
        run_network(net, x, step_noise=Injector([("spin",), (), ()]))

    class Liar(Injector):
        def injections(self, network, samples):
            return [None] * len(network.layers)

    with pytest.raises(BackendError, match="layer 0 injects"):
        run_network(net, x, step_noise=Liar([("v",), (), ()]))
