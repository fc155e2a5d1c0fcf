from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Value of the padding added where a patch extends past the image border (white, like bare glass).
PAD_VALUE = 255


@dataclass
class SectionGeometry:
    """How the patches of one section are cut (all lengths in full-resolution pixels unless noted)."""

    section: str
    obs_idx: np.ndarray
    microns_per_pixel: float
    side_um: float
    side_px: int


def _sections(adata: AnnData, library_key: str | None) -> list[tuple[str, np.ndarray]]:
    """(library id, integer obs indices) per section, in category order."""
    spatial = adata.uns.get("spatial", {})
    if library_key is None:
        if len(spatial) != 1:
            raise ValueError(
                f"`library_key=None` needs exactly one library in `adata.uns['spatial']`, found {len(spatial)}. "
                "Pass the obs column that names each spot's section through `library_key`."
            )
        return [(next(iter(spatial)), np.arange(adata.n_obs))]
    if library_key not in adata.obs:
        raise KeyError(
            f"`library_key={library_key!r}` is not a column of `adata.obs`. Pass the column that names each "
            "spot's section (a key of `adata.uns['spatial']`), or `library_key=None` for a single library."
        )
    col = adata.obs[library_key]
    if col.isna().any():
        raise ValueError(
            f"{int(col.isna().sum())} spots have no section in `adata.obs[{library_key!r}]`; fill it or drop them."
        )
    ids = col.cat.categories if hasattr(col, "cat") else _unique(col)
    out = []
    for lib in ids:
        idx = np.flatnonzero((col == lib).to_numpy())
        if len(idx):
            out.append((str(lib), idx))
    return out


def _unique(col) -> list:
    """Unique values of a column, in order of appearance."""
    return list(dict.fromkeys(col.tolist()))


def _library(adata: AnnData, section: str) -> dict:
    spatial = adata.uns.get("spatial", {})
    if section not in spatial:
        raise ValueError(
            f"Section {section!r} has no entry in `adata.uns['spatial']`, so it has no H&E image to cut patches "
            "from. Load it with its image (e.g. `hs.datasets.her2st(..., images=True)`) or drop its spots."
        )
    return spatial[section]


def _resolve_mpp(lib: Mapping, section: str, microns_per_pixel: float | Mapping[str, float] | None) -> float:
    if microns_per_pixel is not None:
        mpp = microns_per_pixel.get(section) if hasattr(microns_per_pixel, "get") else microns_per_pixel
        if mpp is None:
            raise KeyError(f"`microns_per_pixel` has no entry for section {section!r}.")
    else:
        mpp = lib.get("scalefactors", {}).get("microns_per_pixel")
        if mpp is None:
            raise ValueError(
                f"The µm/px of section {section!r} is unknown: `adata.uns['spatial'][{section!r}]['scalefactors']` "
                "has no 'microns_per_pixel'. Pass `microns_per_pixel=` (a float, or a dict per section); for 10x "
                "Visium, 55 / scalefactors['spot_diameter_fullres'] is a good estimate."
            )
    mpp = float(mpp)
    if not np.isfinite(mpp) or mpp <= 0:
        raise ValueError(f"`microns_per_pixel` must be positive, found {mpp} for section {section!r}.")
    return mpp


def section_geometry(
    adata: AnnData,
    *,
    patch_size_um: float,
    microns_per_pixel: float | Mapping[str, float] | None,
    library_key: str | None,
) -> list[SectionGeometry]:
    """Patch side in µm and px for each section: max(``patch_size_um``, spot diameter) / µm per px."""
    if not patch_size_um > 0:
        raise ValueError(f"`patch_size_um` must be positive, found {patch_size_um}.")
    out = []
    for section, idx in _sections(adata, library_key):
        lib = _library(adata, section)
        mpp = _resolve_mpp(lib, section, microns_per_pixel)
        spot_px = lib.get("scalefactors", {}).get("spot_diameter_fullres")
        side_um = max(float(patch_size_um), float(spot_px) * mpp if spot_px else 0.0)
        out.append(SectionGeometry(section, idx, mpp, side_um, max(1, round(side_um / mpp))))
    return out


