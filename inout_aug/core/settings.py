"""Settings dataclasses from dicts, presets and ``KEY=VALUE`` strings: one loader, one error type."""

from __future__ import annotations

import ast
import dataclasses
import difflib
import math
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

T = TypeVar("T")


class SettingsError(ValueError):
    """Settings that cannot be read: an unknown key or preset, or a ``KEY=VALUE`` string without ``=``."""


def settings_from_dict(cls: type[T], values: Mapping[str, Any], *, what: str = "") -> T:
    """``cls(**values)`` for a dataclass ``cls``; unknown keys raise a :class:`SettingsError` naming them, the
    closest valid key and every valid one. ``what`` names the settings in the message (e.g. "ddpm")."""
    names = sorted(f.name for f in dataclasses.fields(cls) if f.init)
    unknown = sorted(set(values) - set(names))
    if unknown:
        close = [match for key in unknown for match in difflib.get_close_matches(key, names, n=1)]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        label = f"{what} setting" if what else "setting"
        raise SettingsError(f"unknown {label}{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}{hint}; "
                            f"valid: {', '.join(names)}")
    _check_kinds(cls, values, what)
    return cls(**values)


def _check_kinds(cls: type, values: Mapping[str, Any], what: str) -> None:
    """Raise a :class:`SettingsError` for a value of a flag, integer or number setting (told by its default) that is
    not one, before the settings compare it with anything: ``steps=abc``, ``epochs=2.5``, ``learning_rate=nan``."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kinds = {"bool": bool, "int": int, "float": float}
    for key, value in values.items():
        annotation = str(fields[key].type).replace(" ", "")
        optional = annotation.endswith("|None")
        default = fields[key].default
        kind = type(default) if default is not None else \
            kinds.get(annotation.removesuffix("|None"))  # an optional setting: its kind from its annotation
        wanted = None if value is None and optional else kind_mismatch(value, kind)
        if wanted:
            raise SettingsError(f"{what + ' ' if what else ''}setting {key} must be {wanted}, got {value!r}")


def kind_mismatch(value: Any, kind: type | None) -> str | None:
    """What ``value`` should be when it is not of ``kind`` (bool: a flag, int: an integer, float: a finite number,
    an int too), else None; None for any other kind, which is not checked here."""
    if kind is bool:
        return None if isinstance(value, bool) else "True or False"
    if kind is int:
        return None if isinstance(value, int) and not isinstance(value, bool) else "an integer"
    if kind is float:
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        return None if number else "a finite number"
    return None


def settings_from_preset(cls: type[T], presets: Mapping[str, Mapping[str, Any]], name: str,
                         overrides: Mapping[str, Any] | None = None, *, what: str = "") -> T:
    """Preset ``name`` of ``presets`` with ``overrides`` on top, through :func:`settings_from_dict`."""
    if name not in presets:
        raise SettingsError(f"unknown {what + ' ' if what else ''}preset {name!r}; choose one of {', '.join(presets)}")
    return settings_from_dict(cls, {**presets[name], **(overrides or {})}, what=what)


def parse_pairs(pairs: Iterable[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings as a dict; a value is a Python literal (``0.5``, ``(1, 2)``, ``None``), else a string."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise SettingsError(f"expected key=value, got {pair!r}")
        try:
            values[key.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[key.strip()] = text
    return values
