"""MoCo model: logits layout, momentum update, gradients, initial state, state-dict names."""

import pytest
import torch
import torch.nn.functional as F

from pretrain.model.moco import (
    MoCo,
    build_encoder,
    contrast_stats,
    info_nce_loss,
    query_similarity,
)
from pretrain.model.momentum import momentum_update


def tiny_moco(**kw):
    args = dict(arch="resnet18", dim=16, K=32, m=0.9, T=0.2, mlp=True, bn_splits=1, shuffle="off")
    args.update(kw)
    torch.manual_seed(0)
    return MoCo(**args)


def images(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=g)


def test_logits_shape_positive_first_and_labels_zero():
    model = tiny_moco().eval()  # eval: encoders are deterministic functions, easy to recompute
    queue_before = model.queue.clone()
    im_q, im_k = images(4, 1), images(4, 2)
    logits, labels = model(im_q, im_k)
    assert logits.shape == (4, 1 + 32)
    assert labels.dtype == torch.long and (labels == 0).all()
    with torch.no_grad():
        q = F.normalize(model.encoder_q(im_q), dim=1)
        k = F.normalize(model.encoder_k(im_k), dim=1)
    torch.testing.assert_close(logits[:, 0], (q * k).sum(1) / 0.2)
    torch.testing.assert_close(logits[:, 1:], q @ queue_before / 0.2)
    assert info_nce_loss(logits, labels) > 0


def test_contrast_stats_are_top1_and_mean_cosines():
    model = tiny_moco().eval()
    queue_before = model.queue.clone()
    im_q, im_k = images(6, 4), images(6, 5)
    logits, _ = model(im_q, im_k)
    with torch.no_grad():
        q = F.normalize(model.encoder_q(im_q), dim=1)
        k = F.normalize(model.encoder_k(im_k), dim=1)
    top1, sim_pos, sim_neg = contrast_stats(logits, model.T).tolist()
    neg = q @ queue_before
    assert top1 == pytest.approx(float(((q * k).sum(1) > neg.max(1).values).float().mean()))
    assert sim_pos == pytest.approx(float((q * k).sum(1).mean()), abs=1e-5)
    assert sim_neg == pytest.approx(float(neg.mean()), abs=1e-5)
    # identical views: q.k+ = 1 exactly, every positive wins
    top1, sim_pos, _ = contrast_stats(model(im_q, im_q)[0], model.T).tolist()
    assert top1 == 1.0 and sim_pos == pytest.approx(1.0, abs=1e-5)


def test_query_similarity_is_the_mean_cosine_over_pairs_of_different_images():
    q = F.normalize(torch.randn(7, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    sim = q @ q.T
    expected = sim[~torch.eye(7, dtype=torch.bool)].mean()
    torch.testing.assert_close(query_similarity(q), expected)
    # a collapsed encoder: every image one vector -> 1; opposite pairs cancel -> below 0
    assert float(query_similarity(q[:1].repeat(5, 1))) == pytest.approx(1.0, abs=1e-6)
    assert float(query_similarity(torch.cat([q[:1], -q[:1]]))) == pytest.approx(-1.0, abs=1e-6)
    # what the forward records for the training loop: its own queries' value
    model = tiny_moco().eval()
    im_q = images(5, 6)
    model(im_q, images(5, 7))
    with torch.no_grad():
        q_model = F.normalize(model.encoder_q(im_q), dim=1)
    torch.testing.assert_close(model.last_query_similarity, query_similarity(q_model))


def test_positive_logit_wins_for_identical_views():
    model = tiny_moco().eval()
    x = images(4, 3)
    logits, _ = model(x, x)
    # q == k (encoders equal at start): l_pos = 1/T, the maximum any cosine can give.
    torch.testing.assert_close(logits[:, 0], torch.full((4,), 1 / 0.2))
    assert (logits.argmax(1) == 0).all()


def test_encoders_start_equal_and_queue_is_unit_vectors():
    model = tiny_moco()
    for (n, pq), (_, pk) in zip(
        model.encoder_q.state_dict().items(), model.encoder_k.state_dict().items()
    ):
        assert torch.equal(pq, pk), n
    assert model.queue.shape == (16, 32)
    torch.testing.assert_close(model.queue.norm(dim=0), torch.ones(32))
    assert model.queue_ptr.item() == 0


def test_state_dict_names_match_official_layout():
    keys = list(tiny_moco().state_dict())
    assert {k.split(".")[0] for k in keys} == {"encoder_q", "encoder_k", "queue", "queue_ptr"}
    assert "encoder_q.conv1.weight" in keys and "encoder_q.layer4.1.bn2.running_var" in keys
    assert "encoder_q.fc.0.weight" in keys and "encoder_q.fc.2.weight" in keys  # v2 MLP head


def test_heads_v1_linear_and_v2_mlp():
    v1 = build_encoder("resnet18", 128, mlp=False)
    assert (
        isinstance(v1.fc, torch.nn.Linear)
        and v1.fc.in_features == 512
        and v1.fc.out_features == 128
    )
    v2 = build_encoder("resnet50", 128, mlp=True)
    assert [tuple(m.weight.shape) for m in v2.fc if isinstance(m, torch.nn.Linear)] == [
        (2048, 2048),
        (128, 2048),
    ]


def test_momentum_update_formula_and_buffers_left_alone():
    q = build_encoder("resnet18", 8, mlp=False)
    k = build_encoder("resnet18", 8, mlp=False)
    for b in q.buffers():
        b.fill_(3)
    before_k = [p.clone() for p in k.parameters()]
    momentum_update(k, q, 0.99)
    for pk, pk0, pq in zip(k.parameters(), before_k, q.parameters()):
        torch.testing.assert_close(pk, 0.99 * pk0 + 0.01 * pq)
    for (
        bk
    ) in k.buffers():  # official: parameters only; f_k's BN statistics come from its own batches
        assert not (bk == 3).all()


def test_key_encoder_updated_by_momentum_before_keys_and_gets_no_gradient():
    model = tiny_moco(m=0.5).train()
    opt = torch.optim.SGD(model.encoder_q.parameters(), lr=0.5)
    assert not any(p.requires_grad for p in model.encoder_k.parameters())
    for step in range(2):
        logits, labels = model(images(4, 10 + step), images(4, 20 + step))
        opt.zero_grad()
        info_nce_loss(logits, labels).backward()
        assert all(p.grad is None for p in model.encoder_k.parameters())
        assert all(p.grad is not None for p in model.encoder_q.parameters())
        q_before = [p.detach().clone() for p in model.encoder_q.parameters()]
        k_before = [p.detach().clone() for p in model.encoder_k.parameters()]
        opt.step()
    # The next forward first moves k halfway (m = 0.5) towards the *updated* q.
    model(images(4, 30), images(4, 31))
    for pk, pk0, pq in zip(model.encoder_k.parameters(), k_before, model.encoder_q.parameters()):
        torch.testing.assert_close(pk, 0.5 * pk0 + 0.5 * pq.detach())
    assert any(not torch.equal(a, b) for a, b in zip(q_before, model.encoder_q.parameters()))


def test_keys_enqueued_after_step():
    model = tiny_moco().eval()
    im_k = images(5, 4)
    model(images(5, 5), im_k)
    with torch.no_grad():
        k = F.normalize(model.encoder_k(im_k), dim=1)
    torch.testing.assert_close(model.queue[:, :5], k.t())
    assert model.queue_ptr.item() == 5


def test_batch_larger_than_queue_is_a_clear_error():
    model = tiny_moco(K=4)
    with pytest.raises(ValueError, match="queue holds only K=4"):
        model(images(6, 0), images(6, 1))
