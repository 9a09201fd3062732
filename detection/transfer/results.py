"""Collect fine-tuning results from Detectron2 output folders, and say which runs have none.

A run folder is found in either of two ways (both may hold for the same folder):

* by layout: ``ROOT/<task>/<init>/trial<N>/``;
* by manifest: a ``run.json`` written by the grid runner (``detection/transfer/grid.py``) that names
  ``task``, ``init`` and ``trial`` (and ``status``), wherever the folder is under ROOT.

Its numbers come from ``eval_results.json`` (``{dataset: {eval_type: {metric: value}}}``, written
by our trainer after the final evaluation) or, failing that, from the last line of Detectron2's
``metrics.json`` (JSON lines) that holds evaluation keys such as ``"bbox/AP"``. A run without
numbers is never dropped silently: it is returned in ``Collection.missing`` with the reason and
what to do about it.

Light on purpose: json and yaml only, no Detectron2 import.
"""

import dataclasses
import json
import os
import re

import yaml

from pretrain.io import read_json_lines

# The result groups Detectron2's evaluators report (``DatasetEvaluator.evaluate()`` keys).
# Training scalars such as "fast_rcnn/cls_accuracy" also contain a slash; only these are results.
EVAL_TYPES = (
    "bbox",
    "segm",
    "keypoints",
    "sem_seg",
    "panoptic_seg",
    "box_proposals",
    "densepose_gps",
    "densepose_gpsm",
    "densepose_segm",
)
MANIFEST = "run.json"
# eval_results.json's key for how the numbers were made (detection.provenance); not a dataset.
PROVENANCE_KEY = "__provenance__"
PLAN = "plan.json"
TRIAL_DIR = re.compile(r"^trial(\d+)$")


@dataclasses.dataclass
class RunResult:
    """One finished fine-tuning run: ``metrics`` maps ``"bbox/AP50"`` (or, when the run evaluated
    several datasets, ``"<dataset>/bbox/AP50"``) to a number in Detectron2's percent scale."""

    task: str
    init: str
    trial: int
    folder: str
    metrics: dict
    source: str  # the file the numbers came from
    paper_label: str = (
        None  # the init's name in detection/transfer/paper_results.yaml, from run.json
    )
    provenance: dict = None  # how the numbers were made (eval_results.json, else run.json)


@dataclasses.dataclass
class MissingRun:
    task: str
    init: str
    trial: int
    folder: str
    reason: str

    def describe(self):
        return f"{self.task}/{self.init}/trial{self.trial}: {self.reason} [{self.folder}]"


@dataclasses.dataclass
class Collection:
    results: list
    missing: list


def flatten_eval_results(results):
    """``{dataset: {eval_type: {metric: v}}}`` or Detectron2's single-dataset form
    ``{eval_type: {metric: v}}`` -> ``{"bbox/AP": v}`` (several datasets: ``"ds/bbox/AP"``).

    Non-numbers are dropped; NaN (COCO's "no instances of this size") is kept as NaN.
    """
    if not isinstance(results, dict):
        raise ValueError(f"expected a JSON object, got {type(results).__name__}")
    results = {k: v for k, v in results.items() if k != PROVENANCE_KEY}
    if results and all(k in EVAL_TYPES for k in results):  # single dataset, already unwrapped
        results = {None: results}
    flat = {}
    for dataset, groups in results.items():
        if not isinstance(groups, dict):
            continue
        prefix = "" if len(results) == 1 or dataset is None else f"{dataset}/"
        for eval_type, metrics in groups.items():
            if not isinstance(metrics, dict):
                continue
            for name, value in metrics.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    flat[f"{prefix}{eval_type}/{name}"] = float(value)
    return flat


def is_eval_key(key):
    parts = key.split("/")
    return len(parts) >= 2 and parts[-2] in EVAL_TYPES


