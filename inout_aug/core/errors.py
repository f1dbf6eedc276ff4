"""Errors raised on purpose (messages for the user) told apart from errors raised by accident (bugs)."""

from __future__ import annotations

import linecache
from collections.abc import Sequence


def raised_on_purpose(exc: BaseException, code: Sequence[str] | None = None) -> bool:
    """Whether ``exc`` came from a ``raise`` statement (in a file under one of the folders ``code``, when given),
    rather than from a failed operation such as an unpacking or a conversion."""
    last = exc.__traceback__
    if last is None:
        return False
    while last.tb_next is not None:
        last = last.tb_next
    where = last.tb_frame.f_code.co_filename
    inside = code is None or where.startswith(tuple(code))
    return inside and linecache.getline(where, last.tb_lineno).lstrip().startswith("raise")


class PluginError(RuntimeError):
    """A plugin's own code failed: a bug to report to the plugin's authors, not to inout-aug."""
