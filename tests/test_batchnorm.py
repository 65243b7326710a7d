"""BatchNorm in conv nets: built after every conv, separate batch statistics for
the clean and the perturbed pass, folded into the conv at deployment with the
same float outputs, and carried through the quantizer, NIR and ONNX."""

import copy

import numpy as np
import pytest
import torch

from neurodeploy.attacks import fgsm
from neurodeploy.config import ConfigError, config_from_dict
from neurodeploy.models import TimeFolded, build_model
from neurodeploy.models.folding import BatchNormFoldError, fold_batchnorm, has_batchnorm
from neurodeploy.neurons.modules import record_activity
from neurodeploy.train.loop import epoch_generator, training_loss

SHAPE = (1, 8, 8)


def _cfg(**model_over):
    model = {"arch": "conv", "channels": [4, 8], "strides": [1, 2], "hidden": [16], "batchnorm": True,
             "neuron": {"type": "dlif"}, **model_over}
    return config_from_dict({"data": {"dataset": "digits", "time_steps": 4}, "model": model,
                             "training": {"mode": "gaussian", "sigma": 0.1}})


def _bns(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


@torch.no_grad()
def _trained_like(model, x):
    """Non-trivial eval statistics and affine parameters, and every layer firing."""
    model.train()
    for k in range(4):
        model(x + 0.2 * k * torch.rand_like(x))
    g = torch.Generator().manual_seed(1)
    for bn in _bns(model):
        bn.weight.copy_(0.5 + 2.0 * torch.rand(bn.num_features, generator=g))
        bn.bias.copy_(torch.rand(bn.num_features, generator=g) - 0.3)
    for layer in model.spiking_layers():
        layer.gain.copy_(0.8 + 0.4 * torch.rand(layer.gain.shape, generator=g))
    for m in model.body:
        if isinstance(m, torch.nn.Linear):
            m.weight.mul_(6.0)
    model.eval()
    return model


def _model(seed=0, **over):
    torch.manual_seed(seed)
    return build_model(_cfg(**over), SHAPE, 10)


def test_batchnorm_after_every_conv_and_only_for_conv():
    body = list(_model().body)
    convs = [i for i, m in enumerate(body) if isinstance(m, TimeFolded) and isinstance(m.module, torch.nn.Conv2d)]
    assert len(convs) == 2
    for i in convs:
        assert isinstance(body[i + 1], TimeFolded) and isinstance(body[i + 1].module, torch.nn.BatchNorm2d)
    assert not has_batchnorm(_model(batchnorm=False))
    with pytest.raises(ConfigError, match="model.batchnorm: only used by arch 'conv'"):
        config_from_dict({"model": {"arch": "mlp", "batchnorm": True}})
    with pytest.raises(ConfigError, match="unknown key 'model.batch_norm'"):
        config_from_dict({"model": {"arch": "conv", "channels": [4], "batch_norm": True}})
    with pytest.raises(ConfigError, match="training.hardware_noise.*batchnorm"):
        config_from_dict({"model": {"arch": "conv", "channels": [4], "batchnorm": True},
                          "training": {"hardware_noise": "weight-mismatch", "hardware_noise_level": 0.1}})


def test_kaiming_init_of_convs():
    torch.manual_seed(0)
    cfg = _cfg(channels=[64, 64], kaiming_init=True)
    model = build_model(cfg, SHAPE, 10)
    conv = [m.module for m in model.body if isinstance(m, TimeFolded) and isinstance(m.module, torch.nn.Conv2d)][1]
    fan_out = conv.out_channels * 9
    # kaiming_normal_(fan_out, relu): std sqrt(2 / fan_out); torch's default is 3x smaller here
    assert float(conv.weight.detach().std()) == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.05)
    torch.manual_seed(0)
    default = build_model(_cfg(channels=[64, 64]), SHAPE, 10)
    conv_d = [m.module for m in default.body if isinstance(m, TimeFolded)
              and isinstance(m.module, torch.nn.Conv2d)][1]
    assert float(conv_d.weight.detach().std()) < 0.6 * float(conv.weight.detach().std())
    with pytest.raises(ConfigError, match="model.kaiming_init"):
        config_from_dict({"model": {"arch": "srnn", "hidden": [4], "kaiming_init": True}})


