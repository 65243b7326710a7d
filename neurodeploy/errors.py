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
    """``repr(value)`` cut to ``limit`` characters, for error messages about untrusted values.

    Never ``repr`` a whole untrusted value: a YAML alias bomb or a 5,000-digit
    integer makes that slow or huge.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"<integer of {value.bit_length()} bits>"
    if isinstance(value, (list, tuple, dict, set)) and len(value) > 16:
        return f"<{type(value).__name__} of {len(value)} items>"
    try:
        text = repr(value)
    except (RecursionError, ValueError):
        return f"<{type(value).__name__}>"
    # one line: a tensor's or array's repr spans several
    text = " ".join(text.split()) if "\n" in text or "\r" in text else text
    return text if len(text) <= limit else text[: limit - 3] + "..."
