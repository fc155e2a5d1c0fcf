"""The offline "handcrafted" patch encoder: colour, stain deconvolution, nuclei and multi-scale texture statistics."""

from __future__ import annotations

import numpy as np

_RGB, _HED = ("r", "g", "b"), ("h", "e", "d")
#: Grey level (0–1) below which a pixel counts as tissue rather than bare glass.
TISSUE_GREY = 0.8
#: Haematoxylin optical density above which a pixel counts as nuclear (skimage ``rgb2hed`` units).
NUCLEI_H = 0.09
#: Smallest nucleus kept by the segmentation, as a fraction of the patch area (≈ 2 px at 64 px).
NUCLEUS_MIN_AREA = 5e-4
#: Grey levels and pixel distances of the co-occurrence (GLCM) texture features.
GLCM_LEVELS, GLCM_DISTANCES, GLCM_PROPS = 16, (1, 2, 4), ("contrast", "homogeneity", "energy", "correlation")

FEATURE_NAMES: tuple[str, ...] = (
    *(f"rgb_mean_{c}" for c in _RGB),
    *(f"rgb_std_{c}" for c in _RGB),
    *(f"rgb_p{q}_{c}" for q in (10, 50, 90) for c in _RGB),
    *(f"hed_mean_{c}" for c in _HED),
    *(f"hed_std_{c}" for c in _HED),
    "hed_p90_h",
    "hed_p90_e",
    "tissue_fraction",
    "nuclei_fraction",
    "grad_mean",
    "grad_std",
    "grad_abs_x",
    "grad_abs_y",
    "grad_xy",
    "contrast_x1",
    "contrast_y1",
    "contrast_x2",
    "contrast_y2",
    "contrast_diag",
    "contrast_antidiag",
    "homogeneity_x1",
    "homogeneity_y1",
    "grey_top_minus_bottom",
    "grey_left_minus_right",
    "h_top_minus_bottom",
    "h_left_minus_right",
    "e_top_minus_bottom",
    "e_left_minus_right",
    "grey_centre_minus_all",
    "h_centre_minus_all",
    # stain deconvolution, beyond means and spreads
    "hed_p10_h",
    "hed_p50_h",
    "hed_p50_e",
    "h_fraction",
    "h_e_correlation",
    # nuclei from a haematoxylin segmentation
    "nuclei_count",
    "nuclei_mean_area",
    "nuclei_area_cv",
    # texture at several scales
    "grad_mean_half",
    "grad_mean_quarter",
    *(f"glcm_{p}_d{d}_{a}" for d in GLCM_DISTANCES for a in ("x", "y") for p in GLCM_PROPS),
)


def _nuclei(h: np.ndarray) -> np.ndarray:
    """Count, mean area and area coefficient of variation of haematoxylin blobs, per patch; (n, 3)."""
    from scipy import ndimage

    n, hh, ww = h.shape
    min_area = max(1, round(NUCLEUS_MIN_AREA * hh * ww))
    out = np.zeros((n, 3), dtype=np.float32)
    for i in range(n):
        labels, k = ndimage.label(h[i] > NUCLEI_H)
        if not k:
            continue
        areas = np.bincount(labels.ravel())[1:]
        areas = areas[areas >= min_area]
        if len(areas):
            out[i] = (len(areas), areas.mean() / (hh * ww), areas.std() / areas.mean())
    return out


def _glcm(grey: np.ndarray) -> np.ndarray:
    """GLCM contrast, homogeneity, energy, correlation at distances 1, 2, 4 px along x and y; (n, 24)."""
    from skimage.feature import graycomatrix, graycoprops

    q = np.clip((grey * GLCM_LEVELS).astype(np.uint8), 0, GLCM_LEVELS - 1)
    out = np.empty((len(q), len(GLCM_DISTANCES) * 2 * len(GLCM_PROPS)), dtype=np.float32)
    for i, img in enumerate(q):
        m = graycomatrix(img, GLCM_DISTANCES, (0.0, np.pi / 2), levels=GLCM_LEVELS, symmetric=True, normed=True)
        # props: (distances, angles) each; order distance → axis → property
        props = np.stack([graycoprops(m, p) for p in GLCM_PROPS], axis=-1)
        out[i] = np.nan_to_num(props, nan=1.0).ravel()  # correlation of a flat patch is undefined: call it 1
    return out


