"""HEST-1k samples :cite:p:`Jaume2024` read into this package's Visium convention, without loading a whole slide.

Layout as written by HEST's ``HESTData.save`` and its release helper ``_process_row``, and read by its ``_read_st``
(``src/hest/HESTData.py``, ``src/hest/utils.py``, ``src/hest/readers.py`` of mahmoodlab/HEST). A HEST-1k folder
(``huggingface_hub.snapshot_download("MahmoodLab/hest")``) holds ``st/<id>.h5ad``, ``metadata/<id>.json``,
``wsis/<id>.tif`` (pyramidal TIFF), ``patches/<id>.h5``, ``thumbnails/<id>_downscaled_fullres.jpeg`` …; a sample
folder of ``HESTData.save`` holds ``aligned_adata.h5ad``, ``metrics.json``, ``aligned_fullres_HE.tif``,
``downscaled_fullres.jpeg`` (and ``patches.h5``). The h5ad has raw counts in ``X``, spot centres (x, y) in
full-resolution px in ``obsm["spatial"]`` (= ``obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]]``, beside
``in_tissue``, ``array_row``, ``array_col``) and a ≤ 1,000 px image in ``uns["spatial"]["ST"]["images"]
["downscaled_fullres"]`` at ``scalefactors["tissue_downscaled_fullres_scalef"]``. The JSON gives
``pixel_size_um_estimated`` / ``pixel_size_um_embedded`` (µm/px; HEST works at the estimated one), ``spot_diameter``
and ``inter_spot_dist`` (µm), ``st_technology``, ``species``, ``organ``, ``fullres_px_width`` / ``_height`` ….
The patch file holds ``img`` (N, 224, 224, 3) uint8 at 0.5 µm/px, ``coords`` (N, 2), the patches' top-left corners
in full-resolution px, and ``barcode`` (N, 1) bytes, the h5ad's ``obs_names``.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from hinge_sc._validators import check_allocation, check_positive_finite
from hinge_sc.pp._patches import VISIUM_SPOT_DIAMETER_UM

if TYPE_CHECKING:
    import os
    from collections.abc import Sequence

    from anndata import AnnData

logger = logging.getLogger(__name__)

#: µm/px keys of HEST's metadata JSON, in order of preference (HEST itself uses the estimated one).
MPP_KEYS = ("pixel_size_um_estimated", "pixel_size_um_embedded")
#: Spot diameter (µm) where the metadata has no ``spot_diameter``: HEST's ``VisiumHESTData`` / ``STHESTData`` sizes.
DEFAULT_SPOT_DIAMETER_UM = {"Visium": VISIUM_SPOT_DIAMETER_UM, "Spatial Transcriptomics": 100.0}
#: Technologies whose HEST spots are square bins pooled by HEST (``pool_transcripts_xenium``, ``pool_bins_visiumhd``).
POOLED_TECHNOLOGIES = ("Xenium", "Visium HD")
#: Library key of the display image inside HEST's h5ad.
HEST_LIBRARY = "ST"
#: The choices of ``image``.
IMAGE_CHOICES = ("embedded", "thumbnail", "none")


@dataclass(frozen=True)
class HestSample:
    """The files of one HEST sample (``None`` where the file is absent)."""

    sample_id: str
    st: Path
    metadata: Path | None
    wsi: Path | None
    thumbnail: Path | None
    patches: Path | None


def _file(path: Path) -> Path | None:
    return path if path.is_file() else None


def hest_samples(
    path: str | os.PathLike, ids: str | Sequence[str] | None, *, argument: str = "ids"
) -> list[HestSample]:
    """Locate the files of the samples ``ids`` (default: all) in a HEST-1k folder or one sample folder."""
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(
            f"`path={str(path)!r}`: no such folder. Expected a HEST-1k folder (with `st/`, `metadata/`, `wsis/`, as "
            "downloaded from MahmoodLab/hest) or one sample folder (`aligned_adata.h5ad`, `metrics.json`)."
        )
    wanted = [ids] if isinstance(ids, str) else None if ids is None else list(ids)
    if wanted is not None and (not wanted or not all(isinstance(i, str) for i in wanted)):
        raise TypeError(f"`{argument}` must be a sample id or a non-empty list of ids (strings), found {ids!r}.")
    if wanted is not None and len(set(wanted)) != len(wanted):
        raise ValueError(f"`{argument}` has duplicates: {wanted}. Pass each sample once.")
    if (root / "st").is_dir():
        available = sorted(p.stem for p in (root / "st").glob("*.h5ad"))
        if not available:
            raise FileNotFoundError(f"`path={str(root)!r}`: `st/` has no `<id>.h5ad` file; download the samples first.")
        unknown = [i for i in wanted or [] if i not in available]
        if unknown:
            raise ValueError(
                f"`{argument}` has ids not found in {root / 'st'}: {unknown}; available: {', '.join(available)}."
            )
        return [
            HestSample(i, root / "st" / f"{i}.h5ad", _file(root / "metadata" / f"{i}.json"),
                       _file(root / "wsis" / f"{i}.tif"), _file(root / "thumbnails" / f"{i}_downscaled_fullres.jpeg"),
                       _file(root / "patches" / f"{i}.h5"))  # fmt: skip
            for i in wanted or available
        ]
    if (root / "aligned_adata.h5ad").is_file():
        if wanted is not None and len(wanted) != 1:
            raise ValueError(f"`path` is one sample folder, so `{argument}` names at most one id; found {wanted}.")
        sample_id = wanted[0] if wanted else root.name
        return [HestSample(sample_id, root / "aligned_adata.h5ad", _file(root / "metrics.json"),
                           _file(root / "aligned_fullres_HE.tif"), _file(root / "downscaled_fullres.jpeg"),
                           _file(root / "patches.h5"))]  # fmt: skip
    found = ", ".join(sorted(p.name for p in root.iterdir())[:10]) or "nothing"
    raise FileNotFoundError(
        f"`path={str(root)!r}` is neither a HEST-1k folder (no `st/`) nor a sample folder (no `aligned_adata.h5ad`); "
        f"found: {found}. Point `path` to the folder given to `snapshot_download(local_dir=...)`."
    )


def _number(value: Any) -> float | None:
    """``value`` as a finite positive float, else ``None`` (HEST writes missing values as null, "" or NaN)."""
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _read_metadata(file: Path) -> dict[str, Any]:
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{file} could not be read as HEST metadata JSON ({err}); download it again.") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{file}: expected a JSON object (HEST's per-sample metadata), found {type(meta).__name__}.")
    return meta


def per_sample(value: float | Mapping[str, float] | None, sample_id: str, *, argument: str) -> float | None:
    """The value of ``argument`` (a number, or a dict per sample id) for one sample; ``None`` if not given."""
    if value is None or isinstance(value, Mapping) and sample_id not in value:
        return None
    if isinstance(value, Mapping):
        return check_positive_finite(value[sample_id], argument=f"{argument}[{sample_id!r}]")
    return check_positive_finite(value, argument=argument)


def sample_mpp(meta: Mapping[str, Any], file: Path, override: float | None) -> tuple[float, str]:
    """µm per full-resolution px and its source: the argument, else ``pixel_size_um_estimated``, else ``_embedded``."""
    if override is not None:
        return override, "argument"
    for key in MPP_KEYS:
        if (mpp := _number(meta.get(key))) is not None:
            return mpp, f"hest_{key}"
    found = ", ".join(f"{k!r}: {meta.get(k)!r}" for k in MPP_KEYS)
    raise ValueError(
        f"{file}: neither {MPP_KEYS[0]!r} nor {MPP_KEYS[1]!r} holds a positive number (found {found}), so the µm/px "
        "of the slide is unknown. Pass `microns_per_pixel=` (a float, or a dict per sample id)."
    )


def sample_spot_diameter(meta: Mapping[str, Any], file: Path, override: float | None, xy: np.ndarray,
                         mpp: float) -> tuple[float, str]:  # fmt: skip
    """Spot diameter in µm and its source: the argument, else the pitch of HEST's pooled square bins (Xenium, Visium
    HD), else ``spot_diameter``, else the technology's spot."""
    tech = meta.get("st_technology")
    if override is not None:
        return override, "argument"
    if tech in POOLED_TECHNOLOGIES and len(xy) > 1:  # HEST pools transcripts / 2 µm bins into abutting squares
        from scipy.spatial import cKDTree

        pitch = float(np.median(cKDTree(xy).query(xy, k=2)[0][:, 1])) * mpp
        logger.info("%s: %s pseudo-spots are squares of side %.4g µm (their pitch); the metadata's 'spot_diameter' "
                    "(%r) is that of the raw data.", file, tech, pitch, meta.get("spot_diameter"))  # fmt: skip
        return pitch, "pooled_bin_pitch"
    if (diameter := _number(meta.get("spot_diameter"))) is not None:
        return diameter, "hest_spot_diameter"
    if tech in DEFAULT_SPOT_DIAMETER_UM:
        diameter = DEFAULT_SPOT_DIAMETER_UM[tech]
        logger.info("%s has no 'spot_diameter'; using %g µm, the spot of %s.", file, diameter, tech)
        return diameter, "st_technology_default"
    raise ValueError(
        f"{file}: no 'spot_diameter' (µm), and `st_technology={tech!r}` has no standard spot size. Pass "
        "`spot_diameter_um=` (a float, or a dict per sample id)."
    )


