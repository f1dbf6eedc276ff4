"""Find augmenters by name: ``register``, ``list_augmenters``, ``get``, ``create``.

Built-in augmenters and third-party ones are found the same way, through the entry-point group
``inout_aug.augmenters``; an entry point is imported only when its augmenter is asked for. Classes can
also be registered at run time with the :func:`register` decorator.

Name clashes are resolved deterministically, with a warning: inout-aug's own augmenters win, then
entry points in the order of their distribution names, then run-time registrations.
"""

from __future__ import annotations

import fnmatch
import inspect
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

from inout_aug.core.augmenter import Augmenter
from inout_aug.core.errors import PluginError, raised_on_purpose

GROUP = "inout_aug.augmenters"
OWN_DISTRIBUTION = "inout-aug"

A = TypeVar("A", bound=type)


class PluginWarning(RuntimeWarning):
    """A plugin could not be loaded or clashes with another; everything else keeps working."""


@dataclass
class Entry:
    """One registered augmenter: where it comes from and, once loaded, its class."""

    name: str
    source: str
    target: str
    entry_point: EntryPoint | None = None
    cls: type[Augmenter] | None = None
    error: str | None = field(default=None, repr=False)

    def load(self) -> type[Augmenter]:
        """Import the augmenter class (once); raise ``LookupError`` if the plugin is broken."""
        if self.cls is None and self.error is None:
            try:
                value = self.entry_point.value  # type: ignore[union-attr]
                if self.entry_point.pattern.match(value) is None:  # type: ignore[union-attr]
                    raise ValueError(f"its entry point {value!r} is not of the form 'module:Class'")
                loaded = self.entry_point.load()  # type: ignore[union-attr]
                if not (isinstance(loaded, type) and issubclass(loaded, Augmenter)):
                    raise TypeError(f"{self.target} is not a subclass of inout_aug.Augmenter")
            except (Exception, SystemExit) as exc:  # a broken plugin must not break anything else, nor exit
                self.error = f"{type(exc).__name__}: {exc}"
                warnings.warn(
                    f"inout-aug: augmenter {self.name!r} from distribution {self.source!r} failed to load "
                    f"({self.error}); fix or uninstall it: pip uninstall {self.source}",
                    PluginWarning,
                    stacklevel=3,
                )
            else:
                self.cls = loaded
        if self.cls is None:
            raise LookupError(
                f"augmenter {self.name!r} from distribution {self.source!r} is broken ({self.error}); "
                f"fix or uninstall it: pip uninstall {self.source}"
            )
        return self.cls

    def provides(self, cls: type) -> bool:
        """Whether this entry stands for ``cls`` (its entry point may name a package that re-exports it)."""
        if self.cls is cls:
            return True
        if self.entry_point is None:
            return self.target == f"{cls.__module__}:{cls.__qualname__}"
        module, attr = self.entry_point.module, self.entry_point.attr
        in_module = cls.__module__ == module or cls.__module__.startswith(module + ".")
        return in_module and attr in (cls.__qualname__, cls.__name__)

    @property
    def summary(self) -> str:
        """First line of the class docstring."""
        doc = inspect.getdoc(self.load()) or ""
        return doc.splitlines()[0] if doc else ""


_entries: dict[str, Entry] | None = None
_runtime: dict[str, Entry] = {}


def _distribution_name(ep: EntryPoint) -> str:
    """The entry point's distribution, in its normalised form (PEP 503)."""
    dist = getattr(ep, "dist", None)
    name = dist.metadata["Name"] if dist is not None else None  # None too where the metadata has no Name
    return re.sub(r"[-_.]+", "-", name).lower() if name else "unknown"


def _discover() -> dict[str, Entry]:
    """Read the entry points once (without importing them) and resolve name clashes."""
    global _entries
    if _entries is None:
        found = sorted(
            ((_distribution_name(ep), ep) for ep in entry_points(group=GROUP)),
            key=lambda pair: (pair[0] != OWN_DISTRIBUTION, pair[0].lower(), pair[1].name),
        )
        entries: dict[str, Entry] = {}
        for dist, ep in found:
            if ep.name in entries:
                kept = entries[ep.name]
                if kept.target != ep.value:  # the same distribution seen twice on sys.path is no clash
                    _warn_clash(ep.name, kept, f"{ep.value} from {dist!r}")
                continue
            entries[ep.name] = Entry(ep.name, dist, ep.value, entry_point=ep)
        for name, entry in _runtime.items():
            if name not in entries:
                entries[name] = entry
            elif entries[name].provides(entry.cls):
                entries[name].cls = entry.cls
            else:
                _warn_clash(name, entries[name], f"{entry.target} registered at run time")
        _entries = entries
    return _entries


def _warn_clash(name: str, kept: Entry, dropped: str) -> None:
    warnings.warn(
        f"inout-aug: two augmenters are named {name!r}; keeping {kept.target} from {kept.source!r}, "
        f"ignoring {dropped}",
        PluginWarning,
        stacklevel=4,
    )


def refresh() -> None:
    """Forget the discovered entry points, e.g. after installing or removing a plugin in this process."""
    global _entries
    _entries = None


