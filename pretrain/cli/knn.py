"""kNN accuracy of a pretrained backbone (a quick proxy for the linear protocol).

python tools/knn.py --checkpoint OUT/checkpoint_0001000.pth --train DATA/train --val DATA/val
"""

import argparse

from pretrain.eval.knn import knn_evaluate
from pretrain.weights.backbone import load_backbone


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--checkpoint",
        required=True,
        help="our / official MoCo checkpoint or torchvision state dict",
    )
    p.add_argument(
        "--train", required=True, help="labelled folder for the feature bank (CLASS/IMAGE)"
    )
    p.add_argument("--val", required=True, help="labelled folder to classify (same classes)")
    p.add_argument("--arch", default=None, help="override the arch (default: from the checkpoint)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--k", type=int, default=200)
    p.add_argument("--t", type=float, default=0.1, help="temperature of the vote weights")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument(
        "--precise-bn",
        action="store_true",
        help="re-estimate BatchNorm statistics on --train first (for a random-init network, "
        "whose statistics are placeholders)",
    )
    p.add_argument("--device", default=None, help="cuda / cpu (default: cuda when available)")
    args = p.parse_args(argv)
    model, _ = load_backbone(args.checkpoint, arch=args.arch)
    top1 = knn_evaluate(
        model,
        args.train,
        args.val,
        image_size=args.image_size,
        k=args.k,
        t=args.t,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        precise_bn=args.precise_bn,
    )
    print(f"kNN (k={args.k}, t={args.t}) top-1: {top1:.2f}%")
    return top1


if __name__ == "__main__":
    main()