@pytest.mark.parametrize("bias", [False, True])
def test_folding_preserves_logits_and_spikes(bias):
    x = torch.rand(64, *SHAPE)
    model = _trained_like(_model(bias=bias), x)
    folded = fold_batchnorm(model)
    assert not has_batchnorm(folded) and has_batchnorm(model)          # a copy; the model is untouched
    assert not folded.training
    assert len(folded.body) == len(model.body) - 2
    convs = [m.module for m in folded.body if isinstance(m, TimeFolded)]
    assert all(c.bias is not None for c in convs)                      # BatchNorm's shift became a bias
    x_test = torch.rand(200, *SHAPE)
    with torch.no_grad(), record_activity(model) as rec_a:
        a = model(x_test)
    with torch.no_grad(), record_activity(folded) as rec_b:
        b = folded(x_test)
    torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    for ra, rb in zip(rec_a, rec_b):
        torch.testing.assert_close(rb.current, ra.current, rtol=1e-5, atol=1e-5)
        # float32 rounding of W*s vs BN(W x) differs by ~1e-7: a flip needs a
        # potential within that of the threshold, which these inputs never hit
        assert torch.equal(ra.spikes, rb.spikes)
        assert 0.01 < float(ra.spikes.mean()) < 0.9                    # every layer really fires
    # folding uses eval statistics: with batch statistics (train mode) the outputs differ
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(x_test), b, atol=1e-3)


def test_folding_refuses_what_it_cannot_fold():
    model = _model()
    body = list(model.body)
    model.body = type(model.body)(*body[1:])           # BatchNorm first, no conv before it
    with pytest.raises(BatchNormFoldError, match=r"body\[0\] \(BatchNorm2d\).*follows nothing"):
        fold_batchnorm(model)
    model = _model()
    for bn in _bns(model):
        bn.running_mean = None
        bn.running_var = None
    with pytest.raises(BatchNormFoldError, match="running statistics"):
        fold_batchnorm(model)


def test_clean_and_perturbed_pass_use_their_own_batch_statistics():
    cfg = _cfg()
    x = torch.rand(32, *SHAPE)
    y = torch.randint(0, 10, (32,))
    model = _model()
    model.train()
    expect = copy.deepcopy(model)
    training_loss(model, cfg, x, y, epoch_generator(0, 0))
    # the same two passes, one after the other, each normalised with its own batch
    x_pert = x + cfg.training.sigma * torch.randn(x.shape, generator=epoch_generator(0, 0))
    with torch.no_grad():
        expect(x)
        expect(x_pert)
    joint = copy.deepcopy(model)
    for bn, bn_e, bn_j in zip(_bns(model), _bns(expect), _bns(joint)):
        assert int(bn.num_batches_tracked) == 2
        torch.testing.assert_close(bn.running_mean, bn_e.running_mean)
        torch.testing.assert_close(bn.running_var, bn_e.running_var)
    # one concatenated batch would give other statistics (the test can tell them apart)
    with torch.no_grad():
        for bn in _bns(joint):
            bn.reset_running_stats()
        joint(torch.cat([x, x_pert]))
    assert not torch.allclose(_bns(joint)[0].running_var, _bns(expect)[0].running_var, rtol=1e-4)


def test_fgsm_crafting_leaves_running_statistics_alone():
    """Attacks craft in eval mode (as torchattacks does, which the reference builds on):
    the running statistics see only the clean and the adversarial training pass."""
    model = _model()
    model.train()
    before = [(bn.running_mean.clone(), bn.running_var.clone()) for bn in _bns(model)]
    x = torch.rand(16, *SHAPE)
    y = torch.randint(0, 10, (16,))
    fgsm(model, x, y, 4 / 255, random_start_std=0.001, generator=torch.Generator().manual_seed(0))
    assert model.training and all(m.training for m in model.modules())
    for bn, (mean, var) in zip(_bns(model), before):
        assert torch.equal(bn.running_mean, mean) and torch.equal(bn.running_var, var)
        assert int(bn.num_batches_tracked) == 0
    cfg = config_from_dict({**_cfg().to_dict(), "training": {"mode": "fgsm"}})
    training_loss(model, cfg, x, y, epoch_generator(0, 0))
    assert all(int(bn.num_batches_tracked) == 2 for bn in _bns(model))


def test_deployable_model_and_exports_are_folded(tmp_path):
    import nir

    from neurodeploy.evaluate.deployment import deployable_model
    from neurodeploy.io import export_nir, export_onnx, run_onnx
    from neurodeploy.io.onnx_export import encode_input

    x = torch.rand(40, *SHAPE)
    model = _trained_like(_model(bias=False), x)
    dep = deployable_model(model)
    assert not has_batchnorm(dep)
    ref = fold_batchnorm(model)
    with torch.no_grad():
        for layer in ref.spiking_layers():
            layer.gain.fill_(float(layer.gain.double().mean()))
        torch.testing.assert_close(dep(x), ref(x))
    # the exports take the unfolded model and fold it at their entry
    graph = nir.read(str(export_nir(model, tmp_path / "m.nir", input_shape=SHAPE, time_steps=4)))
    assert "conv1" in graph.nodes and not any("norm" in k.lower() for k in graph.nodes)
    path = export_onnx(dep, tmp_path / "m.onnx", input_shape=SHAPE)
    path_bn = export_onnx(model, tmp_path / "m_bn.onnx", input_shape=SHAPE)
    with torch.no_grad():
        seq = encode_input(dep, x)
        want = dep.run_encoded(seq).numpy()
    np.testing.assert_allclose(run_onnx(path, seq.numpy()), want, atol=1e-5)
    assert run_onnx(path_bn, seq.numpy()).shape == want.shape


