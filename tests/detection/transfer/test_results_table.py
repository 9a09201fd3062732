"""The transfer table on synthetic Detectron2 output folders with known numbers.

The folders are written here in the real formats: ``eval_results.json`` (both the
``{dataset: {type: {metric}}}`` and Detectron2's single-dataset form), ``metrics.json`` JSON lines
(training lines + an evaluation line, with the ``config.yaml`` Detectron2 dumps) and ``run.json``
manifests, so collection, aggregation and every output format are tested on what they will read.
"""

import csv
import importlib.util
import io
import json
import math
import os
import re

import pytest
from PIL import Image

from detection.transfer.results import collect, flatten_eval_results
from detection.transfer.tables import (
    PAPER_RESULTS,
    MixedTrialsError,
    build_tables,
    load_reference,
    select_metrics,
    to_csv,
)

REFERENCE = PAPER_RESULTS
TASK = "voc0712_R50_C4_24k"  # the reference file's name for the VOC C4 24k benchmark
MAX_ITER = 2000

# (AP50, AP, AP75) per trial; means/stds chosen to come out round, and every mean and delta
# differs from the paper's (supervised 81.3/53.5/58.8, MoCo v2 82.4/57.0/63.6, deltas
# +1.1/+3.5/+4.8),
# so a table that showed the published numbers as ours would fail.
SUPERVISED = [
    (80.7, 52.7, 57.2),
    (80.9, 52.9, 57.6),
    (81.1, 53.1, 58.0),
]  # 80.9±0.2 52.9±0.2 57.6±0.4
MOCO = [(82.8, 56.0, 62.8), (83.0, 56.4, 62.4), (82.9, 56.2, 63.2)]  # 82.9±0.1 56.2±0.2 62.8±0.4
RANDOM = [(60.0, 33.0, 34.6)]  # one trial: no std


def _bbox(ap50, ap, ap75):
    return {"AP": ap, "AP50": ap50, "AP75": ap75}


def _write_json(path, obj):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f)


def _write_metrics_json(folder, ap50, ap, ap75, eval_iter):
    """Detectron2's JSONWriter format: one sorted-keys object per line, eval scalars merged into the
    line of the iteration they were stored at."""
    os.makedirs(folder, exist_ok=True)
    lines = [
        {"iteration": 19, "total_loss": 1.9, "lr": 0.02, "fast_rcnn/cls_accuracy": 0.8},
        {
            "iteration": eval_iter,
            "total_loss": 0.7,
            "bbox/AP": ap,
            "bbox/AP50": ap50,
            "bbox/AP75": ap75,
            "fast_rcnn/cls_accuracy": 0.95,
        },
    ]
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        for line in lines:
            f.write(json.dumps(line, sort_keys=True) + "\n")
        f.write('{"iteration": 2001, "total_lo')  # a run killed mid-write leaves half a line
    with open(os.path.join(folder, "config.yaml"), "w") as f:
        f.write(f"SOLVER:\n  MAX_ITER: {MAX_ITER}\n  BASE_LR: 0.02\n")


