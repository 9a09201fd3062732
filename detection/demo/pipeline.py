"""`make demo`: the whole idea on the embedded digit data, stage by stage, resumable.

1. generate the digit data (unlabeled images, labeled split, digit-scene VOC/COCO sets);
2. pretrain MoCo v2 on the unlabeled images (``configs/pretrain/demo.yaml``);
3. train a supervised baseline: the same network on the labeled digits with the supervised recipe
   (:data:`SUPERVISED`: light crops, warm-up, cosine), not MoCo's augmentation, under which it
   stays at chance. It is trained on the downstream task's own classes: an upper bound here, not
   the paper's ImageNet-supervised comparison;
4. convert both checkpoints to Detectron2 FPN weights (verified);
5. fine-tune Faster R-CNN R18-FPN on the digit scenes from MoCo, supervised and random init
   (``tools/run_transfer.py``, into ``transfer/<task>/<init>/trial<N>/``);
6. the transfer table (Markdown, CSV, PNG) and the pretraining curves.

Every stage runs our own command-line tools in a subprocess, so the demo exercises exactly what a
user runs, and each tool's own resume logic continues an interrupted stage. A finished stage
leaves ``stages/<name>.done`` with the settings it ran with (budget, seed); a rerun with the same
settings skips it, one with other settings stops (``force`` deletes the stage outputs and redoes
them).
"""

import dataclasses
import json
import os
import re
import shutil
import sys
import time

from detection.demo.summary import pretraining_summary
from pretrain.io import atomic_write_bytes
from pretrain.subprocesses import REPO_ROOT, run_logged, tool_command

DEMO_RECIPE = os.path.join(REPO_ROOT, "configs", "pretrain", "demo.yaml")

