"""The transfer grid runner: plans, skip/retry logic, a real local grid, and the SLURM job list.

The local grid runs a real subprocess per run: a tiny training stand-in written here that takes
``tools/train_net.py``'s command line and writes a real ``eval_results.json`` (or fails), so the
runner (commands, seeds, manifests, logs, skipping, failures, exit code) is what is tested.
Detectron2 itself is trained end to end in the trainer's own tests.
"""

import importlib.util
import json
import os
import socket
import sys

import pytest
import yaml

from detection.transfer.grid import (
    build_plan,
    load_grid,
    make_slurm_executor,
    parse_weights,
    resolve_config,
    run_state,
    slurm_jobs,
    slurm_parameters,
    submit_slurm,
    tasks_from_configs,
    train_command,
)
from detection.transfer.results import collect
from tests.paths import CONFIGS

FAKE_TRAIN = r"""
import json, os, sys
args = sys.argv[1:]
config = args[args.index("--config") + 1]
rest = args[args.index("OUTPUT_DIR"):]
opts = dict(zip(rest[::2], rest[1::2]))
out, seed = opts["OUTPUT_DIR"], int(opts["SEED"])
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "calls.txt"), "a") as f:
    f.write(json.dumps(args) + "\n")
print(f"fake training {config} seed {seed} into {out}")
if "broken" in opts["MODEL.WEIGHTS"]:
    print("RuntimeError: cannot load weights", file=sys.stderr)
    sys.exit(3)
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "eval_results.json"), "w") as f:
    bbox = {"AP": 50.0 + seed, "AP50": 80.0 + seed, "AP75": 55.0 + seed}
    json.dump({"voc_2007_test": {"bbox": bbox},
               "__provenance__": {"seed": seed, "world_size": 1}}, f)
"""


def _load_tool(name):
    """The tool's own main, in this process: a second interpreter would re-import Detectron2."""
    return importlib.import_module(f"detection.cli.{name}")


@pytest.fixture
def files(tmp_path):
    (tmp_path / "voc.yaml").write_text("_BASE_: base.yaml\n")
    (tmp_path / "coco.yaml").write_text("_BASE_: base.yaml\n")
    (tmp_path / "voc_supervised.yaml").write_text("_BASE_: base.yaml\n")
    (tmp_path / "moco.pkl").write_bytes(b"weights")
    (tmp_path / "broken.pkl").write_bytes(b"weights")
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    return tmp_path


def test_plan_from_flags(files):
    tasks = tasks_from_configs([f"voc={files / 'voc.yaml'}", str(files / "coco.yaml")])
    inits = parse_weights(
        [
            f"moco={files / 'moco.pkl'}",
            "supervised=detectron2://ImageNetPretrained/MSRA/R-50.pkl",
            "random=",
        ]
    )
    plan = build_plan(
        tasks, inits, trials=2, out=files / "root", seed_base=10, opts=["SOLVER.MAX_ITER", "100"]
    )
    assert len(plan) == 2 * 3 * 2
    assert [r.name for r in plan[:3]] == [
        "voc/moco/trial0",
        "voc/moco/trial1",
        "voc/supervised/trial0",
    ]
    assert {r.task for r in plan} == {"voc", "coco"}
    assert [r.seed for r in plan if r.init == "random" and r.task == "coco"] == [10, 11]
    run = plan[-1]
    assert (run.task, run.init, run.trial, run.weights) == ("coco", "random", 1, "")
    assert run.folder == str(files / "root" / "coco" / "random" / "trial1")
    assert plan[0].weights == str(files / "moco.pkl") and plan[2].weights.startswith(
        "detectron2://"
    )
    assert train_command(run, ["python", "train.py"], num_gpus=8, resume=True) == [
        "python",
        "train.py",
        "--config",
        str(files / "coco.yaml"),
        "--num-gpus",
        "8",
        "--resume",
        "OUTPUT_DIR",
        run.folder,
        "MODEL.WEIGHTS",
        "",
        "SEED",
        "11",
        "SOLVER.MAX_ITER",
        "100",
    ]
    assert "--num-gpus" not in train_command(
        run, ["t"]
    )  # not given: the training command's default


