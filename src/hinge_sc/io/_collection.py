"""Many sections on disk, read a section at a time: the input of training on data that does not fit in memory."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

logger = logging.getLogger(__name__)

#: Column of :attr:`SectionCollection.obs` holding each spot's section.
SECTION_COLUMN = "section"
#: Column of :attr:`SectionCollection.obs` holding the file each spot is read from.
SOURCE_COLUMN = "source"


@contextlib.contextmanager
def _open_store(path: Path) -> Iterator[Any]:
    """The root group of an ``.h5ad`` (h5py, read-only) or ``.zarr`` (zarr, read-only) AnnData store."""
    if path.suffix == ".zarr" or path.is_dir():
        import zarr

        yield zarr.open_group(str(path), mode="r")
        return
    import h5py

    with h5py.File(path, "r") as f:
        yield f


def _read_rows(elem: Any, rows: np.ndarray) -> np.ndarray | sp.csr_matrix:
    """Rows ``rows`` (sorted) of a stored dense array or sparse matrix, without reading the rest."""
    from anndata.io import sparse_dataset

    if hasattr(elem, "keys"):  # a group: a sparse matrix (csr/csc) written by anndata
        return sparse_dataset(elem)[rows]
    contiguous = len(rows) and rows[-1] - rows[0] + 1 == len(rows)
    if contiguous:
        return np.asarray(elem[int(rows[0]) : int(rows[-1]) + 1])
    if hasattr(elem, "oindex"):  # zarr
        return np.asarray(elem.oindex[rows])
    return np.asarray(elem[rows])  # h5py: sorted fancy index


class _CountBlock:
    """Loader of rows ``start:stop`` of one section's counts (picklable)."""

    def __init__(self, collection: SectionCollection, section: str, start: int, stop: int, layer: str | None):
        self.collection, self.section, self.start, self.stop, self.layer = collection, section, start, stop, layer

    def __call__(self) -> dict[str, Any]:
        block = self.collection.read(self.section, layer=self.layer, rows=slice(self.start, self.stop))
        block["where"] = f"rows {self.start}–{self.stop} of section {self.section!r} ({self.collection.source(self.section)})"
        return block


