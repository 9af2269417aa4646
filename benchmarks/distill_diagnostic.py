"""Why on-policy self-distillation learned nothing (issue 20, item 3): a small diagnostic on CPU.

    python benchmarks/distill_diagnostic.py [--steps 40] [--hidden 64] [--out benchmarks/results/distill_diagnostic.json]

SDFT-style distillation (methods.md) can only teach what its teacher knows: the teacher is the model
itself shown the gold answer, so it helps only if the model can *use* a demonstration in its context.
This script measures that premise (the teacher's advantage: the gold answer's NLL given the student's
prompt minus its NLL given the teacher's prompt, nats per answer) and what the learner does with it.

The task is a lookup (a key word -> a value word, single-token values): learnable in a few dozen steps
by a tiny Llama, and a demonstration names the answer exactly.  Three bases, each warmed up on other
keys for the same number of steps:

* ``format_only``: learns the chat format and short answers, never sees a demonstration (as the GPU
  run's base, pretrained on text only, could not read one);
* ``reads_demos``: also learns to answer from a demonstration on random pairs, with the demonstration
  on its own line, so it tokenizes as the answer does (the library's template since issue 20);
* ``reads_demos_colon``: the same with the old template ("answer: {demonstration}"), whose demonstrated
  tokens carry a leading space and differ from the answer's tokens.

From each base, on the target keys (unseen in warm-up): ``sft`` (supervised, the reference),
``opd`` (hf_datamix's OnPolicyDistiller: student rollouts, EMA teacher at rate 0.01, reverse KL), and
from ``reads_demos`` TRL's ``SDFTTrainer`` with the same settings (EMA teacher, full-logit reverse KL).
Numbers: task error (greedy, exact match) and answer NLL on the target prompts before and after,
the teacher's advantage, the distillation loss curve and the share of rollouts that hit the answer.
"""

from __future__ import annotations

import argparse
import copy
import os
import random
import sys
import time
import traceback

import datasets
import numpy as np
import torch


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]  # this checkout's hf_datamix, not an installed one
from _common import RESULTS_DIR, provenance, write_json  # noqa: E402

from hf_datamix.compute import non_embedding_parameters  # noqa: E402
from hf_datamix.data.embedded import load_embedded_tokenizer  # noqa: E402
from hf_datamix.distill import (  # noqa: E402
    DEFAULT_TEACHER_PROMPT_TEMPLATE,
    DistillationCollator,
    DistillConfig,
    OnPolicyDistiller,
    add_distillation_columns,
    teacher_prompt,
)
from hf_datamix.simulate.task_scoring import TaskEvalSet, answer_nlls, task_errors  # noqa: E402


COLON_TEMPLATE = "{prompt}\n\nAn example of a correct answer: {demonstration}\n\nNow answer the question yourself."
TEMPLATES = {
    "reads_demos": DEFAULT_TEACHER_PROMPT_TEMPLATE,
    "reads_demos_colon": COLON_TEMPLATE,
    "format_only": DEFAULT_TEACHER_PROMPT_TEMPLATE,
}
PHRASINGS = ("What is the code word for {key}?", "Code word of {key}?", "Tell me the code word for {key}.")


def single_token_words(tokenizer, count: int, seed: int) -> list[str]:
    """Lower-case words of >= 4 letters that are one token at the start of a line (as an answer is)."""
    words = []
    for token_id in range(len(tokenizer)):
        text = tokenizer.decode([token_id])
        if (
            text.isascii()
            and text.isalpha()
            and text.islower()
            and len(text) >= 4
            and tokenizer.encode(text, add_special_tokens=False) == [token_id]
        ):
            words.append(text)
    random.Random(seed).shuffle(words)
    if len(words) < count:
        raise ValueError(f"the tokenizer has only {len(words)} single-token words, {count} needed")
    return words[:count]


def rows(pairs) -> list[dict]:
    return [
        {
            "prompt": [{"role": "user", "content": phrase.format(key=k)}],
            "completion": [{"role": "assistant", "content": v}],
            "answer": v,
        }
        for k, v in pairs
        for phrase in PHRASINGS
    ]