def _pool(img: np.ndarray, k: int) -> np.ndarray:
    n, h, w = img.shape
    h2, w2 = h // k * k, w // k * k
    return img[:, :h2, :w2].reshape(n, h2 // k, k, w2 // k, k).mean((2, 4))


def handcrafted_features(patches: np.ndarray) -> np.ndarray:
    """Colour, stain, nuclei and texture statistics of RGB patches (the offline default encoder).

    For each patch (see :data:`FEATURE_NAMES`, 80 features):

    - colour: RGB mean, s.d. and 10/50/90th percentiles (15);
    - stain deconvolution (:func:`skimage.color.rgb2hed`, haematoxylin–eosin–DAB optical densities): mean and s.d.
      of H, E, D (6); 10/50/90th percentiles of H, 50/90th of E (5); H / (H + E) and the pixelwise H–E
      correlation (2);
    - tissue fraction (grey < 0.8) and the fraction of nuclear pixels (H > 0.09) (2); nuclei from a haematoxylin
      segmentation (connected components of H > 0.09): count per patch, mean area (fraction of the patch) and
      area coefficient of variation (3);
    - gradients of the grey image: magnitude mean and s.d., mean ``|∂x|``, ``|∂y|``, ``∂x·∂y`` (5), and the mean
      magnitude at 1/2 and 1/4 resolution (2);
    - texture: mean squared grey difference at offsets 1 and 2 px along x and y and 1 px along both diagonals,
      homogeneity at 1 px along x and y (8); grey-level co-occurrence (:func:`skimage.feature.graycomatrix`,
      16 levels) contrast, homogeneity, energy and correlation at 1, 2 and 4 px along x and y (24);
    - layout: top-minus-bottom and left-minus-right half means of grey, H and E (6); centre-quarter minus
      whole-patch mean of grey and H (2).

    Pixel-distribution statistics are invariant to the dihedral views; the directional gradients, contrasts,
    co-occurrences and half-differences are not, so each view of a patch gets a distinct vector.

    Parameters
    ----------
    patches
        RGB patches, shape (n, H, W, 3), uint8 (or float in [0, 1]); H, W ≥ 8 px.

    Returns
    -------
    Features, shape (n, 80), float32.
    """
    from skimage.color import rgb2hed

    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[-1] != 3 or min(patches.shape[1:3]) < 8:
        raise ValueError(f"`patches` must have shape (n, H, W, 3) with H, W >= 8, found {patches.shape}.")
    rgb = patches.astype(np.float32) / 255.0 if patches.dtype == np.uint8 else patches.astype(np.float32)
    n, h, w, _ = rgb.shape
    flat = rgb.reshape(n, -1, 3)
    hed = rgb2hed(rgb).astype(np.float32)
    hflat = hed.reshape(n, -1, 3)
    grey = rgb.mean(-1)
    gy, gx = np.gradient(grey, axis=(1, 2))
    mag = np.hypot(gx, gy)

    def half_diffs(m: np.ndarray) -> list[np.ndarray]:
        return [m[:, : h // 2].mean((1, 2)) - m[:, h - h // 2 :].mean((1, 2)),
                m[:, :, : w // 2].mean((1, 2)) - m[:, :, w - w // 2 :].mean((1, 2))]  # fmt: skip

    def contrast(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return ((a - b) ** 2).mean((1, 2))

    def homogeneity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (1.0 / (1.0 + 8.0 * np.abs(a - b))).mean((1, 2))

    def grad_mean(img: np.ndarray) -> np.ndarray:
        ay, ax = np.gradient(img, axis=(1, 2))
        return np.hypot(ax, ay).mean((1, 2))

    centre = (slice(None), slice(h // 4, h - h // 4), slice(w // 4, w - w // 4))
    hpos, epos = np.clip(hflat[..., 0], 0, None), np.clip(hflat[..., 1], 0, None)
    hc, ec = hflat[..., 0] - hflat[..., 0].mean(1, keepdims=True), hflat[..., 1] - hflat[..., 1].mean(1, keepdims=True)
    denom = np.sqrt((hc**2).sum(1) * (ec**2).sum(1))
    he_corr = np.divide((hc * ec).sum(1), denom, out=np.zeros(n, np.float32), where=denom > 0)
    cols = [
        flat.mean(1),
        flat.std(1),
        *np.percentile(flat, (10, 50, 90), axis=1),
        hflat.mean(1),
        hflat.std(1),
        np.percentile(hflat[..., :2], 90, axis=1),
        (grey < TISSUE_GREY).mean((1, 2))[:, None],
        (hed[..., 0] > NUCLEI_H).mean((1, 2))[:, None],
        np.stack(
            [
                mag.mean((1, 2)),
                mag.std((1, 2)),
                np.abs(gx).mean((1, 2)),
                np.abs(gy).mean((1, 2)),
                (gx * gy).mean((1, 2)),
                contrast(grey[:, :, 1:], grey[:, :, :-1]),
                contrast(grey[:, 1:], grey[:, :-1]),
                contrast(grey[:, :, 2:], grey[:, :, :-2]),
                contrast(grey[:, 2:], grey[:, :-2]),
                contrast(grey[:, 1:, 1:], grey[:, :-1, :-1]),
                contrast(grey[:, 1:, :-1], grey[:, :-1, 1:]),
                homogeneity(grey[:, :, 1:], grey[:, :, :-1]),
                homogeneity(grey[:, 1:], grey[:, :-1]),
                *half_diffs(grey),
                *half_diffs(hed[..., 0]),
                *half_diffs(hed[..., 1]),
                grey[centre].mean((1, 2)) - grey.mean((1, 2)),
                hed[..., 0][centre].mean((1, 2)) - hed[..., 0].mean((1, 2)),
                *np.percentile(hflat[..., 0], (10, 50), axis=1),
                np.percentile(hflat[..., 1], 50, axis=1),
                hpos.mean(1) / np.maximum(hpos.mean(1) + epos.mean(1), 1e-6),
                he_corr,
            ],
            axis=1,
        ),
        _nuclei(hed[..., 0]),
        np.stack([grad_mean(_pool(grey, 2)), grad_mean(_pool(grey, 4))], axis=1),
        _glcm(grey),
    ]
    out = np.concatenate(cols, axis=1).astype(np.float32)
    assert out.shape[1] == len(FEATURE_NAMES)
    return out