def _spot_positions(adata: AnnData, file: Path) -> np.ndarray:
    """(n_spots, 2) float spot centres (x, y) in full-resolution px: ``obsm["spatial"]``, else the ``pxl_*`` columns."""
    if "spatial" in adata.obsm:
        xy = np.asarray(adata.obsm["spatial"], dtype=float)
    elif {"pxl_col_in_fullres", "pxl_row_in_fullres"} <= set(adata.obs.columns):
        xy = adata.obs[["pxl_col_in_fullres", "pxl_row_in_fullres"]].to_numpy(float)
    else:
        raise KeyError(
            f"{file} has neither `obsm['spatial']` nor `obs[['pxl_col_in_fullres', 'pxl_row_in_fullres']]`; expected "
            "the spot centres in full-resolution px, as HEST writes them."
        )
    if xy.ndim != 2 or xy.shape[1] < 2 or not np.isfinite(xy[:, :2]).all():
        raise ValueError(f"{file}: the spot centres must be finite, shape (n_spots, 2); found shape {xy.shape}.")
    return np.ascontiguousarray(xy[:, :2])


def _display_image(sample: HestSample, hest_lib: Mapping, meta: Mapping | None, image: str) -> dict[str, Any]:
    """``{"images": {"hires": …}, "tissue_hires_scalef": …}`` for ``image``, or ``{}`` for ``"none"``."""
    hest_scalef = _number(hest_lib.get("scalefactors", {}).get("tissue_downscaled_fullres_scalef"))
    if image == "embedded":
        img = hest_lib.get("images", {}).get("downscaled_fullres")
        if img is None or hest_scalef is None:
            raise KeyError(
                f"`image='embedded'`: {sample.st} has no `uns['spatial']['ST']['images']['downscaled_fullres']` with "
                "its `scalefactors['tissue_downscaled_fullres_scalef']`. Pass `image='thumbnail'` (the file "
                f"`thumbnails/{sample.sample_id}_downscaled_fullres.jpeg`) or `image='none'`."
            )
        return {"images": {"hires": np.asarray(img)}, "tissue_hires_scalef": hest_scalef}
    if image == "thumbnail":
        from PIL import Image

        from hinge_sc.pp._image import pil_pixel_limit

        if sample.thumbnail is None:
            raise FileNotFoundError(
                f"`image='thumbnail'`: no thumbnail of sample {sample.sample_id!r} (expected "
                f"`thumbnails/{sample.sample_id}_downscaled_fullres.jpeg`); pass `image='embedded'` or `'none'`."
            )
        with pil_pixel_limit(sample.thumbnail), Image.open(sample.thumbnail) as im:
            hires = np.asarray(im.convert("RGB"))
        width = _number((meta or {}).get("fullres_px_width"))  # the thumbnail is HEST's downscaled_fullres as JPEG
        if (scalef := hires.shape[1] / width if width else hest_scalef) is None:
            raise ValueError(f"`image='thumbnail'`: the scale of {sample.thumbnail} is unknown; pass `image='none'`.")
        return {"images": {"hires": hires}, "tissue_hires_scalef": float(scalef)}
    return {}


