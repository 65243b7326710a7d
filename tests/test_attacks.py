"""Tests for neurodeploy.noise (seeded input noise) and neurodeploy.attacks.

Uses a small seeded MLP on 1x8x8 inputs trained on synthetic data, so nothing
here depends on the SNN modules.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from neurodeploy.attacks import (
    FGSM_AT_RANDOM_START_STD,
    FGSM_AT_STEP,
    PGD_PRESETS,
    evaluate_accuracy,
    fgsm,
    pgd,
)
from neurodeploy.noise import (
    INPUT_NOISES,
    apply_input_noise,
    gaussian_noise,
    salt_pepper_noise,
    uniform_noise,
)

EPS = 8 / 255
TOL = 1e-6


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --------------------------------------------------------------------------- #
# Fixtures: a small trained MLP and synthetic 4-class data
# --------------------------------------------------------------------------- #

def _make_data(n: int, seed: int):
    g = gen(seed)
    templates = torch.rand(4, 1, 8, 8, generator=gen(123)) * 0.2 + 0.4
    y = torch.randint(0, 4, (n,), generator=g)
    x = (templates[y] + 0.15 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1)
    return x, y


def _make_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)  # only for parameter init of the test model
    return nn.Sequential(
        nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 4)
    )


@pytest.fixture(scope="module")
def trained():
    x, y = _make_data(512, seed=1)
    model = _make_mlp()
    model.train()
    # Hand-written full-batch SGD with momentum: torch.optim's first step
    # imports torch._dynamo (seconds), which would dominate this file's runtime.
    bufs = [torch.zeros_like(p) for p in model.parameters()]
    for _ in range(300):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        with torch.no_grad():
            for b, p in zip(bufs, model.parameters()):
                b.mul_(0.9).add_(p.grad)
                p -= 0.05 * b
    model.zero_grad(set_to_none=True)
    model.eval()
    xt, yt = _make_data(256, seed=2)
    return model, xt, yt


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return F.cross_entropy(model(x), y).item()


# --------------------------------------------------------------------------- #
# Input noise
# --------------------------------------------------------------------------- #

X_HALF = torch.full((200, 1, 16, 16), 0.5)  # 51_200 elements


def test_gaussian_statistics_no_clamp():
    sigma = 0.1
    out = gaussian_noise(X_HALF, sigma, gen(0), clamp=False)
    d = out - X_HALF
    assert abs(d.mean().item()) < 3e-3
    assert abs(d.std().item() - sigma) < 3e-3
    assert out.shape == X_HALF.shape and out.dtype == X_HALF.dtype


def test_gaussian_clamp_flag():
    x = torch.tensor([0.0, 1.0]).repeat(5000)
    clamped = gaussian_noise(x, 0.5, gen(0))
    assert clamped.min() >= 0.0 and clamped.max() <= 1.0
    raw = gaussian_noise(x, 0.5, gen(0), clamp=False)
    assert raw.min() < 0.0 and raw.max() > 1.0
    # Clamping is the only difference between the two.
    assert torch.equal(raw.clamp(0, 1), clamped)


def test_uniform_statistics_and_clamp():
    level = 0.2
    d = uniform_noise(X_HALF, level, gen(0), clamp=False) - X_HALF
    assert d.abs().max() <= level + 1e-6
    assert abs(d.mean().item()) < 3e-3
    assert abs(d.std().item() - level / 3 ** 0.5) < 3e-3
    assert d.max() > 0.95 * level and d.min() < -0.95 * level  # fills the range
    x = torch.tensor([0.0, 1.0]).repeat(5000)
    c = uniform_noise(x, 0.3, gen(0))
    assert c.min() >= 0.0 and c.max() <= 1.0
    assert uniform_noise(x, 0.3, gen(0), clamp=False).min() < 0.0


@pytest.mark.parametrize("prob", [0.05, 0.3, 1.0])
def test_salt_pepper_statistics(prob):
    out = salt_pepper_noise(X_HALF, prob, gen(0))
    n = X_HALF.numel()
    changed = (out != X_HALF)
    salt = (out == 1.0).float().sum().item() / n
    pepper = (out == 0.0).float().sum().item() / n
    assert abs(changed.float().mean().item() - prob) < 0.01
    assert abs(salt - prob / 2) < 0.01 and abs(pepper - prob / 2) < 0.01
    # Changed pixels are exactly the 0/1 ones; the rest are copied.
    assert torch.equal(changed, (out == 0.0) | (out == 1.0))
    assert torch.equal(out[~changed], X_HALF[~changed])


def test_input_not_modified_in_place():
    x = torch.rand(4, 1, 8, 8, generator=gen(5))
    ref = x.clone()
    for name in INPUT_NOISES:
        out = apply_input_noise(name, x, 0.3, gen(0))
        assert out.data_ptr() != x.data_ptr()
    assert torch.equal(x, ref)


@pytest.mark.parametrize("name", sorted(INPUT_NOISES))
def test_noise_seed_reproducibility(name):
    x = torch.rand(8, 1, 8, 8, generator=gen(7))
    a = apply_input_noise(name, x, 0.2, gen(42))
    b = apply_input_noise(name, x, 0.2, gen(42))
    c = apply_input_noise(name, x, 0.2, gen(43))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)


def test_noise_does_not_use_global_rng():
    x = torch.rand(8, 1, 8, 8, generator=gen(7))
    torch.manual_seed(0)
    a = apply_input_noise("gaussian", x, 0.1, gen(3))
    torch.manual_seed(999)
    b = apply_input_noise("gaussian", x, 0.1, gen(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", sorted(INPUT_NOISES))
def test_level_zero_is_identity(name):
    # Include out-of-range values: level 0 must not even clamp.
    x = torch.cat([torch.rand(60, generator=gen(1)), torch.tensor([-0.5, 1.5])])
    out = apply_input_noise(name, x, 0.0, gen(0))
    assert torch.equal(out, x)
    assert out.data_ptr() != x.data_ptr()


@pytest.mark.parametrize(
    "call, arg",
    [
        (lambda x: gaussian_noise(x, -0.1, gen()), "sigma"),
        (lambda x: uniform_noise(x, -1.0, gen()), "level"),
        (lambda x: salt_pepper_noise(x, 1.5, gen()), "prob"),
        (lambda x: salt_pepper_noise(x, -0.01, gen()), "prob"),
        (lambda x: gaussian_noise(x, float("nan"), gen()), "sigma"),
        (lambda x: apply_input_noise("speckle", x, 0.1, gen()), "name"),
    ],
)
def test_noise_bad_args(call, arg):
    with pytest.raises(ValueError, match=arg):
        call(torch.rand(2, 3))


def test_noise_bad_arg_message_has_value():
    with pytest.raises(ValueError, match=r"prob.*1\.5"):
        salt_pepper_noise(torch.rand(2, 3), 1.5, gen())


# --------------------------------------------------------------------------- #
# FGSM
# --------------------------------------------------------------------------- #

def test_fgsm_bounds_and_loss_increase(trained):
    model, x, y = trained
    x_adv = fgsm(model, x, y, EPS)
    assert (x_adv - x).abs().max() <= EPS + TOL
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert not x_adv.requires_grad
    assert _loss(model, x_adv, y) > _loss(model, x, y) + 0.05


def test_fgsm_random_start_bound_and_reproducible(trained):
    model, x, y = trained
    std = FGSM_AT_RANDOM_START_STD
    a = fgsm(model, x, y, FGSM_AT_STEP, random_start_std=std, generator=gen(11))
    b = fgsm(model, x, y, FGSM_AT_STEP, random_start_std=std, generator=gen(11))
    c = fgsm(model, x, y, FGSM_AT_STEP, random_start_std=std, generator=gen(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    start = std * torch.randn(x.shape, generator=gen(11))  # same draw as the attack
    assert (a - x).abs().max() <= FGSM_AT_STEP + start.abs().max() + TOL
    assert a.min() >= 0.0 and a.max() <= 1.0
    with pytest.raises(ValueError, match="generator"):
        fgsm(model, x, y, EPS, random_start_std=std)


def test_fgsm_eps_zero_identity(trained):
    model, x, y = trained
    x_odd = x.clone()
    x_odd[0, 0, 0, 0] = 1.5  # would be changed by a clamp
    out = fgsm(model, x_odd, y, 0.0)
    assert torch.equal(out, x_odd)


def test_fgsm_no_param_grads(trained):
    model, x, y = trained
    model.zero_grad(set_to_none=True)
    fgsm(model, x, y, EPS)
    assert all(p.grad is None for p in model.parameters())
    # Existing grads are left untouched too (no accumulation).
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    fgsm(model, x, y, EPS)
    pgd(model, x, y, EPS, 2 / 255, 3, generator=gen(0))
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    model.zero_grad(set_to_none=True)


class _ModeRecorder(nn.Module):
    """Linear model recording the training flag seen in each forward pass."""

    def __init__(self, fail: bool = False):
        super().__init__()
        self.lin = nn.Linear(64, 4)
        self.seen: list[bool] = []
        self.fail = fail

    def forward(self, x):
        self.seen.append(self.training)
        if self.fail:
            raise RuntimeError("boom")
        return self.lin(x.flatten(1))


ATTACKS = {
    "fgsm": lambda m, x, y: fgsm(m, x, y, EPS),
    "pgd": lambda m, x, y: pgd(m, x, y, EPS, 2 / 255, 3, generator=gen(0)),
    "acc": lambda m, x, y: evaluate_accuracy(
        m, x, y, perturb=lambda xb, yb: fgsm(m, xb, yb, EPS)),
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
@pytest.mark.parametrize("initial_training", [True, False])
def test_training_flag_restored(attack, initial_training):
    m = _ModeRecorder()
    m.train(initial_training)
    x = torch.rand(4, 1, 8, 8, generator=gen(0))
    y = torch.tensor([0, 1, 2, 3])
    ATTACKS[attack](m, x, y)
    assert m.seen and not any(m.seen)  # crafted in eval mode
    assert m.training is initial_training
    assert m.lin.training is initial_training


def test_mixed_submodule_flags_restored():
    m = _ModeRecorder()
    m.train()
    m.lin.eval()  # e.g. a frozen sub-layer
    fgsm(m, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]), EPS)
    assert m.training is True and m.lin.training is False


@pytest.mark.parametrize("attack", ["fgsm", "pgd"])
def test_training_flag_restored_on_exception(attack):
    m = _ModeRecorder(fail=True)
    m.train()
    with pytest.raises(RuntimeError, match="boom"):
        ATTACKS[attack](m, torch.rand(2, 1, 8, 8), torch.tensor([0, 1]))
    assert m.training is True


class _HardThreshold(nn.Module):
    """No gradient path to the input at all (like a spike without surrogate)."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 4)

    def forward(self, x):
        return self.lin((x.flatten(1) > 0.5).float())


