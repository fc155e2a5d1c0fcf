from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

from .._validators import check_key_free
from ._patches import iter_patches

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from anndata import AnnData

logger = logging.getLogger(__name__)

#: The 8 dihedral views of a patch, in the order of ``obsm[key_added + "_views"]``; view 0 is the identity.
VIEW_NAMES = ("identity", "rot90", "rot180", "rot270", "flip_lr", "flip_ud", "transpose", "anti_transpose")

_RGB, _HED = ("r", "g", "b"), ("h", "e", "d")
#: Grey level (0–1) below which a pixel counts as tissue rather than bare glass.
TISSUE_GREY = 0.8
#: Haematoxylin optical density above which a pixel counts as nuclear (skimage ``rgb2hed`` units).
NUCLEI_H = 0.09

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
)


def handcrafted_features(patches: np.ndarray) -> np.ndarray:
    """Colour, stain and texture statistics of RGB patches.

    For each patch: RGB mean, s.d. and 10/50/90th percentiles (15); haematoxylin–eosin–DAB optical
    densities from :func:`skimage.color.rgb2hed`, mean and s.d. (6) and 90th percentile of H and E (2);
    the tissue fraction (grey < 0.8) and a nuclei proxy (fraction of pixels with H > 0.09) (2); gradient
    magnitude mean and s.d., mean ``|∂x|``, mean ``|∂y|`` and mean ``∂x·∂y`` of the grey image (5);
    GLCM-style contrast (mean squared grey difference) at offsets 1 and 2 px along x and y and at 1 px along
    both diagonals, and homogeneity (mean ``1 / (1 + 8|Δ|)``) at 1 px along x and y (8); top-minus-bottom
    and left-minus-right half means of grey, H and E (6); centre-quarter minus whole-patch mean of grey and H
    (2). 46 features, see :data:`FEATURE_NAMES`.

    Pixel-distribution statistics are invariant to the dihedral views; the directional gradients, contrasts
    and half-differences are not, so each view of a patch gets a distinct vector.

    Parameters
    ----------
    patches
        RGB patches, shape (n, H, W, 3), uint8 (or float in [0, 1]); H, W ≥ 4 px.

    Returns
    -------
    Features, shape (n, 46), float32.
    """
    from skimage.color import rgb2hed

    patches = np.asarray(patches)
    if patches.ndim != 4 or patches.shape[-1] != 3 or min(patches.shape[1:3]) < 4:
        raise ValueError(f"`patches` must have shape (n, H, W, 3) with H, W >= 4, found {patches.shape}.")
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

    centre = (slice(None), slice(h // 4, h - h // 4), slice(w // 4, w - w // 4))
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
            ],
            axis=1,
        ),
    ]
    out = np.concatenate(cols, axis=1).astype(np.float32)
    assert out.shape[1] == len(FEATURE_NAMES)
    return out


def dihedral_view(patches: np.ndarray, view: int) -> np.ndarray:
    """Apply dihedral view ``view`` (index into :data:`VIEW_NAMES`) to patches of shape (n, H, W, C)."""
    if view == 0:
        return patches
    if view in (1, 2, 3):  # counter-clockwise rotations by 90°, 180°, 270°
        return np.rot90(patches, view, axes=(1, 2))
    if view == 4:
        return patches[:, :, ::-1]
    if view == 5:
        return patches[:, ::-1]
    if view == 6:
        return patches.transpose(0, 2, 1, 3)
    if view == 7:  # reflection across the anti-diagonal
        return np.rot90(patches, 2, axes=(1, 2)).transpose(0, 2, 1, 3)
    raise ValueError(f"`view` must be in 0..7, found {view}.")


def _encoder_name(encoder: str | Callable) -> str:
    if isinstance(encoder, str):
        return encoder
    return getattr(encoder, "__name__", type(encoder).__name__)


