from __future__ import annotations

import json
import logging
import os
import warnings
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse
from tqdm.auto import tqdm

from .._constants import DATA_DIR_ENV

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Public origin (Andersson et al., Nat Commun 2021): raw files of the GitHub repository.
_REPO = "almaan/her2st"
_BASE_URL = f"https://github.com/{_REPO}/raw/master/"
#: The 36 public sections (patients A–H; patients A and B have 6 sections, C and D 6, E–H 3).
_PUBLIC_SECTIONS = tuple(
    [f"{p}{i}" for p in "ABCD" for i in range(1, 7)] + [f"{p}{i}" for p in "EFGH" for i in range(1, 4)]
)
#: Sections with pathologist region labels upstream (``data/ST-pat/lbl``).
_LABELLED = ("A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1")
#: Image file names that differ per section; these were checked against the repository listing.
#: Others are looked up at download time through the GitHub contents API.
_IMAGE_FILES = {
    "C2": "5714_HE_BT_C2.jpg",
    "C3": "5714_HE_BT_D1.jpg",
    "C4": "5714_HE_BT_D2.jpg",
    "C5": "5714_HE_BT_E1.jpg",
    "C6": "5714_HE_BT_E2.jpg",
}
#: Sections whose only public image is the her2st web viewer's display image: (file in ``images/``, path at the
#: public origin, scale of the display image relative to the original scan's pixels, i.e. to ``pixel_x/pixel_y``).
#: The display image is downscaled, background-masked and contrast-enhanced (data README of the project).
_DISPLAY_IMAGES = {"A1": ("A1.png", "app/www/imgs/A1_HE_image_dark.png", 0.2876)}
#: Geometry of the legacy Spatial Transcriptomics array.
SPOT_DISTANCE_UM = 200.0
SPOT_DIAMETER_UM = 100.0
HIRES_MAX_SIDE = 2000


def _local_dir(path: str | os.PathLike | None) -> Path | None:
    if path is not None:
        return Path(path)
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) / "her2st" if env else None


def her2st_sections(path: str | os.PathLike | None = None) -> pd.DataFrame:
    """List the HER2ST sections available in ``path`` (or at the public origin).

    Parameters
    ----------
    path
        Folder with ``counts/``, ``spots/``, ``images/`` and ``labels/``. Defaults to
        ``$HINGE_SC_DATA_DIR/her2st`` if that variable is set, else the public origin is described.

    Returns
    -------
    DataFrame indexed by section id with columns ``patient``, ``has_image`` and ``has_labels`` (bool).
    For the public origin, ``has_image`` is true only where the image file name is known offline.
    """
    root = _local_dir(path)
    if root is None:
        sections = list(_PUBLIC_SECTIONS)
        has_image = [s in _IMAGE_FILES or s in _DISPLAY_IMAGES for s in sections]
        has_labels = [s in _LABELLED for s in sections]
    else:
        if not (root / "counts").is_dir():
            raise FileNotFoundError(f"`path={str(root)!r}` has no `counts/` folder; point `path` to the her2st folder.")
        sections = sorted(p.name.removesuffix(".tsv.gz") for p in (root / "counts").glob("*.tsv.gz"))
        has_image = [_fetch(s, "image", root) is not None for s in sections]
        has_labels = [(root / "labels" / f"{s}_labeled_coordinates.tsv").is_file() for s in sections]
    return pd.DataFrame(
        {"patient": [s[0] for s in sections], "has_image": has_image, "has_labels": has_labels},
        index=pd.Index(sections, name="section"),
    )


@cache
def _image_name(section: str) -> str | None:
    if section in _IMAGE_FILES:
        return _IMAGE_FILES[section]
    from urllib.request import urlopen

    url = f"https://api.github.com/repos/{_REPO}/contents/data/ST-imgs/{section[0]}/{section}"
    try:
        with urlopen(url, timeout=30) as resp:  # noqa: S310 - fixed https URL
            listing = json.load(resp)
    except OSError as err:
        logger.info("Could not list the image folder of %s: %s", section, err)
        return None
    names = [e["name"] for e in listing if e.get("name", "").lower().endswith(".jpg")]
    return names[0] if len(names) == 1 else None