def _library(
    sample: HestSample, adata: AnnData, xy: np.ndarray, *, image: str, wsi: bool, microns_per_pixel: float | None,
    spot_diameter_um: float | None, require_metadata: bool,
) -> dict[str, Any]:  # fmt: skip
    """The entry ``uns["spatial"][sample_id]``: images, scale factors (µm/px, spot diameter) and metadata."""
    hest_lib = adata.uns.get("spatial", {}).get(HEST_LIBRARY, {})
    meta: dict[str, Any] | None = None
    scalefactors: dict[str, float] = {}
    metadata: dict[str, Any] = {"dataset": "hest", "section": sample.sample_id, "st_path": str(sample.st.resolve())}
    if sample.metadata is not None:
        meta = _read_metadata(sample.metadata)
        mpp, mpp_source = sample_mpp(meta, sample.metadata, microns_per_pixel)
        diameter, diameter_source = sample_spot_diameter(meta, sample.metadata, spot_diameter_um, xy, mpp)
        scalefactors.update(spot_diameter_fullres=diameter / mpp, microns_per_pixel=mpp)
        metadata.update(microns_per_pixel_source=mpp_source, spot_diameter_um=diameter,
                        spot_diameter_source=diameter_source, hest=meta)  # fmt: skip
        for key, name in (("fullres_px_width", "fullres_width"), ("fullres_px_height", "fullres_height")):
            if _number(meta.get(key)) is not None:
                metadata[name] = int(meta[key])
    elif require_metadata:
        raise FileNotFoundError(
            f"Sample {sample.sample_id!r} has no metadata JSON beside {sample.st} (`metadata/<id>.json`, or "
            "`metrics.json` in a sample folder); it gives the µm/px and the spot size. Download it with the sample "
            f"(HEST pattern `*{sample.sample_id}[_.]**`)."
        )
    else:  # read_stem: the features are given; the spot diameter in px is HEST's own value
        spot_px = _number(hest_lib.get("scalefactors", {}).get("spot_diameter_fullres"))
        if microns_per_pixel is not None:
            scalefactors["microns_per_pixel"], metadata["microns_per_pixel_source"] = microns_per_pixel, "argument"
            spot_px = spot_px if spot_diameter_um is None else spot_diameter_um / microns_per_pixel
        if spot_px is not None:
            scalefactors["spot_diameter_fullres"] = spot_px
        warnings.warn(
            f"Sample {sample.sample_id!r} has no metadata JSON beside {sample.st}: its µm/px and spot size in µm are "
            "unknown unless given. Add `metadata/<id>.json` from HEST-1k, or pass `microns_per_pixel=`.",
            UserWarning,
            stacklevel=5,  # _library < read_sample < read_samples < read_stem < the caller
        )
    shown = _display_image(sample, hest_lib, meta, image)
    if shown:
        scalefactors["tissue_hires_scalef"] = shown["tissue_hires_scalef"]
    if wsi and sample.wsi is not None:
        metadata["source_image_path"] = str(sample.wsi.resolve())  # read lazily, tile by tile, by hs.pp
    if sample.patches is not None:
        metadata["hest_patches_path"] = str(sample.patches.resolve())
    return {**({"images": shown["images"]} if shown else {}), "scalefactors": scalefactors, "metadata": metadata}


