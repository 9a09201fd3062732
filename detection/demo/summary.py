"""What the demo's pretrainings learned, written under its transfer table.

A transfer row only means something if its initialisation learned: the table's reader gets, next
to the AP numbers, the supervised baseline's held-out top-1 against chance and MoCo's final kNN
top-1 against the same network at random init (as is, and with BN statistics estimated from the
data), plus the query encoder's collapse check (q.q', 1 = every image one vector); and whether the
transfer table's MoCo row is above the random-init row by more than the trials' spread. The
verdict lines are computed from those numbers, never assumed.
"""

import csv
import json
import os

MARGIN = 5.0  # points above both random-init kNN baselines before MoCo counts as having learned
CHANCE = 10.0  # ten digit classes
COLLAPSED = 0.95  # q.q' above this: the query encoder maps every image to about one vector


def _records(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def supervised_line(supervised_dir):
    rows = [r for r in _records(os.path.join(supervised_dir, "metrics.jsonl")) if "top1" in r]
    if not rows:
        return "- supervised: no metrics found (the stage did not finish)"
    last = rows[-1]
    verdict = "learned" if last["top1"] >= 2 * CHANCE else "did NOT learn (near chance)"
    return (
        f"- supervised: val top-1 {last['top1']:.1f} % on the labeled digits after "
        f"{last['epoch']} epochs (chance {CHANCE:.0f} %): {verdict}. It is trained on the "
        f"downstream task's own classes, so it is an upper bound here, not the paper's "
        f"ImageNet-supervised baseline."
    )


def moco_lines(moco_dir):
    records = _records(os.path.join(moco_dir, "metrics.jsonl"))
    evals = [r for r in records if r.get("kind") == "eval" and "knn_top1" in r]
    trains = [r for r in records if r.get("kind") == "train"]
    init = next((r for r in evals if r["epoch"] == 0), None)
    if init is None or len(evals) < 2:
        return ["- MoCo: no kNN curve with a random-init point (knn.every_epochs is 0?)"]
    last = evals[-1]
    baselines = [init["knn_top1"]] + (
        [init["knn_top1_precise_bn"]] if "knn_top1_precise_bn" in init else []
    )
    bar = max(baselines) + MARGIN
    learned = last["knn_top1"] >= bar
    lines = [
        f"- MoCo: kNN top-1 {last['knn_top1']:.1f} % after {last['epoch']} epochs; random init "
        + " / ".join(f"{b:.1f} %" for b in baselines)
        + (" (as is / BN statistics from the data)" if len(baselines) == 2 else "")
        + f". Above both by {MARGIN:.0f} points (>= {bar:.1f} %): "
        + ("yes, MoCo learned features of the digits." if learned else "NO.")
    ]
    qq = [r["sim_qq"] for r in trains if "sim_qq" in r]
    if qq:
        state = "collapsed: one vector for every image" if qq[-1] > COLLAPSED else "not collapsed"
        lines.append(
            f"- MoCo's query encoder at the end: q.q' {qq[-1]:.3f} between different images "
            f"({state})."
        )
    if not learned:
        lines.append(
            "- So the moco row is not evidence that MoCo features transfer: it is one more "
            "initialisation that did not learn the digits (README, Status and known limits)."
        )
    return lines


def _table_stats(table_csv, metric):
    """{init: (n, mean, std or None)} of ``metric`` in tools/transfer_table.py's CSV."""
    if not os.path.exists(table_csv):
        return {}
    with open(table_csv, newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["metric"] == metric and r["mean"]]
    return {
        r["init"]: (int(r["n"]), float(r["mean"]), float(r["std"]) if r["std"] else None)
        for r in rows
    }


def transfer_lines(table_csv, metric="bbox/AP50"):
    """Whether MoCo's fine-tuned detector beats random init by more than the trial spread (the
    larger of the two rows' std), and where it stands against the supervised upper bound."""
    stats = _table_stats(table_csv, metric)
    metric = metric.rsplit("/", 1)[-1]  # bbox/AP50 -> AP50, as the table's columns
    if "moco" not in stats or "random" not in stats:
        return [f"- transfer: no moco and random {metric} rows in {table_csv}"]
    (n, moco, moco_std), (n_r, rand, rand_std) = stats["moco"], stats["random"]
    if moco_std is None or rand_std is None:
        return [
            f"- transfer: {metric} moco {moco:.1f} vs random {rand:.1f} from {min(n, n_r)} trial: "
            "no spread measured, so no verdict (--budget long: 36 MoCo epochs, 3 trials)."
        ]
    spread = max(moco_std, rand_std)
    lines = [
        f"- transfer: {metric} moco {moco:.1f} ± {moco_std:.1f} vs random {rand:.1f} ± "
        f"{rand_std:.1f} ({min(n, n_r)} trials each). MoCo above random init by more than the "
        f"trial spread ({moco - rand:+.2f} vs {spread:.2f}): "
        + ("yes." if moco - rand > spread else "NO.")
    ]
    if "supervised" in stats:
        sup = stats["supervised"][1]
        side = "above" if moco > sup else "below"
        lines.append(
            f"- transfer: moco {side} the supervised upper bound "
            f"({moco:.1f} vs {sup:.1f} {metric})."
        )
    return lines


def pretraining_summary(out_dir, budget):
    """Markdown: the section the demo appends to its transfer table."""
    return "\n".join(
        [
            "",
            f"## What the pretrainings learned (budget {budget!r})",
            "",
            supervised_line(os.path.join(out_dir, "supervised")),
            *moco_lines(os.path.join(out_dir, "moco")),
            *transfer_lines(os.path.join(out_dir, "table", "transfer_table.csv")),
            "",
        ]
    )
