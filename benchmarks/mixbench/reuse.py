"""Olmix's mixture reuse at scale (issue 19): arms over a sequence of domain-set updates, targets from scratch.

The set's update sequence (:mod:`.updates`) makes stages 0..K.  At every stage each arm proposes a mixture
with the library's ``olmix_reuse`` strategy (its ``reuse`` setting: ``recompute``, a fresh swarm over every
domain at every update; ``full``; ``partial``, reopening the update's hand-chosen ``reopen`` domains; ``auto``)
from its own previous decision, and a target of the run shape is trained from scratch on that mixture and
scored on the test split (the last stage on every seed, the others on the first).  ``natural`` trains the
token-proportional mixture.  Stage 0 is one decision shared by the Olmix arms (they differ only at updates).

Units (a store like the other commands): ``decision/<chain>/<stage>`` (the strategy's decision: plan, law
fit, proposal, its state for the next stage), ``proxy/<chain>/<stage>/<i>`` (one swarm member trained from
scratch at the proxy *rung*, scored on the decision split: the same recipe as the transfer ladder's proxies)
and ``target/<arm>/<stage>/<seed>``.  A decision's members are known once its previous decision is in, so
workers share the units through a :class:`~.runner.Board`: each takes the next unit whose inputs are done
(decisions, then proxies, then targets).  The strategy gets its members from the finished proxy units
through the ``mixbench_stored_swarm`` simulator (``proxy_swarm`` with its members served, not trained).

``single_reopens`` (optional, costly: a swarm and a target per domain and seed) adds, at the last update,
partial reuse from ``auto``'s previous decision reopening one unaffected domain at a time, for comparing
auto's choice with the best single reopen.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any, ClassVar

import numpy as np

from hf_datamix.simulate.proxy_swarm import ProxySwarm, SwarmResult

from .common import DATA_DIR, SETS, Shape, tokenizer
from .reuse_report import plot, report, report_inputs  # noqa: E402,F401  (this kind's report)
from .runner import Board, Budget, WorkerFile, run_ready
from .transfer import non_embedding_parameters, proxy_shape, train_and_score
from .updates import SEQUENCES, affected, check, stage_names, stages


#: The arms: the Olmix ones are ``olmix_reuse``'s ``reuse`` modes.
ARMS = ("natural", "recompute", "full", "partial", "auto")
OLMIX_ARMS = ARMS[1:]
#: The rung of a shape when neither ``--rung`` nor a transfer result with ρ >= 0.8 gives one.
DEFAULT_RUNGS = {"gpu": ("5m_1x", "5m", 1.0), "tiny": ("tiny_0.0003x", "tiny", 0.0003)}
MIN_SPEARMAN = 0.8
STORED = "mixbench_stored_swarm"
AUTO_MAX_REOPEN = 2  # hf_datamix.reuse.plan_reuse's default max_reopen (the cost estimate's bound)
POLL_S = 2.0


class MembersPending(Exception):
    """A decision's swarm members not yet trained: ``members`` is ``[(proxy key, mixture)]``."""

    def __init__(self, members):
        super().__init__(f"{len(members)} swarm members pending")
        self.members = members


class StoredSwarm(ProxySwarm):
    """``proxy_swarm`` whose members come from finished ``proxy/...`` units (set :attr:`prefix`, :attr:`results`)."""

    name = STORED
    description = "mixbench: proxy_swarm with its members read from the benchmark's store."
    prefix: str = ""
    results: dict = {}
    #: size every swarm at the fewest runs the law accepts (its coordinates + 1): CPU checks only
    minimal: bool = False

    def simulate(self, context, around, candidates=None, groups=None):
        if self.minimal:
            grouped = {member for ratios in (groups or {}).values() for member in ratios}
            self.config.swarm_size = len(groups or {}) + sum(n not in grouped for n in context.domains.names) + 1
        return super().simulate(context, around, candidates=candidates, groups=groups)

    def train_members(self, context, mixtures):
        from hf_datamix import Mixture

        keys = [f"{self.prefix}/{i}" for i in range(len(mixtures))]
        missing = [(k, m.to_dict()) for k, m in zip(keys, mixtures) if k not in self.results]
        if missing:
            raise MembersPending(missing)
        for key, mixture in zip(keys, mixtures):
            if not Mixture(self.results[key]["weights"]).allclose(mixture, atol=1e-9):
                raise ValueError(f"{key} was trained on another mixture; the store does not fit this code.")
        names = context.domains.names
        rows = np.array([self.results[k]["scores"] for k in keys])
        ratios = np.array([m.to_array(names) for m in mixtures])
        return (
            SwarmResult(names, names, ratios, rows, 0, len(keys)),
            {"proxy_runs": len(keys), "members": keys, "proxy": "the rung of the benchmark's settings"},
        )