@pytest.fixture
def root(tmp_path):
    root = tmp_path / "transfer"
    # supervised: by layout only; eval_results.json in our trainer's {dataset: {type: {metric}}}
    # form,
    # trial 2 only Detectron2's metrics.json (a finished run: last evaluation at MAX_ITER).
    for t, v in enumerate(SUPERVISED[:2]):
        _write_json(
            root / TASK / "supervised" / f"trial{t}" / "eval_results.json",
            {"voc_2007_test": {"bbox": _bbox(*v)}},
        )
    _write_metrics_json(root / TASK / "supervised" / "trial2", *SUPERVISED[2], eval_iter=MAX_ITER)
    # moco trials 0, 1: metrics.json only, with a done manifest. Detectron2 stores the final
    # evaluation (EvalHook.after_train) at iteration MAX_ITER.
    for t, v in enumerate(MOCO[:2]):
        folder = root / TASK / "moco_v2_200ep" / f"trial{t}"
        _write_metrics_json(folder, *v, eval_iter=MAX_ITER)
        _write_json(
            folder / "run.json",
            {"task": TASK, "init": "moco_v2_200ep", "trial": t, "status": "done"},
        )
    # moco trial 2: found by its manifest alone, outside the layout; single-dataset results form.
    _write_json(
        root / "elsewhere" / "moco_t2" / "run.json",
        {"task": TASK, "init": "moco_v2_200ep", "trial": 2, "status": "done", "seed": 2},
    )
    _write_json(root / "elsewhere" / "moco_t2" / "eval_results.json", {"bbox": _bbox(*MOCO[2])})
    # moco trial 3 failed: it has a folder and a manifest, but no numbers.
    _write_json(
        root / TASK / "moco_v2_200ep" / "trial3" / "run.json",
        {
            "task": TASK,
            "init": "moco_v2_200ep",
            "trial": 3,
            "status": "failed",
            "log": "/x/train.log",
        },
    )
    # random: trial 0 finished; trial 1 stopped after a mid-training evaluation.
    _write_json(
        root / TASK / "random" / "trial0" / "eval_results.json",
        {"voc_2007_test": {"bbox": _bbox(*RANDOM[0])}},
    )
    # Our trainer writes eval_results.json at every evaluation, so it exists mid-training too.
    _write_metrics_json(root / TASK / "random" / "trial1", 10.0, 5.0, 4.0, eval_iter=999)
    _write_json(
        root / TASK / "random" / "trial1" / "eval_results.json",
        {"voc_2007_test": {"bbox": _bbox(10.0, 5.0, 4.0)}},
    )
    # Detectron2's inference/ subfolder and a _submitit log folder must not look like runs.
    os.makedirs(root / TASK / "supervised" / "trial0" / "inference")
    _write_json(root / "_submitit" / "x" / "run.json", {"task": "bogus", "init": "x", "trial": 0})
    return root


def test_collect_reads_every_format_and_reports_missing(root):
    c = collect(root)
    got = {(r.task, r.init, r.trial): r for r in c.results}
    assert sorted(k[1:] for k in got) == [
        ("moco_v2_200ep", 0),
        ("moco_v2_200ep", 1),
        ("moco_v2_200ep", 2),
        ("random", 0),
        ("supervised", 0),
        ("supervised", 1),
        ("supervised", 2),
    ]
    assert got[(TASK, "moco_v2_200ep", 0)].metrics == {
        "bbox/AP": 56.0,
        "bbox/AP50": 82.8,
        "bbox/AP75": 62.8,
    }
    assert got[(TASK, "moco_v2_200ep", 0)].source.endswith("metrics.json")
    assert got[(TASK, "moco_v2_200ep", 2)].folder.endswith(os.path.join("elsewhere", "moco_t2"))
    assert got[(TASK, "supervised", 1)].metrics == {
        "bbox/AP": 52.9,
        "bbox/AP50": 80.9,
        "bbox/AP75": 57.6,
    }
    assert got[(TASK, "supervised", 1)].source.endswith("eval_results.json")
    assert got[(TASK, "supervised", 2)].metrics == {
        "bbox/AP": 53.1,
        "bbox/AP50": 81.1,
        "bbox/AP75": 58.0,
    }

    missing = {(m.init, m.trial): m.reason for m in c.missing}
    assert set(missing) == {
        ("moco_v2_200ep", 3),
        ("random", 1),
        ("random", 2),
        ("random", 3),
        ("supervised", 3),
    }
    assert (
        "failed" in missing[("moco_v2_200ep", 3)]
        and "/x/train.log" in missing[("moco_v2_200ep", 3)]
    )
    assert "iteration 999 of 2000" in missing[("random", 1)]
    assert "no run folder" in missing[("supervised", 3)]


def test_flatten_eval_results_forms():
    nested = {"voc_2007_test": {"bbox": {"AP": 50.0, "AP-cat": 1.0, "note": "x"}}}
    assert flatten_eval_results(nested) == {"bbox/AP": 50.0, "bbox/AP-cat": 1.0}
    assert flatten_eval_results({"bbox": {"AP": 50.0}, "segm": {"AP": 40.0}}) == {
        "bbox/AP": 50.0,
        "segm/AP": 40.0,
    }
    two = {"a": {"bbox": {"AP": 1.0}}, "b": {"bbox": {"AP": 2.0}}}
    assert flatten_eval_results(two) == {"a/bbox/AP": 1.0, "b/bbox/AP": 2.0}


