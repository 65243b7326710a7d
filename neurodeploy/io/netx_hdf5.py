"""lava-dl netx HDF5 network description: write and read the fixed-point IR.

``write_netx(network, path)`` writes the layout that lava-dl 0.6.0's
``lava.lib.dl.netx.hdf5.Network`` loads, with values chosen so that the Lava
processes netx builds compute exactly what our :class:`~neurodeploy.ir.Network`
describes. ``read_netx(path)`` reads such files, also ones written by other
tools (slayer's ``export_hdf5``, hand-made files), and returns the IR of what
netx would run.

This module is the public face of three:

* :mod:`neurodeploy.io.netx_semantics`: the mapping between netx fields and
  the IR (``du = iDecay - 1``, ``bias_exp = 6``, netx's weight scaling, what
  netx can hold exactly, the potential readout's integrator), the errors;
* :mod:`neurodeploy.io.netx_writer`: :func:`write_netx`;
* :mod:`neurodeploy.io.netx_reader`: :func:`read_netx` and the limits on
  untrusted files (``MAX_*``).

Round trip: besides the netx datasets the writer stores the exact IR under a
root group ``neurodeploy`` that netx never looks at; the reader returns that
IR after checking that it still describes the same computation as the netx
datasets.
"""

from __future__ import annotations

from .netx_reader import (
    MAX_INT_VALUE,
    MAX_JSON_DEPTH,
    MAX_LAYER_ELEMENTS,
    MAX_LAYERS,
    MAX_NDIM,
    MAX_STRING_CHARS,
    MAX_TIME_STEPS,
    MAX_TOTAL_ELEMENTS,
    read_netx,
)
from .netx_semantics import (  # noqa: F401 - private names kept importable for the tests
    EXTRA_GROUP,
    FORMAT_VERSION,
    NETX_BIAS_EXP,
    READOUTS,
    VTH_MAX,
    NetxExportError,
    NetxFormatError,
    NetxInexactWarning,
    _canonical,
    _ir_bias,
    _ir_synapse,
    _lava_dense_transform,
    _lava_sign_mode,
    _netx_dense_semantics,
    _netx_optimize,
)
from .netx_writer import _netx_plan, write_netx  # noqa: F401

__all__ = ["NetxFormatError", "NetxExportError", "NetxInexactWarning", "write_netx", "read_netx", "FORMAT_VERSION",
           "EXTRA_GROUP", "MAX_LAYERS", "MAX_LAYER_ELEMENTS", "MAX_TOTAL_ELEMENTS", "MAX_TIME_STEPS",
           "MAX_NDIM", "MAX_STRING_CHARS", "MAX_JSON_DEPTH", "MAX_INT_VALUE", "NETX_BIAS_EXP", "READOUTS", "VTH_MAX"]
