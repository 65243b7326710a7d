"""MS-MPPD, the recurrent bound penalty and SNN-RAT."""

import math
from types import SimpleNamespace

import pytest
import torch

from neurodeploy.config import NeuronConfig
from neurodeploy.neurons import RecurrentSpikingNeurons, SpikingNeurons, record_activity
from neurodeploy.train.regularizers import (
    bound_penalty,
    gain_bound,
    gain_penalty,
    mppd_penalty,
    perturbation_dynamics,
    select_layers,
    snn_rat_step,
)


def test_perturbation_dynamics_hand_computed():
    d = torch.tensor([1.0, -1.0, 0.0, 2.0])
    # eps = 1, 0.5 - 1 = -0.5, -0.25, -0.125 + 2 = 1.875
    assert perturbation_dynamics(d, 0.5).tolist() == [1.0, -0.5, -0.25, 1.875]
    # current-based: the current filter first (e_i = 1, -0.5, -0.25, 1.875), then the membrane
    assert perturbation_dynamics(d, 0.5, 0.5).tolist() == pytest.approx([1.0, 0.0, -0.25, 1.75])


def test_mppd_value_hand_computed():
    layer = SpikingNeurons(NeuronConfig(type="lif", leak=0.5), 3)
    clean = torch.tensor([[1.0, 2.0], [0.0, 0.0], [1.0, 1.0]]).view(3, 1, 2)
    pert = torch.tensor([[0.0, 2.0], [1.0, 0.0], [1.0, 0.0]]).view(3, 1, 2)
    # dI = [1,0], [-1,0], [0,1]; eps = [1,0], [-0.5,0], [-0.25,1]; sum eps^2 = 2.3125 over 6 entries
    v = mppd_penalty([SimpleNamespace(current=clean)], [SimpleNamespace(current=pert)], [layer], [0])
    assert v.item() == pytest.approx(2.3125 / 6)


def _mlp(kind="dlif"):
    torch.manual_seed(0)
    neuron = NeuronConfig(type=kind)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), SpikingNeurons(neuron, 4))


def _v(model, x, x_pert):
    layer = model[1]
    with record_activity(model) as clean:
        model(x)
    with record_activity(model) as pert:
        model(x_pert)
    return mppd_penalty(clean, pert, [layer], [0])


def test_mppd_gradient_flows_only_through_perturbed_pass():
    model = _mlp()
    x = torch.rand(4, 3, 6, requires_grad=True)
    x_pert = (x.detach() + 0.3 * torch.randn(4, 3, 6)).requires_grad_(True)
    v = _v(model, x, x_pert)
    assert v.item() > 0
    v.backward()
    assert x.grad is None  # the clean current is detached
    assert x_pert.grad is not None and x_pert.grad.abs().sum() > 0
    # V acts on the current before the gain, so only the synapse gets a gradient
    assert model[1].gain.grad is None
    grads = [p.grad.clone() for p in model[0].parameters()]
    # the same gradient when the clean pass is run without autograd at all
    model.zero_grad()
    with torch.no_grad(), record_activity(model) as clean:
        model(x.detach())
    with record_activity(model) as pert:
        model(x_pert.detach())
    mppd_penalty(clean, pert, [model[1]], [0]).backward()
    for g, p in zip(grads, model[0].parameters()):
        assert torch.allclose(g, p.grad)


def test_descending_mppd_lowers_it():
    model = _mlp()
    x = torch.rand(4, 8, 6)
    x_pert = x + 0.3 * torch.randn(4, 8, 6)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    values = []
    for _ in range(5):
        v = _v(model, x, x_pert)
        values.append(v.item())
        opt.zero_grad()
        v.backward()
        opt.step()
    assert all(b < a for a, b in zip(values, values[1:]))


def test_mppd_zero_without_perturbation():
    model = _mlp()
    x = torch.rand(4, 3, 6)
    assert _v(model, x, x.clone()).item() == 0.0


