"""Imports of third-party packages that are noisy at import time, quietened narrowly (only their known noise)."""

from __future__ import annotations

import warnings
from typing import Any


def import_squidpy() -> Any:
    """``import squidpy`` without docrep's ``SyntaxWarning: 'n_jobs' is not a valid key!`` lines.

    docrep (squidpy's docstring templating) warns about squidpy's own docstrings each time squidpy is first imported;
    nothing a user can act on. Only ``SyntaxWarning`` raised from docrep is ignored, only during this import.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=SyntaxWarning, module=r"docrep(\.|$)")
        import squidpy

    return squidpy
