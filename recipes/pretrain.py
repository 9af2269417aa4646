"""Pretraining with a mixing strategy on a fixed DomainSet.

    accelerate launch recipes/pretrain.py                                  # embedded corpus, tiny Llama, CPU
    accelerate launch recipes/pretrain.py --strategy natural --max_steps 2000 --model_preset 20m
    accelerate launch recipes/pretrain.py --config recipes/configs/pretrain.yaml --domains my_domains.yaml

Writes mixtures.json, compute.json, weights.png and checkpoints in --output_dir, and prints the
per-domain perplexity with the final mixture.
"""

import os

from hf_datamix import DataMixArguments, DataMixTrainer
from hf_datamix.checkpoints import check_resume, read_state, resolve_resume, samples_per_step
from hf_datamix.continual import format_stage
from hf_datamix.recipe_args import (
    RunArguments,
    load_domains,
    load_model,
    load_tokenizer,
    parse_args,
    run_recipe,
    setup_logging,
    split_list,
)


DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "pretrain.yaml")


def main():
    run, args = parse_args((RunArguments, DataMixArguments), default_config=DEFAULT_CONFIG)
    setup_logging()
    checkpoint = resolve_resume(args.output_dir, args.resume_from_checkpoint)
    if checkpoint:  # a resume that cannot work fails before any data is read
        check_resume(read_state(checkpoint), args.strategy, samples_per_step(args), checkpoint)
    tokenizer = load_tokenizer(run)
    domains = load_domains(run)
    if run.initial_domains:
        domains = domains.select(split_list(run.initial_domains))
    model = load_model(run, tokenizer, seed=args.seed)
    trainer = DataMixTrainer(model=model, args=args, domains=domains, processing_class=tokenizer)
    trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    metrics = trainer.evaluate()
    trainer.save_final_model(os.path.join(args.output_dir, "final"))  # every process: collective under FSDP
    if trainer.is_world_process_zero():
        final = trainer.interleaver.weights_at(args.max_steps * trainer.samples_per_step)
        losses = {n: metrics[f"eval_{n}_loss"] for n in domains.names}
        print(
            format_stage(
                {
                    "stage": 0,
                    "domains": domains.names,
                    "mixture": final.to_dict(),
                    "eval_ppl": {n: metrics[f"eval_{n}_ppl"] for n in domains.names},
                    "compute": trainer.ledger.to_dict(),
                }
            )
        )
        print(f"average eval loss: {sum(losses.values()) / len(losses):.4f}; outputs in {args.output_dir}")


if __name__ == "__main__":
    run_recipe(main)