def test_select_layers():
    layers = [object()] * 3
    assert select_layers(layers, "last", readout_spiking=True) == [1]
    assert select_layers(layers, "last", readout_spiking=False) == [2]
    assert select_layers(layers, "all", readout_spiking=True) == [0, 1]
    assert select_layers(layers, [0, -1], readout_spiking=True) == [0, 2]
    with pytest.raises(ValueError, match="index 5"):
        select_layers(layers, [5], readout_spiking=True)


def test_bound_penalty_hand_computed():
    layer = RecurrentSpikingNeurons(1, 1, NeuronConfig(type="lif", leak=0.5), 2)

    def rec(total, ff):
        return SimpleNamespace(current=torch.tensor(total).view(2, 1, 1), input_current=torch.tensor(ff).view(2, 1, 1))

    # dI_total = [1, 2] -> eps = [1, 2.5]; dI_in = [1, 1] -> eps_in = [1, 1.5]
    r = bound_penalty([rec([1.0, 3.0], [1.0, 1.0])], [rec([0.0, 1.0], [0.0, 0.0])], [layer], window=2)
    num, den = math.sqrt(1 + 2.5**2) + 1e-2, math.sqrt(1 + 1.5**2) + 1e-2
    assert r.item() == pytest.approx(math.log(num / den) ** 2, rel=1e-5)
    # no amplification by the recurrent loop (total == feed-forward): no penalty
    same = bound_penalty([rec([1.0, 1.0], [1.0, 1.0])], [rec([0.0, 0.0], [0.0, 0.0])], [layer], window=2)
    assert same.item() == 0.0


def test_bound_penalty_gradient_and_gain_bound():
    torch.manual_seed(0)
    layer = RecurrentSpikingNeurons(3, 4, NeuronConfig(type="dlif", leak=0.75), 6)
    total_c, total_p = torch.randn(6, 2, 4, requires_grad=True), torch.randn(6, 2, 4, requires_grad=True)
    ff_c, ff_p = (0.1 * torch.randn(6, 2, 4)).requires_grad_(True), (0.1 * torch.randn(6, 2, 4)).requires_grad_(True)
    r = bound_penalty([SimpleNamespace(current=total_c, input_current=ff_c)],
                      [SimpleNamespace(current=total_p, input_current=ff_p)], [layer], window=3)
    assert r.item() > 0  # total perturbation ~10x the feed-forward one: amplified
    r.backward()
    assert total_c.grad is None and ff_c.grad is None  # clean pass detached
    assert total_p.grad.abs().sum() > 0 and ff_p.grad.abs().sum() > 0
    x = torch.rand(6, 2, 3)
    with record_activity(layer) as clean:
        layer(x)
    with record_activity(layer) as pert:
        layer(x + 0.5 * torch.randn(6, 2, 3))
    g = gain_bound(layer, iterations=50)
    exact = 2.0 * (torch.linalg.matrix_norm(layer.input_weights.weight, 2)
                   + torch.linalg.matrix_norm(layer.recurrent_weights.weight, 2))
    assert g.item() == pytest.approx(exact.item(), rel=1e-3)  # sqrt(1/(1-0.75)) = 2, gain p = 1
    assert gain_penalty([layer], target=g.item() * 2).item() == 0.0  # below target: no penalty
    assert gain_penalty([layer], target=g.item() / 2).item() == pytest.approx(1.0, rel=1e-2)
    with pytest.raises(ValueError, match="recurrent"):
        bound_penalty(clean, pert, [SpikingNeurons(NeuronConfig(), 6)], window=3)


def test_snn_rat_step_moves_towards_orthogonal():
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 8, bias=False)
    with torch.no_grad():
        lin.weight.mul_(3.0)
    eye = torch.eye(8)

    def err():
        return torch.linalg.matrix_norm(lin.weight @ lin.weight.t() - eye).item()

    before = err()
    w0 = lin.weight.clone()
    snn_rat_step(lin, 5e-4)
    expected = 1.0005 * w0 - 5e-4 * (w0 @ w0.t() @ w0)
    assert torch.allclose(lin.weight, expected)
    for _ in range(200):
        snn_rat_step(lin, 5e-4)
    assert err() < before
