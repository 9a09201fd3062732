"""Transfer tables in the MoCo paper's style: mean ± std over trials, deltas against a baseline
init ("+x.x"/"−x.x"), and the paper's own numbers beside ours.

``build_tables(collection, ...)`` aggregates ``detection.transfer.results.collect(root)``;
``to_markdown``,
``to_csv`` and ``to_latex`` format the result. Deltas in Markdown/LaTeX are differences of the
numbers as shown (rounded to 0.1), as in the paper, so that a reader can check them; the CSV
keeps full precision.
"""

import csv
import dataclasses
import decimal
import io
import math
import os
import statistics

import yaml

from detection.transfer.results import EVAL_TYPES

MINUS = "\u2212"  # the paper's minus sign
DEFAULT_METRICS = ("AP50", "AP", "AP75")
# The papers' and the MoCo repository's numbers, as data.
PAPER_RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_results.yaml")


# What makes trials of one init comparable: averaging trials that differ in one of these would mix
# protocols (or weights) in one number. Read from each run's provenance (detection/provenance.py).
DEFINING = ("config_sha256", "weights_sha256", "ims_per_batch", "base_lr", "max_iter", "steps")
# Provenance written into the CSV, per task x init (values that differ between trials: ";"-joined).
PROVENANCE_FIELDS = DEFINING + (
    "protocol",
    "world_size",
    "seeds",
    "config_file",
    "weights",
    "code_version",
    "detectron2",
)


class MixedTrialsError(ValueError):
    """Trials of one task and init were made with different defining settings."""


def provenance_fields(prov):
    """The flat ``PROVENANCE_FIELDS`` of one run's provenance (None for a run without one)."""
    if not prov:
        return None
    protocol, weights = prov.get("protocol") or {}, prov.get("weights") or {}
    code = prov.get("code")
    if isinstance(code, dict):
        code = (code.get("commit") or "?")[:12] + ("+dirty" if code.get("dirty") else "")
    steps = protocol.get("steps")
    return {
        "config_sha256": prov.get("config_sha256"),
        "weights_sha256": weights.get("sha256"),
        "ims_per_batch": protocol.get("ims_per_batch"),
        "base_lr": protocol.get("base_lr"),
        "max_iter": protocol.get("max_iter"),
        "steps": None if steps is None else " ".join(str(x) for x in steps),
        "protocol": protocol.get("label"),
        "world_size": prov.get("world_size"),
        "seeds": prov.get("seed"),
        "config_file": prov.get("config_file"),
        "weights": weights.get("path"),
        "code_version": code,
        "detectron2": prov.get("detectron2"),
    }


def check_trials_agree(task, init, runs):
    """Raise ``MixedTrialsError`` (one line naming each differing setting) unless every trial with
    a provenance has the same ``DEFINING`` settings; returns ``(merged fields, warnings)``."""
    fields = [
        (r.trial, provenance_fields(r.provenance)) for r in sorted(runs, key=lambda r: r.trial)
    ]
    known = [(t, f) for t, f in fields if f is not None]
    warnings = [
        f"{task}/{init}/trial{t}: no provenance recorded (made by an older trainer): "
        f"its settings are not checked against the other trials"
        for t, f in fields
        if f is None
    ]
    differ = []
    for key in DEFINING:
        values = {t: f[key] for t, f in known}
        if len(set(map(repr, values.values()))) > 1:
            differ.append(f"{key} (" + ", ".join(f"trial{t}: {v}" for t, v in values.items()) + ")")
    if differ:
        raise MixedTrialsError(
            f"{task}/{init}: its trials were made with different settings, so they cannot be "
            f"averaged: {'; '.join(differ)}. Fix: rerun the odd trials with the same config, "
            f"weights and number of processes (tools/run_transfer.py --force), or move them out "
            f"of the results folder."
        )
    merged = {}
    for key in PROVENANCE_FIELDS:
        values = list(dict.fromkeys(str(f[key]) for _, f in known if f[key] is not None))
        merged[key] = ";".join(values)
    return merged, warnings


@dataclasses.dataclass
class Stat:
    mean: float
    std: float  # sample std (ddof=1); None when n < 2
    n: int
    delta: float = None  # vs the baseline init, difference of the 0.1-rounded means
    paper: float = None
    paper_delta: float = None


