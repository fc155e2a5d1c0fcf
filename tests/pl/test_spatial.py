from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

import hinge_sc as hs

GENES = ["GNAS", "ERBB2", "KRT19"]


@pytest.fixture(scope="module")
def generated(her2st_c):
    adata = her2st_c.copy()
    rng = np.random.default_rng(0)
    measured = np.log2(adata[:, GENES].X.toarray() + 1)
    adata.obsm["hinge"] = pd.DataFrame(
        measured + rng.normal(scale=0.3, size=measured.shape), index=adata.obs_names, columns=GENES
    )
    adata.obsm["hinge"]["NOT_MEASURED"] = rng.normal(size=adata.n_obs)
    adata.obsm["hinge_std"] = pd.DataFrame(
        rng.uniform(0.1, 0.5, size=(adata.n_obs, 3)), index=adata.obs_names, columns=GENES
    )
    return adata


def test_plot_writes_png(generated, tmp_path):
    fig = hs.pl.spatial_genes(generated, ["GNAS", "ERBB2"], section="C3", save=tmp_path / "genes.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / "genes.png").stat().st_size > 0
    panels = [a for a in fig.axes if a.get_title()]
    assert [a.get_title() for a in panels] == [f"{g} {k}" for g in ("GNAS", "ERBB2") for k in
                                               ("measured", "generated", "uncertainty")]  # fmt: skip
    assert len(panels[0].images) == 1  # H&E underneath
    # measured and generated share the colour scale of the gene
    assert panels[0].collections[0].norm.vmax == panels[1].collections[0].norm.vmax
    plt.close(fig)


def test_default_library_is_first_section(generated):
    fig = hs.pl.spatial_genes(generated, "GNAS", show_std=False, img=False, ncols=2)
    assert fig._suptitle.get_text() == "C2"
    n_c2 = int((generated.obs["section"] == "C2").sum())
    assert len(fig.axes[0].collections[0].get_offsets()) == n_c2
    plt.close(fig)


def test_single_panel_into_given_axes(generated):
    fig, ax = plt.subplots()
    out = hs.pl.spatial_genes(generated, "NOT_MEASURED", show_std=False, ax=ax, title="x")
    assert out is fig and ax.get_title() == "NOT_MEASURED generated"
    with pytest.raises(ValueError, match="`ax` has 1 Axes but 1 genes × 2 panels"):
        hs.pl.spatial_genes(generated, "GNAS", show_std=False, ax=ax)
    plt.close(fig)


def test_errors(generated):
    with pytest.raises(KeyError, match="hs.tl.generate"):
        hs.pl.spatial_genes(generated, "GNAS", key="nope")
    with pytest.raises(KeyError, match="'FOO'"):
        hs.pl.spatial_genes(generated, ["GNAS", "FOO"])
    with pytest.raises(ValueError, match="`section='Z1'`"):
        hs.pl.spatial_genes(generated, "GNAS", section="Z1")


def test_library_id_is_a_deprecated_alias_of_section(generated):
    # issue 10: one name per concept; `library_id` still works for one release
    with pytest.warns(FutureWarning, match="library_id"):
        fig = hs.pl.spatial_genes(generated, "GNAS", library_id="C3", show_std=False, img=False)
    assert fig._suptitle.get_text() == "C3"
    assert len(fig.axes[0].collections[0].get_offsets()) == int((generated.obs["section"] == "C3").sum())
    plt.close(fig)


def test_library_id_and_section_disagreeing_raises(generated):
    with pytest.raises(TypeError, match="Pass `section` only"):
        hs.pl.spatial_genes(generated, "GNAS", section="C2", library_id="C3")
