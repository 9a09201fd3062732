#!/usr/bin/env python
"""Fine-tune / evaluate a Detectron2 model with the MoCo transfer configs.

    python tools/train_net.py --config voc0712_R50_C4_24k_moco --num-gpus 8 MODEL.WEIGHTS moco.pkl
    python tools/train_net.py --config voc0712_R50_C4_24k_moco --eval-only MODEL.WEIGHTS out/model_final.pth
    python tools/train_net.py --config-file configs/x.yaml --num-gpus 0 --resume OUTPUT_DIR out

Detectron2's standard arguments (--num-gpus, --num-machines, --machine-rank, --dist-url, --resume,
--eval-only, trailing KEY VALUE overrides); --config also takes a bare name from configs/.
Without GPUs, --num-gpus 0 runs one CPU process and --num-gpus N runs N gloo processes.
"""
import os
import sys

# Runnable from a plain checkout, before `pip install -e .`.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from detection.trainer import USER_ERRORS, argument_parser, run  # noqa: E402

if __name__ == "__main__":
    args = argument_parser().parse_args()
    print("Command Line Args:", args)
    try:
        run(args)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
