"""What a finished run says: read its output folder, and write reports comparing runs.

``read_run`` gathers everything a run wrote (``mixtures.json``, ``compute.json``, ``results.json``,
the Trainer's ``trainer_state.json``) into one summary; the model card (:mod:`hf_datamix.card`) and
the reports here are both rendered from it.  ``write_report`` writes ``report.md`` (Markdown, which
GitHub and the Hub render) for one run, ``compare_runs`` one table and one figure for several.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from .constants import COMPUTE_FILE, MIXTURES_FILE, RESULTS_FILE, TRAINER_STATE_FILE
from .mixture import Mixture
from .plots import (  # matplotlib itself is imported only when a plot is drawn
    PLOT_TITLES,
    _pyplot,
    legend_outside,
    plot_weights,
    save_figure,
)


def _read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _last_trainer_state(output_dir: str) -> dict | None:
    """The ``trainer_state.json`` with the most steps: the run's own or its latest checkpoint's."""
    candidates = [os.path.join(output_dir, TRAINER_STATE_FILE)]
    for entry in os.listdir(output_dir):
        if entry.startswith("checkpoint-") and entry.split("-")[-1].isdigit():
            candidates.append(os.path.join(output_dir, entry, TRAINER_STATE_FILE))
    states = [_read_json(path) for path in candidates if os.path.isfile(path)]
    return max(states, key=lambda s: s.get("global_step", 0)) if states else None


def _eval_curves(log_history: Sequence[Mapping], domains: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """``{domain: [(step, eval loss), ...]}`` from Trainer's log history (one entry per domain per eval)."""
    curves: dict[str, list[tuple[int, float]]] = {name: [] for name in domains}
    for entry in log_history:
        for name in domains:
            value = entry.get(f"eval_{name}_loss")
            if value is not None:
                curves[name].append((int(entry.get("step", 0)), float(value)))
    return {name: points for name, points in curves.items() if points}


def read_run(output_dir: str | os.PathLike) -> dict[str, Any]:
    """Summarise a run's output folder (read-only).

    Returns a dict with ``name``, ``domains``, ``final_mixture`` (``{domain: weight}``), ``strategy``,
    ``settings`` (or None), ``history``, ``compute`` (``compute.json`` or None), ``results``
    (``results.json`` or None), ``eval_loss`` / ``eval_ppl`` (``{domain: value}`` at the last
    evaluation, empty if none), ``eval_curves`` (``{domain: [(x, loss), ...]}``) and ``curve_axis``
    (``"step"``, or ``"stage"`` for continual runs).
    """
    output_dir = os.fspath(output_dir)
    mixtures_path = os.path.join(output_dir, MIXTURES_FILE)
    if not os.path.isfile(mixtures_path):
        raise FileNotFoundError(
            f"{output_dir!r} holds no {MIXTURES_FILE}: give the output_dir of a DataMixTrainer run "
            "(or of recipes/pretrain.py / midtrain.py)."
        )
    history = _read_json(mixtures_path)
    if not isinstance(history, list) or not history:
        raise ValueError(f"{mixtures_path} holds no mixture records; was the run started?")
    compute_path = os.path.join(output_dir, COMPUTE_FILE)
    compute = _read_json(compute_path) if os.path.isfile(compute_path) else None
    results_path = os.path.join(output_dir, RESULTS_FILE)
    results = _read_json(results_path) if os.path.isfile(results_path) else None

    # Every record carries the weights in force after it, so the last one is the final mixture;
    # a continual run's results.json states it per stage.
    final = results[-1]["mixture"] if results else history[-1]["weights"]
    domains = list(results[-1]["domains"]) if results else list(final)
    settings = next((r["settings"] for r in reversed(history) if "settings" in r), None)

    eval_loss: dict[str, float] = {}
    curves: dict[str, list[tuple[int, float]]] = {}
    axis = "step"
    if results:
        axis = "stage"
        eval_loss = dict(results[-1].get("eval_loss") or {})
        for stage in results:
            for name, value in (stage.get("eval_loss") or {}).items():
                curves.setdefault(name, []).append((int(stage["stage"]), float(value)))
    else:
        state = _last_trainer_state(output_dir)
        if state:
            curves = _eval_curves(state.get("log_history", []), domains)
            eval_loss = {name: points[-1][1] for name, points in curves.items()}
    return {
        "name": os.path.basename(os.path.normpath(output_dir)),
        "output_dir": output_dir,
        "domains": domains,
        "final_mixture": Mixture(final).to_dict(),
        "strategy": history[-1].get("strategy", "unknown"),
        "settings": settings,
        "history": history,
        "compute": compute,
        "results": results,
        "eval_loss": eval_loss,
        "eval_ppl": {name: math.exp(min(loss, 50.0)) for name, loss in eval_loss.items()},
        "eval_curves": curves,
        "curve_axis": axis,
    }