def _fetch(section: str, kind: str, root: Path | None) -> Path | None:
    """Local path of one file of ``section``; download it when ``root`` is None. None if absent."""
    if root is not None:
        local = {
            "counts": root / "counts" / f"{section}.tsv.gz",
            "spots": root / "spots" / f"{section}_selection.tsv",
            "image": root / "images" / (_DISPLAY_IMAGES[section][0] if section in _DISPLAY_IMAGES else f"{section}.jpg"),
            "labels": root / "labels" / f"{section}_labeled_coordinates.tsv",
        }[kind]
        return local if local.is_file() else None
    import pooch

    if kind == "labels" and section not in _LABELLED:
        return None
    if kind == "image" and section in _DISPLAY_IMAGES:
        name, remote, _ = _DISPLAY_IMAGES[section]
        cache_dir = Path(pooch.os_cache("hinge_sc")) / "her2st" / kind
        return Path(pooch.retrieve(_BASE_URL + remote, known_hash=None, fname=name, path=cache_dir))
    if kind == "image":
        name = _image_name(section)
        if name is None:
            return None
        remote, fname = f"data/ST-imgs/{section[0]}/{section}/{name}", f"{section}.jpg"
    else:
        remote = {
            "counts": f"data/ST-cnts/{section}.tsv.gz",
            "spots": f"data/ST-spotfiles/{section}_selection.tsv",
            "labels": f"data/ST-pat/lbl/{section}_labeled_coordinates.tsv",
        }[kind]
        fname = Path(remote).name
    cache_dir = Path(pooch.os_cache("hinge_sc")) / "her2st" / kind
    # known_hash=None: the upstream repository publishes no checksums and we do not invent any.
    return Path(pooch.retrieve(_BASE_URL + remote, known_hash=None, fname=fname, path=cache_dir))


def _estimate_mpp(spots: pd.DataFrame) -> float:
    """µm per full-resolution pixel from spots adjacent on the array (200 µm apart)."""
    pos = {(x, y): i for i, (x, y) in enumerate(zip(spots["x"], spots["y"], strict=True))}
    pix = spots[["pixel_x", "pixel_y"]].to_numpy(float)
    dists = [
        np.linalg.norm(pix[i] - pix[j])
        for (x, y), i in pos.items()
        for dx, dy in ((1, 0), (0, 1))
        if (j := pos.get((x + dx, y + dy))) is not None
    ]
    if not dists:
        raise ValueError("Cannot estimate µm/px: no two spots are adjacent on the array.")
    return SPOT_DISTANCE_UM / float(np.median(dists))


def _read_labels(file: Path) -> pd.Series:
    lab = pd.read_csv(file, sep="\t").dropna(subset=["x", "y"])
    ids = lab["x"].round().astype(int).astype(str) + "x" + lab["y"].round().astype(int).astype(str)
    return pd.Series(lab["label"].to_numpy(), index=ids)[lambda s: ~s.index.duplicated()]


def _read_display_image(file: Path, section: str, mpp: float) -> dict:
    """A display image at a known scale of the original scan: kept as the ``hires`` image with that scale factor.

    There is no full-resolution image, so patches are cut from this one (``tissue_hires_scalef`` maps the spots'
    full-resolution coordinates onto it); its µm/px is ``mpp / scale``.
    """
    from PIL import Image

    from hinge_sc.pp._image import pil_pixel_limit

    scale = _DISPLAY_IMAGES[section][2]
    with pil_pixel_limit(file), Image.open(file) as im:
        hires = np.asarray(im.convert("RGB"))
    return {
        "images": {"hires": hires},
        "scalefactors": {
            "tissue_hires_scalef": scale,
            "spot_diameter_fullres": SPOT_DIAMETER_UM / mpp,
            "microns_per_pixel": mpp,
        },
        "metadata": {
            "fullres_width": round(hires.shape[1] / scale),
            "fullres_height": round(hires.shape[0] / scale),
            "dataset": "her2st",
            "section": section,
            "image": f"display image of the her2st viewer ({_DISPLAY_IMAGES[section][1]}), downscaled {scale} from "
            f"the scan ({mpp / scale:.3g} µm/px), background masked, contrast-enhanced",
        },
    }