def _load_image(lib: Mapping, section: str, side_px: int, out_size: int | None) -> tuple[np.ndarray, float]:
    """RGB uint8 image and its scale relative to full resolution (image px per full-res px)."""
    source = lib.get("metadata", {}).get("source_image_path")
    if source is not None and Path(source).is_file():
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None  # whole-slide images exceed PIL's decompression-bomb limit
        with Image.open(source) as im:
            full_w = im.size[0]
            # decode a JPEG at 1/2, 1/4 or 1/8 resolution when the patches are downscaled at least that much
            reduce = 1
            while out_size is not None and reduce < 8 and side_px / (2 * reduce) >= out_size:
                reduce *= 2
            if reduce > 1:
                im.draft("RGB", (im.size[0] // reduce, im.size[1] // reduce))
            arr = np.asarray(im.convert("RGB"))
        return arr, arr.shape[1] / full_w
    if source is not None:
        warnings.warn(
            f"The full-resolution image of section {section!r} ({source}) is missing; cutting patches from the "
            "stored 'hires' image instead.",
            UserWarning,
            stacklevel=3,
        )
    images, scalefactors = lib.get("images", {}), lib.get("scalefactors", {})
    for res in ("hires", "lowres"):
        if res in images and f"tissue_{res}_scalef" in scalefactors:
            return _as_rgb_uint8(np.asarray(images[res])), float(scalefactors[f"tissue_{res}_scalef"])
    raise ValueError(
        f"Section {section!r} has no image: neither `metadata['source_image_path']` nor a 'hires'/'lowres' image "
        "with its scale factor in `adata.uns['spatial'][section]`. Load the section with its H&E image."
    )


def _as_rgb_uint8(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
    img = img[..., :3]
    if img.dtype != np.uint8:
        scale = 255.0 if np.issubdtype(img.dtype, np.floating) and img.max() <= 1.0 else 1.0
        img = np.clip(np.rint(img * scale), 0, 255).astype(np.uint8)
    return img


def _crop(img: np.ndarray, cx: float, cy: float, side: int) -> np.ndarray:
    """Square crop of ``side`` px whose top-left is (round(cx) - side // 2, round(cy) - side // 2); white padding."""
    h, w = img.shape[:2]
    left, top = round(cx) - side // 2, round(cy) - side // 2
    out = np.full((side, side, 3), PAD_VALUE, dtype=np.uint8)
    x0, y0, x1, y1 = max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)
    if x1 > x0 and y1 > y0:
        out[y0 - top : y1 - top, x0 - left : x1 - left] = img[y0:y1, x0:x1]
    return out


def iter_patches(
    adata: AnnData,
    *,
    patch_size_um: float = 112.0,
    microns_per_pixel: float | Mapping[str, float] | None = None,
    library_key: str | None = "section",
    spatial_key: str = "spatial",
    out_size: int | None = 64,
    show_progress_bar: bool = True,
) -> Iterator[tuple[SectionGeometry, np.ndarray]]:
    """Yield ``(geometry, patches)`` per section; see :func:`extract_patches`. One image is in memory at a time."""
    from PIL import Image

    if spatial_key not in adata.obsm:
        raise KeyError(f"`spatial_key={spatial_key!r}` is not in `adata.obsm`; pass the key of the spot coordinates.")
    if out_size is not None and out_size < 1:
        raise ValueError(f"`out_size` must be a positive number of pixels or None, found {out_size}.")
    coords = np.asarray(adata.obsm[spatial_key], dtype=float)[:, :2]
    geoms = section_geometry(
        adata, patch_size_um=patch_size_um, microns_per_pixel=microns_per_pixel, library_key=library_key
    )
    for geom in geoms:  # check all sections before the first (slow) image is read
        _library(adata, geom.section)
    pbar = tqdm(total=adata.n_obs, desc="patches", unit="spot", disable=not show_progress_bar)
    for geom in geoms:
        img, scale = _load_image(_library(adata, geom.section), geom.section, geom.side_px, out_size)
        xy = coords[geom.obs_idx] * scale
        h, w = img.shape[:2]
        outside = ~((xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h))
        if outside.any():
            raise ValueError(
                f"{int(outside.sum())} spots of section {geom.section!r} lie outside its image "
                f"({w} × {h} px at scale {scale:.4g}). Check `spatial_key` (full-resolution pixels expected) and "
                "the image's scale factor."
            )
        side = max(1, round(geom.side_px * scale))
        size = side if out_size is None else out_size
        patches = np.empty((len(xy), size, size, 3), dtype=np.uint8)
        for i, (cx, cy) in enumerate(xy):
            crop = _crop(img, cx, cy, side)
            if size != side:
                crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BICUBIC))
            patches[i] = crop
            pbar.update(1)
        logger.debug("%s: %d patches of %d px (%.1f µm), scale %.3g", geom.section, len(xy), side, geom.side_um, scale)
        del img
        yield geom, patches
    pbar.close()