def test_config_variants_and_weights_from_the_config(files):
    """Our configs come as <task>_{moco,supervised,random}.yaml; each init picks its variant."""
    for variant in ("moco", "supervised", "random"):
        (files / f"voc0712_{variant}.yaml").write_text("_BASE_: base.yaml\n")
    tasks = tasks_from_configs([str(files / "voc0712_{variant}.yaml")])
    assert list(tasks) == ["voc0712"]
    inits = parse_weights(["supervised", f"moco_v2_800ep:moco={files / 'moco.pkl'}", "random="])
    plan = build_plan(tasks, inits, trials=1, out=files / "root")
    by_init = {r.init: r for r in plan}
    assert by_init["moco_v2_800ep"].config == str(files / "voc0712_moco.yaml")
    assert by_init["supervised"].config == str(files / "voc0712_supervised.yaml")
    assert by_init["random"].config == str(files / "voc0712_random.yaml")
    # No "=": the config's own MODEL.WEIGHTS (the MSRA R-50 for the supervised configs).
    assert by_init["supervised"].weights is None
    assert "MODEL.WEIGHTS" not in train_command(by_init["supervised"], ["t"])
    assert train_command(by_init["random"], ["t"])[-4:] == ["MODEL.WEIGHTS", "", "SEED", "0"]
    with pytest.raises(FileNotFoundError, match="give the init a 'variant'"):
        build_plan(tasks, parse_weights(["moco_v1="]), trials=1, out=files / "root")
    # Bare names are looked up under configs/, as tools/train_net.py --config NAME does.
    assert resolve_config("voc0712_R50_C4_24k_moco") == os.path.join(
        CONFIGS, "PascalVOC-Detection", "voc0712_R50_C4_24k_moco.yaml"
    )
    assert resolve_config("no_such_config") is None


def test_grid_file_per_init_configs_and_clear_errors(files, monkeypatch):
    monkeypatch.chdir(files)
    grid = {
        "out": "root",
        "trials": 3,
        "seed_base": 5,
        "opts": ["TEST.EVAL_PERIOD", "0"],
        "tasks": {
            "voc": {
                "config": "voc.yaml",
                "configs": {"supervised": "voc_supervised.yaml"},
                "opts": ["SOLVER.MAX_ITER", "10"],
            },
            "coco": {"config": "coco.yaml", "inits": ["moco"]},
        },
        "inits": {
            "supervised": "detectron2://ImageNetPretrained/MSRA/R-50.pkl",
            "moco": {"weights": "moco.pkl", "paper_label": "moco_v2_200ep"},
        },
    }
    (files / "grid.yaml").write_text(yaml.safe_dump(grid))
    plan, root = load_grid("grid.yaml")
    assert root == str(files / "root") and len(plan) == 3 * 2 + 3
    sup = next(r for r in plan if r.name == "voc/supervised/trial2")
    assert sup.config == str(files / "voc_supervised.yaml") and sup.seed == 7
    assert sup.opts == ["TEST.EVAL_PERIOD", "0", "SOLVER.MAX_ITER", "10"]
    moco = next(r for r in plan if r.name == "coco/moco/trial0")
    assert moco.config == str(files / "coco.yaml") and moco.paper_label == "moco_v2_200ep"
    assert len(load_grid("grid.yaml", out="other", trials=1)[0]) == 3

    def bad(change, match):
        g = yaml.safe_load(yaml.safe_dump(grid))
        change(g)
        (files / "bad.yaml").write_text(yaml.safe_dump(g))
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            load_grid("bad.yaml")

    bad(
        lambda g: g["tasks"]["voc"].update(config="nope.yaml"),
        "config for voc/moco not found: 'nope.yaml'",
    )
    bad(
        lambda g: g["inits"]["moco"].update(weights="nope.pkl"), "weights for init 'moco' not found"
    )
    bad(
        lambda g: g["tasks"]["coco"].update(inits=["imagenet"]),
        "init 'imagenet', which is not among",
    )
    bad(lambda g: g["inits"].update({"_x": ""}), "bad init name '_x'")
    bad(lambda g: g.update(opts=["SOLVER.MAX_ITER"]), "KEY VALUE pairs")
    bad(lambda g: g.update(trails=5), "unknown key")
    bad(lambda g: g.pop("out"), "no output root")


