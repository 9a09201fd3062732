"""Side-by-side speed of the MoCo pretraining data path and training step: reference vs ours.

Both sides run in ONE process, interleaved round by round, so that a busy machine slows both
alike: compare the ratios, not absolute figures across runs.

Data path (images/s per CPU core, two crops each; ImageNet-like 500x375 JPEGs generated here):
- reference: PIL decode + the official ``main_moco.py`` two-crop transform (PIL + torchvision
  v1 transforms, PIL GaussianBlur) -> two float tensors; also ``pretrain.data.augment``'s transform
  (the same recipe with torchvision's dense-kernel GaussianBlur);
- ours, CPU part: ``FastTwoCropTransform`` (reduced-size decode, uint8 crop + flip);
- ours, CPU + device part: plus ``DeviceAugment`` on the batch (on a GPU that time is GPU time,
  reported as GPU images/s; on a CPU-only machine it is added to the core's time);
- with CUDA, also nvJPEG decode on the GPU (the CPU only reads bytes and draws crops).

Training step (images/s, fraction of the measured matmul peak, peak memory):
- reference: the official builder's step (fp32, contiguous, per-parameter Python momentum loop,
  ``int(queue_ptr)`` host read, default ``torch.optim.SGD``);
- ours: ``pretrain.model.moco.MoCo`` (foreach momentum, sync-free queue) with channels_last,
autocast
  bf16 (fp16 + GradScaler where bf16 is missing) on CUDA; on CPU bf16 only if it measures
  faster; fused (CUDA) / foreach SGD; optional ``torch.compile``; on CUDA also "ours_graph",
  the same step captured once as a CUDA graph and replayed.
FLOPs: a MoCo step costs ~4 encoder forwards per image (query forward + backward ~3, key
forward 1); forward FLOPs are counted by ``torch.utils.flop_counter`` (2 FLOPs per MAC).
"""

import gc
import os
import resource
import statistics
import tempfile
import time
from contextlib import nullcontext

import numpy as np
import psutil
import torch
import torch.nn.functional as F
from PIL import Image

from pretrain.benchmark.reference import ReferenceMoCo, reference_main_moco_transform
from pretrain.data.augment import build_pretrain_transform
from pretrain.data.device_augment import DeviceAugment
from pretrain.data.fast_augment import (
    FastTwoCropTransform,
    collate_encoded,
    decode_two_crops_on_device,
)

# ----------------------------------------------------------------------------- data


