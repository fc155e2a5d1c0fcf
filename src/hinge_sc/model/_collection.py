"""Training one model on a :class:`~hinge_sc.io.SectionCollection`: sections streamed from disk, a few at a time."""

from __future__ import annotations

import logging
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from hinge_sc._constants import MODULE_KEYS
from hinge_sc._counts import panel_counts
from hinge_sc._validators import check_counts, check_positive_int
from hinge_sc.io._collection import SECTION_COLUMN

if TYPE_CHECKING:
    from collections.abc import Sequence

    from hinge_sc.io import SectionCollection
    from hinge_sc.nn import Backbone
    from hinge_sc.train import StreamingDataModule, TrainingRecipe

logger = logging.getLogger(__name__)

#: Spots of each section in the small in-memory AnnData a collection's model is registered on.
REGISTRATION_SPOTS = 32


class CollectionSource:
    """How a model reads its collection: the sections' kept spots as training blocks, read a section at a time.

    Built once by :meth:`hinge_sc.HINGE.from_collection`, which checks every section's counts and features in one
    pass and keeps only what is small: each section's library sizes and kept rows, and the features' moments.
    """

    def __init__(self, collection: SectionCollection, genes: Sequence[str], *, features_key: str,
                 views_key: str | None, layer: str | None, allow_non_integer: bool):  # fmt: skip
        self.collection, self.genes = collection, list(genes)
        self.features_key, self.views_key, self.layer = features_key, views_key, layer
        self.libraries: dict[str, np.ndarray] = {}
        #: Views per spot (1: the identity features only).
        self.n_views = 1
        self.kept_names: dict[str, np.ndarray] = {}
        d = None
        total = total_sq = None
        n_rows = 0
        from tqdm.auto import tqdm

        for section in tqdm(collection.sections, desc="Checking sections", disable=len(collection.sections) < 5):
            raw = self._read(section)
            check_counts(raw["X"], where=f"the counts of section {section!r} ({collection.source(section)})",
                         allow_non_integer=allow_non_integer)  # fmt: skip
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # reported once below, per section
                panel = panel_counts(raw["X"], raw["var_names"], self.genes, purpose="training")
            if len(panel.keep) < raw["X"].shape[0]:
                logger.warning("Section %r: %d of %d spots have no panel counts and are left out.", section,
                               raw["X"].shape[0] - len(panel.keep), raw["X"].shape[0])  # fmt: skip
            feats = np.asarray(raw[features_key], dtype=np.float64)[panel.keep]
            if feats.ndim != 2:
                raise ValueError(f"`obsm[{features_key!r}]` of section {section!r} must be 2-D, got {feats.shape}.")
            if not np.isfinite(feats).all():
                raise ValueError(f"`obsm[{features_key!r}]` of section {section!r} has non-finite values.")
            rows = [feats]
            if views_key is not None:
                views = np.asarray(raw[views_key], dtype=np.float64)[panel.keep]
                if views.ndim != 3 or views.shape[2] != feats.shape[1]:
                    raise ValueError(f"`obsm[{views_key!r}]` of section {section!r} must be (n, V, {feats.shape[1]}), "
                                     f"got {views.shape}.")  # fmt: skip
                if section != collection.sections[0] and views.shape[1] != self.n_views:
                    raise ValueError(f"`obsm[{views_key!r}]` has {views.shape[1]} views in section {section!r} but "
                                     f"{self.n_views} in the first section.")  # fmt: skip
                self.n_views = int(views.shape[1])
                rows.append(views.reshape(-1, views.shape[2]))
            if d is None:
                d = feats.shape[1]
                total, total_sq = np.zeros(d), np.zeros(d)
            elif feats.shape[1] != d:
                raise ValueError(f"`obsm[{features_key!r}]` has width {feats.shape[1]} in section {section!r} but "
                                 f"{d} in the first section; every section needs features of one encoder.")  # fmt: skip
            for r in rows:
                total += r.sum(0)
                total_sq += (r**2).sum(0)
                n_rows += len(r)
            self.libraries[section] = panel.library
            self.kept_names[section] = raw["obs_names"][panel.keep]
        self.feature_mean = total / n_rows
        self.feature_std = np.sqrt(np.clip(total_sq / n_rows - self.feature_mean**2, 0, None))

    def _read(self, section: str) -> dict[str, Any]:
        keys = [self.features_key] + ([self.views_key] if self.views_key else [])
        return self.collection.read(section, obsm_keys=keys, layer=self.layer)

    def block(self, section: str) -> SectionBlock:
        """Loader of one section's kept spots (``counts``, ``library``, ``features``, ``views``, ``obs_names``)."""
        return SectionBlock(self, section)

    def load(self, section: str) -> dict[str, np.ndarray]:
        """One section's kept spots, read from its file."""
        raw = self._read(section)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # reported once, when the collection was checked
            panel = panel_counts(raw["X"], raw["var_names"], self.genes, purpose="training")
        out = {MODULE_KEYS.COUNTS: panel.counts, MODULE_KEYS.LIBRARY: panel.library,
               MODULE_KEYS.FEATURES: np.asarray(raw[self.features_key], np.float32)[panel.keep],
               "obs_names": raw["obs_names"][panel.keep]}  # fmt: skip
        if self.views_key is not None:
            out["views"] = np.asarray(raw[self.views_key], np.float32)[panel.keep]
        return out

    def datamodule(self, recipe: TrainingRecipe, seed: int, buffer_sections: int) -> StreamingDataModule:
        from hinge_sc.train import StreamingDataModule

        if recipe.validation == "spots":
            raise ValueError(
                "`validation='spots'` is not available when training on a collection: validation holds out whole "
                "sections (`validation='section'` or `'auto'`)."
            )
        sections = self.collection.sections
        return StreamingDataModule(
            sections, {s: self.block(s) for s in sections}, self.libraries,
            validation_size=recipe.validation_size if len(sections) >= 2 else 0.0, batch_size=recipe.batch_size,
            seed=seed, views_per_epoch=recipe.views_per_epoch, buffer_sections=buffer_sections,
            n_views=self.n_views, sources={s: self.collection.source(s) for s in sections},
        )  # fmt: skip

    def obs_indices(self, sections: Sequence[str]) -> np.ndarray:
        """Positions in ``collection.obs`` of the kept spots of ``sections`` (in training order)."""
        if not len(sections):
            return np.array([], dtype=np.int64)
        names = np.concatenate([self.kept_names[s] for s in sections])
        return self.collection.obs.index.get_indexer(names)