def _manifest(folder, **fields):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "run.json"), "w") as f:
        json.dump({"task": "voc", "init": "moco", "trial": 0, **fields}, f)


def _results(folder):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "eval_results.json"), "w") as f:
        json.dump({"voc_2007_test": {"bbox": {"AP": 1.0}}}, f)


def test_skip_and_retry_logic(files):
    (run,) = build_plan(
        {"voc": str(files / "voc.yaml")}, {"moco": str(files / "moco.pkl")}, 1, files / "root"
    )
    assert run_state(run)[0] == "new"
    _results(run.folder)
    assert run_state(run) == ("done", "has results (no run.json: made outside the grid runner)")
    _manifest(run.folder, status="done")
    assert run_state(run)[0] == "done"
    os.remove(os.path.join(run.folder, "eval_results.json"))
    assert run_state(run) == ("failed", "run.json says done but there are no results")
    _manifest(run.folder, status="failed", log="x.log")
    assert run_state(run)[0] == "failed"
    # A pid no process can have: Linux pids stay below pid_max <= 2**22. (The pid of a child that
    # has exited could be handed to a new process meanwhile, and read as alive.)
    dead = 2**22 + 4242
    _manifest(run.folder, status="running", host=socket.gethostname(), pid=dead)
    assert run_state(run) == ("failed", f"stale: its process {dead} is gone")
    # A local grid inside a SLURM allocation also records the allocation's id, which SLURM still
    # reports RUNNING after the grid was killed: the dead pid on this host decides.
    _manifest(run.folder, status="running", host=socket.gethostname(), pid=dead, job_id="4242")
    assert run_state(run, job_states={"4242": "RUNNING"})[0] == "failed"
    assert run_state(run, job_states={})[0] == "failed"
    _manifest(run.folder, status="running", host=socket.gethostname(), pid=os.getpid())
    assert run_state(run)[0] == "in_progress"
    # A SLURM job with no sacct here to ask about it: cannot be confirmed alive or dead.
    _manifest(run.folder, status="submitted", job_id="123")
    assert run_state(run, job_states={})[0] == "unverified" and "job 123" in run_state(run, {})[1]
    assert "--retry-stale" in run_state(run, {})[1]


def test_local_grid_runs_skips_failures_and_reruns(files, capsys):
    tool = _load_tool("run_transfer")
    root = files / "root"
    argv = [
        "--configs",
        f"voc={files / 'voc.yaml'}",
        "--weights",
        f"moco={files / 'moco.pkl'}",
        f"bad={files / 'broken.pkl'}",
        "--trials",
        "2",
        "--out",
        str(root),
        "--train-cmd",
        f"{sys.executable} {files / 'fake_train.py'}",
        "--num-gpus",
        "0",
        "--quiet",
        "--opts",
        "SOLVER.MAX_ITER",
        "10",
    ]

    assert tool.main(argv + []) == 1  # two runs failed: non-zero exit, but the grid went on
    out = capsys.readouterr().out
    assert "run 1/4: voc/moco/trial0 (seed 0; 4 left)" in out
    assert "run 2/4: voc/moco/trial1 (seed 1; 3 left, ETA " in out
    assert "run 3/4: voc/bad/trial0" in out and "FAILED (exit code 3)" in out
    assert "grid finished: 2 ran, 0 skipped, 2 failed" in out
    calls = [json.loads(x) for x in (files / "calls.txt").read_text().splitlines()]
    assert len(calls) == 4
    assert calls[1] == [
        "--config",
        str(files / "voc.yaml"),
        "--num-gpus",
        "0",
        "OUTPUT_DIR",
        str(root / "voc" / "moco" / "trial1"),
        "MODEL.WEIGHTS",
        str(files / "moco.pkl"),
        "SEED",
        "1",
        "SOLVER.MAX_ITER",
        "10",
    ]

    done = json.loads((root / "voc" / "moco" / "trial1" / "run.json").read_text())
    assert (done["status"], done["seed"], done["trial"], done["attempt"]) == ("done", 1, 1, 1)
    assert done["provenance"] == {"seed": 1, "world_size": 1}  # copied from eval_results.json
    failed = json.loads((root / "voc" / "bad" / "trial0" / "run.json").read_text())
    assert failed["status"] == "failed" and failed["returncode"] == 3
    assert "cannot load weights" in open(failed["log"]).read()

    c = collect(root)
    assert sorted(r.metrics["bbox/AP"] for r in c.results) == [50.0, 51.0]
    assert sorted((m.init, m.trial) for m in c.missing) == [("bad", 0), ("bad", 1)]

    # Rerun: finished runs are skipped, failed ones retried with a new log (the old one is kept).
    assert tool.main(argv) == 1
    out = capsys.readouterr().out
    assert (
        "run 1/4: voc/moco/trial0: skip (done)" in out
        and "grid finished: 0 ran, 2 skipped, 2 failed" in out
    )
    assert len((files / "calls.txt").read_text().splitlines()) == 6
    assert sorted(os.listdir(root / "voc" / "bad" / "trial0")) == [
        "run.json",
        "train_attempt1.log",
        "train_attempt2.log",
    ]

    # --force reruns finished runs too, keeping the old folders aside (not counted by the table).
    assert tool.main(["--force"] + argv[:4] + argv[5:]) == 0
    assert "grid finished: 2 ran, 0 skipped, 0 failed" in capsys.readouterr().out
    assert len(os.listdir(root / "_replaced" / "voc" / "moco")) == 2
    c = collect(root)
    assert len(c.results) == 2 and [m.init for m in c.missing] == ["bad", "bad"]  # from plan.json