def test_tiny_bn_conv_trains_deploys_and_fixed_point_tracks_float(tmp_path):
    """Digits conv [4, 8] with BatchNorm, one epoch: trains, quantizes from the folded model, exports.

    The fixed-point first layer reproduces the folded float layer spike for
    spike once the chip's timing is modelled: a layer integrates its bias from
    step 0 while its input arrives one step per layer later (pipeline fill).
    Folding BatchNorm gives every conv a bias, so the deeper layers drift and
    the emulator's accuracy trails the float model's (measured: 0.33 vs 0.56
    here at T=4, 0.67 vs 0.72 at T=8); a timing issue of biases on the chip
    (bias: true without BatchNorm shows the same), not of the folding.
    """
    from neurodeploy.backends import run_network
    from neurodeploy.cli import main
    from neurodeploy.evaluate.deployment import prepare_deployment
    from neurodeploy.train import predict, train

    T = 4
    cfg = config_from_dict({
        "name": "bn", "seed": 0,
        "data": {"dataset": "digits", "time_steps": T},
        "model": {"arch": "conv", "channels": [4, 8], "strides": [1, 2], "hidden": [32], "batchnorm": True,
                  "kaiming_init": True, "readout_gamma": 3.0},
        "training": {"mode": "gaussian", "sigma": 0.03, "epochs": 1, "optimizer": "adam", "lr": 0.01,
                     "weight_decay": 5e-4},
    })
    result = train(cfg, tmp_path / "run", progress=False, log=lambda s: None)
    assert result.metrics[0]["test_acc"] > 0.3
    dep = prepare_deployment(tmp_path / "run", "loihi2", log=lambda s: None)
    assert not has_batchnorm(dep.model) and has_batchnorm(dep.trained)
    x, y = result.data.x_test[:200], result.data.y_test[:200]
    float_acc = float((predict(dep.model, x).argmax(1).numpy() == y).mean())
    trained_acc = float((predict(dep.trained, x).argmax(1).numpy() == y).mean())
    assert abs(float_acc - trained_acc) <= 0.03        # folding is exact; only p -> mean(p) changes
    inputs = dep.inputs(x)
    emu = run_network(dep.network, inputs.values, backend="emulator", record_spikes=True)
    assert float((emu.predictions() == y).mean()) > 0.2   # well above chance (0.1); see the docstring
    # chip timing of layer 0: one bias-only step, then the input (T steps)
    seq = inputs.float_sequence(0, len(x)).expand(T, -1, -1, -1, -1)
    seq = torch.cat([torch.zeros_like(seq[:1]), seq])
    timed = copy.deepcopy(dep.model)
    with torch.no_grad():
        for layer in timed.spiking_layers():
            layer.gain = torch.nn.Parameter(torch.cat([layer.gain[:1], layer.gain]), requires_grad=False)
        with record_activity(timed) as rec:
            timed.run_encoded(seq)
    float_spikes = rec[0].spikes.flatten(2).transpose(0, 1).numpy()        # (B, T+1, neurons)
    chip_spikes = emu.layer_spikes[0][:, :T + 1]
    assert float_spikes.mean() > 0.05
    assert float((float_spikes == chip_spikes).mean()) > 0.99
    assert main(["export", str(tmp_path / "run"), "--format", "nir", "--out", str(tmp_path / "bn.nir")]) == 0


def test_data_driven_init_scales_the_batchnorm_not_the_conv():
    """Scaling a conv before BatchNorm is normalised away; the BatchNorm's affine scale sets the current."""
    from neurodeploy.models.builders import data_driven_init

    model = _model()
    model.train()
    convs = [m.module.weight.detach().clone() for m in model.body
             if isinstance(m, TimeFolded) and isinstance(m.module, torch.nn.Conv2d)]
    x = torch.rand(64, *SHAPE)
    data_driven_init(model, x, 0.5)
    after = [m.module.weight for m in model.body if isinstance(m, TimeFolded) and isinstance(m.module, torch.nn.Conv2d)]
    assert all(torch.equal(a, b) for a, b in zip(after, convs))
    assert all(not torch.allclose(bn.weight, torch.ones_like(bn.weight)) for bn in _bns(model))
    with torch.no_grad(), record_activity(model) as rec:
        model(x)
    for r in rec[:2]:                                  # the two BatchNorm-fed layers
        assert float(r.current.std()) == pytest.approx(0.5, rel=0.05)