def read_metrics_json(path):
    """The last ``metrics.json`` line that holds evaluation keys: ``(iteration, {key: value})``,
    or ``(None, {})``. A half-written last line (a killed run) is skipped, not an error."""
    last_iter, last = None, {}
    for record in read_json_lines(path):
        evals = {
            k: float(v)
            for k, v in record.items()
            if is_eval_key(k) and isinstance(v, (int, float)) and not isinstance(v, bool)
        }
        if evals:
            last_iter, last = record.get("iteration"), evals
    return last_iter, last


def _max_iter(folder):
    """SOLVER.MAX_ITER from the ``config.yaml`` Detectron2 dumps into OUTPUT_DIR, if readable."""
    path = os.path.join(folder, "config.yaml")
    try:
        with open(path) as f:
            cfg = yaml.safe_load(f)
        return int(cfg["SOLVER"]["MAX_ITER"])
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError):
        return None


def read_manifest(folder):
    path = os.path.join(folder, MANIFEST)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            manifest = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(
            f"{path}: unreadable run manifest ({e}). Fix: delete it (the folder is then "
            f"identified by its ROOT/<task>/<init>/trial<N> place) or rerun the grid."
        ) from e
    for key in ("task", "init", "trial"):
        if key not in manifest:
            raise ValueError(
                f"{path}: run manifest lacks {key!r}. Fix: add it, e.g. "
                f'{{"task": "voc", "init": "moco", "trial": 0, "status": "done"}}.'
            )
    return manifest


def read_run_metrics(folder, manifest=None):
    """``(metrics, source, reason)``: the run's numbers and the file they came from, or
    ``({}, None, reason)`` saying why there are none and how to get them."""
    manifest = manifest if manifest is not None else read_manifest(folder)
    status = (manifest or {}).get("status")
    if status is not None and status != "done":
        log = (manifest or {}).get("log")
        hint = f"; log: {log}" if log else ""
        if status == "failed":
            return (
                {},
                None,
                f"run failed{hint}. Fix the cause and rerun the grid (finished runs are skipped)",
            )
        return (
            {},
            None,
            (
                f"run not finished (status {status!r}{hint}); wait for it, or rerun the grid "
                f"to restart it"
            ),
        )

    metrics_json = os.path.join(folder, "metrics.json")
    iteration, from_metrics_json = (
        read_metrics_json(metrics_json) if os.path.isfile(metrics_json) else (None, {})
    )
    max_iter = _max_iter(folder)
    # The final evaluation (EvalHook.after_train) is stored at iteration MAX_ITER, periodic ones at
    # k*EVAL_PERIOD-1 < MAX_ITER-1. A last evaluation before MAX_ITER-1 is a mid-training one (our
    # trainer then also writes eval_results.json): without a manifest saying "done", the run is
    # still going or died.
    if (
        status != "done"
        and max_iter is not None
        and iteration is not None
        and iteration < max_iter - 1
    ):
        return (
            {},
            None,
            (
                f"unfinished: last evaluation at iteration {iteration} of {max_iter}; "
                f"let it finish or resume it (train_net.py --resume)"
            ),
        )

    path = os.path.join(folder, "eval_results.json")
    if os.path.isfile(path):
        try:
            with open(path) as f:
                flat = flatten_eval_results(json.load(f))
        except (OSError, ValueError) as e:
            return (
                {},
                None,
                f"eval_results.json unreadable ({e}); re-run the evaluation (--eval-only)",
            )
        if flat:
            return flat, path, None

    if from_metrics_json:
        return from_metrics_json, metrics_json, None

    if os.path.isdir(os.path.join(folder, "inference")):
        return (
            {},
            None,
            (
                "inference/ exists but no metrics were recorded; re-run the evaluation: "
                "tools/train_net.py --config <cfg> --eval-only MODEL.WEIGHTS "
                f"{os.path.join(folder, 'model_final.pth')} OUTPUT_DIR {folder}"
            ),
        )
    return {}, None, "no results (neither eval_results.json nor evaluation lines in metrics.json)"


