"""Hardened YAML reading for every user-written file and value.

Configs (``models/*.yaml``), hardware profiles (``hw_profiles/*.yaml``), their
``noise:`` sections and ``--set KEY=VALUE`` values all go through here, so
hostile input fails fast with one line naming the file (or option), the
place and the problem, never with a hang, a traceback or a 40-line dump:

* :func:`load_yaml` reads only regular files (a named pipe or a device is
  refused instead of blocking), at most :data:`MAX_BYTES`, strictly UTF-8;
* the loader (:class:`HardenedLoader`, a ``yaml.SafeLoader``) rejects anchors
  and aliases (a 1 KB alias bomb expands to gigabytes), caps the nesting depth
  at :data:`MAX_DEPTH` (deep nesting is an error, not a ``RecursionError``)
  and integers at :data:`MAX_INT_CHARS` characters (no 5,000-digit integers);
  explicitly tagged scalars that do not parse (``!!int abc``, ``!!bool x``)
  and timestamps are not crashes: timestamps stay strings (no config field is
  a date, and ``2024-13-01`` would raise inside PyYAML), the others are errors;
  ``1e-3`` is a float (YAML 1.1 makes it a string, a classic trap);
* every ``yaml.YAMLError`` becomes one line: ``line L, column C: problem``.

Each function takes the error class to raise (``error=ConfigError``,
``ProfileError``, ...); it must derive from :class:`~neurodeploy.errors.NeurodeployError`.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, Union

import yaml
from yaml.composer import ComposerError
from yaml.constructor import ConstructorError

from .errors import NeurodeployError, bounded
from .fileio import FileAccessError, require_regular_file

__all__ = [
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_INT_CHARS",
    "MAX_SCALAR_CHARS",
    "YamlError",
    "HardenedLoader",
    "load_yaml",
    "parse_yaml",
    "parse_scalar",
]

MAX_BYTES = 1 << 20        # 1 MiB: a config or profile is ~1 KB
MAX_DEPTH = 32             # nesting of mappings/sequences; the deepest config needs 4
MAX_INT_CHARS = 40         # an integer literal's characters (sign, digits, '_'); int64 needs 20
MAX_SCALAR_CHARS = 10_000  # a --set value

ErrorClass = type  # a subclass of NeurodeployError


class YamlError(NeurodeployError, ValueError):
    """A YAML file or value is unreadable or malformed (the default error class here)."""


class HardenedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without anchors/aliases, with a nesting cap and safe scalar constructors."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._nd_depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: D102 - PyYAML hook
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise ComposerError(None, None, f"aliases (*{bounded(event.anchor, 40)[1:-1]}) are not allowed",
                                event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise ComposerError(None, None, f"anchors (&{bounded(event.anchor, 40)[1:-1]}) are not allowed",
                                event.start_mark)
        nested = isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent))
        if nested:
            self._nd_depth += 1
            if self._nd_depth > MAX_DEPTH:
                raise ComposerError(None, None, f"nesting deeper than {MAX_DEPTH} levels", event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            if nested:
                self._nd_depth -= 1

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:  # noqa: D102 - PyYAML hook
        # a repeated key silently overrides the first (a duplicated section loses settings)
        if isinstance(node, yaml.MappingNode):
            seen: set = set()
            for key_node, _ in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    key = self.construct_object(key_node, deep=True)
                    if key in seen:
                        raise ConstructorError("while constructing a mapping", node.start_mark,
                                               f"duplicate key {bounded(key, 60)}", key_node.start_mark)
                    seen.add(key)
        return super().construct_mapping(node, deep=deep)

    # Scalar constructors: PyYAML's raise ValueError/KeyError/AttributeError on
    # explicitly tagged garbage (``!!int abc``) and on ``0x_`` or ``2024-13-01``.

    def construct_yaml_int(self, node: Any) -> int:  # noqa: D102 - PyYAML hook
        text = self.construct_scalar(node)
        if len(text) > MAX_INT_CHARS:
            raise ConstructorError(None, None, f"integer of {len(text)} characters (at most {MAX_INT_CHARS})",
                                   node.start_mark)
        value = text.replace("_", "")
        sign = -1 if value[:1] == "-" else 1
        if value[:1] in "+-":
            value = value[1:]
        try:
            if value == "0":
                return 0
            if value.startswith("0b"):
                return sign * int(value[2:], 2)
            if value.startswith("0x"):
                return sign * int(value[2:], 16)
            if ":" in value:
                digits = [int(part) for part in value.split(":")]
                out = 0
                for d in digits:
                    out = out * 60 + d
                return sign * out
            if value.startswith("0"):
                return sign * int(value, 8)
            return sign * int(value)
        except ValueError:
            raise ConstructorError(None, None, f"{bounded(text, 50)} is not an integer", node.start_mark) from None

    def construct_yaml_float(self, node: Any) -> float:  # noqa: D102 - PyYAML hook
        text = self.construct_scalar(node)
        if len(text) > 400:
            raise ConstructorError(None, None, f"number of {len(text)} characters (at most 400)", node.start_mark)
        try:
            return super().construct_yaml_float(node)
        except ValueError:
            raise ConstructorError(None, None, f"{bounded(text, 50)} is not a number", node.start_mark) from None

    def construct_yaml_bool(self, node: Any) -> bool:  # noqa: D102 - PyYAML hook
        text = self.construct_scalar(node)
        value = self.bool_values.get(text.lower())
        if value is None:
            raise ConstructorError(None, None, f"{bounded(text, 50)} is not a boolean (true or false)",
                                   node.start_mark)
        return value

    def construct_yaml_timestamp(self, node: Any) -> str:  # noqa: D102 - PyYAML hook
        return self.construct_scalar(node)


for _tag, _fn in (("int", HardenedLoader.construct_yaml_int), ("float", HardenedLoader.construct_yaml_float),
                  ("bool", HardenedLoader.construct_yaml_bool),
                  ("timestamp", HardenedLoader.construct_yaml_timestamp)):
    HardenedLoader.add_constructor(f"tag:yaml.org,2002:{_tag}", _fn)
# 1e-3 and 2E5 are floats (YAML 1.2); YAML 1.1 wants a dot and makes them strings
HardenedLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _one_line(text: str, limit: int = 160) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """``line L, column C: problem (context)`` of a PyYAML error, on one line."""
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or "malformed"
        if exc.context and exc.context not in problem:
            problem = f"{problem} ({exc.context})"
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        return where + _one_line(problem)
    if isinstance(exc, yaml.reader.ReaderError):
        return (f"character {exc.position + 1}: unacceptable character #x{exc.character:04x} "
                f"(control characters are not allowed)") if isinstance(exc.character, int) \
            else f"character {exc.position + 1}: {_one_line(exc.reason)}"
    return _one_line(str(exc))


def parse_yaml(text: str, where: str, *, error: ErrorClass = YamlError) -> Any:
    """Parse one YAML document with :class:`HardenedLoader`; ``None`` for an empty one.

    ``where`` starts every message (a file name, ``--set KEY``); errors are
    ``error`` (a :class:`NeurodeployError` subclass).
    """
    loader = None
    try:
        loader = HardenedLoader(text)  # the reader checks for control characters here
        return loader.get_single_data()
    except yaml.YAMLError as exc:
        raise error(f"{where}: not valid YAML at {_yaml_problem(exc)}"
                    if isinstance(exc, yaml.MarkedYAMLError) and (exc.problem_mark or exc.context_mark)
                    else f"{where}: not valid YAML: {_yaml_problem(exc)}") from None
    finally:
        if loader is not None:
            loader.dispose()


def _read_bytes(path: Path, what: str, max_bytes: int) -> bytes:
    """At most ``max_bytes`` of a regular file; opened non-blocking so a pipe swapped in never hangs."""
    require_regular_file(path, what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise FileAccessError(f"{path}: {what} cannot be read ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise FileAccessError(f"{path}: {what} is not a regular file")
        chunks, size = [], 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise FileAccessError(f"{path}: {what} cannot be read ({exc.strerror})") from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > max_bytes:
        raise FileAccessError(f"{path}: {what} is larger than {max_bytes} bytes; expected a small YAML file")
    return data


def load_yaml(path: Union[str, Path], what: str = "YAML file", *, error: ErrorClass = YamlError,
              max_bytes: int = MAX_BYTES) -> Any:
    """Read and parse the YAML file ``path``; ``None`` for an empty or comment-only file.

    ``what`` names the file's role in messages (``"config file"``). Every
    failure is one line of class ``error``, starting with the path: missing,
    not a regular file (named pipe, folder, device), larger than
    ``max_bytes``, not UTF-8, not valid YAML (with line and column), an
    anchor or alias, nesting or an integer too large.
    """
    path = Path(path)
    try:
        data = _read_bytes(path, what, max_bytes)
    except FileAccessError as exc:  # the caller's error class, same message (an absurd path shortened)
        text = str(exc)
        if len(str(path)) > 256:
            text = text.replace(str(path), bounded(str(path), 120)[1:-1])
        raise error(text) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise error(f"{path}: {what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at line {line}, "
                    f"offset {exc.start}); save it as UTF-8") from None
    return parse_yaml(text, str(path), error=error)


def parse_scalar(text: str, where: str, *, error: ErrorClass = YamlError) -> Any:
    """A command-line value (``--set KEY=VALUE``) parsed as YAML with the same protections.

    ``0.05`` is a float, ``[64, 32]`` a list, ``null`` or an empty value
    ``None``, anything else that YAML reads as text a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_scalar expects a str, got {type(text).__name__}")
    if len(text) > MAX_SCALAR_CHARS:
        raise error(f"{where}: value of {len(text)} characters (at most {MAX_SCALAR_CHARS})")
    return parse_yaml(text, where, error=error)
