"""Run with `torchrun --nproc_per_node 2` (gloo, CPU): LoRA probes on an FSDP2-sharded model.

Every rank trains the same probe collectively on its half of each global batch, and scores
candidates collectively (each rank a share of the eval batches).  For comparison every rank also
trains and scores, on its own and on the full batches, (a) the same sharded model and (b) an
unsharded copy.  Each rank writes its numbers to ``<out>/rank<r>.json``.
"""

import json
import os
import sys

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from test_lora_probes import VOCAB, tiny_llama  # noqa: E402

from hf_datamix.compute import ComputeLedger  # noqa: E402
from hf_datamix.simulate.lora_probes import LoRAProbeSimulator, ProbeConfig  # noqa: E402


STEPS, GLOBAL_BATCH, LENGTH = 4, 4, 16


def global_batches(seed: int):
    generator = torch.Generator().manual_seed(seed)
    for _ in range(STEPS):
        ids = torch.randint(0, VOCAB, (GLOBAL_BATCH, LENGTH), generator=generator)
        yield {"input_ids": ids, "labels": ids.clone()}


def my_half(batches, rank: int, world: int):
    share = GLOBAL_BATCH // world
    for batch in batches:
        yield {key: value[rank * share : (rank + 1) * share] for key, value in batch.items()}


def sharded(model, **kwargs):
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh, **kwargs)
    fully_shard(model, mesh=mesh, **kwargs)
    return model


def train_after_probes(rank: int, world: int) -> dict:
    """Probes first on a fresh bf16-mixed-precision sharded model, then one training backward of θ."""
    model = sharded(tiny_llama(), mp_policy=MixedPrecisionPolicy(param_dtype=torch.bfloat16))
    run(model, True, rank, world)
    ids = next(my_half(global_batches(5), rank, world))["input_ids"]
    try:
        model(input_ids=ids, labels=ids).loss.backward()
    except RuntimeError as error:
        return {"error": str(error)[:300]}
    return {"grad_dtypes": sorted({str(p.grad.dtype) for p in model.parameters() if p.grad is not None})}


def run(model, collective: bool, rank: int, world: int) -> dict:
    config = ProbeConfig(steps=STEPS, batch_size=GLOBAL_BATCH, dropout=0.0, seed=3)
    ledger = ComputeLedger()
    simulator = LoRAProbeSimulator(model, config, base_learning_rate=1e-2, ledger=ledger, collective=collective)
    for name, seed in (("pa", 1), ("pb", 2)):
        batches = global_batches(seed)
        simulator.train_probe(name, my_half(batches, rank, world) if collective else batches)
    generator = torch.Generator().manual_seed(9)
    eval_sets = {
        "x": torch.randint(0, VOCAB, (5, LENGTH), generator=generator),  # 5 blocks: 3 batches of 2,
        "y": torch.randint(0, VOCAB, (2, LENGTH), generator=generator),
    }  # uneven over 2 ranks
    candidates = [{}, {"pa": 1.0}, {"pa": 0.3, "pb": 0.7}]
    losses = simulator.evaluate_candidates(candidates, eval_sets, batch_size=2)
    _, up, _ = next(iter(simulator.lora_factors("pa").values()))
    record = {
        "losses": losses.tolist(),
        "probe_losses": simulator.results["pa"].losses,
        "lora_B_pa": up.flatten()[:8].tolist(),
        "probe_tokens": ledger.tokens_by_kind.get("probe", 0.0),
    }
    simulator.close()
    return record


def main(out_dir: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    result = {
        "world": world,
        "collective_sharded": run(sharded(tiny_llama()), True, rank, world),
        "alone_sharded": run(sharded(tiny_llama()), False, rank, world),
        "alone_unsharded": run(tiny_llama(), False, rank, world),
        "train_after_probes": train_after_probes(rank, world),
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