class SectionBlock:
    """A picklable loader of one section (a block of :class:`~hinge_sc.train.BlockStream`)."""

    def __init__(self, source: CollectionSource, section: str):
        self.source, self.section = source, section

    def __call__(self) -> dict[str, np.ndarray]:
        return self.source.load(self.section)


class CollectionMixin:
    """:meth:`from_collection`: a :class:`~hinge_sc.HINGE` model trained on sections streamed from disk."""

    @classmethod
    def from_collection(
        cls,
        collection: SectionCollection,
        backbone: Backbone,
        genes: Sequence[str] | None = None,
        *,
        features_key: str = "X_histology",
        views_key: str | None = None,
        layer: str | None = None,
        allow_non_integer: bool = False,
        registration_spots: int = REGISTRATION_SPOTS,
        **kwargs: Any,
    ):
        """A model for many sections that do not fit in memory together; :meth:`train` then streams them.

        The model is registered (:meth:`setup_anndata`) on a small in-memory AnnData with ``registration_spots``
        spots of every section (``model.adata``); one pass over the collection checks every section's counts and
        features and computes the features' standardisation over all spots. :meth:`train` holds out whole
        sections for validation (as ``validation="section"``) and reads the training sections
        ``buffer_sections`` at a time each epoch (``model.train(buffer_sections=2)``); the linear skip is fitted
        from moments accumulated a section at a time. Per-section provenance (file, spots, role) is in
        ``model.train_params_["sections"]``.

        Parameters
        ----------
        collection
            The sections (:class:`~hinge_sc.io.SectionCollection`).
        backbone, genes
            As for :class:`~hinge_sc.HINGE`.
        features_key, views_key, layer, allow_non_integer
            As for :meth:`setup_anndata`, for every file of the collection.
        registration_spots
            Spots of each section in ``model.adata``.
        **kwargs
            Model arguments (``config=``, ``likelihood=``, ``seed=`` …).

        Examples
        --------
        >>> coll = hs.io.SectionCollection("sections/", section_key=None)  # one .h5ad per section
        >>> model = hs.HINGE.from_collection(coll, backbone, features_key="X_uni")
        >>> model.train()
        >>> model.train_params_["sections"][:2]
        """
        from hinge_sc.io import SectionCollection

        if not isinstance(collection, SectionCollection):
            raise TypeError(
                f"`collection` must be a `hs.io.SectionCollection`, got {type(collection).__name__}; for an AnnData "
                "in memory use `hs.HINGE.setup_anndata` and `hs.HINGE(adata, backbone)`."
            )
        check_positive_int(registration_spots, argument="registration_spots")
        keys = [features_key] + ([views_key] if views_key else [])
        for key in keys:
            collection.obsm_shape(key)  # every file has it (a clear error otherwise)
        registration = collection.to_adata(obsm_keys=keys, max_spots_per_section=registration_spots, layer=layer)
        for section in collection.sections:  # name the section whose counts are wrong (all spots are checked below)
            rows = (registration.obs[SECTION_COLUMN] == section).to_numpy()
            check_counts(registration.X[rows], where=f"the counts of section {section!r} ({collection.source(section)})",
                         allow_non_integer=allow_non_integer)  # fmt: skip
        cls.setup_anndata(registration, features_key=features_key, views_key=views_key, section_key=SECTION_COLUMN,
                          allow_non_integer=allow_non_integer)  # fmt: skip
        model = cls(registration, backbone, genes, **kwargs)
        source = CollectionSource(collection, model.panel_genes_, features_key=features_key, views_key=views_key,
                                  layer=layer, allow_non_integer=allow_non_integer)  # fmt: skip
        if model.config.standardize_features:
            model.module.set_feature_stats(torch.as_tensor(source.feature_mean, dtype=torch.float32),
                                           torch.as_tensor(source.feature_std, dtype=torch.float32))  # fmt: skip
        model.collection_source_ = source
        n_spots = sum(len(v) for v in source.libraries.values())
        model._model_summary_string += f"; trained on a collection of {len(collection.sections)} sections ({n_spots} spots)"
        return model
