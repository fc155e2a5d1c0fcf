"""Gene panels (docs/method.md §1)."""

from __future__ import annotations

import logging
import re
import warnings
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from hinge_sc._validators import check_counts, check_genes_given, check_key_free, check_n_obs, check_positive_int

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData

    from hinge_sc.nn import Backbone

logger = logging.getLogger(__name__)

_EXCLUDED = re.compile(r"^(MT-|RPS|RPL)", re.IGNORECASE)


def _counts(adata: AnnData, layer: str | None):
    x = adata.X if layer is None else adata.layers[layer]
    return x.tocsr() if sp.issparse(x) else np.asarray(x)


def _mean_std(x) -> tuple[np.ndarray, np.ndarray]:
    if sp.issparse(x):
        mean = np.asarray(x.mean(axis=0)).ravel()
        sq = np.asarray(x.multiply(x).mean(axis=0)).ravel()
        return mean, np.sqrt(np.maximum(sq - mean**2, 0))
    return x.mean(axis=0), x.std(axis=0)


def _hvg_union(adata: AnnData, layer: str | None, section_key: str | None, n_top: int) -> pd.Index:
    import scanpy as sc

    if section_key is None:
        groups = [adata]
    else:
        groups = [adata[adata.obs[section_key] == s] for s in adata.obs[section_key].unique()]
    union: set[str] = set()
    for sub in groups:
        tmp = sc.AnnData(_counts(sub, layer).astype(np.float32), var=pd.DataFrame(index=sub.var_names))
        sc.pp.normalize_total(tmp)
        sc.pp.log1p(tmp)
        sc.pp.highly_variable_genes(tmp, n_top_genes=min(n_top, tmp.n_vars))
        union |= set(tmp.var_names[tmp.var["highly_variable"]])
    return adata.var_names[adata.var_names.isin(union)]


def select_genes(
    adata: AnnData,
    *,
    n_genes: int = 200,
    method: Literal["hmhvg", "hvg", "highly_expressed"] = "hmhvg",
    include: Sequence[str] | None = None,
    layer: str | None = None,
    section_key: str | None = "section",
    vocabulary: Sequence[str] | Backbone | None = None,
    aliases: bool | Mapping[str, str] = True,
    n_top_hvg: int = 2000,
    key_added: str = "hinge_panel",
    overwrite: bool = False,
    allow_non_integer: bool = False,
) -> list[str]:
    """Choose the gene panel HINGE generates.

    ``"hmhvg"`` (default, docs/method.md §1): the union over sections of each section's top ``n_top_hvg``
    highly variable genes (normalise total, log1p), without ``MT-``/``RPS``/``RPL`` genes, restricted to
    the genes that are at the same time among the top-k by mean and the top-k by standard deviation of
    raw counts, with k raised until ``n_genes`` genes remain. ``"hvg"``: top genes by HVG dispersion on
    all spots; ``"highly_expressed"``: top genes by mean count. Genes absent from ``vocabulary`` (the
    backbone's) are removed first and reported.

    Parameters
    ----------
    adata
        Spots × genes with raw counts (the training sections).
    n_genes
        Panel size.
    method
        See above.
    include
        Genes forced into the panel (e.g. ``["ERBB2"]``, a marker that must be generated), whatever ``method``
        says; they count towards ``n_genes`` and the method fills the rest. Each must be in ``adata.var_names``
        and, when ``vocabulary`` is given, match it.
    layer
        Layer with raw counts (default ``X``).
    section_key
        ``obs`` column of sections (HVGs per section); ``None`` treats all spots as one section.
    vocabulary
        The backbone, or the gene symbols it knows (e.g. ``backbone.genes``). A gene qualifies when
        :meth:`hinge_sc.Backbone.match_genes` would match it: exactly, ignoring case, or through a renamed
        symbol; with a backbone from :func:`hinge_sc.pretrain_backbone`, only genes it was pre-trained on
        (their embeddings are trained).
    aliases
        Renamed-symbol table for that matching: ``True`` (curated :data:`hinge_sc.nn.GENE_ALIASES`),
        ``False`` (symbols only) or a mapping, e.g. :func:`hinge_sc.nn.read_hgnc_aliases`.
    n_top_hvg
        HVGs per section.
    key_added
        Boolean ``adata.var`` column marking the panel.
    overwrite
        Replace an existing ``adata.var[key_added]``.
    allow_non_integer
        Accept non-negative non-integer counts: for corrected non-integer counts, e.g. ambient-RNA corrected.

    Returns
    -------
    The panel, ordered by decreasing mean count. Writes ``adata.var[key_added]``.

    Raises
    ------
    KeyError
        A gene of ``include`` is not in ``adata.var_names`` or not in ``vocabulary`` (the genes are named).
    ValueError
        ``include`` has more genes than ``n_genes``.
    """
    check_key_free(adata.var, key_added, where="adata.var", overwrite=overwrite)
    check_n_obs(adata)
    check_positive_int(n_genes, argument="n_genes")
    if method not in ("hmhvg", "hvg", "highly_expressed"):
        raise ValueError(f"`method` must be 'hmhvg', 'hvg' or 'highly_expressed', got {method!r}.")
    if vocabulary is not None and not isinstance(vocabulary, str) and not hasattr(vocabulary, "match_genes"):
        check_genes_given(list(vocabulary), argument="vocabulary")
    if section_key is not None and section_key not in adata.obs:
        raise KeyError(f"`section_key={section_key!r}` is not a column of `adata.obs`; pass `section_key=None`.")
    if layer is not None and layer not in adata.layers:
        raise KeyError(f"`layer={layer!r}` is not in `adata.layers`.")
    forced = _check_include(adata, include, n_genes, vocabulary, aliases)
    x = _counts(adata, layer)
    where = f"`adata.{'X' if layer is None else f'layers[{layer!r}]'}`"
    check_counts(x, where=where, allow_non_integer=allow_non_integer)
    candidates = adata.var_names[~adata.var_names.str.match(_EXCLUDED) & ~adata.var_names.isin(forced)]
    n_genes -= len(forced)
    if vocabulary is not None:
        in_vocab = _in_vocabulary(candidates, vocabulary, aliases)
        dropped = list(candidates[~in_vocab])
        if dropped:
            warnings.warn(
                f"{len(dropped)} genes are not in the backbone vocabulary (or not in its pre-training data) and "
                "cannot be in the panel, "
                f"e.g. {dropped[:10]}",
                UserWarning,
                stacklevel=2,
            )
        candidates = candidates[in_vocab]
    mean, std = _mean_std(x)
    stats = pd.DataFrame({"mean": mean, "std": std}, index=adata.var_names)
    if n_genes == 0:
        panel = []
    elif method == "hmhvg":
        candidates = candidates[candidates.isin(_hvg_union(adata, layer, section_key, n_top_hvg))]
        panel = _mean_std_intersection(stats.loc[candidates], n_genes)
    elif method == "hvg":
        hvg = _hvg_union(adata, layer, None, n_genes * 4)
        panel = list(stats.loc[candidates[candidates.isin(hvg)]].nlargest(n_genes, "std").index)
    elif method == "highly_expressed":
        panel = list(stats.loc[candidates].nlargest(n_genes, "mean").index)
    if len(panel) < n_genes:
        message = f"Only {len(panel) + len(forced)} genes qualify for the panel (asked for {n_genes + len(forced)})."
        warnings.warn(message, UserWarning, stacklevel=2)
    panel = list(stats.loc[[*forced, *panel]].sort_values("mean", ascending=False).index)
    adata.var[key_added] = adata.var_names.isin(panel)
    logger.info("Selected %d panel genes (%s); wrote adata.var[%r]", len(panel), method, key_added)
    return panel