def _register() -> None:
    from hf_datamix.simulate.base import SIMULATORS

    if STORED not in SIMULATORS:
        SIMULATORS.register(STORED, StoredSwarm)


@dataclass
class ReuseScalePlan:
    """The arms over ``set_name``'s update sequence; targets of ``shape``, proxies at ``rung``."""

    set_name: str
    seeds: tuple[int, ...] = (0, 1)
    shape: Shape = field(default_factory=Shape)
    rung: tuple[str, str, float] = DEFAULT_RUNGS["gpu"]
    proxy_learning_rate: float = 3e-3
    single_reopens: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    #: every swarm's size (None: Olmix's, 5m for a whole set, 3(m+1) at an update; 0: the fewest runs the law
    #: accepts, coordinates + 1, and 16 starts of its fit: CPU checks only)
    swarm_size: int | None = None
    kind: ClassVar[str] = "reuse"
    extensible: ClassVar[tuple[str, ...]] = ("seeds", "single_reopens")

    def __post_init__(self):
        if self.set_name not in SEQUENCES:
            raise ValueError(f"set {self.set_name!r} has no update sequence; sets with one: {sorted(SEQUENCES)}.")
        check(self.set_name)
        self.domains = tuple(self.domains or SETS[self.set_name])
        self.seeds = tuple(int(s) for s in self.seeds)
        if len(self.seeds) < 2:
            raise ValueError(f"seeds={self.seeds}: the last update needs >= 2 seeds (an interval over seeds).")
        self.rung = (str(self.rung[0]), str(self.rung[1]), float(self.rung[2]))
        self.names = stage_names(self.set_name)
        self.updates = SEQUENCES[self.set_name].updates
        last = self.updates[-1]
        candidates = [n for n in self.names[-1] if n not in affected(last)]
        wanted = candidates if tuple(self.single_reopens) == ("all",) else list(self.single_reopens)
        bad = [n for n in wanted if n not in candidates]
        if bad:
            raise ValueError(
                f"single_reopens {bad}: not unaffected domains of the last update ({candidates}); or 'all'."
            )
        self.single_reopens = tuple(wanted)

    @property
    def last(self) -> int:
        return len(self.updates)

    def proxy(self) -> Shape:
        return proxy_shape(self.shape, self.rung[1], self.rung[2])

    def settings(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "set_name": self.set_name,
            "seeds": list(self.seeds),
            "shape": asdict(self.shape),
            "rung": list(self.rung),
            "proxy_learning_rate": self.proxy_learning_rate,
            "single_reopens": list(self.single_reopens),
            "domains": list(self.domains),
            "swarm_size": self.swarm_size,
            "proxy_steps": self.proxy().steps,
            "sequence": SEQUENCES[self.set_name].to_dict(),
            "arms": {a: self.strategy_settings(a, 1) if a != "natural" else "token-proportional" for a in ARMS},
        }

    # -- the unit graph ----------------------------------------------------------------------------
    def chains(self, stage: int) -> list[str]:
        """Decision chains at ``stage``: one shared ``olmix`` at 0, then the Olmix arms (and single reopens)."""
        if stage == 0:
            return ["olmix"]
        return list(OLMIX_ARMS) + ([f"single:{d}" for d in self.single_reopens] if stage == self.last else [])

    def previous(self, chain: str, stage: int) -> str | None:
        """The decision a chain's decision at ``stage`` continues from."""
        if stage == 0:
            return None
        if stage == 1:
            return "decision/olmix/0"
        return f"decision/{'auto' if chain.startswith('single:') else chain}/{stage - 1}"

    def seeds_at(self, stage: int) -> tuple[int, ...]:
        return self.seeds if stage == self.last else self.seeds[:1]

    def decision_keys(self) -> list[str]:
        return [f"decision/{c}/{k}" for k in range(self.last + 1) for c in self.chains(k)]

    def target_keys(self) -> list[str]:
        return [
            f"target/{arm}/{k}/{seed}"
            for k in range(self.last + 1)
            for seed in self.seeds_at(k)
            for arm in ["natural", *self.chains(k)]
        ]

    def unit_keys(self) -> list[str]:
        return self.decision_keys() + self.target_keys()

    def strategy_settings(self, chain: str, stage: int) -> dict[str, Any]:
        """``olmix_reuse``'s settings for ``chain``'s decision at ``stage`` (proxy settings for the record)."""
        preset, steps = self.rung[1], self.proxy().steps
        out = {
            "simulator": STORED,
            "proxy_preset": preset,
            "proxy_steps": steps,
            "proxy_batch_size": self.shape.batch_size,
            "proxy_learning_rate": self.proxy_learning_rate,
            "proxy_eval_blocks": self.shape.decision_blocks,
            "reuse": "full",
        }
        if self.swarm_size:  # (0: StoredSwarm.minimal)
            out["swarm_size"] = self.swarm_size
        if self.swarm_size == 0:  # a CPU check: fewer random starts of the law's fit
            out["law_starts"] = 16
        if chain.startswith("single:"):
            out.update(reuse="partial", reopen=[chain.split(":", 1)[1]])
        elif chain != "olmix":
            out["reuse"] = chain
            if chain == "partial" and stage:
                out["reopen"] = list(self.updates[stage - 1].reopen)
        return out

    # -- costs (target-step equivalents) -------------------------------------------------------------
    def members_of(self, chain: str, stage: int) -> int:
        """Olmix's swarm size of a decision (``auto``: at most :data:`AUTO_MAX_REOPEN` reopened, assumed)."""
        from hf_datamix.swarm import default_swarm_size

        minimal = self.swarm_size == 0
        if chain in ("olmix", "recompute"):
            m = len(self.names[stage])
            return m + 1 if minimal else self.swarm_size or default_swarm_size(m, initial=True)
        update = self.updates[stage - 1]
        if update.kind == "remove":
            return 0
        reopened = {"full": 0, "partial": len(update.reopen), "auto": AUTO_MAX_REOPEN}.get(chain, 1)
        m = 1 + len(affected(update)) + reopened
        return m + 1 if minimal else self.swarm_size or default_swarm_size(m)

    def proxy_cost(self) -> float:
        # Small models use the GPU less well: a proxy step counts at no less than a tenth of a target's.
        return self.proxy().steps * max(
            0.1, non_embedding_parameters(self.rung[1]) / non_embedding_parameters(self.shape.preset)
        )

    def units(self) -> list[tuple[str, float]]:
        out = []
        for key in self.decision_keys():
            out.append((key, self.members_of(*_chain_stage(key)) * self.proxy_cost()))
        return out + [(key, float(self.shape.steps)) for key in self.target_keys()]

    def estimate(self, seconds_per_step: float = 0.055, overhead_s: float = 20.0) -> dict[str, Any]:
        """Planned units and GPU seconds: the units' costs (target steps; a 20M step ≈ 0.055 s compiled on an H200,
        1.2 M tokens/s) plus ``overhead_s`` per trained unit (model build, compile, scoring); swarm sizes as
        :meth:`members_of` estimates them."""
        proxies = sum(self.members_of(*_chain_stage(k)) for k in self.decision_keys())
        targets = len(self.target_keys())
        steps = proxies * self.proxy_cost() + targets * self.shape.steps
        return {
            "targets": targets,
            "proxies": proxies,
            "decisions": len(self.decision_keys()),
            "proxy_steps": self.proxy().steps,
            "proxy_cost_in_target_steps": self.proxy_cost(),
            "gpu_seconds": steps * seconds_per_step + (proxies + targets) * overhead_s,
            "assumed": {"seconds_per_target_step": seconds_per_step, "overhead_s_per_unit": overhead_s},
        }


