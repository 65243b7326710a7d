"""GraphModule: a FloatGraph run in torch, checked against hand-computed steps and Norse's from_nir."""

import numpy as np
import pytest
import torch

from neurodeploy.graph import (LI, LIF, Affine, AvgPool2d, Conv2d, CubaLIF, Flatten, FloatGraph, GraphError, Input,
                               InputGain, Recurrent, SumPool2d)
from neurodeploy.models.graph_module import GraphModule


def _run(graph, steps, **kw):
    """Run a graph with a 1-feature input on the values ``steps`` (one sample), float64."""
    x = torch.tensor(steps, dtype=torch.float64).reshape(len(steps), 1, -1)
    return GraphModule(graph, dtype=torch.float64).forward(x, **kw)


def _one(neuron, *extra):
    return FloatGraph((Input((1,)), Affine(np.ones((1, 1))), neuron, *extra))


@pytest.mark.parametrize("reset, spikes, v", [
    ("zero", [0, 0, 1, 0, 1], [0.6, 0.9, 0.0, 0.0, 0.0]),
    # subtract keeps the excess: 1.05 - 1 = 0.05; 0.0125 + 2 = 2.0125 spikes once and keeps 1.0125
    ("subtract", [0, 0, 1, 0, 1], [0.6, 0.9, 0.05, 0.025, 1.0125]),
])
def test_lif_steps_and_resets(reset, spikes, v):
    out, rec = _run(_one(LIF(leak=0.5, threshold=1.0, reset=reset)), [0.6, 0.6, 0.6, 0.0, 2.0], record=True)
    assert out[:, 0, 0].tolist() == spikes
    np.testing.assert_allclose(rec[2]["v"][:, 0, 0].numpy(), v, atol=1e-12)
    assert torch.equal(rec[2]["spikes"], out)


def test_if_with_bias_and_strict_threshold():
    # leak 1 (IF) with a bias of 0.25: v = 0.25, 0.5, 0.75, 1.0 (not > 1), 1.25 -> spike
    out = _run(_one(LIF(leak=1.0, threshold=1.0, bias=np.array([0.25]))), [0.0] * 6)
    assert out[:, 0, 0].tolist() == [0, 0, 0, 0, 1, 0]


def test_cuba_uses_the_new_current():
    # i = 1, .5, .25, .125; v = 1 (spike, > .9; reset) then .5, .25 + .25 = .5, .25 + .125 = .375
    g = _one(CubaLIF(current_leak=0.5, leak=0.5, threshold=0.9))
    out, rec = _run(g, [1.0, 0.0, 0.0, 0.0], record=True)
    assert out[:, 0, 0].tolist() == [1, 0, 0, 0]
    np.testing.assert_allclose(rec[2]["i"][:, 0, 0].numpy(), [1, 0.5, 0.25, 0.125])
    np.testing.assert_allclose(rec[2]["v"][:, 0, 0].numpy(), [0, 0.5, 0.5, 0.375])


def test_li_potential_readout():
    g = FloatGraph((Input((1,)), Affine(np.ones((1, 1))), LI(leak=0.5, bias=np.array([0.1]))), readout="potential")
    m = GraphModule(g, dtype=torch.float64)
    out = m(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).reshape(3, 1, 1))
    np.testing.assert_allclose(out[:, 0, 0].numpy(), [1.1, 0.65, 0.425])
    assert m.logits(out).item() == pytest.approx(0.425)
    with pytest.raises(GraphError, match="readout 'potential'"):
        GraphModule(FloatGraph(_one(LIF(leak=0.5, threshold=1.0)).nodes, readout="potential"))


def _delay_graph(gain=None):
    # neuron 0 follows the input; neuron 1 only hears neuron 0, through the recurrent weight 3
    nodes = [Input((1,)), Affine(np.array([[2.0], [0.0]]))]
    if gain is not None:
        nodes.append(InputGain(np.full((1, 2), gain)))
    nodes += [LIF(leak=0.0, threshold=1.0), Recurrent(np.array([[0.0, 0.0], [3.0, 0.0]]))]
    return FloatGraph(tuple(nodes))


def test_recurrence_is_delayed_one_step():
    out, rec = _run(_delay_graph(), [1, 0, 0, 1, 0], currents=True)
    assert out[:, 0, 0].tolist() == [1, 0, 0, 1, 0]
    assert out[:, 0, 1].tolist() == [0, 1, 0, 0, 1]  # t -> t + 1
    np.testing.assert_allclose(rec[2]["current"][:, 0, 1].numpy(), [0, 3, 0, 0, 3])


def test_input_gain_scales_the_recurrent_current_too():
    out, rec = _run(_delay_graph(gain=0.3), [1, 0, 0, 1, 0], currents=True)
    # 0.3 * 2 = 0.6 < 1: neuron 0 is silent, so neuron 1 too; bigger input: 0.3 * 2 * 2 = 1.2
    assert out.sum() == 0
    out, rec = _run(_delay_graph(gain=0.3), [2, 0, 0, 0], currents=True)
    assert out[:, 0, 0].tolist() == [1, 0, 0, 0]
    assert out[:, 0, 1].tolist() == [0, 0, 0, 0]  # 0.3 * 3 = 0.9 < 1: the gain reaches the recurrent part
    np.testing.assert_allclose(rec[3]["current"][:, 0, 1].numpy(), [0, 0.9, 0, 0], atol=1e-12)
    out = _run(_delay_graph(gain=0.5), [2, 0, 0, 0])
    assert out[:, 0, 1].tolist() == [0, 1, 0, 0]  # 0.5 * 3 = 1.5 > 1


