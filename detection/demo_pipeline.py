"""`make demo`: the whole idea on the embedded digit data, stage by stage, resumable.

1. generate the digit data (unlabeled images, labeled split, digit-scene VOC/COCO sets);
2. pretrain MoCo v2 on the unlabeled images (``configs/pretrain/demo.yaml``);
3. pretrain a supervised baseline: same network, same images with labels, same epochs;
4. convert both checkpoints to Detectron2 FPN weights (verified);
5. fine-tune Faster R-CNN R18-FPN on the digit scenes from MoCo, supervised and random init;
6. the transfer table (Markdown, CSV, PNG) and the pretraining curves.

Every stage runs our own command-line tools in a subprocess, so the demo exercises exactly what a
user runs, and each tool's own resume logic continues an interrupted stage. A finished stage
leaves ``stages/<name>.done``; rerunning skips it.
"""
import dataclasses
import json
import os
import subprocess
import sys
import time

from pretrain.io import atomic_write_bytes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INITS = ("moco", "supervised", "random")


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much work each stage does. ``full`` fits ~15 min on 2 CPU cores; ``quick`` is for CI."""

    digits_limit: int = None  # None: all 1,797 digits
    det_trainval: int = 300
    det_test: int = 100
    pretrain_epochs: int = 12
    det_iters: int = 500
    det_trials: int = 1


BUDGETS = {
    "full": Budget(),
    "quick": Budget(digits_limit=160, det_trainval=16, det_test=8, pretrain_epochs=1, det_iters=4),
}


def _run(cmd, log_path, env=None):
    """Run one tool, streaming its output to the console and to a log file."""
    print("  $ " + " ".join(cmd), flush=True)
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    with open(log_path, "a") as log:
        proc = subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            sys.stdout.write("    " + line)
            log.write(line)
        if proc.wait() != 0:
            raise RuntimeError(f"stage command failed (exit {proc.returncode}); full log: {log_path}\n"
                               f"  rerun `make demo` to continue from where it stopped.")


class Demo:
    def __init__(self, out_dir, data_dir, budget="full", seed=0):
        self.out = os.path.abspath(out_dir)
        self.data = os.path.abspath(data_dir)
        self.budget_name = budget
        self.budget = BUDGETS[budget]
        self.seed = seed
        self.python = sys.executable
        self.stages = [
            ("data", self.make_data),
            ("pretrain_moco", self.pretrain_moco),
            ("pretrain_supervised", self.pretrain_supervised),
            ("convert", self.convert),
            *[(f"detect_{init}", (lambda i=init: self.detect(i))) for init in INITS],
            ("table", self.table),
        ]

    # ---- bookkeeping -------------------------------------------------------------------------
    def _marker(self, name):
        return os.path.join(self.out, "stages", f"{name}.done")

    def run(self):
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
            info = {"stage": name, "seconds": round(time.time() - s0, 1), "budget": self.budget_name}
            atomic_write_bytes(self._marker(name), json.dumps(info).encode())
            print(f"[demo {i}/{n}] {name} finished in {info['seconds']:.0f} s", flush=True)
        print(f"[demo] all stages done in {time.time() - t0:.0f} s; results in {self.out}/table", flush=True)

    def _log(self, name):
        return os.path.join(self.out, "logs", f"{name}.log")

    # ---- stages ------------------------------------------------------------------------------
    def make_data(self):
        from detection.demo_data import make_demo_data

        b = self.budget
        make_demo_data(self.data, seed=self.seed, limit=b.digits_limit,
                       n_det_trainval=b.det_trainval, n_det_test=b.det_test)

    def pretrain_moco(self):
        raise NotImplementedError

    def pretrain_supervised(self):
        raise NotImplementedError

    def convert(self):
        raise NotImplementedError

    def detect(self, init):
        raise NotImplementedError

    def table(self):
        raise NotImplementedError
