"""Data sets (offline only) and spike encoders."""

from .datasets import DATASETS, DataError, DatasetSplit, load_dataset, read_idx
from .encoders import ENCODERS, DirectEncoder, Encoder, PoissonEncoder, TemporalEncoder, make_encoder

__all__ = [
    "DATASETS",
    "DataError",
    "DatasetSplit",
    "load_dataset",
    "read_idx",
    "ENCODERS",
    "Encoder",
    "DirectEncoder",
    "PoissonEncoder",
    "TemporalEncoder",
    "make_encoder",
]
