"""neurodeploy.lava_rules against Lava 0.10's own code (``lava.utils.weightutils``, the LIF/Dense models).

Property tests (hypothesis, derandomized, bounded): every sign mode, every bit width 1..8 and weight
exponents -16..16 on random integer weights; exhaustive checks where the domain is small (the weight
grid of every sign mode and width over every 9-bit integer).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurodeploy import lava_rules as lr
from neurodeploy.quant.profile import load_profile, profile_from_dict

weightutils = pytest.importorskip("lava.utils.weightutils")
SignMode = weightutils.SignMode

MODES = lr.SIGN_MODES
BITS = range(1, 9)
SETTINGS = settings(derandomize=True, max_examples=300, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _mode(name: str):
    return SignMode[name.upper()]


def _lava_effective(w: np.ndarray, mode: str, bits: int) -> np.ndarray:
    """What PyDenseModelBitAcc does to its weights on the first step."""
    m = _mode(mode)
    return weightutils.truncate_weights(weightutils.clip_weights(w.astype(np.int32), m, num_bits=8), m, bits)


def _weights(lo: int = -600, hi: int = 600):
    return st.lists(st.integers(lo, hi), min_size=1, max_size=40).map(lambda v: np.array(v, dtype=np.int64))


@SETTINGS
@given(w=_weights(), mode=st.sampled_from(MODES), bits=st.sampled_from(BITS))
def test_effective_weights_are_lavas(w, mode, bits):
    """clip to 8 bits by sign mode, then truncate (toward zero for inhibitory), beyond the range too."""
    got = lr.effective_weights(w, mode, bits)
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, _lava_effective(w, mode, bits))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("bits", BITS)
def test_weight_grid_is_what_dense_keeps(mode, bits):
    """Exhaustive over -600..600: the outputs of Lava's transform are exactly the grid's values, and each
    grid value is a fixed point of it; the profile's weight_range / weight_step / weight_max agree."""
    lo, hi, step = lr.weight_grid(mode, bits)
    assert step == lr.weight_step(mode, bits) == 2 ** (8 - bits + (mode == "mixed"))
    grid = np.arange(lo, hi + 1, step)
    assert grid[0] == lo and grid[-1] == hi
    every = np.arange(-600, 601)
    kept = np.unique(_lava_effective(every, mode, bits))
    np.testing.assert_array_equal(kept, grid)
    np.testing.assert_array_equal(_lava_effective(grid, mode, bits), grid)

    data = copy.deepcopy(_profile_data())
    data["weights"].update(bits=bits, sign_mode=mode)
    profile = profile_from_dict(data, "<test>")
    assert profile.weight_range == (lo, hi) and profile.weight_step == step
    assert profile.weight_max == (-lo if mode == "inhibitory" else hi)   # usable on both signs


def test_inhibitory_range_below_8_bits_truncates_toward_zero():
    """The bug this module fixed: 7-bit inhibitory keeps -254 at most, not -256 (Lava clips to -255 and
    truncates toward zero)."""
    data = copy.deepcopy(_profile_data())
    data["weights"].update(bits=7, sign_mode="inhibitory")
    assert profile_from_dict(data, "<test>").weight_range == (-254, 0)
    assert int(_lava_effective(np.array([-256]), "inhibitory", 7)[0]) == -254


@pytest.mark.parametrize("mode", MODES)
def test_clip_range_is_lavas(mode):
    for n in BITS:
        lo, hi = lr.clip_range(mode, n)
        got = weightutils.clip_weights(np.array([-(10**6), 10**6]), _mode(mode), num_bits=n)
        assert (lo, hi) == (int(got[0]), int(got[1]))


@SETTINGS
@given(w=_weights(-256, 255), mode=st.sampled_from(MODES), loihi2=st.booleans())
def test_optimize_weight_bits_is_lavas(w, mode, loihi2):
    if mode == "excitatory":
        w = np.abs(w).clip(0, 255)
    elif mode == "inhibitory":
        w = -np.abs(w).clip(0, 255)
    try:
        ref = weightutils.optimize_weight_bits(w.copy(), _mode(mode), loihi2=loihi2)
    except ValueError:      # Lava's loihi2 path shifts by 8 - num_weight_bits, negative past 8 bits
        with pytest.raises(ValueError):
            lr.optimize_weight_bits(w, mode, loihi2=loihi2)
        return
    got_w, got_bits, got_exp = lr.optimize_weight_bits(w, mode, loihi2=loihi2)
    assert (got_bits, got_exp) == (ref.num_weight_bits, ref.weight_exp)
    np.testing.assert_array_equal(got_w, np.asarray(ref.weights))