def make_jpegs(folder, n, size=(500, 375), quality=90, seed=0):
    """``n`` ImageNet-like JPEGs (smooth shapes + texture, ~500x375, q90) -> list of paths.

    Decode cost depends on content; flat or pure-noise images would flatter or punish it.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    paths = []
    w, h = size
    for i in range(n):
        low = rng.integers(0, 256, (rng.integers(4, 16), rng.integers(4, 16), 3), dtype=np.uint8)
        base = np.asarray(Image.fromarray(low).resize((w, h), Image.BICUBIC), dtype=np.int16)
        texture = rng.normal(0, 12, (h, w, 1)) + rng.normal(0, 6, (h, w, 3))
        img = Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8))
        path = os.path.join(folder, f"img_{i:05d}.jpg")
        img.save(path, "JPEG", quality=quality)
        paths.append(path)
    return paths


def _reference_view(transform, path):
    with Image.open(path) as im:  # the reference loader's pil_loader
        return transform(im.convert("RGB"))


def _timed(fn, device=None):
    _sync(device)
    t = time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t, out


def _sync(device):
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def benchmark_data(paths, *, aug="v2", crop_size=224, device="cpu", rounds=3, batch=32, log=print):
    """Per-core images/s of the reference and our data path, interleaved, one thread.

    -> dict with images/s per core (median over rounds) for each path and the ratios.
    """
    device = torch.device(device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # "per core": one thread, one process
    try:
        ref_tf = reference_main_moco_transform(aug, crop_size)
        project_tf = build_pretrain_transform(
            aug, crop_size
        )  # pretrain.data.augment (the project's reference path)
        fast_tf = FastTwoCropTransform(aug, crop_size)
        dev_aug = DeviceAugment(aug, crop_size, seed=0).to(device)
        gpu_decode = device.type == "cuda"
        enc_tf = FastTwoCropTransform(aug, crop_size, decode="device") if gpu_decode else None
        chunks = [paths[i : i + batch] for i in range(0, len(paths) - batch + 1, batch)] or [paths]

        def run_device(views):
            return dev_aug(views.to(device, non_blocking=True))

        # warm-up: first calls pay for imports, allocator and (on GPU) kernel selection
        for fn in (
            lambda p: _reference_view(ref_tf, p),
            lambda p: _reference_view(project_tf, p),
            fast_tf,
        ):
            fn(paths[0])
        warm = torch.stack([fast_tf(p)[0] for p in chunks[0]])
        for _ in range(2):
            run_device(warm)
        if gpu_decode:
            jp, crops = collate_encoded([enc_tf(p) for p in chunks[0]])
            for _ in range(2):
                decode_two_crops_on_device(jp, crops, crop_size, device)
        _sync(device)

        t = {
            k: []
            for k in (
                "reference",
                "project_reference",
                "ours_cpu",
                "ours_device",
                "gpu_decode_cpu",
                "gpu_decode_device",
            )
        }
        for r in range(rounds):
            for chunk in chunks:
                dt, _ = _timed(lambda: [_reference_view(ref_tf, p) for p in chunk])
                t["reference"].append(dt)
                dt, _ = _timed(lambda: [_reference_view(project_tf, p) for p in chunk])
                t["project_reference"].append(dt)
                dt, views = _timed(lambda: [fast_tf(p) for p in chunk])
                t["ours_cpu"].append(dt)
                q = torch.stack([v[0] for v in views])
                k = torch.stack([v[1] for v in views])
                if device.type == "cuda":  # as DataLoader(pin_memory=True) hands them over
                    q, k = q.pin_memory(), k.pin_memory()
                dt, _ = _timed(lambda: (run_device(q), run_device(k)), device)
                t["ours_device"].append(dt)
                if gpu_decode:
                    dt, enc = _timed(lambda: collate_encoded([enc_tf(p) for p in chunk]))
                    t["gpu_decode_cpu"].append(dt)
                    dt, _ = _timed(
                        lambda: [
                            run_device(v)
                            for v in decode_two_crops_on_device(*enc, crop_size, device)[:2]
                        ],
                        device,
                    )
                    t["gpu_decode_device"].append(dt)
            log(
                f"  data round {r + 1}/{rounds}: reference "
                f"{len(chunk) / t['reference'][-1]:.0f} img/s, "
                f"ours CPU part {len(chunk) / t['ours_cpu'][-1]:.0f} img/s (1 core)"
            )

        def rate(key):
            per_img = [dt / len(c) for dt, c in zip(t[key], chunks * rounds)]
            return 1.0 / statistics.median(per_img) if per_img else None

        res = {
            "aug": aug,
            "crop_size": crop_size,
            "images": len(paths),
            "rounds": rounds,
            "batch": batch,
            "device": str(device),
            "threads": 1,
            "reference_img_s_per_core": rate("reference"),
            "project_reference_img_s_per_core": rate("project_reference"),
            "ours_cpu_img_s_per_core": rate("ours_cpu"),
            "ours_device_part_img_s": rate("ours_device"),
        }
        if device.type == "cpu":
            # On a CPU-only machine the "device" part also runs on the core.
            res["ours_cpu_plus_device_img_s_per_core"] = 1.0 / (
                1.0 / res["ours_cpu_img_s_per_core"] + 1.0 / res["ours_device_part_img_s"]
            )
        else:
            res["ours_cpu_plus_device_img_s_per_core"] = res["ours_cpu_img_s_per_core"]
            res["gpu_decode_cpu_img_s_per_core"] = rate("gpu_decode_cpu")
            res["gpu_decode_device_img_s"] = rate("gpu_decode_device")
        ref = res["reference_img_s_per_core"]
        res["speedup_cpu_part"] = res["ours_cpu_img_s_per_core"] / ref
        res["speedup_cpu_plus_device"] = res["ours_cpu_plus_device_img_s_per_core"] / ref
        return res
    finally:
        torch.set_num_threads(threads)


def benchmark_loader(paths, *, aug="v2", crop_size=224, workers=2, batch=32, log=print):
    """Total images/s through a real DataLoader with ``workers`` processes (reference vs ours)."""
    from torch.utils.data import DataLoader, Dataset

    class Files(Dataset):
        def __init__(self, transform, reference):
            self.transform, self.reference = transform, reference

        def __len__(self):
            return len(paths)

        def __getitem__(self, i):
            if self.reference:
                return _reference_view(self.transform, paths[i])
            return self.transform(paths[i])

    out = {}
    for name, ds in (
        ("reference", Files(build_pretrain_transform(aug, crop_size), True)),
        ("ours_cpu", Files(FastTwoCropTransform(aug, crop_size), False)),
    ):
        dl = DataLoader(
            ds,
            batch_size=batch,
            num_workers=workers,
            drop_last=True,
            pin_memory=torch.cuda.is_available(),
            persistent_workers=False,
        )
        t = time.perf_counter()
        n = sum(b[0].shape[0] for b in dl)
        dt = time.perf_counter() - t
        out[f"{name}_img_s_total"] = n / dt
        out[f"{name}_img_s_per_worker"] = n / dt / max(1, workers)
        log(f"  loader {name}: {n / dt:.0f} img/s with {workers} workers")
    out["workers"] = workers
    out["speedup"] = out["ours_cpu_img_s_total"] / out["reference_img_s_total"]
    return out


# ----------------------------------------------------------------------------- step


def build_ours(arch, dim, K, m, T, mlp):
    from pretrain.model.moco import MoCo

    return MoCo(arch=arch, dim=dim, K=K, m=m, T=T, mlp=mlp, shuffle="off")


class Stepper:
    """One SGD step of a MoCo model with a given precision/layout; ``step()`` never syncs.

    ``cuda_graph``: capture the whole step (forward, backward, SGD, momentum update, enqueue)
    once and replay it: at small per-GPU batches the step is bound by kernel launches, not
    FLOPs. Possible because ``pretrain.model.moco.MoCo`` has no host sync (queue pointer on the
    device). The learning rate is baked into the graph: give SGD a tensor lr to schedule it.
    """

    def __init__(
        self,
        model,
        device,
        amp_dtype=None,
        channels_last=False,
        optimizer_impl=None,
        compile_model=False,
        cuda_graph=False,
    ):
        self.model, self.device = model.to(device), torch.device(device)
        self.amp_dtype, self.channels_last = amp_dtype, channels_last
        if cuda_graph and (self.device.type != "cuda" or amp_dtype == torch.float16):
            raise ValueError("cuda_graph needs a CUDA device and no GradScaler (bf16 or fp32)")
        self.cuda_graph, self.graph = cuda_graph, None
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        if compile_model:
            self.model.encoder_q.compile()
            self.model.encoder_k.compile()
        self.opt = torch.optim.SGD(
            self.model.encoder_q.parameters(),
            lr=0.03,
            momentum=0.9,
            weight_decay=1e-4,
            **(optimizer_impl or {}),
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=amp_dtype == torch.float16)
        self.last_loss = None

    def _layout(self, x):
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _update(self, im_q, im_k):
        ctx = (
            torch.autocast(
                self.device.type, dtype=self.amp_dtype, cache_enabled=not self.cuda_graph
            )
            if self.amp_dtype is not None
            else nullcontext()
        )
        with ctx:
            logits, labels = self.model(im_q, im_k)
            loss = F.cross_entropy(logits.float(), labels)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        return loss.detach()

    def step(self, im_q, im_k):
        if not self.cuda_graph:
            self.opt.zero_grad(set_to_none=True)
            self.last_loss = self._update(
                self._layout(im_q), self._layout(im_k)
            )  # read only when logging
            return
        if self.graph is None:
            self._capture(im_q, im_k)
        self.static_q.copy_(im_q)
        self.static_k.copy_(im_k)
        self.graph.replay()

    def _capture(self, im_q, im_k):
        # torch.cuda.graphs "whole network capture": warm up on a side stream, then capture
        # with the grads unset so that backward writes (not accumulates) them on every replay.
        self.static_q, self.static_k = self._layout(im_q).clone(), self._layout(im_k).clone()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(3):
                self.opt.zero_grad(set_to_none=True)
                self._update(self.static_q, self.static_k)
        torch.cuda.current_stream(self.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        self.opt.zero_grad(set_to_none=True)
        with torch.cuda.graph(self.graph):
            self.last_loss = self._update(self.static_q, self.static_k)


def forward_flops(arch, size, dim=128, mlp=True):
    """FLOPs (2 per multiply-add) of one encoder forward on one image."""
    from torch.utils.flop_counter import FlopCounterMode

    from pretrain.model.moco import build_encoder

    enc = build_encoder(arch, dim, mlp).eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        enc(torch.zeros(1, 3, size, size))
    return counter.get_total_flops()


def matmul_peak(device, dtype, n=None, seconds=0.5):
    """Measured dense matmul FLOP/s (a rough ceiling for convnet training throughput)."""
    device = torch.device(device)
    n = n or (8192 if device.type == "cuda" else 1024)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    reps, t = 0, time.perf_counter()
    while True:
        a @ b
        reps += 1
        if reps % 4 == 0:
            _sync(device)
            if time.perf_counter() - t > seconds:
                break
    dt = time.perf_counter() - t
    return 2.0 * n**3 * reps / dt


def _rss():
    return psutil.Process().memory_info().rss


def _max_rss():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r * 1024 if os.uname().sysname == "Linux" else r


def _our_precisions(device, cpu_amp):
    """Candidate (amp dtype, channels_last) for our step on this device."""
    if device.type == "cuda":
        return [(torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16, True)]
    if cpu_amp == "bf16":
        return [(torch.bfloat16, True)]
    if cpu_amp == "off":
        return [(None, True)]
    return [(None, True), (torch.bfloat16, True)]  # "auto": keep bf16 only if it measures faster


def _variants(device, cpu_amp, compile_model, cuda_graph):
    """(name, amp dtype, channels_last, optimizer impl, compile, cuda_graph) of our step(s)."""
    if device.type == "cuda":
        amp = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        out = [("ours", amp, True, {"fused": True}, compile_model, False)]
        if cuda_graph and amp == torch.bfloat16:
            out.append(("ours_graph", amp, True, {"fused": True}, compile_model, True))
        return out
    amp = {"bf16": torch.bfloat16, "off": None, "auto": None}[cpu_amp]
    return [("ours", amp, True, {"foreach": True}, compile_model, False)]


def benchmark_step(
    arch="resnet50",
    size=224,
    batch=32,
    *,
    K=65536,
    dim=128,
    mlp=True,
    T=0.2,
    m=0.999,
    device="cpu",
    steps=5,
    warmup=2,
    rounds=3,
    cpu_amp="auto",
    compile_model=False,
    cuda_graph=True,
    peaks=None,
    log=print,
):
    """Reference vs our MoCo training step(s), interleaved: images/s, % of peak, memory.

    On CUDA our step runs eagerly ("ours", what ``pretrain/engine/train.py`` does) and, with
    ``cuda_graph``, as a replayed CUDA graph ("ours_graph").
    """
    device = torch.device(device)
    K = max(batch, K - K % batch)  # the reference asserts K % batch == 0
    torch.manual_seed(0)
    ref = ReferenceMoCo(arch, dim, K, m, T, mlp)
    start = ref.state_dict()
    gen = torch.Generator().manual_seed(0)
    im_q = torch.randn(batch, 3, size, size, generator=gen).to(device)
    im_k = torch.randn(batch, 3, size, size, generator=gen).to(device)
    rss0 = _rss()

    steppers = {"reference": Stepper(ref, device)}  # fp32, contiguous, torch.optim.SGD's default
    for name, amp, cl, impl, comp, graph in _variants(device, cpu_amp, compile_model, cuda_graph):
        ours = build_ours(arch, dim, K, m, T, mlp)
        ours.load_state_dict(start)  # same start: every variant computes the same step
        steppers[name] = Stepper(ours, device, amp, cl, impl, comp, graph)

    def run(stepper, n):
        _sync(device)
        t = time.perf_counter()
        for _ in range(n):
            stepper.step(im_q, im_k)
        _sync(device)
        return (time.perf_counter() - t) / n

    mem = {}
    for name, stepper in steppers.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        run(stepper, warmup)
        if device.type == "cuda":
            mem[name] = torch.cuda.max_memory_allocated(device)

    ours = steppers["ours"]
    if device.type == "cpu" and cpu_amp == "auto":  # keep bf16 only if it measures faster here
        timings = {}
        for amp in (None, torch.bfloat16, None, torch.bfloat16):
            ours.amp_dtype = amp
            timings.setdefault(amp, []).append(run(ours, 1))
        ours.amp_dtype = min(timings, key=lambda a: min(timings[a]))
        log(
            f"  cpu precision probe: fp32 {min(timings[None]):.2f} s/step, bf16 "
            f"{min(timings[torch.bfloat16]):.2f} s/step -> {'bf16' if ours.amp_dtype else 'fp32'}"
        )

    per_step = {name: [] for name in steppers}
    for r in range(rounds):
        for name, stepper in steppers.items():
            per_step[name].append(run(stepper, steps))
        log(
            f"  step round {r + 1}/{rounds} {arch}@{size} b{batch}: "
            + ", ".join(f"{name} {batch / v[-1]:.1f} img/s" for name, v in per_step.items())
        )

    flops_img = 4.0 * forward_flops(arch, size, dim, mlp)
    peaks = peaks or {}
    res = {
        "arch": arch,
        "size": size,
        "batch": batch,
        "K": K,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "steps_per_round": steps,
        "rounds": rounds,
        "step_gflop_per_image": flops_img / 1e9,
        "variants": {},
        "host_rss_bytes": _rss(),
        "host_rss_growth_bytes": _rss() - rss0,
        "host_max_rss_bytes": _max_rss(),
    }
    for name, stepper in steppers.items():
        t = statistics.median(per_step[name])
        amp = str(stepper.amp_dtype).replace("torch.", "") if stepper.amp_dtype else "fp32"
        v = {
            "amp": amp,
            "channels_last": stepper.channels_last,
            "cuda_graph": stepper.cuda_graph,
            "compile": compile_model and name != "reference",
            "s_per_step": t,
            "img_s": batch / t,
            "tflop_s": batch / t * flops_img / 1e12,
            "speedup": per_step["reference"] and statistics.median(per_step["reference"]) / t,
            "loss_after": float(stepper.last_loss),
        }
        if name in mem:
            v["gpu_max_mem_bytes"] = mem[name]
        peak_key = amp if amp in peaks else "fp32"
        if peaks:
            v["peak_dtype"], v["frac_of_peak"] = peak_key, v["tflop_s"] * 1e12 / peaks[peak_key]
            if "tf32" in peaks and amp == "fp32":
                # PyTorch runs fp32 convolutions in TF32 on Ampere+ by default (cudnn.allow_tf32).
                v["frac_of_tf32_peak"] = v["tflop_s"] * 1e12 / peaks["tf32"]
        res["variants"][name] = v
    del steppers, ref, ours
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return res


def measure_peaks(device, seconds=0.5, log=print):
    device = torch.device(device)
    peaks = {"fp32": matmul_peak(device, torch.float32, seconds=seconds)}
    if device.type == "cuda":
        tf32 = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = True
        peaks["tf32"] = matmul_peak(device, torch.float32, seconds=seconds)
        torch.backends.cuda.matmul.allow_tf32 = tf32
        peaks["float16"] = matmul_peak(device, torch.float16, seconds=seconds)
    peaks["bfloat16"] = matmul_peak(device, torch.bfloat16, seconds=seconds)
    log(
        "  matmul peak (measured): "
        + ", ".join(f"{k} {v / 1e12:.2f} TFLOP/s" for k, v in peaks.items())
    )
    return peaks


# ----------------------------------------------------------------------------- driver


def run_benchmark(
    *,
    arch="resnet50",
    size=224,
    batch=32,
    K=65536,
    small=("resnet18", 64, 64),
    device=None,
    data=True,
    step=True,
    images=64,
    workers=0,
    rounds=3,
    steps=5,
    warmup=2,
    aug="v2",
    cpu_amp="auto",
    compile_model=False,
    cuda_graph=True,
    peak_seconds=0.5,
    data_size=224,
    log=print,
):
    """The whole comparison -> a JSON-able dict; prints progress and a summary with ``log``."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda asked for, but no CUDA GPU is visible; use --device cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as the reference main_moco.py, for both sides
    out = {"machine": machine_info(device), "device": str(device)}
    log(f"machine: {out['machine']}")
    if data:
        with tempfile.TemporaryDirectory(prefix="moco_bench_") as tmp:
            log(
                f"data path: {images} generated 500x375 JPEGs, aug {aug}, "
                f"{data_size} px crops, 1 thread"
            )
            paths = make_jpegs(tmp, images)
            # A GPU wants bigger batches than a CPU core to amortise kernel launches.
            data_batch = min(images, 128 if device.type == "cuda" else 32)
            out["data"] = benchmark_data(
                paths,
                aug=aug,
                crop_size=data_size,
                device=device,
                rounds=rounds,
                batch=data_batch,
                log=log,
            )
            if workers > 0:
                out["loader"] = benchmark_loader(
                    paths,
                    aug=aug,
                    crop_size=data_size,
                    workers=workers,
                    batch=min(32, images),
                    log=log,
                )
    if step:
        out["peaks"] = measure_peaks(device, peak_seconds, log)
        configs = [(arch, size, batch)] + ([tuple(small)] if small else [])
        out["step"] = []
        for a, s, b in configs:
            log(f"training step: {a} at {s}, batch {b}, K {K}")
            out["step"].append(
                benchmark_step(
                    a,
                    s,
                    b,
                    K=K,
                    device=device,
                    steps=steps,
                    warmup=warmup,
                    rounds=rounds,
                    cpu_amp=cpu_amp,
                    compile_model=compile_model,
                    cuda_graph=cuda_graph,
                    peaks=out["peaks"],
                    log=log,
                )
            )
    log(format_summary(out))
    return out


