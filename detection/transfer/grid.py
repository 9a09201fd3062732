"""Run a transfer grid: tasks (Detectron2 configs) × inits (weights) × trials (seeds).

Each run goes to ``ROOT/<task>/<init>/trial<N>/`` with a ``run.json`` manifest (task, init, trial,
config, weights, seed, status, log; once done, the trainer's provenance of its numbers), so
``detection/transfer/results.py`` can find and judge it. Runs
whose manifest says ``done`` and that have results are skipped; a failed run is marked
``failed`` with its log and the grid goes on. Each run is one subprocess of the training command
(``tools/train_net.py`` by default), locally one after another, or one SLURM job through submitit.

run.json also holds a ``fingerprint`` of what determines the run (config path, weights, seed,
opts): a finished run whose fingerprint differs from the plan's is ``changed`` and the grid refuses
to go on, rather than silently reusing numbers made with other settings (``force`` reruns it).
A run marked ``running``/``submitted`` is checked: a local process by its pid, a SLURM job by
``sacct``; one that cannot be checked stays ``unverified`` and is skipped unless ``retry_stale``.

Seeds: ``SEED = seed_base + trial``, the same for every init of a trial, so trial k of MoCo and
of the supervised baseline see the same data order (paired comparison).
"""

import contextlib
import dataclasses
import datetime
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import time

import yaml

from detection.config_lookup import resolve_config_path
from detection.transfer.results import (
    MANIFEST,
    PLAN,
    read_manifest,
    read_provenance,
    read_run_metrics,
)
from pretrain.engine.slurm import sbatch_refusal
from pretrain.io import atomic_write_bytes
from pretrain.meters import format_duration
from pretrain.subprocesses import run_logged, tool_command

DEFAULT_TRAIN_CMD = tuple(tool_command("detection.cli.train_net"))


@dataclasses.dataclass
class PlannedRun:
    task: str
    init: str
    trial: int
    config: str
    weights: str  # "" = random init; None = the config's own MODEL.WEIGHTS
    seed: int
    folder: str
    opts: list = dataclasses.field(default_factory=list)  # extra Detectron2 KEY VALUE pairs
    paper_label: str = None

    @property
    def name(self):
        return f"{self.task}/{self.init}/trial{self.trial}"


# ---- the grid: from a YAML file or from flags ----------------------------------------------


def _check_name(kind, name):
    if not name or "/" in name or os.sep in name or name[0] in "._":
        raise ValueError(
            f"bad {kind} name {name!r}: it becomes a folder name, so it must be non-empty, "
            f"without '/', and not start with '.' or '_'"
        )


def _is_local_path(weights):
    return bool(weights) and "://" not in weights


def resolve_config(config):
    """A path, or a bare name under ``configs/`` (as ``tools/train_net.py --config NAME`` takes)."""
    try:
        return resolve_config_path(config)
    except FileNotFoundError:
        return None


