"""Task scoring: eval sets from TRL datasets, batched greedy generation, task errors, completion losses."""

from __future__ import annotations

import copy

import datasets
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_llama
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

from hf_datamix.compute import ComputeLedger, non_embedding_parameters
from hf_datamix.data.embedded import load_embedded_tokenizer
from hf_datamix.data.instruct_tasks import build_task
from hf_datamix.simulate.task_scoring import (
    TaskEvalSet,
    completion_losses,
    generate_answers,
    task_errors,
    task_eval_sets,
)


# The prompt text only, no generation suffix: the prompt's last token then differs between prompts,
# which lets a bigram model (below) answer each prompt differently.
CONTENT_ONLY_TEMPLATE = "{% for m in messages %}{{ m['content'] }}{% endfor %}"


@pytest.fixture
def content_tokenizer(tokenizer):
    tok = copy.deepcopy(tokenizer)  # the conftest tokenizer is session-wide: never edit it
    tok.chat_template = CONTENT_ONLY_TEMPLATE
    return tok


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def bigram_llama(vocab_size: int, transitions: dict[int, int], default: int, runner_up: dict[int, int] | None = None):
    """A real LlamaForCausalLM whose greedy next token depends only on the current token.

    Attention and MLP outputs are zeroed, so the last hidden state is the (normed) embedding of the
    current token: token ``src`` of ``transitions`` gets its own basis direction, mapped by the LM
    head to ``transitions[src]``; every other token shares direction 0, mapped to ``default``.
    ``runner_up[src]`` gets half of the winner's logit after ``src``.
    """
    model = tiny_llama(vocab_size)
    assert len(transitions) < model.config.hidden_size
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embed, head = model.model.embed_tokens.weight, model.lm_head.weight
        assert embed.data_ptr() != head.data_ptr()  # untied, or editing one would edit the other
        embed.zero_()
        embed[:, 0] = 1.0
        head.zero_()
        head[default, 0] = 10.0
        for k, (src, dst) in enumerate(transitions.items(), start=1):
            embed[src] = 0.0
            embed[src, k] = 1.0
            head[dst, k] += 10.0
            if runner_up and src in runner_up:
                head[runner_up[src], k] += 5.0
    return model


def last_token(tok, text: str) -> int:
    return tok.apply_chat_template(user(text), tokenize=True, return_dict=False)[-1]


# ------------------------------------------------------------------------------------ eval sets
def test_task_eval_sets_from_built_task():
    evaluation = build_task("arith")["eval"]
    sets = task_eval_sets({"arith": evaluation}, limit=5)
    assert list(sets) == ["arith"] and len(sets["arith"]) == 5
    assert sets["arith"].prompts == [evaluation[i]["prompt"] for i in range(5)]
    assert sets["arith"].answers == [evaluation[i]["answer"] for i in range(5)]
    assert sets["arith"].prompts[0][0]["role"] == "user"
    assert len(task_eval_sets({"arith": evaluation})["arith"]) == len(evaluation)
    assert len(task_eval_sets({"arith": evaluation}, limit=10**6)["arith"]) == len(evaluation)


def test_task_eval_sets_without_answer_column():
    conversational = datasets.Dataset.from_dict(
        {
            "prompt": [user("2+2?"), user("Capital of France?")],
            "completion": [[{"role": "assistant", "content": "4"}], [{"role": "assistant", "content": "Paris"}]],
        }
    )
    standard_completion = datasets.Dataset.from_dict({"prompt": [user("Say hi")], "completion": ["hi"]})
    sets = task_eval_sets({"conv": conversational, "plain": standard_completion})
    assert sets["conv"].answers == ["4", "Paris"]
    assert sets["conv"].prompts == [user("2+2?"), user("Capital of France?")]
    assert sets["plain"].answers == ["hi"]


