"""Continual instruction tuning: task domains arrive one per stage; each strategy decides how to train on them.

    accelerate launch recipes/instruct.py                                  # embedded tasks, CPU, minutes
    accelerate launch recipes/instruct.py --strategies op_mix,sequential --tasks arith,define,book
    accelerate launch recipes/instruct.py --model_name_or_path <causal LM> --domains my_tasks.yaml \\
        --initial_domains tool_use --added_domains "science;medical"

Stage 0 trains on the first task, every later stage adds the next one (``--tasks a,b,c``: three
stages).  Every strategy in ``--strategies`` runs the same stages from the same base model:
``op_mix`` (LoRA probes, candidates scored by task error from generation), ``on_policy_distill``
(SDFT-style self-distillation), ``sequential``, ``replay`` and ``retrain``.  Without
``--model_name_or_path`` a tiny Llama is first pretrained on the embedded text corpus
(``--pretrain_steps``).  Prints, per strategy and stage, the per-task error and the compute ledger;
writes ``<output_dir>/<strategy>/`` (mixtures.json, compute.json, results.json) and
``<output_dir>/summary.json``.
"""

import copy
import json
import os
from dataclasses import dataclass, field

from hf_datamix import DataMixArguments, DataMixTrainer, DomainSet, available_strategies, create_strategy
from hf_datamix.compute import write_json_atomic
from hf_datamix.continual import Stage, check_plan, plan_stages, run_continual
from hf_datamix.data.instruct_tasks import TASK_NAMES, task_domain_set
from hf_datamix.recipe_args import (
    RunArguments,
    load_domains,
    load_model,
    load_tokenizer,
    parse_args,
    run_recipe,
    setup_logging,
    split_list,
    stage_groups,
)
from hf_datamix.sft import DataMixSFTConfig, DataMixSFTTrainer


DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "instruct.yaml")


@dataclass
class InstructArguments:
    """What the instruction-tuning recipe compares.

    Parameters:
        strategies: comma list of strategies, each run over all stages from the same base model.
        tasks: embedded task domains in stage order (used when --domains is not given).
        strategy_settings: per-strategy settings, ``{strategy: {setting: value}}`` (YAML).
        steps_per_stage: optimizer steps of each stage (retrain: of every stage so far).
        pretrain_block_size: block size of the base model's pretraining on the embedded text.
    """

    strategies: str = field(default="op_mix,on_policy_distill,sequential,replay,retrain")
    tasks: str = field(default="arith,define,book", metadata={"help": f"Embedded tasks in stage order: {TASK_NAMES}."})
    strategy_settings: dict | str | None = field(default=None, metadata={"help": "{strategy: {k: v}} (YAML)."})
    steps_per_stage: int = field(default=60, metadata={"help": "Optimizer steps per stage."})
    pretrain_block_size: int = field(default=128, metadata={"help": "Block size of the base pretraining."})


def plan(run: RunArguments, instruct: InstructArguments) -> tuple[DomainSet, list[Stage]]:
    """Stage 0 trains on the first task(s); each later stage adds the next group."""
    if run.domains:
        domains = load_domains(run)
        initial = split_list(run.initial_domains) or domains.names[:1]
        added = stage_groups(run.added_domains) or [[n] for n in domains.names if n not in initial]
    else:
        tasks = split_list(instruct.tasks)
        domains = task_domain_set(tasks)
        initial, added = tasks[:1], [[t] for t in tasks[1:]]
    first = Stage(0, domains.select(initial), None, instruct.steps_per_stage)
    return domains, [first, *plan_stages(domains, initial, added, instruct.steps_per_stage)] if added else [first]


