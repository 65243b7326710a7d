"""Export a float :class:`~neurodeploy.models.builders.SNNClassifier` as a NIR graph.

The graph describes one *encoded* time step per evaluation (the encoder stays
outside, as in the ONNX export): its ``Input`` has the per-step shape
(``(C, H, W)``, ``(F,)``) without a batch axis, as NIR types are per sample.

Mapping
-------
* ``torch.nn.Linear`` -> ``nir.Affine`` (a zero bias when the layer has none);
* ``TimeFolded(Conv2d)`` -> ``nir.Conv2d`` (zero padding only); a BatchNorm
  after it is folded into its weight and bias first (eval statistics,
  :func:`~neurodeploy.models.folding.fold_batchnorm`);
* ``torch.nn.Flatten`` -> ``nir.Flatten(start_dim=0)`` over the per-sample
  type (omitted when the input already is a vector);
* LIF / DLIF neurons -> ``nir.LIF`` (``nir.IF`` when ``leak == 1``);
* CUBA neurons -> ``nir.CubaLIF``;
* a recurrent layer -> a ``nir.NIRGraph`` subgraph
  ``input -> w_in (Affine) -> neurons -> output`` plus the recurrent edge
  ``neurons -> w_rec (Affine) -> neurons``: the recurrent input of step t is
  the spikes of step t-1 (how nirtorch's executor and Norse evaluate a cycle).

Neuron parameters (``dt = 1``, forward Euler, as Norse's ``from_nir(..., dt=1)``)
-------------------------------------------------------------------------------
Our DLIF/LIF step is ``v = leak*v + I; s = v > theta; v = 0 where s``. NIR's
LIF is ``tau dv/dt = (v_leak - v) + r I``; one Euler step of length 1 gives
``v' = (1 - 1/tau) v + (r/tau) I + v_leak/tau``. Hence

    tau = 1 / (1 - leak),   r = tau,   v_leak = 0,   v_threshold = theta,   v_reset = 0.

Norse 1.1.0's importer ignores ``r`` for ``LIF`` (it integrates
``v += dt/tau (v_leak - v + I)``), so by default (``fold_r=True``) ``r`` is
folded into the incoming synapse instead: the ``Affine``/``Conv2d`` weights
and bias are multiplied by ``tau`` and ``r = 1``. ``r * (W x)`` and
``(tau W) x`` with ``r = 1`` are the same ODE, so the graph means the same to
every NIR consumer, and Norse reproduces our model. ``fold_r=False`` keeps the
raw weights and ``r = tau`` (then Norse's import is off by the factor
``1 - leak`` on the input; other tools that honour ``r`` are not). ``leak ==
1`` (no leak, ``tau`` infinite) is written as ``nir.IF`` with ``r = 1``:
``dv/dt = I``, ``v' = v + I``.

Our CUBA step is ``i = cleak*i + I; v = leak*v + i`` (the voltage uses the
*new* current, Loihi's order, which is also the order of Norse's CubaLIF
import: synapse first, then membrane). With NIR's
``tau_syn dI/dt = -I + w_in S`` and ``tau_mem dv/dt = (v_leak - v) + r I``:

    tau_syn = 1/(1 - cleak), w_in = tau_syn, tau_mem = 1/(1 - leak), r = tau_mem, v_leak = 0.

Norse honours ``w_in`` and ``r`` for CubaLIF, so nothing is folded there.
``leak == 1`` or ``current_leak == 1`` has no finite time constant and raises.
A strict explicit Euler scheme for CubaLIF would update ``v`` with the old
current (one step of lag); the metadata records the order we mean.

DLIF gain
---------
The per-step gain ``p[t]`` multiplies the input current and varies with the
time step; NIR nodes are time invariant. Its mean over the first
``time_steps`` steps is folded into the incoming weights (and bias; for a
recurrent layer into both ``w_in`` and ``w_rec``). The per-step values, the
folded mean and the relative spread are recorded in the neuron node's
metadata (``gain_per_step``, ``gain_folded``, ``gain_spread``). The exported
graph is exact when the gain is constant (e.g. plain LIF).

Input normalisation (``model.normalize``) is folded into the first synapse
(exact for a dense first layer and for a conv without padding); before a
zero-padded conv it stays an explicit per-channel affine map, a 1x1 depthwise
``nir.Conv2d`` in front of the conv (exact too; see
:mod:`neurodeploy.models.walk`).

How
---
:func:`build_nir_graph` is :func:`neurodeploy.models.walk.graph_from_model`
(the one walk over the model, DLIF gains kept as per-step nodes) followed by
:func:`neurodeploy.io.nir_graph.graph_to_nir` (the FloatGraph -> NIR mapping,
which folds the gains as described above); reading a NIR file back is
:func:`neurodeploy.io.nir_graph.load_nir`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

from ..fileio import atomic_path
from .nir_graph import NIRExportError, graph_to_nir

__all__ = ["NIRExportError", "export_nir", "build_nir_graph"]


def build_nir_graph(model, *, input_shape: tuple[int, ...], time_steps: int, fold_r: bool = True):
    """The NIR graph of ``model`` (see the module docstring); ``input_shape`` is one sample's shape."""
    from ..graph import GraphError
    from ..models.walk import graph_from_model

    if isinstance(time_steps, bool) or not isinstance(time_steps, int) or time_steps < 1:
        raise NIRExportError(f"time_steps must be >= 1, got {time_steps}")
    try:
        graph = graph_from_model(model, time_steps, fold=False, input_shape=tuple(input_shape))
    except NIRExportError:
        raise
    except GraphError as exc:
        raise NIRExportError(str(exc)) from None
    return graph_to_nir(graph, fold_r=fold_r, time_steps=time_steps)


def export_nir(model, path: Union[str, os.PathLike], *, input_shape: tuple[int, ...],
               time_steps: int, fold_r: bool = True) -> Path:
    """Write ``model`` as a NIR graph (``nir.write``) at ``path``; return the path.

    ``input_shape`` is one sample's shape as the model takes it (``(C, H, W)``,
    ``(F,)``; for sequence data ``(T, F)`` or ``(F,)``); ``time_steps`` the
    number of steps over which the DLIF gain is averaged. The file reads back
    with ``nir.read(path)`` (type checking on) and imports with Norse 1.1.0's
    ``norse.torch.from_nir(graph, dt=1.0)``. Written to a temporary file and
    renamed, so a failure never leaves a partial file.
    """
    import nir

    graph = build_nir_graph(model, input_shape=input_shape, time_steps=time_steps, fold_r=fold_r)
    path = Path(path)
    with atomic_path(path) as tmp:
        nir.write(str(tmp), graph)
    return path