def test_metric_columns_are_grouped_like_the_paper():
    available = [
        "segm/AP",
        "segm/AP50",
        "bbox/AP",
        "bbox/AP50",
        "bbox/AP75",
        "segm/AP75",
        "bbox/APs",
    ]
    cols, unmatched = select_metrics(available, ["AP", "AP50", "AP75", "APx"])
    assert cols == ["bbox/AP", "bbox/AP50", "bbox/AP75", "segm/AP", "segm/AP50", "segm/AP75"]
    assert unmatched == ["APx"]
    assert select_metrics(available, ["segm/AP", "AP50"])[0] == [
        "bbox/AP50",
        "segm/AP",
        "segm/AP50",
    ]


def test_means_stds_deltas_and_paper(root):
    tables, warnings = build_tables(
        collect(root), ["AP50", "AP", "AP75"], "supervised", load_reference(REFERENCE)
    )
    (t,) = tables
    assert t.inits == ["supervised", "moco_v2_200ep", "random"]
    assert t.metrics == ["bbox/AP50", "bbox/AP", "bbox/AP75"]
    sup, moco, rnd = (t.stats[i] for i in t.inits)
    assert sup["bbox/AP50"].mean == pytest.approx(80.9) and sup["bbox/AP50"].std == pytest.approx(
        0.2
    )
    assert sup["bbox/AP75"].std == pytest.approx(0.4) and sup["bbox/AP75"].n == 3
    assert moco["bbox/AP"].mean == pytest.approx(56.2) and moco["bbox/AP50"].std == pytest.approx(
        0.1
    )
    assert [moco[k].delta for k in t.metrics] == [2.0, 3.3, 5.2]
    assert [rnd[k].delta for k in t.metrics] == [-20.9, -19.9, -23.0]
    assert rnd["bbox/AP"].std is None and rnd["bbox/AP"].n == 1
    # The paper's VOC C4 numbers (REFERENCE.md) beside ours; random init has none.
    assert [moco[k].paper for k in t.metrics] == [82.4, 57.0, 63.6]
    assert [moco[k].paper_delta for k in t.metrics] == [1.1, 3.5, 4.8]
    assert [sup[k].paper for k in t.metrics] == [81.3, 53.5, 58.8]
    assert all(sup[k].delta is None and sup[k].paper_delta is None for k in t.metrics)
    assert "random" not in t.paper_labels
    assert sum("missing run" in w for w in warnings) == 5


def _load_tool(name):
    """The tool's own main, in this process: a second interpreter would re-import Detectron2."""
    return importlib.import_module(f"detection.cli.{name}")


