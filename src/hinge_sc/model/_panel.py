"""The gene panel of a model: the requested genes that the data measures and the backbone's vocabulary knows."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from hinge_sc._validators import check_genes_given

if TYPE_CHECKING:
    from collections.abc import Sequence

    import pandas as pd

    from hinge_sc.nn import Backbone


def select_panel(
    var_names: pd.Index, genes: Sequence[str] | None, backbone: Backbone, *, drop_missing_genes: bool = False
) -> list[str]:
    """The panel of a model: ``genes`` (default: every registered gene) that the backbone's vocabulary knows.

    Explicit ``genes`` absent from the data raise; absent from the vocabulary they raise unless
    ``drop_missing_genes`` (then they are dropped with a warning, as are unmatched genes of the default panel).
    Genes matched through a renamed symbol, and genes the backbone's pre-training never saw, are reported.

    Parameters
    ----------
    var_names
        The registered genes.
    genes
        Requested panel, or ``None``.
    backbone
        The frozen backbone (its vocabulary).
    drop_missing_genes
        Drop requested genes absent from the vocabulary instead of raising.
    """
    check_genes_given(genes, argument="genes")
    if genes is None:
        candidates = list(var_names)
    else:
        candidates = [str(g) for g in genes]
        absent = [g for g in candidates if g not in var_names]
        if absent:
            raise KeyError(
                f"{len(absent)} of `genes` are not in the registered genes (adata.var_names), e.g. {absent[:10]}. "
                "Pass genes that the data measures."
            )
        if len(set(candidates)) != len(candidates):
            raise ValueError("`genes` has duplicates.")
    _, report = backbone.match_genes(candidates)
    missing = list(report.loc[report["match"] == "none", "gene"])
    renamed = report[report["match"] == "alias"]
    if len(renamed):
        pairs = [f"{g}→{s}" for g, s in zip(renamed["gene"], renamed["symbol"], strict=True)]
        warnings.warn(
            f"{len(pairs)} genes matched the backbone vocabulary through a renamed symbol: {pairs[:20]}"
            f"{' …' if len(pairs) > 20 else ''}. Check `backbone.match_genes(genes)` if that is not wanted.",
            UserWarning,
            stacklevel=3,
        )
    if missing and genes is not None and not drop_missing_genes:
        raise KeyError(
            f"{len(missing)} of the {len(candidates)} requested `genes` are not in the backbone vocabulary "
            f"({len(backbone.genes)} genes): {missing[:20]}{' …' if len(missing) > 20 else ''}. Remove them from "
            "`genes`, or pass `drop_missing_genes=True` to drop them with a warning."
        )
    missing_set = set(missing)
    panel = [g for g in candidates if g not in missing_set]
    if not panel:
        raise ValueError(
            f"None of the {len(candidates)} genes is in the backbone vocabulary ({len(backbone.genes)} genes, "
            f"e.g. {backbone.genes[:5]}). Check the gene symbols (HGNC symbols expected) or the backbone."
        )
    if missing:
        warnings.warn(
            f"{len(missing)} of {len(candidates)} genes are not in the backbone vocabulary and were dropped "
            f"from the panel: {missing[:20]}{' …' if len(missing) > 20 else ''}",
            UserWarning,
            stacklevel=3,
        )
    unseen = backbone.unseen_in_pretraining(panel)
    if unseen:
        warnings.warn(
            f"{len(unseen)} panel genes are in the backbone vocabulary but not in its pre-training data, so their "
            f"embeddings are untrained: {unseen[:20]}{' …' if len(unseen) > 20 else ''}. Pre-train on data that "
            "measures them, or choose the panel with `hs.pp.select_genes(..., vocabulary=backbone)`.",
            UserWarning,
            stacklevel=3,
        )
    return panel
