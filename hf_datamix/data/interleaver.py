"""The Interleaver: an IterableDataset that draws every block's domain from the current weights.

Design (see ``design.md``):

* **One global sequence.**  Sample ``i`` of the whole job (all ranks, all workers) has a domain
  drawn from the weights in force at ``i`` with a counter-based random number (seed, i), and takes
  the next block of that domain (a per-domain cursor through a per-epoch permutation).  The
  sequence is a pure function of the seed and the *weight schedule* (a list of ``(start_sample,
  weights)``), so it can be re-created anywhere: exact resume needs only the schedule and the
  number of samples consumed, and every rank agrees on it.
* **Ranks and workers** each compute the whole sequence (cheap: draws only) and materialise only
  the samples they deliver: the stream is cut into chunks of ``chunk_size`` samples (one global
  batch under accelerate's ``IterableDatasetShard``, one micro-batch under batch dispatching);
  DataLoader worker ``w`` of ``W`` delivers chunks ``w, w+W, ...``, the order in which the
  DataLoader reads its workers.
* **Weight changes** are appended to a schedule held in shared memory, so DataLoader workers see
  them.  Workers never read past a *horizon* (the first sample whose weights are not decided yet):
  they wait there until the main process publishes the decision, so prefetching never delivers a
  stale weight.
* **Repetition caps**: a domain stops being drawn after ``max_repetitions`` epochs over its blocks;
  its weight is redistributed over the others (``on_exhausted="redistribute"``), or iteration stops
  (``"stop"``), or an error is raised (``"error"``).  The event is logged and reported.
"""

from __future__ import annotations

import logging
import math
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..mixture import Mixture


logger = logging.getLogger(__name__)

_RNG_CHUNK = 1 << 15  # draws generated per counter-based RNG call
_SIM_CHUNK = 1 << 12  # samples simulated per vectorised step
_NO_HORIZON = np.iinfo(np.int64).max
EXHAUSTION_ACTIONS = ("redistribute", "stop", "error")


class DomainsExhausted(RuntimeError):
    """Raised when every domain has reached its repetition cap (or one has, with on_exhausted='error')."""


@dataclass
class ExhaustionEvent:
    """A domain reached its repetition cap at global sample ``sample``."""

    domain: str
    sample: int
    epochs: float
    action: str

    def to_dict(self) -> dict[str, Any]:
        return {"domain": self.domain, "sample": self.sample, "epochs": self.epochs, "action": self.action}


@dataclass
class _SimState:
    """Position of a simulation of the global sequence: cursors and exhausted domains at ``sample``."""

    sample: int
    cursors: np.ndarray
    exhausted: np.ndarray
    events: list = field(default_factory=list)
    #: Why the sequence ended (all domains dry, or one with on_exhausted "stop"/"error"); None while it goes on.
    ended: str | None = None


class WeightSchedule:
    """Append-only ``(start_sample, weights)`` table in shared memory, plus the horizon."""

    def __init__(self, num_domains: int, capacity: int = 4096):
        self.starts = torch.zeros(capacity, dtype=torch.int64).share_memory_()
        self.weights = torch.zeros(capacity, num_domains, dtype=torch.float64).share_memory_()
        self.length = torch.zeros(1, dtype=torch.int64).share_memory_()
        self.horizon = torch.full((1,), _NO_HORIZON, dtype=torch.int64).share_memory_()

    def append(self, start: int, weights: np.ndarray) -> None:
        n = int(self.length[0])
        if n and start < int(self.starts[n - 1]):
            raise ValueError(f"weight schedule: start {start} is before the last entry's {int(self.starts[n - 1])}.")
        if n and start == int(self.starts[n - 1]):
            n -= 1  # a new decision for the same sample replaces the old one
        if n >= self.starts.numel():
            raise RuntimeError(f"weight schedule is full ({self.starts.numel()} changes); raise its capacity.")
        self.weights[n] = torch.from_numpy(np.asarray(weights, dtype=np.float64))
        self.starts[n] = start
        self.length[0] = n + 1  # published last: readers only look at the first `length` rows

    def entries(self) -> tuple[np.ndarray, np.ndarray]:
        n = int(self.length[0])
        return self.starts[:n].numpy().copy(), self.weights[:n].numpy().copy()