def _chain_stage(key: str) -> tuple[str, int]:
    _, chain, stage = key.split("/")
    return chain, int(stage)


def choose_rung(transfer: dict | None, set_name: str, shape: str) -> tuple[tuple[str, str, float], str]:
    """The cheapest rung with Spearman >= 0.8 in the transfer results (this set's first, else any set's)."""
    default = DEFAULT_RUNGS.get(shape, DEFAULT_RUNGS["gpu"])
    if not transfer:
        return (
            default,
            f"no transfer results file: the default rung {default[0]} ({default[1]} at {default[2]:g}x Chinchilla)",
        )
    sets = transfer.get("domain_sets", {})
    for name in [set_name] + [s for s in sets if s != set_name]:
        rungs = [
            r
            for r in sets.get(name, {}).get("rungs", [])
            if (r.get("spearman") or -1) >= MIN_SPEARMAN and r.get("compute_fraction") is not None
        ]
        if rungs:
            best = min(rungs, key=lambda r: r["compute_fraction"])
            return (
                (best["name"], best["preset"], float(best["chinchilla_multiple"])),
                f"the cheapest rung with Spearman >= {MIN_SPEARMAN} on set {name!r} in the transfer results: "
                f"{best['name']} (Spearman {best['spearman']:.2f}, {best['compute_fraction']:.2%} of a target run)",
            )
    return default, (f"no rung of the transfer results reaches Spearman {MIN_SPEARMAN}: the default rung {default[0]}")


