"""Serialization of deployed and float networks.

* :mod:`.netx_hdf5`: the fixed-point IR as a lava-dl netx HDF5 file
  (:func:`write_netx`, :func:`read_netx`, :class:`NetxFormatError`,
  :class:`NetxExportError`).
* :mod:`.nir_export`: a float :class:`~neurodeploy.models.builders.SNNClassifier`
  as a NIR graph (:func:`export_nir`).
* :mod:`.nir_graph`: NIR <-> :class:`~neurodeploy.graph.FloatGraph`
  (:func:`graph_to_nir`, :func:`nir_to_graph`, :func:`load_nir`,
  :class:`NIRImportError`, :class:`NIRTypeCheckWarning`).
* :mod:`.onnx_export`: one time step of a float model as an ONNX graph with
  explicit neuron state (:func:`export_onnx`, :func:`run_onnx`).

Names are imported lazily, so ``import neurodeploy.io`` does not load torch,
nir or onnx until they are used.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "write_netx": ".netx_hdf5",
    "read_netx": ".netx_hdf5",
    "NetxFormatError": ".netx_hdf5",
    "NetxExportError": ".netx_hdf5",
    "NetxInexactWarning": ".netx_hdf5",
    "export_nir": ".nir_export",
    "NIRExportError": ".nir_export",
    "graph_to_nir": ".nir_graph",
    "nir_to_graph": ".nir_graph",
    "load_nir": ".nir_graph",
    "NIRImportError": ".nir_graph",
    "NIRTypeCheckWarning": ".nir_graph",
    "export_onnx": ".onnx_export",
    "run_onnx": ".onnx_export",
    "step_interface": ".onnx_export",
    "encode_input": ".onnx_export",
    "ONNXExportError": ".onnx_export",
    "load_input_npy": ".npy_input",
    "InputFileError": ".npy_input",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        module = importlib.import_module(_EXPORTS[name], __name__)
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
