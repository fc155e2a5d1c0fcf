"""Aggregate evaluation results over sections and seeds, and compare methods with paired tests (docs/method.md §7)."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Sequence

_SKIP = {"n_spots", "n_genes", "n_valid_genes"}


def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _check_columns(results: pd.DataFrame, columns: Sequence[str], argument: str) -> None:
    missing = [c for c in columns if c not in results.columns]
    if missing:
        raise KeyError(
            f"`{argument}` names columns missing from `results`: {missing} (columns: {list(results.columns)}). "
            "Use `per_section.reset_index()` and add a column per method / seed before concatenating."
        )


def _replicate_means(
    results: pd.DataFrame, by: list[str], group: list[str], replicate: list[str], metrics: list[str]
) -> pd.DataFrame:
    if "section" in results.columns:
        results = results[results["section"].astype(str) != "mean"]  # the summary row of `evaluate`
    _check_columns(results, by, "by")
    _check_columns(results, group, "group")
    _check_columns(results, [c for c in replicate if c in results.columns] + metrics, "metrics")
    keys = by + group
    return results.groupby(keys, observed=True, sort=False)[metrics].mean().reset_index()


def aggregate(
    results: pd.DataFrame,
    *,
    by: str | Sequence[str] = "method",
    group: str | Sequence[str] = "section",
    replicate: str | Sequence[str] | None = "seed",
    metrics: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Mean ± s.d. of each metric over sections (after averaging seeds), per method.

    Replicates (``replicate``, e.g. seeds of a stochastic method) of the same method and section are
    averaged first; the mean and the sample s.d. (``ddof=1``) are then taken over the groups (``group``,
    e.g. held-out sections), so the s.d. reflects the variation between sections. The s.d. between seeds
    (averaged over sections) is reported as ``seed_sd``. NaN values are left out.

    Parameters
    ----------
    results
        Long table, one row per method × section × seed, with metric columns, e.g. the ``per_section`` tables
        of :func:`hinge_sc.tl.evaluate` (``reset_index()``) concatenated with ``method`` and ``seed`` columns.
        Rows with ``section == "mean"`` are dropped.
    by
        Column(s) naming the method (and e.g. the scale).
    group
        Column(s) of the unit of variation, e.g. ``"section"``.
    replicate
        Column(s) averaged within a group, e.g. ``"seed"``; may be absent from ``results``.
    metrics
        Metric columns; default every numeric column except counts, ``by``, ``group`` and ``replicate``.

    Returns
    -------
    DataFrame indexed by ``by`` with columns ``(metric, stat)``, ``stat`` in ``mean``, ``sd``, ``seed_sd``,
    ``n`` (number of groups with a finite value).

    Examples
    --------
    >>> results = pd.concat([ps.reset_index().assign(method=m, seed=s) for (m, s), ps in tables.items()])
    >>> hs.tl.aggregate(results)[("pcc_50", "mean")]
    """
    by, group, replicate = _as_list(by), _as_list(group), _as_list(replicate)
    if metrics is None:
        excluded = set(by) | set(group) | set(replicate) | _SKIP
        metrics = [c for c in results.select_dtypes("number").columns if c not in excluded]
    metrics = list(metrics)
    means = _replicate_means(results, by, group, replicate, metrics)
    present = [c for c in replicate if c in results.columns]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        grouped = means.groupby(by, observed=True, sort=False)[metrics]
        out = {"mean": grouped.mean(), "sd": grouped.std(ddof=1), "n": grouped.count()}
        if present:
            clean = results[results["section"].astype(str) != "mean"] if "section" in results.columns else results
            seed_sd = clean.groupby(by + group, observed=True, sort=False)[metrics].std(ddof=1)
            out["seed_sd"] = seed_sd.groupby(level=by, observed=True, sort=False).mean()
        else:
            out["seed_sd"] = out["mean"] * np.nan
    table = pd.concat(out, axis=1).swaplevel(0, 1, axis=1)
    order = [(m, s) for m in metrics for s in ("mean", "sd", "seed_sd", "n")]
    return table.reindex(columns=pd.MultiIndex.from_tuples(order, names=["metric", "stat"]))


def compare(
    results: pd.DataFrame,
    *,
    metric: str,
    reference: str,
    by: str = "method",
    group: str | Sequence[str] = "section",
    replicate: str | Sequence[str] | None = "seed",
    alternative: str = "two-sided",
) -> pd.DataFrame:
    """Paired Wilcoxon signed-rank tests of ``reference`` against every other method.

    Replicates are averaged within each group first; pairs are the groups (e.g. sections, or section × gene
    for a per-gene table) where both methods have a finite value. With 5 sections the smallest two-sided
    exact p-value is 0.0625: pair by genes (``group=["section", "gene"]`` on the ``per_gene`` tables) for
    more power, bearing in mind that genes are not independent.

    Parameters
    ----------
    results
        Long table as for :func:`aggregate`.
    metric
        Column to compare, e.g. ``"pcc_50"`` or ``"pearson"``.
    reference
        Method (value of ``by``) tested against the others.
    by
        Column naming the method.
    group
        Column(s) defining the pairs.
    replicate
        Column(s) averaged within a group.
    alternative
        ``"two-sided"``, ``"greater"`` (reference larger) or ``"less"``, see :func:`scipy.stats.wilcoxon`.

    Returns
    -------
    DataFrame indexed by the other methods with ``n_pairs``, ``reference_mean``, ``other_mean``,
    ``mean_difference`` (reference − other), ``statistic`` and ``pvalue`` (1 when all differences are 0,
    NaN with fewer than 2 pairs).

    Raises
    ------
    KeyError
        If ``reference`` is not a value of ``results[by]`` or a column is missing.
    """
    from scipy.stats import wilcoxon

    group = _as_list(group)
    means = _replicate_means(results, [by], group, _as_list(replicate), [metric])
    wide = means.pivot_table(index=group, columns=by, values=metric, observed=True, dropna=False)
    if reference not in wide.columns:
        raise KeyError(
            f"`reference={reference!r}` is not a value of `results[{by!r}]`; choose from {list(wide.columns)}."
        )
    rows = {}
    for other in (c for c in wide.columns if c != reference):
        pair = wide[[reference, other]].dropna()
        diff = (pair[reference] - pair[other]).to_numpy()
        stat, pvalue = np.nan, np.nan
        if len(diff) >= 2 and np.all(diff == 0):
            pvalue = 1.0
        elif len(diff) >= 2:
            res = wilcoxon(pair[reference], pair[other], alternative=alternative)
            stat, pvalue = float(res.statistic), float(res.pvalue)
        rows[other] = {
            "n_pairs": len(diff),
            "reference_mean": float(pair[reference].mean()) if len(diff) else np.nan,
            "other_mean": float(pair[other].mean()) if len(diff) else np.nan,
            "mean_difference": float(diff.mean()) if len(diff) else np.nan,
            "statistic": stat,
            "pvalue": pvalue,
        }
    out = pd.DataFrame.from_dict(rows, orient="index")
    out.index.name = by
    return out