def average_loss(run: Mapping[str, Any]) -> float | None:
    """Plain mean of the per-domain eval losses at the last evaluation (None without one)."""
    losses = list(run["eval_loss"].values())
    return sum(losses) / len(losses) if losses else None


# -- plots ---------------------------------------------------------------------------------------
def plot_eval_curves(run: Mapping[str, Any], path: str) -> str | None:
    """Per-domain eval loss over steps (or stages); None when the run never evaluated."""
    if not run["eval_curves"]:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7.5, 4))
    for name, points in run["eval_curves"].items():
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    ax.set_xlabel("optimizer step" if run["curve_axis"] == "step" else "stage")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps and stages are whole numbers
    ax.set_ylabel("eval loss")
    ax.set_title(f"{run['name']}: per-domain eval loss")
    legend_outside(ax)
    return save_figure(fig, path)


def plot_compute(runs: Sequence[Mapping[str, Any]], path: str) -> str | None:
    """FLOPs by kind (train / eval / probe / ...), one stacked bar per run; None without compute.json."""
    runs = [r for r in runs if r["compute"]]
    if not runs:
        return None
    plt = _pyplot()
    kinds = sorted({kind for r in runs for kind in r["compute"]["by_kind"]})
    fig, ax = plt.subplots(figsize=(1.6 * len(runs) + 4, 4))
    bottom = [0.0] * len(runs)
    for kind in kinds:
        values = [float(r["compute"]["by_kind"].get(kind, 0.0)) for r in runs]
        ax.bar([r["name"] for r in runs], values, bottom=bottom, label=kind)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_ylabel("FLOPs")
    ax.set_title("compute by kind")
    legend_outside(ax)
    return save_figure(fig, path)


def plot_loss_vs_flops(runs: Sequence[Mapping[str, Any]], path: str) -> str | None:
    """Average eval loss against total FLOPs, one labelled point per run."""
    points = [(r, average_loss(r)) for r in runs if r["compute"] and average_loss(r) is not None]
    if not points:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for run, loss in points:
        flops = float(run["compute"]["total_flops"])
        ax.scatter([flops], [loss], s=30)
        ax.annotate(
            f"{run['name']} ({run['strategy']})", (flops, loss), fontsize=8, xytext=(4, 4), textcoords="offset points"
        )
    ax.set_xlabel("total FLOPs")
    ax.set_ylabel("average per-domain eval loss")
    ax.set_title("loss vs compute")
    return save_figure(fig, path)


# -- markdown ------------------------------------------------------------------------------------
def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}g}"


def _write_markdown(directory: str, markdown: str) -> str:
    # Markdown only: GitHub and the Hub render it (images included), so no HTML copy is kept.
    path = os.path.join(directory, "report.md")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(markdown)
    return path


