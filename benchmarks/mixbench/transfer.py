"""Proxy → target transfer (Olmix's premise): do small, short proxy runs rank mixtures as the target does?

``mixtures`` swarm mixtures (Olmix's Dirichlet(strength · natural prior), caps honoured over the
target's tokens) each train a target model from scratch for the whole run (scored on the test
split) and, at every *rung* of a ladder of proxy sizes and lengths, a proxy from scratch (scored on
the decision split, as Olmix's law would see it).  A rung's fidelity is the Spearman correlation of
its proxies' mean loss with the targets' mean test loss over the mixtures (and per domain), against
its compute as a fraction of one target run.  Proxy length is given in multiples of Chinchilla's
20 tokens per (non-embedding) parameter.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from functools import cache
from typing import Any

import numpy as np

from . import stats
from .common import DATA_DIR, SETS, Shape, domain_set, new_model, run_args, tokenizer
from .runner import Budget, WorkerFile


#: The ladder the issue asks for: (name, model preset, multiple of Chinchilla's 20 tokens/parameter).
DEFAULT_RUNGS = (
    ("small_1x", "small", 1.0),
    ("small_5x", "small", 5.0),
    ("5m_0.25x", "5m", 0.25),
    ("5m_1x", "5m", 1.0),
)
CHINCHILLA = 20.0


@cache
def non_embedding_parameters(preset: str) -> int:
    """N of a preset with the embedded tokenizer's vocabulary (built on the meta device: no memory)."""
    import torch
    from transformers import LlamaForCausalLM

    from hf_datamix.models import llama_config

    with torch.device("meta"):
        model = LlamaForCausalLM(llama_config(preset, vocab_size=4096))
    return int(model.num_parameters(exclude_embeddings=True))


@dataclass
class TransferPlan:
    """One transfer ladder: the set, the seed, the target shape, the mixtures and the rungs."""

    set_name: str
    seed: int = 0
    shape: Shape = field(default_factory=Shape)
    mixtures: int = 16
    rungs: tuple[tuple[str, str, float], ...] = DEFAULT_RUNGS
    proxy_learning_rate: float = 3e-3
    domains: tuple[str, ...] = ()  # the set's domains when the units were run (default: SETS[set_name])

    def __post_init__(self):
        if self.set_name not in SETS:
            raise ValueError(f"unknown domain set {self.set_name!r}; known: {sorted(SETS)}.")
        self.domains = tuple(self.domains or SETS[self.set_name])
        self.rungs = tuple((str(n), str(p), float(m)) for n, p, m in self.rungs)
        if self.mixtures < 3:
            raise ValueError(f"mixtures={self.mixtures}: a rank correlation needs at least 3.")

    def proxy_steps(self, preset: str, multiple: float) -> int:
        return proxy_shape(self.shape, preset, multiple).steps

    def settings(self) -> dict[str, Any]:
        steps = {name: self.proxy_steps(preset, multiple) for name, preset, multiple in self.rungs}
        return {"kind": "transfer", **asdict(self), "proxy_steps": steps}

    def units(self) -> list[tuple[str, float]]:
        """``[(key, cost in target-step equivalents)]``: the targets, then each rung's proxies."""
        target_n = non_embedding_parameters(self.shape.preset)
        out = [(f"target/{i}", float(self.shape.steps)) for i in range(self.mixtures)]
        for name, preset, multiple in self.rungs:
            # Small models use the GPU less well: count a proxy step at no less than a tenth of a target's.
            per_step = max(0.1, non_embedding_parameters(preset) / target_n)
            out += [(f"proxy/{name}/{i}", self.proxy_steps(preset, multiple) * per_step) for i in range(self.mixtures)]
        return out


def swarm_mixtures(plan: TransferPlan, token_counts: dict[str, int]) -> list[dict[str, float]]:
    """The targets' mixtures: Olmix's swarm around the natural prior, within the caps over the target's tokens."""
    from hf_datamix import Mixture
    from hf_datamix.swarm import sample_swarm

    names = list(plan.domains)
    target_tokens = plan.shape.steps * plan.shape.tokens_per_step
    caps = {n: plan.shape.max_repetitions * token_counts[n] / target_tokens for n in names}
    swarm = sample_swarm(
        names,
        prior=Mixture.proportional({n: token_counts[n] for n in names}),
        size=plan.mixtures,
        caps=caps,
        seed=plan.seed,
    )
    return [m.to_dict() for m in swarm]


def proxy_shape(target: Shape, preset: str, multiple: float) -> Shape:
    """The run shape of a proxy of ``preset`` trained ``multiple`` × Chinchilla, at the target's batch and block."""
    steps = max(1, round(multiple * CHINCHILLA * non_embedding_parameters(preset) / target.tokens_per_step))
    return Shape(**{**asdict(target), "preset": preset, "steps": steps, "warmup_steps": max(1, round(0.02 * steps))})


