"""Command line of ``tools/convert.py``: one file, or every checkpoint in a folder (``--batch``)."""

import argparse
import os
import pickle
import shutil
import sys
import tempfile

from convert.conversion import convert_checkpoint
from convert.mapping import TARGETS, MappingError
from convert.writer import OutputExistsError, check_output_path
from pretrain.io import CorruptCheckpointError, UnsafeCheckpointError
from pretrain.weights.reader import SOURCES, ConversionError

USAGE = """\
Convert a ResNet pretraining checkpoint into Detectron2 weights (.pkl).

  python tools/convert.py moco_v2_800ep.pth.tar moco_v2_800ep_c4.pkl --verify
  voc0712_R50_C4_24k_moco
  python tools/convert.py checkpoint_0010000.pth r50_fpn.pkl --target fpn --verify
  coco_R50_FPN_1x_moco
  python tools/convert.py r-50-1000ep.pth.tar mocov3_c4.pkl [--momentum-encoder]
  python tools/convert.py dino_resnet50_pretrain_full_checkpoint.pth dino_c4.pkl [--student]
  python tools/convert.py other_ssl.pth out.pkl --prefix backbone.
  python tools/convert.py --batch checkpoints/ converted/ --target fpn [--force]

Layouts are detected from the keys (MoCo v1/v2/v3, SwAV, SimSiam, Barlow Twins, VICReg, DINO,
BYOL, DenseCL, PixPro, mmselfsup, solo-learn, VISSL, lightly, timm, torchvision); --source
forces one. Incomplete, wrongly shaped, non-finite or damaged checkpoints are refused.
"""
BATCH_SUFFIXES = (".pth.tar", ".pth", ".pkl")
# Errors that are the input's or the user's fault: printed without a traceback
# (detection.verify.VerifyError is a ValueError; importing it here would load Detectron2).
USER_ERRORS = (
    ConversionError,
    MappingError,
    OutputExistsError,
    UnsafeCheckpointError,
    CorruptCheckpointError,
    FileNotFoundError,
    IsADirectoryError,
    pickle.UnpicklingError,
    ValueError,
)


def build_parser():
    p = argparse.ArgumentParser(
        description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("input", help="checkpoint file (.pth, .pth.tar, .pkl); with --batch a folder")
    p.add_argument("output", help="output .pkl; with --batch a folder")
    p.add_argument(
        "--target",
        choices=TARGETS,
        default="c4",
        help="c4: R50-C4 names (res5 in roi_heads); fpn: backbone.bottom_up.*; "
        "dc5: all stages in backbone.* (R50-DC5, dilated FCN); "
        "heuristic: bare names matched by Detectron2 (default: c4)",
    )
    p.add_argument(
        "--source", choices=SOURCES, default="auto", help="checkpoint layout (default: detect)"
    )
    p.add_argument(
        "--prefix",
        default=None,
        help="take the ResNet under this key prefix, e.g. 'backbone.' (implies --source prefix)",
    )
    p.add_argument(
        "--momentum-encoder",
        action="store_true",
        help="convert the momentum (key / target / EMA) encoder instead of the online "
        "one (MoCo, BYOL, DenseCL, PixPro, solo-learn, lightly, timm EMA)",
    )
    who = p.add_mutually_exclusive_group()
    who.add_argument(
        "--teacher",
        dest="student",
        action="store_false",
        help="DINO: convert the teacher, as DINO evaluates it (default)",
    )
    who.add_argument(
        "--student",
        dest="student",
        action="store_true",
        help="DINO: convert the student instead of the teacher",
    )
    p.set_defaults(student=False)
    p.add_argument(
        "--verify",
        metavar="CONFIG",
        default=None,
        help="after converting, load into this config's model and compare features "
        "(our config name, e.g. voc_R50_C4_24k_moco, or a YAML path)",
    )
    p.add_argument("--force", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--batch",
        action="store_true",
        help="convert every .pth/.pth.tar/.pkl in INPUT (a folder) into OUTPUT (a folder)",
    )
    return p


def output_name(filename):
    """``moco_v2_800ep.pth.tar`` -> ``moco_v2_800ep.pkl``."""
    for suffix in BATCH_SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)] + ".pkl"
    raise ValueError(f"not a checkpoint name: {filename}")


def load_verify_config(args):
    """The --verify config, read before converting so a typo fails fast; None without --verify."""
    if not args.verify:
        return None
    from detection.verify import (  # imports Detectron2 (slow)
        check_target_fits,
        load_detection_config,
    )

    cfg = load_detection_config(args.verify)
    check_target_fits(args.target, cfg)
    return cfg


