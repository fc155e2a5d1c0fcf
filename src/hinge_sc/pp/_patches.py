from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm.auto import tqdm

from .._validators import check_positive_finite
from ._image import PAD_VALUE, SlideImage, from_array, open_image_file

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, Sequence

    from anndata import AnnData

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_SECTION_KEY", "PAD_VALUE", "PatchGroup", "anndata_groups", "iter_patches", "single_section"]

#: Diameter of a 10x Visium spot, µm.
VISIUM_SPOT_DIAMETER_UM = 55.0
#: Fraction of a patch's area past the image border above which the patch counts as mostly padding.
MAX_PADDING = 0.5


@dataclass
class PatchGroup:
    """Spots that share one image (a section of an AnnData, a region of a SpatialData table).

    Lengths are in *reference* px: full-resolution px (``obsm[spatial_key]`` units) for AnnData, level-0 px of
    the image element for SpatialData.
    """

    section: str
    obs_idx: np.ndarray
    xy: np.ndarray
    microns_per_pixel: float
    spot_diameter_px: float | None
    open: Callable[[float, int | None], tuple[SlideImage, float]] = field(repr=False)
    mpp_source: str = "argument"
    identity: Callable[[], str] = field(default=lambda: "", repr=False)

    def side(self, patch_size_um: float) -> tuple[float, int]:
        """Patch side ``max(patch_size_um, spot diameter)`` in µm and in reference px."""
        spot_um = self.spot_diameter_px * self.microns_per_pixel if self.spot_diameter_px else 0.0
        side_um = max(float(patch_size_um), spot_um)
        return side_um, max(1, round(side_um / self.microns_per_pixel))


# ----------------------------------------------------------------------------------------------- AnnData input
#: Default obs column naming each spot's tissue section (its ``uns["spatial"]`` library).
DEFAULT_SECTION_KEY = "section"


def single_section(adata: AnnData, section_key: str | None) -> str | None:
    """Return the one library all spots belong to when the rule below applies, else ``None`` (read ``section_key``).

    The rule of the default: the column ``"section"`` is used when it is present; when it is absent and
    ``adata.uns["spatial"]`` has exactly one library, all spots are that one section. ``section_key=None`` always
    means a single section, and then ``uns["spatial"]`` must have exactly one library.

    Raises
    ------
    ValueError
        If ``section_key`` is ``None`` and ``uns["spatial"]`` does not have exactly one library.
    """
    spatial = adata.uns.get("spatial", {})
    default_absent = section_key == DEFAULT_SECTION_KEY and section_key not in adata.obs and len(spatial) == 1
    if section_key is not None and not default_absent:
        return None
    if len(spatial) != 1:
        raise ValueError(
            f"`section_key=None` needs exactly one library in `adata.uns['spatial']`, found {len(spatial)}. "
            "Pass the obs column that names each spot's section through `section_key`."
        )
    return next(iter(spatial))


def _sections(adata: AnnData, section_key: str | None) -> list[tuple[str, np.ndarray]]:
    """(library id, integer obs indices) per section, in category order."""
    single = single_section(adata, section_key)
    if single is not None:
        return [(single, np.arange(adata.n_obs))]
    if section_key not in adata.obs:
        raise KeyError(
            f"`section_key={section_key!r}` is not a column of `adata.obs`. Pass the column that names each "
            "spot's section (a key of `adata.uns['spatial']`), or `section_key=None` for a single library."
        )
    col = adata.obs[section_key]
    if col.isna().any():
        raise ValueError(
            f"{int(col.isna().sum())} spots have no section in `adata.obs[{section_key!r}]`; fill it or drop them."
        )
    ids = col.cat.categories if hasattr(col, "cat") else list(dict.fromkeys(col.tolist()))
    out = []
    for lib in ids:
        idx = np.flatnonzero((col == lib).to_numpy())
        if len(idx):
            out.append((str(lib), idx))
    return out


def _library(adata: AnnData, section: str) -> dict:
    spatial = adata.uns.get("spatial", {})
    if section not in spatial:
        raise ValueError(
            f"Section {section!r} has no entry in `adata.uns['spatial']`, so it has no H&E image to cut patches "
            "from. Load it with its image (e.g. `hs.datasets.her2st(..., images=True)`) or drop its spots."
        )
    return spatial[section]


def is_visium(lib: Mapping) -> bool:
    """Whether a ``uns["spatial"]`` library comes from 10x Space Ranger (Visium scale factors or metadata)."""
    scalefactors, metadata = lib.get("scalefactors", {}), lib.get("metadata", {})
    return "fiducial_diameter_fullres" in scalefactors or any(
        k in metadata for k in ("chemistry_description", "software_version")
    )


