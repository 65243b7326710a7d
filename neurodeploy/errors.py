"""The one base class of every error a user can cause.

Every module's own error (``ConfigError``, ``NetxFormatError``, ...) derives
from :class:`NeurodeployError` and from the builtin it used to be (so
``except ValueError`` keeps working). The CLI prints a ``NeurodeployError``
as one line and exits 2; anything else is a bug of ours and keeps its
traceback.
"""

from __future__ import annotations

__all__ = ["NeurodeployError", "bounded"]


class NeurodeployError(Exception):
    """An error the user can fix: bad input, a missing file, an unsupported layer."""


def bounded(value: object, limit: int = 80) -> str:
    """A one-line ``repr`` of ``value`` of at most ``limit`` characters, for messages about untrusted values.

    Never ``repr`` a whole untrusted value: a YAML alias bomb or a 5,000-digit
    integer makes that slow or huge. Arrays and tensors (anything with
    ``shape`` and ``dtype``) of up to 16 elements are shown as lists, larger
    ones by shape and dtype; a container of more than 16 items, or holding
    containers or arrays, by its size (never expanded).
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<integer of {value.bit_length()} bits>"
    shape, dtype = getattr(value, "shape", None), getattr(value, "dtype", None)
    if shape is not None and dtype is not None and hasattr(value, "tolist") and not isinstance(value, type):
        try:
            dims = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            return f"<{type(value).__name__}>"
        size = 1
        for d in dims:
            size *= d
        if size > 16:
            return f"<array of shape {dims[:8]}, dtype {dtype}>"
        value = value.tolist()
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        items = list(value.items()) if isinstance(value, dict) else list(value) if len(value) <= 16 else None
        flat = items is not None and not any(
            isinstance(v, (list, tuple, set, frozenset, dict)) or hasattr(v, "shape")
            for item in items for v in (item if isinstance(value, dict) else (item,)))
        if not flat:
            return f"<{type(value).__name__} of {len(value)} items>"
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        return f"<{type(value).__name__}>"
    # one line: a repr may span several
    text = " ".join(text.split()) if "\n" in text or "\r" in text else text
    return text if len(text) <= limit else text[: limit - 3] + "..."
