"""Plots of a run (matplotlib is imported lazily: it is only needed when a plot is drawn)."""

from __future__ import annotations

import os
from collections.abc import Sequence


#: The plots a run's folder may hold, in the order reports and model cards show them, with their titles.
PLOT_TITLES = {
    "weights.png": "Mixture over training",
    "eval_loss.png": "Per-domain eval loss",
    "law_fit.png": "Law fit: observed vs predicted",
    "candidates.png": "Candidate curves of each decision",
    "compute.png": "Compute by kind",
}
#: Record kinds that set the weights in force (events such as "exhausted" only annotate).
_WEIGHT_KINDS = ("initial", "decision", "kept")


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: str, dpi: int = 110) -> str:
    """Lay out, write (creating the folder) and close a matplotlib figure; returns ``path``."""
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def legend_outside(ax, below: bool = False, **kwargs) -> None:
    """A legend beside (or below) the axes, never over the data it labels."""
    if below:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=3, frameon=False, **{"fontsize": 7, **kwargs})
    else:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), **{"fontsize": 8, **kwargs})


def weights_over_steps(history: Sequence[dict]) -> tuple[list[int], list[str], list[list[float]]]:
    """``(steps, domains, weights[step][domain])`` from ``mixtures.json`` records (a step function)."""
    records = [r for r in history if r.get("kind", "decision") in _WEIGHT_KINDS]
    domains: list[str] = []
    for record in records:
        for name in record["weights"]:
            if name not in domains:
                domains.append(name)
    steps = [int(r["step"]) for r in records]
    rows = [[float(r["weights"].get(name, 0.0)) for name in domains] for r in records]
    return steps, domains, rows


def plot_weights(
    history: Sequence[dict], path: str, title: str | None = None, end_step: int | None = None
) -> str | None:
    """Stacked area of the domain weights over steps (to ``end_step``), stage boundaries marked; returns the path."""
    steps, domains, rows = weights_over_steps(history)
    if not steps:
        return None
    plt = _pyplot()
    end = (
        end_step
        if end_step is not None and end_step > max(steps)
        else max(steps) + max(1, int(0.05 * (max(steps) or 1)))
    )
    xs, ys = [], []
    for i, step in enumerate(steps):
        nxt = steps[i + 1] if i + 1 < len(steps) else end
        xs += [step, nxt]
        ys += [rows[i], rows[i]]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    columns = list(zip(*ys)) if ys else []
    ax.stackplot(xs, *columns, labels=domains, alpha=0.85)
    stage_starts: dict[int, int] = {}
    for record in history:
        stage_starts.setdefault(record.get("stage", 0), int(record["step"]))
    starts = sorted(stage_starts.items(), key=lambda item: item[1])
    for i, (stage, start) in enumerate(starts):
        if i:
            ax.axvline(start, color="black", linestyle="--", linewidth=1)
        # Above the axes, centred on the stage's span: a label inside would hide the weights under it.
        stop = starts[i + 1][1] if i + 1 < len(starts) else end
        ax.text(
            (max(start, min(steps)) + stop) / 2,
            1.01,
            f"stage {stage}",
            transform=ax.get_xaxis_transform(),
            fontsize=8,
            ha="center",
            va="bottom",
        )
    ax.set_xlim(min(steps), end)
    ax.set_ylim(0, 1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("domain weight")
    ax.set_title(title or "Mixture over training", pad=16 if len(starts) > 1 or starts[0][0] else 6)
    legend_outside(ax)
    return save_figure(fig, path, dpi=120)


def plot_law_fit(history: Sequence[dict], path: str) -> str | None:
    """Observed vs predicted loss per target domain for every decision that fitted a law (one panel each)."""
    fits = [r for r in history if r.get("observed") and r.get("predicted")]
    if not fits:
        return None
    plt = _pyplot()
    cols = min(3, len(fits))
    rows = (len(fits) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    for ax, record in zip(axes.flat, fits):
        observed, predicted = record["observed"], record["predicted"]
        targets = record.get("targets") or [f"target {j}" for j in range(len(observed[0]))]
        spearman = (record.get("fit") or {}).get("spearman") or [None] * len(targets)
        for j, name in enumerate(targets):
            label = name if spearman[j] is None else f"{name} (ρ={spearman[j]:.2f})"
            ax.scatter([row[j] for row in observed], [row[j] for row in predicted], s=14, label=label)
        values = [v for row in observed + predicted for v in row]
        lo, hi = min(values), max(values)
        ax.plot([lo, hi], [lo, hi], color="gray", linewidth=0.8)
        ax.set_title(
            f"stage {record.get('stage', 0)}, step {record['step']} ({record.get('strategy', '')})", fontsize=9
        )
        ax.set_xlabel("observed loss")
        ax.set_ylabel("law's prediction")
        ax.legend(fontsize=6, title="held-out Spearman", title_fontsize=6)
    for ax in list(axes.flat)[len(fits) :]:
        ax.axis("off")
    return save_figure(fig, path)


def plot_candidates(history: Sequence[dict], path: str) -> str | None:
    """Candidate curves of each interpolation decision: observed (and predicted) loss per domain vs new share."""
    decisions = [r for r in history if r.get("alphas") and r.get("observed")]
    if not decisions:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(decisions), figsize=(4.4 * len(decisions), 3.8), squeeze=False)
    for ax, record in zip(axes.flat, decisions):
        share = [row[1] for row in record["candidates"]]  # effective new share of each candidate
        for j, name in enumerate(record["targets"]):
            line = ax.plot(share, [row[j] for row in record["observed"]], marker="o", markersize=3, label=name)[0]
            ax.plot(
                share, [row[j] for row in record["predicted"]], linestyle="--", color=line.get_color(), linewidth=0.8
            )
        chosen = record["proposal"]["x"][1]
        ax.axvline(chosen, color="black", linewidth=1)
        ax.set_title(f"stage {record.get('stage', 0)}: new share chosen {chosen:.2f}", fontsize=9)
        ax.set_xlabel("new-data share of the candidate")
        ax.set_ylabel("eval loss (dashed: law)")
        legend_outside(ax, below=True)
    return save_figure(fig, path)