# ---------------------------------------------------------------------------------- one worker
#: main hands a worker of this kind every pending unit and the store's finished ones (units depend on units).
DEPENDENT_UNITS = True


class Stages:
    """The stages' DomainSets, updates and packed token counts, and the units' work on them."""

    def __init__(self, plan: ReuseScalePlan, work: str, data_dir: str, unpacked: str | None):
        from hf_datamix import DomainSet
        from hf_datamix.data.blocks import pack_domains

        from .common import run_args

        _register()
        self.plan, self.work, self.tok = plan, work, tokenizer()
        self.sets, self.updates = stages(plan.set_name, unpacked or work, data_dir)
        args = run_args(plan.shape, os.path.join(work, "pack"), 0)
        packed: dict[tuple, tuple] = {}  # (name, train file) -> (the spec with its splits loaded, tokens)
        self.counts, loaded = [], []
        for domains in self.sets:
            for spec in domains:
                key = (spec.name, str(spec.train))
                if key not in packed:
                    # Loaded once: a trainer given file paths loads every split again (datasets' load_dataset,
                    # ~10 ms each), over a stage's ~19 domains a third of a tiny unit's time.  Same files, same
                    # fingerprints: the packed-block cache serves the trainers as before.
                    train, evaluation = spec.load()
                    ready = replace(spec, train=train, eval=evaluation)
                    packed[key] = (ready, pack_domains(DomainSet([ready]), self.tok, args).token_counts[spec.name])
            self.counts.append({s.name: packed[(s.name, str(s.train))][1] for s in domains})
            loaded.append(DomainSet([packed[(s.name, str(s.train))][0] for s in domains]))
        self.sets = loaded
        self.members: dict[str, list] = {}  # decision key -> its swarm's [(proxy key, mixture)]

    def decide(self, chain: str, stage: int, results: dict[str, Any]):
        """``olmix_reuse``'s decision (a Decision and the strategy), or MembersPending with the missing members."""
        from hf_datamix import ComputeLedger, Mixture
        from hf_datamix.strategies.base import DecisionContext
        from hf_datamix.strategies.registry import create_strategy

        plan = self.plan
        strategy = create_strategy("olmix_reuse", plan.strategy_settings(chain, stage))
        previous = results.get(plan.previous(chain, stage)) if stage else None
        if previous:
            strategy.load_state_dict(previous["state"])
        strategy.simulator.prefix, strategy.simulator.results = f"proxy/{chain}/{stage}", results
        strategy.simulator.minimal = plan.swarm_size == 0
        context = DecisionContext(
            step=0,
            max_steps=plan.shape.steps,
            stage=stage,
            domains=self.sets[stage],
            token_counts=self.counts[stage],
            previous_mixture=Mixture(previous["mixture"]) if previous else None,
            update=self.updates[stage - 1] if stage else None,
            ledger=ComputeLedger(),
            max_repetitions=plan.shape.max_repetitions,
            remaining_tokens=plan.shape.steps * plan.shape.tokens_per_step,
        )
        return strategy.decide(context), strategy

    def swarm(self, key: str, results: dict[str, Any]) -> list:
        """The members ``[(proxy key, mixture)]`` of decision ``key`` (its previous decision done)."""
        if key not in self.members:
            _, chain, stage = key.split("/")
            try:
                self.decide(chain, int(stage), {k: v for k, v in results.items() if not k.startswith("proxy/")})
                self.members[key] = []  # a removal: no runs
            except MembersPending as pending:
                self.members[key] = pending.members
        return self.members[key]

    def decision_unit(self, key: str, results: dict[str, Any]) -> dict[str, Any]:
        _, chain, stage = key.split("/")
        started = time.perf_counter()
        decision, strategy = self.decide(chain, int(stage), results)
        details = decision.details
        members = details.get("members", [])
        return {
            "chain": chain,
            "stage": int(stage),
            "mixture": decision.mixture.to_dict(),
            "state": strategy.state_dict(),
            "plan": details.get("reuse"),
            "members": members,
            "proxy_runs": len(members),
            "proxy_runs_total": strategy.proxy_runs,
            "proposal": {k: details.get("proposal", {}).get(k) for k in ("predicted", "status", "fallback_reason")},
            "fit": details.get("fit"),
            "seconds": time.perf_counter() - started,
        }

    def proxy_unit(self, key: str, weights: dict[str, float]) -> dict[str, Any]:
        stage = int(key.split("/")[2])
        value = train_and_score(
            self.plan.proxy(),
            self.plan.proxy_learning_rate,
            0,
            weights,
            self.sets[stage],
            self.tok,
            os.path.join(self.work, "runs", key.replace("/", "-")),
            "decision",
        )
        return {**value, "rung": list(self.plan.rung)}

    def target_unit(self, key: str, results: dict[str, Any]) -> dict[str, Any]:
        from hf_datamix import Mixture

        _, arm, stage, seed = key.split("/")
        k = int(stage)
        weights = (
            Mixture.proportional(self.counts[k]).to_dict()
            if arm == "natural"
            else results[f"decision/{arm}/{k}"]["mixture"]
        )
        shape = self.plan.shape
        value = train_and_score(
            shape,
            shape.learning_rate,
            int(seed),
            weights,
            self.sets[k],
            self.tok,
            os.path.join(self.work, "runs", key.replace("/", "-")),
            "test",
        )
        return {**value, "arm": arm, "stage": k, "seed": int(seed), "domains": self.sets[k].names}


