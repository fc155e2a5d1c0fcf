from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from matplotlib.axes import Axes

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
    axes = hs.pl.spatial_genes(generated, ["GNAS", "ERBB2"], section="C3", save=tmp_path / "genes.png")
    assert len(axes) == 6 and all(isinstance(a, Axes) for a in axes)
    fig = axes.figure
    assert (tmp_path / "genes.png").stat().st_size > 0
    panels = [a for a in fig.axes if a.get_title()]
    assert [a.get_title() for a in panels] == [f"{g} {k}" for g in ("GNAS", "ERBB2") for k in
                                               ("measured", "generated", "uncertainty")]  # fmt: skip
    assert len(panels[0].images) == 1  # H&E underneath
    # measured and generated share the colour scale of the gene
    assert panels[0].collections[0].norm.vmax == panels[1].collections[0].norm.vmax
    plt.close(fig)


def test_default_library_is_first_section(generated):
    fig = hs.pl.spatial_genes(generated, "GNAS", show_std=False, img=False, ncols=2).figure
    assert fig._suptitle.get_text() == "C2"
    n_c2 = int((generated.obs["section"] == "C2").sum())
    assert len(fig.axes[0].collections[0].get_offsets()) == n_c2
    plt.close(fig)


def test_single_panel_into_given_axes(generated):
    fig, ax = plt.subplots()
    out = hs.pl.spatial_genes(generated, "NOT_MEASURED", show_std=False, ax=ax, title="x")
    assert list(out) == [ax] and out.figure is fig and ax.get_title() == "NOT_MEASURED generated"
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
        fig = hs.pl.spatial_genes(generated, "GNAS", library_id="C3", show_std=False, img=False).figure
    assert fig._suptitle.get_text() == "C3"
    assert len(fig.axes[0].collections[0].get_offsets()) == int((generated.obs["section"] == "C3").sum())
    plt.close(fig)


def test_library_id_and_section_disagreeing_raises(generated):
    with pytest.raises(TypeError, match="Pass `section` only"):
        hs.pl.spatial_genes(generated, "GNAS", section="C2", library_id="C3")


def test_units_scale_bar_outline_and_image_alpha(generated, tmp_path):
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    axes = hs.pl.spatial_genes(
        generated, "GNAS", section="C3", img_alpha=0.4, outline="white", scalebar=500, save=tmp_path / "g.png",
        show=False,
    )  # fmt: skip
    fig = axes.figure
    labels = [a.get_ylabel() for a in fig.axes if a not in axes]  # the colour bars
    assert labels == ["log2(count+1)", "s.d. of log2(count+1)"]
    bars = [a for a in axes[0].artists if isinstance(a, AnchoredSizeBar)]
    assert len(bars) == 1 and bars[0].scalebar_length_um == 500
    assert bars[0].txt_label.get_text() == "500 µm"
    # 500 µm drawn in hires px: 500 / (µm per full-res px) × tissue_hires_scalef
    lib = generated.uns["spatial"]["C3"]["scalefactors"]
    expected = 500 / lib["microns_per_pixel"] * lib["tissue_hires_scalef"]
    assert bars[0].size_bar.get_children()[0].get_width() == pytest.approx(expected)
    assert axes[0].images[0].get_alpha() == 0.4
    assert tuple(axes[0].collections[0].get_edgecolor()[0]) == (1.0, 1.0, 1.0, 1.0)
    assert (tmp_path / "g.png").is_file()
    plt.close(fig)
    # no µm/px known: no scale bar, and no error
    plain = generated.copy()
    del plain.uns["spatial"]["C3"]["scalefactors"]["microns_per_pixel"]
    axes = hs.pl.spatial_genes(plain, "GNAS", section="C3", show_std=False)
    assert not [a for a in axes[0].artists if isinstance(a, AnchoredSizeBar)]
    plt.close(axes.figure)