def read_sample(sample: HestSample, **options: Any) -> AnnData:
    """One HEST sample as an AnnData (Visium convention); ``options`` as for :func:`_library`."""
    import anndata as ad
    from scipy import sparse

    src = ad.read_h5ad(sample.st)
    xy = _spot_positions(src, sample.st)
    x = sparse.csr_matrix(src.X, dtype=np.float32)  # raw counts; HINGE.setup_anndata checks they are integers
    obs = src.obs.copy()
    obs["barcode"] = src.obs_names.astype(str)
    obs.index = pd.Index(f"{sample.sample_id}_" + obs["barcode"], name=None)
    obs["section"] = pd.Categorical([sample.sample_id] * len(obs))
    adata = ad.AnnData(x, obs=obs, var=src.var.copy())
    adata.var_names = adata.var_names.astype(str)
    adata.var_names_make_unique()
    adata.obsm["spatial"] = xy
    adata.uns["spatial"] = {sample.sample_id: _library(sample, src, xy, **options)}
    return adata


def read_hest(
    path: str | os.PathLike,
    ids: str | Sequence[str] | None = None,
    *,
    image: Literal["embedded", "thumbnail", "none"] = "embedded",
    wsi: bool = True,
    microns_per_pixel: float | Mapping[str, float] | None = None,
    spot_diameter_um: float | Mapping[str, float] | None = None,
) -> AnnData:
    """Read HEST-1k samples :cite:p:`Jaume2024` (expression, spots, µm/px, images) into one AnnData.

    Nothing of a whole-slide image is read: HEST's WSIs are pyramidal TIFFs of up to ~50,000 px a side, so their path
    is recorded and :func:`hinge_sc.pp.histology_features` reads the patches it needs lazily, tile by tile. The
    display image kept in ``uns`` is HEST's own small one (at most 1,000 px, embedded in the h5ad) or its thumbnail.
    HEST's pre-extracted patches are not loaded either (about 150 kB per spot): their path is recorded, and
    :func:`read_hest_patches` reads them on demand.

    Parameters
    ----------
    path
        A HEST-1k folder (``st/``, ``metadata/``, ``wsis/``, ``patches/``, ``thumbnails/`` …, as laid out by
        ``huggingface_hub.snapshot_download("MahmoodLab/hest")``), or one sample folder written by HEST's
        ``HESTData.save`` (``aligned_adata.h5ad``, ``metrics.json``, ``aligned_fullres_HE.tif``); the sample id of a
        sample folder is ``ids`` or the folder's name.
    ids
        One sample id (e.g. ``"TENX95"``) or a list; default: every ``st/<id>.h5ad`` found, sorted.
    image
        The display image stored as ``images["hires"]``: ``"embedded"`` (HEST's ``downscaled_fullres`` in the h5ad),
        ``"thumbnail"`` (``thumbnails/<id>_downscaled_fullres.jpeg``) or ``"none"``.
    wsi
        Record ``wsis/<id>.tif`` (when present) as ``metadata["source_image_path"]``, the full-resolution image that
        :func:`hinge_sc.pp.extract_patches` cuts patches from; ``False``: patches come from the display image.
    microns_per_pixel
        µm per full-resolution px (a float, or a dict per sample id), overriding the metadata.
    spot_diameter_um
        Spot diameter in µm (a float, or a dict per sample id), overriding the metadata. Default: the metadata's
        ``spot_diameter``, else 55 µm (Visium) or 100 µm (Spatial Transcriptomics); for Xenium and Visium HD, whose
        spots HEST pools into abutting squares (its metadata records no size, resp. the 2 µm raw bins), the side of
        the squares, measured as the spots' pitch.

    Returns
    -------
    AnnData
        Every spot of each h5ad in file order, samples in the order of ``ids``:

        - ``X``: CSR float32 raw counts, the genes shared by all samples (the number dropped is logged);
        - ``obs_names`` ``f"{id}_{barcode}"``; ``obs``: HEST's columns (``in_tissue``, ``array_row``, ``array_col``,
          ``pxl_col_in_fullres``, ``pxl_row_in_fullres``, QC), ``barcode`` (HEST's ``obs_names``, the key of the
          patch file) and ``section`` (the sample id, categorical);
        - ``obsm["spatial"]``: (n_spots, 2) float, spot centres (x, y) in full-resolution px;
        - ``uns["spatial"][id]``: ``images["hires"]`` (unless ``image="none"``); ``scalefactors``:
          ``microns_per_pixel`` (µm/px), ``spot_diameter_fullres`` (px = spot µm / µm per px),
          ``tissue_hires_scalef`` (hires px per full-resolution px); ``metadata``: ``microns_per_pixel_source``
          (``"hest_pixel_size_um_estimated"``, ``"hest_pixel_size_um_embedded"`` or ``"argument"``),
          ``spot_diameter_um`` and ``spot_diameter_source`` (``"hest_spot_diameter"``, ``"st_technology_default"``,
          ``"pooled_bin_pitch"`` or ``"argument"``), ``fullres_width`` / ``fullres_height`` (px),
          ``source_image_path`` (the WSI), ``hest_patches_path``, ``st_path``, ``hest`` (the metadata JSON as is).

    Raises
    ------
    FileNotFoundError
        ``path`` is not a HEST folder, or a sample has no metadata JSON, or ``image="thumbnail"`` and no thumbnail.
    ValueError
        An id is not found (the message lists those available); the metadata gives no µm/px, or no spot diameter
        for a technology without a standard one.
    KeyError
        The h5ad has no spot centres, or ``image="embedded"`` and it has no embedded image.

    Examples
    --------
    >>> adata = hs.io.read_hest("hest_data", ["SPA119", "SPA120"])
    >>> hs.pp.histology_features(adata, encoder=["uni", "conch"])   # patches read lazily from wsis/<id>.tif
    >>> barcodes, coords, patches = hs.io.read_hest_patches("hest_data", "SPA119")
    """
    samples = hest_samples(path, ids)
    adatas = read_samples(samples, image=image, wsi=wsi, microns_per_pixel=microns_per_pixel,
                          spot_diameter_um=spot_diameter_um, require_metadata=True)  # fmt: skip
    return concat_samples(adatas, [s.sample_id for s in samples])