def _check_include(
    adata: AnnData, include: Sequence[str] | None, n_genes: int, vocabulary, aliases: bool | Mapping[str, str]
) -> list[str]:
    """The genes of ``include`` (deduplicated, in order), each measured and, with a vocabulary, in it."""
    if include is None:
        return []
    if isinstance(include, str):
        include = [include]
    check_genes_given(list(include), argument="include")
    forced = list(dict.fromkeys(str(g) for g in include))
    absent = [g for g in forced if g not in adata.var_names]
    if absent:
        raise KeyError(
            f"`include` has genes that are not in `adata.var_names`: {absent[:20]}. Pass measured genes "
            "(HGNC symbols, as in `adata.var_names`)."
        )
    if vocabulary is not None:
        unknown = list(pd.Index(forced)[~_in_vocabulary(pd.Index(forced), vocabulary, aliases)])
        if unknown:
            raise KeyError(
                f"`include` has genes that are not in the backbone vocabulary (or not in its pre-training data): "
                f"{unknown[:20]}. The model cannot generate them; remove them from `include`."
            )
    if len(forced) > n_genes:
        raise ValueError(f"`include` has {len(forced)} genes but `n_genes={n_genes}`; raise `n_genes`.")
    return forced


def _in_vocabulary(genes: pd.Index, vocabulary, aliases: bool | Mapping[str, str]) -> np.ndarray:
    """Boolean mask of ``genes`` that match ``vocabulary`` (a Backbone or symbols) as the model matches them."""
    from hinge_sc.nn import Backbone
    from hinge_sc.nn._genes import match_genes

    if isinstance(vocabulary, str):
        raise TypeError("`vocabulary` must be a Backbone or a sequence of gene symbols, not a single string.")
    is_backbone = isinstance(vocabulary, Backbone)
    with warnings.catch_warnings():  # genes sharing a token are reported by the model if both enter the panel
        warnings.filterwarnings("ignore", message="Several genes map to the same vocabulary token")
        if is_backbone:
            ids = vocabulary.match_genes(list(genes), aliases=aliases)[0].numpy()
        else:
            index = {str(g): i + 1 for i, g in enumerate(vocabulary)}
            ids = np.asarray(match_genes(list(genes), index, aliases=aliases)[0])
    trained = vocabulary.pretrained_token_ids if is_backbone else None
    return (ids > 0) if trained is None else (ids > 0) & np.isin(ids, list(trained))


def _mean_std_intersection(stats: pd.DataFrame, n_genes: int) -> list[str]:
    """Genes among the top-k by mean and by s.d., with the smallest k giving at least ``n_genes`` genes."""
    by_mean = stats["mean"].rank(ascending=False, method="first")
    by_std = stats["std"].rank(ascending=False, method="first")
    worst = np.maximum(by_mean, by_std)  # a gene is in the top-k of both iff k ≥ worst rank
    return list(worst.nsmallest(min(n_genes, len(stats))).index)
