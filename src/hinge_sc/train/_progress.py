"""Progress of training runs: a progress bar on a terminal, one line per epoch elsewhere; no Lightning tips.

Lightning's progress bar redraws one line with carriage returns; in a log file (stderr not a terminal) that is one
unreadable line, or nothing for a long time. :class:`EpochLines` replaces it there with one line per epoch:

``Epoch 3/20: train_loss 12.31 (t ≤ 17 of 50) · validation_loss 11.72 (uniform t) · 2.4 s``
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TYPE_CHECKING, TextIO

import lightning.pytorch as pl

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Start of Lightning's advertisement lines (logged at INFO every time a Trainer is built), dropped.
_TIP_PREFIX = "💡 Tip:"
#: Loggers through which Lightning prints its rank-zero INFO lines.
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _NoTips(logging.Filter):
    """Drop Lightning's "💡 Tip" advertisement (litlogger, …); keep every other line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(_TIP_PREFIX)


def quiet_lightning() -> None:
    """Drop Lightning's tip lines (idempotent; other lines, e.g. "GPU available", stay)."""
    for name in _RANK_ZERO_LOGGERS:
        log = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in log.filters):
            log.addFilter(_NoTips())


def use_epoch_lines(show_progress_bar: bool, stream: TextIO | None = None) -> bool:
    """Whether to print one line per epoch instead of a progress bar: progress asked for, ``stream`` not a TTY."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(show_progress_bar) and not (callable(isatty) and isatty())


def format_epoch(epoch: int, max_epochs: int, metrics: Mapping[str, float], seconds: float, n_steps: int | None) -> str:
    """One epoch's line: losses (with the t they were drawn at for HINGE), then the epoch's duration."""
    parts = [f"Epoch {epoch}/{max_epochs}:"]
    items = []
    if "train_loss" in metrics:
        t_max = metrics.get("t_max")
        where = f" (t ≤ {int(t_max)} of {n_steps})" if t_max is not None and n_steps else ""
        items.append(f"train_loss {metrics['train_loss']:.4g}{where}")
    if "validation_loss" in metrics:
        items.append(f"validation_loss {metrics['validation_loss']:.4g}{' (uniform t)' if n_steps else ''}")
    items.append(f"{seconds:.1f} s")
    return " ".join(parts) + " " + " · ".join(items)


class EpochLines(pl.Callback):
    """Write one line per training epoch with its losses to ``stream`` (default: stderr).

    Parameters
    ----------
    n_steps
        The model's diffusion steps ``T`` (HINGE), to state the t range of each loss; ``None`` for pre-training.
    stream
        Where to write (default: ``sys.stderr`` at the time of writing).
    """

    def __init__(self, n_steps: int | None = None, stream: TextIO | None = None):
        self.n_steps = n_steps
        self.stream = stream
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer, pl_module):
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or trainer.global_rank != 0:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        line = format_epoch(
            trainer.current_epoch + 1, trainer.max_epochs, metrics, time.perf_counter() - self._start, self.n_steps
        )
        stream = self.stream or sys.stderr
        print(line, file=stream, flush=True)
