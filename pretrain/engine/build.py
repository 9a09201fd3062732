"""What the pretraining loop is made of, built from a recipe: data loader, device-side
augmentation, the MoCo model (optionally compiled), its optimizer, the precision to run in."""

import torch

from pretrain.model.moco import MoCo


def resolve_precision(cfg: dict, device: torch.device):
    """-> (autocast dtype or None, channels_last). Both are CUDA-only."""
    amp, cl = cfg["amp"], cfg["channels_last"]
    if device.type != "cuda":
        if amp in ("bf16", "fp16"):
            print(
                f"amp={amp} ignored: mixed precision is used on CUDA only (running "
                f"fp32 on {device})"
            )
        return None, False
    if amp == "auto":
        amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    dtype = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return dtype, (cl == "auto" or cl is True)


def fast_pipeline(cfg: dict, device: torch.device) -> bool:
    """Whether augmentation is split between uint8 crops in the workers and the device."""
    choice = cfg["data"]["pipeline"]
    if cfg["data"]["in_memory"]:  # it augments whole batches itself (pretrain/data/memory.py)
        return False
    if choice == "auto":
        return device.type == "cuda" or cfg["data"]["decode"] == "device"
    return choice == "fast"


def build_loader(cfg: dict, data_path, ctx):
    from pretrain.data import build_pretrain_loader
    from pretrain.data.augment import build_pretrain_transform

    d = cfg["data"]
    scale = tuple(d["crop_scale"])
    if d["in_memory"]:
        from pretrain.data.memory import build_memory_loader

        return build_memory_loader(
            data_path,
            aug=d["aug"],
            crop_size=d["crop_size"],
            scale=scale,
            batch_size=cfg["batch_size"],
            rank=ctx.rank,
            world_size=ctx.world_size,
            seed=cfg["seed"],
            device=ctx.device,
            size=d["memory_size"],
            samples_per_epoch=d["samples_per_epoch"],
            positives=d["positives"],
            hflip=d["hflip"],
        )
    if fast_pipeline(cfg, ctx.device):
        from pretrain.data.fast_augment import FastTwoCropTransform

        decode = "device" if d["decode"] == "device" else "cpu"
        transform = FastTwoCropTransform(d["aug"], d["crop_size"], scale=scale, decode=decode)
    else:
        transform = build_pretrain_transform(d["aug"], d["crop_size"], scale=scale)
    return build_pretrain_loader(
        data_path,
        aug=d["aug"],
        crop_size=d["crop_size"],
        batch_size=cfg["batch_size"],
        num_workers=d["num_workers"],
        rank=ctx.rank,
        world_size=ctx.world_size,
        seed=cfg["seed"],
        kind={"list": "filelist"}.get(d["kind"], d["kind"]),
        samples_per_epoch=d["samples_per_epoch"],
        drop_last=True,
        transform=transform,
    )


def build_device_augment(cfg: dict, ctx, channels_last: bool):
    """The device half of the fast pipeline, or None; its generator goes into checkpoints."""
    if not fast_pipeline(cfg, ctx.device):
        return None
    from pretrain.data.device_augment import DeviceAugment

    d = cfg["data"]
    return DeviceAugment(
        d["aug"],
        d["crop_size"],
        seed=cfg["seed"] + 104729 * (ctx.rank + 1),
        channels_last=channels_last,
    ).to(ctx.device)


def build_model(cfg: dict) -> MoCo:
    m = cfg["model"]
    return MoCo(
        arch=m["arch"],
        dim=m["dim"],
        K=m["K"],
        m=m["m"],
        T=m["T"],
        mlp=m["mlp"],
        bn_splits=m["bn_splits"],
        shuffle=m["shuffle"],
    )


def compile_encoders(cfg: dict, model: MoCo) -> None:
    """``torch.compile`` both encoders in place (parameter names, hence checkpoints, unchanged)."""
    choice = cfg["compile"]
    if choice is False:
        return
    backend = "inductor" if choice is True else choice
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if backend not in known:
        raise ValueError(
            f"compile={choice!r}: unknown torch.compile backend; known: {sorted(known)}"
        )
    model.encoder_q.compile(backend=backend)
    model.encoder_k.compile(backend=backend)


def build_optimizer(cfg: dict, model: MoCo, device: torch.device) -> torch.optim.Optimizer:
    """SGD on the query encoder only (the key encoder follows by momentum). Fused on CUDA."""
    o = cfg["optim"]
    impl = {"fused": True} if device.type == "cuda" else {"foreach": True}
    return torch.optim.SGD(
        model.encoder_q.parameters(),
        lr=o["lr"],
        momentum=o["momentum"],
        weight_decay=o["weight_decay"],
        **impl,
    )