class Interleaver(IterableDataset):
    """Mixes per-domain block sources by the current weights (see the module docstring).

    Args:
        sources: ``{domain: source}``; a source has ``num_blocks`` (None if unknown), ``block_size``
            and ``block(index, epoch)``, which returns a token array
            (:class:`~hf_datamix.data.packing.PackedBlocks`, :class:`~hf_datamix.data.streaming.StreamingBlocks`)
            or a whole example dict (:class:`~hf_datamix.data.examples.ExampleSource`, SFT), delivered as is.
        mixture: initial weights (must name exactly the domains of ``sources``).
        seed: seeds the domain draws and the per-epoch block permutations.
        max_repetitions: epochs over a domain's blocks before it runs dry: one number for all, a
            ``{domain: epochs}`` map, or None for no cap.
        on_exhausted: ``"redistribute"``, ``"stop"`` or ``"error"`` when a domain runs dry.
        segments_per_block: 1 keeps every block inside one domain; ``s > 1`` builds each block from
            ``s`` independently drawn segments (sources must then hold segments of ``block_size/s``).
        shuffle: visit a domain's blocks in a new random order each epoch (a stream's first epoch is read in
            stream order).
    """

    def __init__(
        self,
        sources: Mapping[str, Any],
        mixture: Mixture,
        seed: int = 0,
        max_repetitions: float | Mapping[str, float] | None = None,
        on_exhausted: str = "redistribute",
        segments_per_block: int = 1,
        shuffle: bool = True,
    ):
        if not sources:
            raise ValueError("Interleaver needs at least one domain source.")
        if on_exhausted not in EXHAUSTION_ACTIONS:
            raise ValueError(f"on_exhausted={on_exhausted!r}; use one of {list(EXHAUSTION_ACTIONS)}.")
        if segments_per_block < 1:
            raise ValueError(f"segments_per_block={segments_per_block}; it must be >= 1.")
        self.domains = list(sources)
        self.sources = dict(sources)
        sizes = {source.block_size for source in self.sources.values()}
        if len(sizes) != 1:
            raise ValueError(f"all domain sources must have one block size, got {sorted(sizes)}.")
        self.segment_size = sizes.pop()
        if segments_per_block > 1 and any(getattr(src, "yields_examples", False) for src in self.sources.values()):
            raise ValueError(
                f"segments_per_block={segments_per_block} needs token-block sources; example sources (SFT) are "
                "delivered whole: use segments_per_block=1."
            )
        self.segments_per_block = segments_per_block
        self.block_size = self.segment_size * segments_per_block
        self.seed = int(seed)
        self.shuffle = shuffle
        self.on_exhausted = on_exhausted
        self.caps = self._caps(max_repetitions)
        self.max_repetitions = max_repetitions
        self.schedule = WeightSchedule(len(self.domains))
        self.schedule.append(0, self._vector(mixture))
        self.start_sample = 0
        self.chunk_size = 1
        #: Log a domain running dry while iterating (DataMixTrainer turns this off: its callback logs with the step).
        self.log_exhaustion = True
        #: Domains whose sources read ahead a chunk at a time (streams).
        self._prefetching = [i for i, name in enumerate(self.domains) if hasattr(self.sources[name], "prefetch")]
        self._keys = np.array([zlib.crc32(name.encode()) for name in self.domains], dtype=np.uint64)
        self._sim: _SimState | None = None
        self._perm_cache: dict[tuple[int, int], np.ndarray] = {}
        self._rng_cache: tuple[int, np.ndarray] | None = None

    # -- configuration --------------------------------------------------------------------------
    def _caps(self, max_repetitions) -> np.ndarray:
        caps = np.full(len(self.domains), np.iinfo(np.int64).max, dtype=np.int64)
        if max_repetitions is None:
            return caps
        per_domain = (
            dict(max_repetitions)
            if isinstance(max_repetitions, Mapping)
            else dict.fromkeys(self.domains, max_repetitions)
        )
        unknown = [name for name in per_domain if name not in self.domains]
        if unknown:
            raise ValueError(f"max_repetitions names unknown domains {unknown}; domains are {self.domains}.")
        for i, name in enumerate(self.domains):
            epochs = per_domain.get(name)
            if epochs is None:
                continue
            if not (isinstance(epochs, (int, float)) and epochs > 0 and math.isfinite(epochs)):
                raise ValueError(f"max_repetitions for {name!r} is {epochs!r}; use a positive number of epochs.")
            blocks = self.sources[name].num_blocks
            if blocks is None:
                logger.warning("Domain %r has an unknown size (streaming, no num_tokens): no repetition cap.", name)
                continue
            caps[i] = max(1, int(epochs * blocks))
        return caps

    def _vector(self, mixture: Mixture) -> np.ndarray:
        if set(mixture) != set(self.domains):
            raise ValueError(
                f"mixture domains {sorted(mixture)} do not match the interleaver's domains {sorted(self.domains)}."
            )
        return mixture.to_array(self.domains)

    @property
    def samples_per_unit(self) -> int:
        return self.segments_per_block

    def set_weights(self, mixture: Mixture, from_sample: int) -> None:
        """Use ``mixture`` from global sample ``from_sample`` on (must not be before the last change)."""
        self.schedule.append(int(from_sample) * self.segments_per_block, self._vector(mixture))

    def set_horizon(self, sample: int | None) -> None:
        """Workers may not produce sample ``sample`` or later until the horizon moves (None: no limit)."""
        self.schedule.horizon[0] = _NO_HORIZON if sample is None else int(sample)

    def weights_at(self, sample: int) -> Mixture:
        """The weights scheduled for global sample ``sample``."""
        starts, weights = self.schedule.entries()
        row = int(np.searchsorted(starts, sample * self.segments_per_block, side="right")) - 1
        return Mixture.from_array(self.domains, weights[row])

    # -- state ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        starts, weights = self.schedule.entries()
        return {
            "seed": self.seed,
            "domains": list(self.domains),
            "segments_per_block": self.segments_per_block,
            "schedule": [
                [int(s), {name: float(w) for name, w in zip(self.domains, row)}] for s, row in zip(starts, weights)
            ],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the seed and weight schedule written by :meth:`state_dict`."""
        if list(state["domains"]) != self.domains:
            raise ValueError(
                f"interleaver state is for domains {state['domains']}, this interleaver has {self.domains}; "
                "resume with the same domains (in the same order)."
            )
        self.seed = int(state["seed"])
        self.schedule.length[0] = 0
        for start, weights in state["schedule"]:
            self.schedule.append(int(start), self._vector(Mixture(weights)))
        self._sim, self._perm_cache, self._rng_cache = None, {}, None

    # -- the global sequence --------------------------------------------------------------------
    def _uniforms(self, start: int, stop: int) -> np.ndarray:
        out = np.empty(stop - start)
        pos = start
        while pos < stop:
            chunk = pos // _RNG_CHUNK
            if self._rng_cache is None or self._rng_cache[0] != chunk:
                self._rng_cache = (chunk, np.random.default_rng([self.seed, 0x1D0, chunk]).random(_RNG_CHUNK))
            lo = pos - chunk * _RNG_CHUNK
            take = min(stop - pos, _RNG_CHUNK - lo)
            out[pos - start : pos - start + take] = self._rng_cache[1][lo : lo + take]
            pos += take
        return out

    def _permutation(self, domain: int, epoch: int) -> np.ndarray | None:
        source = self.sources[self.domains[domain]]
        size = source.num_blocks
        # A stream's first epoch is taken in stream order: asking a forward-only reader for block
        # perm[0] first would read the stream up to it.  Later epochs come from its spill.
        if not self.shuffle or size is None or (epoch == 0 and getattr(source, "sequential", False)):
            return None
        key = (domain, epoch)
        perm = self._perm_cache.get(key)
        if perm is None:
            if len(self._perm_cache) > 4 * len(self.domains):
                self._perm_cache.clear()
            perm = np.random.default_rng([self.seed, int(self._keys[domain]), epoch]).permutation(size)
            self._perm_cache[key] = perm
        return perm

    def _fresh_sim(self) -> _SimState:
        n = len(self.domains)
        return _SimState(0, np.zeros(n, dtype=np.int64), np.zeros(n, dtype=bool))

    def plan(self, start: int, stop: int, sim: _SimState | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Domains and per-domain draw counts (cursors) of units ``[start, stop)`` of the sequence.

        A unit is one segment (one block when ``segments_per_block == 1``).  Advances ``sim``
        (a fresh simulation from 0 when None and ``start`` is behind the cached one).
        """
        if sim is None:
            if self._sim is None or self._sim.sample > start:
                self._sim = self._fresh_sim()
            sim = self._sim
        if sim.sample > start:
            raise ValueError(f"plan: simulation is at {sim.sample}, past the requested start {start}.")
        if sim.sample < start:
            self._advance(sim, start, record=None)
            if sim.sample < start:
                return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
        domains = np.empty(stop - start, dtype=np.int64)
        cursors = np.empty(stop - start, dtype=np.int64)
        self._advance(sim, stop, record=(domains, cursors, start))
        planned = sim.sample - start  # shorter than asked when the sequence ended
        return domains[:planned], cursors[:planned]

    def _advance(self, sim: _SimState, stop: int, record) -> None:
        starts, table = self.schedule.entries()
        while sim.sample < stop and sim.ended is None:
            row = int(np.searchsorted(starts, sim.sample, side="right")) - 1
            end = stop if row + 1 >= len(starts) else min(stop, int(starts[row + 1]))
            end = min(end, sim.sample + _SIM_CHUNK)
            weights = np.where(sim.exhausted, 0.0, table[row])
            total = weights.sum()
            if total <= 0:
                names = [self.domains[i] for i in np.flatnonzero(table[row] > 0)]
                sim.ended = (
                    f"every domain with a positive weight ({names}) has reached its repetition cap at sample "
                    f"{sim.sample // self.segments_per_block}; add data, raise max_repetitions, or train fewer steps."
                )
                break
            cdf = np.cumsum(weights / total)
            cdf[-1] = 1.0
            draws = np.searchsorted(cdf, self._uniforms(sim.sample, end), side="right")
            draws = np.minimum(draws, len(self.domains) - 1)
            counts = np.bincount(draws, minlength=len(self.domains))
            over = np.flatnonzero(sim.cursors + counts > self.caps)
            if over.size:
                # Cut at the first draw past a cap; the domain is masked from there on.
                cut_positions = [np.flatnonzero(draws == d)[self.caps[d] - sim.cursors[d]] for d in over]
                cut = int(min(cut_positions))
                draws = draws[:cut]
                counts = np.bincount(draws, minlength=len(self.domains))
                end = sim.sample + cut
            # Exactly where each domain reaching its cap in this chunk drew its last allowed unit, so
            # events (and a stop) do not depend on how the simulation was chunked.
            reached = {
                int(d): sim.sample + int(np.flatnonzero(draws == d)[self.caps[d] - sim.cursors[d] - 1]) + 1
                for d in np.flatnonzero((sim.cursors + counts >= self.caps) & ~sim.exhausted)
            }
            if reached and self.on_exhausted in ("error", "stop"):
                end = min(reached.values())  # the sequence ends with the unit that reached the first cap
                draws = draws[: end - sim.sample]
                counts = np.bincount(draws, minlength=len(self.domains))
                reached = {d: at for d, at in reached.items() if at <= end}
            if record is not None and len(draws):
                domains, cursors, offset = record
                lo = sim.sample - offset
                domains[lo : lo + len(draws)] = draws
                for d in np.flatnonzero(counts):
                    mask = draws == d
                    cursors[lo : lo + len(draws)][mask] = sim.cursors[d] + np.arange(counts[d])
            sim.cursors += counts
            sim.sample = end
            for d in sorted(reached, key=reached.get):
                sim.exhausted[d] = True
                self._on_exhausted(sim, d, reached[d])

    def _on_exhausted(self, sim: _SimState, domain: int, unit: int) -> None:
        """Record that ``domain`` reached its cap with unit ``unit - 1`` (the next sample no longer draws it)."""
        name = self.domains[domain]
        blocks = self.sources[name].num_blocks or 1
        sample = -(-unit // self.segments_per_block)  # the first whole sample after that unit
        event = ExhaustionEvent(name, sample, sim.cursors[domain] / blocks, self.on_exhausted)
        sim.events.append(event)
        if self.on_exhausted in ("error", "stop"):
            sim.ended = (
                f"domain {name!r} reached its repetition cap ({event.epochs:.2f} epochs) at sample {event.sample} "
                f"and on_exhausted={self.on_exhausted!r}; add data, raise max_repetitions, or use "
                "on_exhausted='redistribute'."
            )

    def drawn(self, upto_sample: int) -> dict[str, int]:
        """Units (blocks; segments when ``segments_per_block > 1``) each domain gave before global sample ``upto_sample``."""
        sim = self._fresh_sim()
        self._advance(sim, int(upto_sample) * self.segments_per_block, record=None)
        return {name: int(sim.cursors[i]) for i, name in enumerate(self.domains)}

    def units_left(self, from_sample: int) -> dict[str, int | None]:
        """Units each domain can still give from global sample ``from_sample`` before its cap (None: no cap)."""
        drawn = self.drawn(from_sample)
        unlimited = np.iinfo(np.int64).max
        return {
            name: None if self.caps[i] == unlimited else max(0, int(self.caps[i]) - drawn[name])
            for i, name in enumerate(self.domains)
        }

    def exhaustion_events(self, upto_sample: int) -> list[ExhaustionEvent]:
        """Domains that ran dry before global sample ``upto_sample`` (simulated in this process).

        Called every step: the simulation only advances once enough units have passed for some cap
        to be reached (never without caps), then catches up in one vectorised go.
        """
        stop = upto_sample * self.segments_per_block
        if self._sim is None or self._sim.sample > stop:
            self._sim = self._fresh_sim()
        sim = self._sim
        # Each unit draws one domain, so no domain can reach its cap in fewer units than its headroom.
        headroom = (self.caps - sim.cursors)[~sim.exhausted]
        if sim.ended is None and headroom.size and stop - sim.sample >= headroom.min():
            self._advance(sim, stop, record=None)
        return list(sim.events)

    def _segment(self, domain: int, cursor: int) -> np.ndarray:
        source = self.sources[self.domains[domain]]
        size = source.num_blocks
        epoch, index = (0, cursor) if size is None else divmod(cursor, size)
        perm = self._permutation(domain, epoch)
        return source.block(int(index if perm is None else perm[index]), epoch)

    def sample(self, index: int) -> dict[str, torch.Tensor]:
        """Global sample ``index`` (re-simulates when needed; for tests and tools)."""
        s = self.segments_per_block
        domains, cursors = self.plan(index * s, (index + 1) * s, sim=self._fresh_sim())
        return self._make_sample(domains, cursors)

    def _make_sample(self, domains: np.ndarray, cursors: np.ndarray) -> dict[str, torch.Tensor]:
        if len(domains) == 1:
            tokens = self._segment(int(domains[0]), int(cursors[0]))
            if isinstance(tokens, Mapping):  # a whole example (SFT): the collator pads and masks it
                return tokens
        else:
            tokens = np.concatenate([self._segment(int(d), int(c)) for d, c in zip(domains, cursors)])
        ids = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
        return {"input_ids": ids, "labels": ids}

    def domain_sequence(self, start: int, stop: int) -> list[tuple[str, int]]:
        """``(domain, block index)`` of global samples ``[start, stop)`` (first segment of each)."""
        s = self.segments_per_block
        domains, cursors = self.plan(start * s, stop * s, sim=self._fresh_sim())
        out = []
        for d, c in zip(domains[::s], cursors[::s]):
            size = self.sources[self.domains[d]].num_blocks
            epoch, index = (0, int(c)) if size is None else divmod(int(c), size)
            perm = self._permutation(int(d), epoch)
            out.append((self.domains[d], int(index if perm is None else perm[index])))
        return out

    # -- iteration ------------------------------------------------------------------------------
    def __iter__(self):
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        s = self.segments_per_block
        sim = self._fresh_sim()
        chunk = self.chunk_size
        # Plan the sequence a window ahead (the draws are vectorised), never past the horizon.
        window = max(chunk * workers, _SIM_CHUNK // s)
        planned_start = planned_stop = self.start_sample
        domains = cursors = np.empty(0, dtype=np.int64)
        position = self.start_sample + worker * chunk
        logged = 0
        while True:
            end = position + chunk
            if end > planned_stop and sim.ended is None:
                self._wait_for_horizon(end, in_worker=info is not None)
                stop = max(end, min(position + window, int(self.schedule.horizon[0])))
                domains, cursors = self.plan(position * s, stop * s, sim=sim)
                planned_start, planned_stop = position, position + len(domains) // s
            if end > planned_stop:  # the sequence ends inside this chunk (all caps reached)
                if self.on_exhausted == "error":
                    raise DomainsExhausted(sim.ended)
                logger.warning("Interleaver stops: %s", sim.ended)
                return
            if worker == 0 and self.log_exhaustion:
                # Planning runs ahead of training: say a domain ran dry only when the stream reaches it.
                for event in sim.events[logged:]:
                    if event.sample < end:
                        logged += 1
                        logger.warning(
                            "Domain %r ran dry at sample %d (%.2f epochs, its repetition cap); on_exhausted=%r.",
                            event.domain,
                            event.sample,
                            event.epochs,
                            event.action,
                        )
            lo = (position - planned_start) * s
            if self._prefetching:
                self._prefetch(domains[lo : lo + chunk * s], cursors[lo : lo + chunk * s])
            for i in range(chunk):
                a = lo + i * s
                yield self._make_sample(domains[a : a + s], cursors[a : a + s])
            position += workers * chunk

    def _prefetch(self, domains: np.ndarray, cursors: np.ndarray) -> None:
        """Let sequential sources (streams) read a whole chunk's blocks in one go, before it is materialised."""
        for d in self._prefetching:
            if not (domains == d).any():
                continue
            source = self.sources[self.domains[d]]
            size = source.num_blocks
            last = int(cursors[domains == d].max())
            epoch, index = (0, last) if size is None else divmod(last, size)
            # In the first epoch blocks are taken in order, so the chunk needs blocks up to its last
            # cursor; later epochs visit the whole (already read) first pass.
            source.prefetch(index + 1 if epoch == 0 else size)

    def _wait_for_horizon(self, needed: int, in_worker: bool) -> None:
        horizon = int(self.schedule.horizon[0])
        if needed <= horizon:
            return
        if not in_worker:
            raise RuntimeError(
                f"the interleaver was asked for sample {needed - 1} in the main process before the mixture decision "
                f"due at sample {horizon} was taken; this is a bug in the decision schedule, please report it."
            )
        while needed > int(self.schedule.horizon[0]):
            time.sleep(0.002)
