"""Continual midtraining: a sequence of stages, each adding a domain; the strategy picks every stage's mixture.

    accelerate launch recipes/midtrain.py                              # embedded default, CPU, minutes
    accelerate launch recipes/midtrain.py --strategy natural --output_dir outputs/natural
    accelerate launch recipes/midtrain.py --config recipes/configs/midtrain.yaml --max_steps 400

Without --model_name_or_path a tiny Llama is pretrained first on the first-stage domains
(``--pretrain_steps``).  ``--max_steps`` is the total over the continual stages, split evenly.
Writes mixtures.json, compute.json, results.json and weights.png in --output_dir.
"""

import os

from hf_datamix import DataMixArguments, DataMixTrainer, create_strategy
from hf_datamix.continual import check_plan, plan_stages, run_continual, split_steps
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


DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "midtrain.yaml")


def pretrain_base(model, tokenizer, run, args, domains):
    """Pretrain the random-init model on the first-stage domains (uniform mix), once; reused on resume."""
    import copy

    from transformers import AutoModelForCausalLM

    final = os.path.join(args.output_dir, "pretrain", "final")
    if os.path.isdir(final):
        return AutoModelForCausalLM.from_pretrained(final)
    pre_args = copy.deepcopy(args)
    pre_args.output_dir = os.path.join(args.output_dir, "pretrain")
    pre_args.max_steps = run.pretrain_steps
    pre_args.save_strategy = "no"
    pre_args.eval_strategy = "no"
    if run.pretrain_learning_rate:
        pre_args.learning_rate = run.pretrain_learning_rate
    trainer = DataMixTrainer(
        model=model, args=pre_args, domains=domains, strategy="uniform", processing_class=tokenizer
    )
    trainer.train()
    return trainer.model_for_next_trainer(final)  # every process: collective under FSDP / DeepSpeed


def main():
    run, args = parse_args((RunArguments, DataMixArguments), default_config=DEFAULT_CONFIG)
    setup_logging()
    # Everything that can be wrong with the settings fails here, before any data is read or step is run.
    strategy = create_strategy(args.strategy, args.strategy_args)
    all_domains = load_domains(run)
    initial = split_list(run.initial_domains) or all_domains.names[:2]
    added = stage_groups(run.added_domains)
    stages = plan_stages(all_domains, initial, added, split_steps(args.max_steps, len(added)))
    check_plan(stages, strategy, args.init_mixture)
    tokenizer = load_tokenizer(run)
    model = load_model(run, tokenizer, seed=args.seed)
    if not run.model_name_or_path and run.pretrain_steps > 0:
        model = pretrain_base(model, tokenizer, run, args, all_domains.select(initial))
    results = run_continual(model, tokenizer, args, stages, strategy, resume=args.resume_from_checkpoint)
    last = results["stages"][-1]
    print(f"final average eval loss over {len(last['domains'])} domains: {last['eval_avg_loss']:.4f}")
    print(f"outputs in {args.output_dir}: mixtures.json, compute.json, results.json, weights.png")


if __name__ == "__main__":
    run_recipe(main)
