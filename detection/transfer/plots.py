"""Bar chart per transfer task: metric groups × inits, error bars = std, paper numbers as ticks.

Uses matplotlib's object API with the Agg canvas (no global backend switch, no display needed).
"""

import io
import math


def task_bar_chart_png(table):
    """PNG bytes for one ``detection.transfer.tables.TaskTable``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    inits = [i for i in table.inits if table.stats.get(i)]
    n_groups, n_bars = len(table.metrics), max(len(inits), 1)
    fig = Figure(figsize=(max(4.0, 1.2 + 0.5 * n_groups * n_bars) + 2.2, 3.6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / n_bars
    paper_labelled = False
    for b, init in enumerate(inits):
        xs, means, stds, paper_x, paper_y = [], [], [], [], []
        for g, key in enumerate(table.metrics):
            s = table.stats[init].get(key)
            if s is None:
                continue
            x = g - 0.4 + width * (b + 0.5)
            xs.append(x)
            means.append(s.mean)
            stds.append(s.std or 0.0)
            if s.paper is not None:
                paper_x.append(x)
                paper_y.append(s.paper)
        n = table.n_runs.get(init, 0)
        ax.bar(xs, means, width * 0.9, yerr=stds, capsize=3, label=f"{init} (n={n})")
        if paper_x:
            ax.scatter(
                paper_x,
                paper_y,
                marker="x",
                s=40,
                color="black",
                zorder=3,
                label=None if paper_labelled else "paper",
            )
            paper_labelled = True
    values = [s.mean - (s.std or 0) for i in inits for s in table.stats[i].values()]
    values += [s.paper for i in inits for s in table.stats[i].values() if s.paper is not None]
    if values and min(values) > 20:
        # AP differences of ~1 point would vanish on a 0-based axis; start near the lowest bar.
        ax.set_ylim(bottom=5 * math.floor((min(values) - 5) / 5))
    ax.set_xticks(range(n_groups))
    ax.set_xticklabels([table.column_title(k) for k in table.metrics])
    ax.set_ylabel("AP (%)")
    title = table.task + (f" (baseline: {table.baseline})" if table.baseline else "")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    if inits:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