def test_optimize_weight_bits_refuses_what_lava_refuses():
    for mode, w in (("mixed", [256]), ("excitatory", [-1]), ("inhibitory", [1]), ("inhibitory", [-256])):
        with pytest.raises(ValueError):
            weightutils.optimize_weight_bits(np.array(w), _mode(mode))
        with pytest.raises(ValueError):
            lr.optimize_weight_bits(np.array(w), mode)


@SETTINGS
@given(sums=st.lists(st.integers(-(2**30), 2**30), min_size=1, max_size=20), exp=st.integers(-16, 16))
def test_weight_exp_shift_is_denses(sums, exp):
    """Dense: ``left_shift(a, e) if e > 0 else right_shift(a, -e)`` on its int64 sums; the same for biases."""
    a = np.array(sums, dtype=np.int64)
    ref = np.left_shift(a, exp) if exp > 0 else np.right_shift(a, -exp)
    np.testing.assert_array_equal(lr.shift(a, exp), ref)


@SETTINGS
@given(mant=st.lists(st.integers(*lr.BIAS_MANT_RANGE), min_size=1, max_size=8), exp=st.integers(0, 16))
def test_effective_bias_is_lifs(mant, exp):
    from lava.proc.lif.models import PyLifModelBitAcc

    m = PyLifModelBitAcc({})
    m.bias_mant = np.array(mant, dtype=np.int16)
    m.bias_exp = np.full(len(mant), exp, dtype=np.int16)
    m.scale_bias()
    np.testing.assert_array_equal(lr.effective_bias(np.array(mant), exp), np.asarray(m.effective_bias))


def _run_against_lava(case, steps: int) -> None:
    """lava_rules.lif_step against Lava's PyLifModelBitAcc, step after step: spikes, u and v equal."""
    from lava.proc.lif.models import PyLifModelBitAcc

    u0, v0, a, du, dv, bias, bexp, vth = case
    m = PyLifModelBitAcc({})
    m.u = np.array(u0, dtype=np.int32)
    m.v = np.array(v0, dtype=np.int32)
    m.du, m.dv, m.vth = du, dv, vth
    m.bias_mant = np.array(bias, dtype=np.int16)
    m.bias_exp = np.full(len(bias), bexp, dtype=np.int16)
    u = np.array(u0, dtype=np.int64)
    v = np.array(v0, dtype=np.int64)
    a_in = np.array(a, dtype=np.int64)
    for _ in range(steps):
        m.scale_bias()
        m.scale_threshold()
        m.subthr_dynamics(a_in.astype(np.int32))
        ref = m.spiking_activation()
        m.reset_voltage(ref)
        s = lr.lif_step(u, v, a_in, lr.u_multiplier(du), lr.v_multiplier(dv), lr.effective_bias(np.array(bias), bexp),
                        lr.effective_vth(vth))
        np.testing.assert_array_equal(s, ref)
        np.testing.assert_array_equal(u, m.u.astype(np.int64))
        np.testing.assert_array_equal(v, m.v.astype(np.int64))


def _lif_case():
    n = 6
    state = st.lists(st.integers(-(2**23) + 1, 2**23 - 1), min_size=n, max_size=n)
    a_in = st.lists(st.one_of(st.integers(-(2**15), 2**15 - 1), st.integers(-(2**25), 2**25)),
                    min_size=n, max_size=n)
    bias = st.lists(st.integers(-(2**12), 2**12 - 1), min_size=n, max_size=n)
    return st.tuples(state, state, a_in, st.integers(0, lr.DECAY_MAX), st.integers(0, lr.DECAY_MAX), bias,
                     st.integers(0, 7), st.integers(0, lr.VTH_MAX))


@SETTINGS
@given(case=_lif_case(), steps=st.integers(1, 4))
def test_lif_step_is_pylifmodelbitacc(case, steps):
    """Decays (du + 1, 12-bit, toward zero), a_in << 6, the one-shot 24-bit wrap of u, the clip of v,
    v > vth << 6 and the reset, step after step, against Lava's own subthreshold dynamics."""
    _run_against_lava(case, steps)