def _read_image(file: Path, section: str, mpp: float) -> dict:
    from PIL import Image

    from hinge_sc.pp._image import pil_pixel_limit

    if section in _DISPLAY_IMAGES:
        return _read_display_image(file, section, mpp)

    with pil_pixel_limit(file), Image.open(file) as im:  # whole-slide JPEGs are ~9,300 × 9,900 px
        full_w, full_h = im.size
        scale = min(1.0, HIRES_MAX_SIDE / max(full_w, full_h))
        size = (round(full_w * scale), round(full_h * scale))
        im.draft("RGB", size)  # JPEG DCT scaling: decode at 1/2, 1/4 or 1/8 resolution
        hires = np.asarray(im.convert("RGB").resize(size, Image.Resampling.LANCZOS))
    return {
        "images": {"hires": hires},
        "scalefactors": {
            "tissue_hires_scalef": size[0] / full_w,
            "spot_diameter_fullres": SPOT_DIAMETER_UM / mpp,
            "microns_per_pixel": mpp,
        },
        "metadata": {
            "source_image_path": str(Path(file).resolve()),
            "fullres_width": full_w,
            "fullres_height": full_h,
            "dataset": "her2st",
            "section": section,
        },
    }


def _read_section(section: str, root: Path | None, only_selected: bool) -> tuple[pd.DataFrame, pd.DataFrame]:
    counts_file, spots_file = _fetch(section, "counts", root), _fetch(section, "spots", root)
    if spots_file is None:
        raise FileNotFoundError(
            f"Section {section!r} has counts but no spot file `spots/{section}_selection.tsv` in `path`. "
            "Add the selection file (from `data/ST-spotfiles` of almaan/her2st) or drop the section from `sections`."
        )
    counts = pd.read_csv(counts_file, sep="\t", index_col=0)
    counts.index = counts.index.astype(str)
    spots = pd.read_csv(spots_file, sep="\t")
    # x, y are integers in the selection files; the count ids are f"{x}x{y}"
    spots.index = spots["x"].astype(int).astype(str) + "x" + spots["y"].astype(int).astype(str)
    mpp = _estimate_mpp(spots)
    if only_selected:
        spots = spots[spots["selected"] == 1]
    shared = counts.index.intersection(spots.index, sort=False)
    if len(shared) < len(counts):
        n_drop = len(counts) - len(shared)
        logger.info("%s: %d of %d count spots have no (selected) spot entry; dropped.", section, n_drop, len(counts))
    counts, spots = counts.loc[shared], spots.loc[shared]
    obs = pd.DataFrame(
        {
            "section": section,
            "array_x": spots["x"].to_numpy(int),
            "array_y": spots["y"].to_numpy(int),
            "selected": spots["selected"].to_numpy(int).astype(bool),
            "pixel_x": spots["pixel_x"].to_numpy(float),
            "pixel_y": spots["pixel_y"].to_numpy(float),
            "label": np.nan,
        },
        index=shared,
    )
    obs.attrs["mpp"] = mpp
    labels_file = _fetch(section, "labels", root)
    if labels_file is not None:
        obs["label"] = _read_labels(labels_file).reindex(shared).to_numpy()
    obs.index = f"{section}_" + obs.index
    counts.index = obs.index
    return counts, obs


