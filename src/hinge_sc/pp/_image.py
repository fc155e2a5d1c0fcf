"""Lazy access to H&E images: in-memory arrays, image files (tiled TIFFs read lazily) and dask/xarray pyramids."""

from __future__ import annotations

import logging
import os
import re
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from hinge_sc._validators import check_allocation

if TYPE_CHECKING:
    from collections.abc import Iterator

logger = logging.getLogger(__name__)

#: Value of the padding added where a patch extends past the image border (white, like bare glass).
PAD_VALUE = 255
#: File suffixes read lazily through :mod:`tifffile` (tiled, possibly pyramidal); others are decoded with PIL.
TIFF_SUFFIXES = (".tif", ".tiff", ".svs", ".ome.tif", ".ome.tiff", ".btf")


def _is_dask(arr: Any) -> bool:
    return type(arr).__module__.startswith("dask")


def as_rgb_uint8(img: np.ndarray, *, max_value: int | None = None) -> np.ndarray:
    """(..., H, W, C) array of any dtype → RGB uint8 (grey is repeated, alpha dropped, [0, 1] floats scaled).

    Parameters
    ----------
    img
        The pixels.
    max_value
        White of an integer image stored in more bits than it holds, e.g. 4095 for 12-bit pixels in ``uint16``
        (see :func:`observed_max_value`); ``None``: the dtype's full range (65535 for ``uint16``).
    """
    img = np.asarray(img)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    img = img[..., :3]
    if img.dtype == np.uint8:
        return img
    if img.dtype == np.uint16 and max_value is not None and max_value < 65535:
        return np.clip(np.rint(img.astype(np.float32) * (255.0 / max_value)), 0, 255).astype(np.uint8)
    if img.dtype == np.uint16:
        return (img // 257).astype(np.uint8)
    scale = 255.0 if np.issubdtype(img.dtype, np.floating) and img.size and img.max() <= 1.0 else 1.0
    return np.clip(np.rint(img * scale), 0, 255).astype(np.uint8)


@dataclass
class SlideImage:
    """An RGB image as a pyramid of (height, width, channels) arrays, numpy or dask (read lazily).

    Attributes
    ----------
    levels
        Level 0 is the full resolution; level ``i`` has ``downsamples[i]`` level-0 px per px.
    downsamples
        Level-0 px per px of each level (1 for level 0), increasing.
    source
        A description of where the pixels come from (path, array, element name), for messages and caching.
    max_value
        White of a ``uint16`` image that holds fewer bits (e.g. 4095 for 12-bit pixels); ``None``: the dtype's range.
    """

    levels: list[Any]
    downsamples: list[float]
    source: str
    max_value: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the full-resolution image, in level-0 px."""
        d = self.downsamples[0]
        return round(int(self.levels[0].shape[0]) * d), round(int(self.levels[0].shape[1]) * d)

    @property
    def lazy(self) -> bool:
        """Whether level 0 is a dask array (pixels are read on demand)."""
        return _is_dask(self.levels[0])

    def pick_level(self, side_px: float, out_size: int | None) -> int:
        """Coarsest level at which a patch of ``side_px`` level-0 px still has at least ``out_size`` px."""
        if out_size is None:
            return 0
        best = 0
        for i, d in enumerate(self.downsamples):
            if side_px / d >= out_size:
                best = i
        return best

    def fingerprint(self) -> str:
        """Cheap identity of the pixels, the same for an array and its copy read back from zarr.

        A file: path, size and modification time. An array: extent, dtype, and a pixel sample of the coarsest level
        (strided when it has at most 4 Mpx, else nine 64 px windows, so that a lazy slide reads at most nine chunks).
        """
        import hashlib

        parts = [str(self.shape), str(self.levels[0].dtype)]
        if os.path.isfile(self.source):
            stat = os.stat(self.source)
            parts += [str(Path(self.source).resolve()), str(stat.st_size), str(stat.st_mtime_ns)]
        else:
            lvl = self.levels[-1]
            h, w = int(lvl.shape[0]), int(lvl.shape[1])
            if h * w <= 4_000_000:
                step = max(1, int(np.sqrt(h * w / 250_000)))
                samples = [lvl[::step, ::step]]
            else:
                samples = [lvl[y : y + 64, x : x + 64] for y in np.linspace(0, h - 64, 3, dtype=int)
                           for x in np.linspace(0, w - 64, 3, dtype=int)]  # fmt: skip
            if _is_dask(lvl):
                import dask

                samples = dask.compute(*samples, scheduler="threads")
            digest = hashlib.sha1()
            for sample in samples:
                digest.update(np.ascontiguousarray(sample).tobytes())
            parts.append(digest.hexdigest())
        return hashlib.sha1("|".join(parts).encode()).hexdigest()

    def crops(self, xy: np.ndarray, side_px: int, out_size: int | None) -> np.ndarray:
        """Square crops centred on ``xy``, white-padded past the border, resized to ``out_size``.

        Parameters
        ----------
        xy
            Centres (x, y) in level-0 px, shape (n, 2).
        side_px
            Side of the crops in level-0 px.
        out_size
            Side of the returned crops in px (bicubic resize); ``None`` keeps the native side of the level read.

        Returns
        -------
        RGB crops, shape (n, S, S, 3), uint8. The crop's top-left pixel is
        ``(round(x / d) - s // 2, round(y / d) - s // 2)`` at the level read (downsample ``d``, side ``s``).
        """
        from PIL import Image

        level = self.pick_level(side_px, out_size)
        arr, d = self.levels[level], self.downsamples[level]
        side = max(1, round(side_px / d))
        size = side if out_size is None else int(out_size)
        h, w = int(arr.shape[0]), int(arr.shape[1])
        check_allocation(
            3 * (len(xy) * size * size + 2 * side * side),
            what=f"{len(xy):,} patches of {side:,} px (resized to {size:,} px) from {self.source}",
            fix="Pass a smaller `patch_size_um` (112 µm is the default) or `batch_size`, and check the image's µm/px.",
        )
        boxes = []
        for cx, cy in np.asarray(xy, dtype=float) / d:
            left, top = round(cx) - side // 2, round(cy) - side // 2
            boxes.append((left, top, max(left, 0), max(top, 0), min(left + side, w), min(top + side, h)))
        pieces = [arr[y0:max(y1, y0), x0:max(x1, x0)] for _, _, x0, y0, x1, y1 in boxes]
        if _is_dask(arr):
            import dask

            pieces = dask.compute(*pieces, scheduler="threads")
        out = np.empty((len(boxes), size, size, 3), dtype=np.uint8)
        for i, ((left, top, x0, y0, x1, y1), piece) in enumerate(zip(boxes, pieces, strict=True)):
            crop = np.full((side, side, 3), PAD_VALUE, dtype=np.uint8)
            if x1 > x0 and y1 > y0:
                crop[y0 - top : y1 - top, x0 - left : x1 - left] = as_rgb_uint8(piece, max_value=self.max_value)
            if size != side:
                crop = np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BICUBIC))
            out[i] = crop
        return out

    def thumbnail(self, max_side: int = 2000) -> tuple[np.ndarray, float]:
        """RGB uint8 image with longest side ≤ ``max_side`` px and its scale (thumbnail px per level-0 px)."""
        from skimage.transform import resize

        h, w = self.shape
        target = max(h, w) / max_side
        level = max((i for i, d in enumerate(self.downsamples) if d <= max(target, 1.0)), default=0)
        arr, d = self.levels[level], self.downsamples[level]
        step = max(1, int(target / d))
        small = arr[::step, ::step]
        small = as_rgb_uint8(small.compute() if _is_dask(small) else small, max_value=self.max_value)
        scale = min(1.0, max_side / max(h, w))
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        if small.shape[:2] != size:
            small = (resize(small, size, order=1, preserve_range=True, anti_aliasing=True) + 0.5).astype(np.uint8)
        return small, size[1] / w


def check_channels_last(shape: tuple[int, ...], *, where: str) -> None:
    """Raise if an image of ``shape`` looks channel-first, ``(C, H, W)``, instead of ``(H, W, C)``."""
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        raise ValueError(
            f"{where} has shape {tuple(shape)}, which looks channel-first (C, H, W); expected (height, width, "
            f"channels). Transpose it to (H, W, {shape[0]}), e.g. `np.moveaxis(image, 0, -1)`."
        )


@contextmanager
def pil_pixel_limit(path: str | os.PathLike) -> Iterator[None]:
    """Raise PIL's decompression-bomb limit to the size of the image at ``path`` for this block only.

    The header is read with the limit lifted, the limit is set to that image's pixel count (never lowered) for the
    block, and PIL's limit is restored afterwards, so that other images opened by the process keep PIL's guard.
    The limit is bounded by memory: an image whose decoded RGB pixels (twice, for PIL's conversion) would not fit
    in the memory available — a decompression bomb, or a whole slide that should be a pyramidal TIFF — is refused
    from its header, before anything is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    before = Image.MAX_IMAGE_PIXELS
    try:
        Image.MAX_IMAGE_PIXELS = None
        try:
            with Image.open(path) as im:  # the header only
                width, height = im.size
        except FileNotFoundError:
            raise FileNotFoundError(f"No image file at {path}; check the path.") from None
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise ValueError(
                f"{path} could not be read as an image ({type(err).__name__}: {err}); it is not an image or it is "
                "truncated. Pass a JPEG, PNG or TIFF slide image."
            ) from None
        check_allocation(
            2 * 3 * width * height,
            what=f"Decoding the image {path} ({width:,} × {height:,} px)",
            fix="A slide this large must be a pyramidal TIFF/SVS, which is read lazily (e.g. `vips tiffsave in.png "
            "out.tif --tile --pyramid`); otherwise the file is corrupt or a decompression bomb.",
        )
        if before is not None:
            Image.MAX_IMAGE_PIXELS = max(int(before), width * height)
        yield
    finally:
        Image.MAX_IMAGE_PIXELS = before


def check_image_shape(shape: tuple[int, ...], *, where: str) -> None:
    """Raise unless ``shape`` is a non-empty (H, W) or (H, W, C) image with 1 (grey), 3 (RGB) or 4 (RGBA) channels."""
    shape = tuple(int(n) for n in shape)
    if len(shape) not in (2, 3):
        raise ValueError(
            f"{where} has shape {shape}; an image must have shape (height, width) or (height, width, channels)."
        )
    check_channels_last(shape, where=where)
    if len(shape) == 3 and shape[2] not in (1, 3, 4):
        raise ValueError(
            f"{where} has shape {shape}: {shape[2]} channels; expected 1 (grey), 3 (RGB) or 4 (RGBA) channels, last. "
            "Pass the RGB H&E image, e.g. `image[..., :3]` of a multi-channel stack."
        )
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError(
            f"{where} has shape {shape}: an empty image (no pixels); expected height and width ≥ 1. Check the image "
            "that was stored (e.g. a failed read or a crop outside the slide)."
        )


def observed_max_value(levels: list[Any], *, source: str) -> int | None:
    """White of a ``uint16`` image that holds at most 12 bits (warned), from its coarsest level; else ``None``.

    A 12-bit camera's pixels (0 … 4095) stored as ``uint16`` would look almost black if scaled as 16-bit. Only a
    numpy level, or a dask level of at most 16 Mpx, is read (strided to about 250,000 px).
    """
    lvl = levels[-1]
    if np.dtype(lvl.dtype) != np.uint16 or lvl.size == 0:
        return None
    h, w = int(lvl.shape[0]), int(lvl.shape[1])
    if _is_dask(lvl) and h * w > 16_000_000:
        return None
    step = max(1, int(np.sqrt(h * w / 250_000)))
    sample = lvl[::step, ::step]
    peak = int(sample.max().compute() if _is_dask(sample) else sample.max())
    if peak > 4095:
        return None
    bits = max(8, peak.bit_length())
    max_value = 2**bits - 1
    warnings.warn(
        f"The image {source} is stored as uint16 but its values only reach {peak} (≤ 4095): it looks like a "
        f"{bits}-bit image, so it is scaled to 8 bits by its observed bit depth ({max_value} → 255), not as 16-bit "
        "(65535 → 255, which would make it nearly black). To scale it otherwise, pass it as floats in [0, 1], "
        "e.g. `image / 65535.0`.",
        UserWarning,
        stacklevel=3,
    )
    return max_value


def from_array(img: Any, *, source: str = "array") -> SlideImage:
    """Wrap a (H, W, C) / (H, W) numpy or dask array, or a spatialdata image (DataArray or multiscale DataTree).

    Raises
    ------
    ValueError
        The image is empty, is not 2-D or 3-D, has other than 1, 3 or 4 channels, or looks channel-first.

    Warns
    -----
    UserWarning
        A ``uint16`` image whose values reach at most 4095 (e.g. 12-bit): scaled by its observed bit depth.
    """
    levels = _xarray_levels(img)
    if levels is None:
        arr = img if _is_dask(img) else np.asarray(img)
        levels = [arr]
    check_image_shape(levels[0].shape, where=f"`{source}`")
    w0 = levels[0].shape[1]
    max_value = observed_max_value(levels, source=f"`{source}`")
    return SlideImage(levels, [w0 / lvl.shape[1] for lvl in levels], source, max_value)


def _xarray_levels(img: Any) -> list[Any] | None:
    """(y, x, c) dask arrays of every scale of a spatialdata image, or None for a plain array."""
    kind = type(img).__name__
    if kind == "DataTree":
        arrays = []
        for name in sorted(img.children, key=lambda s: int(re.sub(r"\D", "", s) or 0)):
            ds = img[name].ds
            arrays.append(next(iter(ds.data_vars.values())))
        return [_yxc(a) for a in arrays]
    if kind == "DataArray":
        return [_yxc(img)]
    return None


def _yxc(da_: Any) -> Any:
    dims = tuple(da_.dims)
    if set(dims) != {"c", "y", "x"}:
        raise ValueError(
            f"An image element must have dims ('c', 'y', 'x'), found {dims}; 3-D images are not supported."
        )
    return da_.transpose("y", "x", "c").data


def open_image_file(
    path: str | os.PathLike, *, side_px: float | None = None, out_size: int | None = None
) -> SlideImage:
    """Open an image file: TIFF-like files lazily (every pyramid level), others decoded with PIL.

    A JPEG is decoded at 1/2, 1/4 or 1/8 resolution when patches of ``side_px`` px are resized to ``out_size``
    px anyway (JPEG DCT scaling); the result is one level with that downsample.
    """
    path = Path(path)
    if path.name.lower().endswith(TIFF_SUFFIXES):
        return _open_tiff(path)
    from PIL import Image

    with pil_pixel_limit(path), Image.open(path) as im:  # whole slides exceed PIL's decompression-bomb limit
        full_w = im.size[0]
        reduce = 1
        while side_px is not None and out_size is not None and reduce < 8 and side_px / (2 * reduce) >= out_size:
            reduce *= 2
        if reduce > 1:
            im.draft("RGB", (im.size[0] // reduce, im.size[1] // reduce))
        try:
            arr = np.asarray(im.convert("RGB"))
        except (OSError, ValueError) as err:  # truncated data after a valid header
            raise ValueError(f"{path} could not be decoded ({err}); the image file is truncated or corrupt.") from None
    return SlideImage([arr], [full_w / arr.shape[1]], str(path))


def _open_tiff(path: Path) -> SlideImage:
    import dask.array as da
    import tifffile
    import zarr

    store = tifffile.imread(path, aszarr=True)
    node = zarr.open(store, mode="r")
    if isinstance(node, zarr.Group):
        keys = sorted(node.array_keys(), key=lambda s: int(re.sub(r"\D", "", s) or 0))
        arrays = [node[k] for k in keys]
    else:
        arrays = [node]
    levels = []
    for a in arrays:
        arr = da.from_zarr(a)
        if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):  # planar (c, y, x)
            arr = arr.transpose(1, 2, 0)
        levels.append(arr)
    w0 = levels[0].shape[1]
    return SlideImage(levels, [w0 / lvl.shape[1] for lvl in levels], str(path))


def tiff_microns_per_pixel(path: str | os.PathLike) -> float | None:
    """µm/px recorded in a TIFF: Aperio ``MPP = …``, OME ``PhysicalSizeX``, or the resolution tags."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        desc = page.description or ""
        for pattern in (r"MPP\s*=\s*([0-9.eE+-]+)", r'PhysicalSizeX="([0-9.eE+-]+)"'):
            match = re.search(pattern, desc)
            if match:
                return float(match.group(1))
        tags = page.tags
        if "XResolution" in tags and "ResolutionUnit" in tags:
            num, den = tags["XResolution"].value
            unit = int(tags["ResolutionUnit"].value)
            per_unit = num / den if den else 0.0
            um = {2: 25_400.0, 3: 10_000.0}.get(unit)  # inch, centimetre
            if um and per_unit > 1:  # resolution tags of 1 px/unit are a writer default, not a measurement
                return um / per_unit
    return None