@dataclasses.dataclass
class TaskTable:
    task: str
    metrics: list  # keys such as "bbox/AP50", in column order
    inits: list  # row order, baseline first
    stats: dict  # {init: {metric: Stat}}
    n_runs: dict  # {init: number of runs with results}
    baseline: str  # None when the baseline init has no results in this task
    paper_labels: dict  # {init: paper row label} for inits that have paper numbers
    setting: str = None
    source: str = None
    missing: list = dataclasses.field(default_factory=list)
    # {init: {metric: (paper value, paper delta or None)}}: every published number of a shown init,
    # also where our runs have none yet (Stat.paper only exists beside our own numbers).
    paper: dict = dataclasses.field(default_factory=dict)
    provenance: dict = dataclasses.field(default_factory=dict)  # {init: {PROVENANCE_FIELDS: str}}

    def column_title(self, key):
        """``AP50``, or ``AP50 (segm)`` when the table mixes several result groups."""
        prefix, name = key.rsplit("/", 1)
        prefixes = {k.rsplit("/", 1)[0] for k in self.metrics}
        return name if len(prefixes) == 1 else f"{name} ({prefix})"


def round1(x):
    """Round half up to 0.1 on the shortest decimal form (0.35 -> 0.4, as a reader expects)."""
    if not math.isfinite(x):  # nan / inf (a diverged run): nothing to round, shown as is
        return float(x)
    return float(decimal.Decimal(repr(x)).quantize(decimal.Decimal("0.1"), decimal.ROUND_HALF_UP))


def fmt1(x):
    """A number as shown in Markdown and LaTeX: ``round1`` (half up), so that every shown delta is
    the difference of the shown numbers (f"{57.05:.1f}" would print 57.0 but round1 gives 57.1)."""
    return f"{round1(x):.1f}"


def shown_delta(value, base):
    return round1(round1(value) - round1(base))


def format_delta(delta, minus=MINUS):
    if delta is None:
        return ""
    return f"+{fmt1(delta)}" if delta >= 0 else f"{minus}{fmt1(abs(delta))}"


# ---- paper reference numbers ---------------------------------------------------------------


def load_reference(path):
    """``detection/transfer/paper_results.yaml`` -> ``{task: entry}``, each task also reachable by
    its aliases.
    """
    if path is None:
        return {}
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"reference file not found: {path!r}. Fix: pass --reference "
            f"detection/transfer/paper_results.yaml, or --reference '' for none."
        )
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    tasks = data.get("tasks")
    if not isinstance(tasks, dict):
        raise ValueError(
            f"{path}: expected a top-level 'tasks:' mapping of task name -> "
            f"{{setting, source, aliases, inits: {{label: {{metric: value}}}}}}"
        )
    by_name = {}
    for name, entry in tasks.items():
        for alias in [name, *entry.get("aliases", [])]:
            by_name[alias] = entry
    return by_name


def _paper_values(entry, label):
    row = (entry or {}).get("inits", {}).get(label)
    if not row:
        return None, None
    values = {k: float(v) for k, v in row.items() if k not in ("label", "note")}
    return values, row.get("label", label)


# ---- aggregation ---------------------------------------------------------------------------


def _eval_type_order(prefix):
    kind = prefix.split("/")[-1]
    return (EVAL_TYPES.index(kind) if kind in EVAL_TYPES else len(EVAL_TYPES), prefix)


def _matches(key, spec):
    if "/" in spec:
        return key == spec or key.endswith("/" + spec)
    return key.rsplit("/", 1)[-1] == spec


def select_metrics(available, specs):
    """Columns for ``specs`` such as ``["AP50", "AP", "segm/AP"]``: a bare name matches it in every
    result group (bbox, segm, keypoints, ...), grouped like the paper (AP^bb AP50^bb ... AP^mk ...).
    Returns ``(columns, specs that matched nothing)``."""
    matched, unmatched = [], []
    for i, spec in enumerate(specs):
        hits = [k for k in available if _matches(k, spec)]
        if not hits:
            unmatched.append(spec)
        for k in hits:
            if k not in [m for _, _, m in matched]:
                matched.append((_eval_type_order(k.rsplit("/", 1)[0]), i, k))
    return [k for _, _, k in sorted(matched)], unmatched


def _stat(values):
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else None
    return Stat(statistics.fmean(values), std, len(values))


