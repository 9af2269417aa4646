"""On-policy self-distillation (hf_datamix.distill): loss, EMA teacher, rollouts, data plumbing, checkpoints."""

from __future__ import annotations

import math
import os

import pytest
import torch
from conftest import tiny_llama

from hf_datamix.compute import ComputeLedger, non_embedding_parameters
from hf_datamix.data.embedded import load_embedded_tokenizer
from hf_datamix.data.instruct_tasks import build_task
from hf_datamix.distill import (
    TEACHER_FILE,
    DistillationCollator,
    DistillConfig,
    OnPolicyDistiller,
    add_distillation_columns,
    reverse_kl_per_token,
    teacher_prompt,
)


TEMPLATE = DistillConfig().teacher_prompt_template


@pytest.fixture(scope="module")
def chat_tokenizer():
    return load_embedded_tokenizer()


@pytest.fixture(scope="module")
def arith(chat_tokenizer):
    return add_distillation_columns(build_task("arith")["train"].select(range(8)), chat_tokenizer, TEMPLATE)


@pytest.fixture
def batch(arith, chat_tokenizer):
    # Rows of different lengths, so both prompts get left padding.
    rows = [arith[i] for i in range(3)]
    return DistillationCollator(chat_tokenizer.pad_token_id)(rows)


def make_model(tokenizer, seed=0, arch="llama"):
    """A tiny Llama (or GPT-2) whose special ids agree with the chat tokenizer (LlamaConfig defaults say eos=2).

    GPT-2 has absolute position embeddings, so it notices when left padding shifts positions; Llama's
    rotary embeddings do not.
    """
    if arch == "gpt2":
        from transformers import GPT2Config, GPT2LMHeadModel

        torch.manual_seed(seed)
        model = GPT2LMHeadModel(
            GPT2Config(
                vocab_size=len(tokenizer),
                n_embd=32,
                n_layer=2,
                n_head=2,
                n_positions=256,
                resid_pdrop=0.0,
                embd_pdrop=0.0,
                attn_pdrop=0.0,  # deterministic train-mode passes, as Llama's
                bos_token_id=tokenizer.eos_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        )
    else:
        model = tiny_llama(len(tokenizer), seed=seed)
    for name in ("eos_token_id", "pad_token_id", "bos_token_id"):
        value = getattr(tokenizer, name)
        setattr(model.config, name, value)
        setattr(model.generation_config, name, value)
    return model


def make_distiller(tokenizer, model, **config):
    config.setdefault("max_new_tokens", 5)
    num_parameters = non_embedding_parameters(getattr(model, "module", model))
    distiller = OnPolicyDistiller(DistillConfig(**config), tokenizer, num_parameters=num_parameters)
    distiller.setup(model)
    return distiller


# ---------------------------------------------------------------- reverse KL


def test_reverse_kl_matches_hand_computation_and_is_not_forward_kl():
    student = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 0.0, 3.0]]])  # (B=1, T=2, V=3)
    teacher = torch.tensor([[[0.0, 1.0, 1.0], [2.0, 0.0, 0.0]]])

    def probs(logits):
        z = [math.exp(x) for x in logits]
        return [v / sum(z) for v in z]

    def kl(p, q):
        return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q))

    reverse = [kl(probs(s), probs(t)) for s, t in zip(student[0].tolist(), teacher[0].tolist())]
    forward = [kl(probs(t), probs(s)) for s, t in zip(student[0].tolist(), teacher[0].tolist())]
    got = reverse_kl_per_token(student, teacher)
    assert got.shape == (1, 2)
    torch.testing.assert_close(got, torch.tensor([reverse]), rtol=1e-5, atol=1e-6)
    # the toy numbers are chosen so the two directions differ clearly
    assert all(abs(r - f) > 0.1 for r, f in zip(reverse, forward))
    assert not torch.allclose(got, torch.tensor([forward]), atol=1e-2)
    assert torch.allclose(reverse_kl_per_token(student, student), torch.zeros(1, 2), atol=1e-6)