def test_dry_run_prints_the_plan_and_writes_nothing(files, capsys):
    tool = _load_tool("run_transfer")
    root = files / "root"
    rc = tool.main(
        [
            "--configs",
            str(files / "voc.yaml"),
            "--weights",
            "random=",
            "--trials",
            "2",
            "--out",
            str(root),
            "--dry-run",
            "--slurm",
            "--partition",
            "dev",
            "--gpus-per-node",
            "8",
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0 and not root.exists()
    assert "run 2/2: voc/random/trial1 seed 1: run" in out
    assert (
        f"--num-gpus 8 OUTPUT_DIR {root / 'voc' / 'random' / 'trial1'} MODEL.WEIGHTS '' SEED 1"
        in out
    )
    assert "2 runs planned, 2 to run, 0 skipped" in out
    assert (
        tool.main(
            ["--configs", str(files / "voc.yaml"), "--weights", "x=nope.pkl", "--out", str(root)]
        )
        == 2
    )
    assert "weights for init 'x' not found" in capsys.readouterr().err


def test_slurm_job_list_and_executor(files):
    plan = build_plan(
        {"voc": str(files / "voc.yaml")},
        {"moco": str(files / "moco.pkl"), "random": ""},
        2,
        files / "root",
    )
    _results(plan[0].folder)
    _manifest(plan[0].folder, status="done")
    jobs = slurm_jobs(plan, ["python", "train.py"], gpus_per_node=8)
    assert [run.name for run, _ in jobs] == [
        "voc/moco/trial1",
        "voc/random/trial0",
        "voc/random/trial1",
    ]
    assert all(kw["num_gpus"] == 8 and kw["train_cmd"] == ["python", "train.py"] for _, kw in jobs)
    assert len(slurm_jobs(plan, ["t"], force=True)) == 4

    params = slurm_parameters(
        "learnfair",
        gpus_per_node=8,
        cpus_per_task=10,
        timeout_min=600,
        mem_gb=256,
        constraint="volta32gb",
    )
    # submitit checks every parameter against its SLURM executor, also when building the local
    # "debug" executor ("slurm" itself needs srun, which this machine lacks).
    executor = make_slurm_executor(files / "submitit", params, cluster="debug")
    assert executor._executor.parameters["gpus_per_node"] == 8
    with pytest.raises(Exception, match="partitionz"):
        make_slurm_executor(
            files / "submitit", {**params, "slurm_partitionz": "x"}, cluster="debug"
        )

    # The same submission path, through submitit's in-process "debug" cluster: runs are marked
    # "submitted" (so a second grid call skips them: no sacct knows the debug jobs), and each job
    # is run_one on the stand-in.
    jobs = slurm_jobs(plan, [sys.executable, str(files / "fake_train.py")], gpus_per_node=2)
    handles = submit_slurm(executor, jobs, str(files / "root"), print_fn=lambda s: None)
    assert [run_state(run, {})[0] for run in plan] == [
        "done",
        "unverified",
        "unverified",
        "unverified",
    ]
    assert slurm_jobs(plan, ["t"]) == []
    assert [h.result()["status"] for h in handles] == ["done"] * 3
    calls = [json.loads(x) for x in (files / "calls.txt").read_text().splitlines()]
    assert [c[c.index("--num-gpus") + 1] for c in calls] == ["2"] * 3
    assert [r.trial for r in collect(files / "root").results] == [0, 1, 0, 1]


def test_command_line_is_what_our_train_net_parses(files):
    """The runner's command against the real parser of tools/train_net.py (detection.trainer)."""
    from detection.cli.train_net import argument_parser

    plan = build_plan(
        {"voc": str(files / "voc.yaml")},
        parse_weights(["random=", "supervised"]),
        1,
        files / "root",
    )
    for run in plan:
        cmd = train_command(run, ["python", "tools/train_net.py"], num_gpus="auto", resume=True)
        args = argument_parser().parse_args(cmd[2:])
        assert (
            args.config_file == str(files / "voc.yaml") and args.num_gpus == "auto" and args.resume
        )
        expected = (
            ["OUTPUT_DIR", run.folder]
            + (["MODEL.WEIGHTS", ""] if run.init == "random" else [])
            + ["SEED", "0"]
        )
        assert args.opts == expected


# ---- reruns: changed settings, stale jobs, refused submissions, bad input ------------------


def _fake_slurm(folder, sacct_lines=(), sbatch_error=None):
    """Stand-ins for a SLURM cluster's commands (none exists here), put first on PATH: ``srun``
    (which
    submitit looks for), ``sbatch`` (accepts as job 555, or fails like a bad partition) and
    ``sacct``
    (prints ``sacct_lines`` in --parsable2 format; its arguments go to sacct_args.txt)."""
    bin_dir = folder / "slurm_bin"
    bin_dir.mkdir()
    scripts = {
        "srun": "exit 0\n",
        "sbatch": (
            f"echo '{sbatch_error}' >&2\nexit 1\n"
            if sbatch_error
            else "echo 'Submitted batch job 555'\n"
        ),
        "sacct": (
            f'echo "$@" >> {folder / "sacct_args.txt"}\n'
            + "".join(f"echo '{line}'\n" for line in ["JobID|State|NodeList", *sacct_lines])
        ),
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body)
        (bin_dir / name).chmod(0o755)
    return str(bin_dir)


def _argv(files, *extra, weights="moco.pkl", trials=2):
    return [
        "--configs",
        f"voc={files / 'voc.yaml'}",
        "--weights",
        f"moco={files / weights}",
        "--trials",
        str(trials),
        "--out",
        str(files / "root"),
        "--train-cmd",
        f"{sys.executable} {files / 'fake_train.py'}",
        "--num-gpus",
        "0",
        "--quiet",
        *extra,
    ]


def _calls(files):
    return [json.loads(x) for x in (files / "calls.txt").read_text().splitlines()]


def test_changed_settings_are_refused_until_force(files, capsys):
    """Other weights or opts must not silently reuse the numbers made with the old ones."""
    tool = _load_tool("run_transfer")
    (files / "moco2.pkl").write_bytes(b"other weights")
    assert tool.main(_argv(files, "--opts", "SOLVER.MAX_ITER", "10")) == 0
    manifest = json.loads((files / "root" / "voc" / "moco" / "trial1" / "run.json").read_text())
    assert manifest["fingerprint"] == {
        "config": str(files / "voc.yaml"),
        "weights": str(files / "moco.pkl"),
        "seed": 1,
        "opts": ["SOLVER.MAX_ITER", "10"],
    }
    capsys.readouterr()

    changed = _argv(files, "--opts", "SOLVER.MAX_ITER", "300", weights="moco2.pkl")
    assert tool.main(changed) == 2
    err = capsys.readouterr().err
    assert "2 finished run(s) were made with other settings" in err and "--force" in err
    assert f"weights: '{files / 'moco.pkl'}' -> '{files / 'moco2.pkl'}'" in err
    assert "opts: ['SOLVER.MAX_ITER', '10'] -> ['SOLVER.MAX_ITER', '300']" in err
    assert len(_calls(files)) == 2  # nothing ran

    assert tool.main(["--dry-run"] + changed) == 0
    assert "skip (changed)" in capsys.readouterr().out
    assert tool.main(["--force"] + changed) == 0
    assert [c[c.index("SOLVER.MAX_ITER") + 1] for c in _calls(files)[2:]] == ["300", "300"]
    assert tool.main(changed) == 0 and len(_calls(files)) == 4  # now they match: skipped


def test_manifest_without_fingerprint_counts_as_matching(files):
    """run.json files of an older runner have no fingerprint: still done, but the note says so."""
    (run,) = build_plan(
        {"voc": str(files / "voc.yaml")}, {"moco": str(files / "moco.pkl")}, 1, files / "root"
    )
    _results(run.folder)
    _manifest(run.folder, status="done", weights="/elsewhere/old.pkl")
    state, note = run_state(run)
    assert state == "done" and "no fingerprint" in note


def test_stale_slurm_jobs_are_found_with_sacct(files, capsys, monkeypatch):
    """A job that died on another node leaves "running" behind: sacct says so, and the run is
    retried
    while the finished run and the job still pending are left alone."""
    tool = _load_tool("run_transfer")
    assert tool.main(_argv(files, trials=4)) == 0
    plan = build_plan(
        {"voc": str(files / "voc.yaml")}, {"moco": str(files / "moco.pkl")}, 4, files / "root"
    )
    for run, fields in [
        (plan[1], dict(status="running", host="node042", pid=1234, job_id="555_1")),
        (plan[2], dict(status="submitted", job_id="556")),
        (plan[3], dict(status="running", host="node043", pid=99, job_id="557")),
    ]:
        data = json.loads(
            (files / "root" / "voc" / "moco" / f"trial{run.trial}" / "run.json").read_text()
        )
        _manifest(run.folder, **{**data, **fields})
    monkeypatch.setenv(
        "PATH",
        _fake_slurm(
            files,
            ["555_1|FAILED|node042", "556|PENDING|None assigned", "557|CANCELLED by 1000|node043"],
        )
        + os.pathsep
        + os.environ["PATH"],
    )
    states = {run.trial: run_state(run) for run in plan}
    assert states[0] == ("done", "")
    assert states[1] == ("failed", "stale: running on node042 (job 555_1), but SLURM says FAILED")
    assert states[2][0] == "in_progress" and "SLURM says PENDING" in states[2][1]
    assert states[3][0] == "failed" and "SLURM says CANCELLED" in states[3][1]
    capsys.readouterr()
    assert tool.main(_argv(files, trials=4)) == 0
    assert "2 ran, 2 skipped, 0 failed" in capsys.readouterr().out
    assert [c[c.index("SEED") + 1] for c in _calls(files)[4:]] == ["1", "3"]
    # The grid asked sacct once for all recorded jobs (an array task by its array job).
    last_call = (files / "sacct_args.txt").read_text().splitlines()[-1].split()
    assert sorted(last_call[last_call.index("-j") :]) == ["-j", "-j", "-j", "555", "556", "557"]


def test_retry_stale_reruns_unverifiable_runs_but_never_done_ones(files, capsys, monkeypatch):
    tool = _load_tool("run_transfer")
    assert tool.main(_argv(files, trials=3)) == 0
    plan = build_plan(
        {"voc": str(files / "voc.yaml")}, {"moco": str(files / "moco.pkl")}, 3, files / "root"
    )
    _manifest(
        plan[1].folder, task="voc", init="moco", trial=1, status="running", host="node042", pid=1234
    )
    _manifest(plan[2].folder, task="voc", init="moco", trial=2, status="submitted", job_id="556")
    monkeypatch.setenv("PATH", str(files / "no_slurm_here"))  # no sacct: nothing can be checked
    capsys.readouterr()
    assert tool.main(_argv(files, trials=3)) == 0
    out = capsys.readouterr().out
    assert out.count("skip (unverified") == 2 and "0 ran, 3 skipped" in out

    assert tool.main(_argv(files, "--retry-stale", trials=3)) == 0
    assert "2 ran, 1 skipped" in capsys.readouterr().out
    assert [c[c.index("SEED") + 1] for c in _calls(files)[3:]] == ["1", "2"]
    assert not (files / "root" / "_replaced").exists()  # retried in place, like failed runs
    assert (
        json.loads((files / "root" / "voc" / "moco" / "trial0" / "run.json").read_text())["attempt"]
        == 1
    )


def test_refused_slurm_submission_marks_runs_failed(files, capsys, monkeypatch):
    """sbatch refusing the array (bad partition) must not leave runs "submitted" forever."""
    tool = _load_tool("run_transfer")
    monkeypatch.setenv(
        "PATH",
        _fake_slurm(files, sbatch_error="sbatch: error: invalid partition specified: gpu")
        + os.pathsep
        + os.environ["PATH"],
    )
    argv = [
        "--configs",
        f"voc={files / 'voc.yaml'}",
        "--weights",
        "random=",
        "--trials",
        "2",
        "--out",
        str(files / "root"),
        "--slurm",
        "--partition",
        "gpu",
    ]
    assert tool.main(argv) == 2
    err = capsys.readouterr().err  # submitit passes sbatch's own stderr through, then our one line
    assert err.splitlines()[-1].startswith(
        "error: SLURM refused the submission of 2 job(s): sbatch: error: "
        "invalid partition specified: gpu"
    )
    assert "Traceback" not in err and "--partition" in err.splitlines()[-1]
    plan = build_plan({"voc": str(files / "voc.yaml")}, {"random": ""}, 2, files / "root")
    for run in plan:
        state, note = run_state(run)
        assert (
            state == "failed"
            and "SLURM submission failed: sbatch: error: invalid partition" in note
        )

    # Once SLURM accepts, the same command submits both again and records submitit's job ids.
    (files / "accepting").mkdir()
    monkeypatch.setenv(
        "PATH",
        _fake_slurm(files / "accepting", sacct_lines=["555_0|PENDING|", "555_1|RUNNING|n1"])
        + os.pathsep
        + os.environ["PATH"],
    )
    assert tool.main(argv) == 0
    assert "submitted voc/random/trial1 as SLURM job 555_1" in capsys.readouterr().out
    assert [run_state(run)[0] for run in plan] == ["in_progress", "in_progress"]


def test_zero_trials_is_an_error_not_five(files, capsys, monkeypatch):
    tool = _load_tool("run_transfer")
    assert tool.main(_argv(files, trials=0)) == 2
    assert "trials must be >= 1, got 0" in capsys.readouterr().err
    monkeypatch.chdir(files)
    (files / "grid.yaml").write_text(
        yaml.safe_dump(
            {"out": "root", "trials": 3, "tasks": {"voc": "voc.yaml"}, "inits": {"random": ""}}
        )
    )
    with pytest.raises(ValueError, match="trials must be >= 1, got 0"):
        load_grid("grid.yaml", trials=0)
    assert len(load_grid("grid.yaml")[0]) == 3


def test_unreadable_run_json_is_reported_not_a_traceback(files, capsys):
    tool = _load_tool("run_transfer")
    broken = files / "root" / "voc" / "moco" / "trial0" / "run.json"
    broken.parent.mkdir(parents=True)
    broken.write_text('{"task": "voc", "init": ')  # hand-edited, cut off
    assert tool.main(_argv(files)) == 1
    out = capsys.readouterr().out
    assert f"UNREADABLE voc/moco/trial0: {broken}: unreadable run manifest" in out
    assert "1 ran, 0 skipped, 0 failed, 1 unreadable" in out
    assert tool.main(["--force"] + _argv(files)) == 0  # set aside under _replaced/, then rerun
    assert (files / "root" / "voc" / "moco" / "trial0" / "eval_results.json").exists()
