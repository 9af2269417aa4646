"""Part 6: one op_mix decision and one olmix reuse step for 4..64 domains; the scaling plot."""

from __future__ import annotations

import math
import time
from typing import Any

from .common import (
    Context,
    cuda,
    datamix_args,
    free_memory,
    log,
    new_model,
    only_decision,
    pick,
    quiet,
    timed_methods,
)


def split_domains(ctx: Context, count: int, pieces: int = 10):
    """``count`` domains cut from the embedded corpus: domain i = contiguous shard i//7 (of ``pieces``) of source i%7.

    Shards of the same datasets are reused across counts, so their fingerprints (and packed-block
    cache entries) are the same in every set; eval = a shard of the source's eval split.
    """
    from hf_datamix import DomainSet, DomainSpec

    if not hasattr(ctx, "_sources"):
        loaded = {}
        for spec in ctx.corpus():
            train, evaluation = spec.load()
            loaded[spec.name] = (train, evaluation)
        ctx._sources = loaded
        ctx._shards = {}
    names = list(ctx._sources)
    if count > pieces * len(names):
        raise ValueError(f"split_domains: at most {pieces * len(names)} domains, asked for {count}")
    specs = []
    for i in range(count):
        source, piece = names[i % len(names)], i // len(names)
        key = (source, piece)
        if key not in ctx._shards:
            train, evaluation = ctx._sources[source]
            eval_shards = min(pieces, max(1, len(evaluation) // 2))
            ctx._shards[key] = (
                train.shard(pieces, piece, contiguous=True),
                evaluation.shard(eval_shards, piece % eval_shards, contiguous=True),
            )
        train, evaluation = ctx._shards[key]
        specs.append(DomainSpec(f"{source}_{piece}", train=train, eval=evaluation))
    return DomainSet(specs)


def run_opmix_decision(ctx: Context, preset: str, count: int, settings: dict) -> dict:
    import hf_datamix.strategies.composed as composed  # op_mix's propose step calls its decide
    from hf_datamix import DataMixTrainer
    from hf_datamix.simulate.lora_probes import LoRAProbeSimulator

    domains = split_domains(ctx, count)
    started = time.perf_counter()
    model = new_model(ctx, preset)
    args = datamix_args(
        ctx.outdir("scaling", f"op_mix-{preset}-{count}"),
        "op_mix",
        settings["op_mix"],
        max_steps=settings["max_steps"],
        per_device_train_batch_size=settings["batch"],
        block_size=settings["block"],
        max_repetitions=4.0,
    )
    trainer = DataMixTrainer(model=model, args=args, domains=domains, processing_class=ctx.tokenizer())
    built = time.perf_counter()
    times: dict[str, float] = {}
    with (
        timed_methods(
            [
                (LoRAProbeSimulator, "train_probe", "probe_training_s"),
                (LoRAProbeSimulator, "score_candidates", "candidate_scoring_s"),
                (composed, "decide", "law_fit_and_proposal_s"),
            ],
            times,
        ),
        quiet(ctx),
    ):
        trainer.train()
    decision, ledger = only_decision(trainer, "op_mix", count)
    flops = ledger["by_kind"].get("probe", 0.0) + ledger["by_kind"].get("eval", 0.0)
    record = {
        "domains": count,
        "seconds": float(decision["seconds"]),
        "kind": decision["kind"],
        "ledger_flops": flops,
        "ledger_flops_by_kind": {k: ledger["by_kind"].get(k, 0.0) for k in ("probe", "eval")},
        "probes": count + 1,
        "build_s": built - started,
        "wall_s": time.perf_counter() - started,
        **times,
    }
    del trainer, model
    free_memory()
    return record


def run_olmix_reuse(ctx: Context, preset: str, count: int, settings: dict) -> dict:
    import hf_datamix.strategies.composed as composed  # olmix_reuse's propose step calls its decide
    from hf_datamix import DataMixTrainer, Mixture
    from hf_datamix.simulate.proxy_swarm import ProxyRuns

    full = split_domains(ctx, count)
    previous = full.select(full.names[:-1])
    update = previous.add(full[full.names[-1]])
    started = time.perf_counter()
    model = new_model(ctx, "tiny")  # the main model does not take part in an olmix decision
    strategy_args = {**settings["olmix"], "proxy_preset": preset}
    args = datamix_args(
        ctx.outdir("scaling", f"olmix-{preset}-{count}"),
        "olmix_reuse",
        strategy_args,
        max_steps=1,
        per_device_train_batch_size=settings["batch"],
        block_size=settings["block"],
        max_repetitions=4.0,
    )
    trainer = DataMixTrainer(
        model=model,
        args=args,
        domains=update.domains,
        processing_class=ctx.tokenizer(),
        stage=1,
        update=update,
        previous_mixture=Mixture.uniform(previous.names),
    )
    built = time.perf_counter()
    times: dict[str, float] = {}
    with (
        timed_methods(
            [(ProxyRuns, "_train_member", "proxy_runs_s"), (composed, "decide", "law_fit_and_proposal_s")], times
        ),
        quiet(ctx),
    ):
        trainer.train()
    decision, ledger = only_decision(trainer, "olmix_reuse", count)
    record = {
        "domains": count,
        "seconds": float(decision["seconds"]),
        "kind": decision["kind"],
        "ledger_flops": ledger["by_kind"].get("proxy", 0.0),
        "proxy_runs": decision.get("proxy_runs"),
        "reuse": {k: decision.get("reuse", {}).get(k) for k in ("mode", "compute")},
        "fixed_domains": len(decision.get("reuse", {}).get("fixed", [])),
        "build_s": built - started,
        "wall_s": time.perf_counter() - started,
        **times,
    }
    del trainer, model
    free_memory()
    return record


def part_scaling(ctx: Context) -> dict:
    quick, gpu = ctx.quick, cuda()
    counts = [int(c) for c in pick(ctx, "scaling_counts", "4,8", "4,8,16,32,64").split(",")]
    presets = pick(ctx, "scaling_presets", "tiny", "tiny,20m").split(",")
    settings = {
        "block": 64 if quick else 128,
        "batch": 8,
        "max_steps": 10,
        "op_mix": {
            "warmup_fraction": 0.2,
            "probe_steps": 10 if quick else 20,
            "probe_batch_size": 8,
            "num_candidates": 12,
            "eval_blocks": 2,
            "eval_batch_size": 16,
            "probe_bf16": gpu,
            "law_starts": 30 if quick else 300,
        },
        "olmix": {
            "reuse": "full",
            "proxy_steps": 5 if quick else 20,
            "proxy_batch_size": 8,
            "proxy_eval_blocks": 2,
            "law_starts": 30 if quick else 300,
            **({"swarm_size": 4} if quick else {}),
        },
    }
    out: dict[str, Any] = {
        "domains": "synthetic: the 7 embedded-corpus domains each cut into 10 contiguous document shards; domain i "
        "= shard i//7 of source i%7 (its eval split = a shard of the source's eval split)",
        "settings": settings,
        "op_mix": "ONE decision of the pretraining schedule: DataMixTrainer(strategy='op_mix', max_steps=10) decides "
        "after step 2: D+1 LoRA probes x probe_steps, num_candidates Dirichlet candidates scored on D "
        "domains x eval_blocks, law fit + proposal.  'seconds' is the decision record's seconds; "
        "ledger_flops = probe + eval FLOPs of the run's ledger (6N/2N per token, N non-embedding)",
        "num_candidates_note": "num_candidates = max(12, D+2): the log-linear law over the D+1 collapsed coordinates "
        "has D+2 parameters per target and LogLinearLaw.fit refuses fewer runs, so with 12 "
        "candidates an op_mix decision over 11 or more domains raises ValueError (after all "
        "probes are trained)",
        "olmix_reuse": "ONE reuse step: a stage that adds domain D to D-1 domains whose previous mixture is "
        "uniform, reuse='full' -> coordinates {virtual, new}, a swarm of proxies (default 3(2+1)=9) "
        "of the given preset trained from scratch (proxy_steps each) and scored on all D domains; "
        "'seconds' is the decision record's seconds (at step 0, before training); ledger_flops = "
        "proxy FLOPs",
        "model_size_meaning": "op_mix: the preset of the model being trained (the probes' base); olmix: the proxy preset",
        "budget_rule": "the smallest D of every series always runs; a larger one runs only if its projection fits in "
        "what is left of this part's budget (op_mix: probe time x (D+1)/(D_last+1) + scoring time x "
        "C*D*(D+1)/(C_last*D_last*(D_last+1)) + the rest as measured; olmix: last wall x (D/D_last)^p, "
        "p from the last two points in [0.25, 3], 0.5 before); within a D the cheaper series run first",
        "op_mix_runs": {p: [] for p in presets},
        "olmix_reuse_runs": {p: [] for p in presets},
        "skipped": [],
    }
    runners = {"op_mix": run_opmix_decision, "olmix_reuse": run_olmix_reuse}
    series = [("op_mix", p) for p in presets] + [("olmix_reuse", p) for p in presets]
    stopped: dict = {}

    def candidates(count: int) -> int:
        return max(settings["op_mix"]["num_candidates"], count + 2)

    def projection(kind: str, preset: str, count: int) -> float:
        done = out[f"{kind}_runs"][preset]
        if not done:
            return 0.0
        last = done[-1]
        d = last["domains"]
        if kind == "op_mix" and "probe_training_s" in last and "candidate_scoring_s" in last:
            # probes ~ D+1; scoring ~ C*D forward calls, each carrying D+1 active adapters; law + rest as measured
            rest = last["wall_s"] - last["probe_training_s"] - last["candidate_scoring_s"]
            return (
                last["probe_training_s"] * (count + 1) / (d + 1)
                + last["candidate_scoring_s"] * candidates(count) * count * (count + 1) / (candidates(d) * d * (d + 1))
                + rest
            )
        if len(done) >= 2:
            ratio = last["wall_s"] / max(1e-9, done[-2]["wall_s"])
            exponent = min(3.0, max(0.25, math.log(ratio) / math.log(d / done[-2]["domains"])))
        else:
            exponent = 2.0 if kind == "op_mix" else 0.5
        return last["wall_s"] * (count / d) ** exponent

    for count in counts:
        order = sorted(series, key=lambda item: projection(*item, count))
        for kind, preset in order:
            if (kind, preset) in stopped:
                out["skipped"].append(
                    {
                        "kind": kind,
                        "preset": preset,
                        "domains": count,
                        "reason": f"a smaller D was skipped ({stopped[(kind, preset)]})",
                    }
                )
                continue
            estimate = projection(kind, preset, count)
            first = not out[f"{kind}_runs"][preset]
            if not first and estimate > ctx.remaining():
                stopped[(kind, preset)] = f"D={count}"
                out["skipped"].append(
                    {
                        "kind": kind,
                        "preset": preset,
                        "domains": count,
                        "projected_s": estimate,
                        "reason": f"time budget: projected {estimate:.0f}s > {ctx.remaining():.0f}s left",
                    }
                )
                log(
                    f"scaling {kind} {preset} D={count}: skipped (projected {estimate:.0f}s, "
                    f"{ctx.remaining():.0f}s left)"
                )
                continue
            run_settings = settings
            if kind == "op_mix":
                run_settings = {**settings, "op_mix": {**settings["op_mix"], "num_candidates": candidates(count)}}
            try:
                record = runners[kind](ctx, preset, count, run_settings)
            except Exception as error:  # noqa: BLE001 - one failed point must not lose the others
                stopped[(kind, preset)] = f"error at D={count}"
                out["skipped"].append(
                    {
                        "kind": kind,
                        "preset": preset,
                        "domains": count,
                        "reason": f"error: {type(error).__name__}: {error}"[:500],
                    }
                )
                log(f"scaling {kind} {preset} D={count}: ERROR {type(error).__name__}: {error}")
                free_memory()
                continue
            if kind == "op_mix":
                record["num_candidates"] = run_settings["op_mix"]["num_candidates"]
            record["projected_wall_s"] = estimate or None
            out[f"{kind}_runs"][preset].append(record)
            ctx.progress(out)
            log(
                f"scaling {kind} {preset} D={count}: decision {record['seconds']:.2f}s, {record['ledger_flops']:.3g} "
                f"FLOPs (wall {record['wall_s']:.1f}s)"
            )
    if not any(out["op_mix_runs"].values()) and not any(out["olmix_reuse_runs"].values()):
        raise RuntimeError(f"no scaling point could be measured: {out['skipped']}")
    errors = [s for s in out["skipped"] if s["reason"].startswith("error")]
    if errors:
        out["errors"] = errors
    return out


def plot_scaling(result: dict, path: str) -> str | None:
    part = result.get("parts", {}).get("scaling", {})
    if not any(part.get("op_mix_runs", {}).values()) and not any(part.get("olmix_reuse_runs", {}).values()):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    from hf_datamix.plots import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.5))
    titles = {"op_mix": "op_mix: one decision (pretraining schedule)", "olmix_reuse": "olmix_reuse: one reuse step"}
    pieces = {
        "op_mix": [
            ("probe_training_s", "probes", ":"),
            ("candidate_scoring_s", "candidates", "--"),
            ("law_fit_and_proposal_s", "law + proposal", "-."),
        ],
        "olmix_reuse": [("proxy_runs_s", "proxies", ":"), ("law_fit_and_proposal_s", "law + proposal", "-.")],
    }
    for ax, kind in zip(axes, ("op_mix", "olmix_reuse")):
        ticks = set()
        for i, (preset, runs) in enumerate(part.get(f"{kind}_runs", {}).items()):
            color = f"C{i}"
            if runs:
                xs = [r["domains"] for r in runs]
                ticks.update(xs)
                ax.plot(xs, [r["seconds"] for r in runs], marker="o", color=color, label=f"{preset}: decision total")
                for field, label, style in pieces[kind]:
                    if all(field in r for r in runs):
                        ax.plot(
                            xs,
                            [r[field] for r in runs],
                            linestyle=style,
                            color=color,
                            alpha=0.6,
                            label=f"{preset}: {label}",
                        )
            projected = [
                (s["domains"], s["projected_s"])
                for s in part.get("skipped", [])
                if s["kind"] == kind and s["preset"] == preset and s.get("projected_s")
            ]
            if projected:
                ticks.update(d for d, _ in projected)
                ax.scatter(
                    *zip(*projected),
                    marker="o",
                    facecolors="none",
                    edgecolors=color,
                    label=f"{preset}: skipped, projected wall",
                )
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        if ticks:
            ax.set_xticks(sorted(ticks))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("number of domains")
        ax.set_ylabel("seconds")
        ax.set_title(titles[kind], fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(
        f"{result.get('device', '')}, commit {str(result.get('commit', ''))[:10]}: seconds of one decision "
        "(model size = trained model for op_mix, proxy preset for olmix)",
        fontsize=9,
    )
    return save_figure(fig, path)
