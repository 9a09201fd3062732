"""Run a transfer grid: tasks (Detectron2 configs) × inits (weights) × trials (seeds).

Each run goes to ``ROOT/<task>/<init>/trial<N>/`` with a ``run.json`` manifest (task, init, trial,
config, weights, seed, status, log), so ``detection/results.py`` can find and judge it. Runs
whose manifest says ``done`` and that have results are skipped; a failed run is marked
``failed`` with its log and the grid goes on. Each run is one subprocess of the training command
(``tools/train_net.py`` by default), locally one after another, or one SLURM job through submitit.

Seeds: ``SEED = seed_base + trial``, the same for every init of a trial, so trial k of MoCo and
of the supervised baseline see the same data order (paired comparison).
"""
import dataclasses
import datetime
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time

import yaml

from detection.results import MANIFEST, PLAN, read_manifest, read_run_metrics
from pretrain.io import atomic_write_bytes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_TRAIN_CMD = (sys.executable, os.path.join(REPO, "tools", "train_net.py"))


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
        raise ValueError(f"bad {kind} name {name!r}: it becomes a folder name, so it must be non-empty, "
                         f"without '/', and not start with '.' or '_'")


def _is_local_path(weights):
    return bool(weights) and "://" not in weights


def resolve_config(config):
    """A path, or a bare name under ``configs/`` (as ``tools/train_net.py --config NAME`` takes)."""
    for candidate in (config, os.path.join(REPO, "configs", config), os.path.join(REPO, "configs", config + ".yaml")):
        if os.path.isfile(candidate):
            return os.path.abspath(candidate)
    return None


def build_plan(tasks, inits, trials, out, seed_base=0, opts=()):
    """All runs of the grid.

    ``tasks``: ``{task: {"config": path, "configs": {init: path}, "inits": [names], "opts": [...]}}``
    (``configs`` gives a per-init config, e.g. the supervised baseline's BGR/caffe config;
    ``inits`` restricts the task to some inits). A config path or name may contain ``{variant}``:
    our configs come as ``<task>_{moco,supervised,random}.yaml``, and each init picks its variant.
    ``inits``: ``{init: {"weights": str or None, "variant": str, "opts": [...], "paper_label": str}}``
    or ``{init: weights}``; weights ``""`` = random init, ``None`` = the config's own MODEL.WEIGHTS;
    ``variant`` defaults to the init's name.
    """
    if not tasks:
        raise ValueError("the grid has no tasks. Fix: give --configs CONFIG.yaml ... or a 'tasks:' "
                         "mapping in the grid file")
    if not inits:
        raise ValueError("the grid has no inits. Fix: give --weights NAME=PATH ... (NAME= for random "
                         "init) or an 'inits:' mapping in the grid file")
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
                raise ValueError(f"task {task!r} asks for init {init!r}, which is not among the grid's "
                                 f"inits ({', '.join(inits)}). Fix: add it under 'inits:'.")
            spec = inits[init]
            weights = None if spec.get("weights") is None else str(spec["weights"])
            config = (t.get("configs") or {}).get(init) or t.get("config")
            if not config:
                raise ValueError(f"task {task!r} has no config for init {init!r}. Fix: set 'config:'.")
            config = str(config).replace("{variant}", str(spec.get("variant") or init))
            resolved = resolve_config(config)
            if resolved is None:
                raise FileNotFoundError(f"config for {task}/{init} not found: {config!r} (a path from the "
                                        f"current folder, {os.getcwd()}, or a name under configs/). Fix the "
                                        f"path, or give the init a 'variant' (NAME:VARIANT=WEIGHTS)")
            if _is_local_path(weights) and not os.path.exists(weights):
                raise FileNotFoundError(f"weights for init {init!r} not found: {weights!r}. Fix: convert "
                                        f"the checkpoint first (tools/convert_*.py), or give NAME= for "
                                        f"random init")
            run_opts = list(opts) + list(t.get("opts") or []) + list(spec.get("opts") or [])
            if len(run_opts) % 2:
                raise ValueError(f"{task}/{init}: extra options must be KEY VALUE pairs, got {run_opts}")
            for trial in range(int(trials)):
                plan.append(PlannedRun(
                    task, init, trial, resolved,
                    os.path.abspath(weights) if _is_local_path(weights) else weights,
                    int(seed_base) + trial, os.path.join(out, task, init, f"trial{trial}"),
                    run_opts, spec.get("paper_label")))
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
        raise ValueError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: tasks, inits, trials, "
                         f"seed_base, out, opts")
    out = out or g.get("out")
    if not out:
        raise ValueError(f"{path}: no output root. Fix: set 'out:' in the file or pass --out ROOT")
    plan = build_plan(g.get("tasks"), g.get("inits"), trials or g.get("trials", 1), out,
                      g.get("seed_base", 0), list(g.get("opts") or []) + list(extra_opts))
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