def test_cli_writes_md_csv_tex_png(root, tmp_path, capsys):
    out = tmp_path / "table"
    argv = [
        str(root),
        "--baseline",
        "supervised",
        "--metrics",
        "AP50,AP,AP75",
        "--out",
        str(out),
        "--format",
        "md,csv,tex",
        "--reference",
        REFERENCE,
    ]
    tool = _load_tool("transfer_table")
    assert tool.main(argv) == 0
    md, err = capsys.readouterr()
    # Our rows show our means and deltas; each paper row, right below, the published ones.
    lines = md.splitlines()
    sup_row = lines.index("| supervised | 3 | 80.9 ± 0.2 | 52.9 ± 0.2 | 57.6 ± 0.4 |")
    assert lines[sup_row + 1] == "| ↳ *paper*: ImageNet-1M, supervised | | 81.3 | 53.5 | 58.8 |"
    moco_row = lines.index(
        "| moco_v2_200ep | 3 | 82.9 ± 0.1 (+2.0) | 56.2 ± 0.2 (+3.3) | 62.8 ± 0.4 (+5.2) |"
    )
    assert (
        lines[moco_row + 1]
        == "| ↳ *paper*: ImageNet-1M, MoCo v2, 200ep | | 82.4 (+1.1) | 57.0 (+3.5) | 63.6 (+4.8) |"
    )
    assert "| random | 1 | 60.0 (\u221220.9) | 33.0 (\u221219.9) | 34.6 (\u221223.0) |" in md
    assert "**Missing runs (5)**" in md and "moco_v2_200ep/trial3: run failed" in md
    assert "warning: missing run" in err
    assert (out / "transfer_table.md").read_text() == md

    with open(out / "transfer_table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9
    row = next(r for r in rows if r["init"] == "moco_v2_200ep" and r["metric"] == "bbox/AP75")
    assert float(row["mean"]) == pytest.approx(62.8) and float(row["std"]) == pytest.approx(0.4)
    assert float(row["delta"]) == pytest.approx(5.2) and row["n"] == "3"
    assert float(row["paper"]) == 63.6 and float(row["paper_delta"]) == 4.8
    assert row["baseline"] == "supervised"
    assert next(r for r in rows if r["init"] == "random")["std"] == ""

    tex = (out / "transfer_table.tex").read_text()
    assert tex.count("{") == tex.count("}")
    assert tex.count(r"\begin{tabular}") == tex.count(r"\end{tabular}") == 1
    spec = re.search(r"\\begin\{tabular\}\{(\w+)\}", tex).group(1)
    body = tex.split(r"\midrule")[1].split(r"\bottomrule")[0].strip().splitlines()
    assert len(body) == 5  # 3 inits + 2 paper rows
    for line in body:
        assert line.endswith(r"\\") and line.count("&") == len(spec) - 1
    assert r"moco\_v2\_200ep & 3 & 82.9{\scriptsize$\pm$0.1} (+2.0)" in tex
    assert r"\quad\emph{paper} &  & 82.4 (+1.1) & 57.0 (+3.5) & 63.6 (+4.8) \\" in tex
    assert "$-$20.9" in tex

    with Image.open(out / f"bars_{TASK}.png") as im:
        im.verify()
        assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100

    # Outputs are never replaced without --force.
    before = (out / "transfer_table.csv").read_bytes()
    assert tool.main(argv + ["--baseline", "random"]) == 2
    assert "--force" in capsys.readouterr().err
    assert (out / "transfer_table.csv").read_bytes() == before
    assert tool.main(argv + ["--baseline", "random", "--force"]) == 0
    assert (out / "transfer_table.csv").read_bytes() != before


def test_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="tools/run_transfer.py --out"):
        collect(tmp_path / "nope")
    a, b = tmp_path / "r" / "t" / "i" / "trial0", tmp_path / "r" / "other"
    for folder in (a, b):
        _write_json(folder / "run.json", {"task": "t", "init": "i", "trial": 0, "status": "done"})
    with pytest.raises(ValueError, match="two run folders claim t/i/trial0"):
        collect(tmp_path / "r")
    _write_json(tmp_path / "s" / "x" / "run.json", {"task": "t", "status": "done"})
    with pytest.raises(ValueError, match="lacks 'init'"):
        collect(tmp_path / "s")


def test_nan_results_are_left_out_of_means_and_counted(tmp_path):
    """COCO reports NaN for an object size with no instances; it must not poison the mean."""
    from detection.transfer.results import Collection, RunResult
    from detection.transfer.tables import to_markdown

    runs = [
        RunResult("coco", "moco", t, str(tmp_path), {"bbox/AP": ap, "bbox/APl": apl}, "x")
        for t, (ap, apl) in enumerate([(40.0, float("nan")), (41.0, 50.0), (42.0, 52.0)])
    ]
    (t,), _ = build_tables(Collection(runs, []), ["AP", "APl"], "moco")
    assert t.stats["moco"]["bbox/APl"].n == 2 and t.stats["moco"]["bbox/APl"].mean == 51.0
    assert "| moco | 3 | 41.0 ± 1.0 | 51.0 ± 1.4 [n=2] |" in to_markdown([t])


