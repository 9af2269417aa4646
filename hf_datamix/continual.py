"""Continual runs: a sequence of stages, each training on an updated DomainSet (e.g. one more domain).

One model trains through every stage; the strategy, the decision history (``mixtures.json``) and
the compute ledger (``compute.json``) are shared by all stages and written at the run's root.
Stage ``k`` writes its checkpoints to ``output_dir/stage-k``; a run resumes from any of them.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .checkpoints import check_resume, last_checkpoint, read_state, resolve_resume, samples_per_step, wants_last
from .compute import ComputeLedger, write_json_atomic
from .config import DataMixArguments
from .constants import MIXTURE_FILE, MIXTURES_FILE, RESULTS_FILE
from .domains import DomainSet, DomainUpdate
from .mixture import Mixture
from .strategies.base import Strategy
from .trainer import DataMixTrainer


logger = logging.getLogger(__name__)


@dataclass
class Stage:
    """One stage: the domains it trains on, the update that opened it, and its optimizer steps."""

    index: int
    domains: DomainSet
    update: DomainUpdate | None
    steps: int


def split_steps(total: int, stages: int) -> int:
    """Steps of each of ``stages`` stages that share ``total`` (``--max_steps`` of recipes/midtrain.py)."""
    stages = max(1, stages)
    if not isinstance(total, int) or total < stages:
        raise ValueError(
            f"--max_steps {total} is the total over the {stages} continual stage(s), split evenly: give at least "
            f"{stages} (one step per stage), e.g. --max_steps {100 * stages}."
        )
    if total % stages:
        logger.warning(
            "--max_steps %d over %d stages: %d steps each, the last %d are not trained.",
            total,
            stages,
            total // stages,
            total % stages,
        )
    return total // stages


def check_plan(stages: Sequence[Stage], strategy: Strategy, init_mixture: str | None = None) -> None:
    """Fail now, naming the setting, if some stage cannot run: its domains' files, the strategy's settings,
    the ``init_mixture`` (no data are read, no step is run)."""
    for stage in stages:
        stage.domains.check()
        strategy.check(stage.domains)
        if init_mixture:
            DataMixTrainer.check_init_mixture(init_mixture, stage.domains)


def plan_stages(
    all_domains: DomainSet, initial: Sequence[str], added: Sequence[Sequence[str]], steps: int
) -> list[Stage]:
    """Stage ``k`` (1-based) trains on ``initial`` plus ``added[:k]``; without ``added``, one stage 0 on ``initial``."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"stage plan: steps={steps!r} per stage; give at least 1.")
    missing = [n for n in list(initial) + [a for group in added for a in group] if n not in all_domains]
    if missing:
        raise ValueError(f"stage plan names unknown domains {missing}; domains are {all_domains.names}.")
    if not initial:
        raise ValueError("stage plan: initial_domains is empty; name the domains of the first stage.")
    current = all_domains.select(list(initial))
    if not added:
        return [Stage(0, current, None, steps)]
    stages = []
    for index, group in enumerate(added, start=1):
        update = current.add(*[all_domains[name] for name in group])
        current = update.domains
        stages.append(Stage(index, current, update, steps))
    return stages


def _stage_of(checkpoint: str) -> int:
    match = re.search(r"stage-(\d+)", os.path.abspath(checkpoint))
    if not match:
        raise ValueError(f"resume_from_checkpoint={checkpoint!r} is not inside a stage-<k> folder of a continual run.")
    return int(match.group(1))


def find_resume_point(output_dir: str, resume: str | bool | None) -> tuple[int, str | None]:
    """``(stage, checkpoint)`` to resume from: a given checkpoint, the newest complete one (True), or none."""
    if not wants_last(resume):
        checkpoint = resolve_resume(output_dir, resume)  # names what is wrong with a given folder
        return (0, None) if checkpoint is None else (_stage_of(checkpoint), checkpoint)
    stages = sorted(
        (int(m.group(1)), os.path.join(output_dir, name))
        for name in (os.listdir(output_dir) if os.path.isdir(output_dir) else [])
        if (m := re.fullmatch(r"stage-(\d+)", name))
    )
    for stage, folder in reversed(stages):
        checkpoint = last_checkpoint(folder)
        if checkpoint is not None:
            return stage, checkpoint
    raise ValueError(
        f"resume_from_checkpoint=true but no stage folder of {output_dir} holds a complete checkpoint; "
        "train from the start (leave --resume_from_checkpoint out)."
    )


