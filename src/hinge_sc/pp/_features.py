"""Histology features (``hs.pp.histology_features``): patches → encoder → views/context → cache → write.

:func:`histology_features` is a short dispatcher: it resolves the data once (an AnnData, or the table of a
SpatialData object), then each step below is one small function, in the order it runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .._constants import DEFAULT_CONTEXT, DEFAULT_STANDARDIZE
from .._deprecation import renamed_argument
from .._validators import check_key_added, check_key_free, check_positive_finite
from ._cache import cached_features
from ._encoder_hub import as_encoder
from ._encoders import HandcraftedEncoder
from ._extract import patch_groups
from ._handcrafted import FEATURE_NAMES, handcrafted_features
from ._patches import DEFAULT_SECTION_KEY, iter_patches
from ._spatialdata import get_table, is_spatialdata
from ._section_stats import within_sections

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData

    from ._encoders import Encoder
    from ._patches import PatchGroup

logger = logging.getLogger(__name__)

__all__ = ["FEATURE_NAMES", "VIEW_NAMES", "dihedral_view", "handcrafted_features", "histology_features"]

#: The 8 dihedral views of a patch, in the order of ``obsm[key_added + "_views"]``; view 0 is the identity.
VIEW_NAMES = ("identity", "rot90", "rot180", "rot270", "flip_lr", "flip_ud", "transpose", "anti_transpose")


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


def histology_features(
    data: AnnData | Any,
    *,
    section_key: str | None = DEFAULT_SECTION_KEY,
    spatial_key: str = "spatial",
    table_key: str | None = None,
    image_key: str | Mapping[str, str] | None = None,
    shapes_key: str | Sequence[str] | None = None,
    encoder: str | Encoder | Any | Sequence[Any] = "handcrafted",
    patch_size_um: float = 112.0,
    microns_per_pixel: float | Mapping[str, float] | None = None,
    views: int = 8,
    context: Literal["knn", "field"] | None = DEFAULT_CONTEXT,
    context_k: int = 6,
    context_scale: float = 3.0,
    standardize: Literal["section"] | None = DEFAULT_STANDARDIZE,
    out_size: int | None = None,
    key_added: str = "X_histology",
    cache_dir: str | Path | None = None,
    overwrite: bool = False,
    copy: bool = False,
    batch_size: int = 64,
    device: str | Any | None = None,
    show_progress_bar: bool = True,
    library_key: str | None = None,
) -> AnnData | None:
    """Embed the H&E patch under each spot, in up to 8 dihedral views, for AnnData and SpatialData alike.

    Patches are cut by :func:`hinge_sc.pp.extract_patches` (side ``max(patch_size_um, spot diameter)`` µm, centred
    on the spot, white-padded at the image border). Each of the ``views`` dihedral transforms of a patch (identity,
    rotations by 90°, 180°, 270°, left–right and up–down flips, transpose, anti-transpose) is embedded separately;
    HINGE trains on every view as a sample with the same expression target (:cite:p:`Fang2026`, §2). Encoders run
    batch by batch under :func:`torch.no_grad`. Features computed before with the same settings, spots and images
    are reused: the call is skipped (and with ``cache_dir``, read from disk).

    Parameters
    ----------
    data
        AnnData with spot centres in ``obsm[spatial_key]`` (full-resolution px) and images in ``uns["spatial"]``
        (scanpy/squidpy Visium convention), or a SpatialData object (image element, shapes, a table annotating
        the shapes); the features are written into that table.
    section_key
        AnnData: column of ``obs`` naming each spot's section (a key of ``uns["spatial"]``). The default column
        ``"section"`` is used when present; when it is absent and ``uns["spatial"]`` has exactly one library, all
        spots are that one section. ``None``: a single library (``uns["spatial"]`` must have exactly one).
    spatial_key
        AnnData: key of ``obsm`` with the spot centres in full-resolution px, shape (n_spots, 2).
    table_key, image_key, shapes_key
        SpatialData: the table, the image (or a dict region → image) and the shapes element(s); see
        :func:`~hinge_sc.pp.extract_patches`.
    encoder
        ``"handcrafted"`` (80 offline colour, stain, nuclei and texture features, 64 px patches); a name from
        :data:`~hinge_sc.pp.ENCODERS` (``"uni"``, ``"uni2-h"``, ``"conch"``, ``"virchow2"``, ``"h-optimus-0"``,
        ``"phikon"``, ``"phikon-v2"``, ``"resnet50"``; downloaded from the hub, see
        :func:`~hinge_sc.pp.load_encoder` for local weights); an :class:`~hinge_sc.pp.Encoder`; any
        :class:`torch.nn.Module` / callable mapping (B, 3, H, W) float tensors in [0, 1] to (B, D); or a list of
        these, whose outputs are concatenated (the paper: ``["uni", "conch"]``, 1536 features).
    patch_size_um
        Side of the patch in µm (default 112 µm).
    microns_per_pixel
        µm per full-resolution pixel (per image pixel for SpatialData), a float or a dict per section/region.
        Default: ``scalefactors["microns_per_pixel"]``, else 55 µm / ``spot_diameter_fullres`` for 10x Visium.
    views
        1 (identity only) or 8 (all dihedral views).
    context
        Spatial context appended to each spot's features (doubling their width): ``"knn"``, the mean features of
        the ``context_k`` nearest spots of the same section; ``"field"``, the features of a ``context_scale`` times
        larger patch centred on the spot (default: it gains 0.04–0.05 PCC-50 for every method on held-out her2st
        sections, README "Recipe"); ``None`` (as in the paper): none.
    context_k
        Neighbours for ``context="knn"``.
    context_scale
        Side of the context field relative to the patch, for ``context="field"``.
    standardize
        ``"section"`` (default): standardise every feature within each section (image) with the mean and s.d. of
        that section's own spots (identity view), which removes what a stain, a scanner
        or a colour processing does to a whole slide — no counts are used, so it works on H&E-only slides. On
        her2st it raised HINGE's PCC-50 on an unseen patient from 0.14 to 0.22 and on held-out sections of the
        training patient by 0.004 (log2) and 0.04 (log1p CP10k) (README, "Across patients"). Give whole sections
        (a few spots alone have noisy statistics; warned under 30). ``None``: the encoder's raw output.
    out_size
        Side in px of the patches cut from the image; default: the encoder's input size (64 for ``"handcrafted"``,
        224 for most foundation models, the largest for a list, 224 for a plain module).
    key_added
        Key of the outputs in ``obsm`` and ``uns``.
    cache_dir
        Folder where features are stored by fingerprint (settings, encoder weights, spot centres, image identity)
        and read back by a later call with the same fingerprint. A cached file is used only if its record of the
        spots (names and order) matches, its shape fits and its values are finite; otherwise it is recomputed and
        rewritten, with a warning.
    overwrite
        Replace existing outputs under ``key_added`` that were computed with other settings.
    copy
        Return a copy (of the AnnData, or of the SpatialData table) with the features instead of writing in place.
    batch_size
        Patches per encoder call.
    device
        Torch device of the encoder, e.g. ``"cuda"`` (default: where its parameters are).
    show_progress_bar
        Show a progress bar over spots.
    library_key
        Deprecated alias of ``section_key``.

    Returns
    -------
    ``None``, or the modified copy if ``copy=True``. Writes (into the table for SpatialData)

    - ``obsm[key_added]``: (n_spots, D) float32, features of the identity view;
    - ``obsm[key_added + "_views"]`` (only if ``views == 8``): (n_spots, 8, D) float32, in the order of
      :data:`VIEW_NAMES`; view 0 equals ``obsm[key_added]``; consumed by ``HINGE.setup_anndata(views_key=...)``;
    - ``uns[key_added]["params"]``: encoder name and ``encoder_info`` (weights source and SHA-256, input size,
      normalisation), patch_size_um, out_size, views, view_names, context settings, and per section the µm/px,
      its source, patch_um and patch_px; ``feature_names`` for ``"handcrafted"``; the ``fingerprint``.

    Raises
    ------
    KeyError
        If an output key exists with other settings and ``overwrite`` is false.
    ValueError
        If ``views`` is not 1 or 8, ``patch_size_um`` is not a finite number > 0, ``key_added`` is empty or contains
        ``/``, ``encoder`` is unknown, a section has no image or µm/px, an image is empty, has other than 1, 3 or 4
        channels or looks channel-first (C, H, W), spots lie outside their image, or image and spots share no
        coordinate system.

    Warns
    -----
    UserWarning
        If patches are more than half padding (spots near the border of a small image), a cached file does not
        fit (it is recomputed), or a 16-bit image holds fewer bits (e.g. 12-bit; scaled by its observed bit depth).

    Examples
    --------
    >>> hs.pp.histology_features(adata, encoder="handcrafted", views=8)
    >>> adata.obsm["X_histology_views"].shape
    (367, 8, 80)
    >>> hs.pp.histology_features(sdata, encoder=["uni", "conch"], device="cuda")  # 1536 features, as in the paper
    """
    section_key = renamed_argument("library_key", library_key, "section_key", section_key, default=DEFAULT_SECTION_KEY)
    _check_options(views=views, context=context, context_scale=context_scale, batch_size=batch_size,
                   patch_size_um=patch_size_um, standardize=standardize)  # fmt: skip
    check_key_added(key_added, argument="key_added")
    target = _target_table(data, table_key)
    groups = patch_groups(
        data, section_key=section_key, spatial_key=spatial_key, table_key=table_key, image_key=image_key,
        shapes_key=shapes_key, microns_per_pixel=microns_per_pixel,
    )  # fmt: skip
    enc = as_encoder(encoder, out_size=out_size).to(device)
    out_size = int(out_size or enc.input_size or 224)
    # the record keeps its key "library_key": it enters the fingerprint, so renaming it would void existing caches
    input_keys = (
        {"library_key": section_key, "spatial_key": spatial_key}
        if target is data
        else {"table_key": table_key, "image_key": image_key, "shapes_key": shapes_key}
    )
    params = _params(enc, groups, input_keys, patch_size_um=patch_size_um, out_size=out_size, views=views,
                     context=context, context_k=context_k, context_scale=context_scale)  # fmt: skip
    params["standardize"] = standardize or "none"
    fingerprint = _fingerprint(params, groups)
    if _is_up_to_date(target, key_added, views, fingerprint):
        logger.info("`obsm[%r]` was computed with the same settings, spots and images; skipped.", key_added)
        return target.copy() if copy else None
    _check_keys_free(target, key_added, views, overwrite=overwrite)

    def compute() -> np.ndarray:
        feats = _compute(groups, enc, target.n_obs, views=views, context=context, context_k=context_k,
                         context_scale=context_scale, patch_size_um=patch_size_um, out_size=out_size,
                         batch_size=batch_size, show_progress_bar=show_progress_bar)  # fmt: skip
        return within_sections(feats, _section_rows(groups)) if standardize == "section" else feats

    cache_file = Path(cache_dir) / f"{fingerprint}.npy" if cache_dir is not None else None
    feats = cached_features(cache_file, target.obs_names, views, compute)
    target = target.copy() if copy else target
    _write(target, feats, params, fingerprint, key_added=key_added, views=views, overwrite=overwrite)
    return target if copy else None


# ----------------------------------------------------------------------------------------------- 0. inputs
def _check_options(*, views: int, context: str | None, context_scale: float, batch_size: int,
                   patch_size_um: float, standardize: str | None = None) -> None:  # fmt: skip
    """Check the method and execution options, before any data is read."""
    if standardize not in (None, "section"):
        raise ValueError(f"`standardize` must be 'section' or None, found {standardize!r}.")
    if views not in (1, 8):
        raise ValueError(f"`views` must be 1 (identity only) or 8 (all dihedral views), found {views}.")
    if context not in (None, "knn", "field"):
        raise ValueError(f"`context` must be None, 'knn' or 'field', found {context!r}.")
    if context == "field" and not context_scale > 1:
        raise ValueError(f"`context_scale` must be > 1 (times the patch side), found {context_scale}.")
    if batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive integer, found {batch_size}.")
    check_positive_finite(patch_size_um, argument="patch_size_um", unit=" (µm)", example=112)


def _target_table(data: AnnData | Any, table_key: str | None) -> AnnData:
    """Return the AnnData the features are written into: ``data``, or the table ``table_key`` of a SpatialData."""
    return get_table(data, table_key)[1] if is_spatialdata(data) else data


# ----------------------------------------------------------------------------------------------- 1. settings
def _params(
    enc: Encoder, groups: Sequence[PatchGroup], input_keys: Mapping[str, Any], *, patch_size_um: float,
    out_size: int, views: int, context: str | None, context_k: int, context_scale: float,
) -> dict[str, Any]:  # fmt: skip
    """Record the settings (``uns[key_added]["params"]`` without ``n_features`` and ``fingerprint``)."""
    sides = {g.section: g.side(patch_size_um) for g in groups}
    params: dict[str, Any] = {
        "encoder": enc.name,
        "encoder_info": enc.describe(),
        "patch_size_um": float(patch_size_um),
        "out_size": out_size,
        "views": int(views),
        "view_names": list(VIEW_NAMES[:views]),
        "context": context or "none",
        **({"context_k": int(context_k)} if context == "knn" else {}),
        **({"context_scale": float(context_scale)} if context == "field" else {}),
        **input_keys,
        "microns_per_pixel": {g.section: g.microns_per_pixel for g in groups},
        "microns_per_pixel_source": {g.section: g.mpp_source for g in groups},
        "patch_um": {s: v[0] for s, v in sides.items()},
        "patch_px": {s: v[1] for s, v in sides.items()},
    }
    if isinstance(enc, HandcraftedEncoder):
        params["feature_names"] = list(FEATURE_NAMES)
    return params


def _fingerprint(params: Mapping[str, Any], groups: Sequence[PatchGroup]) -> str:
    """Hash of the settings, the spot centres and the images' identities: equal hashes give equal features."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for g in groups:
        digest.update(f"{g.section}|{g.identity()}|".encode())
        digest.update(np.ascontiguousarray(g.obs_idx, dtype=np.int64).tobytes())
        digest.update(np.ascontiguousarray(g.xy, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _is_up_to_date(target: AnnData, key_added: str, views: int, fingerprint: str) -> bool:
    """Whether ``target`` already holds features with this fingerprint (then the call is skipped)."""
    stored = target.uns.get(key_added, {}).get("params", {}) if isinstance(target.uns.get(key_added), dict) else {}
    return (
        stored.get("fingerprint") == fingerprint
        and key_added in target.obsm
        and (views == 1 or f"{key_added}_views" in target.obsm)
    )


def _check_keys_free(target: AnnData, key_added: str, views: int, *, overwrite: bool) -> None:
    """Raise if an output key holds features computed with other settings and ``overwrite`` is false."""
    for where, mapping in (("obsm", target.obsm), ("uns", target.uns)):
        if key_added in mapping and not overwrite:
            raise KeyError(
                f"`{where}[{key_added!r}]` already exists and was computed with other settings, spots or images. "
                "Pass another `key_added` or `overwrite=True` to replace it."
            )
    if views > 1:
        check_key_free(target.obsm, f"{key_added}_views", where="obsm", overwrite=overwrite)


# ----------------------------------------------------------------------------------------------- 2. patches → encoder
def _compute(
    groups: Sequence[PatchGroup], enc: Encoder, n_obs: int, *, views: int, context: str | None, context_k: int,
    context_scale: float, patch_size_um: float, out_size: int, batch_size: int, show_progress_bar: bool,
) -> np.ndarray:  # fmt: skip
    """(n_obs, views, D) features of every spot, with the spatial context appended (D doubles) if asked for."""
    common = {"views": views, "patch_size_um": patch_size_um, "out_size": out_size, "batch_size": batch_size,
              "show_progress_bar": show_progress_bar}  # fmt: skip
    feats = _embed(groups, enc, n_obs, zoom_out=1.0, desc="histology features", **common)
    if context == "knn":
        from ._context import knn_mean

        feats = np.concatenate([feats, knn_mean(groups, feats, context_k)], axis=-1)
    elif context == "field":
        field = _embed(groups, enc, n_obs, zoom_out=context_scale, desc="context field", **common)
        feats = np.concatenate([feats, field], axis=-1)
    return feats


def _section_rows(groups: Sequence[PatchGroup]) -> list[np.ndarray]:
    """Rows of each section (a section's spots may come in several groups, e.g. several images of one region)."""
    rows: dict[str, list[np.ndarray]] = {}
    for g in groups:
        rows.setdefault(str(g.section), []).append(np.asarray(g.obs_idx))
    return [np.concatenate(r) for r in rows.values()]


def _embed(
    groups: Sequence[PatchGroup], enc: Encoder, n_obs: int, *, views: int, patch_size_um: float, out_size: int,
    zoom_out: float, batch_size: int, desc: str, show_progress_bar: bool,
) -> np.ndarray:  # fmt: skip
    """(n_obs, views, D) features of every spot's patch, batch by batch."""
    feats: np.ndarray | None = None
    for group, pos, patches in iter_patches(
        groups, patch_size_um=patch_size_um, out_size=out_size, zoom_out=zoom_out, batch_size=batch_size,
        desc=desc, show_progress_bar=show_progress_bar,
    ):  # fmt: skip
        out = np.stack([enc(np.ascontiguousarray(dihedral_view(patches, v))) for v in range(views)], axis=1)
        if feats is None:
            feats = np.empty((n_obs, views, out.shape[-1]), dtype=np.float32)
        feats[group.obs_idx[pos]] = out
    assert feats is not None
    if not np.isfinite(feats).all():
        n_bad = int((~np.isfinite(feats)).reshape(n_obs, -1).any(1).sum())
        raise ValueError(f"`encoder` {enc.name!r} returned NaN or infinite features for {n_bad} spots.")
    return feats


# ----------------------------------------------------------------------------------------------- 3. write
def _write(
    target: AnnData, feats: np.ndarray, params: dict[str, Any], fingerprint: str, *, key_added: str, views: int,
    overwrite: bool,
) -> None:  # fmt: skip
    """Write ``obsm[key_added]`` (identity view), ``obsm[key_added + "_views"]`` and ``uns[key_added]["params"]``."""
    views_key = f"{key_added}_views"
    target.obsm[key_added] = np.ascontiguousarray(feats[:, 0])
    logger.info("Wrote `obsm[%r]`: %d spots × %d features.", key_added, *feats[:, 0].shape)
    if views > 1:
        target.obsm[views_key] = feats
        logger.info("Wrote `obsm[%r]`: %d spots × %d views × %d features.", views_key, *feats.shape)
    elif views_key in target.obsm and overwrite:  # stale views of an earlier run would not match
        del target.obsm[views_key]
        logger.info("Removed the stale `obsm[%r]`.", views_key)
    params["n_features"] = int(feats.shape[-1])
    params["fingerprint"] = fingerprint
    target.uns[key_added] = {"params": _writable(params)}
    logger.info("Wrote `uns[%r]`.", key_added)


def _writable(value: Any) -> Any:
    """Drop ``None`` values (h5ad and zarr cannot store them) from nested dicts."""
    if isinstance(value, dict):
        return {str(k): _writable(v) for k, v in value.items() if v is not None}
    return value