def test_task_eval_sets_errors():
    no_prompt = datasets.Dataset.from_dict({"question": ["q"], "answer": ["a"]})
    with pytest.raises(ValueError, match=r"'broken'.*'prompt'.*\['question', 'answer'\]"):
        task_eval_sets({"broken": no_prompt})
    no_gold = datasets.Dataset.from_dict({"prompt": [user("q")], "other": [1]})
    with pytest.raises(ValueError, match=r"'nogold'.*'answer'.*'completion'"):
        task_eval_sets({"nogold": no_gold})
    plain_prompt = datasets.Dataset.from_dict({"prompt": ["q"], "answer": ["a"]})
    with pytest.raises(ValueError, match="conversational"):
        task_eval_sets({"plain": plain_prompt})
    with pytest.raises(ValueError, match="limit"):
        task_eval_sets({"x": no_gold}, limit=0)
    with pytest.raises(ValueError, match="2 prompts for 1 answers"):
        TaskEvalSet([user("a"), user("b")], ["a"])


# ----------------------------------------------------------------------------------- generation
def test_generate_answers_batched_equals_one_by_one():
    """Sorting, batching and left padding change nothing: each answer is the prompt's lone, unpadded greedy answer."""
    tok = load_embedded_tokenizer()  # ships a chat template with a generation prompt
    model = tiny_llama(len(tok), seed=3)
    prompts = [[{"role": "user", "content": "What is " + " plus ".join(["7"] * n) + "?"}] for n in (1, 9, 3, 14, 2)]
    prompts += build_task("arith")["eval"]["prompt"][:3]
    prompts.append([{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Name a fruit."}])
    max_new = 6

    expected = []
    for prompt in prompts:  # the reference: plain model.generate on one unpadded prompt
        ids = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
        out = model.generate(
            torch.tensor([ids]),
            attention_mask=torch.ones(1, len(ids), dtype=torch.long),
            do_sample=False,
            max_new_tokens=max_new,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        new = out[0, len(ids) :].tolist()
        assert len(new) <= max_new
        new = new[: new.index(tok.eos_token_id)] if tok.eos_token_id in new else new
        expected.append(tok.decode(new, skip_special_tokens=True).strip())
    assert len(set(expected)) > 3  # the prompts really get different answers, so order is tested

    tok.padding_side = "right"
    model.train()
    answers = generate_answers(model, tok, prompts, max_new_tokens=max_new, batch_size=3)
    assert answers == expected
    assert tok.padding_side == "right"
    assert model.training and all(m.training for m in model.modules())


def test_generate_answers_stops_at_eos_and_counts_compute(content_tokenizer):
    tok = content_tokenizer
    eos = tok.eos_token_id
    texts = ["apple bolt gong cello harp x", "bolt y", "apple apple apple apple z", "gong w", "harp harp v"]
    lasts = [last_token(tok, t) for t in texts]
    assert len(set(lasts)) == len(lasts)
    q, r, s, u = (tok.encode(c)[0] for c in "QRSU")
    assert not {q, r, s, u} & set(lasts)
    transitions = {
        lasts[0]: q,
        q: eos,  # "Q", then eos: 2 generated tokens
        lasts[1]: r,
        r: s,
        s: eos,  # "RS": 3
        lasts[2]: u,
        u: u,  # "UUUU...": never stops, max_new_tokens
        lasts[3]: r,
    }  # "RS" again: 3
    model = bigram_llama(len(tok), transitions, default=eos)  # texts[4] is unmapped: eos at once, ""
    model.eval()
    prompts = [user(t) for t in texts]
    ledger = ComputeLedger()

    answers = generate_answers(model, tok, prompts, max_new_tokens=4, batch_size=2, ledger=ledger)
    assert answers == ["Q", "RS", "UUUU", "RS", ""]
    assert not model.training

    prompt_tokens = sum(len(tok.apply_chat_template(p, tokenize=True, return_dict=False)) for p in prompts)
    tokens = prompt_tokens + 2 + 3 + 4 + 3 + 1  # generated tokens up to and including eos; pads not counted
    n = non_embedding_parameters(model)
    assert ledger.tokens_by_kind == {"generate": tokens}
    assert ledger.by_kind == {"generate": 2.0 * n * tokens}

    ledger = ComputeLedger()
    assert generate_answers(
        model, tok, prompts, max_new_tokens=2, batch_size=5, ledger=ledger, num_parameters=1000, kind="eval"
    ) == ["Q", "RS", "UU", "RS", ""]
    assert ledger.by_kind == {"eval": 2.0 * 1000 * (prompt_tokens + 2 + 2 + 2 + 2 + 1)}
    assert generate_answers(model, tok, []) == []


def test_generate_answers_custom_eos_is_cut_from_the_answer(content_tokenizer):
    """A stop token that is not special (here "!") ends the answer and is not part of it."""
    tok = content_tokenizer
    q, r, bang = (tok.encode(c)[0] for c in "QR!")
    model = bigram_llama(len(tok), {q: r, r: bang, bang: q}, default=q)
    prompts = [user("apple"), user("bolt bolt bolt bolt")]
    assert generate_answers(model, tok, prompts, max_new_tokens=7, eos_token_id=bang) == ["QR", "QR"]
    assert generate_answers(model, tok, prompts, max_new_tokens=7, eos_token_id=[tok.eos_token_id, bang]) == ["QR"] * 2
    # With the tokenizer's eos (never produced) the stop token is only text: max_new_tokens of it.
    assert generate_answers(model, tok, prompts, max_new_tokens=7) == ["QR!QR!Q"] * 2


def test_generate_answers_is_plain_greedy_whatever_the_generation_config(content_tokenizer):
    """Sampling and a repetition penalty in the model's generation_config do not apply: argmax at every step."""
    tok = content_tokenizer
    u, v = (tok.encode(c)[0] for c in "UV")
    model = bigram_llama(len(tok), {u: u, v: u}, default=u, runner_up={u: v})
    prompts = [user("apple")]
    assert generate_answers(model, tok, prompts, max_new_tokens=4) == ["UUUU"]
    model.generation_config.do_sample = True
    model.generation_config.temperature = 5.0
    model.generation_config.top_k = 0
    model.generation_config.repetition_penalty = 100.0  # would turn the repeated U into V
    assert generate_answers(model, tok, prompts, max_new_tokens=4) == ["UUUU"]
    out = model.generate(
        torch.tensor([tok.encode("apple")]),
        max_new_tokens=4,
        do_sample=False,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    assert tok.decode(out[0, -4:]) != "UUUU"  # the rig does react to the penalty


def test_task_errors_of_a_rigged_model(content_tokenizer):
    """A model that always answers "apple" scores 0 where "apple" is right and 1 elsewhere, in one generate pass."""
    tok = content_tokenizer
    a, p, ple = tok.encode("apple")
    model = bigram_llama(len(tok), {a: p, p: ple, ple: tok.eos_token_id}, default=a)
    arith = task_eval_sets({"arith": build_task("arith")["eval"]}, limit=4)["arith"]
    assert all(last_token(tok, m[0]["content"]) not in (a, p, ple) for m in arith.prompts)
    fruit = TaskEvalSet([user("Name a red fruit."), user("Which fruit keeps the doctor away?")], ["Apple", "apple."])
    calls = []
    generate = model.generate
    model.generate = lambda *args, **kwargs: calls.append(1) or generate(*args, **kwargs)
    ledger = ComputeLedger()

    errors = task_errors(model, tok, {"fruit": fruit, "arith": arith}, batch_size=8, ledger=ledger)
    assert errors == {"fruit": 0.0, "arith": 1.0}
    assert len(calls) == 1  # both domains share one batch
    prompt_tokens = sum(
        len(tok.apply_chat_template(m, tokenize=True, return_dict=False)) for m in fruit.prompts + arith.prompts
    )
    assert ledger.tokens_by_kind == {"generate": prompt_tokens + 4 * 6}  # a, p, ple, eos per prompt

    half = TaskEvalSet([user("Name a fruit."), user("Name a fruit!")], ["apple", "pear"])
    assert task_errors(model, tok, {"half": half}) == {"half": 0.5}


# ------------------------------------------------------------------------------ completion loss
def _examples(seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    examples = []
    for prompt_len, completion_len in [(4, 3), (7, 5), (2, 9), (5, 2), (3, 4)]:
        ids = torch.randint(2, 300, (prompt_len + completion_len,), generator=gen).tolist()
        examples.append({"input_ids": ids, "labels": [-100] * prompt_len + ids[prompt_len:]})
    return examples


def _hand_loss(model, examples) -> float:
    """Masked next-token cross-entropy, each sequence run alone (no padding), summed then divided by the count."""
    total, count = 0.0, 0
    with torch.no_grad():
        for ex in examples:
            logits = model(input_ids=torch.tensor([ex["input_ids"]])).logits[0]
            for t in range(1, len(ex["input_ids"])):
                if ex["labels"][t] != -100:
                    total += float(F.cross_entropy(logits[t - 1], torch.tensor(ex["labels"][t])))
                    count += 1
    return total / count


@pytest.mark.parametrize(
    "collator_kwargs",
    [
        {},
        {"pad_to_multiple_of": 8},
        {"return_position_ids": True},
        {"padding_free": True},
        {"padding_free": True, "pad_to_multiple_of": 16},
    ],
    ids=["padded", "padded-multiple", "padded-position-ids", "padding-free", "padding-free-multiple"],
)
def test_completion_losses_match_masked_cross_entropy(tokenizer, collator_kwargs):
    model = tiny_llama(len(tokenizer), seed=1)
    model.eval()
    examples = _examples()
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id, **collator_kwargs)
    # Batches of unequal size: the domain mean is token-weighted, not a mean of batch means.
    batches = {"dom": [collator(examples[:2]), collator(examples[2:])], "other": [collator(examples[3:4])]}
    if collator_kwargs.get("padding_free"):
        assert "attention_mask" not in batches["dom"][0] and "position_ids" in batches["dom"][0]
    model.train()
    ledger = ComputeLedger()

    losses = completion_losses(model, batches, ledger=ledger)
    assert losses["dom"] == pytest.approx(_hand_loss(model, examples), rel=1e-5)
    assert losses["other"] == pytest.approx(_hand_loss(model, examples[3:4]), rel=1e-5)
    assert model.training
    tokens = sum(len(ex["input_ids"]) for ex in examples) + len(examples[3]["input_ids"])  # pads not counted
    assert ledger.tokens_by_kind == {"eval": tokens}
    assert ledger.by_kind == {"eval": 2.0 * non_embedding_parameters(model) * tokens}


def test_completion_losses_ignore_prompt_tokens(tokenizer):
    """Prompt labels are -100: changing the prompt's labels to anything else changes the loss, -100 does not count."""
    model = tiny_llama(len(tokenizer), seed=1)
    examples = _examples()
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    completion_only = completion_losses(model, {"d": [collator(examples)]})["d"]
    full = [{"input_ids": ex["input_ids"], "labels": ex["input_ids"]} for ex in examples]
    whole = completion_losses(model, {"d": [collator(full)]})["d"]
    assert completion_only == pytest.approx(_hand_loss(model, examples), rel=1e-5)
    assert whole == pytest.approx(_hand_loss(model, full), rel=1e-5)
    assert whole != pytest.approx(completion_only, rel=1e-4)


def test_completion_losses_errors(tokenizer):
    model = tiny_llama(len(tokenizer))
    collator = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)
    unlabelled = collator([{"input_ids": [5, 6, 7], "labels": [-100, -100, -100]}])
    with pytest.raises(ValueError, match="'empty'.*no labelled token"):
        completion_losses(model, {"empty": [unlabelled]})
    with pytest.raises(ValueError, match="'nolabels'.*'labels'"):
        completion_losses(model, {"nolabels": [{"input_ids": torch.tensor([[5, 6, 7]])}]})
