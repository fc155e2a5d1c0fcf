"""Matching gene symbols to a backbone vocabulary: exactly, ignoring case, or through a renamed symbol."""

from __future__ import annotations

import logging
import warnings
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from ._gene_aliases import GENE_ALIASES

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

logger = logging.getLogger(__name__)

#: Categories of the ``match`` column of :func:`match_genes`' report.
MATCH_KINDS = ("exact", "case", "alias", "none")

# HGNC tables: "complete set" (hgnc_complete_set.txt) and custom downloads use different column names.
_HGNC_COLUMNS = {
    "symbol": ("symbol", "Approved symbol"),
    "prev": ("prev_symbol", "Previous symbols"),
    "alias": ("alias_symbol", "Alias symbols"),
    "status": ("status", "Status"),
}


def match_genes(
    genes: Sequence[str],
    index: Mapping[str, int],
    *,
    aliases: bool | Mapping[str, str] = True,
    index_upper: Mapping[str, int] | None = None,
) -> tuple[list[int], pd.DataFrame]:
    """Token ids of ``genes`` in a vocabulary, with a report of how each gene was matched.

    A gene matches, in this order: exactly; ignoring case; through a renamed symbol, in either direction
    (an old symbol in the data and the new one in the vocabulary, or the reverse).

    Parameters
    ----------
    genes
        Gene symbols to look up.
    index
        Vocabulary symbol → token id (ids start at 1; 0 means "not found").
    aliases
        ``True`` uses the curated table :data:`hinge_sc.nn.GENE_ALIASES`; ``False`` matches symbols only;
        a mapping (previous or alias symbol → approved symbol, e.g. from :func:`read_hgnc_aliases`) is used
        instead of the curated table.
    index_upper
        Upper-cased symbol → token id (computed from ``index`` when ``None``).

    Returns
    -------
    ids
        Token id of each gene, 0 when it did not match.
    report
        One row per gene: ``gene``, ``token_id``, ``symbol`` (the vocabulary symbol it matched, ``""`` if
        none) and ``match`` (``"exact"``, ``"case"``, ``"alias"`` or ``"none"``).
    """
    if index_upper is None:
        index_upper = {}
        for symbol, i in index.items():
            index_upper.setdefault(symbol.upper(), i)
    symbol_of = {i: s for s, i in index.items()}
    table = GENE_ALIASES if aliases is True else (aliases or {})
    forward = {old.upper(): new for old, new in table.items()}
    reverse: dict[str, list[str]] = defaultdict(list)
    for old, new in table.items():
        reverse[new.upper()].append(old)

    ids, kinds = [], []
    for gene in genes:
        name = str(gene)
        i, kind = index.get(name, 0), "exact"
        if not i:
            i, kind = index_upper.get(name.upper(), 0), "case"
        if not i:
            kind = "none"
            for candidate in (forward.get(name.upper()), *reverse.get(name.upper(), ())):
                i = candidate and (index.get(candidate) or index_upper.get(candidate.upper(), 0))
                if i:
                    kind = "alias"
                    break
            i = i or 0
        ids.append(i)
        kinds.append(kind)
    report = pd.DataFrame(
        {
            "gene": list(genes),
            "token_id": ids,
            "symbol": [symbol_of.get(i, "") for i in ids],
            "match": pd.Categorical(kinds, categories=MATCH_KINDS),
        }
    )
    _warn_shared_tokens(report)
    _warn_case_matches(report)
    counts = report["match"].value_counts()
    logger.info(
        "Matched %d/%d genes to the vocabulary (%d exact, %d by case, %d by alias)",
        len(report) - counts["none"],
        len(report),
        counts["exact"],
        counts["case"],
        counts["alias"],
    )
    return ids, report


