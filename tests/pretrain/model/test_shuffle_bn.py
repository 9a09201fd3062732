"""Shuffling BN: single-process (shuffle + SplitBatchNorm) and across processes (gloo)."""

import os

import pytest
import torch
import torch.distributed as dist
import torch.nn as nn

from pretrain.model.moco import MoCo
from pretrain.model.shuffle_bn import (
    batch_shuffle_ddp,
    batch_shuffle_single,
    batch_unshuffle_ddp,
    batch_unshuffle_single,
)
from pretrain.model.split_bn import SplitBatchNorm
from tests.pretrain import gloo_launch


def _moco(bn_splits, shuffle):
    torch.manual_seed(0)
    return MoCo("resnet18", dim=8, K=16, mlp=False, bn_splits=bn_splits, shuffle=shuffle)


def _images(n=8):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(7))


def test_single_process_shuffle_and_split_bn_match_plain_encoder_in_eval():
    plain = _moco(1, "off").eval()
    shuffled = _moco(4, "single").eval()
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(shuffled.encode_keys(x), plain.encode_keys(x))


def test_shuffle_single_roundtrip_is_a_real_permutation():
    torch.manual_seed(1)
    x = torch.arange(16.0).unsqueeze(1)
    xs, undo = batch_shuffle_single(x)
    assert not torch.equal(xs, x) and sorted(xs.squeeze(1).tolist()) == x.squeeze(1).tolist()
    assert torch.equal(batch_unshuffle_single(xs, undo), x)


def test_split_bn_train_equals_bn_on_each_group_and_running_stats_averaged():
    torch.manual_seed(0)
    split = SplitBatchNorm(3, num_splits=4)
    split.weight.data.uniform_(0.5, 2)
    split.bias.data.uniform_(-1, 1)
    x = torch.randn(8, 3, 5, 5) * 3 + 1
    out = split(x)
    mean_run, var_run = [], []
    for g in range(4):
        bn = nn.BatchNorm2d(3)
        bn.load_state_dict(
            {k: v for k, v in split.state_dict().items()} | {"num_batches_tracked": torch.tensor(0)}
        )
        bn.running_mean.zero_(), bn.running_var.fill_(1)
        torch.testing.assert_close(out[g::4], bn(x[g::4]))  # group g = samples g, g+4, ...
        mean_run.append(bn.running_mean), var_run.append(bn.running_var)
    torch.testing.assert_close(split.running_mean, torch.stack(mean_run).mean(0))
    torch.testing.assert_close(split.running_var, torch.stack(var_run).mean(0))
    # Not the same as one BN over the whole batch.
    whole = nn.BatchNorm2d(3)
    whole.load_state_dict(split.state_dict())
    assert not torch.allclose(out, whole.train()(x))


def test_split_bn_eval_is_plain_bn_and_bad_batch_is_clear():
    split = SplitBatchNorm(3, num_splits=4)
    split.running_mean.uniform_(), split.running_var.uniform_(0.5, 2)
    plain = nn.BatchNorm2d(3)
    plain.load_state_dict(split.state_dict())
    x = torch.randn(6, 3, 4, 4)
    torch.testing.assert_close(split.eval()(x), plain.eval()(x))
    with pytest.raises(ValueError, match="multiple of model.bn_splits"):
        split.train()(x)


def _ddp_worker(rank, world, result_dir):
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    try:
        # Index-tagged rows: the shuffle must send every row somewhere and bring it back.
        n = 4
        x = torch.arange(rank * n, (rank + 1) * n, dtype=torch.float).unsqueeze(1)
        torch.manual_seed(100 + rank)  # different RNGs: only rank 0's permutation may count
        xs, undo = batch_shuffle_ddp(x)
        gathered = [torch.empty_like(xs) for _ in range(world)]
        dist.all_gather(gathered, xs)
        back = batch_unshuffle_ddp(xs, undo)
        # MoCo's key path across processes vs. the plain encoder on the whole batch.
        model = _moco(1, "auto").eval()
        full = _images(8)
        keys = model.encode_keys(full[rank * n : (rank + 1) * n])
        torch.save(
            {
                "shuffled": torch.cat(gathered),
                "back": back,
                "keys": keys,
                "mode": model.shuffle_mode(),
            },
            os.path.join(result_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_shuffle_across_two_gloo_processes_matches_unshuffled_eval(tmp_path):
    gloo_launch.spawn(_ddp_worker, (2, str(tmp_path)), nprocs=2)
    r = [torch.load(tmp_path / f"rank{i}.pt", weights_only=True) for i in range(2)]
    assert r[0]["mode"] == "ddp"
    shuffled = r[0]["shuffled"].squeeze(1)
    assert torch.equal(shuffled, r[1]["shuffled"].squeeze(1))  # one permutation for all ranks
    assert sorted(shuffled.tolist()) == list(range(8)) and shuffled.tolist() != list(range(8))
    for rank in range(2):
        assert r[rank]["back"].squeeze(1).tolist() == list(range(rank * 4, rank * 4 + 4))
    plain = _moco(1, "off").eval()
    with torch.no_grad():
        expected = plain.encode_keys(_images(8))
    torch.testing.assert_close(torch.cat([r[0]["keys"], r[1]["keys"]]), expected)


def test_split_bn_accepts_channels_last_input():
    # channels_last (used with AMP on CUDA) cannot be viewed as [N/S, S*C, H, W]: found on an H200.
    torch.manual_seed(0)
    x = torch.randn(8, 6, 5, 5)
    a, b = SplitBatchNorm(6, 4), SplitBatchNorm(6, 4)
    out_cl = a(x.to(memory_format=torch.channels_last))
    out = b(x)
    torch.testing.assert_close(out_cl, out)
    torch.testing.assert_close(a.running_mean, b.running_mean)
    torch.testing.assert_close(a.running_var, b.running_var)
