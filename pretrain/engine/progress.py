"""Training progress: console lines, ``metrics.jsonl``, TensorBoard events, curve plots.

Only rank 0 logs. Values arrive as Python floats: the loop syncs with the device
only at log intervals.
"""

import io
import json
import os
import time

from pretrain.io import atomic_write_bytes, read_json_lines
from pretrain.meters import format_duration


class ProgressLogger:
    def __init__(
        self,
        out_dir,
        total_iters: int,
        enabled: bool = True,
        tensorboard: bool = True,
        printer=print,
    ):
        self.out_dir, self.total_iters, self.enabled, self.printer = (
            out_dir,
            total_iters,
            enabled,
            printer,
        )
        self._tb = None
        self._t_last = time.perf_counter()
        self._step_last = None
        if enabled:
            os.makedirs(out_dir, exist_ok=True)
            self._jsonl = open(os.path.join(out_dir, "metrics.jsonl"), "a")
            if tensorboard:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(os.path.join(out_dir, "tb"))

    def start(self, step: int) -> None:
        """Reset the speed clock (at the start and after pauses such as kNN evaluation)."""
        self._t_last, self._step_last = time.perf_counter(), step

    def log_train(
        self,
        step: int,
        epoch: int,
        iter_in_epoch: int,
        iters_per_epoch: int,
        images_per_step: int,
        **metrics,
    ):
        """One line per log interval: speed and ETA over the steps since the previous call."""
        now = time.perf_counter()
        steps = step - (self._step_last if self._step_last is not None else step)
        dt = now - self._t_last
        rate = steps / dt if dt > 0 and steps > 0 else float("nan")
        self._t_last, self._step_last = now, step
        record = {
            "step": step,
            "epoch": epoch,
            "iter": iter_in_epoch,
            **metrics,
            "images_per_s": rate * images_per_step,
            "eta_s": (self.total_iters - step) / rate if rate == rate else None,
        }
        if not self.enabled:
            return record
        parts = [
            f"step {step}/{self.total_iters}",
            f"epoch {epoch} [{iter_in_epoch}/{iters_per_epoch}]",
        ]
        parts += [f"{k} {v:.4g}" for k, v in metrics.items()]
        parts += [
            f"{record['images_per_s']:.1f} img/s",
            f"ETA {format_duration(record['eta_s']) if record['eta_s'] is not None else '?'}",
        ]
        self.printer("  ".join(parts), flush=True)
        self._write(record, "train")
        return record

    def log_eval(self, step: int, epoch: int, **metrics):
        record = {"step": step, "epoch": epoch, **metrics}
        if self.enabled:
            self.printer(
                "  ".join([f"eval @ epoch {epoch}"] + [f"{k} {v:.4g}" for k, v in metrics.items()]),
                flush=True,
            )
            self._write(record, "eval")
        return record

    def _write(self, record, group):
        self._jsonl.write(json.dumps(dict(record, kind=group)) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in record.items():
                if (
                    k not in ("step", "epoch", "iter")
                    and isinstance(v, (int, float))
                    and v is not None
                ):
                    self._tb.add_scalar(f"{group}/{k}", v, record["step"])
            self._tb.flush()

    def close(self):
        if self.enabled:
            self._jsonl.close()
            if self._tb is not None:
                self._tb.close()


def read_metrics(path):
    """Records of metrics.jsonl; after a resume, repeated steps keep their latest value."""
    by_key = {}
    for rec in read_json_lines(path):
        by_key[(rec.get("kind"), rec["step"])] = rec
    return [by_key[k] for k in sorted(by_key, key=lambda k: (k[0] or "", k[1]))]


def plot_curves(out_dir) -> list:
    """loss_curve.png (loss and lr vs step), similarity_curve.png (mean q.k+ and q.k- vs step) and,
    if evaluated, knn_curve.png. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = os.path.join(out_dir, "metrics.jsonl")
    if not os.path.isfile(metrics):
        return []
    records = read_metrics(metrics)
    train = [r for r in records if r.get("kind") == "train"]
    evals = [r for r in records if r.get("kind") == "eval" and "knn_top1" in r]
    written = []
    if train:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="InfoNCE loss")
        ax.set_xlabel("iteration"), ax.set_ylabel("loss"), ax.set_title("MoCo pretraining loss")
        ax2 = ax.twinx()
        ax2.plot(
            [r["step"] for r in train],
            [r["lr"] for r in train],
            color="tab:orange",
            alpha=0.5,
            label="lr",
        )
        ax2.set_ylabel("learning rate")
        fig.legend(loc="upper right")
        written.append(_save(fig, os.path.join(out_dir, "loss_curve.png")))
        plt.close(fig)
    sims = [r for r in train if "sim_pos" in r]
    if sims:  # collapse shows as both curves near 1; learning as a gap between them
        fig, ax = plt.subplots(figsize=(6, 4))
        steps = [r["step"] for r in sims]
        ax.plot(steps, [r["sim_pos"] for r in sims], label="positive pair  q.k+")
        ax.plot(steps, [r["sim_neg"] for r in sims], label="negatives  q.k- (queue mean)")
        if "sim_qq" in sims[0]:  # near 1: the query encoder maps every image to one vector
            ax.plot(steps, [r["sim_qq"] for r in sims], label="queries of different images  q.q'")
        ax.set_xlabel("iteration"), ax.set_ylabel("cosine similarity"), ax.set_ylim(-1.05, 1.05)
        ax.set_title("MoCo similarities (q.q' near 1 = collapse)")
        ax.legend(loc="lower left")
        written.append(_save(fig, os.path.join(out_dir, "similarity_curve.png")))
        plt.close(fig)
    if evals:
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(
            [r["epoch"] for r in evals], [r["knn_top1"] for r in evals], marker="o", label="MoCo"
        )
        if evals[0]["epoch"] == 0:  # the bar to clear: the same network before any training
            ax.axhline(evals[0]["knn_top1"], color="grey", linestyle="--", label="random init")
            if "knn_top1_precise_bn" in evals[0]:
                ax.axhline(
                    evals[0]["knn_top1_precise_bn"],
                    color="grey",
                    linestyle=":",
                    label="random init, BN statistics from data",
                )
            ax.legend()
        ax.set_xlabel("epoch (0 = random init)"), ax.set_ylabel("kNN top-1 (%)")
        ax.set_title("kNN accuracy during pretraining")
        written.append(_save(fig, os.path.join(out_dir, "knn_curve.png")))
        plt.close(fig)
    return written


def _save(fig, path):
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())
    return path