def _lif_case_foreign():
    """The ranges foreign netx files give Lava's LIF: du -1..4095 (iDecay 0 -> -1), dv 0..4096, per-neuron
    arrays of each, thresholds up to (2**31 - 1) >> 6."""
    n = 6
    state = st.lists(st.integers(-(2**23) + 1, 2**23 - 1), min_size=n, max_size=n)
    a_in = st.lists(st.one_of(st.integers(-(2**15), 2**15 - 1), st.integers(-(2**25), 2**25)),
                    min_size=n, max_size=n)
    bias = st.lists(st.integers(-(2**12), 2**12 - 1), min_size=n, max_size=n)

    def per(lo, hi, special):
        one = st.one_of(st.sampled_from(special), st.integers(lo, hi))
        return st.one_of(one, st.lists(one, min_size=n, max_size=n).map(lambda x: np.array(x, dtype=np.int64)))
    return st.tuples(state, state, a_in, per(*lr.DU_RANGE, [-1, 4095]), per(*lr.DV_RANGE, [0, 4096]), bias,
                     st.integers(0, 7), per(*lr.VTH_RANGE, [131071, 131072, lr.VTH_RANGE[1]]))


@SETTINGS
@given(case=_lif_case_foreign(), steps=st.integers(1, 4))
def test_lif_step_is_pylifmodelbitacc_over_foreign_ranges(case, steps):
    """du = -1 (u never decays), dv = 4096, per-neuron du / dv / vth arrays and unreachable thresholds,
    stored uncast as netx hands them to Lava's LIF, against Lava's own dynamics."""
    _run_against_lava(case, steps)


def test_nine_weight_bits_keep_mixed_weights_as_lava_does():
    """num_weight_bits 9 (netx's odd mixed-sign weights): Lava's Dense truncates nothing; other sign modes
    have at most 8 bits (refused)."""
    from lava.utils.weightutils import SignMode, clip_weights, truncate_weights

    w = np.array([[-256, -201, -3, 0, 1, 201, 255]])
    lava = truncate_weights(clip_weights(w, SignMode.MIXED, 8), SignMode.MIXED, 9)
    np.testing.assert_array_equal(lr.effective_weights(w, "mixed", 9), lava)
    np.testing.assert_array_equal(lava, w)
    for mode in ("excitatory", "inhibitory"):
        with pytest.raises(ValueError, match="9 only for mixed-sign"):
            lr.truncated_bits(mode, 9)


def test_lif_constants_are_lavas():
    from lava.proc.lif.models import PyLifModelBitAcc

    m = PyLifModelBitAcc({})
    assert (m.ds_offset, m.dm_offset) == (lr.DU_OFFSET, lr.DV_OFFSET)
    assert (m.uv_bitwidth, m.max_uv_val) == (lr.STATE_BITS, lr.U_LIMIT)
    assert (m.decay_shift, m.decay_unity) == (lr.DECAY_SHIFT, lr.DECAY_UNITY)
    assert (m.vth_shift, m.act_shift) == (lr.VTH_SHIFT, lr.ACT_SHIFT)


@pytest.mark.parametrize("leak", [0.0, 1e-4, 0.25, 0.5, 0.9, 0.9998, 1.0])
def test_decays_from_leaks_round_trip(leak):
    dv = lr.dv_for_leak(leak)
    du = lr.du_for_leak(leak)
    assert 0 <= dv <= lr.DECAY_MAX and 0 <= du <= lr.DECAY_MAX
    assert abs(lr.leak_of_dv(dv) - leak) <= 0.5 / 4096 + 1e-12 or dv in (0, lr.DECAY_MAX)
    assert abs(lr.leak_of_du(du) - leak) <= 0.5 / 4096 + 1e-12 or du in (0, lr.DECAY_MAX)


def test_sign_mode_of_is_lavas():
    for w in ([0, 3], [-1, 0], [-1, 2], [0, 0]):
        assert lr.sign_mode_of(np.array(w)) == weightutils.determine_sign_mode(np.array(w)).name.lower()
    assert lr.sign_mode_of(np.zeros(0)) == "excitatory"


def _profile_data() -> dict:
    from neurodeploy.yamlio import load_yaml

    return load_yaml(load_profile("loihi2").source, "hardware profile")
