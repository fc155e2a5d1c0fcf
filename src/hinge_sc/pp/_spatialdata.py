"""SpatialData input: the spots are the shapes annotated by a table, mapped into an image's pixels."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from hinge_sc._constants import GENERATED_KEY

from ._image import from_array
from ._patches import PatchGroup, is_visium, resolve_mpp

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from anndata import AnnData

logger = logging.getLogger(__name__)

#: Preferred coordinate system when image and shapes share several.
GLOBAL_CS = "global"


def is_spatialdata(obj: Any) -> bool:
    """Whether ``obj`` is a :class:`spatialdata.SpatialData` or a subclass (e.g. wsidata's ``WSIData``), checked without
    importing spatialdata."""
    return any(
        cls.__name__ == "SpatialData" and cls.__module__.split(".")[0] == "spatialdata" for cls in type(obj).__mro__
    )


def get_table(sdata: Any, table_key: str | None) -> tuple[str, AnnData]:
    """``(table_key, table)``; ``table_key=None`` picks the only table."""
    tables = dict(sdata.tables)
    if table_key is None:
        if len(tables) != 1:
            raise ValueError(
                f"`table_key=None` needs exactly one table in the SpatialData object, found {sorted(tables)}. "
                "Pass `table_key=`."
            )
        table_key = next(iter(tables))
    if table_key not in tables:
        raise KeyError(
            f"`table_key={table_key!r}` is not a table of the SpatialData object (tables: {sorted(tables)})."
        )
    return table_key, tables[table_key]


def _is_registered(cls: type | None, table: AnnData) -> bool:
    find = getattr(cls, "_get_most_recent_anndata_manager", None)
    return find is not None and find(table, required=False) is not None


def resolve_table(
    cls: type | None,
    data: AnnData | Any | None,
    table_key: str | None = None,
    *,
    key: str | None = None,
    argument: str | None = None,
) -> AnnData | None:
    """Return the AnnData a function works on: ``data`` itself, or the table of a SpatialData object.

    The one place where every public model, ``tl`` and ``pl`` function turns SpatialData input into its table.
    With ``table_key=None`` the table is, in this order: the one registered with ``cls.setup_spatialdata`` (or
    ``setup_anndata``); among the tables hinge_sc did not generate (no ``uns["hinge_sc"]``), the only one with
    ``obsm[key]``, or the only one; the only table.

    Parameters
    ----------
    cls
        Model class whose registered table comes first (``None``: no model).
    data
        AnnData, SpatialData or ``None`` (returned as is).
    table_key
        The table to use.
    key
        ``obsm`` key the caller reads (e.g. the generated expression), used to choose among several tables.
    argument
        Name of the caller's argument: when given, anything but an AnnData or SpatialData raises a TypeError.

    Raises
    ------
    KeyError
        ``table_key`` is not a table.
    ValueError
        Several tables qualify; pass ``table_key``.
    """
    if data is None or not is_spatialdata(data):
        if argument is not None and type(data).__name__ != "AnnData":
            raise TypeError(f"`{argument}` must be an AnnData or a SpatialData object, found {type(data).__name__}.")
        return data
    if table_key is not None:
        return get_table(data, table_key)[1]
    tables = dict(data.tables)
    registered = [k for k, t in tables.items() if _is_registered(cls, t)]
    if len(registered) == 1:
        return tables[registered[0]]
    measured = [k for k, t in tables.items() if GENERATED_KEY not in t.uns]
    if key is not None:
        with_key = [k for k in measured if key in tables[k].obsm]
        if len(with_key) == 1:
            return tables[with_key[0]]
    if len(measured) == 1:
        return tables[measured[0]]
    if len(tables) == 1:
        return next(iter(tables.values()))
    model = f", {len(registered)} of them registered with `{cls.__name__}.setup_spatialdata`" if cls else ""
    raise ValueError(
        f"The SpatialData object has tables {sorted(tables)}{model}. Pass `table_key=` to say which table holds "
        "the spots."
    )


def table_regions(table: AnnData, table_key: str) -> tuple[list[str], str, str]:
    """``(regions, region_key, instance_key)`` of a table (``uns["spatialdata_attrs"]``)."""
    attrs = table.uns.get("spatialdata_attrs")
    if not attrs or attrs.get("region") is None:
        raise ValueError(
            f"Table {table_key!r} annotates no element (`uns['spatialdata_attrs']['region']` is missing). Build it "
            "with `spatialdata.models.TableModel.parse(table, region=..., region_key=..., instance_key=...)`."
        )
    region = attrs["region"]
    regions = [region] if isinstance(region, str) else [str(r) for r in region]
    return regions, attrs["region_key"], attrs["instance_key"]


def _affine(element: Any) -> dict[str, np.ndarray]:
    from spatialdata.transformations import get_transformation

    return {
        cs: np.asarray(t.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)
        for cs, t in get_transformation(element, get_all=True).items()
    }


def shapes_to_image(shapes: Any, image: Any, *, shapes_key: str, image_key: str) -> np.ndarray:
    """3 × 3 affine matrix from the shapes' intrinsic coordinates to the image's level-0 pixels.

    Raises
    ------
    ValueError
        If the two elements share no coordinate system.
    """
    ts, ti = _affine(shapes), _affine(image)
    common = [cs for cs in ts if cs in ti]
    if not common:
        raise ValueError(
            f"The image {image_key!r} (coordinate systems {sorted(ti)}) and the shapes {shapes_key!r} (coordinate "
            f"systems {sorted(ts)}) share no coordinate system, so the spots cannot be placed on the image. Add a "
            "transformation to a common coordinate system with `spatialdata.transformations.set_transformation`."
        )
    cs = GLOBAL_CS if GLOBAL_CS in common else sorted(common)[0]
    if len(common) > 1:
        logger.info("Shapes %r and image %r share %s; using %r.", shapes_key, image_key, common, cs)
    return np.linalg.inv(ti[cs]) @ ts[cs]


def _pick_image(sdata: Any, region: str, shapes: Any, image_key: str | Mapping[str, str] | None) -> str:
    images = list(sdata.images)
    if isinstance(image_key, str):
        key = image_key
    elif image_key is not None:
        if region not in image_key:
            raise KeyError(f"`image_key` has no image for region {region!r}; give one for every region of the table.")
        key = image_key[region]
    else:
        cs = set(_affine(shapes))
        shared = [k for k in images if cs & set(_affine(sdata.images[k]))]
        if len(shared) != 1:
            raise ValueError(
                f"`image_key=None` needs exactly one image sharing a coordinate system with the shapes {region!r}, "
                f"found {shared or 'none'} (images: {images}). Pass `image_key=`."
            )
        key = shared[0]
    if key not in sdata.images:
        raise KeyError(f"`image_key={key!r}` is not an image of the SpatialData object (images: {images}).")
    return key


def _centres(shapes: Any, shapes_key: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Centres (n, 2) and diameters (n,) of circles (``radius`` column) or polygons (equal-area diameter)."""
    geom = shapes.geometry
    kinds = set(geom.geom_type)
    if kinds <= {"Point"}:
        xy = np.column_stack([geom.x.to_numpy(float), geom.y.to_numpy(float)])
        diameter = 2 * shapes["radius"].to_numpy(float) if "radius" in shapes else None
        return xy, diameter
    if kinds <= {"Polygon", "MultiPolygon"}:
        centroid = geom.centroid
        xy = np.column_stack([centroid.x.to_numpy(float), centroid.y.to_numpy(float)])
        return xy, 2 * np.sqrt(geom.area.to_numpy(float) / np.pi)
    raise ValueError(f"Shapes {shapes_key!r} must be circles or polygons, found geometry types {sorted(kinds)}.")


def _library_meta(table: AnnData, region: str, image_key: str) -> dict:
    spatial = table.uns.get("spatial", {})
    for key in (region, image_key):
        if key in spatial:
            return dict(spatial[key])
    return dict(next(iter(spatial.values()))) if len(spatial) == 1 else {}


def spatialdata_groups(
    sdata: Any,
    *,
    table_key: str | None,
    image_key: str | Mapping[str, str] | None,
    shapes_key: str | Sequence[str] | None,
    microns_per_pixel: float | Mapping[str, float] | None,
) -> list[PatchGroup]:
    """One :class:`PatchGroup` per region (shapes element) of the table, with centres in image px."""
    table_key, table = get_table(sdata, table_key)
    regions, region_key, instance_key = table_regions(table, table_key)
    if shapes_key is not None:
        wanted = [shapes_key] if isinstance(shapes_key, str) else list(shapes_key)
        unknown = [s for s in wanted if s not in regions]
        if unknown:
            raise KeyError(f"`shapes_key` {unknown} is not annotated by table {table_key!r} (regions: {regions}).")
        present = set(table.obs[region_key].astype(str))
        left_out = sorted(present - set(wanted))
        if left_out:
            raise ValueError(
                f"Table {table_key!r} also has rows of regions {left_out}, which `shapes_key` leaves out; their spots "
                "would get no features. Pass `shapes_key=None` (all regions) or subset the table first."
            )
        regions = wanted
    region_col = table.obs[region_key].astype(str).to_numpy()
    groups = []
    for region in regions:
        rows = np.flatnonzero(region_col == region)
        if not len(rows):
            continue
        if region not in sdata.shapes:
            raise KeyError(
                f"Table {table_key!r} annotates {region!r}, which is not a shapes element; spots must be shapes "
                "(circles or polygons). Pass `shapes_key=`."
            )
        shapes = sdata.shapes[region]
        ids = table.obs[instance_key].to_numpy()[rows]
        missing = ~np.isin(ids, shapes.index.to_numpy())
        if missing.any():
            raise KeyError(
                f"{int(missing.sum())} rows of table {table_key!r} name instances absent from shapes {region!r} "
                f"(`obs[{instance_key!r}]`, e.g. {ids[missing][:3].tolist()})."
            )
        xy, diameter = _centres(shapes.loc[ids], region)
        key = _pick_image(sdata, region, shapes, image_key)
        image = sdata.images[key]
        affine = shapes_to_image(shapes, image, shapes_key=region, image_key=key)
        xy_img = xy @ affine[:2, :2].T + affine[:2, 2]
        px_per_unit = float(np.sqrt(abs(np.linalg.det(affine[:2, :2]))))
        lib = _library_meta(table, region, key)
        scalefactors = dict(lib.get("scalefactors", {}))
        # the metadata is per shapes unit (full-resolution px); convert it to image px
        if scalefactors.get("microns_per_pixel") is not None:
            scalefactors["microns_per_pixel"] = float(scalefactors["microns_per_pixel"]) / px_per_unit
        if scalefactors.get("spot_diameter_fullres"):
                scalefactors["spot_diameter_fullres"] = float(scalefactors["spot_diameter_fullres"]) * px_per_unit
        mpp, source = resolve_mpp(
            scalefactors, lib.get("metadata", {}), region, microns_per_pixel, visium=is_visium(lib),
            where=f"sdata.tables[{table_key!r}].uns['spatial'][{region!r}]",
        )  # fmt: skip
        spot = float(np.median(diameter)) * px_per_unit if diameter is not None and len(diameter) else None
        groups.append(
            PatchGroup(
                region, rows, xy_img, mpp, spot,
                lambda side, size, image=image, key=key: (from_array(image, source=f"sdata.images[{key!r}]"), 1.0),
                source, lambda image=image: from_array(image).fingerprint(),
            )
        )
    if sum(len(g.obs_idx) for g in groups) != table.n_obs:
        raise ValueError(f"Some rows of table {table_key!r} belong to no region in {regions}; drop them first.")
    return groups