class _ZeroSurrogate(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v):
        return (v > 0.5).float()

    @staticmethod
    def backward(ctx, g):
        return torch.zeros_like(g)


class _ZeroGradSNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 4)

    def forward(self, x):
        return self.lin(_ZeroSurrogate.apply(x.flatten(1)))


@pytest.mark.parametrize("model_cls", [_HardThreshold, _ZeroGradSNN])
def test_zero_gradient_models(model_cls):
    m = model_cls()
    x = torch.rand(4, 1, 8, 8, generator=gen(0))
    y = torch.tensor([0, 1, 2, 3])
    assert torch.equal(fgsm(m, x, y, EPS), x)  # sign(0) = 0: nothing moves
    # PGD keeps the random start and stays in the ball.
    out = pgd(m, x, y, EPS, 2 / 255, 3, generator=gen(0))
    assert (out - x).abs().max() <= EPS + TOL


def test_attacks_bad_args(trained):
    model, x, y = trained
    with pytest.raises(ValueError, match="eps"):
        fgsm(model, x, y, -0.1)
    with pytest.raises(ValueError, match="alpha"):
        pgd(model, x, y, EPS, -1.0, 3, generator=gen())
    with pytest.raises(ValueError, match="steps"):
        pgd(model, x, y, EPS, 0.01, -1, generator=gen())
    with pytest.raises(ValueError, match="generator"):
        pgd(model, x, y, EPS, 0.01, 3, generator=None)