def run_state(run):
    """``(state, note)``; state is one of done, in_progress, failed, new."""
    manifest = read_manifest(run.folder)
    metrics = read_run_metrics(run.folder, manifest)[0] if os.path.isdir(run.folder) else {}
    if manifest is None:
        if metrics:
            return "done", "has results (no run.json: made outside the grid runner)"
        return "new", ""
    status = manifest.get("status")
    if status == "done":
        if metrics:
            return "done", ""
        return "failed", "run.json says done but there are no results"
    if status in ("running", "submitted"):
        host, pid = manifest.get("host"), manifest.get("pid")
        if status == "running" and host == socket.gethostname() and pid and not _pid_alive(pid):
            return "failed", f"stale: its process {pid} is gone"
        return "in_progress", (f"{status} on {host or 'SLURM'} (job {manifest.get('job_id') or pid}); "
                               f"--force reruns it")
    return "failed", f"status {status!r}, log {manifest.get('log')}"


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
    manifest = {**old, "task": run.task, "init": run.init, "trial": run.trial, "config": run.config,
                "weights": run.weights, "seed": run.seed, "opts": list(run.opts), **fields}
    if run.paper_label:
        manifest["paper_label"] = run.paper_label
    atomic_write_bytes(os.path.join(run.folder, MANIFEST), (json.dumps(manifest, indent=1) + "\n").encode())
    return manifest


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
    _write_manifest(run, status="running", attempt=attempt, log=log, command=cmd, host=socket.gethostname(),
                    pid=os.getpid(), started=_now(), job_id=os.environ.get("SLURM_JOB_ID"),
                    error=None, returncode=None, seconds=None, finished=None)  # not the last attempt's
    t0 = time.time()
    try:
        with open(log, "w") as f:
            f.write("$ " + shlex.join(cmd) + "\n")
            f.flush()
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    env=dict(os.environ, PYTHONUNBUFFERED="1"))
            for line in proc.stdout:
                f.write(line)
                if echo:
                    sys.stdout.write(line)
            rc = proc.wait()
    except BaseException as e:  # Ctrl-C or a crash of ours: record it, then let it propagate
        _write_manifest(run, status="failed", error=f"interrupted: {type(e).__name__}",
                        seconds=round(time.time() - t0, 1), finished=_now())
        raise
    seconds = round(time.time() - t0, 1)
    if rc != 0:
        return _write_manifest(run, status="failed", returncode=rc, error=f"exit code {rc}",
                               seconds=seconds, finished=_now())
    # Mark done only when the numbers are really there.
    metrics, source, _ = read_run_metrics(run.folder, {"status": "done"})
    # Numbers older than this attempt (an earlier attempt's file) do not count.
    if not metrics or os.path.getmtime(source) < t0 - 1:
        return _write_manifest(run, status="failed", returncode=rc, seconds=seconds, finished=_now(),
                               error="exited 0 but wrote no results (eval_results.json / metrics.json)")
    return _write_manifest(run, status="done", returncode=0, error=None, seconds=seconds, finished=_now())


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
        runs[folder] = {"task": r.task, "init": r.init, "trial": r.trial, "folder": folder,
                        "config": r.config, "weights": r.weights, "seed": r.seed}
    atomic_write_bytes(path, (json.dumps({"runs": sorted(runs.values(), key=lambda r: r["folder"])},
                                         indent=1) + "\n").encode())