def machine_info(device):
    info = {
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def format_summary(out):
    lines = ["", "==== MoCo pretraining speed: reference vs ours (same process, interleaved) ===="]
    d = out.get("data")
    if d:
        lines.append(
            f"data path ({d['aug']}, two {d['crop_size']}px crops/image, images/s per CPU core):"
        )
        lines.append(
            f"  reference (main_moco.py: PIL + torchvision v1) {d['reference_img_s_per_core']:8.1f}"
        )
        lines.append(
            "  pretrain.data.augment (the project's reference path) "
            f"{d['project_reference_img_s_per_core']:8.1f}"
        )
        lines.append(
            f"  ours, CPU part (decode + uint8 crops)          {d['ours_cpu_img_s_per_core']:8.1f}"
            f"   x{d['speedup_cpu_part']:.2f}"
        )
        if d["device"] == "cpu":
            both = d["ours_cpu_plus_device_img_s_per_core"]
            lines.append(
                f"  ours, CPU part + device part on the CPU        {both:8.1f}"
                f"   x{d['speedup_cpu_plus_device']:.2f}"
            )
        else:
            lines.append(
                f"  ours, device part on {d['device']}: "
                f"{d['ours_device_part_img_s']:.0f} img/s of GPU time"
            )
            lines.append(
                f"  GPU JPEG decode: CPU {d['gpu_decode_cpu_img_s_per_core']:.0f} img/s per core, "
                f"GPU decode+crop+augment {d['gpu_decode_device_img_s']:.0f} img/s"
            )
    lo = out.get("loader")
    if lo:
        lines.append(
            f"  DataLoader, {lo['workers']} workers: reference "
            f"{lo['reference_img_s_total']:.0f} img/s, "
            f"ours {lo['ours_cpu_img_s_total']:.0f} img/s (x{lo['speedup']:.2f})"
        )
    if out.get("peaks"):
        lines.append(
            "matmul peak: "
            + ", ".join(f"{k} {v / 1e12:.2f} TFLOP/s" for k, v in out["peaks"].items())
        )
    for s in out.get("step", []):
        lines.append(
            f"step {s['arch']}@{s['size']} batch {s['batch']} K {s['K']} ({s['device']}, "
            f"{s['threads']} threads, {s['step_gflop_per_image']:.1f} GFLOP/img):"
        )
        for name, v in s["variants"].items():
            how = (
                f"{v['amp']}{' channels_last' if v['channels_last'] else ''}"
                f"{' compiled' if v['compile'] else ''}{' cuda-graph' if v['cuda_graph'] else ''}"
            )
            frac = ""
            if "frac_of_peak" in v:
                frac = f"  {100 * v['frac_of_peak']:.0f}% of {v['peak_dtype']} peak"
            if "frac_of_tf32_peak" in v:
                frac += f" ({100 * v['frac_of_tf32_peak']:.0f}% of tf32)"
            mem = (
                f"  GPU max {v['gpu_max_mem_bytes'] / 2**30:.2f} GiB"
                if "gpu_max_mem_bytes" in v
                else ""
            )
            lines.append(
                f"  {name:<11s} {how:<34s} {v['img_s']:8.1f} img/s {v['tflop_s']:7.3f} TFLOP/s"
                f"{frac}  x{v['speedup']:.2f}{mem}"
            )
        lines.append(
            f"  host RSS {s['host_rss_bytes'] / 2**20:.0f} MiB (process peak so far "
            f"{s['host_max_rss_bytes'] / 2**20:.0f} MiB)"
        )
    return "\n".join(lines)