def build_plan(tasks, inits, trials, out, seed_base=0, opts=()):
    """All runs of the grid.

    ``tasks``: ``{task: {"config": path, "configs": {init: path}, "inits": [names], "opts":
    [...]}}``
    (``configs`` gives a per-init config, e.g. the supervised baseline's BGR/caffe config;
    ``inits`` restricts the task to some inits). A config path or name may contain ``{variant}``:
    our configs come as ``<task>_{moco,supervised,random}.yaml``, and each init picks its variant.
    ``inits``: ``{init: {"weights": str or None, "variant": str, "opts": [...], "paper_label":
    str}}``
    or ``{init: weights}``; weights ``""`` = random init, ``None`` = the config's own MODEL.WEIGHTS;
    ``variant`` defaults to the init's name.
    """
    if not tasks:
        raise ValueError(
            "the grid has no tasks. Fix: give --configs CONFIG.yaml ... or a 'tasks:' "
            "mapping in the grid file"
        )
    if not inits:
        raise ValueError(
            "the grid has no inits. Fix: give --weights NAME=PATH ... (NAME= for random "
            "init) or an 'inits:' mapping in the grid file"
        )
    if int(trials) < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    inits = {k: (v if isinstance(v, dict) else {"weights": v}) for k, v in inits.items()}
    out = os.path.abspath(out)
    plan = []
    for task, t in tasks.items():
        _check_name("task", task)
        t = t if isinstance(t, dict) else {"config": t}
        wanted = t.get("inits") or list(inits)
        for init in wanted:
            _check_name("init", init)
            if init not in inits:
                raise ValueError(
                    f"task {task!r} asks for init {init!r}, which is not among the grid's "
                    f"inits ({', '.join(inits)}). Fix: add it under 'inits:'."
                )
            spec = inits[init]
            weights = None if spec.get("weights") is None else str(spec["weights"])
            config = (t.get("configs") or {}).get(init) or t.get("config")
            if not config:
                raise ValueError(
                    f"task {task!r} has no config for init {init!r}. Fix: set 'config:'."
                )
            config = str(config).replace("{variant}", str(spec.get("variant") or init))
            resolved = resolve_config(config)
            if resolved is None:
                raise FileNotFoundError(
                    f"config for {task}/{init} not found: {config!r} (a path from the "
                    f"current folder, {os.getcwd()}, or a name under configs/). Fix the "
                    f"path, or give the init a 'variant' (NAME:VARIANT=WEIGHTS)"
                )
            if _is_local_path(weights) and not os.path.exists(weights):
                raise FileNotFoundError(
                    f"weights for init {init!r} not found: {weights!r}. Fix: convert "
                    f"the checkpoint first (tools/convert.py), or give NAME= for "
                    f"random init"
                )
            run_opts = list(opts) + list(t.get("opts") or []) + list(spec.get("opts") or [])
            if len(run_opts) % 2:
                raise ValueError(
                    f"{task}/{init}: extra options must be KEY VALUE pairs, got {run_opts}"
                )
            for trial in range(int(trials)):
                plan.append(
                    PlannedRun(
                        task,
                        init,
                        trial,
                        resolved,
                        os.path.abspath(weights) if _is_local_path(weights) else weights,
                        int(seed_base) + trial,
                        os.path.join(out, task, init, f"trial{trial}"),
                        run_opts,
                        spec.get("paper_label"),
                    )
                )
    return plan


