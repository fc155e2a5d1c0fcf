"""Randomness without global side effects: seeded blocks, per-spot seeds and the sampler's noise source.

- :func:`seeded` runs a block with torch's RNGs seeded and restores them afterwards, so hinge_sc never reseeds
  the caller's global state (unlike ``lightning.seed_everything``).
- :func:`spot_seeds` and :class:`Noise` give every spot its own random stream derived from ``(seed, spot name)``,
  so a spot's generated values do not depend on the batch it is in, on ``batch_size`` or on how spots are split
  across processes.
"""

from __future__ import annotations

import contextlib
import hashlib
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's RNGs (CPU and every CUDA device) for a block, then restore them as they were.

    Parameters
    ----------
    seed
        Seed for the block: an integer (a float or a string raises, naming ``seed``).
    """
    from hinge_sc._validators import check_seed

    check_seed(seed)
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.manual_seed(int(seed))
        yield


@contextlib.contextmanager
def global_numpy_rng_kept() -> Iterator[None]:
    """Restore numpy's global RNG after the block (scvi-tools' count check draws from it with ``np.random.choice``)."""
    state = np.random.get_state()
    try:
        yield
    finally:
        np.random.set_state(state)


def spot_seeds(seed: int, keys: Iterable[object]) -> np.ndarray:
    """A 63-bit seed per spot from ``(seed, key)`` (BLAKE2b; stable across machines, processes and versions).

    Parameters
    ----------
    seed
        The run's seed.
    keys
        One identity per spot, e.g. ``adata.obs_names`` (spots with equal names get equal seeds).

    Returns
    -------
    ``int64`` array, one seed per key.
    """
    prefix = f"hinge_sc:{int(seed)}:".encode()
    out = [
        int.from_bytes(hashlib.blake2b(prefix + str(k).encode(), digest_size=8).digest(), "little") >> 1 for k in keys
    ]
    return np.asarray(out, dtype=np.int64)


class Noise:
    """Random numbers for ``n`` rows (spots × samples), from one generator per spot or one for all rows.

    Parameters
    ----------
    generators
        One generator per group of ``rows_per_generator`` consecutive rows (``None``: torch's global RNG).
    rows_per_generator
        Rows drawn from each generator.
    device
        Device of the returned tensors.
    """

    def __init__(
        self,
        generators: Sequence[torch.Generator | None],
        rows_per_generator: int,
        device: torch.device | str = "cpu",
    ):
        self.generators = list(generators)
        self.rows = int(rows_per_generator)
        self.device = torch.device(device)

    @classmethod
    def per_spot(cls, seeds: Sequence[int], n_samples: int, device: torch.device | str = "cpu") -> Noise:
        """One CPU generator per spot, seeded by :func:`spot_seeds`; row ``i·S + s`` is sample ``s`` of spot ``i``.

        CPU generators make the draws the same on every device type.
        """
        return cls([torch.Generator().manual_seed(int(s)) for s in seeds], n_samples, device)

    @classmethod
    def shared(cls, generator: torch.Generator | None, n_rows: int, device: torch.device | str = "cpu") -> Noise:
        """All ``n_rows`` rows from one generator (training, validation and direct module use)."""
        return cls([generator], n_rows, device)

    @property
    def n_rows(self) -> int:
        """Number of rows ``n``."""
        return self.rows * len(self.generators)

    def _draw(self, fn, tail: tuple[int, ...]) -> torch.Tensor:
        parts = [
            fn((self.rows, *tail), generator=g, device=self.device if g is None else g.device) for g in self.generators
        ]
        return (parts[0] if len(parts) == 1 else torch.cat(parts)).to(self.device)

    def rand(self, *tail: int) -> torch.Tensor:
        """Uniform [0, 1) draws of shape ``(n, *tail)``."""
        return self._draw(torch.rand, tail)

    def randn(self, *tail: int) -> torch.Tensor:
        """Standard normal draws of shape ``(n, *tail)``."""
        return self._draw(torch.randn, tail)
