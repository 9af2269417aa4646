"""Reports on real tiny runs: one run's report.md and plots, a comparison of two runs."""

from __future__ import annotations

import json

import pytest
from conftest import datamix_args, make_domain_set, tiny_llama

from hf_datamix import DataMixTrainer
from hf_datamix.cli import main as cli_main
from hf_datamix.report import read_run


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory, tokenizer):
    """A 3-step uniform and a 3-step natural run, each evaluated at steps 2 and 3."""
    runs = {}
    for strategy in ("uniform", "natural"):
        out = tmp_path_factory.mktemp(strategy)
        args = datamix_args(
            out, max_steps=3, strategy=strategy, eval_strategy="steps", eval_steps=2, max_eval_blocks=2
        )
        trainer = DataMixTrainer(
            model=tiny_llama(len(tokenizer)), args=args, domains=make_domain_set(), processing_class=tokenizer
        )
        trainer.train()
        runs[strategy] = (out, trainer)
    return runs


def test_single_run_report(two_runs):
    out, trainer = two_runs["uniform"]
    assert cli_main(["report", str(out)]) == 0
    markdown = (out / "report.md").read_text()
    for image in ("weights.png", "eval_loss.png", "compute.png"):
        assert (out / image).stat().st_size > 1000, image
        assert f"]({image})" in markdown
    last = {
        k: v for e in trainer.state.log_history for k, v in e.items() if k.startswith("eval_") and k.endswith("_loss")
    }
    assert f"| alpha | 0.3333 | {last['eval_alpha_loss']:.4g} |" in markdown
    run = read_run(out)
    assert [step for step, _ in run["eval_curves"]["beta"]] == [2, 3]  # from the last checkpoint's trainer_state


def test_compare_two_runs(two_runs, tmp_path, capsys):
    dirs = [two_runs[s][0] for s in ("uniform", "natural")]
    compare = tmp_path / "cmp"
    assert cli_main(["report", *map(str, dirs), "--out", str(compare)]) == 0
    assert "report.md" in capsys.readouterr().out
    markdown = (compare / "report.md").read_text()
    for out, trainer in (two_runs["uniform"], two_runs["natural"]):
        compute = json.loads((out / "compute.json").read_text())
        final = json.loads((out / "mixtures.json").read_text())[-1]["weights"]
        row = next(line for line in markdown.splitlines() if line.startswith(f"| {out.name} |"))
        assert f"| {trainer.strategy.name} |" in row
        assert ", ".join(f"{d}={w:.3f}" for d, w in final.items()) in row
        assert f"| {compute['total_flops']:.4g} |" in row
        assert f"| {compute['by_kind']['train']:.4g} |" in row
        average = [e["eval_avg_loss"] for e in trainer.state.log_history if "eval_avg_loss" in e][-1]
        assert f"| {average:.4g} |" in row  # the trainer's own average over domains
    for image in ("loss_vs_flops.png", "compute.png"):
        assert (compare / image).stat().st_size > 1000
    assert sum(line.startswith("| ") for line in markdown.splitlines()) == 3  # header and one row per run
    assert not (compare / "report.html").exists()  # Markdown only: GitHub and the Hub render it


def test_report_on_a_folder_without_a_run(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path)]) == 2
    assert "holds no mixtures.json" in capsys.readouterr().err
