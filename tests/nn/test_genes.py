"""Gene-symbol matching: exact, case, renamed symbols, HGNC tables (issue 4)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

import hinge_sc as hs
from hinge_sc.nn import GENE_ALIASES, read_hgnc_aliases

DATA_DIR = Path(os.environ.get("HINGE_SC_DATA_DIR") or Path(__file__).resolve().parents[2].parent / "shared" / "data")


@pytest.fixture
def backbone():
    return hs.Backbone.random(["CD3E", "SEPTIN7", "MARCH1", "PCLAF", "Actb"], d_model=8, n_layers=2, n_heads=2)


@pytest.mark.parametrize(
    ("gene", "token_id", "symbol", "match"),
    [
        ("CD3E", 1, "CD3E", "exact"),
        ("cd3e", 1, "CD3E", "case"),
        ("ACTB", 5, "Actb", "case"),
        ("SEPT7", 2, "SEPTIN7", "alias"),  # old symbol in the data, new one in the vocabulary
        ("MARCHF1", 3, "MARCH1", "alias"),  # new symbol in the data, old one in the vocabulary
        ("kiaa0101", 4, "PCLAF", "alias"),
        ("NOPE", 0, "", "none"),
    ],
)
def test_match_genes_report(backbone, gene, token_id, symbol, match):
    ids, report = backbone.match_genes([gene])
    assert ids.tolist() == [token_id]
    assert report.iloc[0].to_dict() == {"gene": gene, "token_id": token_id, "symbol": symbol, "match": match}


def test_match_genes_report_columns(backbone):
    ids, report = backbone.match_genes(["CD3E", "NOPE", "SEPT7"])
    assert list(report.columns) == ["gene", "token_id", "symbol", "match"]
    assert list(report["match"].cat.categories) == ["exact", "case", "alias", "none"]
    assert report["token_id"].tolist() == ids.tolist() == [1, 0, 2]


@pytest.mark.parametrize(("aliases", "expected"), [(False, [0, 0]), ({"OLD7": "SEPTIN7"}, [2, 0])])
def test_match_genes_alias_table_choice(backbone, aliases, expected):
    ids, _ = backbone.match_genes(["OLD7", "SEPT7"], aliases=aliases)
    assert ids.tolist() == expected


def test_token_ids_still_returns_ids_and_missing(backbone):
    ids, missing = backbone.token_ids(["SEPT7", "NOPE", "cd3e"])
    assert ids.tolist() == [2, 0, 1] and missing == ["NOPE"]


def test_genes_sharing_a_token_warn(backbone):
    with pytest.warns(UserWarning, match="SEPT7/SEPTIN7"):
        backbone.match_genes(["SEPT7", "SEPTIN7"])


@pytest.mark.parametrize("kind", ["complete", "custom"])
def test_read_hgnc_aliases(tmp_path, kind):
    rows = [  # approved, previous, aliases, status
        ("SEPTIN7", ["SEPT7"], ["CDC10"], "Approved"),
        ("PCLAF", ["KIAA0101"], ["p15PAF", "SHARED"], "Approved"),
        ("CD3E", [], ["SHARED", "T3E", "PCLAF"], "Approved"),  # SHARED: ambiguous; PCLAF: itself approved
        ("GONE1", ["OLDGONE"], [], "Entry Withdrawn"),
    ]
    if kind == "complete":
        table = pd.DataFrame(
            {"symbol": r[0], "prev_symbol": "|".join(r[1]), "alias_symbol": "|".join(r[2]), "status": r[3]}
            for r in rows
        )
        path = tmp_path / "hgnc_complete_set.txt"
        table.to_csv(path, sep="\t", index=False)
    else:
        table = pd.DataFrame(
            {"Approved symbol": r[0], "Previous symbols": ", ".join(r[1]), "Alias symbols": ", ".join(r[2])}
            for r in rows[:3]
        )
        path = tmp_path / "hgnc.csv"
        table.to_csv(path, index=False)
    mapping = read_hgnc_aliases(path)
    assert mapping == {"SEPT7": "SEPTIN7", "CDC10": "SEPTIN7", "KIAA0101": "PCLAF", "p15PAF": "PCLAF", "T3E": "CD3E"}


def test_read_hgnc_aliases_rejects_other_tables(tmp_path):
    (tmp_path / "x.tsv").write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="has no HGNC columns"):
        read_hgnc_aliases(tmp_path / "x.tsv")


def test_curated_aliases_point_into_cellfm_vocabularies():
    """Every current symbol of the table is in CellFM's vocabulary, and no old symbol is."""
    path = DATA_DIR / "vocab" / "cellfm" / "expand_gene_info.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    vocab = set(pd.read_csv(path, usecols=[0], dtype=str, na_filter=False).iloc[:, 0])
    assert not set(GENE_ALIASES) & vocab
    assert set(GENE_ALIASES.values()) <= vocab


def test_matching_by_case_only_warns():
    """Lower-case symbols matched to an upper-case vocabulary are reported (issue 24), not matched silently."""
    import pytest

    import hinge_sc as hs

    backbone = hs.Backbone.random(["ERBB2", "KRT19", "GNAS"], d_model=16, n_layers=1, n_heads=2, seed=0)
    with pytest.warns(UserWarning, match=r"2 of 3 genes matched the vocabulary only by letter case.*Erbb2→ERBB2"):
        backbone.token_ids(["Erbb2", "krt19", "GNAS"])
