"""Run under `accelerate launch --config_file accelerate_configs/cpu.yaml` (2 gloo processes).

Two streaming domains (with num_tokens): trains 40 steps with batch dispatching (the main process
reads), then a new trainer resumes from step 20 to step 60 with every process reading the stream.
Each rank writes the documents its tokenizer saw and the blocks it trained on.
"""

import json
import os
import sys


sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from conftest import (  # noqa: E402
    datamix_args,  # noqa: E402
    tiny_llama,
)
from conftest import tokenizer as tokenizer_fixture
from test_streaming import BLOCK, blocks_drawn, streaming_domains  # noqa: E402
from test_trainer import RecordingTrainer  # noqa: E402


def main(out_dir: str) -> None:
    tokenizer = tokenizer_fixture.__wrapped__()
    domains, watch = streaming_domains(__import__("pathlib").Path(out_dir), tokenizer)
    watched = {doc for docs in watch.values() for doc in docs}
    count = [0]
    original = type(tokenizer).__call__

    def counting(self, text, *args, **kwargs):
        count[0] += sum(1 for t in (text if isinstance(text, list) else [text]) if t in watched)
        return original(self, text, *args, **kwargs)

    type(tokenizer).__call__ = counting
    seen, drawn = [], None
    for steps, resume, dispatch in ((40, None, True), (60, os.path.join(out_dir, "run", "checkpoint-20"), False)):
        args = datamix_args(
            os.path.join(out_dir, "run"),
            max_steps=steps,
            per_device_train_batch_size=4,
            save_steps=20,
            logging_steps=10,
            block_size=BLOCK,
            max_eval_blocks=2,
            accelerator_config={"dispatch_batches": dispatch},
        )
        trainer = RecordingTrainer(
            model=tiny_llama(len(tokenizer)),
            args=args,
            domains=domains,
            strategy="uniform",
            processing_class=tokenizer,
        )
        trainer.train(resume_from_checkpoint=resume)
        seen += trainer.seen
        drawn = blocks_drawn(trainer, steps * trainer.samples_per_step)
    rank = trainer.args.process_index
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as handle:
        json.dump({"docs": count[0], "drawn": drawn, "seen": seen, "world": trainer.args.world_size}, handle)


if __name__ == "__main__":
    main(sys.argv[1])