def set_aside(run, root):
    """``--force``: move an existing run folder to ``ROOT/_replaced/`` instead of deleting it."""
    if not os.path.exists(run.folder):
        return None
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    dest = os.path.join(root, "_replaced", run.task, run.init, f"trial{run.trial}-{stamp}")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    shutil.move(run.folder, dest)
    return dest


def to_do(plan, force=False):
    """``[(run, state, note)]`` for every planned run; ``force`` turns done runs into reruns."""
    out = []
    for run in plan:
        state, note = run_state(run)
        if force and state != "new":
            state, note = "rerun", "forced (old folder kept under _replaced/)"
        out.append((run, state, note))
    return out


def describe_plan(plan, train_cmd=DEFAULT_TRAIN_CMD, num_gpus=None, resume=False, force=False):
    lines, states = [], to_do(plan, force)
    for i, (run, state, note) in enumerate(states, 1):
        action = {"done": "skip (done)", "in_progress": "skip (in progress)"}.get(state, "run")
        lines.append(f"run {i}/{len(plan)}: {run.name} seed {run.seed}: {action}"
                     + (f" [{state}: {note}]" if note else ""))
        if action == "run":
            lines.append("    $ " + shlex.join(train_command(run, train_cmd, num_gpus, resume)))
    n_run = sum(1 for _, s, _ in states if s not in ("done", "in_progress"))
    lines.append(f"{len(plan)} runs planned, {n_run} to run, {len(plan) - n_run} skipped")
    return "\n".join(lines)


def _fmt_duration(seconds):
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def run_local(plan, root, train_cmd=DEFAULT_TRAIN_CMD, num_gpus=None, resume=False, force=False,
              echo=True, print_fn=print):
    """Run the grid here, one run after another. Returns ``{"done": [...], "skipped": [...],
    "failed": [(run, manifest)]}``; a failure never stops the grid."""
    write_plan(root, plan)
    states = to_do(plan, force)
    pending = sum(1 for _, s, _ in states if s not in ("done", "in_progress"))
    summary = {"done": [], "skipped": [], "failed": []}
    durations = []
    for i, (run, state, note) in enumerate(states, 1):
        if state in ("done", "in_progress"):
            print_fn(f"run {i}/{len(plan)}: {run.name}: skip ({state}{': ' + note if note else ''})")
            summary["skipped"].append(run)
            continue
        if state == "rerun":
            moved = set_aside(run, root)
            if moved:
                print_fn(f"  kept the old {run.name} as {moved}")
        left = pending - len(durations)
        eta = f", ETA {_fmt_duration(sum(durations) / len(durations) * left)}" if durations else ""
        print_fn(f"run {i}/{len(plan)}: {run.name} (seed {run.seed}; {left} left{eta})"
                 + (f" [{note}]" if note else ""))
        manifest = run_one(run, train_cmd, num_gpus, resume, echo=echo)
        durations.append(manifest.get("seconds", 0.0))
        if manifest["status"] == "done":
            print_fn(f"run {i}/{len(plan)}: {run.name} done in {_fmt_duration(manifest['seconds'])}")
            summary["done"].append(run)
        else:
            print_fn(f"run {i}/{len(plan)}: {run.name} FAILED ({manifest.get('error')}); log: {manifest['log']}")
            summary["failed"].append((run, manifest))
    return summary


def format_summary(summary):
    lines = [f"grid finished: {len(summary['done'])} ran, {len(summary['skipped'])} skipped, "
             f"{len(summary['failed'])} failed"]
    for run, manifest in summary["failed"]:
        lines.append(f"  FAILED {run.name}: {manifest.get('error')}; log: {manifest.get('log')}")
    if summary["failed"]:
        lines.append("  rerun the same command to retry the failed runs (finished runs are skipped)")
    return "\n".join(lines)