def run_continual(
    model,
    tokenizer,
    args: DataMixArguments,
    stages: Sequence[Stage],
    strategy: Strategy,
    resume: str | bool | None = None,
    report: Callable[[str], None] = print,
    trainer_class: type[DataMixTrainer] = DataMixTrainer,
) -> dict:
    """Train ``model`` through ``stages`` with ``strategy``; returns (and writes) per-stage results."""
    root = args.output_dir
    check_plan(stages, strategy, args.init_mixture)  # a later stage's problem fails now, not after the first
    first_stage, checkpoint = find_resume_point(root, resume)
    history: list = []
    ledger = ComputeLedger()
    previous: Mixture | None = None
    results: list[dict] = []
    # The retrain baseline starts every stage from the stage-0 model, for all steps so far.
    restart = getattr(strategy, "restart_from_base", False)
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()} if restart else None
    if checkpoint is not None:
        state = read_state(checkpoint)
        check_resume(state, strategy.name, samples_per_step(args), checkpoint)  # before any stage is built
        history[:] = state["history"]
        previous = _last_weights(history, first_stage - 1)
        results = [r for r in _read_results(root) if r["stage"] < first_stage]
    step_offset = 0
    for stage in stages:
        if stage.index < first_stage:
            step_offset += sum(s.steps for s in stages if s.index <= stage.index) if restart else stage.steps
            continue
        stage_args = copy.deepcopy(args)
        stage_args.output_dir = os.path.join(root, f"stage-{stage.index}")
        stage_args.max_steps = stage.steps
        if restart:
            model.load_state_dict(base_state)
            stage_args.max_steps = sum(s.steps for s in stages if s.index <= stage.index)
        trainer = trainer_class(
            model=model,
            args=stage_args,
            domains=stage.domains,
            strategy=strategy,
            processing_class=tokenizer,
            stage=stage.index,
            update=stage.update,
            previous_mixture=previous,
            history=history,
            ledger=ledger,
            step_offset=step_offset,
        )
        trainer.mixing.records_dir = root  # every decision reaches the run's mixtures.json at once
        trainer.train(resume_from_checkpoint=checkpoint if stage.index == first_stage else None)
        metrics = trainer.evaluate()
        previous = trainer.interleaver.weights_at(stage_args.max_steps * trainer.samples_per_step)
        result = {
            "stage": stage.index,
            "domains": stage.domains.names,
            "update": None if stage.update is None else stage.update.to_dict(),
            "mixture": previous.to_dict(),
            "eval_loss": {n: metrics[f"eval_{n}_loss"] for n in stage.domains.names},
            "eval_ppl": {n: math.exp(min(metrics[f"eval_{n}_loss"], 50.0)) for n in stage.domains.names},
            "eval_avg_loss": metrics.get("eval_avg_loss"),
            "compute": ledger.to_dict(),
        }
        if f"eval_{stage.domains.names[0]}_error" in metrics:  # instruction tuning: task error from generation
            result["eval_error"] = {n: metrics[f"eval_{n}_error"] for n in stage.domains.names}
            result["eval_avg_error"] = metrics.get("eval_avg_error")
        if f"eval_{stage.domains.names[0]}_answer_nll" in metrics:  # the gold answers' NLL, nats per answer
            result["eval_answer_nll"] = {n: metrics[f"eval_{n}_answer_nll"] for n in stage.domains.names}
            result["eval_avg_answer_nll"] = metrics.get("eval_avg_answer_nll")
        results.append(result)
        step_offset += stage_args.max_steps
        if trainer.is_world_process_zero():
            report(format_stage(result))
            write_json_atomic(os.path.join(root, MIXTURES_FILE), history)
            ledger.save(root)
            write_json_atomic(os.path.join(root, RESULTS_FILE), results)
            previous.save(os.path.join(root, MIXTURE_FILE), strategy=strategy.name, stage=stage.index)
            if args.write_plots:
                _plot(history, root, step_offset)
        # Every process: saving is collective under FSDP / DeepSpeed.  Also after the last stage, as the
        # caller may build another trainer in this process (recipes/instruct.py runs strategy after strategy).
        model = trainer.model_for_next_trainer(os.path.join(stage_args.output_dir, "final"))
    return {"stages": results, "compute": ledger.to_dict(), "history": history}


def _last_weights(history: list, stage: int) -> Mixture | None:
    records = [r for r in history if r.get("stage") == stage and r.get("kind") in ("initial", "decision")]
    return Mixture(records[-1]["weights"]) if records else None


def _read_results(root: str) -> list:
    import json

    path = os.path.join(root, RESULTS_FILE)
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _plot(history: list, root: str, end_step: int) -> None:
    try:
        from .plots import plot_candidates, plot_law_fit, plot_weights

        plot_weights(history, os.path.join(root, "weights.png"), end_step=end_step)
        plot_law_fit(history, os.path.join(root, "law_fit.png"))
        plot_candidates(history, os.path.join(root, "candidates.png"))
    except ImportError as error:
        logger.warning("No weights plot (%s).", error)


def format_stage(result: dict) -> str:
    """A readable table of one stage: per-domain perplexity and weight, and the compute split."""
    errors = result.get("eval_error")
    lines = [f"== stage {result['stage']} ({', '.join(result['domains'])}) =="]
    lines.append(f"{'domain':<16}{'weight':>10}{'eval ppl':>12}" + (f"{'task error':>12}" if errors else ""))
    for name in result["domains"]:
        row = f"{name:<16}{result['mixture'].get(name, 0.0):>10.3f}{result['eval_ppl'][name]:>12.2f}"
        lines.append(row + (f"{errors[name]:>12.3f}" if errors else ""))
    avg = sum(result["eval_ppl"].values()) / len(result["eval_ppl"])
    row = f"{'average':<16}{'':>10}{avg:>12.2f}"
    lines.append(row + (f"{sum(errors.values()) / len(errors):>12.3f}" if errors else ""))
    compute = result["compute"]
    split = ", ".join(f"{k} {v:.3g}" for k, v in sorted(compute["by_kind"].items()))
    lines.append(f"compute so far: {compute['total_flops']:.3g} FLOPs ({split})")
    return "\n".join(lines)