def write_report(output_dir: str) -> dict[str, Any]:
    """Write ``report.md`` and its plots into ``output_dir``; returns the paths."""
    run = read_run(output_dir)
    if not os.path.isfile(os.path.join(output_dir, "weights.png")):  # the trainer's own has the run's true end
        plot_weights(run["history"], os.path.join(output_dir, "weights.png"))
    plot_eval_curves(run, os.path.join(output_dir, "eval_loss.png"))
    plot_compute([run], os.path.join(output_dir, "compute.png"))
    lines = [f"# Run {run['name']}", "", f"Strategy: {run['strategy']}", ""]
    lines += [
        "## Final mixture",
        "",
        markdown_table(
            ["domain", "weight", "eval loss", "eval ppl"],
            [
                [
                    d,
                    f"{run['final_mixture'].get(d, 0.0):.4f}",
                    _fmt(run["eval_loss"].get(d)),
                    _fmt(run["eval_ppl"].get(d)),
                ]
                for d in run["domains"]
            ],
        ),
        "",
    ]
    if run["compute"]:
        lines += [
            "## Compute",
            "",
            markdown_table(
                ["kind", "FLOPs", "share"],
                [
                    [k, f"{v:.4g}", f"{run['compute']['share_by_kind'].get(k, 0.0):.1%}"]
                    for k, v in run["compute"]["by_kind"].items()
                ],
            ),
            "",
            f"Total: {run['compute']['total_flops']:.4g} FLOPs.",
            "",
        ]
    images = [name for name in PLOT_TITLES if os.path.isfile(os.path.join(output_dir, name))]
    for name in images:
        lines += [f"## {PLOT_TITLES[name]}", "", f"![{PLOT_TITLES[name]}]({name})", ""]
    md_path = _write_markdown(output_dir, "\n".join(lines))
    return {"markdown": md_path, "images": [os.path.join(output_dir, n) for n in images]}


def compare_runs(output_dirs: Sequence[str], out_dir: str | None = None) -> dict[str, Any]:
    """One comparison table (``report.md``) and figures for several runs in ``out_dir``.

    ``out_dir`` defaults to ``<first run>/compare``.  Returns the paths and the table rows.
    """
    runs = [read_run(d) for d in output_dirs]
    out_dir = out_dir or os.path.join(output_dirs[0], "compare")
    os.makedirs(out_dir, exist_ok=True)
    # Runs share names when they are e.g. a/out and b/out: number them so the table stays readable.
    names = [r["name"] for r in runs]
    for i, run in enumerate(runs):
        if names.count(run["name"]) > 1:
            run["name"] = f"{run['name']}#{i + 1}"
    kinds = sorted({k for r in runs if r["compute"] for k in r["compute"]["by_kind"]})
    header = ["run", "strategy", "final mixture", "avg eval loss", "avg eval ppl", "total FLOPs"] + [
        f"{k} FLOPs" for k in kinds
    ]
    rows = []
    for run in runs:
        loss = average_loss(run)
        ppl = sum(run["eval_ppl"].values()) / len(run["eval_ppl"]) if run["eval_ppl"] else None
        compute = run["compute"] or {"total_flops": None, "by_kind": {}}
        rows.append(
            [
                run["name"],
                run["strategy"],
                ", ".join(f"{d}={w:.3f}" for d, w in run["final_mixture"].items()),
                _fmt(loss),
                _fmt(ppl),
                _fmt(compute["total_flops"]),
            ]
            + [_fmt(compute["by_kind"].get(k)) for k in kinds]
        )
    figures = [
        p
        for p in (
            plot_loss_vs_flops(runs, os.path.join(out_dir, "loss_vs_flops.png")),
            plot_compute(runs, os.path.join(out_dir, "compute.png")),
        )
        if p
    ]
    lines = ["# Run comparison", "", markdown_table(header, rows), ""]
    lines += ["Runs: " + "; ".join(f"{r['name']} = {r['output_dir']}" for r in runs), ""]
    for path in figures:
        lines += [f"![{os.path.basename(path)}]({os.path.basename(path)})", ""]
    md_path = _write_markdown(out_dir, "\n".join(lines))
    return {"markdown": md_path, "images": figures, "header": header, "rows": rows}