def sft_example(tokenizer, prompt, answer: str) -> dict:
    """Completion-only SFT tokens, as TRL renders a conversational prompt-completion pair."""
    prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False)
    full = tokenizer.apply_chat_template(
        prompt + [{"role": "assistant", "content": answer}], tokenize=True, return_dict=False
    )
    return {"input_ids": list(full), "labels": [-100] * len(prompt_ids) + list(full[len(prompt_ids) :])}


def collate(tokenizer, examples):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    return DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(examples)


def make_model(tokenizer, hidden: int, seed: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def sft_steps(model, tokenizer, sample, steps: int, lr: float, batch: int, rng) -> list[float]:
    """``steps`` AdamW steps of completion-only SFT on batches drawn by ``sample(rng, batch)``."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    model.train()
    losses = []
    for _ in range(steps):
        b = collate(tokenizer, sample(rng, batch))
        loss = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def measure(model, tokenizer, target_rows, template: str) -> dict:
    """Task error and answer NLL on the target prompts, and the teacher's advantage under ``template``."""
    eval_set = TaskEvalSet([r["prompt"] for r in target_rows], [r["answer"] for r in target_rows])
    error = task_errors(model, tokenizer, {"target": eval_set}, max_new_tokens=4)["target"]
    student = [sft_example(tokenizer, r["prompt"], r["answer"]) for r in target_rows]
    teacher = [
        sft_example(tokenizer, teacher_prompt(r["prompt"], r["answer"], template), r["answer"]) for r in target_rows
    ]
    eos = tokenizer.eos_token_id
    nll = answer_nlls(
        model, {"student": [collate(tokenizer, student)], "teacher": [collate(tokenizer, teacher)]}, eos_token_id=eos
    )
    return {
        "task_error": error,
        "answer_nll": nll["student"]["nll_per_answer"],
        "teacher_answer_nll": nll["teacher"]["nll_per_answer"],
        "teacher_advantage": nll["student"]["nll_per_answer"] - nll["teacher"]["nll_per_answer"],
    }


def distill(
    model, tokenizer, target, template: str, steps: int, lr: float, batch: int, seed: int, rate: float = 0.01
) -> dict:
    """hf_datamix's OnPolicyDistiller in a plain loop (what DistillLearner does inside the trainer)."""
    config = DistillConfig(
        teacher_update_rate=rate, max_new_tokens=4, temperature=1.0, teacher_prompt_template=template, seed=seed
    )
    distiller = OnPolicyDistiller(config, tokenizer, non_embedding_parameters(model))
    distiller.setup(model)
    data = add_distillation_columns(datasets.Dataset.from_list(target), tokenizer, template)
    collator = DistillationCollator(tokenizer.pad_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    rng = np.random.default_rng(seed)
    losses, hits = [], []
    model.train()
    for _ in range(steps):
        picked = rng.choice(len(data), size=batch, replace=False)
        inputs = collator([data[int(i)] for i in picked])
        completion, mask = distiller.generate(model, inputs["prompt_ids"], inputs["prompt_mask"])
        texts = tokenizer.batch_decode(
            completion * mask + tokenizer.pad_token_id * (1 - mask), skip_special_tokens=True
        )
        hits.append(float(np.mean([t.strip() == target[int(i)]["answer"] for t, i in zip(texts, picked)])))
        loss = distiller.compute_loss(model, inputs)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        distiller.update_teacher(model)
        losses.append(float(loss.detach()))
    return {"loss": losses, "rollout_hit_rate": hits}


def trl_sdft(model, tokenizer, target, steps: int, lr: float, batch: int, seed: int, out: str) -> dict:
    """TRL's SDFTTrainer on the same base and data: EMA teacher (0.01), full-logit reverse KL."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*experimental.*")
        from trl.experimental.sdft import SDFTConfig, SDFTTrainer

    tail = DEFAULT_TEACHER_PROMPT_TEMPLATE.split("{prompt}")[1]
    context = tail.removeprefix("\n\n")  # TRL's template is "{prompt}\n\n{privileged_context}"
    train = datasets.Dataset.from_list(
        [{"prompt": r["prompt"], "privileged_context": context.format(demonstration=r["answer"])} for r in target]
    )
    args = SDFTConfig(
        output_dir=out,
        max_steps=steps,
        per_device_train_batch_size=batch,
        learning_rate=lr,
        weight_decay=0.0,
        lr_scheduler_type="constant",
        warmup_steps=0,
        num_generations=1,
        max_completion_length=4,
        temperature=1.0,
        teacher_model_kind="ema",
        teacher_update_rate=0.01,
        distillation_mode="full_logits",
        distillation_alpha=1.0,
        distillation_is_clip=None,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_steps=1,
        seed=seed,
        disable_tqdm=True,
        max_prompt_length=128,
        bf16=False,
    )
    # TRL builds its EMA teacher from the student's path (no deep copy): hand it a saved base.
    model.save_pretrained(os.path.join(out, "base"))
    trainer = SDFTTrainer(model=os.path.join(out, "base"), args=args, train_dataset=train, processing_class=tokenizer)
    trainer.train()
    model.load_state_dict(trainer.model.state_dict())
    return {"loss": [h["loss"] for h in trainer.state.log_history if "loss" in h]}


def gain_of(path: str, tasks: list[str], examples: int) -> dict:
    """The demonstration gain of a saved model on the embedded instruction tasks (the GPU run's base)."""
    from transformers import AutoModelForCausalLM

    from hf_datamix.data.instruct_tasks import build_task

    tokenizer = load_embedded_tokenizer()
    model = AutoModelForCausalLM.from_pretrained(path)
    if torch.cuda.is_available():
        model = model.cuda()
    distiller = OnPolicyDistiller(DistillConfig(), tokenizer, non_embedding_parameters(model))
    distiller.setup(model)
    collator = DistillationCollator(tokenizer.pad_token_id)
    out = {}
    for task in tasks:
        data = add_distillation_columns(
            build_task(task)["train"].select(range(examples)), tokenizer, DEFAULT_TEACHER_PROMPT_TEMPLATE
        )
        parts = [
            distiller.demonstration_gain(model, collator([data[i] for i in range(s, min(s + 32, examples))]))
            for s in range(0, examples, 32)
        ]
        out[task] = {k: float(np.mean([p[k] for p in parts])) for k in parts[0]}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=40, help="learning steps on the target keys per arm")
    parser.add_argument("--warmup_steps", type=int, default=400, help="warm-up steps of each base")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--keys", type=int, default=16, help="target keys (3 phrasings each)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip_trl", action="store_true")
    parser.add_argument(
        "--gain_of",
        default=None,
        help="only measure the demonstration gain of this saved model "
        "on --tasks (e.g. the instruct recipe's pretrain/final) and write it to --out",
    )
    parser.add_argument("--tasks", default="arith,define,book")
    parser.add_argument("--gain_examples", type=int, default=64)
    parser.add_argument("--out", default=os.path.join(RESULTS_DIR, "distill_diagnostic.json"))
    opts = parser.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    if opts.gain_of:
        payload = provenance("distill_diagnostic_gain", software=("trl",))
        payload.update(
            {
                "model": opts.gain_of,
                "template": DEFAULT_TEACHER_PROMPT_TEMPLATE,
                "gain": gain_of(opts.gain_of, opts.tasks.split(","), opts.gain_examples),
            }
        )
        write_json(opts.out, payload)
        print(payload["gain"])
        return
    tokenizer = load_embedded_tokenizer()
    words = single_token_words(tokenizer, 2 * (opts.keys + 64) + 400, opts.seed)
    target_pairs = list(zip(words[: opts.keys], words[opts.keys : 2 * opts.keys]))
    warm_pairs = list(zip(words[2 * opts.keys : 2 * opts.keys + 64], words[2 * opts.keys + 64 : 2 * opts.keys + 128]))
    pool = words[2 * opts.keys + 128 :]  # random pairs of demonstration warm-up (never target values)
    target = rows(target_pairs)
    payload = provenance("distill_diagnostic", software=("trl",))
    payload.update(
        {
            "settings": vars(opts),
            "task": f"lookup, {opts.keys} target keys x {len(PHRASINGS)} phrasings, "
            "single-token values; evaluation on the target prompts (the task is the lookup)",
            "bases": {},
            "arms": {},
        }
    )

    base_rows = [sft_example(tokenizer, r["prompt"], r["answer"]) for r in rows(warm_pairs)]
    bases = {}
    for name, template in TEMPLATES.items():
        rng = random.Random(opts.seed)
        demos = []  # fresh random pairs answered from their demonstration (tokenized once: the loop is short)
        for _ in range(0 if name == "format_only" else 2000):
            key, value = rng.sample(pool, 2)
            prompt = [{"role": "user", "content": rng.choice(PHRASINGS).format(key=key)}]
            demos.append(sft_example(tokenizer, teacher_prompt(prompt, value, template), value))

        def sample(rng, n, demos=demos):
            return [rng.choice(demos) if demos and rng.random() < 0.5 else rng.choice(base_rows) for _ in range(n)]

        started = time.time()
        model = make_model(tokenizer, opts.hidden, opts.seed)
        losses = sft_steps(model, tokenizer, sample, opts.warmup_steps, 3e-3, 32, random.Random(opts.seed))
        bases[name] = model
        payload["bases"][name] = {
            "template": template,
            "warmup_final_loss": float(np.mean(losses[-20:])),
            "seconds": time.time() - started,
            **measure(model, tokenizer, target, template),
        }
        print(name, payload["bases"][name], flush=True)
        write_json(opts.out, payload)

    def arm(key, fn):
        started = time.time()
        try:
            result = fn()
        except Exception as error:  # a failed arm is a result too (e.g. TRL's trainer on this setup)
            result = {"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc(limit=4)}
        result["seconds"] = time.time() - started
        payload["arms"][key] = result
        print(key, {k: v for k, v in result.items() if k not in ("loss", "rollout_hit_rate", "traceback")}, flush=True)
        write_json(opts.out, payload)

    for name, base in bases.items():
        template = TEMPLATES[name]
        examples = [sft_example(tokenizer, r["prompt"], r["answer"]) for r in target]

        def run_sft(base=base, template=template, examples=examples):
            model = copy.deepcopy(base)
            losses = sft_steps(
                model,
                tokenizer,
                lambda rng, n: rng.sample(examples, n),
                opts.steps,
                1e-3,
                opts.batch,
                random.Random(opts.seed + 1),
            )
            return {"loss": losses, **measure(model, tokenizer, target, template)}

        def run_opd(base=base, template=template, rate=0.01, steps=opts.steps):
            model = copy.deepcopy(base)
            result = distill(model, tokenizer, target, template, steps, 1e-3, opts.batch, opts.seed + 1, rate)
            return {**result, **measure(model, tokenizer, target, template)}

        arm(f"{name}/sft", run_sft)
        arm(f"{name}/opd", run_opd)
        # The EMA teacher follows a student whose in-context reading erodes; a frozen teacher keeps it.
        arm(f"{name}/opd_frozen_teacher", lambda run_opd=run_opd: run_opd(rate=0.0))
        if name == "reads_demos":
            arm(f"{name}/opd_x3_steps", lambda run_opd=run_opd: run_opd(steps=3 * opts.steps))
            arm(f"{name}/opd_frozen_teacher_x3_steps", lambda run_opd=run_opd: run_opd(rate=0.0, steps=3 * opts.steps))
    if not opts.skip_trl:

        def run_trl():
            model = copy.deepcopy(bases["reads_demos"])
            result = trl_sdft(
                model,
                tokenizer,
                target,
                opts.steps,
                1e-3,
                opts.batch,
                opts.seed + 1,
                os.path.join("/tmp", f"distill_diagnostic_trl_{os.getpid()}"),
            )
            return {**result, **measure(model, tokenizer, target, DEFAULT_TEACHER_PROMPT_TEMPLATE)}

        arm("reads_demos/trl_sdft", run_trl)
    payload["status"] = "complete"
    write_json(opts.out, payload)


if __name__ == "__main__":
    main()