def test_reverse_kl_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="same shape"):
        reverse_kl_per_token(torch.zeros(1, 2, 3), torch.zeros(1, 2, 4))


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "field, value",
    [
        ("teacher_update_rate", -0.1),
        ("teacher_update_rate", 1.5),
        ("max_new_tokens", 0),
        ("max_new_tokens", 2.0),
        ("temperature", 0.0),
        ("temperature", float("nan")),
        ("top_k", -1),
        ("teacher_prompt_template", "{prompt} only"),
        ("teacher_prompt_template", "{prompt} {demonstration} {other}"),
        ("num_loss_tokens_to_skip", -1),
        ("num_loss_tokens_to_skip", 32),
        ("seed", -3),
    ],
)
def test_config_validation_names_field_and_value(field, value):
    with pytest.raises(ValueError, match=f"DistillConfig.{field}") as info:
        DistillConfig(**{field: value})
    assert repr(value) in str(info.value) or field == "teacher_prompt_template"


def test_config_defaults_follow_methods_md():
    config = DistillConfig()
    assert config.teacher_update_rate == 0.01 and config.top_k == 0 and config.seed is None


# ---------------------------------------------------------------- data plumbing


def test_teacher_prompt_rewrites_only_the_last_user_message():
    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
    ]
    completion = [{"role": "assistant", "content": "4"}]
    got = teacher_prompt(prompt, completion, "Q: {prompt} | demo: {demonstration}")
    assert got == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Q: What is 2+2? | demo: 4"},
    ]
    assert prompt[-1]["content"] == "What is 2+2?"  # input untouched
    assert teacher_prompt(prompt, "four", "{prompt}/{demonstration}")[-1]["content"] == "What is 2+2?/four"
    with pytest.raises(ValueError, match="end with a user message"):
        teacher_prompt(prompt + [{"role": "assistant", "content": "x"}], completion, TEMPLATE)
    with pytest.raises(ValueError, match="no assistant message"):
        teacher_prompt(prompt, [{"role": "user", "content": "4"}], TEMPLATE)


def test_add_distillation_columns_tokenizes_both_prompts(arith, chat_tokenizer):
    raw = build_task("arith")["train"].select(range(8))
    assert set(arith.column_names) == set(raw.column_names) | {"prompt_ids", "teacher_prompt_ids", "gold_ids"}
    for i in range(len(arith)):
        row = arith[i]
        expected = chat_tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, return_dict=True)
        assert row["prompt_ids"] == list(expected["input_ids"])
        text = chat_tokenizer.decode(row["teacher_prompt_ids"])
        assert row["prompt"][-1]["content"] in text
        assert f"An example of a correct answer:\n{row['completion'][0]['content']}\n" in text
        assert text.endswith("<|assistant|>\n")
        assert len(row["teacher_prompt_ids"]) > len(row["prompt_ids"])
        # The gold completion as the template renders it after the prompt, cut after eos ...
        assert chat_tokenizer.decode(row["gold_ids"]) == row["completion"][0]["content"] + chat_tokenizer.eos_token
        # ... and the demonstration in the teacher's prompt is the same tokens (a leading space would change them).
        gold, teacher_ids = row["gold_ids"][:-1], row["teacher_prompt_ids"]
        assert any(teacher_ids[i : i + len(gold)] == gold for i in range(len(teacher_ids)))


def test_add_distillation_columns_errors(chat_tokenizer, tokenizer):
    raw = build_task("arith")["train"].select(range(2))
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['completion'\]"):
        add_distillation_columns(raw.remove_columns("completion"), chat_tokenizer, TEMPLATE)
    with pytest.raises(ValueError, match="no chat template"):
        add_distillation_columns(raw, tokenizer, TEMPLATE)  # conftest's tokenizer has none
    with pytest.raises(ValueError, match="teacher_prompt_template"):
        add_distillation_columns(raw, chat_tokenizer, "{prompt}")


