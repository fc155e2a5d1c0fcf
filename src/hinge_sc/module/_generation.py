"""Generation in batches of spots: the loop behind every generation path (in memory, into a store, in shards).

Each spot draws its random numbers from its own stream, seeded by ``(seed, obs name)``
(:func:`hinge_sc._random.spot_seeds`), so a spot's samples do not depend on the batch it is in, on ``batch_size``, on
which batches were run before (resuming) or on how spots are split across processes.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from hinge_sc._random import Noise
from hinge_sc._scales import clip_to_floor

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from ._config import GenerationConfig
    from ._hinge import HINGEModule

logger = logging.getLogger(__name__)

#: Reverse-process rows (spots × samples) per forward pass on CPU: small enough for the activations of a
#: d = 128 model to stay in the CPU caches (measured fastest, benchmarks/performance.py).
CPU_ROWS_PER_BATCH = 32
#: Spots per batch on an accelerator.
ACCELERATOR_SPOTS_PER_BATCH = 256


def resolve_batch_size(batch_size: int | None, n_samples: int, device: torch.device) -> int:
    """``batch_size``, or by default ``⌈32 / S⌉`` spots on CPU and 256 on an accelerator."""
    if batch_size is not None:
        return batch_size
    if torch.device(device).type == "cpu":
        return max(1, -(-CPU_ROWS_PER_BATCH // max(int(n_samples), 1)))
    return ACCELERATOR_SPOTS_PER_BATCH


def batch_bounds(n_spots: int, batch_size: int) -> list[tuple[int, int]]:
    """``[(start, stop), …]`` of consecutive batches of ``batch_size`` spots."""
    return [(s, min(s + batch_size, n_spots)) for s in range(0, n_spots, batch_size)]


def sample_batch(
    module: HINGEModule,
    features: np.ndarray,
    seeds: np.ndarray,
    config: GenerationConfig,
    library: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Samples ``(B, S, G)`` and point predictions ``(B, G)`` (float32, CPU) of one batch of spots, each spot from its
    own seed.

    Parameters
    ----------
    module
        The model's module (eval mode).
    features
        ``(B, D)`` raw image features.
    seeds
        ``(B,)`` per-spot seeds (:func:`hinge_sc._random.spot_seeds`).
    config
        Generation settings (:class:`~hinge_sc.module.GenerationConfig`); with ``clip`` the samples and the expected
        values are clipped at the floor of the model scale before the point prediction is averaged.
    library
        ``(B,)`` library sizes to generate at (count likelihoods; ``None``: the training depth).
    """
    device = next(module.parameters()).device
    batch = torch.as_tensor(np.asarray(features, dtype=np.float32), device=device)
    depth = None if library is None else torch.as_tensor(np.asarray(library, dtype=np.float32), device=device)
    noise = Noise.per_spot(seeds, config.n_samples, device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.precision == "bf16"):
        out, expected = module.sample(batch, config.n_samples, config.n_steps, noise=noise, reveal=config.reveal,
                                      return_expected=True, library=depth)  # fmt: skip
    samples, expected = out.float().cpu().numpy(), expected.float().cpu().numpy()
    weight = getattr(module, "correction_weight", None)
    if weight is not None and not bool(torch.all(weight == 1)):  # the correction weighed on held-out spots (§5.6)
        skip = module.skip_term(batch).float().cpu().numpy()
        shift = (1.0 - weight.cpu().numpy()) * (expected.mean(axis=1) - skip)
        samples, expected = samples - shift[:, None], expected - shift[:, None]
    spread = float(getattr(module, "spread_scale", 1.0))
    if spread != 1.0:  # the spread calibrated on held-out spots (docs/method.md §5.6)
        centre = samples.mean(axis=1, keepdims=True)
        samples = centre + spread * (samples - centre)
    if config.clip:
        samples = clip_to_floor(samples, module.target_scale)
        expected = clip_to_floor(expected, module.target_scale)
    point = (expected if config.mean_estimate == "expected" else samples).mean(axis=1)
    return samples, point.astype(np.float32, copy=False)


def iter_batches(
    module: HINGEModule,
    features: np.ndarray,
    seeds: np.ndarray,
    batches: Iterable[tuple[int, int]],
    config: GenerationConfig,
    *,
    library: np.ndarray | None = None,
    show_progress_bar: bool = True,
    n_total: int | None = None,
) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
    """Generate batch after batch: yields ``(start, stop, samples (stop - start, S, G), point (stop - start, G))``
    (see :func:`sample_batch`).

    Only one batch of samples is held at a time, so memory stays bounded for any number of spots.

    Parameters
    ----------
    batches
        ``(start, stop)`` rows of ``features`` and ``seeds`` to generate (e.g. the batches a resumed run still lacks).
    n_total
        Spots shown as the progress bar's total (default: those in ``batches``).
    """
    batches = list(batches)
    total = n_total if n_total is not None else sum(b - a for a, b in batches)
    with tqdm(total=total, desc="Generating", unit="spot", disable=not show_progress_bar) as bar:
        bar.update(total - sum(b - a for a, b in batches))  # done before (resumed runs)
        for start, stop in batches:
            depth = None if library is None else library[start:stop]
            samples, point = sample_batch(module, features[start:stop], seeds[start:stop], config, depth)
            bar.update(stop - start)
            yield start, stop, samples, point