def read_provenance(folder, manifest=None):
    """The provenance eval_results.json records (else run.json's copy); None for older runs."""
    path = os.path.join(folder, "eval_results.json")
    try:
        with open(path) as f:
            prov = json.load(f).get(PROVENANCE_KEY)
    except (OSError, ValueError, AttributeError):
        prov = None
    if prov is None and manifest:
        prov = manifest.get("provenance")
    return prov if isinstance(prov, dict) else None


def _skip_dir(name):
    # "_submitit" logs, "_replaced" backups of forced reruns, hidden folders: never runs.
    return name.startswith(".") or name.startswith("_")


def find_run_folders(root):
    """``[(folder, task, init, trial, manifest)]`` for every run folder under ``root``."""
    root = os.path.abspath(root)
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not _skip_dir(d))
        rel = os.path.relpath(dirpath, root).split(os.sep)
        manifest = read_manifest(dirpath) if MANIFEST in filenames else None
        if manifest is not None:
            found.append(
                (
                    dirpath,
                    str(manifest["task"]),
                    str(manifest["init"]),
                    int(manifest["trial"]),
                    manifest,
                )
            )
        elif len(rel) == 3 and TRIAL_DIR.match(rel[2]):
            found.append((dirpath, rel[0], rel[1], int(TRIAL_DIR.match(rel[2]).group(1)), None))
        else:
            continue
        dirnames[:] = []  # a run's own subfolders (inference/, ...) hold no further runs
    return found


def read_plan(root):
    """Runs the grid runner planned into ``root`` (``plan.json``): ``[(task, init, trial,
    folder)]``.
    """
    path = os.path.join(root, PLAN)
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        plan = json.load(f)
    return [
        (r["task"], r["init"], int(r["trial"]), os.path.join(root, r["folder"]))
        for r in plan.get("runs", [])
    ]


def collect(root):
    """Every run under ``root``, split into results and missing runs.

    Expected runs that have no folder at all are also reported: those in the grid runner's
    ``plan.json``, and, per task, any trial number that another init of that task has.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(
            f"results folder not found: {root!r}. Fix: pass the ROOT given to "
            f"tools/run_transfer.py --out (it holds <task>/<init>/trial<N>/)."
        )
    results, missing, seen = [], [], {}
    for folder, task, init, trial, manifest in find_run_folders(root):
        key = (task, init, trial)
        if key in seen:
            raise ValueError(
                f"two run folders claim {task}/{init}/trial{trial}: {seen[key]} and {folder}. "
                f"Fix: move one of them out of {root} (or into a folder named _something)."
            )
        seen[key] = folder
        metrics, source, reason = read_run_metrics(folder, manifest)
        if metrics:
            results.append(
                RunResult(
                    task,
                    init,
                    trial,
                    folder,
                    metrics,
                    source,
                    (manifest or {}).get("paper_label"),
                    read_provenance(folder, manifest),
                )
            )
        else:
            missing.append(MissingRun(task, init, trial, folder, reason))

    expected = {(t, i, n): f for t, i, n, f in read_plan(root)}
    trials_per_task, inits_per_task = {}, {}
    for task, init, trial in seen:
        trials_per_task.setdefault(task, set()).add(trial)
        inits_per_task.setdefault(task, set()).add(init)
    for task, inits in inits_per_task.items():
        for init in inits:
            for trial in trials_per_task[task]:
                expected.setdefault(
                    (task, init, trial), os.path.join(root, task, init, f"trial{trial}")
                )
    for (task, init, trial), folder in sorted(expected.items()):
        if (task, init, trial) not in seen:
            missing.append(
                MissingRun(task, init, trial, folder, "no run folder (never run, or moved)")
            )
    missing.sort(key=lambda m: (m.task, m.init, m.trial))
    return Collection(results, missing)