def read_samples(
    samples: Sequence[HestSample], *, image: str, wsi: bool, microns_per_pixel: float | Mapping[str, float] | None,
    spot_diameter_um: float | Mapping[str, float] | None, require_metadata: bool,
) -> list[AnnData]:  # fmt: skip
    """Each sample as an AnnData, after checking the options shared by :func:`read_hest` and ``read_stem``."""
    if image not in IMAGE_CHOICES:
        raise ValueError(f"`image={image!r}`: expected one of {IMAGE_CHOICES}.")
    adatas = []
    for s in samples:  # a loop, not a comprehension: the warnings' stacklevel points at the caller of read_*
        mpp = per_sample(microns_per_pixel, s.sample_id, argument="microns_per_pixel")
        spot_um = per_sample(spot_diameter_um, s.sample_id, argument="spot_diameter_um")
        adatas.append(read_sample(s, image=image, wsi=wsi, require_metadata=require_metadata,
                                  microns_per_pixel=mpp, spot_diameter_um=spot_um))  # fmt: skip
    return adatas


def concat_samples(adatas: Sequence[AnnData], ids: Sequence[str]) -> AnnData:
    """Stack samples: the genes shared by all, ``obs["section"]`` categorical in ``ids`` order, every library."""
    import anndata as ad

    if len(adatas) == 1:
        adata = adatas[0]
    else:
        n_union = len(set().union(*(a.var_names for a in adatas)))
        adata = ad.concat(adatas, join="inner", merge="same")
        if n_union > adata.n_vars:
            logger.info("Kept %d genes shared by all %d samples; dropped %d.", adata.n_vars, len(adatas),
                        n_union - adata.n_vars)  # fmt: skip
        adata.uns["spatial"] = {k: v for a in adatas for k, v in a.uns["spatial"].items()}
    adata.obs["section"] = pd.Categorical(adata.obs["section"].astype(str), categories=list(ids))
    logger.info("Read %d spots × %d genes from %d HEST samples.", adata.n_obs, adata.n_vars, len(ids))
    return adata