def register(cls: A | None = None, *, name: str | None = None) -> A | Callable[[A], A]:
    """Class decorator: make an :class:`Augmenter` subclass available by ``name``.

    The name defaults to the class's own ``name`` attribute (not one it inherits).
    """

    def wrap(target: A) -> A:
        if not (isinstance(target, type) and issubclass(target, Augmenter)):
            raise TypeError(f"register expects an Augmenter subclass, got {target!r}")
        key = name or target.__dict__.get("name")
        if not key:
            raise ValueError(f"{target.__qualname__} has no name: set the class attribute `name` or pass name=")
        target_path = f"{target.__module__}:{target.__qualname__}"
        known = _discover().get(key)
        if known is not None and not known.provides(target):
            _warn_clash(key, known, f"{target_path} registered at run time")
            return target
        entry = known or Entry(key, target.__module__.split(".")[0], target_path)
        entry.cls = target
        _runtime[key] = entry
        _discover()[key] = entry
        return target

    return wrap(cls) if cls is not None else wrap


def list_augmenters(pattern: str = "*") -> list[str]:
    """Sorted names of the registered augmenters matching a shell-style ``pattern`` (``*``, ``?``, ``[ab]``)."""
    return sorted(n for n in _discover() if fnmatch.fnmatchcase(n, pattern))


def entries(pattern: str = "*") -> list[Entry]:
    """Registry entries (name, source distribution, target) matching ``pattern``, sorted by name."""
    found = _discover()
    return [found[n] for n in list_augmenters(pattern)]


def entry(name: str) -> Entry:
    """The registry entry of augmenter ``name`` (exact name, no wildcards)."""
    found = _discover().get(name)
    if found is None:
        known = ", ".join(list_augmenters()) or "none"
        raise KeyError(f"unknown augmenter {name!r}; registered: {known} (see `inout-aug list`)")
    return found


def get(name: str) -> type[Augmenter]:
    """The augmenter class registered as ``name``."""
    return entry(name).load()


_VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)


def _init_parameters(cls: type) -> list[inspect.Parameter]:
    """The constructor's parameters after ``self``."""
    return list(inspect.signature(cls.__init__).parameters.values())[1:]


def parameters(name: str) -> dict[str, inspect.Parameter]:
    """The named constructor parameters of augmenter ``name`` (no ``self``, ``*args`` or ``**kwargs``)."""
    return {p.name: p for p in _init_parameters(get(name)) if p.kind not in _VARIADIC}


def create(name: str, **params: Any) -> Augmenter:
    """Build augmenter ``name`` with ``params``; an unknown or missing parameter raises ``TypeError`` listing the valid
    ones; an error of the constructor that is not its own message (a value it could not convert or unpack) is
    raised again, of the same type, naming the augmenter and the parameters given."""
    found = entry(name)
    cls = found.load()
    signature = _init_parameters(cls)
    accepted = {p.name for p in signature if p.kind not in _VARIADIC}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in signature)
    unknown = sorted(set(params) - accepted)
    if unknown and not takes_any:
        raise TypeError(
            f"augmenter {name!r} has no parameter {', '.join(map(repr, unknown))}; "
            f"valid: {', '.join(sorted(accepted))} (see `inout-aug info {name}`)"
        )
    missing = [p.name for p in signature if p.default is inspect.Parameter.empty and p.kind not in _VARIADIC
               and p.name not in params]
    if missing:
        raise TypeError(f"augmenter {name!r} needs {', '.join(f'{m}=...' for m in missing)} "
                        f"(see `inout-aug info {name}`)")
    plugin = found.source != OWN_DISTRIBUTION
    try:
        augmenter = cls(**params)
    except Exception as exc:
        if raised_on_purpose(exc):  # the augmenter's own message; a plugin's is raised here, naming the plugin
            if not plugin:
                raise
            raise _same_kind(exc, f"augmenter {name!r} (from {found.source!r}): {exc}") from exc
        if isinstance(exc, (TypeError, ValueError)):  # most likely a value it could not convert or unpack
            given = ", ".join(f"{key}={value!r}" for key, value in params.items()) or "no parameters"
            raise _same_kind(exc, f"augmenter {name!r} failed to build from {given}: {exc}; check those values "
                                  f"(`inout-aug info {name}` shows what each parameter takes), and if they are right, "
                                  "report it as a bug of the augmenter") from exc
        if not plugin or (isinstance(exc, OSError) and exc.filename is not None):  # a file the user named, say
            raise
        raise PluginError(f"augmenter {name!r} from {found.source!r} failed to build ({type(exc).__name__}: {exc}): "
                          f"a bug of {found.source!r}, to report to its authors") from exc
    augmenter.name = name
    return augmenter


def _same_kind(exc: Exception, message: str) -> Exception:
    """An exception of ``exc``'s type with ``message``, or a TypeError or ValueError where that type takes other
    arguments."""
    try:
        return type(exc)(message)
    except Exception:
        return (TypeError if isinstance(exc, TypeError) else ValueError)(message)
