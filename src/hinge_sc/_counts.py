"""Panel counts: the one preparation of raw counts used by the model, the baselines and pre-training.

Layer (or ``X``) → the panel's columns → spots with no panel count left out (with a warning) → library sizes over
all genes (see :mod:`hinge_sc._scales`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd


@dataclass
class PanelCounts:
    """Raw counts of the panel genes for the spots that have any.

    Attributes
    ----------
    counts
        ``(n_kept, n_genes)`` float32, dense, or CSR with ``sparse=True``.
    library
        ``(n_kept,)`` float32 total counts of each spot over **all** genes of the matrix.
    keep
        ``(n_kept,)`` row indices of the kept spots in the input.
    """

    counts: np.ndarray | sp.csr_matrix
    library: np.ndarray
    keep: np.ndarray


def panel_counts(
    x: Any, var_names: pd.Index, genes: Sequence[str], *, purpose: str, sparse: bool = False, stacklevel: int = 3
) -> PanelCounts:
    """Select the panel's columns of a count matrix and leave out spots without panel counts.

    Parameters
    ----------
    x
        Spots × genes raw counts (dense or sparse), already checked (:func:`hinge_sc._validators.check_counts`).
    var_names
        Gene names of the columns of ``x``.
    genes
        Panel genes (all in ``var_names``).
    purpose
        What the counts are for (``"training"``, ``"fitting"``, ``"pre-training"``), used in the messages.
    sparse
        Return CSR counts (for large gene spaces) instead of a dense array.
    stacklevel
        Of the warning, so that it points at the user's call.

    Returns
    -------
    :class:`PanelCounts`.

    Raises
    ------
    ValueError
        No spot has counts in the panel genes.

    Warns
    -----
    UserWarning
        Some spots have no counts in the panel genes and are left out.
    """
    cols = var_names.get_indexer(list(genes))
    if (cols < 0).any():
        missing = [g for g, c in zip(genes, cols, strict=True) if c < 0]
        raise KeyError(f"Panel genes missing from the data: {missing[:10]}.")
    library = np.asarray(x.sum(axis=1)).ravel().astype(np.float32)
    sub = sp.csr_matrix(x[:, cols], dtype=np.float32) if sparse else x[:, cols]
    if not sparse:
        sub = (sub.toarray() if sp.issparse(sub) else np.asarray(sub)).astype(np.float32)
    keep = np.flatnonzero(np.asarray(sub.sum(axis=1)).ravel() > 0)
    n_obs = x.shape[0]
    if not len(keep):
        raise ValueError(f"No spot has counts in the {len(cols)} panel genes; nothing to use for {purpose}.")
    if len(keep) < n_obs:
        warnings.warn(
            f"{n_obs - len(keep)} of {n_obs} spots have no counts in the {len(cols)} panel genes and are left out "
            f"of {purpose}.",
            UserWarning,
            stacklevel=stacklevel,
        )
    return PanelCounts(counts=sub[keep], library=library[keep], keep=keep)
