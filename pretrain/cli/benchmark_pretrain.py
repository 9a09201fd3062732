"""Side-by-side speed of MoCo pretraining: data path and training step, reference vs ours.

  python tools/benchmark_pretrain.py                       # everything, on the GPU if there is one
  python tools/benchmark_pretrain.py --device cpu --step-only --batch 8 --steps 2
  python tools/benchmark_pretrain.py --device cuda --json bench.json

Prints per-core data-path images/s, training-step images/s, % of measured matmul peak and peak
memory; the logic is in ``pretrain/benchmark.py``.
"""

import argparse
import json
import os

import torch

from pretrain.benchmark.run import run_benchmark
from pretrain.io import atomic_write_bytes


def parse_small(text):
    if text.lower() == "none":
        return None
    try:
        arch, size, batch = text.split(":")
        return arch, int(size), int(batch)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--also expects ARCH:SIZE:BATCH (e.g. resnet18:64:64) or none, got {text!r}"
        ) from None


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--size", type=int, default=224, help="crop size of the main step configuration")
    p.add_argument(
        "--batch", type=int, default=32, help="per-device batch of the main step configuration"
    )
    p.add_argument("--K", type=int, default=65536, help="queue length")
    p.add_argument(
        "--also",
        type=parse_small,
        default=("resnet18", 64, 64),
        help="second step configuration ARCH:SIZE:BATCH, or none (default resnet18:64:64)",
    )
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default=None, help="default: cuda if available"
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--data-only", action="store_true")
    g.add_argument("--step-only", action="store_true")
    p.add_argument("--images", type=int, default=64, help="generated JPEGs for the data path")
    p.add_argument(
        "--data-size", type=int, default=224, help="crop size of the data path (224 in the paper)"
    )
    p.add_argument("--workers", type=int, default=0, help="also time a DataLoader with W workers")
    p.add_argument("--rounds", type=int, default=3, help="interleaved reference/ours rounds")
    p.add_argument("--steps", type=int, default=5, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps per model")
    p.add_argument("--aug", choices=("v1", "v2"), default="v2")
    p.add_argument(
        "--cpu-amp",
        choices=("auto", "bf16", "off"),
        default="auto",
        help="our CPU step: bf16 autocast if faster (auto), always, or never",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile our encoders")
    p.add_argument(
        "--no-cuda-graph",
        action="store_true",
        help="on CUDA, skip the extra 'ours_graph' variant (our step replayed as a CUDA graph)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads for the CPU step (default: torch's); the "
        "data path always uses 1",
    )
    p.add_argument("--json", default=None, help="write all figures to this JSON file")
    p.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    a = p.parse_args(argv)
    if a.json and os.path.exists(a.json) and not a.force:
        p.error(f"{a.json} exists; pass --force to overwrite it or choose another --json path")
    if a.images < 1 or a.batch < 1 or a.rounds < 1 or a.steps < 1:
        p.error("--images, --batch, --rounds and --steps must be >= 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    out = run_benchmark(
        arch=a.arch,
        size=a.size,
        batch=a.batch,
        K=a.K,
        small=a.also,
        device=a.device,
        data=not a.step_only,
        step=not a.data_only,
        images=a.images,
        workers=a.workers,
        rounds=a.rounds,
        steps=a.steps,
        warmup=a.warmup,
        aug=a.aug,
        cpu_amp=a.cpu_amp,
        compile_model=a.compile,
        cuda_graph=not a.no_cuda_graph,
        data_size=a.data_size,
    )
    if a.json:
        atomic_write_bytes(a.json, json.dumps(out, indent=2).encode())
        print(f"wrote {a.json}")


if __name__ == "__main__":
    main()
