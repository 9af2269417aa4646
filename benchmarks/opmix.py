"""Benchmarks of the ``op_mix`` strategy (issue 3): pretraining from scratch and continual midtraining.

    python benchmarks/opmix.py stage --corpus /tmp/bigcorpus        # here: stage capped, xz-compressed data
    python benchmarks/opmix.py pretrain  --out DIR [--pretrain-steps 1200]
    python benchmarks/opmix.py continual --out DIR [--stage-steps 160 --base-steps 200]
    python benchmarks/opmix.py all       --out DIR                 # both, pretraining first

Data: real text from ``hf-datamix corpus build`` (see ``benchmarks/data/manifest.json`` once
staged): the first documents of each domain up to a byte cap, train and eval files apart.
Model: a random-init 20M Llama (``hf_datamix.models`` preset ``20m``) with the embedded tokenizer.

``pretrain`` trains arms ``natural``, ``uniform`` and ``op_mix`` (pretraining schedule) from the same
init for the same steps and compares the average per-domain eval perplexity; writes
``opmix_pretrain.json`` and ``opmix_pretrain.png``.

``continual`` pretrains one base model (uniform, first domain), then runs the same stage plan (each
stage adds one domain) with ``op_mix`` (continual schedule), ``retrain``, ``sequential`` and ``replay``,
every arm from the same base weights; writes ``opmix_continual.json`` and ``opmix_continual.png``.

Result files are rewritten after every arm (``"status": "partial"`` until the last one), so a run
cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import lzma
import math
import os
import shutil
import sys
import time
from typing import Any


HERE = os.path.dirname(os.path.abspath(__file__))
DATA_DIR = os.path.join(HERE, "data")
sys.path.insert(0, HERE)

from _common import RESULTS_DIR, provenance, time_method, write_json  # noqa: E402


#: every staged domain (the union of both benchmarks').
STAGED = ["python_code", "python_docs", "scripture", "wordnet", "man_de", "computing", "arithmetic"]
PRETRAIN_DOMAINS = ["python_code", "python_docs", "scripture", "wordnet", "man_de"]
CONTINUAL_INITIAL = ["python_docs"]
CONTINUAL_ADDED = ["python_code", "wordnet", "man_de", "computing", "arithmetic"]
CONTINUAL_ARMS = ["op_mix", "retrain", "sequential", "replay"]
PRETRAIN_ARMS = ["natural", "uniform", "op_mix"]


# ---------------------------------------------------------------------------------------------
# staging (run where the corpus is)
# ---------------------------------------------------------------------------------------------
def _take(path: str, cap: int) -> tuple[list[str], int]:
    """The first whole lines (documents) of a jsonl file, up to ``cap`` bytes of text."""
    lines, total = [], 0
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            size = len(json.loads(line)["text"].encode("utf-8"))
            if lines and total + size > cap:
                break
            lines.append(line if line.endswith("\n") else line + "\n")
            total += size
    return lines, total


def stage(opts) -> None:
    os.makedirs(DATA_DIR, exist_ok=True)
    manifest = {
        "corpus": os.path.abspath(opts.corpus),
        "train_cap_bytes": opts.train_cap,
        "eval_cap_bytes": opts.eval_cap,
        "rule": "first documents of each split in file order, whole documents, up to the cap",
        "domains": {},
    }
    for name in STAGED:
        entry = {}
        for split, cap in (("train", opts.train_cap), ("eval", opts.eval_cap)):
            lines, total = _take(os.path.join(opts.corpus, name, f"{split}.jsonl"), cap)
            target = os.path.join(DATA_DIR, f"{name}.{split}.jsonl.xz")
            with lzma.open(target, "wt", encoding="utf-8", preset=6) as handle:
                handle.writelines(lines)
            entry[split] = {"docs": len(lines), "text_bytes": total, "xz_bytes": os.path.getsize(target)}
        manifest["domains"][name] = entry
        print(name, entry)
    with open(os.path.join(opts.corpus, "corpus.json"), encoding="utf-8") as handle:
        source = json.load(handle)["domains"]
    for name in STAGED:
        manifest["domains"][name]["description"] = source[name].get("description")
        manifest["domains"][name]["licence"] = source[name].get("licence")
    with open(os.path.join(DATA_DIR, "manifest.json"), "w") as handle:
        json.dump(manifest, handle, indent=2)
    total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(DATA_DIR, "*")))
    print(f"staged {len(STAGED)} domains in {DATA_DIR}: {total / 2**20:.1f} MiB")


def unpack(work: str) -> dict[str, dict[str, str]]:
    """Decompress the staged files into ``work/data/<domain>/{train,eval}.jsonl``; returns the paths."""
    files = {}
    for name in STAGED:
        files[name] = {}
        for split in ("train", "eval"):
            target = os.path.join(work, "data", name, f"{split}.jsonl")
            if not os.path.isfile(target):
                os.makedirs(os.path.dirname(target), exist_ok=True)
                with (
                    lzma.open(os.path.join(DATA_DIR, f"{name}.{split}.jsonl.xz"), "rb") as src,
                    open(target + ".tmp", "wb") as dst,
                ):
                    shutil.copyfileobj(src, dst)
                os.replace(target + ".tmp", target)
            files[name][split] = target
    return files


# ---------------------------------------------------------------------------------------------
# shared
# ---------------------------------------------------------------------------------------------
TIMES: dict[str, float] = collections.defaultdict(float)


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _instrument() -> None:
    """Time probe training, candidate scoring and law+proposal (wrappers; the library is untouched)."""
    import hf_datamix.strategies.op_mix as op_mix_module
    from hf_datamix.simulate.lora_probes import LoRAProbeSimulator

    time_method(LoRAProbeSimulator, "train_probe", "probe_training_s", TIMES, _sync)
    time_method(LoRAProbeSimulator, "score_candidates", "candidate_scoring_s", TIMES, _sync)
    time_method(op_mix_module, "decide", "law_fit_and_proposal_s", TIMES, _sync)


def header(opts, name: str) -> dict[str, Any]:
    return {
        **provenance(name, opts.commit, commit_env="OPMIX_COMMIT"),
        "status": "partial",
        "tree_note": opts.tree_note,
    }


def write(path: str, payload: dict) -> None:
    write_json(path, payload)


def load_tokenizer():
    from hf_datamix.data.embedded import load_embedded_tokenizer

    tokenizer = load_embedded_tokenizer()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


MODEL_PRESET = "20m"


def new_model(tokenizer, state=None, seed: int = 0):
    import torch
    from transformers import LlamaForCausalLM

    from hf_datamix.models import llama_config

    torch.manual_seed(seed)
    config = llama_config(
        MODEL_PRESET,
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    if state is not None:
        model.load_state_dict(state)
    return model


def training_settings(opts, max_steps: int) -> dict[str, Any]:
    import torch

    cuda = torch.cuda.is_available()
    return dict(  # noqa: C408 (keyword form mirrors DataMixArguments)
        per_device_train_batch_size=opts.batch_size,
        per_device_eval_batch_size=64,
        block_size=opts.block_size,
        learning_rate=opts.learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, round(0.05 * max_steps)),
        weight_decay=0.0,
        bf16=cuda,
        use_cpu=not cuda,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        dataloader_num_workers=0,
        torch_compile=False,
        max_eval_blocks=opts.max_eval_blocks,
        logging_steps=max(1, max_steps // 10),
        disable_tqdm=True,
        seed=opts.seed,
        preprocessing_num_workers=opts.workers,
        max_repetitions=4.0,
    )


def make_args(opts, output_dir: str, strategy: str, max_steps: int, strategy_args: dict | None = None):
    from hf_datamix import DataMixArguments

    return DataMixArguments(
        output_dir=output_dir,
        strategy=strategy,
        strategy_args=dict(strategy_args or {}),
        max_steps=max_steps,
        **training_settings(opts, max_steps),
    )


def domain_set(files: dict, names: list[str]):
    from hf_datamix import DomainSet, DomainSpec

    return DomainSet([DomainSpec(n, train=files[n]["train"], eval=files[n]["eval"]) for n in names])


def decisions(history: list) -> list[dict]:
    """The decision records of a run, without the bulky law parameters."""
    keep = []
    for record in history:
        record = dict(record)
        if isinstance(record.get("law"), dict):
            record["law"] = {k: v for k, v in record["law"].items() if k != "params"}
        keep.append(record)
    return keep


def manifest() -> dict:
    path = os.path.join(DATA_DIR, "manifest.json")
    if os.path.isfile(path):
        with open(path) as handle:
            return json.load(handle)
    return {}


# ---------------------------------------------------------------------------------------------
# benchmark 1: pretraining
# ---------------------------------------------------------------------------------------------
def opmix_pretrain_args(opts) -> dict:
    return {
        "warmup_fraction": 0.2,
        "probe_steps": max(1, round(opts.probe_fraction * opts.pretrain_steps)),
        "probe_batch_size": 32,
        "eval_blocks": 32,
        "num_candidates": 12,
        "probe_bf16": True,
        "law_starts": opts.law_starts,
        "decision_seed": opts.seed,
    }


def run_pretrain(opts, files) -> dict:
    import torch

    from hf_datamix import DataMixTrainer

    tokenizer = load_tokenizer()
    init_state = {k: v.clone() for k, v in new_model(tokenizer, seed=opts.seed).state_dict().items()}
    domains = domain_set(files, PRETRAIN_DOMAINS)
    path = os.path.join(opts.out, "opmix_pretrain.json")
    result = header(opts, "op_mix pretraining from scratch")
    op_args = opmix_pretrain_args(opts)
    result["settings"] = {
        "domains": PRETRAIN_DOMAINS,
        "data": {n: manifest().get("domains", {}).get(n) for n in PRETRAIN_DOMAINS},
        "model": f"random-init Llama, hf_datamix.models preset {MODEL_PRESET!r} ('20m': hidden 384, 10 layers, 6 heads, "
        "MLP 1024), tied embeddings, embedded 4096-token BPE tokenizer; the same init (seed) for every arm",
        "max_steps": opts.pretrain_steps,
        "tokens_per_step": opts.batch_size * opts.block_size,
        "target_training_tokens_per_arm": opts.pretrain_steps * opts.batch_size * opts.block_size,
        "training": training_settings(opts, opts.pretrain_steps),
        "arms": PRETRAIN_ARMS,
        "op_mix_strategy_args": op_args,
        "probe_steps_note": f"paper: 5000 steps per probe; here {op_args['probe_steps']} "
        f"({opts.probe_fraction:.1%} of the run's {opts.pretrain_steps} steps), batch 32 (half the training batch)",
        "eval": f"final per-domain loss on the first {opts.max_eval_blocks} eval blocks (512 tokens) of each domain's held-out file",
    }
    result["arms"] = {}
    for arm in PRETRAIN_ARMS:
        TIMES.clear()
        started = time.perf_counter()
        model = new_model(tokenizer, init_state)
        args = make_args(
            opts,
            os.path.join(opts.work, "pretrain", arm),
            arm,
            opts.pretrain_steps,
            op_args if arm == "op_mix" else None,
        )
        trainer = DataMixTrainer(model=model, args=args, domains=domains, processing_class=tokenizer)
        built = time.perf_counter()
        output = trainer.train()
        _sync()
        trained = time.perf_counter()
        metrics = trainer.evaluate()
        done = time.perf_counter()
        names = domains.names
        losses = {n: float(metrics[f"eval_{n}_loss"]) for n in names}
        ppl = {n: math.exp(v) for n, v in losses.items()}
        decision_s = sum(float(r.get("seconds", 0.0)) for r in trainer.history if r.get("kind") == "decision")
        train_s = trained - built
        arm_result = {
            "eval_loss": losses,
            "eval_ppl": ppl,
            "avg_loss": sum(losses.values()) / len(losses),
            "avg_ppl": sum(ppl.values()) / len(ppl),
            "final_mixture": trainer.interleaver.weights_at(opts.pretrain_steps * trainer.samples_per_step).to_dict(),
            "token_counts": {n: int(c) for n, c in trainer.token_counts.items()},
            "compute": trainer.ledger.to_dict(),
            "wall_s": {
                "total": done - started,
                "build_and_pack": built - started,
                "train_incl_decisions": train_s,
                "decisions": decision_s,
                "main_training": train_s - decision_s,
                "final_eval": done - trained,
                **dict(TIMES),
            },
            "main_training_tokens_per_s": opts.pretrain_steps
            * trainer.samples_per_step
            * opts.block_size
            / max(1e-9, train_s - decision_s),
            "train_loss_log": [
                {"step": r["step"], "loss": r["loss"]} for r in trainer.state.log_history if "loss" in r
            ],
            "train_runtime_s": output.metrics.get("train_runtime"),
            "history": decisions(trainer.history),
        }
        result["arms"][arm] = arm_result
        print(
            f"[pretrain] {arm}: avg ppl {arm_result['avg_ppl']:.3f}, avg loss {arm_result['avg_loss']:.4f}, "
            f"wall {arm_result['wall_s']['total']:.1f}s, mixture {arm_result['final_mixture']}",
            flush=True,
        )
        figures_pretrain(result)
        write(path, result)
        del trainer, model
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    result["status"] = "complete"
    figures_pretrain(result)
    write(path, result)
    plot_pretrain(result, os.path.join(opts.out, "opmix_pretrain.png"))
    return result


def figures_pretrain(result: dict) -> None:
    arms = result["arms"]
    if "op_mix" not in arms:
        return
    op = arms["op_mix"]["avg_ppl"]
    figures, targets = {}, []
    for base in ("natural", "uniform"):
        if base in arms:
            change = (op - arms[base]["avg_ppl"]) / arms[base]["avg_ppl"]
            figures[f"op_mix_vs_{base}_avg_ppl_relative_change"] = change
    result["figures"] = figures
    if "op_mix_vs_natural_avg_ppl_relative_change" in figures:
        value = figures["op_mix_vs_natural_avg_ppl_relative_change"]
        targets.append(
            {
                "target": "op_mix average per-domain perplexity >= 6.3% lower than natural (paper's headline)",
                "measured": f"{-value:+.2%} lower" if value <= 0 else f"{value:+.2%} (higher)",
                "relative_change": value,
                "met": bool(value <= -0.063),
            }
        )
    if "op_mix_vs_uniform_avg_ppl_relative_change" in figures:
        value = figures["op_mix_vs_uniform_avg_ppl_relative_change"]
        targets.append(
            {
                "target": "op_mix average per-domain perplexity lower than uniform",
                "measured": f"{value:+.2%} relative change",
                "relative_change": value,
                "met": bool(value < 0),
            }
        )
    result["targets"] = targets


def plot_pretrain(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    arms = list(result["arms"])
    domains = result["settings"]["domains"] + ["average"]
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(1, len(arms))
    for i, arm in enumerate(arms):
        values = [result["arms"][arm]["eval_ppl"][d] for d in domains[:-1]] + [result["arms"][arm]["avg_ppl"]]
        ax.bar(np.arange(len(domains)) + (i - (len(arms) - 1) / 2) * width, values, width, label=arm)
    ax.set_xticks(np.arange(len(domains)), domains)
    ax.set_ylabel("eval perplexity")
    ax.set_yscale("log")
    steps = result["settings"]["max_steps"]
    ax.set_title(f"20M Llama, {steps} steps x {result['settings']['tokens_per_step']} tokens: per-domain perplexity")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
# benchmark 2: continual midtraining
# ---------------------------------------------------------------------------------------------
def opmix_continual_args(opts) -> dict:
    return {
        "probe_steps": max(1, round(opts.stage_steps / 4)),
        "probe_batch_size": 32,
        "eval_blocks": 32,
        "alpha_points": 9,
        "probe_bf16": True,
        "law_starts": opts.law_starts,
        "decision_seed": opts.seed,
    }


def run_continual_bench(opts, files) -> dict:
    import torch

    from hf_datamix import DataMixTrainer, create_strategy
    from hf_datamix.continual import plan_stages, run_continual

    tokenizer = load_tokenizer()
    all_names = CONTINUAL_INITIAL + CONTINUAL_ADDED
    all_domains = domain_set(files, all_names)
    stages = plan_stages(all_domains, CONTINUAL_INITIAL, [[d] for d in CONTINUAL_ADDED], opts.stage_steps)
    path = os.path.join(opts.out, "opmix_continual.json")
    result = header(opts, "op_mix continual midtraining")
    op_args = opmix_continual_args(opts)
    result["settings"] = {
        "initial_domains": CONTINUAL_INITIAL,
        "added_per_stage": CONTINUAL_ADDED,
        "data": {n: manifest().get("domains", {}).get(n) for n in all_names},
        "model": f"random-init Llama preset {MODEL_PRESET!r}, embedded tokenizer; base pretrained once, every arm "
        "starts from the same base weights",
        "base_pretraining": {"strategy": "uniform", "domains": CONTINUAL_INITIAL, "steps": opts.base_steps},
        "stages": len(stages),
        "steps_per_stage": opts.stage_steps,
        "tokens_per_step": opts.batch_size * opts.block_size,
        "training_per_stage": training_settings(opts, opts.stage_steps),
        "arms": CONTINUAL_ARMS,
        "op_mix_strategy_args": op_args,
        "retrain": "at stage k restarts from the base and trains on all domains so far (uniform) for k x steps_per_stage",
        "replay": "90% new domain, 10% split equally over the earlier domains (replay's default old_split=equal, "
        "the reference code's)",
        "sequential": "100% new domain",
        "compute_note": "FLOPs from each arm's ledger (6N per trained token, 2N per forward-only token, N = "
        "non-embedding parameters); base pretraining is shared by all arms and not in the arms' totals "
        "(given separately)",
    }
    # base model
    started = time.perf_counter()
    model = new_model(tokenizer, seed=opts.seed)
    base_args = make_args(opts, os.path.join(opts.work, "continual", "base"), "uniform", opts.base_steps)
    base_trainer = DataMixTrainer(
        model=model, args=base_args, domains=all_domains.select(CONTINUAL_INITIAL), processing_class=tokenizer
    )
    base_trainer.train()
    base_metrics = base_trainer.evaluate()
    base_state = {k: v.detach().to("cpu").clone() for k, v in base_trainer.model.state_dict().items()}
    result["base"] = {
        "eval_loss": {n: float(base_metrics[f"eval_{n}_loss"]) for n in CONTINUAL_INITIAL},
        "compute": base_trainer.ledger.to_dict(),
        "wall_s": time.perf_counter() - started,
    }
    print(f"[continual] base: {result['base']['eval_loss']} in {result['base']['wall_s']:.1f}s", flush=True)
    del base_trainer, model
    result["arms"] = {}
    for arm in CONTINUAL_ARMS:
        TIMES.clear()
        started = time.perf_counter()
        stage_done: list[float] = []

        def report(text: str, _marks=stage_done) -> None:
            _marks.append(time.perf_counter())
            print(text, flush=True)

        model = new_model(tokenizer, base_state)
        args = make_args(
            opts,
            os.path.join(opts.work, "continual", arm),
            arm,
            opts.stage_steps,
            op_args if arm == "op_mix" else None,
        )
        strategy = create_strategy(arm, args.strategy_args)
        out = run_continual(model, tokenizer, args, stages, strategy, report=report)
        wall = time.perf_counter() - started
        stage_results = out["stages"]
        last = stage_results[-1]
        edges = [started] + stage_done
        arm_result = {
            "final_avg_loss": float(last["eval_avg_loss"]),
            "final_eval_loss": last["eval_loss"],
            "per_stage": [
                {
                    "stage": s["stage"],
                    "domains": s["domains"],
                    "mixture": s["mixture"],
                    "eval_loss": s["eval_loss"],
                    "eval_avg_loss": s["eval_avg_loss"],
                    "total_flops_so_far": s["compute"]["total_flops"],
                    "flops_by_kind_so_far": s["compute"]["by_kind"],
                    "wall_s": edges[i + 1] - edges[i] if i + 1 < len(edges) else None,
                }
                for i, s in enumerate(stage_results)
            ],
            "compute": out["compute"],
            "total_flops": out["compute"]["total_flops"],
            "wall_s": {"total": wall, **dict(TIMES)},
            "decision_seconds": sum(
                float(r.get("seconds", 0.0)) for r in out["history"] if r.get("kind") == "decision"
            ),
            "history": decisions(out["history"]),
        }
        result["arms"][arm] = arm_result
        print(
            f"[continual] {arm}: final avg loss {arm_result['final_avg_loss']:.4f}, total FLOPs "
            f"{arm_result['total_flops']:.3e}, wall {wall:.1f}s",
            flush=True,
        )
        figures_continual(result)
        write(path, result)
        del model, strategy, out
        torch.cuda.empty_cache() if torch.cuda.is_available() else None
    result["status"] = "complete"
    figures_continual(result)
    write(path, result)
    plot_continual(result, os.path.join(opts.out, "opmix_continual.png"))
    return result


def retention(arm: dict) -> dict:
    """Earlier domains (all but the last added): final loss, and forgetting = final - best after introduction."""
    stages = arm["per_stage"]
    final = stages[-1]["eval_loss"]
    earlier = [n for n in stages[-1]["domains"] if n != CONTINUAL_ADDED[-1]]
    forgetting = {}
    for name in earlier:
        seen = [s["eval_loss"][name] for s in stages if name in s["eval_loss"]]
        forgetting[name] = final[name] - min(seen)
    return {
        "earlier_domains": earlier,
        "final_loss_earlier_mean": sum(final[n] for n in earlier) / len(earlier),
        "forgetting_mean": sum(forgetting.values()) / len(forgetting),
        "forgetting": forgetting,
    }


def figures_continual(result: dict) -> None:
    arms = result["arms"]
    figures: dict[str, Any] = {
        name: {"final_avg_loss": a["final_avg_loss"], "total_flops": a["total_flops"]} for name, a in arms.items()
    }
    for name, a in arms.items():
        figures[name]["retention"] = retention(a)
    targets = []
    if "op_mix" in arms and "retrain" in arms:
        op, re_ = arms["op_mix"], arms["retrain"]
        loss_change = (op["final_avg_loss"] - re_["final_avg_loss"]) / re_["final_avg_loss"]
        flops_ratio = op["total_flops"] / re_["total_flops"]
        base = result.get("base", {}).get("compute", {}).get("total_flops", 0.0)
        figures["op_mix_vs_retrain_loss_relative_change"] = loss_change
        figures["op_mix_over_retrain_flops"] = flops_ratio
        figures["op_mix_over_retrain_flops_incl_base"] = (op["total_flops"] + base) / (re_["total_flops"] + base)
        figures["op_mix_probe_flops_share"] = op["compute"]["by_kind"].get("probe", 0.0) / op["total_flops"]
        targets.append(
            {
                "target": "op_mix final average loss within 1% of retrain (not more than 1% higher)",
                "measured": f"{loss_change:+.2%}",
                "relative_change": loss_change,
                "met": bool(loss_change <= 0.01),
            }
        )
        targets.append(
            {
                "target": "op_mix FLOPs <= 34% of retrain FLOPs",
                "measured": f"{flops_ratio:.1%}",
                "ratio": flops_ratio,
                "met": bool(flops_ratio <= 0.34),
            }
        )
    if "op_mix" in arms and "sequential" in arms:
        op, seq = retention(arms["op_mix"]), retention(arms["sequential"])
        figures["op_mix_vs_sequential_earlier_domains_final_loss"] = {
            "op_mix": op["final_loss_earlier_mean"],
            "sequential": seq["final_loss_earlier_mean"],
            "relative_change": (op["final_loss_earlier_mean"] - seq["final_loss_earlier_mean"])
            / seq["final_loss_earlier_mean"],
        }
        figures["op_mix_vs_sequential_forgetting"] = {
            "op_mix": op["forgetting_mean"],
            "sequential": seq["forgetting_mean"],
        }
        targets.append(
            {
                "target": "op_mix retains earlier domains better than sequential (lower mean final loss on "
                "the domains seen before the last stage)",
                "measured": f"{op['final_loss_earlier_mean']:.4f} vs {seq['final_loss_earlier_mean']:.4f}",
                "met": bool(op["final_loss_earlier_mean"] < seq["final_loss_earlier_mean"]),
            }
        )
    result["figures"] = figures
    result["targets"] = targets


def plot_continual(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.5))
    for name, arm in result["arms"].items():
        left.scatter(arm["total_flops"], arm["final_avg_loss"], s=60, label=name)
        left.annotate(name, (arm["total_flops"], arm["final_avg_loss"]), textcoords="offset points", xytext=(5, 5))
        xs = [s["total_flops_so_far"] for s in arm["per_stage"]]
        ys = [s["eval_avg_loss"] for s in arm["per_stage"]]
        right.plot(xs, ys, marker="o", label=name)
    left.set_xscale("log")
    left.set_xlabel("total FLOPs (ledger, base pretraining excluded)")
    left.set_ylabel(f"final average eval loss over {len(result['settings']['added_per_stage']) + 1} domains")
    left.set_title("final loss vs compute")
    right.set_xlabel("cumulative FLOPs")
    right.set_ylabel("average eval loss over domains seen so far")
    right.set_title("after each stage")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["stage", "pretrain", "continual", "all"])
    parser.add_argument("--out", default=RESULTS_DIR, help="where the result JSON/PNG files go")
    parser.add_argument("--work", default="/tmp/opmix_work", help="scratch: unpacked data, trainer output dirs")
    parser.add_argument("--corpus", default="/tmp/bigcorpus", help="stage: corpus built by hf-datamix corpus build")
    parser.add_argument("--train-cap", type=int, default=10_000_000, help="stage: train text bytes per domain")
    parser.add_argument("--eval-cap", type=int, default=300_000, help="stage: eval text bytes per domain")
    parser.add_argument("--pretrain-steps", type=int, default=1200)
    parser.add_argument("--probe-fraction", type=float, default=0.125, help="pretraining probe steps / run steps")
    parser.add_argument("--stage-steps", type=int, default=160)
    parser.add_argument("--base-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=512)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--law-starts", type=int, default=300)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model-preset", default="20m", help="hf_datamix.models preset (20m; tiny for a CPU check)")
    parser.add_argument("--max-eval-blocks", type=int, default=64)
    parser.add_argument("--commit", default=None, help="commit of the code (default: $OPMIX_COMMIT or git rev-parse)")
    parser.add_argument("--tree-note", default=os.environ.get("OPMIX_TREE_NOTE"), help="e.g. uncommitted changes")
    opts = parser.parse_args()
    global MODEL_PRESET
    MODEL_PRESET = opts.model_preset
    if opts.command == "stage":
        stage(opts)
        return
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("HF_DATAMIX_CACHE", os.path.join(opts.work, "packed"))
    os.makedirs(opts.out, exist_ok=True)
    files = unpack(opts.work)
    _instrument()
    if opts.command in ("pretrain", "all"):
        run_pretrain(opts, files)
    if opts.command in ("continual", "all"):
        run_continual_bench(opts, files)


if __name__ == "__main__":
    main()
