"""Deprecated spellings, kept for one release with a :class:`FutureWarning` that names the new one."""

from __future__ import annotations

import warnings
from typing import Any


def warn_renamed(old: str, new: str, *, stacklevel: int = 3) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``."""
    warnings.warn(
        f"`{old}` is deprecated and will be removed in the next release; use `{new}`.",
        FutureWarning,
        stacklevel=stacklevel,
    )


def renamed_argument(old_name: str, old_value: Any, new_name: str, new_value: Any, *, default: Any = None) -> Any:
    """Resolve a renamed keyword argument: the old spelling still works (with a warning); both at once is an error.

    Parameters
    ----------
    old_name, old_value
        Deprecated argument and the value passed for it (``None`` when not passed).
    new_name, new_value
        Its replacement and the value passed for it.
    default
        Default of the new argument (a new value equal to it counts as "not passed").
    """
    if old_value is None:
        return new_value
    if new_value is not None and new_value != default and new_value != old_value:
        raise TypeError(f"Pass `{new_name}` only; `{old_name}` is its deprecated spelling.")
    warn_renamed(old_name, new_name, stacklevel=4)
    return old_value