def convert_and_verify(input_path, output_path, args, cfg=None):
    if cfg is None:  # convert_checkpoint writes atomically: nothing else to protect
        report = _convert(input_path, output_path, args, args.force)
        print(report.summary())
        return report
    return _convert_verified(input_path, output_path, args, cfg)


def _convert(input_path, output_path, args, force):
    return convert_checkpoint(
        input_path,
        output_path,
        target=args.target,
        source=args.source,
        prefix=args.prefix,
        momentum_encoder=args.momentum_encoder,
        student=args.student,
        force=force,
    )


def _convert_verified(input_path, output_path, args, cfg):
    """Convert into a hidden folder next to the output, verify there, then move into place.

    A file that fails --verify must never reach ``output_path``: it would carry our __author__
    (so training accepts it) and block the rerun (the output exists).
    """
    from detection.verify import compare_with_source, verify_converted

    check_output_path(output_path, args.force)  # fail before any work, leave the user's file alone
    folder = os.path.dirname(os.path.abspath(output_path))
    os.makedirs(folder, exist_ok=True)
    # Same folder: os.replace stays a rename on one file system; same name: Detectron2 reads .pkl.
    staging = tempfile.mkdtemp(prefix="." + os.path.basename(output_path) + ".", dir=folder)
    try:
        staged = os.path.join(staging, os.path.basename(output_path))
        report = _convert(input_path, staged, args, force=False)
        report.output_path = os.fspath(output_path)
        print(report.summary())
        verify_converted(staged, cfg)
        features = compare_with_source(
            input_path,
            staged,
            cfg,
            source=args.source,
            prefix=args.prefix,
            momentum_encoder=args.momentum_encoder,
            student=args.student,
        )
        print(f"features vs. the source ResNet: {features}")
        check_output_path(output_path, args.force)  # created meanwhile by someone else: keep it
        os.replace(staged, output_path)
    except Exception:
        print(
            f"{os.fspath(output_path)} was not written (conversion or verification failed).",
            file=sys.stderr,
        )
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def run_batch(args):
    """Convert a folder; failures are reported per file. Returns the exit code."""
    if not os.path.isdir(args.input):
        raise FileNotFoundError(f"--batch input {args.input!r} is not a folder.")
    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise NotADirectoryError(f"--batch output {args.output!r} exists and is not a folder.")
    names = sorted(
        n
        for n in os.listdir(args.input)
        if n.endswith(BATCH_SUFFIXES)
        and not n.startswith(".")
        and os.path.isfile(os.path.join(args.input, n))
    )
    if not names:
        raise FileNotFoundError(
            f"no {'/'.join(BATCH_SUFFIXES)} files in {args.input!r}; nothing to convert."
        )
    by_output = {}
    for n in names:
        by_output.setdefault(output_name(n), []).append(n)
    cfg = load_verify_config(args)
    converted, skipped, failed = [], [], []
    for i, name in enumerate(names, 1):
        src = os.path.join(args.input, name)
        dst = os.path.join(args.output, output_name(name))
        tag = f"[{i}/{len(names)}] {name}"
        if len(by_output[output_name(name)]) > 1:
            failed.append(
                (
                    name,
                    f"several inputs would write {dst}: {by_output[output_name(name)]}; "
                    f"rename one of them",
                )
            )
            print(f"{tag}: FAILED: {failed[-1][1]}")
            continue
        if os.path.exists(dst) and not args.force:
            skipped.append(name)
            print(f"{tag}: skipped, {dst} exists (--force replaces it)")
            continue
        print(f"{tag} -> {dst}", flush=True)
        try:
            convert_and_verify(src, dst, args, cfg)
            converted.append(name)
        except Exception as e:  # noqa: BLE001 - one bad file must not stop the others
            why = str(e) if isinstance(e, (*USER_ERRORS, OSError)) else f"{type(e).__name__}: {e}"
            failed.append((name, why))
            print(f"{tag}: FAILED: {why}", file=sys.stderr)
    print(
        f"\nbatch: {len(converted)} converted, {len(skipped)} skipped (output exists), "
        f"{len(failed)} failed"
    )
    for name, why in failed:
        print(f"  FAILED {name}: {why.splitlines()[0]}")
    return 1 if failed else 0


def main(argv=None):
    args = build_parser().parse_args(argv)
    try:
        if args.batch:
            return run_batch(args)
        convert_and_verify(args.input, args.output, args, load_verify_config(args))
        return 0
    except (*USER_ERRORS, NotADirectoryError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