def test_per_step_gain_holds_its_last_value():
    g = FloatGraph((Input((1,)), Affine(np.ones((1, 1))), InputGain(np.array([1.0, 0.5])), LI(leak=0.0)))
    out, rec = _run(g, [1.0, 1.0, 1.0, 1.0], currents=True)
    np.testing.assert_allclose(out[:, 0, 0].numpy(), [1, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(rec[3]["current"][:, 0, 0].numpy(), [1, 0.5, 0.5, 0.5])


def test_stateless_nodes_match_torch():
    torch.manual_seed(0)
    w = np.random.default_rng(0).normal(size=(3, 2, 3, 3))
    b = np.array([0.1, -0.2, 0.3])
    g = FloatGraph((Input((2, 6, 5)), Conv2d(w, b, stride=(2, 1), padding=(1, 1)), SumPool2d((2, 2), (2, 2)),
                    Flatten()), readout="mean")
    x = (torch.rand(4, 3, 2, 6, 5, dtype=torch.float64) > 0.5).double()
    out = GraphModule(g, dtype=torch.float64)(x)
    conv = torch.nn.functional.conv2d(x.flatten(0, 1), torch.tensor(w), torch.tensor(b), stride=(2, 1), padding=1)
    want = torch.nn.functional.avg_pool2d(conv, 2) * 4
    torch.testing.assert_close(out, want.reshape(4, 3, -1))
    assert list(out.shape) == [4, 3, int(np.prod(g.shapes()[-1]))]
    # a sum pool of spikes is exact; the mean pool divides by the window (zero padding counted)
    s = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64).reshape(1, 1, 1, 2, 2)
    for node, want in ((SumPool2d((2, 2), (2, 2)), 3.0), (AvgPool2d((2, 2), (2, 2)), 0.75),
                       (AvgPool2d((2, 2), (2, 2), (1, 1)), 0.25)):
        got = GraphModule(FloatGraph((Input((1, 2, 2)), node)), dtype=torch.float64)(s)
        assert got[0, 0, 0, 0, 0].item() == want


def test_readouts_and_input_shape_check():
    g = _one(LIF(leak=0.0, threshold=0.5))
    m = GraphModule(g)
    out = m(torch.tensor([1.0, 0.0, 1.0]).reshape(3, 1, 1))
    assert m.logits(out).item() == 2.0
    mean = GraphModule(FloatGraph(g.nodes, readout="mean"))
    assert mean.logits(out).item() == pytest.approx(2 / 3)
    with pytest.raises(GraphError, match="expected"):
        m(torch.zeros(3, 1, 2))


def test_gradients_flow_through_the_surrogate():
    g = _one(LIF(leak=0.5, threshold=1.0))
    x = torch.full((4, 2, 1), 0.8, requires_grad=True)
    GraphModule(g)(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    m = GraphModule(g, trainable=True)
    m(torch.full((4, 2, 1), 0.8)).sum().backward()
    assert m.n1_weight.grad is not None


@pytest.mark.filterwarnings("ignore:nirtorch.load is being deprecated:DeprecationWarning")
def test_equals_norse_from_nir():
    """Where Norse's from_nir(dt=1) is exact (tau = 2, 4: per-step factors are powers of two)."""
    import nir
    from norse.torch import from_nir

    rng = np.random.default_rng(3)
    w0 = rng.normal(size=(6, 5)).astype(np.float32) * 2
    w1 = rng.normal(size=(4, 6)).astype(np.float32) * 2
    w2 = rng.normal(size=(3, 4)).astype(np.float32) * 2
    ones = np.ones
    ng = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([5])}),
        "fc0": nir.Affine(weight=w0, bias=np.zeros(6, np.float32)),
        # Norse ignores LIF's r: dv = dt/tau (v_leak - v + I); our leak 1 - 1/2, input W/2
        "lif": nir.LIF(tau=ones(6) * 2, r=ones(6), v_leak=ones(6) * 0, v_threshold=ones(6) * 0.5,
                       v_reset=ones(6) * 0),
        "fc1": nir.Affine(weight=w1, bias=np.zeros(4, np.float32)),
        # i = i + dt/tau_syn (w_in x - i) = .5 i + x (w_in = 2); v = v + dt/tau_mem (r i - v) = .75 v + i
        "cuba": nir.CubaLIF(tau_syn=ones(4) * 2, tau_mem=ones(4) * 4, r=ones(4) * 4, v_leak=ones(4) * 0,
                            v_threshold=ones(4) * 1.5, v_reset=ones(4) * 0, w_in=ones(4) * 2),
        "fc2": nir.Affine(weight=w2, bias=np.zeros(3, np.float32)),
        "if": nir.IF(r=ones(3), v_threshold=ones(3), v_reset=ones(3) * 0),
        "output": nir.Output(output_type={"output": np.array([3])}),
    }, edges=[("input", "fc0"), ("fc0", "lif"), ("lif", "fc1"), ("fc1", "cuba"), ("cuba", "fc2"), ("fc2", "if"),
              ("if", "output")])
    graph = FloatGraph((Input((5,)), Affine(w0 / 2.0), LIF(leak=0.5, threshold=0.5), Affine(w1),
                        CubaLIF(current_leak=0.5, leak=0.75, threshold=1.5), Affine(w2),
                        LIF(leak=1.0, threshold=1.0)))
    x = (torch.rand(12, 4, 5, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    module = from_nir(ng, dt=1.0)
    state, outs = None, []
    with torch.no_grad():
        for t in range(x.shape[0]):
            out, state = module(x[t], state)
            outs.append(out)
        want = torch.stack(outs)
        got, rec = GraphModule(graph)(x, record=True)
    assert all(rec[i]["spikes"].sum() > 0 for i in (2, 4, 6))  # every layer is active
    torch.testing.assert_close(got, want, rtol=0, atol=0)