TASK = "digits_R18_FPN"  # the task's name in the transfer grid and table
# The folders under the demo's --out that its stages write: what --force deletes (nothing else).
STAGE_OUTPUTS = ("stages", "logs", "moco", "supervised", "weights", "transfer", "table")


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much work each stage does. ``full`` fits ~16 min on 2 CPU cores with one fine-tuning
    trial per initialisation; ``long`` (~35 min) pretrains MoCo 3x longer (36 epochs: kNN 82 vs
    69 at 12, README, Status) and runs the 3 trials whose spread the transfer verdict needs;
    ``quick`` is for CI."""

    digits_limit: int = None  # None: all 1,797 digits
    det_trainval: int = 300
    det_test: int = 100
    pretrain_epochs: int = 12  # MoCo epochs over the unlabeled views (4 per train scan)
    knn_every: int = 3
    supervised_epochs: int = 50  # 98.3 % val top-1 on the palette renders (README)
    det_iters: int = 300
    det_trials: int = 1


BUDGETS = {
    "full": Budget(),
    "long": Budget(pretrain_epochs=36, knn_every=6, det_trials=3),
    "quick": Budget(
        digits_limit=160,
        det_trainval=16,
        det_test=8,
        pretrain_epochs=1,
        knn_every=1,
        supervised_epochs=1,
        det_iters=4,
        det_trials=1,
    ),
}

# The supervised baseline's own recipe (tools/train_supervised.py): light augmentation (crops of
# 50-100 % of the image, no mirror: a mirrored digit is no digit), lr 0.2 per 256 (0.05 at 64) with
# a 2-epoch warm-up, cosine, wd 5e-4; 48 px (at 32 px it learned more slowly, search log in README).
SUPERVISED = {
    "image_size": 48,
    "crop_scale": (0.5, 1.0),
    "lr": 0.2,
    "warmup_epochs": 2,
    "wd": 5e-4,
    "batch_size": 64,
    "hflip": False,
}


def default_data_dir(budget="full", seed=0):
    """Where the demo keeps its data unless told: ``data`` for the full budget and seed 0 (what
    `make demo` uses), ``data/demo_<budget>_s<seed>`` otherwise.

    The data generator refuses a folder holding data of other parameters, so each (budget, seed)
    gets its own: a quick demo next to a full one must not need --force and regenerate the other's.
    """
    if (budget, seed) == ("full", 0):
        return "data"
    return os.path.join("data", f"demo_{budget}_s{seed}")


def _lr_steps(max_iter):
    """The config's lr drops (at 75% and 92.5% of training), as a Detectron2 tuple literal.

    Milestones must be distinct and inside the schedule; tiny CI budgets keep a constant lr.
    """
    steps = sorted({s for s in (int(max_iter * 0.75), int(max_iter * 0.925)) if 0 < s < max_iter})
    return "(" + "".join(f"{s}," for s in steps) + ")"


# Detectron2 prints its whole config and environment per run: on the console the fine-tuning
# stage keeps the lines that show progress and results (the log file has everything).
DETECTRON2_PROGRESS = re.compile(
    r"run \d+/\d+|iter: \d+|copypaste|grid finished|FAILED|Error|error:|Traceback"
)


def _run(cmd, log_path, env=None, show=None):
    """Run one tool, streaming its output to a log file and (lines matching ``show``)
    the console.
    """
    print("  $ " + " ".join(cmd), flush=True)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a") as log:
        rc = run_logged(
            cmd, log, echo=lambda line: show is None or bool(show.search(line)), env=env
        )
        if rc != 0:
            raise StageFailed(
                f"stage command failed (exit {rc}); full log: {log_path}\n"
                f"  rerun `make demo` to continue from where it stopped."
            )


class StageFailed(RuntimeError):
    pass


class SettingsMismatch(RuntimeError):
    """``--out`` holds finished stages of a demo with other settings; the message says
    what to do.
    """


class Demo:
    def __init__(self, out_dir, data_dir=None, budget="full", seed=0, force=False):
        self.out = os.path.abspath(out_dir)
        self.data = os.path.abspath(
            data_dir if data_dir is not None else default_data_dir(budget, seed)
        )
        self.budget_name = budget
        self.budget = BUDGETS[budget]
        self.seed = seed
        self.force = force
        self.python = sys.executable
        self.stages = [
            ("data", self.make_data),
            ("pretrain_moco", self.pretrain_moco),
            ("pretrain_supervised", self.pretrain_supervised),
            ("convert", self.convert),
            ("finetune", self.finetune),
            ("table", self.table),
        ]

    # ---- bookkeeping -------------------------------------------------------------------------
    def _marker(self, name):
        return os.path.join(self.out, "stages", f"{name}.done")

    def settings(self):
        """What a stage's output depends on (besides the code): a marker with other
        values is stale.
        """
        return {
            "budget": self.budget_name,
            "seed": self.seed,
            "budget_params": dataclasses.asdict(self.budget),
        }

    def _check_markers(self):
        """Stop before any stage if ``out`` holds stages finished with other settings.

        Skipping them would reprint the old run's table as this run's; rerunning them in place
        would mix both runs' checkpoints. Markers from before the seed was recorded (they hold only
        the budget's name) are read as that budget with the default seed 0, what ``make demo`` ran.
        """
        mine = self.settings()
        for name, _ in self.stages:
            try:
                with open(self._marker(name)) as f:
                    marker = json.load(f)
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                marker = {"unreadable": str(e)}
            if "seed" not in marker and marker.get("budget") in BUDGETS:
                marker = dict(
                    marker, seed=0, budget_params=dataclasses.asdict(BUDGETS[marker["budget"]])
                )
            theirs = {k: marker.get(k) for k in mine}
            if theirs != mine:
                raise SettingsMismatch(
                    f"{self.out} holds demo stages done with {_describe(theirs, mine)} "
                    f"(stage {name!r}), "
                    f"but this run asks for {_describe(mine, theirs)}. Rerun with "
                    "those settings to reuse "
                    "them, pass another --out (e.g. "
                    f"output/demo_{self.budget_name}_s{self.seed}), or pass "
                    f"--force to delete the stage outputs in {self.out} and redo every stage."
                )

    def _clear_stage_outputs(self):
        """``force``: delete what the stages wrote under ``out`` (only those folders), so none
        resumes.
        """
        for name in STAGE_OUTPUTS:
            shutil.rmtree(self.dir(name), ignore_errors=True)

    def run(self):
        if self.force:
            self._clear_stage_outputs()
        self._check_markers()
        os.makedirs(self.out, exist_ok=True)
        t0 = time.time()
        n = len(self.stages)
        for i, (name, fn) in enumerate(self.stages, 1):
            if os.path.exists(self._marker(name)):
                print(f"[demo {i}/{n}] {name}: already done, skipping", flush=True)
                continue
            print(f"[demo {i}/{n}] {name} (elapsed {time.time() - t0:.0f} s)", flush=True)
            s0 = time.time()
            fn()
            info = {"stage": name, "seconds": round(time.time() - s0, 1), **self.settings()}
            atomic_write_bytes(self._marker(name), json.dumps(info).encode())
            print(f"[demo {i}/{n}] {name} finished in {info['seconds']:.0f} s", flush=True)
        print(
            f"[demo] all stages done in {time.time() - t0:.0f} s; results in {self.out}/table",
            flush=True,
        )

    def _log(self, name):
        return os.path.join(self.out, "logs", f"{name}.log")

    # ---- stages ------------------------------------------------------------------------------
    def make_data(self):
        from detection.demo.data import make_demo_data

        b = self.budget
        make_demo_data(
            self.data,
            seed=self.seed,
            limit=b.digits_limit,
            n_det_trainval=b.det_trainval,
            n_det_test=b.det_test,
            force=self.force,
        )

    def pretrain_moco(self):
        b = self.budget
        _run(
            [
                *tool_command("pretrain.cli.pretrain", self.python),
                "--config",
                DEMO_RECIPE,
                "--data",
                os.path.join(self.data, "digits_unlabeled", "train"),
                "--out",
                self.dir("moco"),
                "--resume",
                "auto",
                f"optim.epochs={b.pretrain_epochs}",
                f"seed={self.seed}",
                f"knn.path={os.path.join(self.data, 'digits_cls')}",
                f"knn.every_epochs={b.knn_every}",
            ],
            self._log("pretrain_moco"),
        )

    def pretrain_supervised(self):
        """The same network on the labeled digits, with the supervised recipe
        (:data:`SUPERVISED`).
        """
        recipe, sup = self._demo_recipe(), SUPERVISED
        _run(
            [
                *tool_command("pretrain.cli.train_supervised", self.python),
                "--data",
                os.path.join(self.data, "digits_cls"),
                "--out",
                self.dir("supervised"),
                "--arch",
                recipe["model"]["arch"],
                "--epochs",
                str(self.budget.supervised_epochs),
                "--image-size",
                str(sup["image_size"]),
                "--crop-scale",
                *(str(x) for x in sup["crop_scale"]),
                "--lr",
                str(sup["lr"]),
                "--warmup-epochs",
                str(sup["warmup_epochs"]),
                "--wd",
                str(sup["wd"]),
                "--batch-size",
                str(sup["batch_size"]),
                "--workers",
                "0",  # small PIL crops: a small part of a step
                *([] if sup["hflip"] else ["--no-hflip"]),
                "--seed",
                str(self.seed),
            ],
            self._log("pretrain_supervised"),
        )

    def convert(self):
        sources = {
            "moco": self._last_moco_checkpoint(),
            "supervised": os.path.join(self.dir("supervised"), "model_final.pth"),
        }
        for init, src in sources.items():
            _run(
                [
                    *tool_command("detection.cli.convert", self.python),
                    src,
                    self.weights(init),
                    "--target",
                    "fpn",
                    "--verify",
                    f"demo_digits_R18_FPN_{init}",
                    "--force",
                ],
                self._log("convert"),
            )

    def finetune(self):
        b = self.budget
        _run(
            [
                *tool_command("detection.cli.run_transfer", self.python),
                "--configs",
                f"{TASK}=demo_digits_R18_FPN_{{variant}}",
                "--weights",
                f"moco={self.weights('moco')}",
                f"supervised={self.weights('supervised')}",
                "random=",
                "--trials",
                str(b.det_trials),
                "--seed-base",
                str(self.seed),
                "--out",
                self.dir("transfer"),
                "--num-gpus",
                "auto",
                "--resume",
                "--opts",
                "SOLVER.MAX_ITER",
                str(b.det_iters),
                "SOLVER.STEPS",
                _lr_steps(b.det_iters),
                "SOLVER.WARMUP_ITERS",
                str(min(20, b.det_iters // 4)),
            ],
            self._log("finetune"),
            env={"DEMO_DATA": self.data},
            show=DETECTRON2_PROGRESS,
        )

    def table(self):
        table_dir = self.dir("table")
        _run(
            [
                *tool_command("detection.cli.transfer_table", self.python),
                self.dir("transfer"),
                "--baseline",
                "supervised",
                "--metrics",
                "AP50,AP,AP75",
                "--out",
                table_dir,
                "--force",
            ],
            self._log("table"),
        )
        # The pretraining curves next to the table: what a reader compares first.
        for name in ("loss_curve.png", "similarity_curve.png", "knn_curve.png"):
            src = os.path.join(self.dir("moco"), name)
            if os.path.exists(src):
                shutil.copyfile(src, os.path.join(table_dir, f"moco_{name}"))
        # What each initialisation learned, under the rows: an AP row of an initialisation that
        # learned nothing must not read as a result about it.
        md = os.path.join(table_dir, "transfer_table.md")
        with open(md) as f:
            text = f.read() + pretraining_summary(self.out, self.budget_name)
        atomic_write_bytes(md, text.encode())
        print(text, flush=True)

    # ---- helpers -----------------------------------------------------------------------------
    def dir(self, name):
        return os.path.join(self.out, name)

    def weights(self, init):
        return os.path.join(self.dir("weights"), f"{init}_r18_fpn.pkl")

    def _demo_recipe(self):
        from pretrain.engine.config import load_config

        return load_config(DEMO_RECIPE)

    def _last_moco_checkpoint(self):
        from pretrain.engine.checkpoint import latest_checkpoint

        path = latest_checkpoint(self.dir("moco"))
        if path is None:
            raise FileNotFoundError(f"no MoCo checkpoint in {self.dir('moco')}: rerun `make demo`")
        return path


def _describe(settings, other):
    """``budget 'quick', seed 0`` -- plus the budget's numbers where only they differ from
    ``other``.
    """
    if settings.get("budget") is None and settings.get("seed") is None:
        return "unrecorded settings (an older demo)"
    seed = settings.get("seed")
    text = f"budget {settings.get('budget')!r}, seed {'unrecorded' if seed is None else seed}"
    ours, theirs = settings.get("budget_params") or {}, other.get("budget_params") or {}
    if settings.get("budget") == other.get("budget") and ours != theirs:
        text += (
            " ("
            + ", ".join(f"{k}={v}" for k, v in sorted(ours.items()) if theirs.get(k) != v)
            + ")"
        )
    return text