class GeneVocabulary:
    """The genes of a backbone: symbol ↔ token id (gene ``i`` has id ``i + 1``; id 0 is padding), and matching.

    Parameters
    ----------
    genes
        Gene symbols, unique.

    Examples
    --------
    >>> vocab = GeneVocabulary(["CD3E", "MS4A1", "EPCAM"])
    >>> ids, report = vocab.match(["cd3e", "EPCAM", "XYZ"])
    """

    def __init__(self, genes: Sequence[str]):
        genes = [str(g) for g in genes]
        if not genes:
            raise ValueError("`genes` (the backbone vocabulary) is empty.")
        if len(set(genes)) != len(genes):
            raise ValueError("`genes` (the backbone vocabulary) has duplicate symbols.")
        self.genes = genes
        self.index = {g: i + 1 for i, g in enumerate(genes)}
        self.index_upper = {g.upper(): i for g, i in reversed(list(self.index.items()))}

    def __len__(self) -> int:
        return len(self.genes)

    def match(
        self, genes: Sequence[str], *, aliases: bool | Mapping[str, str] = True
    ) -> tuple[list[int], pd.DataFrame]:
        """Token ids of ``genes`` and the report of :func:`match_genes` (exact, case, renamed symbol, none)."""
        return match_genes(genes, self.index, aliases=aliases, index_upper=self.index_upper)


def _warn_case_matches(report: pd.DataFrame) -> None:
    """Warn when genes matched the vocabulary only by letter case (e.g. mouse-style or lower-case symbols)."""
    by_case = report[report["match"] == "case"]
    if len(by_case):
        pairs = [f"{g}→{s}" for g, s in zip(by_case["gene"].iloc[:5], by_case["symbol"].iloc[:5], strict=True)]
        warnings.warn(
            f"{len(by_case)} of {len(report)} genes matched the vocabulary only by letter case, e.g. {pairs}. Check "
            "that the symbols are human HGNC symbols (mouse symbols such as 'Erbb2' are another species' genes).",
            UserWarning,
            stacklevel=3,
        )


def _warn_shared_tokens(report: pd.DataFrame) -> None:
    found = report[report["token_id"] > 0]
    shared = found[found["token_id"].duplicated(keep=False)]
    if len(shared):
        groups = shared.groupby("token_id", sort=False)["gene"].agg(lambda g: "/".join(map(str, g)))
        warnings.warn(
            f"Several genes map to the same vocabulary token: {', '.join(groups.iloc[:5])}"
            f"{' …' if len(groups) > 5 else ''}. They will share one embedding; drop or merge the duplicates.",
            UserWarning,
            stacklevel=3,
        )


def read_hgnc_aliases(path: str | Path) -> dict[str, str]:
    """Previous and alias symbols → approved symbol, from an HGNC table.

    Accepts HGNC's complete set (``hgnc_complete_set.txt``: columns ``symbol``, ``prev_symbol``,
    ``alias_symbol``, ``|``-separated) or a custom download from genenames.org (``Approved symbol``,
    ``Previous symbols``, ``Alias symbols``, comma-separated). Only approved entries are used; a symbol
    that is itself approved, or that several approved genes claim, is left out; previous symbols win over
    alias symbols.

    Parameters
    ----------
    path
        Tab-separated table (comma-separated if the name ends with ``.csv``).

    Returns
    -------
    A mapping to pass as ``aliases`` to :meth:`hinge_sc.nn.Backbone.match_genes`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"No HGNC table at `path` {path}; download one from https://www.genenames.org.")
    table = pd.read_csv(path, sep="," if path.suffix == ".csv" else "\t", dtype=str, na_filter=False)
    columns = {}
    for key, options in _HGNC_COLUMNS.items():
        columns[key] = next((c for c in options if c in table.columns), None)
    if columns["symbol"] is None or (columns["prev"] is None and columns["alias"] is None):
        raise ValueError(
            f"`path` {path} has no HGNC columns: expected one of {_HGNC_COLUMNS['symbol']} and previous/alias "
            f"symbol columns, found {list(table.columns)[:8]}."
        )
    if columns["status"] is not None:
        table = table[table[columns["status"]].str.lower() == "approved"]
    approved = set(table[columns["symbol"]])
    result: dict[str, str] = {}
    for key in ("alias", "prev"):  # previous symbols last, so that they win
        if columns[key] is None:
            continue
        claims: dict[str, set[str]] = defaultdict(set)
        for symbol, field in zip(table[columns["symbol"]], table[columns[key]], strict=True):
            for old in field.replace("|", ",").split(","):
                old = old.strip().strip('"')
                if old and old not in approved:
                    claims[old].add(symbol)
        result.update({old: next(iter(new)) for old, new in claims.items() if len(new) == 1})
    return result
