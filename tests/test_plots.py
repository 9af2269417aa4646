"""The run plots are readable: every stage labelled, whole-number stage ticks, no legend over the data."""

from __future__ import annotations

import pytest

from hf_datamix import plots, report


pytest.importorskip("matplotlib")

HISTORY = [
    {"step": 0, "stage": 0, "kind": "initial", "weights": {"a": 0.5, "b": 0.5}},
    {
        "step": 10,
        "stage": 1,
        "kind": "decision",
        "weights": {"a": 0.3, "b": 0.3, "c": 0.4},
        "alphas": [0.1, 0.5, 0.9],
        "candidates": [[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]],
        "targets": ["a", "b", "c"],
        "observed": [[1.0, 2.0, 3.5], [1.2, 2.2, 3.0], [1.5, 2.5, 2.8]],
        "predicted": [[1.0, 2.0, 3.4], [1.2, 2.2, 3.1], [1.5, 2.5, 2.8]],
        "proposal": {"x": [0.6, 0.4]},
    },
]


@pytest.fixture
def figures(monkeypatch):
    """Every figure a plot function saves, drawn and laid out as written."""
    drawn = {}

    def keep(fig, path, dpi=110):
        fig.tight_layout()
        fig.canvas.draw()
        drawn[path] = fig
        return path

    monkeypatch.setattr(plots, "save_figure", keep)
    monkeypatch.setattr(report, "save_figure", keep)
    return drawn


def legend_clear_of_data(fig) -> bool:
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        legend = ax.get_legend()
        if legend is not None and legend.get_window_extent(renderer).overlaps(ax.get_window_extent(renderer)):
            return False
    return True


def test_plots_label_stages_and_keep_legends_off_the_data(figures):
    plots.plot_weights(HISTORY, "weights.png", end_step=20)
    plots.plot_candidates(HISTORY, "candidates.png")
    run = {
        "eval_curves": {"a": [(1, 2.0), (2, 1.8), (3, 1.7)], "c": [(2, 3.0), (3, 2.5)]},
        "curve_axis": "stage",
        "name": "run",
        "compute": {"by_kind": {"train": 3.0, "probe": 1.0}},
    }
    report.plot_eval_curves(run, "eval_loss.png")
    report.plot_compute([run], "compute.png")
    assert all(legend_clear_of_data(fig) for fig in figures.values())
    weights = figures["weights.png"].axes[0]
    labels = [t.get_text() for t in weights.texts]
    assert labels == ["stage 0", "stage 1"]
    assert all(t.get_position()[1] > 1 for t in weights.texts)  # above the axes, not over the weights
    ticks = figures["eval_loss.png"].axes[0].get_xticks()
    visible = [t for t in ticks if 1 <= t <= 3]
    assert visible and all(float(t).is_integer() for t in visible)