def load_grid(path, out=None, trials=None, extra_opts=()):
    """``(plan, root)`` from a grid YAML (keys: tasks, inits, trials, seed_base, out, opts);
    ``out``/``trials`` given here override the file's."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"grid file not found: {path!r}")
    with open(path) as f:
        g = yaml.safe_load(f) or {}
    unknown = set(g) - {"tasks", "inits", "trials", "seed_base", "out", "opts"}
    if unknown:
        raise ValueError(
            f"{path}: unknown key(s) {sorted(unknown)}; allowed: tasks, inits, trials, "
            f"seed_base, out, opts"
        )
    out = out or g.get("out")
    if not out:
        raise ValueError(f"{path}: no output root. Fix: set 'out:' in the file or pass --out ROOT")
    # "is None", not "or": --trials 0 must reach build_plan's check, not become the file's value.
    trials = g.get("trials", 1) if trials is None else trials
    plan = build_plan(
        g.get("tasks"),
        g.get("inits"),
        trials,
        out,
        g.get("seed_base", 0),
        list(g.get("opts") or []) + list(extra_opts),
    )
    return plan, os.path.abspath(out)


def parse_weights(items):
    """``--weights`` items -> ``inits`` of ``build_plan``: ``NAME=PATH``, ``NAME=`` (random init),
    ``NAME`` (the config's own MODEL.WEIGHTS), each NAME optionally ``NAME:VARIANT``
    (e.g. ``moco_v2_800ep:moco=v2_800.pkl`` runs the ``*_moco.yaml`` config)."""
    inits = {}
    for item in items:
        name, weights = item.split("=", 1) if "=" in item else (item, None)
        name, variant = name.split(":", 1) if ":" in name else (name, None)
        inits[name] = {"weights": weights, "variant": variant}
    return inits


def tasks_from_configs(configs):
    """``["voc=configs/a.yaml", "configs/voc0712_R50_C4_24k_{variant}.yaml"]`` -> tasks; the name is
    TASK or the file stem without its ``_{variant}`` part."""
    tasks = {}
    for item in configs:
        if "=" in item:
            name, path = item.split("=", 1)
        else:
            path = item
            name = os.path.splitext(os.path.basename(item))[0].replace("{variant}", "").strip("_")
        tasks[name] = {"config": path}
    return tasks


# ---- one run -------------------------------------------------------------------------------


def train_command(run, train_cmd=DEFAULT_TRAIN_CMD, num_gpus=None, resume=False):
    # "--config" is accepted by Detectron2's parser as the unambiguous prefix of "--config-file".
    cmd = list(train_cmd) + ["--config", run.config]
    if num_gpus is not None:  # None: the training command's own default
        cmd += ["--num-gpus", str(num_gpus)]
    if resume:
        cmd.append("--resume")
    cmd += ["OUTPUT_DIR", run.folder]
    if run.weights is not None:
        cmd += ["MODEL.WEIGHTS", run.weights]
    return cmd + ["SEED", str(run.seed)] + list(run.opts)


def fingerprint(run):
    """What determines a run's numbers, as recorded in run.json and compared with the plan.
    (The config by its path: its contents and _BASE_ chain are not hashed.)"""
    return {"config": run.config, "weights": run.weights, "seed": run.seed, "opts": list(run.opts)}


def fingerprint_changes(manifest, run):
    """``["weights: 'a.pkl' -> 'b.pkl'", ...]``: how ``run`` differs from the run recorded in
    ``manifest``; ``None`` when the manifest has no fingerprint (an older runner wrote it)."""
    old = manifest.get("fingerprint")
    if not isinstance(old, dict):
        return None
    new = fingerprint(run)
    return [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in new if old.get(k) != new[k]]


# SLURM job states in which the job may still write into its run folder (sacct's State column).
SLURM_ALIVE = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "COMPLETING",
    "CONFIGURING",
    "RESIZING",
    "SUSPENDED",
    "STAGE_OUT",
    "SIGNALING",
    "PREEMPTED",
}


def slurm_job_states(job_ids):
    """``{job_id: state}`` from one ``sacct`` call ("UNKNOWN" for a job sacct does not list, or
    when sacct fails); ``{}`` where there is no ``sacct`` (not a SLURM host), so nothing is claimed.

    Array tasks (``5_3``) are asked for by their array (``-j 5``), which lists every task, the
    waiting ones as a range (``5_[3-7%8]``, expanded by submitit's parser). A task missing from
    the listing of an array sacct does know was cancelled while it waited: SLURM (22.05) then
    just shrinks the waiting range, so it is reported as CANCELLED, not UNKNOWN."""
    job_ids = sorted({str(j) for j in job_ids if j})
    if not job_ids or shutil.which("sacct") is None:
        return {}
    from submitit.slurm.slurm import SlurmInfoWatcher

    arrays = sorted({j.split("_")[0] for j in job_ids})
    cmd = ["sacct", "-o", "JobID,State,NodeList", "--parsable2"]  # as submitit asks (steps skipped)
    for a in arrays:
        cmd += ["-j", a]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {j: "UNKNOWN" for j in job_ids}
    info = SlurmInfoWatcher(delay_s=0).read_info(out)
    listed_arrays = {k.split("_")[0] for k in info if "_" in k}
    states = {}
    for j in job_ids:
        if j in info:  # "CANCELLED by 1234" -> "CANCELLED"
            states[j] = (info[j].get("State", "").split() or ["UNKNOWN"])[0].upper()
        elif "_" in j and j.split("_")[0] in listed_arrays:
            states[j] = "CANCELLED"
        else:
            states[j] = "UNKNOWN"
    return states


def _manifest_or_error(run):
    try:
        return read_manifest(run.folder), None
    except ValueError as e:  # corrupt or incomplete run.json: report the run, never crash the grid
        return None, str(e)


def run_state(run, job_states=None):
    """``(state, note)``; state is one of done, changed, in_progress (known to be alive),
    unverified (marked running/submitted, but its process or job cannot be checked), failed,
    unreadable (run.json cannot be read), new.

    ``job_states``: ``slurm_job_states(...)`` of the recorded job ids; asked here when not given.
    """
    manifest, error = _manifest_or_error(run)
    if error:
        return "unreadable", error
    metrics = read_run_metrics(run.folder, manifest)[0] if os.path.isdir(run.folder) else {}
    if manifest is None:
        if metrics:
            return "done", "has results (no run.json: made outside the grid runner)"
        return "new", ""
    status = manifest.get("status")
    if status == "done":
        if not metrics:
            return "failed", "run.json says done but there are no results"
        changes = fingerprint_changes(manifest, run)
        if changes is None:
            return (
                "done",
                "run.json has no fingerprint (older runner): settings not checked against the plan",
            )
        if changes:
            return "changed", "made with other settings: " + "; ".join(changes)
        return "done", ""
    if status in ("running", "submitted"):
        return _liveness(manifest, job_states)
    error = f": {manifest['error']}" if manifest.get("error") else ""
    log = f", log {manifest['log']}" if manifest.get("log") else ""
    return "failed", f"status {status!r}{error}{log}"


def _liveness(manifest, job_states):
    """State of a run marked running/submitted: is its process or SLURM job still there?"""
    status, host, pid, job_id = (manifest.get(k) for k in ("status", "host", "pid", "job_id"))
    where = f"{status} on {host or 'SLURM'} (job {job_id or pid})"
    # A process on this host is judged by its pid first: a local grid inside a SLURM allocation
    # records the allocation's job id too, which stays RUNNING after the grid process was killed.
    if status == "running" and host == socket.gethostname() and pid and not _pid_alive(pid):
        return "failed", f"stale: its process {pid} is gone"
    if job_id:
        if job_states is None:
            job_states = slurm_job_states([job_id])
        state = job_states.get(str(job_id))
        if state in SLURM_ALIVE:
            return "in_progress", f"{where}; SLURM says {state}"
        if state is not None and state != "UNKNOWN":
            return "failed", f"stale: {where}, but SLURM says {state}"
        return "unverified", (
            f"{where}; cannot ask SLURM about it here (no sacct, or sacct does not "
            f"know the job): --retry-stale reruns it"
        )
    if status == "running" and host == socket.gethostname() and pid:
        if _pid_alive(pid):
            return "in_progress", f"{where}; the process is alive"
        return "failed", f"stale: its process {pid} is gone"
    return "unverified", f"{where}; cannot check it from here: --retry-stale reruns it"


def _pid_alive(pid):
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


def _write_manifest(run, **fields):
    old = read_manifest(run.folder) or {}
    manifest = {
        **old,
        "task": run.task,
        "init": run.init,
        "trial": run.trial,
        "config": run.config,
        "weights": run.weights,
        "seed": run.seed,
        "opts": list(run.opts),
        "fingerprint": fingerprint(run),
        **fields,
    }
    if run.paper_label:
        manifest["paper_label"] = run.paper_label
    atomic_write_bytes(
        os.path.join(run.folder, MANIFEST), (json.dumps(manifest, indent=1) + "\n").encode()
    )
    return manifest


def _slurm_job_id():
    """This job's id as submitit and sacct name it: an array task is ``<array job>_<task>`` (its own
    SLURM_JOB_ID is a number sacct lists under that name, so its state could not be looked up)."""
    array_job, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array_job and task:
        return f"{array_job}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def run_one(run, train_cmd=DEFAULT_TRAIN_CMD, num_gpus=None, resume=False, echo=True):
    """Run one training subprocess into ``run.folder``; returns its final manifest.

    Output goes to ``train_attempt<k>.log`` (a new file per attempt, so earlier logs are kept) and,
    with ``echo``, to our stdout. Also the body of each SLURM job.
    """
    os.makedirs(run.folder, exist_ok=True)
    attempt = int((read_manifest(run.folder) or {}).get("attempt", 0)) + 1
    log = os.path.join(run.folder, f"train_attempt{attempt}.log")
    cmd = train_command(run, train_cmd, num_gpus, resume)
    _write_manifest(
        run,
        status="running",
        attempt=attempt,
        log=log,
        command=cmd,
        host=socket.gethostname(),
        pid=os.getpid(),
        started=_now(),
        job_id=_slurm_job_id(),
        error=None,
        returncode=None,
        seconds=None,
        finished=None,
    )  # not the last attempt's
    t0 = time.time()
    try:
        with open(log, "w") as f:
            f.write("$ " + shlex.join(cmd) + "\n")
            f.flush()
            rc = run_logged(cmd, f, echo=(lambda line: True) if echo else None)
    except BaseException as e:  # Ctrl-C or a crash of ours: record it, then let it propagate
        _write_manifest(
            run,
            status="failed",
            error=f"interrupted: {type(e).__name__}",
            seconds=round(time.time() - t0, 1),
            finished=_now(),
        )
        raise
    seconds = round(time.time() - t0, 1)
    if rc != 0:
        return _write_manifest(
            run,
            status="failed",
            returncode=rc,
            error=f"exit code {rc}",
            seconds=seconds,
            finished=_now(),
        )
    # Mark done only when the numbers are really there.
    metrics, source, _ = read_run_metrics(run.folder, {"status": "done"})
    # Numbers older than this attempt (an earlier attempt's file) do not count.
    if not metrics or os.path.getmtime(source) < t0 - 1:
        return _write_manifest(
            run,
            status="failed",
            returncode=rc,
            seconds=seconds,
            finished=_now(),
            error="exited 0 but wrote no results (eval_results.json / metrics.json)",
        )
    # How the numbers were made, as the trainer recorded it beside them (None: an older trainer).
    return _write_manifest(
        run,
        status="done",
        returncode=0,
        error=None,
        seconds=seconds,
        finished=_now(),
        provenance=read_provenance(run.folder),
    )


# ---- the grid ------------------------------------------------------------------------------


def write_plan(root, plan):
    """Record the planned runs in ``ROOT/plan.json`` (merged with earlier grids into the same root),
    so that the table tool can report runs that never got a folder."""
    path = os.path.join(root, PLAN)
    runs = {}
    if os.path.isfile(path):
        with open(path) as f:
            runs = {r["folder"]: r for r in json.load(f).get("runs", [])}
    for r in plan:
        folder = os.path.relpath(r.folder, root)
        runs[folder] = {
            "task": r.task,
            "init": r.init,
            "trial": r.trial,
            "folder": folder,
            "config": r.config,
            "weights": r.weights,
            "seed": r.seed,
        }
    atomic_write_bytes(
        path,
        (
            json.dumps({"runs": sorted(runs.values(), key=lambda r: r["folder"])}, indent=1) + "\n"
        ).encode(),
    )


def set_aside(run, root):
    """``--force``: move an existing run folder to ``ROOT/_replaced/`` instead of deleting it."""
    if not os.path.exists(run.folder):
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = os.path.join(root, "_replaced", run.task, run.init, f"trial{run.trial}-{stamp}")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.move(run.folder, dest)
    return dest


# States whose runs a grid call leaves alone (unless --force).
SKIPPED = ("done", "in_progress", "unverified", "changed", "unreadable")


class ChangedRunsError(ValueError):
    """Finished runs were made with other settings than the plan's: reusing their numbers would
    mix settings in one table, and rerunning them silently would throw results away."""


class SubmissionError(RuntimeError):
    """SLURM refused the submission (sbatch failed)."""


def _recorded_job_ids(plan):
    ids = []
    for run in plan:
        manifest, _ = _manifest_or_error(run)
        if (
            manifest
            and manifest.get("status") in ("running", "submitted")
            and manifest.get("job_id")
        ):
            ids.append(manifest["job_id"])
    return ids


def to_do(plan, force=False, retry_stale=False):
    """``[(run, state, note)]`` for every planned run (states of ``run_state``, plus ``rerun`` and
    ``retry``). ``force``: every run with a folder is rerun, done and changed ones included, its old
    folder moved to ``_replaced/`` (a SLURM job still running is not cancelled: scancel it first).
    ``retry_stale``: runs marked running/submitted that cannot be confirmed alive are retried in
    their folder, like failed ones; done runs never are."""
    # sacct is asked before run_state reads the manifests: a job that ended before the question
    # has already written its final status, so "running" + a dead job really is stale.
    job_states = slurm_job_states(_recorded_job_ids(plan))
    out = []
    for run in plan:
        state, note = run_state(run, job_states)
        if force and state != "new":
            state, note = "rerun", f"forced (was {state}; old folder kept under _replaced/)"
        elif retry_stale and state == "unverified":
            state, note = "retry", f"--retry-stale (was: {note})"
        out.append((run, state, note))
    return out


def refuse_changed(states):
    """Raise ``ChangedRunsError`` listing every changed run and what changed."""
    changed = [(run, note) for run, state, note in states if state == "changed"]
    if changed:
        lines = "\n".join(f"  {run.name}: {note}" for run, note in changed)
        raise ChangedRunsError(
            f"{len(changed)} finished run(s) were made with other settings "
            f"than this grid's:\n{lines}\n"
            f"Fix: rerun with --force (all existing runs are redone; old folders are kept under "
            f"ROOT/_replaced/), or give this grid another --out ROOT."
        )


def describe_plan(
    plan, train_cmd=DEFAULT_TRAIN_CMD, num_gpus=None, resume=False, force=False, retry_stale=False
):
    lines, states = [], to_do(plan, force, retry_stale)
    for i, (run, state, note) in enumerate(states, 1):
        action = f"skip ({state.replace('_', ' ')})" if state in SKIPPED else "run"
        lines.append(
            f"run {i}/{len(plan)}: {run.name} seed {run.seed}: {action}"
            + (f" [{state}: {note}]" if note else "")
        )
        if action == "run":
            lines.append("    $ " + shlex.join(train_command(run, train_cmd, num_gpus, resume)))
    n_run = sum(1 for _, s, _ in states if s not in SKIPPED)
    lines.append(f"{len(plan)} runs planned, {n_run} to run, {len(plan) - n_run} skipped")
    n_changed = sum(1 for _, s, _ in states if s == "changed")
    if n_changed:
        lines.append(
            f"{n_changed} run(s) changed: the grid will refuse to run until you pass --force "
            f"or another --out"
        )
    return "\n".join(lines)


def run_local(
    plan,
    root,
    train_cmd=DEFAULT_TRAIN_CMD,
    num_gpus=None,
    resume=False,
    force=False,
    echo=True,
    print_fn=print,
    retry_stale=False,
):
    """Run the grid here, one run after another. Returns ``{"done": [...], "skipped": [...],
    "failed": [(run, manifest)], "unreadable": [(run, note)]}``; a failure never stops the grid.
    Raises ``ChangedRunsError`` before running anything if a finished run has other settings."""
    states = to_do(plan, force, retry_stale)
    refuse_changed(states)
    write_plan(root, plan)
    pending = sum(1 for _, s, _ in states if s not in SKIPPED)
    summary = {"done": [], "skipped": [], "failed": [], "unreadable": []}
    durations = []
    for i, (run, state, note) in enumerate(states, 1):
        if state in SKIPPED:
            print_fn(
                f"run {i}/{len(plan)}: {run.name}: skip ({state}{': ' + note if note else ''})"
            )
            summary["unreadable" if state == "unreadable" else "skipped"].append(
                (run, note) if state == "unreadable" else run
            )
            continue
        if state == "rerun":
            moved = set_aside(run, root)
            if moved:
                print_fn(f"  kept the old {run.name} as {moved}")
        left = pending - len(durations)
        eta = (
            f", ETA {format_duration(sum(durations) / len(durations) * left)}" if durations else ""
        )
        print_fn(
            f"run {i}/{len(plan)}: {run.name} (seed {run.seed}; {left} left{eta})"
            + (f" [{note}]" if note else "")
        )
        manifest = run_one(run, train_cmd, num_gpus, resume, echo=echo)
        durations.append(manifest.get("seconds", 0.0))
        if manifest["status"] == "done":
            print_fn(
                f"run {i}/{len(plan)}: {run.name} done in {format_duration(manifest['seconds'])}"
            )
            summary["done"].append(run)
        else:
            print_fn(
                f"run {i}/{len(plan)}: {run.name} FAILED "
                f"({manifest.get('error')}); log: {manifest['log']}"
            )
            summary["failed"].append((run, manifest))
    return summary


def format_summary(summary):
    unreadable = summary.get("unreadable", [])
    lines = [
        f"grid finished: {len(summary['done'])} ran, {len(summary['skipped'])} skipped, "
        f"{len(summary['failed'])} failed"
        + (f", {len(unreadable)} unreadable" if unreadable else "")
    ]
    for run, manifest in summary["failed"]:
        lines.append(f"  FAILED {run.name}: {manifest.get('error')}; log: {manifest.get('log')}")
    for run, note in unreadable:
        lines.append(f"  UNREADABLE {run.name}: {note}")
    if summary["failed"]:
        lines.append(
            "  rerun the same command to retry the failed runs (finished runs are skipped)"
        )
    return "\n".join(lines)


# ---- SLURM through submitit ----------------------------------------------------------------


def slurm_parameters(
    partition,
    gpus_per_node=8,
    cpus_per_task=10,
    timeout_min=72 * 60,
    mem_gb=None,
    constraint=None,
    name="transfer",
):
    """submitit ``AutoExecutor.update_parameters`` keywords for one single-node run per job."""
    if gpus_per_node < 0:
        raise ValueError(f"--gpus-per-node must be >= 0 (0: a CPU partition), got {gpus_per_node}")
    params = dict(
        slurm_partition=partition,
        nodes=1,
        tasks_per_node=1,
        cpus_per_task=cpus_per_task,
        timeout_min=timeout_min,
        name=name,
    )
    if gpus_per_node:  # 0: no GPU request at all (a CPU partition has no GPU gres to match)
        params["gpus_per_node"] = gpus_per_node
    if mem_gb:
        params["mem_gb"] = mem_gb
    if constraint:
        params["slurm_constraint"] = constraint
    return params


def make_slurm_executor(folder, params, cluster="slurm"):
    """The submitit executor (``cluster="slurm"`` needs ``srun`` on PATH; tests use "debug",
    which validates the same parameters)."""
    import submitit

    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(**params)
    return executor


def slurm_jobs(
    plan, train_cmd=DEFAULT_TRAIN_CMD, gpus_per_node=8, resume=False, force=False, retry_stale=False
):
    """``[(run, kwargs for run_one)]``: one job per run still to do; each job trains on all GPUs of
    its node (``--num-gpus gpus_per_node``). Raises ``ChangedRunsError`` as ``run_local`` does."""
    states = to_do(plan, force, retry_stale)
    refuse_changed(states)
    return [
        (run, dict(train_cmd=list(train_cmd), num_gpus=gpus_per_node, resume=resume, echo=True))
        for run, state, _ in states
        if state not in SKIPPED
    ]


def submit_slurm(executor, jobs, root, force=False, print_fn=print):
    """Submit ``slurm_jobs(...)`` as one job array; mark each run ``submitted`` with its job id.

    If SLURM refuses the array (sbatch fails: bad partition, account, QOS), every run is marked
    ``failed`` with the error, so that the next call retries it instead of skipping a "submitted"
    run that no job will ever finish, and ``SubmissionError`` is raised."""
    for run, _ in jobs:
        if force:
            set_aside(run, root)
        # Marked before submitting: a job may start (and write "running") before submit() returns.
        os.makedirs(run.folder, exist_ok=True)
        _write_manifest(run, status="submitted", submitted=_now(), host=None, pid=None, job_id=None)
    try:
        # submitit prints sbatch's stderr before raising: captured, it is quoted once, below.
        with contextlib.redirect_stderr(io.StringIO()), executor.batch():
            handles = [executor.submit(run_one, run, **kwargs) for run, kwargs in jobs]
    except Exception as e:
        reason = sbatch_refusal(e)
        for run, _ in jobs:
            _write_manifest(
                run, status="failed", error=f"SLURM submission failed: {reason}", finished=_now()
            )
        raise SubmissionError(
            f"SLURM refused the submission of {len(jobs)} job(s): {reason}. The runs are "
            f"marked failed. Fix the SLURM options (--partition: sinfo lists them; "
            f"--constraint, --mem-gb, --timeout-min) and rerun the same command."
        ) from e
    for (run, _), job in zip(jobs, handles):
        if (read_manifest(run.folder) or {}).get("status") == "submitted":
            _write_manifest(run, job_id=str(job.job_id))
        print_fn(f"submitted {run.name} as SLURM job {job.job_id}")
    return handles


def run_grid(
    plan,
    root,
    train_cmd=DEFAULT_TRAIN_CMD,
    num_gpus=None,
    resume=False,
    force=False,
    dry_run=False,
    echo=True,
    slurm=None,
    print_fn=print,
    retry_stale=False,
):
    """The whole ``tools/run_transfer.py``: print the plan (``dry_run``), run it locally, or submit
    it to SLURM (``slurm``: ``slurm_parameters(...)`` plus ``"folder"``). Returns the exit code:
    1 if any run failed or has an unreadable run.json, else 0. Raises ``ChangedRunsError`` (finished
    runs with other settings; nothing is run) and ``SubmissionError`` (sbatch refused)."""
    missing = [part for part in train_cmd if part.endswith(".py") and not os.path.isfile(part)]
    if missing and not dry_run:
        raise FileNotFoundError(
            f"training script not found: {missing[0]}. Fix: run from a full checkout, "
            f"or point --train-cmd at the training command"
        )
    if dry_run:
        gpus = slurm.get("gpus_per_node", 0) if slurm else num_gpus
        print_fn(describe_plan(plan, train_cmd, gpus, resume, force, retry_stale))
        if slurm:
            params = {k: v for k, v in slurm.items() if k != "folder"}
            make_slurm_executor(
                slurm["folder"], params, cluster="debug"
            )  # validates the parameters
            print_fn(f"SLURM: one job per run with {params}; logs in {slurm['folder']}")
        return 0
    if slurm:
        params = {k: v for k, v in slurm.items() if k != "folder"}
        jobs = slurm_jobs(
            plan, train_cmd, slurm.get("gpus_per_node", 0), resume, force, retry_stale
        )
        executor = make_slurm_executor(slurm["folder"], params)
        write_plan(root, plan)
        submit_slurm(executor, jobs, root, force, print_fn)
        print_fn(
            f"{len(jobs)} job(s) submitted, {len(plan) - len(jobs)} run(s) skipped; "
            f"check progress with tools/transfer_table.py {root}"
        )
        return 0
    summary = run_local(plan, root, train_cmd, num_gpus, resume, force, echo, print_fn, retry_stale)
    print_fn(format_summary(summary))
    return 1 if summary["failed"] or summary["unreadable"] else 0
