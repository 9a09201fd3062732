"""A tiny run of the speed benchmark (prints its figures; no timing assertions) and its baseline."""

import json
import os
import subprocess
import sys

import pytest
import torch

from pretrain.benchmark.reference import ReferenceMoCo
from pretrain.benchmark.run import Stepper, build_ours, format_summary, run_benchmark
from tests.paths import REPO as ROOT

# Small tensors: on a 2-core machine a second intra-op thread only adds waiting.
pytestmark = pytest.mark.usefixtures("one_thread")


def test_tiny_benchmark_reports_every_figure(capsys):
    out = run_benchmark(
        arch="resnet18",
        size=32,
        batch=2,
        K=8,
        small=None,
        device="cpu",
        images=2,
        rounds=1,
        steps=1,
        warmup=1,
        cpu_amp="off",
        peak_seconds=0.05,
        data_size=64,
        log=print,
    )
    d = out["data"]
    for key in (
        "reference_img_s_per_core",
        "project_reference_img_s_per_core",
        "ours_cpu_img_s_per_core",
        "ours_device_part_img_s",
        "ours_cpu_plus_device_img_s_per_core",
        "speedup_cpu_part",
    ):
        assert d[key] > 0, key
    assert out["peaks"]["fp32"] > 0 and out["peaks"]["bfloat16"] > 0
    (s,) = out["step"]
    assert s["step_gflop_per_image"] > 0 and s["host_max_rss_bytes"] > 0
    assert set(s["variants"]) == {"reference", "ours"}
    for v in s["variants"].values():
        assert (
            v["img_s"] > 0
            and 0 < v["frac_of_peak"]
            and torch.isfinite(torch.tensor(v["loss_after"]))
        )
    printed = capsys.readouterr().out
    assert "reference (main_moco.py" in printed and "img/s" in printed
    json.dumps(out)  # --json writes exactly this
    with capsys.disabled():
        print(format_summary(out))


def test_reference_and_our_step_compute_the_same_thing():
    """The benchmark's baseline (official builder) and pretrain.model.moco.MoCo: same logits, same
    updates.
    """
    torch.manual_seed(0)
    ref = ReferenceMoCo("resnet18", dim=16, K=8, m=0.9, T=0.2, mlp=True)
    ours = build_ours("resnet18", 16, 8, 0.9, 0.2, True)
    ours.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(1)
    im_q, im_k = torch.randn(
        2, 4, 3, 32, 32, generator=g
    )  # batch 2 would make BN outputs +-1: chaotic
    a, b = Stepper(ref, "cpu"), Stepper(ours, "cpu", optimizer_impl={"foreach": True})
    for _ in range(2):  # the second step sees the first's momentum update, queue and SGD step
        a.step(im_q, im_k)
        b.step(im_q, im_k)
        torch.testing.assert_close(
            a.last_loss, b.last_loss, atol=1e-3, rtol=0
        )  # rounding of the two momentum updates
    torch.testing.assert_close(ref.queue, ours.queue, atol=1e-4, rtol=0)
    for p, q in zip(ref.encoder_k.parameters(), ours.encoder_k.parameters()):
        torch.testing.assert_close(p, q, atol=1e-4, rtol=0)


def test_cuda_graph_needs_cuda():
    if torch.cuda.is_available():
        assert Stepper(
            build_ours("resnet18", 16, 8, 0.9, 0.2, True), "cuda", torch.bfloat16, cuda_graph=True
        )
    else:
        with pytest.raises(ValueError, match="needs a CUDA device"):
            Stepper(build_ours("resnet18", 16, 8, 0.9, 0.2, True), "cpu", cuda_graph=True)


def test_cli_writes_json_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [
        sys.executable,
        os.path.join(ROOT, "tools", "benchmark_pretrain.py"),
        "--device",
        "cpu",
        "--data-only",
        "--images",
        "2",
        "--data-size",
        "48",
        "--rounds",
        "1",
        "--json",
        str(out),
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert "images/s per CPU core" in r.stdout
    assert json.loads(out.read_text())["data"]["images"] == 2
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode != 0 and "--force" in r.stderr