def build_tables(
    collection,
    metrics=DEFAULT_METRICS,
    baseline="supervised",
    reference=None,
    paper_as=None,
    inits=None,
):
    """One ``TaskTable`` per task, plus warnings (strings) about anything left out.

    ``reference``: ``load_reference(...)`` output. ``paper_as``: ``{init: paper label}`` for inits
    whose name differs from the paper file's (run.json's ``paper_label`` is used otherwise).
    ``inits``: row order (others follow, sorted); the baseline always comes first.
    """
    reference, paper_as = reference or {}, dict(paper_as or {})
    warnings = [f"missing run {m.describe()}" for m in collection.missing]
    by_task = {}
    for r in collection.results:
        by_task.setdefault(r.task, []).append(r)
        if r.paper_label and r.init not in paper_as:
            paper_as[r.init] = r.paper_label
    tasks = sorted(set(by_task) | {m.task for m in collection.missing})
    tables = []
    for task in tasks:
        runs = by_task.get(task, [])
        entry = reference.get(task)
        present = sorted(
            {r.init for r in runs} | {m.init for m in collection.missing if m.task == task}
        )
        order = [i for i in (inits or []) if i in present] + [
            i for i in present if i not in (inits or [])
        ]
        if baseline in order:
            order.remove(baseline)
            order.insert(0, baseline)
        paper, paper_labels = _paper_table(entry, order, baseline, paper_as)
        available = list(dict.fromkeys(k for r in runs for k in r.metrics))
        unmatched = select_metrics(available, list(metrics))[1]
        if runs and unmatched:
            shown = ", ".join(available[:12]) + (", ..." if len(available) > 12 else "")
            warnings.append(
                f"{task}: no {', '.join(unmatched)} in its results (available: {shown})"
            )
        # The paper's metrics are columns too: a row of published numbers must not read "–" only
        # because our runs of that init (or of the whole task) have no results yet.
        paper_keys = [k for values in paper.values() for k in values if k not in available]
        columns = select_metrics(available + list(dict.fromkeys(paper_keys)), list(metrics))[0]
        stats, n_runs, provenance = {}, {}, {}
        for init in order:
            init_runs = [r for r in runs if r.init == init]
            provenance[init], unchecked = check_trials_agree(task, init, init_runs)
            warnings.extend(unchecked)
            n_runs[init] = len(init_runs)
            stats[init] = {}
            for key in columns:
                s = _stat([r.metrics[key] for r in init_runs if key in r.metrics])
                if s is not None:
                    stats[init][key] = s
        base = baseline if stats.get(baseline) else None
        if base is None and runs:
            warnings.append(
                f"{task}: baseline init {baseline!r} has no results, so no deltas "
                f"(inits: {', '.join(order)}; choose one with --baseline)"
            )
        for init in order:
            for key, s in stats[init].items():
                if base is not None and init != base and key in stats[base]:
                    s.delta = shown_delta(s.mean, stats[base][key].mean)
                if key in paper.get(init, {}):
                    s.paper, s.paper_delta = paper[init][key]
        tables.append(
            TaskTable(
                task,
                columns,
                order,
                stats,
                n_runs,
                base,
                paper_labels,
                (entry or {}).get("setting"),
                (entry or {}).get("source"),
                [m for m in collection.missing if m.task == task],
                paper,
                provenance,
            )
        )
    return tables, warnings


def _paper_table(entry, order, baseline, paper_as):
    """``({init: {metric: (value, delta)}}, {init: label})`` for the inits in ``order`` that the
    reference has, whether or not our own runs have numbers. Deltas are against the paper's own
    baseline row (none for the baseline itself, even when our baseline has no results)."""
    base_values = _paper_values(entry, paper_as.get(baseline, baseline))[0] or {}
    paper, labels = {}, {}
    for init in order:
        values, label = _paper_values(entry, paper_as.get(init, init))
        if not values:
            continue
        labels[init] = label
        paper[init] = {
            k: (
                v,
                shown_delta(v, base_values[k]) if init != baseline and k in base_values else None,
            )
            for k, v in values.items()
        }
    return paper, labels


# ---- formatting ----------------------------------------------------------------------------


def _cell(s, n_runs):
    if s is None:
        return "–"
    text = fmt1(s.mean) if s.std is None else f"{fmt1(s.mean)} ± {fmt1(s.std)}"
    if s.n != n_runs:  # some runs reported NaN for this metric (COCO: no objects of that size)
        text += f" [n={s.n}]"
    if s.delta is not None:
        text += f" ({format_delta(s.delta)})"
    return text