def _torch_embed(encoder: Callable, patches: np.ndarray) -> np.ndarray:
    import torch

    device = None
    if isinstance(encoder, torch.nn.Module):
        encoder.eval()
        param = next(iter(encoder.parameters()), None)
        device = param.device if param is not None else None
    x = torch.from_numpy(np.ascontiguousarray(patches)).permute(0, 3, 1, 2).float().div_(255.0)
    if device is not None:
        x = x.to(device)
    with torch.no_grad():
        out = encoder(x)
    out = out.detach().float().cpu().numpy() if isinstance(out, torch.Tensor) else np.asarray(out, dtype=np.float32)
    if out.ndim != 2 or out.shape[0] != len(patches):
        raise ValueError(
            f"`encoder` must map a (B, 3, H, W) tensor to (B, D) features; for B={len(patches)} it returned "
            f"shape {out.shape}."
        )
    return out.astype(np.float32, copy=False)


def histology_features(
    adata: AnnData,
    *,
    encoder: str | Callable[[Any], Any] = "handcrafted",
    patch_size_um: float = 112.0,
    microns_per_pixel: float | Mapping[str, float] | None = None,
    views: int = 8,
    library_key: str | None = "section",
    spatial_key: str = "spatial",
    out_size: int | None = None,
    batch_size: int = 256,
    key_added: str = "X_histology",
    overwrite: bool = False,
    copy: bool = False,
    show_progress_bar: bool = True,
) -> AnnData | None:
    """Embed the H&E patch under each spot, in up to 8 dihedral views.

    Patches are cut by :func:`hinge_sc.pp.extract_patches` (side ``max(patch_size_um, spot diameter)`` µm,
    centred on the spot). Each of the ``views`` dihedral transforms of a patch (identity, rotations by 90°,
    180°, 270°, left–right and up–down flips, transpose, anti-transpose) is embedded separately; HINGE
    trains on every view as a sample with the same expression target (:cite:p:`Fang2026`, §2).

    Parameters
    ----------
    adata
        Spots with coordinates in ``obsm[spatial_key]`` and images in ``uns["spatial"]``.
    encoder
        ``"handcrafted"``: 46 offline colour, stain and texture features
        (:func:`~hinge_sc.pp._features.handcrafted_features`). Or a callable / :class:`torch.nn.Module`
        mapping a float tensor (B, 3, H, W) in [0, 1] to (B, D) features; it runs under
        :func:`torch.no_grad` in eval mode, on the device of its parameters.
    patch_size_um
        Side of the patch in µm (default 112 µm).
    microns_per_pixel
        µm per full-resolution pixel, a float or a dict per section. Defaults to
        ``uns["spatial"][section]["scalefactors"]["microns_per_pixel"]``.
    views
        1 (identity only) or 8 (all dihedral views).
    library_key
        Column of ``obs`` naming each spot's section; ``None`` for a single library.
    spatial_key
        Key of ``obsm`` with the spot centres in full-resolution pixels, shape (n_spots, 2).
    out_size
        Side in px of the patches given to the encoder; default 64 for ``"handcrafted"`` and 224 otherwise.
    batch_size
        Patches per encoder call.
    key_added
        Key of the outputs in ``obsm`` and ``uns``.
    overwrite
        Replace existing outputs under ``key_added``.
    copy
        Return a copy with the features instead of writing into ``adata``.
    show_progress_bar
        Show a progress bar over spots.

    Returns
    -------
    ``None``, or the modified copy if ``copy=True``. Writes

    - ``obsm[key_added]``: (n_spots, D) float32, features of the identity view;
    - ``obsm[key_added + "_views"]`` (only if ``views == 8``): (n_spots, 8, D) float32, in the order of
      :data:`VIEW_NAMES`; view 0 equals ``obsm[key_added]``;
    - ``uns[key_added]["params"]``: encoder, patch_size_um, microns_per_pixel, patch_um and patch_px per
      section, out_size, views, view_names (and feature_names for ``"handcrafted"``).

    Raises
    ------
    KeyError
        If an output key exists and ``overwrite`` is false.
    ValueError
        If ``views`` is not 1 or 8, ``encoder`` is unknown, or a section has no image.

    Examples
    --------
    >>> hs.pp.histology_features(adata, encoder="handcrafted", views=8)
    >>> adata.obsm["X_histology_views"].shape
    (367, 8, 46)
    """
    if views not in (1, 8):
        raise ValueError(f"`views` must be 1 (identity only) or 8 (all dihedral views), found {views}.")
    if isinstance(encoder, str):
        if encoder != "handcrafted":
            raise ValueError(
                f"`encoder={encoder!r}` is not known. Use 'handcrafted' or pass a callable / torch module mapping "
                "(B, 3, H, W) float tensors in [0, 1] to (B, D)."
            )
        embed, default_size = handcrafted_features, 64
    elif callable(encoder):
        embed, default_size = (lambda p: _torch_embed(encoder, p)), 224
    else:
        raise TypeError(f"`encoder` must be 'handcrafted' or a callable, found {type(encoder).__name__}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, found {batch_size}.")
    views_key = f"{key_added}_views"
    check_key_free(adata.obsm, key_added, where="adata.obsm", overwrite=overwrite)
    if views > 1:
        check_key_free(adata.obsm, views_key, where="adata.obsm", overwrite=overwrite)
    check_key_free(adata.uns, key_added, where="adata.uns", overwrite=overwrite)
    out_size = default_size if out_size is None else out_size
    adata = adata.copy() if copy else adata

    feats: np.ndarray | None = None
    params: dict[str, Any] = {"microns_per_pixel": {}, "patch_um": {}, "patch_px": {}}
    pbar = tqdm(total=adata.n_obs, desc="histology features", unit="spot", disable=not show_progress_bar)
    for geom, patches in iter_patches(
        adata,
        patch_size_um=patch_size_um,
        microns_per_pixel=microns_per_pixel,
        library_key=library_key,
        spatial_key=spatial_key,
        out_size=out_size,
        show_progress_bar=False,
    ):
        for name, value in (("microns_per_pixel", geom.microns_per_pixel), ("patch_um", geom.side_um),
                            ("patch_px", geom.side_px)):  # fmt: skip
            params[name][geom.section] = value
        for start in range(0, len(patches), batch_size):
            batch = patches[start : start + batch_size]
            out = np.stack([embed(dihedral_view(batch, v)) for v in range(views)], axis=1)
            if feats is None:
                feats = np.empty((adata.n_obs, views, out.shape[-1]), dtype=np.float32)
            feats[geom.obs_idx[start : start + batch_size]] = out
            pbar.update(len(batch))
    pbar.close()
    assert feats is not None
    if not np.isfinite(feats).all():
        n_bad = int((~np.isfinite(feats)).reshape(adata.n_obs, -1).any(1).sum())
        raise ValueError(f"`encoder` returned NaN or infinite features for {n_bad} spots.")

    adata.obsm[key_added] = np.ascontiguousarray(feats[:, 0])
    logger.info("Wrote `adata.obsm[%r]`: %d spots × %d features.", key_added, *feats[:, 0].shape)
    if views > 1:
        adata.obsm[views_key] = feats
        logger.info("Wrote `adata.obsm[%r]`: %d spots × %d views × %d features.", views_key, *feats.shape)
    elif views_key in adata.obsm and overwrite:  # stale views of an earlier run would not match
        del adata.obsm[views_key]
        logger.info("Removed the stale `adata.obsm[%r]`.", views_key)
    adata.uns[key_added] = {
        "params": {
            "encoder": _encoder_name(encoder),
            "patch_size_um": float(patch_size_um),
            "out_size": int(out_size),
            "views": int(views),
            "view_names": list(VIEW_NAMES[:views]),
            "library_key": library_key,
            "spatial_key": spatial_key,
            **params,
            **({"feature_names": list(FEATURE_NAMES)} if isinstance(encoder, str) else {}),
        }
    }
    logger.info("Wrote `adata.uns[%r]`.", key_added)
    return adata if copy else None
