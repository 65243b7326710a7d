"""Per-epoch diagnostics in metrics.jsonl (MS-MPPD V, DLIF gain p, weight norms)
and weight decay acting on the gain p, as the reference trains."""

import json
import math

import pytest
import torch

from neurodeploy.config import config_from_dict
from neurodeploy.models import build_model
from neurodeploy.train import train
from neurodeploy.train.loop import _optimizer, epoch_generator, epoch_diagnostics, training_loss


def _cfg(**training):
    return config_from_dict({
        "name": "diag", "seed": 0,
        "data": {"dataset": "digits", "time_steps": 4},
        "model": {"arch": "mlp", "hidden": [16, 12], "readout": "linear", "neuron": {"type": "dlif"}},
        "training": {"mode": "gaussian", "sigma": 0.1, "epochs": 2, "batch_size": 64, "lr": 0.05,
                     "weight_decay": 5e-4, **training},
        "regularizer": {"mppd": {"rho": 1.0}},
    })


def test_per_epoch_diagnostics_are_written(tmp_path):
    result = train(_cfg(), tmp_path / "run", progress=False, log=lambda s: None)
    lines = [json.loads(s) for s in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in lines] == [1, 2]
    model = result.model
    names = [n for n, _ in model.named_parameters() if n.endswith("weight")]
    assert len(names) == 3                                   # two hidden layers and the readout
    for m in lines:
        # V, the training term (batch mean over the epoch), and the same after the gain
        assert math.isfinite(m["train_mppd"]) and m["train_mppd"] > 0
        assert math.isfinite(m["train_mppd_after_gain"]) and m["train_mppd_after_gain"] > 0
        for i in range(2):                                   # both spiking layers
            assert m[f"gain{i}_min"] <= m[f"gain{i}_mean"] <= m[f"gain{i}_max"]
        assert "gain2_mean" not in m                         # a linear readout has no gain
        assert {k for k in m if k.startswith("wnorm.")} == {f"wnorm.{n}" for n in names}
    # the last line is the final model's state
    last = lines[-1]
    for i, layer in enumerate(model.spiking_layers()):
        g = layer.gain.detach().double()
        assert last[f"gain{i}_min"] == pytest.approx(float(g.min()))
        assert last[f"gain{i}_mean"] == pytest.approx(float(g.mean()))
        assert last[f"gain{i}_max"] == pytest.approx(float(g.max()))
    params = dict(model.named_parameters())
    for n in names:
        assert last[f"wnorm.{n}"] == pytest.approx(float(params[n].detach().double().norm()))
    # training moved the parameters, so the two epochs' diagnostics differ
    assert lines[0]["wnorm." + names[0]] != lines[1]["wnorm." + names[0]]
    assert lines[0]["gain1_mean"] != lines[1]["gain1_mean"]


def test_mppd_after_gain_is_measured_after_p():
    cfg = _cfg()
    torch.manual_seed(0)
    model = build_model(cfg, (1, 8, 8), 10)
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 10, (32,))
    _, terms = training_loss(model, cfg, x, y, epoch_generator(0, 0))
    assert terms["mppd_after_gain"] == pytest.approx(terms["mppd"])     # p = 1 at init
    with torch.no_grad():
        for layer in model.spiking_layers():
            layer.gain.fill_(0.5)
    # the same currents, each step's perturbation scaled by p = 0.5: eps^2 by 0.25
    _, terms = training_loss(model, cfg, x, y, epoch_generator(0, 0))
    assert terms["mppd_after_gain"] == pytest.approx(0.25 * terms["mppd"], rel=1e-5)


def test_diagnostics_of_a_conv_net_name_every_weight():
    cfg = config_from_dict({"data": {"dataset": "digits", "time_steps": 4},
                            "model": {"arch": "conv", "channels": [4], "hidden": [8], "batchnorm": True}})
    torch.manual_seed(0)
    model = build_model(cfg, (1, 8, 8), 10)
    d = epoch_diagnostics(model)
    assert set(d) == {"wnorm.body.0.module.weight", "wnorm.body.1.module.weight", "wnorm.body.4.weight",
                      "wnorm.body.6.weight", *(f"gain{i}_{s}" for i in range(3) for s in ("min", "mean", "max"))}


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_weight_decay_shrinks_the_gain_p(momentum):
    """With a zero loss gradient, one SGD step is pure weight decay: p <- p * (1 - lr * wd)."""
    lr, wd = 0.1, 0.5
    cfg = _cfg(lr=lr, weight_decay=wd, momentum=momentum)
    torch.manual_seed(0)
    model = build_model(cfg, (1, 8, 8), 10)
    gains = [layer.gain for layer in model.spiking_layers()]
    with torch.no_grad():
        for k, g in enumerate(gains):
            g.copy_(torch.linspace(0.5, 2.0, g.numel()) + k)
    opt = _optimizer(model, cfg)
    # every gain is optimised with the run's weight decay (one group, no exemptions)
    decayed = {id(p) for group in opt.param_groups if group["weight_decay"] == wd for p in group["params"]}
    assert all(id(g) in decayed for g in gains)
    before = [g.detach().clone() for g in gains]
    x = torch.rand(8, 1, 8, 8)
    loss = 0.0 * model(x).sum()          # every parameter in the graph, every gradient zero
    loss.backward()
    assert all(g.grad is not None and not g.grad.any() for g in gains)
    opt.step()
    for g, b in zip(gains, before):
        torch.testing.assert_close(g.detach(), b * (1 - lr * wd))


def test_weight_decay_reaches_p_with_adam_too():
    cfg = _cfg(optimizer="adam", lr=0.01, weight_decay=0.5)
    torch.manual_seed(0)
    model = build_model(cfg, (1, 8, 8), 10)
    opt = _optimizer(model, cfg)
    (0.0 * model(torch.rand(8, 1, 8, 8)).sum()).backward()
    opt.step()
    for layer in model.spiking_layers():
        # Adam's L2 term (grad + wd * p) with p = 1: the first step moves p by lr towards 0
        torch.testing.assert_close(layer.gain.detach(), torch.full_like(layer.gain, 1 - 0.01), rtol=1e-4, atol=1e-5)