def resolve_mpp(
    scalefactors: Mapping, metadata: Mapping, section: str, microns_per_pixel: float | Mapping[str, float] | None, *,
    visium: bool, where: str,
) -> tuple[float, str]:  # fmt: skip
    """µm per reference px and where it came from: the argument, ``scalefactors`` or the Visium spot diameter."""
    if microns_per_pixel is not None:
        mpp = microns_per_pixel.get(section) if hasattr(microns_per_pixel, "get") else microns_per_pixel
        if mpp is None:
            raise KeyError(f"`microns_per_pixel` has no entry for section {section!r}; give one for every section.")
        source = "argument"
    elif scalefactors.get("microns_per_pixel") is not None:
        mpp, source = scalefactors["microns_per_pixel"], "metadata"
    elif visium and scalefactors.get("spot_diameter_fullres"):
        mpp, source = VISIUM_SPOT_DIAMETER_UM / float(scalefactors["spot_diameter_fullres"]), "visium_spot_diameter"
        logger.info("%s: %.4g µm/px from the Visium spot diameter (55 µm).", section, mpp)
    else:
        raise ValueError(
            f"The µm/px of section {section!r} is unknown: `{where}['scalefactors']` has no 'microns_per_pixel' and "
            "the data is not recognised as 10x Visium. Pass `microns_per_pixel=` (a float, or a dict per section), "
            f"or set `{where}['scalefactors']['microns_per_pixel']`; for 10x Visium, "
            "55 / scalefactors['spot_diameter_fullres'] is a good estimate."
        )
    mpp = float(mpp)
    if not np.isfinite(mpp) or mpp <= 0:
        raise ValueError(f"`microns_per_pixel` must be positive, found {mpp} for section {section!r}.")
    return mpp, source


def _load_image(lib: Mapping, section: str, side_px: float, out_size: int | None) -> tuple[SlideImage, float]:
    """Open the section's image; return it and its scale (image level-0 px per full-resolution px)."""
    source = lib.get("metadata", {}).get("source_image_path")
    if source is not None and Path(source).is_file():
        try:
            return open_image_file(source, side_px=side_px, out_size=out_size), 1.0
        except ValueError as err:  # a truncated or non-image file: say which section's image it is and where
            raise ValueError(
                f"The image of section {section!r} (`adata.uns['spatial'][{section!r}]['metadata']"
                f"['source_image_path']`) is not usable: {err} Replace the file, or point `source_image_path` at the "
                "section's H&E image."
            ) from err
    if source is not None:
        warnings.warn(
            f"The full-resolution image of section {section!r} ({source}) is missing; cutting patches from the "
            "stored 'hires' image instead.",
            UserWarning,
            stacklevel=4,
        )
    images, scalefactors = lib.get("images", {}), lib.get("scalefactors", {})
    for res in ("hires", "lowres"):
        if res in images and f"tissue_{res}_scalef" in scalefactors:
            img = from_array(images[res], source=f"uns['spatial'][{section!r}]['images'][{res!r}]")
            return img, float(scalefactors[f"tissue_{res}_scalef"])
    raise ValueError(
        f"Section {section!r} has no image: neither `metadata['source_image_path']` nor a 'hires'/'lowres' image "
        "with its scale factor in `adata.uns['spatial'][section]`. Load the section with its H&E image."
    )


def _identity(lib: Mapping, section: str) -> str:
    """Cheap identity of a section's image (file path, size and mtime, or a pixel subsample hash)."""
    source = lib.get("metadata", {}).get("source_image_path")
    if source is not None and Path(source).is_file():
        stat = os.stat(source)
        return f"{Path(source).resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    images = lib.get("images", {})
    for res in ("hires", "lowres"):
        if res in images:
            scalef = lib.get("scalefactors", {}).get(f"tissue_{res}_scalef")
            where = f"uns['spatial'][{section!r}]['images'][{res!r}]"
            return f"{res}:{scalef}:{from_array(images[res], source=where).fingerprint()}"
    return section


def anndata_groups(
    adata: AnnData, *, section_key: str | None, spatial_key: str, microns_per_pixel: float | Mapping[str, float] | None
) -> list[PatchGroup]:
    """Spots of an AnnData (Visium convention) grouped by section; see :func:`single_section` for the default."""
    if spatial_key not in adata.obsm:
        raise KeyError(f"`spatial_key={spatial_key!r}` is not in `adata.obsm`; pass the key of the spot coordinates.")
    coords = np.asarray(adata.obsm[spatial_key], dtype=float)[:, :2]
    groups = []
    for section, idx in _sections(adata, section_key):
        lib = _library(adata, section)
        scalefactors = lib.get("scalefactors", {})
        mpp, source = resolve_mpp(
            scalefactors, lib.get("metadata", {}), section, microns_per_pixel, visium=is_visium(lib),
            where=f"adata.uns['spatial'][{section!r}]",
        )  # fmt: skip
        spot = scalefactors.get("spot_diameter_fullres")
        groups.append(
            PatchGroup(
                section, idx, coords[idx], mpp, float(spot) if spot else None,
                lambda side, size, lib=lib, s=section: _load_image(lib, s, side, size), source,
                lambda lib=lib, s=section: _identity(lib, s),
            )
        )
    return groups