def _paper_cell(value_delta):
    if value_delta is None:
        return "–"
    value, delta = value_delta
    return fmt1(value) + (f" ({format_delta(delta)})" if delta is not None else "")


def to_markdown(tables, baseline="supervised"):
    out = []
    for t in tables:
        out.append(f"### {t.task}\n")
        if t.setting:
            out.append(f"{t.setting}.")
        base = f"deltas vs {t.baseline}" if t.baseline else f"no deltas (no {baseline!r} results)"
        paper = (
            " Rows marked *paper* are the published numbers"
            + (f" ({t.source})." if t.source else ".")
            if t.paper_labels
            else ""
        )
        out.append(f"Ours: mean ± std (sample, ddof=1) over n trials; {base}.{paper}\n")
        if t.metrics:
            head = ["init", "n"] + [t.column_title(k) for k in t.metrics]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
            for init in t.inits:
                if t.n_runs[init]:
                    cells = [_cell(t.stats[init].get(k), t.n_runs[init]) for k in t.metrics]
                    out.append(f"| {init} | {t.n_runs[init]} | " + " | ".join(cells) + " |")
                else:
                    out.append(f"| {init} | 0 | " + " | ".join("–" for _ in t.metrics) + " |")
                if init in t.paper_labels:
                    cells = [_paper_cell(t.paper[init].get(k)) for k in t.metrics]
                    out.append(
                        f"| ↳ *paper*: {t.paper_labels[init]} | | " + " | ".join(cells) + " |"
                    )
        else:
            out.append("(no results yet)")
        if t.missing:
            out.append(f"\n**Missing runs ({len(t.missing)})**, not in the numbers above:\n")
            out.extend(f"- {m.describe()}" for m in t.missing)
        out.append("")
    return "\n".join(out) + "\n"


CSV_FIELDS = (
    "task",
    "init",
    "metric",
    "n",
    "mean",
    "std",
    "delta",
    "baseline",
    "paper",
    "paper_delta",
    "paper_label",
) + PROVENANCE_FIELDS


def _num(x):
    return repr(
        round(x, 6)
    )  # full precision for AP in percent, without float noise (58.800000000000004)


