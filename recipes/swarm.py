"""Olmix swarm: train one small proxy per Dirichlet mixture, then fit a law and propose a mixture.

    accelerate launch recipes/swarm.py --output_dir outputs/swarm                    # embedded corpus, CPU
    accelerate launch --num_processes 4 recipes/swarm.py --proxy_preset 20m --proxy_steps 2000
    hf-datamix fit --ratios outputs/swarm/ratios.csv --metrics outputs/swarm/metrics.csv --out mix.json

Under ``accelerate launch`` with several processes each process trains its share of the members
as an independent single-device job (member i on process i mod P) and all gather the results from
the output folder; an interrupted swarm resumes without retraining finished members.  Writes
``ratios.csv``, ``metrics.csv`` (the ``hf-datamix fit`` formats), ``mixture.json`` and ``compute.json``.
"""

import os


# Each process is an independent job: drop the launcher's process-group variables before torch or
# transformers read them, and give the process its own GPU.
RANK, WORLD = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
if WORLD > 1:
    local = int(os.environ.get("LOCAL_RANK", "0"))
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    devices = visible.split(",") if visible else None
    os.environ["CUDA_VISIBLE_DEVICES"] = devices[local] if devices and local < len(devices) else str(local)
    for key in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "GROUP_RANK",
        "ROLE_RANK",
        "ROLE_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
        "TORCHELASTIC_RUN_ID",
    ):
        os.environ.pop(key, None)

from dataclasses import dataclass, field  # noqa: E402

from hf_datamix import ComputeLedger, DataMixArguments, Mixture  # noqa: E402
from hf_datamix.constants import MIXTURE_FILE  # noqa: E402
from hf_datamix.fit import fit_mixture  # noqa: E402
from hf_datamix.recipe_args import (  # noqa: E402
    RunArguments,
    load_domains,
    load_tokenizer,
    parse_args,
    run_recipe,
    split_list,
)
from hf_datamix.simulate.proxy_swarm import ProxyConfig, ProxyRuns  # noqa: E402
from hf_datamix.swarm import sample_swarm, swarm_to_csv  # noqa: E402


DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "swarm.yaml")


@dataclass
class SwarmArguments:
    """Swarm settings (proxy training settings come from ProxyConfig's fields, prefixed proxy_)."""

    swarm_size: int = field(default=0, metadata={"help": "Members (0: 3(m+1) for m domains)."})
    min_weight: float = field(default=0.002, metadata={"help": "Swarm weights below this are zeroed."})
    hierarchical: bool = field(default=False, metadata={"help": "Sample group:topic domains hierarchically."})
    proxy_preset: str = field(default="tiny", metadata={"help": "Proxy model size."})
    proxy_steps: int = field(default=100, metadata={"help": "Steps per proxy."})
    proxy_batch_size: int = field(default=8, metadata={"help": "Batch size per proxy."})
    proxy_learning_rate: float = field(default=3e-3, metadata={"help": "Peak LR per proxy."})
    proxy_eval_blocks: int = field(default=16, metadata={"help": "Eval blocks per domain scoring a proxy."})
    law: str = field(default="log_linear", metadata={"help": "Mixing law of the final fit."})
    kl: float = field(default=0.05, metadata={"help": "KL weight of the proposal."})


def main():
    run, swarm_args, args = parse_args((RunArguments, SwarmArguments, DataMixArguments), default_config=DEFAULT_CONFIG)
    tokenizer = load_tokenizer(run)
    domains = load_domains(run)
    if run.initial_domains:
        domains = domains.select(split_list(run.initial_domains))
    ledger = ComputeLedger()
    swarm = ProxyRuns(
        domains,
        tokenizer,
        ProxyConfig(
            swarm_args.proxy_preset,
            swarm_args.proxy_steps,
            swarm_args.proxy_batch_size,
            swarm_args.proxy_learning_rate,
            swarm_args.proxy_eval_blocks,
            args.seed,
        ),
        args.output_dir,
        base_args=args,
        ledger=ledger,
    )
    # Token counts come from packing (cached), needed for the natural prior.
    from hf_datamix.data.blocks import pack_domains

    tokens = pack_domains(domains, tokenizer, args).token_counts
    prior = Mixture.proportional(tokens)
    mixtures = sample_swarm(
        domains.names,
        prior=prior,
        size=swarm_args.swarm_size or None,
        min_weight=swarm_args.min_weight,
        hierarchical=swarm_args.hierarchical,
        seed=args.seed,
    )
    result = swarm.run(mixtures, rank=RANK, world_size=WORLD)
    ledger.save(os.path.join(args.output_dir, f"compute-rank{RANK}"))
    if RANK != 0:
        return
    ratios, metrics = os.path.join(args.output_dir, "ratios.csv"), os.path.join(args.output_dir, "metrics.csv")
    swarm_to_csv(mixtures, ratios)
    swarm_to_csv([dict(zip(result.targets, row)) for row in result.metrics], metrics)  # same run ids
    fitted = fit_mixture(ratios, metrics, prior=prior.to_dict(), kl=swarm_args.kl, law=swarm_args.law, seed=args.seed)
    Mixture(fitted["weights"]).save(os.path.join(args.output_dir, MIXTURE_FILE), fit=fitted["fit"])
    print(f"swarm of {len(mixtures)} proxies ({result.trained} trained now, {result.reused} reused)")
    for name, weight in fitted["weights"].items():
        print(f"{name:<16}{weight:>8.3f}")
    print(f"held-out Spearman (mean over targets): {fitted['fit'].get('spearman_mean')}")


if __name__ == "__main__":
    run_recipe(main)