# --------------------------------------------------------------------------- #
# PGD
# --------------------------------------------------------------------------- #

def test_pgd_presets():
    assert PGD_PRESETS == {
        "pgd7": (7, 2.55 / 255),
        "pgd10": (10, 2 / 255),
        "pgd20": (20, 1 / 255),
        "pgd40": (40, 0.5 / 255),
    }


@pytest.mark.parametrize("preset", sorted(PGD_PRESETS))
def test_pgd_within_ball_and_range(trained, preset):
    model, x, y = trained
    steps, alpha = PGD_PRESETS[preset]
    x_adv = pgd(model, x, y, EPS, alpha, steps, generator=gen(0))
    assert (x_adv - x).abs().max() <= EPS + TOL
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert not x_adv.requires_grad
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype


def test_pgd_projection_with_large_steps(trained):
    # alpha >> eps: without projection the result would leave the ball.
    model, x, y = trained
    x_adv = pgd(model, x, y, 0.05, 0.5, 3, generator=gen(0))
    assert (x_adv - x).abs().max() <= 0.05 + TOL
    assert (x_adv - x).abs().max() > 0.049  # and it does reach the boundary


def test_pgd_stronger_than_fgsm(trained):
    model, x, y = trained
    steps, alpha = PGD_PRESETS["pgd20"]
    l_clean = _loss(model, x, y)
    l_fgsm = _loss(model, fgsm(model, x, y, EPS), y)
    l_pgd = _loss(model, pgd(model, x, y, EPS, alpha, steps, generator=gen(0)), y)
    assert l_fgsm > l_clean
    assert l_pgd >= l_fgsm * 0.99


