"""Baselines of the benchmark: ridge probe (fixed or cross-validated alpha, optionally probabilistic), MLP regressor,
k-NN retrieval and the training mean."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, ClassVar

import numpy as np

from hinge_sc._random import seeded

from ._base import Baseline

logger = logging.getLogger(__name__)


@contextmanager
def _one_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class TrainingMean(Baseline):
    """Predict the mean training expression of each gene for every spot.

    The floor of any image-based method: its per-gene correlations are undefined (a constant prediction), so
    only MSE, MAE and the relative variance distance (1 by construction) are scored.
    """

    name: ClassVar[str] = "mean"

    def _fit(self, x: np.ndarray, y: np.ndarray, spots: np.ndarray, groups: np.ndarray | None = None) -> None:
        self.gene_mean_ = y.mean(0)

    def _predict(self, x: np.ndarray):
        return np.broadcast_to(self.gene_mean_, (len(x), len(self.gene_mean_))).copy(), None, None


#: Singular values below this fraction of the largest count as 0 (the Gram route resolves them to ~1e-8).


class KNNRetrieval(Baseline):
    """Retrieve the ``k`` training spots with the closest image features and average their expression.

    BLEEP-style retrieval :cite:p:`Xie2023` without the contrastive projection: neighbours are searched in the
    standardised feature space of the training spots' identity views (Euclidean distance). The neighbours'
    profiles are the method's samples; their mean is the prediction and their s.d. its spread.

    Parameters
    ----------
    n_neighbors
        ``k`` (BLEEP averages the top 50).
    seed
        Recorded only (the retrieval is deterministic).
    """

    name: ClassVar[str] = "knn"

    def __init__(self, n_neighbors: int = 50, *, seed: int = 0):
        super().__init__(seed=seed)
        if n_neighbors < 1:
            raise ValueError(f"`n_neighbors` must be a positive integer, found {n_neighbors}.")
        self.n_neighbors = int(n_neighbors)

    def _hyperparameters(self) -> dict[str, Any]:
        return {"n_neighbors": self.n_neighbors}

    def _fit(self, x: np.ndarray, y: np.ndarray, spots: np.ndarray, groups: np.ndarray | None = None) -> None:
        from sklearn.neighbors import NearestNeighbors

        _, first = np.unique(spots, return_index=True)  # one row per spot: its first (identity) view
        self.profiles_ = y[first]
        k = min(self.n_neighbors, len(first))
        self.index_ = NearestNeighbors(n_neighbors=k).fit(x[first])

    def _predict(self, x: np.ndarray):
        _, idx = self.index_.kneighbors(x)
        samples = self.profiles_[idx]  # (n, k, G)
        return samples.mean(1), samples.std(1), samples


class MLPRegressor(Baseline):
    """Multilayer perceptron from image features to expression, trained with MSE (ST-Net-style, :cite:p:`He2020`).

    ST-Net fine-tunes a DenseNet; with frozen features its trainable part is this regression head. AdamW,
    dropout, a fixed number of epochs (no test data is used to choose it); with views every augmented view
    is a sample. Stochastic: results depend on ``seed``. The network is small, so it runs on one CPU thread
    (more threads only add synchronisation, which is slow on a busy machine); the setting is restored afterwards.

    Parameters
    ----------
    hidden
        Widths of the hidden layers.
    dropout
        Dropout after each hidden layer.
    max_epochs, batch_size, lr, weight_decay
        Training settings.
    seed
        Seed of the initialisation and the minibatch order.
    """

    name: ClassVar[str] = "mlp"
    stochastic: ClassVar[bool] = True

    def __init__(
        self,
        hidden: tuple[int, ...] = (256,),
        *,
        dropout: float = 0.2,
        max_epochs: int = 30,
        batch_size: int = 128,
        lr: float = 1e-3,
        weight_decay: float = 1e-3,
        seed: int = 0,
    ):
        super().__init__(seed=seed)
        if not 0 <= dropout < 1:
            raise ValueError(f"`dropout` must be in [0, 1), found {dropout}.")
        if max_epochs < 1 or batch_size < 1:
            raise ValueError(f"`max_epochs` and `batch_size` must be ≥ 1, found {max_epochs}, {batch_size}.")
        self.hidden, self.dropout = tuple(int(h) for h in hidden), float(dropout)
        self.max_epochs, self.batch_size = int(max_epochs), int(batch_size)
        self.lr, self.weight_decay = float(lr), float(weight_decay)

    def _hyperparameters(self) -> dict[str, Any]:
        return {"hidden": list(self.hidden), "dropout": self.dropout, "max_epochs": self.max_epochs,
                "batch_size": self.batch_size, "lr": self.lr, "weight_decay": self.weight_decay}  # fmt: skip

    def _fit(self, x: np.ndarray, y: np.ndarray, spots: np.ndarray, groups: np.ndarray | None = None) -> None:
        import torch
        from torch import nn

        with seeded(self.seed), _one_thread():
            layers: list[nn.Module] = []
            width = x.shape[1]
            for h in self.hidden:
                layers += [nn.Linear(width, h), nn.GELU(), nn.Dropout(self.dropout)]
                width = h
            net = nn.Sequential(*layers, nn.Linear(width, y.shape[1]))
            self.target_mean_ = y.mean(0)
            xt = torch.as_tensor(x, dtype=torch.float32)
            yt = torch.as_tensor(y - self.target_mean_, dtype=torch.float32)
            opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            gen = torch.Generator().manual_seed(self.seed)
            net.train()
            self.history_ = []
            for _ in range(self.max_epochs):
                order, total = torch.randperm(len(xt), generator=gen), 0.0
                for start in range(0, len(xt), self.batch_size):
                    idx = order[start : start + self.batch_size]
                    loss = ((net(xt[idx]) - yt[idx]) ** 2).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    total += float(loss.detach()) * len(idx)
                self.history_.append(total / len(xt))
        self.net_ = net.eval()

    def _predict(self, x: np.ndarray):
        import torch

        with torch.inference_mode(), _one_thread():
            out = self.net_(torch.as_tensor(x, dtype=torch.float32)).numpy()
        return out.astype(np.float64) + self.target_mean_, None, None
