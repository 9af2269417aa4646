"""Run under `accelerate launch --config_file accelerate_configs/cpu.yaml` (2 gloo processes).

Each rank writes what it trained on and the weights it applied, so the test can check that both
ranks apply identical weights at every step and that no block is seen by two ranks.
"""

import atexit
import json
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from conftest import make_domain_set, tiny_llama  # noqa: E402
from conftest import tokenizer as tokenizer_fixture
from test_trainer import RecordingTrainer, SwitchStrategy, make_args  # noqa: E402


def native_threads_at_exit(path: str) -> None:
    """At exit (after hf_datamix's own exit hook, registered later), write the names of this process's threads."""

    def report():
        names = []
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/comm") as handle:
                    names.append(handle.read().strip())
            except OSError:  # the thread ended meanwhile
                pass
        with open(path, "w") as handle:
            json.dump(sorted(names), handle)

    if os.path.isdir("/proc/self/task"):
        atexit.register(report)


def main(out_dir: str) -> None:
    native_threads_at_exit(os.path.join(out_dir, f"threads-at-exit-{os.environ.get('RANK', '0')}.json"))
    tokenizer = tokenizer_fixture.__wrapped__()
    trainer = RecordingTrainer(
        model=tiny_llama(len(tokenizer)),
        args=make_args(
            out_dir,
            max_steps=8,
            save_steps=4,
            dataloader_num_workers=int(os.environ.get("WORKERS", "0")),
            # "read": every process reads the stream and keeps its share (as DataMixSFTTrainer does)
            accelerator_config={"dispatch_batches": os.environ.get("BATCHES") != "read"},
        ),
        domains=make_domain_set(train_docs=200),
        strategy=SwitchStrategy(at=3, to="beta"),
        processing_class=tokenizer,
    )
    trainer.train()
    rank = trainer.args.process_index
    weights = [
        trainer.interleaver.weights_at(step * trainer.samples_per_step).to_dict()
        for step in range(trainer.state.max_steps)
    ]
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump({"seen": trainer.seen, "weights": weights, "world": trainer.args.world_size}, handle)


if __name__ == "__main__":
    main(sys.argv[1])