class SectionCollection:
    """Sections stored as AnnData files (``.h5ad`` or ``.zarr``), read one section at a time.

    Only the spots' names and ``obs`` and the genes are read when the collection is opened; counts
    (``X``) and features (``obsm``) are read a section at a time, rows only, when asked for. This is the input of
    :meth:`hinge_sc.HINGE.from_collection`, which trains one model on more sections than fit in memory together.
    Files can hold one section each (HEST-1k's one h5ad per sample) or several (``section_key``).

    Parameters
    ----------
    paths
        AnnData files: ``.h5ad`` or ``.zarr`` folders (e.g. written by ``adata.write_h5ad``, or by
        :func:`hinge_sc.pp.histology_features` then ``write_h5ad``), or a folder holding them.
    section_key
        Column of each file's ``obs`` with the section of each spot; ``None``: each file is one section, named
        after the file (its stem).

    Attributes
    ----------
    obs
        ``(n_spots,)`` every spot's ``obs``, with the columns ``section`` and ``source`` (the file).
    var_names
        Genes present in every file, in the first file's order.
    sections
        Section labels, in the order of the files.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], *, section_key: str | None = None):
        self.paths = self._resolve_paths(paths)
        self.section_key = section_key
        obs_parts, var_sets, first_var = [], [], None
        self._file_genes: dict[str, pd.Index] = {}
        for path in self.paths:
            obs, var_names = self._read_index(path)
            self._file_genes[str(path)] = var_names
            if section_key is None:
                obs[SECTION_COLUMN] = path.name.removesuffix(".zarr").removesuffix(".h5ad")
            else:
                if section_key not in obs:
                    raise KeyError(
                        f"`section_key={section_key!r}` is not a column of the obs of {path} (columns: "
                        f"{list(obs.columns)[:20]}); pass the column holding the section of each spot, or "
                        "`section_key=None` to use one section per file."
                    )
                labels = obs[section_key]
                if labels.isna().any():
                    raise ValueError(f"{path}: `obs[{section_key!r}]` has {int(labels.isna().sum())} missing labels.")
                obs[SECTION_COLUMN] = labels.astype(str).to_numpy()
            obs[SOURCE_COLUMN] = str(path)
            obs_parts.append(obs)
            var_sets.append(set(var_names))
            first_var = var_names if first_var is None else first_var
        common = set.intersection(*var_sets)
        self.var_names = pd.Index([g for g in first_var if g in common])
        if len(self.var_names) < len(first_var) or any(len(v) != len(common) for v in var_sets):
            logger.warning("The files share %d genes (the first file has %d); only the shared genes are used.",
                           len(self.var_names), len(first_var))  # fmt: skip
        self.obs = pd.concat(obs_parts)
        if not self.obs.index.is_unique:
            dup = self.obs.index[self.obs.index.duplicated()].unique()
            files = self.obs.loc[self.obs.index.isin(dup[:1]), SOURCE_COLUMN].unique().tolist()
            raise ValueError(
                f"{len(dup)} spot names occur more than once across the files, e.g. {dup[0]!r} in {files}. Give "
                "each file unique `obs_names`, e.g. prefixed with its sample (`adata.obs_names = sample + '_' + "
                "adata.obs_names`)."
            )
        keys = self.obs[[SECTION_COLUMN, SOURCE_COLUMN]].drop_duplicates()
        if keys[SECTION_COLUMN].duplicated().any():
            label = keys.loc[keys[SECTION_COLUMN].duplicated(), SECTION_COLUMN].iloc[0]
            raise ValueError(f"Section {label!r} is in several files; a section must be in one file.")
        self.sections = list(dict.fromkeys(self.obs[SECTION_COLUMN].tolist()))
        # each section's file and row positions in it, found once (every read of a section needs them)
        self._where: dict[str, tuple[Path, np.ndarray]] = {}
        self._names: dict[str, np.ndarray] = {}
        for path, file_obs in zip(self.paths, obs_parts, strict=True):
            labels = file_obs[SECTION_COLUMN].to_numpy()
            for section in dict.fromkeys(labels.tolist()):
                rows = np.flatnonzero(labels == section)
                self._where[section] = (path, rows)
                self._names[section] = np.asarray(file_obs.index[rows]).astype(str)

    @staticmethod
    def _resolve_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
        if isinstance(paths, (str, Path)):
            paths = [paths]
        resolved: list[Path] = []
        for p in map(Path, paths):
            if p.is_dir() and p.suffix != ".zarr":
                found = sorted([*p.glob("*.h5ad"), *p.glob("*.zarr")])
                if not found:
                    raise FileNotFoundError(f"`paths`: the folder {p} holds no `.h5ad` files or `.zarr` stores.")
                resolved.extend(found)
            elif not p.exists():
                raise FileNotFoundError(f"`paths`: {p} does not exist.")
            elif p.suffix not in (".h5ad", ".zarr"):
                raise ValueError(f"`paths`: {p} is neither an `.h5ad` file nor a `.zarr` store.")
            else:
                resolved.append(p)
        if not resolved:
            raise ValueError("`paths` is empty; give the AnnData files of the sections.")
        return resolved

    @staticmethod
    def _read_index(path: Path) -> tuple[pd.DataFrame, pd.Index]:
        from anndata.io import read_elem

        try:
            with _open_store(path) as store:
                obs = read_elem(store["obs"])
                var = read_elem(store["var"])
        except (OSError, KeyError, ValueError) as err:
            raise ValueError(f"{path} could not be read as an AnnData store ({type(err).__name__}: {err}).") from err
        obs.index = obs.index.astype(str)
        return obs, pd.Index(var.index.astype(str))

    # ------------------------------------------------------------------ queries
    @property
    def n_obs(self) -> int:
        """Number of spots over all sections."""
        return len(self.obs)

    def source(self, section: str) -> Path:
        """The file holding ``section``."""
        return self._rows(section)[0]

    def _rows(self, section: str) -> tuple[Path, np.ndarray]:
        """The file of ``section`` and the positions of its spots in that file."""
        if section not in self._where:
            raise KeyError(f"Section {section!r} is not in the collection (sections: {self.sections[:20]}).")
        return self._where[section]

    def obsm_shape(self, key: str) -> dict[str, tuple[int, ...]]:
        """Shape of ``obsm[key]`` in each file (read from the file's metadata, not its values)."""
        shapes = {}
        for path in self.paths:
            with _open_store(path) as store:
                if "obsm" not in store or key not in store["obsm"]:
                    raise KeyError(f"{path} has no `obsm[{key!r}]`; compute the features of every section first.")
                shapes[str(path)] = tuple(int(n) for n in store["obsm"][key].shape)
        return shapes

    def count_blocks(self, max_rows: int = 8192, layer: str | None = None) -> list[_CountBlock]:
        """Loaders of the counts in blocks of at most ``max_rows`` rows of one section (for pre-training)."""
        blocks = []
        for section in self.sections:
            n = len(self._rows(section)[1])
            blocks.extend(_CountBlock(self, section, start, min(start + max_rows, n), layer) for start in range(0, n, max_rows))
        return blocks

    def read(
        self, section: str, *, obsm_keys: Sequence[str] = (), layer: str | None = None, rows: slice | None = None
    ) -> dict[str, Any]:
        """The spots of one section, read from its file (rows of this section only).

        Parameters
        ----------
        section
            Section label.
        obsm_keys
            ``obsm`` arrays to read.
        layer
            Read ``layers[layer]`` instead of ``X``.
        rows
            Only these of the section's spots (positions within the section).

        Returns
        -------
        ``{"X": CSR (n, n_file_genes), "var_names": the file's genes, <obsm key>: array, "obs_names": (n,)}``.
        """
        path, section_rows = self._rows(section)
        names = self._names[section]
        if rows is not None:
            section_rows, names = section_rows[rows], names[rows]
        rows = section_rows
        var_names = self._file_genes[str(path)]
        with _open_store(path) as store:
            where = "X" if layer is None else f"layers/{layer}"
            if where not in store:
                raise KeyError(f"{path} has no {'`X`' if layer is None else f'`layers[{layer!r}]`'}.")
            out: dict[str, Any] = {"X": sp.csr_matrix(_read_rows(store[where], rows)), "var_names": var_names}
            for key in obsm_keys:
                if "obsm" not in store or key not in store["obsm"]:
                    raise KeyError(f"{path} has no `obsm[{key!r}]`.")
                out[key] = np.asarray(_read_rows(store["obsm"][key], rows))
        out["obs_names"] = names
        return out

    def to_adata(
        self,
        sections: Sequence[str] | None = None,
        *,
        obsm_keys: Sequence[str] = (),
        max_spots_per_section: int | None = None,
        seed: int = 0,
        layer: str | None = None,
    ):
        """An in-memory AnnData of some sections (all genes of :attr:`var_names`), e.g. to generate or plot them.

        Parameters
        ----------
        sections
            Sections to load (default: all; mind the memory).
        obsm_keys
            ``obsm`` arrays to load.
        max_spots_per_section
            Keep at most this many spots of each section, drawn with ``seed`` (a small sample of every section).
        seed
            Seed of that draw.
        layer
            Read ``layers[layer]`` of the files into ``X``.
        """
        import anndata as ad

        sections = self.sections if sections is None else [str(s) for s in sections]
        rng = np.random.default_rng(seed)
        parts = []
        for s in sections:
            block = self.read(s, obsm_keys=obsm_keys, layer=layer)
            x = block["X"][:, block["var_names"].get_indexer(self.var_names)]
            n = x.shape[0]
            take = np.arange(n)
            if max_spots_per_section is not None and n > max_spots_per_section:
                take = np.sort(rng.choice(n, max_spots_per_section, replace=False))
            obs = self.obs.loc[block["obs_names"][take]].copy()
            parts.append(
                ad.AnnData(X=x[take], obs=obs, var=pd.DataFrame(index=self.var_names.copy()),
                           obsm={k: block[k][take] for k in obsm_keys})  # fmt: skip
            )
        return ad.concat(parts, merge="first") if len(parts) > 1 else parts[0]

    def read_uns(self, key: str) -> Any:
        """``uns[key]`` of the first file that has it (e.g. the features' provenance), else ``None``."""
        from anndata.io import read_elem

        for path in self.paths:
            with _open_store(path) as store:
                if "uns" in store and key in store["uns"]:
                    return read_elem(store["uns"][key])
        return None

    def __repr__(self) -> str:
        return (f"SectionCollection: {len(self.sections)} sections, {self.n_obs} spots, {len(self.var_names)} genes, "
                f"{len(self.paths)} file(s)")  # fmt: skip
