"""Pack an image folder or a file list into WebDataset shards for pretraining.

python tools/make_shards.py data/unlabeled shards --maxcount 1000
# then pretrain on shards/train-{000000..000099}.tar (or the folder `shards`)
"""

import argparse
import sys

from pretrain.data.shard_writer import make_shards


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("src", help="image folder (scanned recursively) or text file list")
    p.add_argument("out", help="output folder for the .tar shards")
    p.add_argument("--maxcount", type=int, default=1000, help="images per shard (default 1000)")
    p.add_argument("--maxsize", default="1G", help="bytes per shard, e.g. 500M, 1G (default 1G)")
    p.add_argument("--prefix", default="train", help="shard name prefix (default train)")
    p.add_argument("--force", action="store_true", help="replace existing shards with this prefix")
    args = p.parse_args(argv)
    try:
        make_shards(
            args.src,
            args.out,
            prefix=args.prefix,
            maxcount=args.maxcount,
            maxsize=args.maxsize,
            force=args.force,
        )
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        sys.exit(f"make_shards: error: {e}")


if __name__ == "__main__":
    main()