def her2st(
    sections: Sequence[str] | None = None,
    *,
    path: str | os.PathLike | None = None,
    images: bool = True,
    only_selected: bool = True,
    show_progress_bar: bool = True,
) -> AnnData:
    """Load the HER2ST cohort (legacy Spatial Transcriptomics) from its original files.

    HER2-positive breast tumours of :cite:p:`Andersson2021`, the HER2ST benchmark of the HINGE paper.
    Reads ``counts/{section}.tsv.gz`` (spots × genes raw UMI counts), ``spots/{section}_selection.tsv``,
    ``images/{section}.jpg`` and ``labels/{section}_labeled_coordinates.tsv`` (pathologist regions). Section A1
    (patient A) has only the web viewer's display image, ``images/A1.png``: a 0.2876× downscaled, contrast-enhanced
    copy of its scan (≈ 3.18 µm/px), stored as the ``hires`` image with ``tissue_hires_scalef = 0.2876`` so that
    features, tiling and plots work unchanged (patches are cut from it; there is no full-resolution image).

    Parameters
    ----------
    sections
        Section ids such as ``["C2", "C3"]``. ``None`` loads every section whose count file exists in
        ``path`` (all 36 public sections when downloading).
    path
        Local folder laid out as above. Defaults to ``$HINGE_SC_DATA_DIR/her2st`` when that environment
        variable is set; otherwise the files are downloaded from the GitHub repository ``almaan/her2st``
        with :mod:`pooch` into its cache folder (no checksums are published upstream).
    images
        Load the H&E image of each section into ``uns["spatial"]``. A section without an image gives a
        :class:`UserWarning` and is loaded without it.
    only_selected
        Keep only the spots marked ``selected == 1`` (under tissue) in the selection file.
    show_progress_bar
        Show a progress bar over sections.

    Returns
    -------
    AnnData
        The sections, with

        - ``X``: CSR float32 raw UMI counts (spots × genes). Only the genes shared by **all** requested
          sections are kept (intersection); the number dropped is logged.
        - ``obs_names``: ``"{section}_{x}x{y}"``; ``obs``: ``section`` (categorical), ``array_x``,
          ``array_y`` (array coordinates, int), ``selected`` (bool), ``label`` (pathologist region,
          categorical, NaN where the section has no labels).
        - ``obsm["spatial"]``: (n_spots, 2) float, ``(pixel_x, pixel_y)`` in full-resolution image pixels.
        - ``uns["spatial"][section]`` (scanpy Visium convention, sections with images only):
          ``images["hires"]`` (uint8 RGB, longest side ≈ 2,000 px), ``scalefactors`` with
          ``tissue_hires_scalef`` (hires px / full-res px), ``spot_diameter_fullres`` (px, 100 µm) and
          ``microns_per_pixel`` (µm/px of the full-resolution image, estimated as 200 µm over the median
          pixel distance of array-adjacent spots), and ``metadata["source_image_path"]``, the
          full-resolution JPEG read by :func:`hinge_sc.pp.extract_patches`.
        - ``uns["her2st"]["microns_per_pixel"]``: the estimate for every section, with or without image.

    Raises
    ------
    ValueError
        If a section id is unknown.
    FileNotFoundError
        If a section has counts but no selection file, or ``path`` has no ``counts/`` folder.

    Examples
    --------
    >>> import hinge_sc as hs
    >>> adata = hs.datasets.her2st(["C2", "C3"])
    """
    import anndata as ad

    root = _local_dir(path)
    available = list(her2st_sections(root).index)
    if sections is None:
        sections = available
    sections = [sections] if isinstance(sections, str) else list(sections)
    unknown = [s for s in sections if s not in available]
    if unknown:
        raise ValueError(
            f"`sections` has unknown ids {unknown}; available in "
            f"{str(root) if root else 'the public origin'}: {', '.join(available)}."
        )
    if len(set(sections)) != len(sections):
        raise ValueError(f"`sections` has duplicates: {sections}.")

    frames, obs_list, spatial, mpps = [], [], {}, {}
    for section in tqdm(sections, desc="her2st sections", disable=not show_progress_bar):
        counts, obs = _read_section(section, root, only_selected)
        mpps[section] = obs.attrs["mpp"]
        frames.append(counts)
        obs_list.append(obs)
        if images:
            image_file = _fetch(section, "image", root)
            if image_file is None:
                warnings.warn(
                    f"Section {section!r} has no H&E image; loading it without one "
                    "(pass `images=False` to silence this).",
                    UserWarning,
                    stacklevel=2,
                )
            else:
                spatial[section] = _read_image(image_file, section, mpps[section])

    genes = frames[0].columns
    for frame in frames[1:]:
        genes = genes.intersection(frame.columns, sort=False)
    n_union = len(set().union(*(f.columns for f in frames)))
    if n_union > len(genes):
        n_drop = n_union - len(genes)
        logger.info("Kept %d genes shared by all %d sections; dropped %d.", len(genes), len(frames), n_drop)
    x = sparse.vstack([sparse.csr_matrix(f[genes].to_numpy(np.float32)) for f in frames], format="csr")
    obs = pd.concat(obs_list)
    obs["section"] = pd.Categorical(obs["section"], categories=sections)
    obs["label"] = obs["label"].astype("category")
    spatial_xy = obs[["pixel_x", "pixel_y"]].to_numpy(float)
    obs = obs.drop(columns=["pixel_x", "pixel_y"])
    adata = ad.AnnData(x, obs=obs, var=pd.DataFrame(index=pd.Index(genes.astype(str))))
    adata.obsm["spatial"] = spatial_xy
    adata.uns["spatial"] = spatial
    adata.uns["her2st"] = {"microns_per_pixel": mpps, "sections": sections}
    logger.info("Loaded %d spots × %d genes from %d HER2ST sections.", adata.n_obs, adata.n_vars, len(sections))
    return adata
