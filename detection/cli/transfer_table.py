"""Transfer table from Detectron2 output folders, in the MoCo paper's style.

    tools/transfer_table.py output/transfer --baseline supervised --metrics AP50,AP,AP75 \\
        --out output/transfer/table --format md,csv,tex

Prints the Markdown table; with --out also writes transfer_table.{md,csv,tex} and a bar chart
per task (bars_<task>.png). Missing or unfinished runs are listed and warned about.
"""

import argparse
import sys

from detection.transfer.tables import DEFAULT_METRICS, FORMATS, PAPER_RESULTS, write_transfer_tables


def _pairs(items):
    out = {}
    for item in items:
        if "=" not in item:
            raise SystemExit(
                f"error: --paper-as expects INIT=LABEL (e.g. moco=moco_v2_200ep), got {item!r}"
            )
        k, v = item.split("=", 1)
        out[k] = v
    return out


def main(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "root", help="folder holding <task>/<init>/trial<N>/ run folders (or run.json manifests)"
    )
    p.add_argument("--baseline", default="supervised", help="init the deltas are taken against")
    p.add_argument(
        "--metrics",
        default=",".join(DEFAULT_METRICS),
        help="comma list; a bare name (AP50) is shown for every result group (bbox, segm, ...), "
        "'segm/AP' for one",
    )
    p.add_argument("--inits", default="", help="comma list: row order (baseline is always first)")
    p.add_argument("--out", default=None, help="write tables and bar charts into this folder")
    p.add_argument("--format", default=",".join(FORMATS), help="comma list of md,csv,tex")
    p.add_argument(
        "--reference", default=PAPER_RESULTS, help="paper numbers to show beside ours ('' for none)"
    )
    p.add_argument(
        "--paper-as",
        nargs="*",
        default=[],
        metavar="INIT=LABEL",
        help="compare init INIT with the paper's LABEL, e.g. moco=moco_v2_200ep",
    )
    p.add_argument("--no-plots", action="store_true", help="skip the PNG bar charts")
    p.add_argument("--force", action="store_true", help="replace existing output files")
    args = p.parse_args(argv)

    try:
        markdown, warnings, written = write_transfer_tables(
            args.root,
            out=args.out,
            formats=[f for f in args.format.split(",") if f],
            metrics=[m for m in args.metrics.split(",") if m],
            baseline=args.baseline,
            reference=args.reference or None,
            paper_as=_pairs(args.paper_as),
            inits=[i for i in args.inits.split(",") if i],
            plots=not args.no_plots,
            force=args.force,
        )
    except (FileNotFoundError, FileExistsError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(markdown)
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    for path in written:
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