def pretrain_base(model, tokenizer, run: RunArguments, instruct: InstructArguments, args: DataMixSFTConfig):
    """Pretrain the random-init model on the embedded text corpus (uniform mix), once; reused later."""
    from transformers import AutoModelForCausalLM

    final = os.path.join(args.output_dir, "pretrain", "final")
    if os.path.isdir(final):
        return AutoModelForCausalLM.from_pretrained(final)
    pre_args = DataMixArguments(
        output_dir=os.path.join(args.output_dir, "pretrain"),
        max_steps=run.pretrain_steps,
        per_device_train_batch_size=args.per_device_train_batch_size,
        block_size=instruct.pretrain_block_size,
        learning_rate=run.pretrain_learning_rate or args.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=min(20, run.pretrain_steps // 10),
        save_strategy="no",
        eval_strategy="no",
        report_to=[],
        logging_steps=max(1, run.pretrain_steps // 5),
        disable_tqdm=args.disable_tqdm,
        use_cpu=args.use_cpu,
        bf16=args.bf16,
        seed=args.seed,
    )
    text = load_domains(RunArguments())  # the embedded text corpus
    trainer = DataMixTrainer(model=model, args=pre_args, domains=text, strategy="uniform", processing_class=tokenizer)
    trainer.train()
    return trainer.model_for_next_trainer(final)  # every process: collective under FSDP / DeepSpeed


def base_model(run: RunArguments, instruct: InstructArguments, args: DataMixSFTConfig):
    """``(tokenizer, model)`` every strategy starts from: the given model, or a random-init Llama pretrained
    on the embedded text (``--pretrain_steps``; also used by benchmarks/instruct_tasks_calibration.py)."""
    tokenizer = load_tokenizer(run)
    base = load_model(run, tokenizer, seed=args.seed)
    if not run.model_name_or_path and run.pretrain_steps > 0:
        base = pretrain_base(base, tokenizer, run, instruct, args)
    return tokenizer, base


def summarise(name: str, results: dict) -> dict:
    """Final task errors, retention of earlier tasks, and the ledger of one strategy's run."""
    stages = results["stages"]
    last = stages[-1]
    first_seen = {}
    for stage in stages:
        for task in stage["domains"]:
            first_seen.setdefault(task, stage["stage"])
    earlier = [t for t in last["domains"] if first_seen[t] < last["stage"]]
    by_stage = {s["stage"]: s for s in stages}
    return {
        "strategy": name,
        "final_error": last["eval_error"],
        "final_avg_error": last["eval_avg_error"],
        "earlier_tasks_avg_error": sum(last["eval_error"][t] for t in earlier) / len(earlier) if earlier else None,
        # Forgetting: a task's error at the end minus its error at the end of the stage that brought it.
        "forgetting": {t: last["eval_error"][t] - by_stage[first_seen[t]]["eval_error"][t] for t in last["domains"]},
        "final_answer_nll": last.get("eval_answer_nll"),
        "final_avg_answer_nll": last.get("eval_avg_answer_nll"),
        "error_by_stage": {s["stage"]: s["eval_error"] for s in stages},
        "total_flops": results["compute"]["total_flops"],
        "flops_by_kind": results["compute"]["by_kind"],
    }


def main():
    run, instruct, args = parse_args(
        (RunArguments, InstructArguments, DataMixSFTConfig), default_config=DEFAULT_CONFIG
    )
    setup_logging()
    settings = instruct.strategy_settings or {}
    if isinstance(settings, str):
        try:
            settings = json.loads(settings)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"--strategy_settings is not a JSON object ({error}): {settings!r}; e.g. "
                '\'{"op_mix": {"probe_steps": 10}}\'.'
            ) from None
    strategies = split_list(instruct.strategies)
    unknown = sorted(set(settings) - set(available_strategies()))
    if unknown:
        raise ValueError(f"strategy_settings names unknown strategies {unknown}; known: {available_strategies()}.")
    # Every strategy and its settings are checked before any training.
    built = {name: create_strategy(name, settings.get(name)) for name in strategies}
    domains, stages = plan(run, instruct)
    for strategy in built.values():
        check_plan(stages, strategy, args.init_mixture)
    tokenizer, base = base_model(run, instruct, args)
    summary = []
    for name in strategies:
        strategy = built[name]
        stage_args = copy.deepcopy(args)
        stage_args.output_dir = os.path.join(args.output_dir, name)
        stage_args.strategy = name
        print(f"\n######## {name} ########")
        results = run_continual(
            copy.deepcopy(base),
            tokenizer,
            stage_args,
            stages,
            strategy,
            resume=args.resume_from_checkpoint,
            trainer_class=DataMixSFTTrainer,
        )
        summary.append(summarise(name, results))
    if args.process_index == 0:
        print(f"\n{'strategy':<20}{'avg task error':>16}{'earlier tasks':>16}{'total FLOPs':>14}")
        for row in summary:
            earlier = row["earlier_tasks_avg_error"]
            earlier = "" if earlier is None else f"{earlier:.3f}"
            print(f"{row['strategy']:<20}{row['final_avg_error']:>16.3f}{earlier:>16}{row['total_flops']:>14.3g}")
        write_json_atomic(os.path.join(args.output_dir, "summary.json"), {"tasks": domains.names, "runs": summary})
        print(f"outputs in {args.output_dir}: <strategy>/results.json, compute.json, mixtures.json; summary.json")


if __name__ == "__main__":
    run_recipe(main)