def test_collator_left_pads_and_ignores_extra_keys():
    collate = DistillationCollator(pad_token_id=9)
    out = collate(
        [
            {"prompt_ids": [1, 2], "teacher_prompt_ids": [5, 6, 7], "answer": "x"},
            {"prompt_ids": [3, 4, 5, 6], "teacher_prompt_ids": [8], "answer": "y"},
        ]
    )
    assert set(out) == {"prompt_ids", "prompt_mask", "teacher_prompt_ids", "teacher_prompt_mask"}
    assert all(t.dtype == torch.long for t in out.values())
    assert out["prompt_ids"].tolist() == [[9, 9, 1, 2], [3, 4, 5, 6]]
    assert out["prompt_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert out["teacher_prompt_ids"].tolist() == [[5, 6, 7], [9, 9, 8]]
    assert out["teacher_prompt_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    with pytest.raises(ValueError, match="add_distillation_columns"):
        collate([{"prompt_ids": [1]}])


# ---------------------------------------------------------------- teacher


def test_setup_makes_a_frozen_eval_copy(chat_tokenizer):
    model = make_model(chat_tokenizer).train()
    distiller = make_distiller(chat_tokenizer, model)
    teacher = distiller.teacher
    assert teacher is not model and not teacher.training and model.training
    for (name, s), (_, t) in zip(model.named_parameters(), teacher.named_parameters(), strict=True):
        assert torch.equal(s, t) and t.data_ptr() != s.data_ptr() and not t.requires_grad and s.requires_grad, name


def _perturb(model, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.1)


@pytest.fixture(params=["plain", "accelerator"])
def accelerate_state(request):
    """Run once without and once inside an Accelerator (sync_target_model's DeepSpeed check needs one)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, is_initialized

    if request.param == "plain" or is_initialized():
        yield request.param
        return
    Accelerator(cpu=True)
    try:
        yield request.param
    finally:
        AcceleratorState._reset_state(reset_partial_state=True)


def test_update_teacher_is_the_exact_ema(chat_tokenizer, accelerate_state):
    model = make_model(chat_tokenizer)
    distiller = make_distiller(chat_tokenizer, model)
    _perturb(model, seed=1)  # student moved away from the teacher, as after an optimizer step
    old_teacher = {k: v.clone() for k, v in distiller.teacher.state_dict().items()}
    student_before = {k: v.clone() for k, v in model.state_dict().items()}
    distiller.update_teacher(model)
    for name, param in distiller.teacher.named_parameters():
        expected = 0.99 * old_teacher[name].double() + 0.01 * student_before[name].double()
        torch.testing.assert_close(param.double(), expected, rtol=1e-6, atol=1e-7, msg=name)
        assert not torch.equal(param, old_teacher[name]), name
    for name, value in model.state_dict().items():
        assert torch.equal(value, student_before[name]), name


# ---------------------------------------------------------------- loss


def _fake_completion(chat_tokenizer, batch):
    """Known completions: row 0 ends with eos at position 2 then carries junk, the others never end."""
    eos = chat_tokenizer.eos_token_id
    rows = [[50, 60, eos, 70, 80], [11, 12, 13, 14, 15], [200, 201, 202, 203, 204]]
    return torch.tensor(rows[: batch["prompt_ids"].size(0)])


def _install_fake_generate(monkeypatch, model, completion, calls):
    def fake_generate(input_ids, attention_mask, **kwargs):
        calls.append({"training": model.training, "grad": torch.is_grad_enabled(), **kwargs})
        return torch.cat([input_ids, completion], dim=1)

    monkeypatch.setattr(model, "generate", fake_generate)


def _hand_loss(student, teacher, batch, completion, valid, temperature, skip):
    """Per row, unpadded forwards and an explicit sum_v p_s (log p_s - log p_t), averaged over loss tokens."""
    total, count = 0.0, 0
    for row in range(completion.size(0)):
        prompt = batch["prompt_ids"][row][batch["prompt_mask"][row].bool()]
        teacher_prompt_ids = batch["teacher_prompt_ids"][row][batch["teacher_prompt_mask"][row].bool()]
        comp = completion[row, : valid[row]]
        with torch.no_grad():
            s = student(torch.cat([prompt, comp])[None]).logits[0, len(prompt) - 1 : -1]
            t = teacher(torch.cat([teacher_prompt_ids, comp])[None]).logits[0, len(teacher_prompt_ids) - 1 : -1]
        s, t = s.double() / temperature, t.double() / temperature
        log_ps, log_pt = s.log_softmax(-1), t.log_softmax(-1)
        per_token = (log_ps.exp() * (log_ps - log_pt)).sum(-1)
        total += per_token[skip:].sum().item()
        count += max(len(comp) - skip, 0)
    return total / count


@pytest.mark.parametrize("temperature, skip, arch", [(1.0, 0, "llama"), (0.7, 1, "llama"), (1.0, 0, "gpt2")])
def test_compute_loss_equals_hand_reverse_kl(monkeypatch, chat_tokenizer, batch, temperature, skip, arch):
    model = make_model(chat_tokenizer, seed=0, arch=arch).train()
    distiller = make_distiller(chat_tokenizer, model, temperature=temperature, num_loss_tokens_to_skip=skip, top_k=7)
    # a teacher that disagrees with the student
    distiller.teacher = make_model(chat_tokenizer, seed=1, arch=arch).eval().requires_grad_(False)
    completion = _fake_completion(chat_tokenizer, batch)
    calls = []
    _install_fake_generate(monkeypatch, model, completion, calls)

    loss = distiller.compute_loss(model, batch)

    valid = [3, 5, 5]  # row 0: up to and including the eos, its junk tail is not trained on
    expected = _hand_loss(model, distiller.teacher, batch, completion, valid, temperature, skip)
    assert loss.item() > 0.01
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    (call,) = calls
    assert call["do_sample"] and call["temperature"] == temperature and call["top_k"] == 7
    assert call["max_new_tokens"] == 5 and call["pad_token_id"] == chat_tokenizer.pad_token_id
    assert call["eos_token_id"] == [chat_tokenizer.eos_token_id]
    assert not call["training"] and not call["grad"]  # rollouts in eval mode, no graph
    assert model.training  # restored


def test_no_loss_token_left_gives_a_zero_loss_that_still_backpropagates(monkeypatch, chat_tokenizer, batch):
    model = make_model(chat_tokenizer).train()
    distiller = make_distiller(chat_tokenizer, model, num_loss_tokens_to_skip=1)
    _perturb(model, seed=6)
    completion = torch.tensor([[chat_tokenizer.eos_token_id, 5, 6]] * batch["prompt_ids"].size(0))
    _install_fake_generate(monkeypatch, model, completion, [])
    loss = distiller.compute_loss(model, batch)  # every rollout is a lone eos, and it is skipped
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())


def test_token_counts_exclude_padding(monkeypatch, chat_tokenizer, batch):
    model = make_model(chat_tokenizer)
    distiller = make_distiller(chat_tokenizer, model)
    _install_fake_generate(monkeypatch, model, _fake_completion(chat_tokenizer, batch), [])
    distiller.compute_loss(model, batch)

    prompt_lengths = [int(m.sum()) for m in batch["prompt_mask"]]
    teacher_lengths = [int(m.sum()) for m in batch["teacher_prompt_mask"]]
    assert batch["prompt_mask"].numel() > sum(prompt_lengths)  # there is padding to leave out
    generated = 3 + 5 + 5
    expected = {
        "generate": sum(prompt_lengths) + generated,
        "teacher": sum(teacher_lengths) + generated,
        "train": sum(prompt_lengths) + generated,
        "eval": 0,
    }
    assert distiller.pop_token_counts() == expected
    assert distiller.pop_token_counts() == dict.fromkeys(expected, 0)

    with torch.no_grad():  # evaluation: the student pass is forward-only
        distiller.compute_loss(model, batch)
    counts = distiller.pop_token_counts()
    assert counts["train"] == 0 and counts["eval"] == expected["train"]

    ledger = ComputeLedger()
    distiller.add_to_ledger(ledger, expected)
    n = distiller.num_parameters
    assert ledger.by_kind == {
        "generate": 2.0 * n * expected["generate"],
        "teacher": 2.0 * n * expected["teacher"],
        "train": 6.0 * n * expected["train"],
    }


def test_gradients_reach_the_student_only(chat_tokenizer, batch):
    model = make_model(chat_tokenizer).train()
    distiller = make_distiller(chat_tokenizer, model, seed=0)
    _perturb(model, seed=2)
    loss = distiller.compute_loss(model, batch)
    loss.backward()
    assert loss.item() > 0
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in distiller.teacher.parameters())


def test_real_rollouts_mask_after_eos_and_seeding(chat_tokenizer, batch):
    model = make_model(chat_tokenizer)
    eos = chat_tokenizer.eos_token_id
    bonus = torch.zeros(len(chat_tokenizer))
    bonus[eos] = 7.0  # eos ~20 % likely per step, so some rollouts end early and some run to the limit
    model.lm_head.register_forward_hook(lambda module, args, output: output + bonus)
    distiller = make_distiller(chat_tokenizer, model, seed=123, max_new_tokens=8)

    state = torch.get_rng_state()
    ids_a, mask_a = distiller.generate(model, batch["prompt_ids"], batch["prompt_mask"])
    assert torch.equal(torch.get_rng_state(), state)  # a seeded distiller leaves the global stream alone
    again = make_distiller(chat_tokenizer, model, seed=123, max_new_tokens=8)
    ids_b, _ = again.generate(model, batch["prompt_ids"], batch["prompt_mask"])
    assert torch.equal(ids_a, ids_b)  # same seed, same call number: same rollouts
    ids_c, _ = distiller.generate(model, batch["prompt_ids"], batch["prompt_mask"])
    assert not torch.equal(ids_a, ids_c)  # next call, new draw

    ends = []
    for row_ids, row_mask in zip(ids_a.tolist(), mask_a.tolist()):
        end = row_ids.index(eos) + 1 if eos in row_ids else len(row_ids)
        ends.append(end)
        assert row_mask == [1] * end + [0] * (len(row_ids) - end)
    assert min(ends) < ids_a.size(1)  # the case the mask exists for did occur


# ---------------------------------------------------------------- checkpoints and wrappers


def test_save_load_round_trip(tmp_path, chat_tokenizer, batch):
    model = make_model(chat_tokenizer)
    distiller = make_distiller(chat_tokenizer, model, seed=5)
    _perturb(distiller.teacher, seed=3)
    distiller.generate(model, batch["prompt_ids"], batch["prompt_mask"])  # one rollout drawn
    distiller.save(str(tmp_path))
    assert os.path.isfile(tmp_path / TEACHER_FILE)

    restored = make_distiller(chat_tokenizer, make_model(chat_tokenizer, seed=9), seed=5)
    restored.load(str(tmp_path))
    saved = distiller.teacher.state_dict()
    for name, value in restored.teacher.state_dict().items():
        assert torch.equal(value, saved[name]), name
    # the rollout counter travels too, so a resumed seeded run draws what the uninterrupted one would
    ids_a, _ = distiller.generate(model, batch["prompt_ids"], batch["prompt_mask"])
    ids_b, _ = restored.generate(model, batch["prompt_ids"], batch["prompt_mask"])
    assert torch.equal(ids_a, ids_b)

    with pytest.raises(FileNotFoundError, match=TEACHER_FILE):
        restored.load(str(tmp_path / "nowhere"))
    fresh = OnPolicyDistiller(DistillConfig(), chat_tokenizer, num_parameters=1)
    with pytest.raises(RuntimeError, match="setup"):
        fresh.save(str(tmp_path))


def test_ddp_wrapped_student(tmp_path, chat_tokenizer, batch):
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        model = make_model(chat_tokenizer).train()
        wrapped = DistributedDataParallel(model)
        distiller = make_distiller(chat_tokenizer, wrapped, seed=0)
        assert type(distiller.teacher) is type(model)  # the copy is of the unwrapped student
        _perturb(model, seed=4)
        loss = distiller.compute_loss(wrapped, batch)
        loss.backward()  # through DDP's reducer: would raise if the forward bypassed the wrapper's hooks
        assert all(p.grad is not None for p in model.parameters())
        old = [p.clone() for p in distiller.teacher.parameters()]
        distiller.update_teacher(wrapped)
        for new, before, student in zip(distiller.teacher.parameters(), old, model.parameters()):
            torch.testing.assert_close(new, 0.99 * before + 0.01 * student, rtol=1e-5, atol=1e-6)
    finally:
        dist.destroy_process_group()


# ---------------------------------------------------------------- the method's premise (issue 20)


def _gold_nll(model, distiller, batch) -> float:
    return distiller.demonstration_gain(model, batch)["student_nll"]


def test_demonstration_gain_is_zero_when_the_model_cannot_read_the_demonstration(chat_tokenizer, arith, caplog):
    """The GPU run's failure: a model that cannot use the demonstration gives a teacher that knows nothing more.

    The learner measures this at the stage's start and says so, instead of distilling a loss to 0 for nothing.
    """
    from types import SimpleNamespace

    from hf_datamix.strategies.on_policy_distill import DistillLearner

    model = make_model(chat_tokenizer)
    batch = DistillationCollator(chat_tokenizer.pad_token_id)([arith[i] for i in range(8)])
    distiller = make_distiller(chat_tokenizer, model)
    gain = distiller.demonstration_gain(model, batch)
    assert gain["student_nll"] > 10 and abs(gain["gain"]) < 0.1  # random init: ~ln(4096) per token, no help
    assert distiller.token_counts["teacher"] > 0 and distiller.token_counts["eval"] > 0
    learner = DistillLearner(DistillConfig(max_new_tokens=4))
    learner.distiller = distiller
    trainer = SimpleNamespace(accelerator=SimpleNamespace(unwrap_model=lambda m: m), model=model)
    with caplog.at_level("WARNING"):
        learner.check_premise(trainer, batch)
    assert "cannot use the demonstration" in caplog.text and learner.demonstration_gain == gain


def test_distillation_teaches_the_student_what_an_informed_teacher_knows(chat_tokenizer, arith):
    """With a teacher that knows the gold answers (trained on them, frozen: rate 0), on-policy reverse KL on the
    student's own samples lowers the student's NLL of the gold answers. A wrong KL direction, mask or position
    would not."""
    rows = [arith[i] for i in range(8)]
    batch = DistillationCollator(chat_tokenizer.pad_token_id)(rows)
    student = make_model(chat_tokenizer, seed=1)
    distiller = make_distiller(chat_tokenizer, student, teacher_update_rate=0.0, max_new_tokens=4, seed=0)
    teacher = distiller.teacher.train().requires_grad_(True)
    optimizer = torch.optim.Adam(teacher.parameters(), lr=1e-2)
    ids = torch.cat([batch["teacher_prompt_ids"], batch["gold_ids"]], dim=1)
    mask = torch.cat([batch["teacher_prompt_mask"], batch["gold_mask"]], dim=1)
    labels = torch.where(
        torch.cat([torch.zeros_like(batch["teacher_prompt_mask"]), batch["gold_mask"]], 1) == 1,
        ids,
        torch.full_like(ids, -100),
    )
    for _ in range(40):  # the teacher learns the gold answers given its prompt
        loss = teacher(input_ids=ids, attention_mask=mask, labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    distiller.teacher = teacher.eval().requires_grad_(False)
    gain = distiller.demonstration_gain(student, batch)
    assert gain["gain"] > 5  # the premise holds by construction
    before = gain["student_nll"]
    optimizer = torch.optim.Adam(student.parameters(), lr=3e-3)
    student.train()
    for _ in range(25):
        loss = distiller.compute_loss(student, batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert _gold_nll(student, distiller, batch) < before - 2.0