def _run(root, task, init, trial, bbox, **manifest):
    folder = root / task / init / f"trial{trial}"
    if bbox is not None:
        _write_json(folder / "eval_results.json", {"voc_2007_test": {"bbox": bbox}})
    if manifest:
        _write_json(folder / "run.json", {"task": task, "init": init, "trial": trial, **manifest})
    os.makedirs(folder, exist_ok=True)


def test_paper_numbers_are_shown_where_our_runs_have_none(tmp_path, capsys):
    """A published row must show its numbers even when our runs of that init (or of the whole
    task) have no results yet: they are data from the reference file, not from our runs."""
    root = tmp_path / "transfer"
    _run(root, TASK, "supervised", 0, _bbox(81.0, 53.0, 58.0))
    _run(
        root, TASK, "moco_v1_200ep", 0, None, status="failed", log="/x/train.log"
    )  # died, no numbers
    # A task with no finished run at all, under an alias of the reference file's VOC task.
    _run(root, "voc_c4_24k", "moco_v2_200ep", 0, None, status="running", host="elsewhere", pid=1)
    _run(root, "voc_c4_24k", "supervised", 0, None)
    out = tmp_path / "table"
    tool = _load_tool("transfer_table")
    assert (
        tool.main(
            [str(root), "--reference", REFERENCE, "--out", str(out), "--format", "md,csv,tex"]
        )
        == 0
    )
    md = capsys.readouterr().out
    assert "| moco_v1_200ep | 0 | – | – | – |" in md
    assert (
        "| ↳ *paper*: ImageNet-1M, MoCo v1, 200ep | | 81.5 (+0.2) | 55.9 (+2.4) | 62.6 (+3.8) |"
        in md
    )
    voc_alias = md.split("### voc_c4_24k")[1]
    assert "(no results yet)" not in voc_alias
    # Our baseline has no results in that task: the paper's rows keep the paper's own deltas.
    assert "| ↳ *paper*: ImageNet-1M, supervised | | 81.3 | 53.5 | 58.8 |" in voc_alias
    assert (
        "| ↳ *paper*: ImageNet-1M, MoCo v2, 200ep | | 82.4 (+1.1) | 57.0 (+3.5) | 63.6 (+4.8) |"
        in voc_alias
    )

    with open(out / "transfer_table.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["init"] == "moco_v1_200ep"]
    assert [(r["metric"], r["n"], r["mean"], r["paper"], r["paper_delta"]) for r in rows] == [
        ("bbox/AP50", "0", "", "81.5", "0.2"),
        ("bbox/AP", "0", "", "55.9", "2.4"),
        ("bbox/AP75", "0", "", "62.6", "3.8"),
    ]
    tex = (out / "transfer_table.tex").read_text()
    assert r"\quad\emph{paper} &  & 81.5 (+0.2) & 55.9 (+2.4) & 62.6 (+3.8) \\" in tex
    assert not (out / "bars_voc_c4_24k.png").exists()  # nothing of ours to plot


def test_shown_means_and_deltas_agree(tmp_path):
    """57.0 and 57.1 average to 57.05: shown as 57.1 (half up, like the delta), so that
    57.1 - 53.2 = 3.9 can be checked from the table."""
    from detection.transfer.tables import to_latex, to_markdown

    root = tmp_path / "transfer"
    _run(root, TASK, "supervised", 0, _bbox(81.0, 53.2, 58.0))
    _run(root, TASK, "moco_v2_200ep", 0, _bbox(82.0, 57.0, 63.0))
    _run(root, TASK, "moco_v2_200ep", 1, _bbox(82.0, 57.1, 63.0))
    tables, _ = build_tables(collect(root), ["AP"], "supervised")
    assert "| moco_v2_200ep | 2 | 57.1 ± 0.1 (+3.9) |" in to_markdown(tables)
    assert r"moco\_v2\_200ep & 2 & 57.1{\scriptsize$\pm$0.1} (+3.9) \\" in to_latex(tables)


def test_latex_escapes_every_special_character_once(tmp_path):
    from detection.transfer.tables import to_latex

    root = tmp_path / "transfer"
    _run(root, "t", "sup", 0, _bbox(1.0, 2.0, 3.0))
    _write_json(
        root / "odd" / "run.json",
        {"task": "t", "init": "a\\b~c^d&e%f$g#h_i{j}", "trial": 0, "status": "done"},
    )
    _write_json(root / "odd" / "eval_results.json", {"bbox": _bbox(1.0, 2.0, 3.0)})
    tables, _ = build_tables(collect(root), ["AP"], "sup")
    tex = to_latex(tables)
    escaped = r"a\textbackslash{}b\textasciitilde{}c\textasciicircum{}d\&e\%f\$g\#h\_i\{j\}"
    assert escaped + " & 1 & 2.0 (+0.0)" in tex


def test_a_non_finite_metric_is_shown_not_a_crash():
    from detection.transfer.tables import fmt1, shown_delta

    assert (fmt1(float("nan")), fmt1(float("inf"))) == ("nan", "inf")  # a diverged run's AP
    assert math.isnan(shown_delta(float("nan"), 53.2))


def _provenance(seed, batch=16, lr=0.02, weights="a" * 64, world=8):
    return {
        "config_file": "/c/voc_R50_C4_moco.yaml",
        "config_sha256": "c" * 64,
        "weights": {"path": "/w/moco_c4.pkl", "sha256": weights, "source": None},
        "code": {"commit": "d" * 40, "dirty": False},
        "detectron2": "pure Python 0.6",
        "world_size": world,
        "seed": seed,
        "protocol": {
            "label": "same total batch as the config",
            "world_size": world,
            "ims_per_batch": batch,
            "base_lr": lr,
            "max_iter": 24000,
            "steps": [18000, 22000],
        },
    }


def _prov_run(root, init, trial, prov):
    folder = root / "voc" / init / f"trial{trial}"
    _write_json(
        folder / "eval_results.json",
        {"voc_2007_test": {"bbox": _bbox(80.0, 50.0, 55.0)}, "__provenance__": prov},
    )


def test_trials_with_other_defining_settings_are_refused_by_name(tmp_path, capsys):
    root = tmp_path / "transfer"
    _prov_run(root, "moco", 0, _provenance(0))
    _prov_run(root, "moco", 1, _provenance(1, world=2))  # fewer GPUs, same total batch: comparable
    tables, warnings = build_tables(collect(root), baseline="moco")
    rows = list(csv.DictReader(io.StringIO(to_csv(tables))))
    assert rows[0]["seeds"] == "0;1" and rows[0]["world_size"] == "8;2"
    assert rows[0]["ims_per_batch"] == "16" and rows[0]["code_version"] == "d" * 12
    assert rows[0]["weights_sha256"] == "a" * 64 and rows[0]["steps"] == "18000 22000"

    _prov_run(root, "moco", 2, _provenance(2, batch=4, lr=0.005, weights="b" * 64))  # linear-scaled
    with pytest.raises(MixedTrialsError) as e:
        build_tables(collect(root), baseline="moco")
    msg = str(e.value)
    assert msg.startswith("voc/moco: its trials were made with different settings")
    assert "\n" not in msg
    assert "weights_sha256 (trial0: " + "a" * 64 in msg and "trial2: " + "b" * 64 in msg
    assert "ims_per_batch (trial0: 16, trial1: 16, trial2: 4)" in msg
    assert "base_lr (trial0: 0.02, trial1: 0.02, trial2: 0.005)" in msg and "max_iter" not in msg
    tool = _load_tool("transfer_table")
    assert tool.main([str(root), "--reference", ""]) == 2  # the CLI: one error line, no table
    err = capsys.readouterr().err
    assert err.startswith("error: voc/moco: its trials were made with different settings")


def test_trials_without_provenance_are_warned_about_not_refused(tmp_path):
    root = tmp_path / "transfer"
    _prov_run(root, "moco", 0, _provenance(0))
    _run(root, "voc", "moco", 1, _bbox(81.0, 51.0, 56.0))  # an older trainer's file
    tables, warnings = build_tables(collect(root), baseline="moco")
    assert tables[0].stats["moco"]["bbox/AP50"].n == 2
    assert any("voc/moco/trial1: no provenance recorded" in w for w in warnings)