def _ready(plan: ReuseScalePlan, st: Stages, wanted: set[str], results: dict[str, Any]) -> list[tuple]:
    """``[(key, cost, job)]`` of the units whose inputs are done: decisions, then proxies, then targets."""
    costs = dict(plan.units())
    decisions, proxies, targets = [], [], []
    for key in plan.decision_keys():
        if key in results or key not in wanted:
            continue
        before = plan.previous(*_chain_stage(key))
        if before and before not in results:
            continue
        members = st.swarm(key, results)
        missing = [(p, w) for p, w in members if p not in results]
        if not missing:
            decisions.append((key, 0.0, lambda key=key: st.decision_unit(key, results)))
        proxies += [(p, plan.proxy_cost(), lambda p=p, w=w: st.proxy_unit(p, w)) for p, w in missing]
    for key in plan.target_keys():
        if key in results or key not in wanted:
            continue
        _, arm, stage, _ = key.split("/")
        if arm == "natural" or f"decision/{arm}/{stage}" in results:
            targets.append((key, costs[key], lambda key=key: st.target_unit(key, results)))
    return decisions + proxies + targets


def run_worker(
    plan: ReuseScalePlan,
    keys: list[str],
    work: str,
    out: WorkerFile,
    budget: Budget,
    data_dir: str = DATA_DIR,
    unpacked: str | None = None,
    done: dict | None = None,
) -> None:
    """Take ready units until every one of ``keys`` (and the proxies they need) is done or none fits the budget."""
    st = Stages(plan, work, data_dir, unpacked)
    wanted = set(keys)

    def show(key, value):
        if "mean" in value:
            return f"mean {value['split']} loss {value['mean']:.4f}"
        return f"{value['proxy_runs']} members, plan {value['plan'] and value['plan']['compute']}"

    run_ready(
        Board(os.path.dirname(out.path), done),
        lambda results: _ready(plan, st, wanted, results),
        out,
        budget,
        show,
        POLL_S,
    )


def prepare(plan: ReuseScalePlan, scratch: str, data_dir: str) -> dict[str, Any]:
    """Derive and pack every stage's domains once before the workers start (they then read the cache)."""
    st = Stages(plan, os.path.join(scratch, "prepare-reuse"), data_dir, scratch)
    return {"stage_token_counts": st.counts}
