"""Linear classification protocol on a frozen pretrained backbone (MoCo's main_lincls.py).

python tools/lincls.py --checkpoint OUT/checkpoint_0010000.pth --data DATA --out OUT/lincls
# DATA/train/<class>/*.jpg and DATA/val/<class>/*.jpg; paper: --epochs 100 --lr 30 --schedule 60 80
"""

import argparse
import sys

from pretrain.data import DataPathError
from pretrain.eval.classify import ClassMismatchError
from pretrain.eval.lincls import train_linear


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="our / official MoCo checkpoint or torchvision state dict",
    )
    p.add_argument("--data", required=True, help="folder with train/ and val/ class folders")
    p.add_argument(
        "--out", required=True, help="output folder (checkpoint, metrics.jsonl, lincls_result.json)"
    )
    p.add_argument("--arch", default=None, help="override the arch (default: from the checkpoint)")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--lr", type=float, default=30.0)
    p.add_argument(
        "--schedule", type=int, nargs="*", default=[60, 80], help="epochs where lr drops x0.1"
    )
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--wd", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    p.add_argument("--no-resume", action="store_true", help="ignore OUT/lincls_checkpoint.pth")
    p.add_argument("--force", action="store_true", help="run again over a finished OUT")
    p.add_argument("--print-freq", type=int, default=50)
    args = p.parse_args(argv)
    try:
        return train_linear(
            args.checkpoint,
            args.data,
            args.out,
            arch=args.arch,
            epochs=args.epochs,
            lr=args.lr,
            schedule=tuple(args.schedule),
            momentum=args.momentum,
            weight_decay=args.wd,
            batch_size=args.batch_size,
            image_size=args.image_size,
            num_workers=args.workers,
            device=args.device,
            resume=not args.no_resume,
            force=args.force,
            print_freq=args.print_freq,
        )
    except (FileExistsError, DataPathError, ClassMismatchError) as e:  # user errors: no traceback
        sys.exit(f"lincls: error: {e}")


if __name__ == "__main__":
    main()