def train_and_score(
    shape: Shape, learning_rate: float, seed: int, weights: dict[str, float], domains, tok, folder: str, split: str
) -> dict[str, Any]:
    """Train ``shape``'s model from ``seed``'s init on the fixed mixture ``weights`` over ``domains``; score it
    per domain on the ``split`` (``test`` or ``decision``) blocks."""
    from hf_datamix import DataMixTrainer, create_strategy
    from hf_datamix.simulate.scoring import BlockLossScorer

    started = time.perf_counter()
    args = run_args(shape, folder, seed, learning_rate=learning_rate)
    trainer = DataMixTrainer(
        model=new_model(tok, shape, seed),
        args=args,
        domains=domains,
        strategy=create_strategy("fixed", weights=weights),
        processing_class=tok,
    )
    trainer.train()
    scorer = (
        BlockLossScorer(trainer.eval_blocks, 32, trainer.args.device)
        if split == "test"
        else trainer.decision_scorer(batch_size=32)
    )
    scores = scorer(trainer.model)
    seconds = time.perf_counter() - started
    tokens = trainer.ledger.tokens_by_kind.get("train", 0.0)
    return {
        "weights": dict(weights),
        "scores": scores.tolist(),
        "mean": float(np.mean(scores)),
        "split": split,
        "preset": shape.preset,
        "steps": shape.steps,
        "train_flops": trainer.ledger.by_kind.get("train", 0.0),
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
    }


def run_worker(
    plan: TransferPlan,
    keys: list[str],
    work: str,
    out: WorkerFile,
    budget: Budget,
    data_dir: str = DATA_DIR,
    unpacked: str | None = None,
) -> None:
    """Train each target or proxy in ``keys`` from scratch on its mixture and score it."""
    tok = tokenizer()
    domains = domain_set(plan.set_name, unpacked or work, data_dir)
    rungs = {name: (preset, multiple) for name, preset, multiple in plan.rungs}
    mixtures = None
    costs = dict(plan.units())
    for key in keys:
        if not budget.allows(costs[key]):
            print(f"skip: {key} would not end before the deadline ({budget.left:.0f} s left)", flush=True)
            continue
        parts = key.split("/")
        index = int(parts[-1])
        if parts[0] == "target":
            shape, lr = plan.shape, plan.shape.learning_rate
        else:
            shape, lr = proxy_shape(plan.shape, *rungs[parts[1]]), plan.proxy_learning_rate
        if mixtures is None:  # the same swarm in every worker: from the packed token counts
            from hf_datamix.trainer import pack_domains

            args = run_args(shape, os.path.join(work, "runs", "pack"), plan.seed)
            mixtures = swarm_mixtures(plan, pack_domains(domains, tok, args).token_counts)
        split = "test" if parts[0] == "target" else "decision"
        value = train_and_score(
            shape,
            lr,
            plan.seed,
            mixtures[index],
            domains,
            tok,
            os.path.join(work, "runs", key.replace("/", "-")),
            split,
        )
        out.add(key, value)
        budget.observe(costs[key], value["seconds"])
        print(f"{key}: mean {split} loss {value['mean']:.4f} in {value['seconds']:.0f} s", flush=True)


def report(plans_and_units: list[tuple[TransferPlan, dict[str, Any], dict[str, list]]]) -> dict[str, Any]:
    """The ``mixbench_transfer.json`` body (``olmix_transfer``'s keys): per rung, Spearman vs compute fraction."""
    out: dict[str, Any] = {"domain_sets": {}, "complete": bool(plans_and_units)}
    for plan, units, _ in plans_and_units:
        targets = [units.get(f"target/{i}") for i in range(plan.mixtures)]
        entry: dict[str, Any] = {"settings": plan.settings(), "targets_done": sum(map(bool, targets)), "rungs": []}
        out["complete"] &= all(targets)
        for name, preset, multiple in plan.rungs:
            proxies = [units.get(f"proxy/{name}/{i}") for i in range(plan.mixtures)]
            out["complete"] &= all(proxies)
            rung: dict[str, Any] = {
                "name": name,
                "preset": preset,
                "chinchilla_multiple": multiple,
                "proxies_done": sum(map(bool, proxies)),
            }
            if all(targets) and all(proxies):
                true = np.array([t["mean"] for t in targets])
                simulated = np.array([p["mean"] for p in proxies])
                agreement = stats.rank_agreement(simulated, true, seed=plan.seed)
                per_domain = [
                    stats.rank_agreement(
                        np.array([p["scores"][j] for p in proxies]),
                        np.array([t["scores"][j] for t in targets]),
                        seed=plan.seed,
                    )["spearman"]
                    for j in range(len(plan.domains))
                ]
                rung.update(agreement)
                rung["per_domain_spearman"] = dict(zip(plan.domains, per_domain))
                rung["spearman_per_domain_mean"] = float(np.nanmean([v for v in per_domain if v is not None]))
                rung["compute_fraction"] = float(
                    np.mean([p["train_flops"] for p in proxies]) / np.mean([t["train_flops"] for t in targets])
                )
                rung["proxy_tokens_per_s"] = float(np.mean([p["tokens_per_s"] for p in proxies]))
            entry["rungs"].append(rung)
        if all(targets):
            entry["target_tokens_per_s"] = float(np.mean([t["tokens_per_s"] for t in targets]))
            entry["targets"] = targets
        out["domain_sets"][plan.set_name] = entry
    return out


def plot(result: dict[str, Any], path: str) -> None:
    """Spearman (proxy vs target ranking) against a rung's compute as a fraction of one target run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for set_name, entry in result["domain_sets"].items():
        done = [r for r in entry["rungs"] if "compute_fraction" in r]
        if done:
            ax.scatter([r["compute_fraction"] for r in done], [r["spearman"] for r in done], label=set_name)
            for r in done:
                ax.annotate(r["name"], (r["compute_fraction"], r["spearman"]), fontsize=7)
    ax.axhline(0.8, color="grey", lw=0.8, ls="--")
    ax.axvline(0.05, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("proxy compute / one target run")
    ax.set_ylabel("Spearman (proxy vs target mean loss)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