# ---- SLURM through submitit ----------------------------------------------------------------

def slurm_parameters(partition, gpus_per_node=8, cpus_per_task=10, timeout_min=72 * 60, mem_gb=None,
                     constraint=None, name="transfer"):
    """submitit ``AutoExecutor.update_parameters`` keywords for one single-node run per job."""
    params = dict(slurm_partition=partition, nodes=1, tasks_per_node=1, gpus_per_node=gpus_per_node,
                  cpus_per_task=cpus_per_task, timeout_min=timeout_min, name=name)
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


def slurm_jobs(plan, train_cmd=DEFAULT_TRAIN_CMD, gpus_per_node=8, resume=False, force=False):
    """``[(run, kwargs for run_one)]``: one job per run still to do; each job trains on all GPUs of
    its node (``--num-gpus gpus_per_node``)."""
    jobs = []
    for run, state, _ in to_do(plan, force):
        if state in ("done", "in_progress"):
            continue
        jobs.append((run, dict(train_cmd=list(train_cmd), num_gpus=gpus_per_node, resume=resume, echo=True)))
    return jobs


def submit_slurm(executor, jobs, root, force=False, print_fn=print):
    """Submit ``slurm_jobs(...)`` as one job array; mark each run ``submitted`` with its job id."""
    for run, _ in jobs:
        if force:
            set_aside(run, root)
        # Marked before submitting: a job may start (and write "running") before submit() returns.
        os.makedirs(run.folder, exist_ok=True)
        _write_manifest(run, status="submitted", submitted=_now(), host=None, pid=None)
    with executor.batch():
        handles = [executor.submit(run_one, run, **kwargs) for run, kwargs in jobs]
    for (run, _), job in zip(jobs, handles):
        if (read_manifest(run.folder) or {}).get("status") == "submitted":
            _write_manifest(run, job_id=str(job.job_id))
        print_fn(f"submitted {run.name} as SLURM job {job.job_id}")
    return handles


def run_grid(plan, root, train_cmd=DEFAULT_TRAIN_CMD, num_gpus=None, resume=False, force=False, dry_run=False,
             echo=True, slurm=None, print_fn=print):
    """The whole ``tools/run_transfer.py``: print the plan (``dry_run``), run it locally, or submit
    it to SLURM (``slurm``: ``slurm_parameters(...)`` plus ``"folder"``). Returns the exit code:
    1 if any run failed, else 0."""
    missing = [part for part in train_cmd if part.endswith(".py") and not os.path.isfile(part)]
    if missing and not dry_run:
        raise FileNotFoundError(f"training script not found: {missing[0]}. Fix: run from a full checkout, "
                                f"or point --train-cmd at the training command")
    if dry_run:
        print_fn(describe_plan(plan, train_cmd, slurm["gpus_per_node"] if slurm else num_gpus, resume, force))
        if slurm:
            params = {k: v for k, v in slurm.items() if k != "folder"}
            make_slurm_executor(slurm["folder"], params, cluster="debug")  # validates the parameters
            print_fn(f"SLURM: one job per run with {params}; logs in {slurm['folder']}")
        return 0
    if slurm:
        params = {k: v for k, v in slurm.items() if k != "folder"}
        executor = make_slurm_executor(slurm["folder"], params)
        jobs = slurm_jobs(plan, train_cmd, slurm["gpus_per_node"], resume, force)
        write_plan(root, plan)
        submit_slurm(executor, jobs, root, force, print_fn)
        print_fn(f"{len(jobs)} job(s) submitted, {len(plan) - len(jobs)} run(s) skipped; "
                 f"check progress with tools/transfer_table.py {root}")
        return 0
    summary = run_local(plan, root, train_cmd, num_gpus, resume, force, echo, print_fn)
    print_fn(format_summary(summary))
    return 1 if summary["failed"] else 0
