"""Supervised baseline: train the same ResNet with labels (the demo's "supervised" row).

python tools/train_supervised.py --data DATA --arch resnet18 --epochs 20 --image-size 64 --out
OUT/supervised
# DATA/train/<class>/*.jpg, DATA/val/<class>/*.jpg -> OUT/model_final.pth (torchvision state dict)
"""

import argparse
import sys

from pretrain.eval.classify import ClassMismatchError
from pretrain.eval.supervised import train_supervised


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", required=True, help="folder with train/ and val/ class folders")
    p.add_argument(
        "--out",
        required=True,
        help="output folder (model_final.pth, metrics.jsonl, checkpoint.pth)",
    )
    p.add_argument("--arch", default="resnet18")
    p.add_argument(
        "--epochs",
        type=int,
        required=True,
        help="same budget as the pretraining it is compared with",
    )
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument(
        "--lr", type=float, default=0.1, help="per 256 images; scaled linearly with --batch-size"
    )
    p.add_argument("--wd", type=float, default=1e-4)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--crop-scale",
        type=float,
        nargs=2,
        default=None,
        metavar=("MIN", "MAX"),
        help="RandomResizedCrop area range (default torchvision's 0.08 1); the demo uses "
        "its MoCo recipe's range so both pretrainings see the same crops",
    )
    p.add_argument(
        "--warmup-epochs",
        type=float,
        default=0.0,
        help="linear lr warm-up over these epochs before the cosine (default 0)",
    )
    p.add_argument(
        "--no-hflip",
        action="store_true",
        help="no mirrored crops (classes a mirror changes: digits)",
    )
    p.add_argument("--no-resume", action="store_true", help="ignore OUT/checkpoint.pth")
    p.add_argument(
        "--force",
        action="store_true",
        help="train again over a finished OUT (without it, a finished OUT with the same "
        "settings is kept and its metrics reported; one with other settings is an error)",
    )
    p.add_argument("--print-freq", type=int, default=50)
    args = p.parse_args(argv)
    try:
        return train_supervised(
            args.data,
            args.out,
            arch=args.arch,
            epochs=args.epochs,
            image_size=args.image_size,
            batch_size=args.batch_size,
            lr=args.lr,
            weight_decay=args.wd,
            num_workers=args.workers,
            device=args.device,
            resume=not args.no_resume,
            force=args.force,
            print_freq=args.print_freq,
            crop_scale=tuple(args.crop_scale) if args.crop_scale else None,
            warmup_epochs=args.warmup_epochs,
            hflip=not args.no_hflip,
            seed=args.seed,
        )
    except (FileExistsError, ClassMismatchError) as e:  # user errors: no traceback
        sys.exit(f"train_supervised: error: {e}")


if __name__ == "__main__":
    main()