def extract_patches(
    adata: AnnData,
    *,
    patch_size_um: float = 112.0,
    microns_per_pixel: float | Mapping[str, float] | None = None,
    library_key: str | None = "section",
    spatial_key: str = "spatial",
    out_size: int | None = 64,
    show_progress_bar: bool = True,
) -> np.ndarray:
    """Cut the H&E patch centred on each spot.

    The side of a patch is ``max(patch_size_um, spot diameter)`` µm, converted to full-resolution pixels
    with the slide's µm/px (HINGE §2), then resized to ``out_size`` px (bicubic). Sections are processed
    one at a time and each image is read once. The image is the full-resolution file named in
    ``uns["spatial"][section]["metadata"]["source_image_path"]`` when it exists (a JPEG is decoded at 1/2,
    1/4 or 1/8 resolution when the resize allows it), else the stored ``"hires"`` (or ``"lowres"``) image,
    with coordinates multiplied by its ``tissue_*_scalef``. Patches that extend past the image border are
    padded with white (255), never dropped.

    Parameters
    ----------
    adata
        Spots with coordinates in ``obsm[spatial_key]`` and images in ``uns["spatial"]``.
    patch_size_um
        Side of the patch in µm (default 112 µm, i.e. 224 px at 0.5 µm/px).
    microns_per_pixel
        µm per full-resolution pixel, one float or a dict per section. Defaults to
        ``uns["spatial"][section]["scalefactors"]["microns_per_pixel"]``.
    library_key
        Column of ``obs`` naming each spot's section (a key of ``uns["spatial"]``). ``None`` for a single
        library.
    spatial_key
        Key of ``obsm`` with the (x, y) spot centres in full-resolution pixels, shape (n_spots, 2).
    out_size
        Side of the returned patches in px; ``None`` keeps the native size (of the image read).
    show_progress_bar
        Show a progress bar over spots.

    Returns
    -------
    RGB patches, shape (n_spots, out_size, out_size, 3), uint8, in the order of ``adata.obs_names``.

    Raises
    ------
    ValueError
        If a section has no image or no µm/px, or spots lie outside their image.
    KeyError
        If ``library_key`` or ``spatial_key`` is missing.

    Examples
    --------
    >>> patches = hs.pp.extract_patches(adata, patch_size_um=112, out_size=224)
    """
    out = None
    for geom, patches in iter_patches(
        adata,
        patch_size_um=patch_size_um,
        microns_per_pixel=microns_per_pixel,
        library_key=library_key,
        spatial_key=spatial_key,
        out_size=out_size,
        show_progress_bar=show_progress_bar,
    ):
        if out is None:
            out = np.full((adata.n_obs, *patches.shape[1:]), PAD_VALUE, dtype=np.uint8)
        elif out.shape[1:] != patches.shape[1:]:
            raise ValueError(
                "Sections give patches of different native sizes; pass an integer `out_size` to resize them."
            )
        out[geom.obs_idx] = patches
    if out is None:
        raise ValueError("`adata` has no spots.")
    return out
