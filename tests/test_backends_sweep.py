"""Large differential sweep: Lava 0.10 (fixed_pt) vs the emulator, zero mismatches.

Seeded random networks (feed-forward, recurrent, conv; random sizes, du, dv,
vth, bias, bias_exp, weight_exp, num_weight_bits, sign modes, graded or spike
input; a fifth of them with 'extreme' ranges that overflow sums and wrap u).
Every case compares every output spike, the per-layer spike counts and the
final u and v of every layer; each case's last sample repeats its first, so
state leaking between samples would show as a mismatch too (every third case
resets the synapse buffers with Reset processes instead of Var.set).

The default suite runs every fifth case (30 networks); run all 150 with
``pytest -m slow tests/test_backends_sweep.py -s`` (about 2-4 minutes).
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from neurodeploy.backends import run_network
from test_backends import assert_same, random_inputs, random_network

CASES = {"dense": 60, "rec": 50, "conv": 40}
# the default suite runs every fifth case of each kind (30 networks); -m slow runs all 150
DEFAULT_EVERY = 5


def _case(kind: str, i: int, monkeypatch) -> tuple[int, dict, str | None]:
    """Run sweep case ``i`` of ``kind``: (Lava spikes, conv mappings, mismatch message or None)."""
    import neurodeploy.backends.lava as lava_backend
    from neurodeploy.backends import emulator

    seed = 1000 * (list(CASES).index(kind) + 1) + i
    rng = np.random.default_rng(seed)
    extreme = i % 5 == 4
    net = random_network(rng, kind, max_layers=4, max_width=20, extreme=extreme, max_hw=9)
    x = random_inputs(rng, net, int(rng.integers(1, 4)))
    kinds: dict = {}
    with monkeypatch.context() as m:
        # every third case zeroes the synapse buffers with Reset processes, not Var.set
        m.setattr(lava_backend, "VAR_SET_MAX", 0 if i % 3 == 1 else 128)
        emu = run_network(net, x, backend="emulator", record_state=True)
        with monkeypatch.context() as m2:        # the emulator's general (wrapping) LIF path
            m2.setattr(emulator, "FAST_A_LIMIT", 0)
            emu_general = run_network(net, x, backend="emulator", record_state=True)
        lav = run_network(net, x, backend="lava", record_state=True)
    if kind == "conv":
        from neurodeploy.backends.lava import plan_network
        for lp in plan_network(net).layers:
            kinds[lp.kind] = kinds.get(lp.kind, 0) + 1
    try:
        assert_same(emu, lav, f"{kind} seed {seed}")
        assert_same(emu_general, lav, f"{kind} seed {seed} (general path)")
        assert_same(run_network(net, x[:1], record_state=True),
                    run_network(net, x[-1:], record_state=True))
    except AssertionError as exc:
        return int(lav.spike_counts.sum()), kinds, f"{kind} seed {seed} (extreme={extreme}): {str(exc).splitlines()[0]}"
    return int(lav.spike_counts.sum()), kinds, None


@pytest.mark.parametrize("kind", list(CASES))
def test_lava_emulator_sweep_part(kind, monkeypatch):
    """Every fifth sweep case of each kind, in the default suite: zero mismatches, and real activity."""
    spikes, mismatches = 0, []
    for i in range(0, CASES[kind], DEFAULT_EVERY):
        s, _, bad = _case(kind, i, monkeypatch)
        spikes += s
        if bad:
            mismatches.append(bad)
    assert not mismatches, "\n".join(mismatches)
    assert spikes > 0


@pytest.mark.slow
def test_lava_emulator_sweep(monkeypatch):
    ran, mismatches, spikes, kinds = 0, [], 0, {}
    t0 = time.time()
    for kind, count in CASES.items():
        for i in range(count):
            s, k, bad = _case(kind, i, monkeypatch)
            ran += 1
            spikes += s
            for name, c in k.items():
                kinds[name] = kinds.get(name, 0) + c
            if bad:
                mismatches.append(bad)
    print(f"\nbackend sweep: {ran} cases ({CASES}), {spikes} Lava spikes in all, "
          f"Lava layer mappings in conv cases {kinds}, {len(mismatches)} mismatches, "
          f"{time.time() - t0:.0f} s")
    assert ran == sum(CASES.values())
    assert not mismatches, "\n".join(mismatches)