def test_pgd_reproducible(trained):
    model, x, y = trained
    a = pgd(model, x, y, EPS, 2 / 255, 5, generator=gen(3))
    b = pgd(model, x, y, EPS, 2 / 255, 5, generator=gen(3))
    c = pgd(model, x, y, EPS, 2 / 255, 5, generator=gen(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_pgd_eps_zero_and_no_random_start(trained):
    model, x, y = trained
    assert torch.equal(pgd(model, x, y, 0.0, 2 / 255, 5, generator=gen(0)), x)
    # Without a random start PGD needs no generator and is deterministic.
    a = pgd(model, x, y, EPS, 2 / 255, 5, generator=None, random_start=False)
    b = pgd(model, x, y, EPS, 2 / 255, 5, generator=None, random_start=False)
    assert torch.equal(a, b)
    # One step from x without random start equals FGSM with step alpha.
    one = pgd(model, x, y, EPS, EPS, 1, generator=None, random_start=False)
    assert torch.equal(one, fgsm(model, x, y, EPS))


def test_accuracy_under_attack(trained):
    model, x, y = trained
    clean = evaluate_accuracy(model, x, y, batch_size=100)
    assert clean > 0.85  # the fixture model is actually trained
    steps, alpha = PGD_PRESETS["pgd10"]
    acc_pgd = evaluate_accuracy(
        model, x, y, batch_size=100,
        perturb=lambda xb, yb: pgd(model, xb, yb, EPS, alpha, steps, generator=gen(0)),
    )
    assert 0.0 <= acc_pgd <= clean
    # A large budget must actually hurt, so the comparison above can fail.
    acc_big = evaluate_accuracy(
        model, x, y, batch_size=100,
        perturb=lambda xb, yb: pgd(model, xb, yb, 0.3, 0.05, 10, generator=gen(0)),
    )
    assert acc_big < clean - 0.2


def test_evaluate_accuracy_batching_and_noise(trained):
    model, x, y = trained
    full = evaluate_accuracy(model, x, y, batch_size=10_000)
    assert evaluate_accuracy(model, x, y, batch_size=7) == pytest.approx(full)
    with torch.no_grad():
        expected = (model(x).argmax(1) == y).float().mean().item()
    assert full == pytest.approx(expected)
    noisy = evaluate_accuracy(
        model, x, y, perturb=lambda xb, yb: gaussian_noise(xb, 0.0, gen(0)))
    assert noisy == pytest.approx(full)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate_accuracy(model, x, y, batch_size=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_inputs_with_cpu_generator():
    # Noise is drawn on the (CPU) generator's device, so a seed gives the same
    # corruption whether x lives on CPU or GPU.
    x = torch.rand(4, 1, 8, 8, generator=gen(0))
    for name in INPUT_NOISES:
        cpu = apply_input_noise(name, x, 0.2, gen(1))
        gpu = apply_input_noise(name, x.cuda(), 0.2, gen(1))
        assert gpu.device.type == "cuda"
        assert torch.allclose(gpu.cpu(), cpu, atol=1e-6)
    m = _make_mlp().cuda()
    y = torch.tensor([0, 1, 2, 3], device="cuda")
    out = pgd(m, x.cuda(), y, EPS, 2 / 255, 3, generator=gen(0))
    assert out.device.type == "cuda" and (out.cpu() - x).abs().max() <= EPS + TOL


def test_apgd_ce_from_torchattacks_is_bounded_reproducible_and_leaves_the_global_rng():
    from neurodeploy.attacks import apgd_ce

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 3))
    x = torch.rand(32, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    y = model(x).argmax(1)                      # every sample correct: APGD attacks them all
    state = torch.random.get_rng_state()
    a = apgd_ce(model, x, y, 0.1, torch.Generator().manual_seed(3))
    assert torch.equal(torch.random.get_rng_state(), state)
    b = apgd_ce(model, x, y, 0.1, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert (a - x).abs().max() <= 0.1 + 1e-6 and a.min() >= 0 and a.max() <= 1
    flipped = (model(a).argmax(1) != y).float().mean()
    assert flipped > 0                                          # it finds adversarial examples,
    assert flipped >= (model(fgsm(model, x, y, 0.1)).argmax(1) != y).float().mean()   # at least as FGSM does
    assert torch.equal(apgd_ce(model, x, y, 0.0, torch.Generator()), x)


def test_apgd_ce_takes_sequences():
    """torchattacks reads a 3-d tensor as one image; sequences (B, T, F) must stay a batch."""
    from neurodeploy.attacks import apgd_ce

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x = torch.rand(6, 4, 3, generator=torch.Generator().manual_seed(1))
    a = apgd_ce(model, x, model(x).argmax(1), 0.2, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and (a - x).abs().max() <= 0.2 + 1e-6 and not torch.equal(a, x)
