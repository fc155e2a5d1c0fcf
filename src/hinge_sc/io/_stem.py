"""The data folder of Stem :cite:p:`Zhu2025`, read with its per-spot foundation-model features.

Layout as written by Stem's ``dataset_preprocess.py`` and read by its ``stem_train.py`` (``assemble_dataset``) and
``stem_sample.py`` (SichenZhu/Stem, read in its copies sidharrth2002/Stem and wenwenmin/HisDiff ``baselines/Stem``):
a HEST-1k folder of one dataset (``st/<slide>.h5ad``, ``wsis/<slide>.tif``, ``metadata/<slide>.json``) plus
``processed_data/`` with

- ``1spot_uni_ebd/<slide>_uni.pt`` and ``1spot_conch_ebd/<slide>_conch.pt``: ``torch.save`` of one float tensor
  (n_spots, 1024) resp. (n_spots, 512), row *i* the embedding of the patch centred on ``obsm["spatial"][i]`` of
  ``st/<slide>.h5ad`` (every spot, in file order; side max(224 px, HEST's ``spot_diameter_fullres``), resized to
  224 px for UNI and 256 px for CONCH). Stem concatenates UNI then CONCH (1536 features), the features of the HINGE
  paper :cite:p:`Fang2026` too;
- ``1spot_<enc>_ebd_aug/<slide>_<enc>_aug.pt``: (n_spots, 7, D), the embeddings of the patch transformed by PIL's
  ``Image.transpose(k)`` for k = 0 … 6 (the 7 non-identity dihedral views);
- ``selected_gene_list.txt`` (one gene per line) and ``all_slide_lst.txt`` (one slide id per line).

The ``.pt`` files are read with ``torch.load(..., weights_only=True)``: a file that would unpickle any object other
than tensors and plain containers is refused before anything in it runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hinge_sc._files import load_tensors
from hinge_sc._validators import check_genes, check_key_added, check_key_free
from hinge_sc.pp._features import _write as write_features

from ._hest import concat_samples, hest_samples, read_samples

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Folder names of Stem's embeddings → this package's encoder names (:data:`hinge_sc.pp.ENCODERS`).
STEM_ENCODERS = {"uni": "uni", "conch": "conch", "hopt0": "h-optimus-0", "virchow2": "virchow2"}
#: View index (into the ``VIEW_NAMES`` of :func:`hinge_sc.pp.histology_features`) of PIL's ``Image.transpose(k)``,
#: k = 0 … 6, the views of Stem's ``_aug`` files: FLIP_LEFT_RIGHT, FLIP_TOP_BOTTOM, ROTATE_90, ROTATE_180, ROTATE_270
#: (counter-clockwise), TRANSPOSE, TRANSVERSE.
PIL_TRANSPOSE_TO_VIEW = (4, 5, 1, 2, 3, 6, 7)
GENE_LIST_FILE = "selected_gene_list.txt"
SLIDE_LIST_FILE = "all_slide_lst.txt"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _lines(file: Path) -> list[str]:
    """Non-empty stripped lines of a text file (as Stem's ``np.genfromtxt(file, dtype=str)``)."""
    return [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]


def _gene_list(processed: Path, genes: str | os.PathLike | Sequence[str] | None) -> tuple[list[str] | None, str | None]:
    """The selected genes and the file they come from (``None``, ``None`` when there is no list)."""
    if genes is None:
        default = processed / GENE_LIST_FILE
        return (_lines(default), str(default)) if default.is_file() else (None, None)
    if isinstance(genes, (str, os.PathLike)):
        for file in (Path(genes), processed / genes):
            if file.is_file():
                return _lines(file), str(file)
        raise FileNotFoundError(
            f"`genes={str(genes)!r}`: no such gene list (looked at {Path(genes)} and {processed / genes}); pass a text "
            "file with one gene per line, a list of genes, or `genes=None`."
        )
    listed = list(genes)
    if not listed or not all(isinstance(g, str) for g in listed):
        raise TypeError(f"`genes` must be a file or a non-empty list of gene names (strings), found {genes!r}.")
    return listed, None


def _embedding_file(processed: Path, encoder: str, slide: str, *, aug: bool) -> Path:
    """``1spot_<enc>_ebd[_aug]/<slide>_<enc>[_aug].pt``, else the only ``<slide>_*.pt`` of that folder."""
    suffix = "_aug" if aug else ""
    folder = processed / f"1spot_{encoder}_ebd{suffix}"
    exact = folder / f"{slide}_{encoder}{suffix}.pt"
    if exact.is_file():
        return exact
    candidates = sorted(folder.glob(f"{slide}_*.pt")) if folder.is_dir() else []
    if len(candidates) == 1:
        logger.info("Slide %s: reading %s (not named %s).", slide, candidates[0], exact.name)
        return candidates[0]
    found = f"found {[c.name for c in candidates]}" if candidates else "found none"
    raise FileNotFoundError(
        f"No {encoder} embeddings of slide {slide!r}: expected {exact} ({found}). Run Stem's preprocessing for this "
        "slide, or leave it out of `slides`."
    )


def _load_embeddings(file: Path, *, n_spots: int, ndim: int, views: int | None = None) -> np.ndarray:
    """The float32 array of a Stem ``.pt`` file, checked against the slide's number of spots."""
    import torch

    obj = load_tensors(file, what="Stem embedding file (one tensor saved with `torch.save`)")
    if not isinstance(obj, torch.Tensor):
        kind = f"a dict with keys {sorted(map(str, obj))[:10]}" if isinstance(obj, dict) else type(obj).__name__
        raise TypeError(
            f"{file}: expected one tensor of per-spot embeddings, as Stem saves them (`torch.save(tensor)`); found "
            f"{kind}. Save the (n_spots, D) tensor itself."
        )
    expected = "(n_spots, D)" if ndim == 2 else f"(n_spots, {views}, D)"
    if obj.ndim != ndim or (views is not None and obj.shape[1] != views) or obj.shape[0] != n_spots:
        raise ValueError(
            f"{file}: shape {tuple(obj.shape)}, expected {expected} with one row per spot of the slide's h5ad "
            f"({n_spots} spots; the file has {obj.shape[0] if obj.ndim else 0} rows). The embeddings must come from "
            "this `st/<slide>.h5ad`, every spot in file order."
        )
    if not obj.is_floating_point():
        raise TypeError(f"{file}: embeddings must be floating point, found dtype {obj.dtype}.")
    return obj.detach().to(torch.float32).numpy()


def _stem_patch_px(spot_diameter_px: float | None) -> int | None:
    """Side in full-resolution px of Stem's patch: 224 px, or the spot diameter when it is larger."""
    if spot_diameter_px is None:
        return None
    return 224 if spot_diameter_px < 224 else 2 * int(spot_diameter_px // 2)


def read_stem(
    path: str | os.PathLike,
    slides: str | Sequence[str] | None = None,
    *,
    encoder: str | Sequence[str] = "uni",
    genes: str | os.PathLike | Sequence[str] | None = None,
    views: bool = False,
    image: Literal["embedded", "thumbnail", "none"] = "embedded",
    microns_per_pixel: float | Mapping[str, float] | None = None,
    spot_diameter_um: float | Mapping[str, float] | None = None,
    key_added: str | None = None,
) -> AnnData:
    """Read a Stem data folder: HEST samples with the per-spot foundation-model embeddings of the authors' code.

    The features computed by Stem's preprocessing :cite:p:`Zhu2025` (UNI and CONCH, as in :cite:p:`Fang2026`)
    become ``obsm[key_added]``, ready for ``hs.HINGE.setup_anndata(adata, features_key=key_added)``; the spots are
    read as by :func:`hinge_sc.io.read_hest`, except that the metadata JSON may be missing (µm/px is then unknown,
    with a warning). Nothing is recomputed: the features stay those of the authors' patches.

    Parameters
    ----------
    path
        The dataset folder (``hest1k_datasets/<name>/``) with ``st/`` and ``processed_data/``.
    slides
        Slide id(s); default: those of ``processed_data/all_slide_lst.txt``, else every ``st/<slide>.h5ad``.
    encoder
        ``"uni"`` (1024 features), ``"conch"`` (512) or another embedding folder ``1spot_<encoder>_ebd`` (e.g.
        ``"hopt0"``, ``"virchow2"``); a list is concatenated in its order (Stem and HINGE: ``["uni", "conch"]``).
    genes
        The selected genes: a text file (one gene per line; a name is looked up in ``processed_data/``), a list, or
        ``None`` for ``processed_data/selected_gene_list.txt`` when it exists.
    views
        Also read ``1spot_<encoder>_ebd_aug/<slide>_<encoder>_aug.pt`` into ``obsm[key_added + "_views"]``, the 8
        dihedral views in the order of :func:`hinge_sc.pp.histology_features` (identity = ``obsm[key_added]``, rot90,
        rot180, rot270, flip_lr, flip_ud, transpose, anti_transpose).
    image, microns_per_pixel, spot_diameter_um
        As for :func:`hinge_sc.io.read_hest`.
    key_added
        ``obsm`` key of the features; default ``"X_" + "_".join(encoder)``, e.g. ``"X_uni"``, ``"X_uni_conch"``.

    Returns
    -------
    AnnData
        As :func:`hinge_sc.io.read_hest` returns it, plus

        - ``obsm[key_added]``: (n_spots, D) float32, the embeddings of each spot;
        - ``obsm[key_added + "_views"]`` (``views=True``): (n_spots, 8, D) float32;
        - ``uns[key_added]["params"]``: ``encoder`` (``"uni"``, ``"conch"``, ``"uni+conch"`` … as named by
          :func:`hinge_sc.pp.histology_features`), ``n_features``, ``views``, ``source="stem"``, ``files`` (slide →
          the ``.pt`` files read), ``microns_per_pixel`` and its source per slide (when known), ``patch_px``
          (Stem's patch side in full-resolution px) and ``patch_um`` per slide;
        - ``var["stem_selected"]`` (bool) and ``uns["stem"]`` (``selected_genes`` in file order, ``gene_list_path``,
          ``slides``), when there is a gene list.

    Raises
    ------
    FileNotFoundError
        No ``st/`` or ``processed_data/`` folder, a gene list or an embedding file is missing.
    ValueError
        An embedding file does not have one row per spot (the message gives both counts) or has the wrong shape, or
        holds Python objects other than tensors (refused, never unpickled); a slide id is not found.
    TypeError
        An embedding file holds no tensor, or ``genes`` / ``encoder`` have the wrong type.
    KeyError
        A selected gene is not in the h5ad, or ``obsm[key_added]`` would be overwritten.

    Examples
    --------
    >>> adata = hs.io.read_stem("hest1k_datasets/her2st", encoder=["uni", "conch"], views=True)
    >>> adata = adata[:, adata.var["stem_selected"]].copy()
    >>> hs.HINGE.setup_anndata(adata, features_key="X_uni_conch")   # views_key="auto" finds "X_uni_conch_views"
    """
    root = Path(path)
    processed = root / "processed_data"
    if not (root / "st").is_dir() or not processed.is_dir():
        raise FileNotFoundError(
            f"`path={str(path)!r}`: expected Stem's dataset folder with `st/` (HEST h5ad files) and `processed_data/` "
            "(embeddings, gene list); run Stem's preprocessing first."
        )
    encoders = [encoder] if isinstance(encoder, str) else list(encoder)
    valid = all(isinstance(e, str) and _NAME.match(e) for e in encoders)
    if not encoders or not valid or len(set(encoders)) < len(encoders):
        raise TypeError(f"`encoder` must be a name such as 'uni', or a list of distinct names; found {encoder!r}.")
    key_added = key_added or "X_" + "_".join(encoders)
    check_key_added(key_added)
    if slides is None and (processed / SLIDE_LIST_FILE).is_file():
        slides = _lines(processed / SLIDE_LIST_FILE)
    selected, gene_file = _gene_list(processed, genes)
    samples = hest_samples(root, slides, argument="slides")
    adatas = read_samples(samples, image=image, wsi=True, microns_per_pixel=microns_per_pixel,
                          spot_diameter_um=spot_diameter_um, require_metadata=False)  # fmt: skip
    features, view_features, files = _read_features(processed, adatas, encoders, views=views)
    adata = concat_samples(adatas, [s.sample_id for s in samples])
    check_key_free(adata.obsm, key_added, where="adata.obsm", overwrite=False)
    if view_features is not None and not np.allclose(view_features[:, 0], features):
        raise ValueError(
            f"The first view of the Stem view embeddings is not the identity embedding of the same spots ({processed})."
        )
    stacked = features[:, None, :] if view_features is None else view_features
    params = _params(adata, encoders, features.shape[1], files, views=views)
    fingerprint = hashlib.sha256(json.dumps(params["files"], sort_keys=True).encode()).hexdigest()[:16]
    write_features(adata, stacked, params, fingerprint, key_added=key_added, views=stacked.shape[1], overwrite=False)
    if selected is not None:
        check_genes(selected, adata.var_names, argument="genes", where="the genes of the h5ad files")
        adata.var["stem_selected"] = adata.var_names.isin(selected)
        adata.uns["stem"] = {"selected_genes": selected, "gene_list_path": gene_file or "argument",
                             "slides": [s.sample_id for s in samples]}  # fmt: skip
        logger.info("Marked %d selected genes in `var['stem_selected']`.", len(selected))
    return adata


def _read_features(
    processed: Path, adatas: Sequence[AnnData], encoders: Sequence[str], *, views: bool
) -> tuple[np.ndarray, np.ndarray | None, dict[str, list[str]]]:
    """Per slide, every encoder's (n, D) embeddings (and (n, 8, D) views), concatenated along the features."""
    from hinge_sc.pp._features import VIEW_NAMES

    rows, view_rows, files = [], [], {}
    for adata in adatas:
        slide = next(iter(adata.uns["spatial"]))
        parts, view_parts, files[slide] = [], [], []
        for enc in encoders:
            file = _embedding_file(processed, enc, slide, aug=False)
            base = _load_embeddings(file, n_spots=adata.n_obs, ndim=2)
            parts.append(base)
            files[slide].append(str(file))
            if views:
                aug_file = _embedding_file(processed, enc, slide, aug=True)
                aug = _load_embeddings(aug_file, n_spots=adata.n_obs, ndim=3, views=len(PIL_TRANSPOSE_TO_VIEW))
                if aug.shape[2] != base.shape[1]:
                    raise ValueError(
                        f"{aug_file} has {aug.shape[2]} features per view but {file} has {base.shape[1]}; both must "
                        "come from one encoder."
                    )
                stacked = np.empty((adata.n_obs, len(VIEW_NAMES), base.shape[1]), dtype=np.float32)
                stacked[:, 0] = base
                stacked[:, list(PIL_TRANSPOSE_TO_VIEW)] = aug
                view_parts.append(stacked)
                files[slide].append(str(aug_file))
        rows.append(np.concatenate(parts, axis=1))
        if views:
            view_rows.append(np.concatenate(view_parts, axis=2))
    return np.concatenate(rows), np.concatenate(view_rows) if views else None, files


def _params(adata: AnnData, encoders: Sequence[str], n_features: int, files: Mapping, *, views: bool) -> dict[str, Any]:
    """The provenance record ``uns[key_added]["params"]``, with the keys that :mod:`hinge_sc.pp` features carry."""
    from hinge_sc.pp._features import VIEW_NAMES

    params: dict[str, Any] = {
        "encoder": "+".join(STEM_ENCODERS.get(e, e) for e in encoders),
        "n_features": int(n_features),
        "views": len(VIEW_NAMES) if views else 1,
        "view_names": list(VIEW_NAMES if views else VIEW_NAMES[:1]),
        "context": "none",
        "source": "stem",
        "files": {k: list(v) for k, v in files.items()},
    }
    mpp, mpp_source, patch_px, patch_um = {}, {}, {}, {}
    for slide, lib in adata.uns["spatial"].items():
        sf, meta = lib.get("scalefactors", {}), lib.get("metadata", {})
        side = _stem_patch_px(sf.get("spot_diameter_fullres"))
        if side is not None:
            patch_px[slide] = side
        if "microns_per_pixel" in sf:
            mpp[slide], mpp_source[slide] = float(sf["microns_per_pixel"]), meta.get("microns_per_pixel_source")
            if side is not None:
                patch_um[slide] = side * mpp[slide]
    params.update(microns_per_pixel=mpp, microns_per_pixel_source=mpp_source, patch_px=patch_px, patch_um=patch_um)
    return params