def to_csv(tables):
    """Long format, one row per task × init × metric, full precision (empty = not available)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_FIELDS)
    for t in tables:
        for init in t.inits:
            for key in t.metrics:
                s = t.stats[init].get(key)
                paper, paper_delta = t.paper.get(init, {}).get(key, (None, None))
                if s is None and paper is None:
                    continue
                ours = (
                    ["0", "", "", ""]
                    if s is None
                    else [  # n, mean, std, delta
                        s.n,
                        _num(s.mean),
                        "" if s.std is None else _num(s.std),
                        ""
                        if t.baseline in (None, init) or key not in t.stats[t.baseline]
                        else _num(s.mean - t.stats[t.baseline][key].mean),
                    ]
                )
                prov = t.provenance.get(init) or {}
                w.writerow(
                    [
                        t.task,
                        init,
                        key,
                        *ours,
                        t.baseline or "",
                        "" if paper is None else paper,
                        "" if paper_delta is None else paper_delta,
                        t.paper_labels.get(init, ""),
                        *(prov.get(f, "") for f in PROVENANCE_FIELDS),
                    ]
                )
    return buf.getvalue()


# One pass over the characters: replacing one special after another would escape the braces of
# an earlier replacement (\textbackslash{} -> \textbackslash\{\}).
_TEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
}


def _tex_escape(text):
    return "".join(_TEX_SPECIAL.get(c, c) for c in str(text))


_TEX_TYPE = {"bbox": "bb", "segm": "mk", "keypoints": "kp"}


def _tex_title(key, columns):
    prefix, name = key.rsplit("/", 1)
    sub = name[2:] if name.startswith("AP") and name[2:].isdigit() else ""
    base = "AP" if sub else _tex_escape(name)
    prefixes = {k.rsplit("/", 1)[0] for k in columns}
    sup = "" if len(prefixes) == 1 else r"\mathrm{%s}" % _tex_escape(_TEX_TYPE.get(prefix, prefix))
    if not sub and not sup:
        return base
    return base + "$" + (f"_{{{sub}}}" if sub else "") + (f"^{{{sup}}}" if sup else "") + "$"


def _tex_cell(mean, std=None, delta=None):
    text = fmt1(mean)
    if std is not None:
        text += rf"{{\scriptsize$\pm${fmt1(std)}}}"
    if delta is not None:
        text += " (" + format_delta(delta, minus="$-$") + ")"
    return text


def to_latex(tables):
    """One booktabs ``table`` per task (needs ``\\usepackage{booktabs}``)."""
    out = ["% Generated by tools/transfer_table.py; needs \\usepackage{booktabs}."]
    for t in tables:
        if not t.metrics:
            out.append(f"% {_tex_escape(t.task)}: no results yet")
            continue
        cols = ["pre-train", "$n$"] + [_tex_title(k, t.metrics) for k in t.metrics]
        cap = f"{_tex_escape(t.task)}: mean$\\pm$std over $n$ trials"
        cap += f"; deltas vs {_tex_escape(t.baseline)}" if t.baseline else ""
        if t.paper_labels:
            cap += "; \\emph{paper}: published numbers" + (
                f" ({_tex_escape(t.source)})" if t.source else ""
            )
        out += [
            r"\begin{table}[t]",
            r"\centering",
            f"\\caption{{{cap}.}}",
            r"\begin{tabular}{l" + "c" * (len(cols) - 1) + "}",
            r"\toprule",
            " & ".join(cols) + r" \\",
            r"\midrule",
        ]
        for init in t.inits:
            cells = []
            for k in t.metrics:
                s = t.stats[init].get(k)
                cells.append("--" if s is None else _tex_cell(s.mean, s.std, s.delta))
            out.append(" & ".join([_tex_escape(init), str(t.n_runs[init])] + cells) + r" \\")
            if init in t.paper_labels:
                cells = []
                for k in t.metrics:
                    value_delta = t.paper[init].get(k)
                    cells.append(
                        "--"
                        if value_delta is None
                        else _tex_cell(value_delta[0], None, value_delta[1])
                    )
                out.append(" & ".join([r"\quad\emph{paper}", ""] + cells) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}"]
        for m in t.missing:
            out.append(f"% missing run: {m.describe()}")
    return "\n".join(out) + "\n"


# ---- the whole step: folders in, files out -------------------------------------------------

FORMATS = ("md", "csv", "tex")


def write_transfer_tables(
    root,
    out=None,
    formats=FORMATS,
    metrics=DEFAULT_METRICS,
    baseline="supervised",
    reference=None,
    paper_as=None,
    inits=None,
    plots=True,
    force=False,
):
    """Collect ``root``, build the tables, write ``out/transfer_table.{md,csv,tex}`` and
    ``out/bars_<task>.png`` atomically. Returns ``(markdown, warnings, written paths)``.

    Existing outputs are only replaced with ``force=True`` (nothing a user made is lost).
    """
    from detection.transfer.results import collect
    from pretrain.io import atomic_write_bytes

    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown format(s) {unknown}; choose from {','.join(FORMATS)}")
    collection = collect(root)
    tables, warnings = build_tables(
        collection, metrics, baseline, load_reference(reference), paper_as, inits
    )
    markdown = to_markdown(tables, baseline)
    if not collection.results:
        warnings.append(f"no finished runs under {root}")
    written = []
    if out is not None:
        files = {}
        render = {
            "md": lambda: markdown,
            "csv": lambda: to_csv(tables),
            "tex": lambda: to_latex(tables),
        }
        for fmt in formats:
            files[os.path.join(out, f"transfer_table.{fmt}")] = render[fmt]().encode()
        if plots:
            from detection.transfer.plots import task_bar_chart_png

            for t in tables:
                if t.metrics and any(
                    t.stats.values()
                ):  # a chart of paper numbers alone says nothing
                    files[os.path.join(out, f"bars_{t.task}.png")] = task_bar_chart_png(t)
        existing = [p for p in files if os.path.exists(p)]
        if existing and not force:
            raise FileExistsError(
                f"{len(existing)} output file(s) exist already, e.g. {existing[0]}. "
                f"Fix: pass --force to replace them, or choose another --out."
            )
        for path, data in files.items():
            atomic_write_bytes(path, data)
            written.append(path)
    return markdown, warnings, written
