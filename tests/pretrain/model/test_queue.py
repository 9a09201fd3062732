"""The queue is a ring buffer: any batch size, wraps around K, oldest keys overwritten first."""

import pytest
import torch

from pretrain.model.queue import enqueue, random_queue


def test_ring_contents_with_odd_batch_sizes():
    K, C = 10, 2
    queue, ptr = torch.zeros(C, K), torch.zeros(1, dtype=torch.long)
    expected = [None] * K  # reference: a Python ring of key ids
    pos, next_id = 0, 1
    for batch in [3, 4, 5, 7, 1, 10, 2]:
        keys = torch.arange(next_id, next_id + batch, dtype=torch.float).unsqueeze(1).repeat(1, C)
        enqueue(queue, ptr, keys)
        for i in range(batch):
            expected[(pos + i) % K] = next_id + i
        pos, next_id = (pos + batch) % K, next_id + batch
        assert ptr.item() == pos
        assert queue[0].tolist() == [float(e) if e is not None else 0.0 for e in expected]
        assert torch.equal(queue[0], queue[1])
    # After 32 keys, the queue holds exactly the 10 newest.
    assert sorted(int(v) for v in queue[0].tolist()) == list(range(next_id - K, next_id))


def test_batch_larger_than_K_is_rejected_with_fix():
    with pytest.raises(ValueError, match="raise model.K"):
        enqueue(torch.zeros(2, 4), torch.zeros(1, dtype=torch.long), torch.ones(5, 2))


def test_random_queue_is_unit_columns():
    q = random_queue(8, 100)
    assert q.shape == (8, 100)
    torch.testing.assert_close(q.norm(dim=0), torch.ones(100))
