"""Streaming blocks of spots (``hinge_sc.train._stream``): every item once per epoch, seeded, bounded memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hinge_sc.train import BlockStream


def _blocks(sizes, loads):
    """Blocks whose items are their global ids; ``loads`` records which block was loaded when."""
    starts = np.concatenate([[0], np.cumsum(sizes)])

    def block(b):
        def load():
            loads.append(b)
            return {"ids": np.arange(starts[b], starts[b + 1])}

        return load

    return [block(b) for b in range(len(sizes))]


def _items(block, generator, epoch):
    ids = torch.as_tensor(block["ids"])
    return (lambda rows: {"ids": ids[rows]}), len(ids)


def _epoch(stream):
    return torch.cat([b["ids"] for b in stream]).tolist()


def test_every_item_once_per_epoch_in_a_seeded_order_that_changes_between_epochs():
    sizes, loads = [7, 3, 11, 5, 9], []
    stream = BlockStream(_blocks(sizes, loads), sizes, _items, batch_size=4, seed=1, buffer_blocks=2)
    first, second = _epoch(stream), _epoch(stream)
    assert sorted(first) == sorted(second) == list(range(sum(sizes)))
    assert first != second
    assert len(stream) == -(-sum(sizes) // 4)
    assert all(len(b["ids"]) == 4 for b in list(stream)[:-1])  # batches span buffers: only the last is short
    again = BlockStream(_blocks(sizes, []), sizes, _items, batch_size=4, seed=1, buffer_blocks=2)
    assert _epoch(again) == first  # the order is a function of the seed and the epoch
    other = BlockStream(_blocks(sizes, []), sizes, _items, batch_size=4, seed=2, buffer_blocks=2)
    assert _epoch(other) != first


def test_at_most_buffer_blocks_are_loaded_before_their_items_are_used():
    sizes, loads = [6, 6, 6, 6, 6, 6], []
    stream = BlockStream(_blocks(sizes, loads), sizes, _items, batch_size=6, seed=0, buffer_blocks=2)
    seen = []
    for batch in stream:
        seen.append((len(loads), batch["ids"]))
    # the items of the first six batches come from the first two blocks loaded
    first_two = set(range(6 * loads[0], 6 * loads[0] + 6)) | set(range(6 * loads[1], 6 * loads[1] + 6))
    assert all(n == 2 for n, _ in seen[:2])
    assert set(torch.cat([ids for _, ids in seen[:2]]).tolist()) == first_two
    assert sorted(loads) == list(range(6))


def test_shuffle_off_keeps_blocks_and_items_in_order():
    sizes = [3, 4]
    stream = BlockStream(_blocks(sizes, []), sizes, _items, batch_size=5, shuffle=False)
    assert _epoch(stream) == list(range(7))


def test_processes_share_the_order_and_split_the_batches(monkeypatch):
    import hinge_sc.train._stream as stream_module

    sizes = [5, 8, 6]
    batches = {}
    for rank in (0, 1):
        monkeypatch.setattr(stream_module, "_rank_and_world", lambda rank=rank: (rank, 2))
        stream = BlockStream(_blocks(sizes, []), sizes, _items, batch_size=3, seed=4)
        batches[rank] = [b["ids"].tolist() for b in stream]
        assert len(batches[rank]) == len(stream) == 3  # 7 batches of 3 → 3 rounds of 2, the 7th dropped
    ids0 = {i for b in batches[0] for i in b}
    ids1 = {i for b in batches[1] for i in b}
    assert not ids0 & ids1
    assert len(ids0 | ids1) == 18


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="2 blocks but 1 sizes"):
        BlockStream([dict, dict], [1], _items, batch_size=2)
    with pytest.raises(ValueError, match="buffer_blocks"):
        BlockStream([dict], [1], _items, batch_size=2, buffer_blocks=0)