def padding_fraction(xy: np.ndarray, side: float, h: int, w: int) -> np.ndarray:
    """Fraction of the area of square patches of ``side`` px centred on ``xy`` (n, 2) that lies outside (h, w)."""
    half = side / 2
    inside_x = np.clip(np.minimum(xy[:, 0] + half, w) - np.maximum(xy[:, 0] - half, 0), 0, None)
    inside_y = np.clip(np.minimum(xy[:, 1] + half, h) - np.maximum(xy[:, 1] - half, 0), 0, None)
    return 1.0 - inside_x * inside_y / (side * side)


def _warn_padding(group: PatchGroup, xy: np.ndarray, side: float, h: int, w: int) -> None:
    """Warn when patches of ``group`` are mostly white padding (spots near the border of a small image)."""
    n_bad = int((padding_fraction(xy, side, h, w) > MAX_PADDING).sum())
    if n_bad:
        warnings.warn(
            f"{n_bad} of {len(xy)} patches of section {group.section!r} are more than {MAX_PADDING:.0%} padding "
            f"(past the border of its {w} × {h} px image), so their features describe mostly white padding. "
            "Check the image (a low-resolution or cropped image?), its scale factor and `patch_size_um`.",
            UserWarning,
            stacklevel=4,
        )


#: Patches whose pixels vary less than this (s.d. of grey levels, 0–255) are blank: glass, padding or background.
BLANK_STD = 2.0


def blank_patches(patches: np.ndarray) -> np.ndarray:
    """``(n,)`` bool: patches ``(n, S, S, 3)`` that are (nearly) one colour — no tissue under the spot."""
    grey = np.asarray(patches, dtype=np.float32).mean(axis=-1)
    return grey.reshape(len(grey), -1).std(axis=1) < BLANK_STD


def _warn_blank(group: PatchGroup, n_blank: int, n: int) -> None:
    """Warn when most patches of a section are blank: the spots are probably not where the image's tissue is."""
    if n and n_blank > n / 2:
        warnings.warn(
            f"{n_blank} of {n} patches of section {group.section!r} are blank (one colour, no tissue): the spots "
            "probably do not lie on the tissue of the image. Check the image's scale factor "
            "(`scalefactors['tissue_hires_scalef']`), `spatial_key` (full-resolution pixels) and the image itself.",
            UserWarning,
            stacklevel=4,
        )


def iter_patches(
    groups: Sequence[PatchGroup],
    *,
    patch_size_um: float = 112.0,
    out_size: int | None = 64,
    zoom_out: float = 1.0,
    batch_size: int | None = None,
    desc: str = "patches",
    show_progress_bar: bool = True,
) -> Iterator[tuple[PatchGroup, np.ndarray, np.ndarray]]:
    """Yield ``(group, positions, patches)`` batches; one image is open at a time (lazily for dask/TIFF).

    ``positions`` indexes into ``group.obs_idx``; ``zoom_out`` multiplies the patch side (larger fields of view).
    """
    check_positive_finite(patch_size_um, argument="patch_size_um", unit=" (µm)", example=112)
    if out_size is not None and out_size < 1:
        raise ValueError(f"`out_size` must be a positive number of pixels or None, found {out_size}.")
    n_total = sum(len(g.obs_idx) for g in groups)
    pbar = tqdm(total=n_total, desc=desc, unit="spot", disable=not show_progress_bar)
    for group in groups:
        side_um, side_px = group.side(patch_size_um)
        side_ref = side_px * zoom_out
        img, scale = group.open(side_ref, out_size)
        xy = group.xy * scale
        h, w = img.shape
        outside = ~((xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h))
        if outside.any():
            raise ValueError(
                f"{int(outside.sum())} spots of section {group.section!r} lie outside its image "
                f"({w} × {h} px at scale {scale:.4g}), e.g. at {group.xy[outside][0].round(1).tolist()}. Check "
                "`spatial_key` (full-resolution pixels expected), the image's scale factor or the transformations."
            )
        _warn_padding(group, xy, max(1, round(side_ref * scale)), h, w)
        step = len(xy) if batch_size is None else max(1, batch_size)
        n_blank = 0
        for start in range(0, len(xy), step):
            pos = np.arange(start, min(start + step, len(xy)))
            patches = img.crops(xy[pos], max(1, round(side_ref * scale)), out_size)
            n_blank += int(blank_patches(patches).sum())
            pbar.update(len(pos))
            yield group, pos, patches
        _warn_blank(group, n_blank, len(xy))
        logger.debug("%s: %d patches of %d px (%.1f µm) from %s", group.section, len(xy), side_px, side_um, img.source)
        del img
    pbar.close()