def read_hest_patches(
    path: str | os.PathLike, sample_id: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read the patches HEST extracted around the spots of one sample (``patches/<id>.h5``).

    Parameters
    ----------
    path
        A HEST-1k folder (with ``sample_id``), one sample folder (``patches.h5``) or the ``.h5`` file itself.
    sample_id
        The sample, e.g. ``"TENX95"``; needed for a HEST-1k folder.

    Returns
    -------
    barcodes
        (N,) str, HEST's spot barcodes: ``obs["barcode"]`` of :func:`read_hest` (N may be below the number of spots:
        HEST drops spots off the tissue or the slide).
    coords
        (N, 2) int, the top-left corner (x, y) of each patch in full-resolution px.
    images
        (N, H, W, 3) uint8 patches; in HEST-1k 224 × 224 px at 0.5 µm/px (112 µm), centred on the spot.

    Raises
    ------
    FileNotFoundError
        No patch file at the expected path.
    ValueError
        A dataset (``img``, ``coords``, ``barcode``) is missing or has the wrong shape.

    Examples
    --------
    >>> barcodes, coords, patches = hs.io.read_hest_patches("hest_data", "TENX95")
    >>> adata[adata.obs["barcode"].isin(barcodes)]   # the spots with a patch
    """
    import h5py

    root = Path(path)
    if root.is_file():
        file = root
    elif (root / "patches").is_dir() or (root / "st").is_dir():
        if sample_id is None:
            raise ValueError(f"`path={str(root)!r}` is a HEST-1k folder: pass `sample_id=`, e.g. 'TENX95'.")
        file = root / "patches" / f"{sample_id}.h5"
    else:
        file = root / "patches.h5"
    if not file.is_file():
        raise FileNotFoundError(f"No HEST patch file at {file}; download `patches/<id>.h5` of the sample from HEST-1k.")
    with h5py.File(file, "r") as f:
        if missing := [k for k in ("img", "coords", "barcode") if k not in f]:
            raise ValueError(f"{file} has no dataset {missing}; expected HEST's `img`, `coords` and `barcode`.")
        shape = f["img"].shape
        if len(shape) != 4 or shape[-1] != 3 or f["coords"].shape != (shape[0], 2) or len(f["barcode"]) != shape[0]:
            raise ValueError(
                f"{file}: expected `img` (N, H, W, 3), `coords` (N, 2) and `barcode` (N,); found {shape}, "
                f"{f['coords'].shape} and {f['barcode'].shape}."
            )
        check_allocation(float(np.prod(shape)), what=f"The {shape[0]:,} patches of {file} ({shape})",
                         fix="Read them in slices with h5py (`f['img'][i:j]`) instead.")  # fmt: skip
        images = np.asarray(f["img"][:], dtype=np.uint8)
        coords = np.asarray(f["coords"][:]).astype(np.int64)
        raw = np.asarray(f["barcode"][:]).reshape(-1)
    barcodes = np.array([b.decode() if isinstance(b, bytes) else str(b) for b in raw])
    logger.info("Read %d HEST patches of %d × %d px from %s.", *shape[:3], file)
    return barcodes, coords, images
