"""Generated expression as an AnnData of its own (spots × panel genes), ready for scanpy, squidpy, spatialdata-plot."""

from __future__ import annotations

import copy
import logging
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from hinge_sc._constants import GENERATED_KEY
from hinge_sc._validators import check_prediction_frame

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

logger = logging.getLogger(__name__)

#: What ``X`` and each layer / ``obsm`` entry of the result holds (recorded in ``uns["hinge_sc"]``).
_CONTENTS = {
    "X": "mean over the generated samples (model scale)",
    "std": "s.d. over the generated samples (model scale)",
    "samples": "generated samples, (n_spots, n_samples, n_genes) (model scale)",
    "counts": "measured raw counts of the panel genes",
}


def to_adata(
    data: AnnData | SpatialData,
    *,
    key: str = "hinge",
    table_key: str | None = None,
    layer: str | None = None,
    spatial_key: str = "spatial",
) -> AnnData:
    """Generated expression as a new AnnData: spots × panel genes, with the spots' metadata and images.

    Use it on the output of :func:`hinge_sc.tl.generate` (or of a :mod:`hinge_sc.benchmark` baseline) to run scanpy,
    squidpy or spatialdata-plot on generated expression, also for H&E-only slides that measure no genes.

    Parameters
    ----------
    data
        AnnData with ``obsm[key]`` (DataFrame, spots × genes), or a SpatialData object whose table holds it.
    key
        ``key_added`` of the generation.
    table_key
        SpatialData: the table with the spots (default: the one with ``obsm[key]``, or the only one).
    layer
        Layer of the source with the measured raw counts (default ``X``).
    spatial_key
        ``obsm`` key of the spot coordinates carried over.

    Returns
    -------
    AnnData
        A new AnnData (nothing of ``data`` is changed) with

        - ``X``: float32, spots × panel genes, the generated mean on the model scale (e.g. log2(count + 1);
          clipped at 0 unless the generation was run with ``clip=False``);
        - ``layers["std"]``: the s.d. over samples, when stored; ``obsm["samples"]``: ``(n_spots, S, n_genes)``
          samples, when stored (``save_samples=True``);
        - ``layers["counts"]``: the measured raw counts of the panel genes, when the source measures all of them;
          ``var["measured"]``: whether the source measures the gene;
        - ``obs``, ``obsm[spatial_key]`` (spot centres, px) and ``uns["spatial"]`` (images and scale factors, Visium
          layout; only the libraries, e.g. sections, whose spots are there) copied from the source, and
          ``uns["spatialdata_attrs"]`` for a SpatialData table;
        - ``uns["hinge_sc"]``: provenance: ``key``, ``scale``, what ``X`` and each layer hold, the generation's
          ``params`` (seed, steps, model settings, backbone checksum) and the hinge_sc version.

    Raises
    ------
    KeyError
        ``obsm[key]`` is missing (run :func:`hinge_sc.tl.generate` first), or ``layer`` is not a layer of the source.

    Examples
    --------
    >>> hs.tl.generate(model, adata_new)
    >>> gen = hs.tl.to_adata(adata_new)
    >>> sc.pp.pca(gen)
    >>> sq.pl.spatial_scatter(gen, color="ERBB2")
    """
    import anndata as ad

    from hinge_sc import __version__
    from hinge_sc.pp._spatialdata import resolve_table

    source = resolve_table(None, data, table_key, key=key, argument="data")
    mean = check_prediction_frame(source, key, argument="key")
    if layer is not None and layer not in source.layers:
        available = ", ".join(map(repr, source.layers.keys())) or "none"
        raise KeyError(
            f"`layer={layer!r}` is not in `adata.layers` (available: {available}). Pass the layer with the measured "
            "raw counts, or `layer=None` for `adata.X`."
        )
    genes = pd.Index(mean.columns.astype(str))
    out = ad.AnnData(
        X=mean.to_numpy(dtype=np.float32),
        obs=source.obs.copy(),
        var=pd.DataFrame({"measured": genes.isin(source.var_names)}, index=genes),
    )
    contents = {"X": _CONTENTS["X"]}
    std = source.obsm.get(f"{key}_std")
    if std is not None:
        out.layers["std"] = np.asarray(std, dtype=np.float32)
        contents["std"] = "layers: " + _CONTENTS["std"]
    samples = source.obsm.get(f"{key}_samples")
    if samples is not None:
        out.obsm["samples"] = np.asarray(samples, dtype=np.float32)
        contents["samples"] = "obsm: " + _CONTENTS["samples"]
    if bool(out.var["measured"].all()) and len(genes):
        counts = source[:, genes].X if layer is None else source[:, genes].layers[layer]
        out.layers["counts"] = sp.csr_matrix(counts) if sp.issparse(counts) else np.asarray(counts)
        contents["counts"] = "layers: " + _CONTENTS["counts"]
    elif out.var["measured"].any():
        logger.info(
            "The source measures %d of the %d panel genes; no `layers['counts']` written.",
            int(out.var["measured"].sum()),
            len(genes),
        )
    if spatial_key in source.obsm:
        out.obsm[spatial_key] = np.array(source.obsm[spatial_key], copy=True)
    if isinstance(source.uns.get("spatial"), dict):
        out.uns["spatial"] = copy.deepcopy(_present_libraries(source.obs, source.uns["spatial"]))
    if "spatialdata_attrs" in source.uns:
        out.uns["spatialdata_attrs"] = copy.deepcopy(source.uns["spatialdata_attrs"])
    params = source.uns.get(key, {}).get("params", {}) if isinstance(source.uns.get(key), dict) else {}
    out.uns[GENERATED_KEY] = {
        "key": key,
        "scale": params.get("target_scale", "unknown"),
        "contents": contents,
        "params": copy.deepcopy(dict(params)),
        "hinge_sc_version": __version__,
    }
    return out


def _present_libraries(obs: pd.DataFrame, spatial: dict[str, Any]) -> dict[str, Any]:
    """The libraries of ``uns["spatial"]`` whose spots are in ``obs`` (a subset keeps every section's image).

    A library is present when an ``obs`` column holds only library ids and names it; without such a column every
    library is kept. One library left lets squidpy plot without ``library_key``.
    """
    libraries = set(spatial)
    if len(libraries) < 2:
        return spatial
    for column in obs.columns:
        values = set(obs[column].astype(str).unique())
        if values and values <= libraries:
            return {k: v for k, v in spatial.items() if k in values}
    return spatial


def generated_table(table: AnnData, key: str) -> AnnData | None:
    """:func:`to_adata` of a SpatialData table as a table annotating the same shapes (spatialdata's ``TableModel``).

    Returns ``None`` (and logs why) when ``table`` annotates no element.
    """
    from spatialdata.models import TableModel

    attrs: Any = table.uns.get("spatialdata_attrs") or {}
    if attrs.get("region") is None:
        logger.info("The table annotates no shapes element (no `uns['spatialdata_attrs']`); no generated table.")
        return None
    gen = to_adata(table, key=key)
    gen.uns.pop("spatialdata_attrs", None)
    return TableModel.parse(
        gen, region=attrs["region"], region_key=attrs["region_key"], instance_key=attrs["instance_key"]
    )
