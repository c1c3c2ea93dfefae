"""Tests for shared.finetune (lesson 07): data sets, leakage, label masking, LoRA target modules,
device placement, label scoring, the exercise checks, and the Chinese ROUGE / BLEU of metrics."""

from __future__ import annotations

import hashlib
import json
import math

import pytest
import torch

from shared import checks, metrics
from shared import finetune as ft
from shared.config import FriendlyError
from shared.paths import data_dir

WRITTEN_SHA256 = "9331ec527d32f015dcf31e164025f97249ec440361116030fc4ef6586c8ec322"


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return ft.build_examples()


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from shared.models import chat_model_source

    return AutoTokenizer.from_pretrained(chat_model_source())


def _tiny(model_type: str = "llama", vocab_size: int = 64, device: str = "cpu"):
    """A randomly initialised 2-block model of ``model_type`` (seeded), for shapes and devices."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, hidden_size=16,
                                  intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                                  num_key_value_heads=1, head_dim=8, pad_token_id=0)  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        return AutoModelForCausalLM.from_config(config).eval()


# ---------------------------------------------------------------------------- data
def test_intents_are_the_shared_eight() -> None:
    assert ft.INTENTS == ("order_status", "shipping", "returns_refunds", "account", "payments",
                          "product_question", "talk_to_human", "out_of_scope")  # fmt: skip


def test_dataset_sizes_balance_and_format(splits) -> None:
    assert {s: len(rows) for s, rows in splits.items()} == {"train": 360, "validation": 32,
                                                             "test": 48}  # fmt: skip
    for rows in splits.values():
        counts = {i: sum(r["intent"] == i for r in rows) for i in ft.INTENTS}
        assert len(set(counts.values())) == 1, f"unbalanced: {counts}"
        for r in rows:
            assert r["answer"] == f"intent: {r['intent']}\nreply: {r['reply']}"
            assert "{" not in r["text"] + r["reply"], "an unfilled slot"
    order = next(r for r in splits["test"] if r["intent"] == "order_status")
    assert order["text"].count(order["reply"].split()[3].rstrip(";")) == 1  # order id copied


def test_committed_files_match_the_generator(splits) -> None:
    for split, rows in splits.items():
        lines = (data_dir() / "intents" / f"{split}.jsonl").read_text().splitlines()
        assert [json.loads(line) for line in lines] == rows, f"re-run write_dataset() ({split})"


def test_load_splits_uses_datasets(tmp_path) -> None:
    data = ft.load_splits()
    assert data["test"].num_rows == 48 and "answer" in data["train"].column_names
    with pytest.raises(FriendlyError, match="intent data set is missing"):
        ft.load_splits(tmp_path)


def test_written_test_set_is_frozen_balanced_and_held_out(splits) -> None:
    path = data_dir() / "intents" / "test_written.jsonl"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == WRITTEN_SHA256, "never edit a test set"
    rows = ft.load_written_test()
    assert len(rows) == 112 and len({r["id"] for r in rows}) == 112
    assert all(sum(r["intent"] == i for r in rows) == 14 for i in ft.INTENTS)
    assert ft.find_leakage({**splits, "written": rows}) == {}


def test_no_leakage_between_splits_and_detector_works(splits) -> None:
    assert ft.find_leakage(splits) == {}
    leaky = {"train": splits["train"][:3],
             "test": [{**splits["train"][0], "text": splits["train"][0]["text"].upper() + "!!"},
                      {**splits["train"][1], "text": "a brand new text"}]}  # fmt: skip
    found = ft.find_leakage(leaky)
    assert list(found) == ["train/test"]
    assert sum(h.startswith("template ") for h in found["train/test"]) == 1
    assert sum(not h.startswith("template ") for h in found["train/test"]) == 1
    assert ft.find_leakage({"a": [{"text": "Hi there"}], "b": [{"text": "hi, there."}]}) == {
        "a/b": ["hi there"]
    }


def test_reply_and_parse_answer() -> None:
    assert ft.reply_for("order_status", {"order": "1042"}).startswith("Let me check order 1042")
    with pytest.raises(ValueError, match="unknown intent 'refund'"):
        ft.reply_for("refund", {})
    p = ft.parse_answer("intent: payments\nreply: We accept cards.\nmore")
    assert (p.intent, p.reply) == ("payments", "We accept cards.")
    assert ft.parse_answer("The answer is shipping, I think").intent == "shipping"
    assert ft.parse_answer("Intent = Account").intent == "account"
    assert ft.parse_answer("I am not sure") == ft.Prediction(
        "invalid", "I am not sure", "I am not sure"
    )
    assert ft.parse_answer("intent: shipping\nWe ship fast.").reply == "We ship fast."


# ---------------------------------------------------------------------------- encoding
def test_label_masking_ignores_prompt_tokens(tokenizer) -> None:
    ex = ft.encode_example(tokenizer, "Where is order 1042?", "intent: order_status\nreply: Ok.")
    n_prompt = sum(label == -100 for label in ex["labels"])
    prompt = tokenizer.apply_chat_template(
        [{"role": "system", "content": ft.SYSTEM_PROMPT},
         {"role": "user", "content": "Where is order 1042?"}],
        tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    assert prompt == ft.chat_prompt(tokenizer, "Where is order 1042?")
    assert ex["input_ids"][:n_prompt] == tokenizer(prompt, add_special_tokens=False)["input_ids"]
    answer = ex["labels"][n_prompt:]
    assert answer == ex["input_ids"][n_prompt:] and -100 not in answer
    assert tokenizer.decode(answer) == "intent: order_status\nreply: Ok.<|im_end|>\n"
    with pytest.raises(ValueError, match="over max_length=10"):
        ft.encode_example(tokenizer, "Where is order 1042?", "intent: x", max_length=10)


def test_collate_pads_with_ignored_labels() -> None:
    batch = ft.collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                        {"input_ids": [8], "labels": [8]}], pad_id=0)  # fmt: skip
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


# ---------------------------------------------------------------------------- LoRA targets
def test_config_for_device_takes_targets_from_the_architecture() -> None:
    cpu, gpu = ft.TrainConfig.for_device("cpu"), ft.TrainConfig.for_device("cuda")
    assert cpu.max_steps < gpu.max_steps and cpu.target_modules == ("q_proj", "v_proj")
    assert gpu.target_modules == ("q_proj", "k_proj", "v_proj", "o_proj")
    assert ft.TrainConfig.for_device("cpu", max_steps=3).max_steps == 3
    assert ft.TrainConfig.for_device("cuda", "chatglm").target_modules == (
        "query_key_value", "dense")  # fmt: skip
    with pytest.raises(ValueError, match="no LoRA target modules known for model_type 'gpt2'"):
        ft.target_modules_for("gpt2")
    with pytest.raises(ValueError, match="scope must be one of"):
        ft.target_modules_for("llama", "mlp")


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "qwen3", "mistral", "glm"])
def test_target_modules_name_real_linear_layers(model_type: str) -> None:
    model = _tiny(model_type, device="meta")  # shapes only, no memory
    linear = {n.rsplit(".", 1)[-1] for n, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and n != "lm_head"}  # fmt: skip
    scopes = ft.TARGET_MODULES[model_type]
    assert set(scopes["all"]) == linear, "'all' must be every linear layer of the blocks"
    assert set(scopes["qv"]) <= set(scopes["attention"]) <= set(scopes["all"])


def test_lora_parameter_count_follows_the_config() -> None:
    from peft import LoraConfig, get_peft_model

    for scope in ("qv", "attention", "all"):
        model = _tiny(device="meta")
        names = ft.target_modules_for("llama", scope)
        adapted = [m for n, m in model.named_modules()
                   if isinstance(m, torch.nn.Linear) and n.rsplit(".", 1)[-1] in names]  # fmt: skip
        expected = sum(4 * (m.in_features + m.out_features) for m in adapted)
        config = LoraConfig(r=4, lora_alpha=8, target_modules=list(names), task_type="CAUSAL_LM")
        assert get_peft_model(model, config).get_nb_trainable_parameters()[0] == expected


# ---------------------------------------------------------------------------- devices
def test_to_device_puts_a_cpu_batch_where_the_model_is() -> None:
    model = _tiny(device="meta")  # a second device on a machine without a GPU
    batch = ft.collate([{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}], pad_id=0)
    assert {str(v.device) for v in batch.values()} == {"cpu"}
    with pytest.raises(RuntimeError, match="device"):
        model.model.norm(torch.ones(1, 3, 16))  # the bug: a CPU tensor into a layer elsewhere
    moved = ft.to_device(batch, model)
    assert ft.model_device(model) == torch.device("meta")
    assert {v.device for v in moved.values()} == {p.device for p in model.parameters()}
    hidden = model.model.norm(model.model.embed_tokens(moved["input_ids"]))  # (1, 3, 16)
    assert model.lm_head(hidden).shape == (1, 3, 64)
    assert ft.to_device({"n": 3}, model) == {"n": 3}  # non-tensors pass through


class WrongDevice(AssertionError):
    """A tensor reached a layer whose weights sit on another device."""


def _guarded(model):
    """Make every layer (and the model's own forward) check that its tensor inputs sit on the
    device of its weights: on the ``meta`` device this catches a CPU tensor that would be
    silently accepted (an embedding lookup with CPU ids on a meta model does not raise)."""

    def check(device):
        def hook(module, args, kwargs):
            for x in [*args, *kwargs.values()]:
                if isinstance(x, torch.Tensor) and x.device != device:
                    raise WrongDevice(
                        f"{type(module).__name__} on {device} got a {x.device} tensor"
                    )

        return hook

    model.register_forward_pre_hook(check(ft.model_device(model)), with_kwargs=True)
    for module in model.modules():
        own = next(module.parameters(recurse=False), None)
        if own is not None:
            module.register_forward_pre_hook(check(own.device), with_kwargs=True)
    return model


def test_training_and_scoring_keep_every_tensor_on_the_model_device(tokenizer) -> None:
    from peft import LoraConfig, get_peft_model

    model = _tiny(vocab_size=len(tokenizer), device="meta")  # "meta" plays the GPU
    model.set_attn_implementation("eager")  # sdpa reads a mask value, which meta tensors lack
    model = _guarded(model)
    ids = torch.tensor([[1, 2, 3]])  # a CPU tensor
    with pytest.raises(WrongDevice, match="got a cpu tensor"):
        model(input_ids=ids)  # the bug the guard exists for
    with pytest.raises(WrongDevice):
        model.model.layers[0].self_attn.q_proj(torch.ones(1, 16))  # a CPU tensor into q_proj
    model(input_ids=ids.to("meta"))  # right: no error
    config = ft.TrainConfig.for_device("cuda")  # the GPU settings: all four attention projections
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, task_type="CAUSAL_LM",
                      target_modules=list(config.target_modules))  # fmt: skip
    peft_model = _guarded(get_peft_model(model, lora))
    rows = [
        ft.encode_example(tokenizer, "Where is order 1042?", "intent: order_status\nreply: Ok.")
    ]
    peft_model(**ft.to_device(ft.collate(rows, tokenizer.pad_token_id), peft_model)).loss.backward()
    # Label scoring runs every forward pass on the model's device; on "meta" only the final copy
    # of the scores back to the CPU fails (a meta tensor has no data).
    with pytest.raises(NotImplementedError, match="meta tensor"):
        ft.label_logprobs(
            peft_model, tokenizer, ["Where is my order?", "hi"], ["shipping", "account"]
        )


# ---------------------------------------------------------------------------- label scoring
def test_label_logprobs_equal_a_full_forward_pass(tokenizer) -> None:
    model = _tiny(vocab_size=len(tokenizer))
    messages = ["Where is my order 1042?", "Do you ship to Japan?", "hi"]
    labels = ["order_status", "shipping", "out_of_scope"]
    scores = ft.label_logprobs(model, tokenizer, messages, labels, system=ft.ZERO_SHOT_PROMPT)
    assert scores.shape == (3, 3)
    for i, message in enumerate(messages):
        prompt = tokenizer(ft.chat_prompt(tokenizer, message, ft.ZERO_SHOT_PROMPT),
                           add_special_tokens=False)["input_ids"]  # fmt: skip
        for j, label in enumerate(labels):
            answer = tokenizer(f"intent: {label}\n", add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([prompt + answer])).logits[0]  # (T, V)
            logp = torch.log_softmax(logits[len(prompt) - 1 : -1], dim=-1)
            by_hand = logp.gather(-1, torch.tensor(answer)[:, None]).sum().item()
            assert scores[i, j].item() == pytest.approx(by_hand, abs=1e-4)
    one = ft.label_logprobs(model, tokenizer, messages[:1], labels, system=ft.ZERO_SHOT_PROMPT)
    assert torch.allclose(one[0], scores[0], atol=1e-4)  # no shared prefix to reuse: same
    assert ft.label_logprobs(model, tokenizer, messages[:1], labels[:1]).shape == (1, 1)
    model.config.use_cache = False  # as Trainer may leave it: the prompt's cache is still used
    small = ft.label_logprobs(
        model, tokenizer, messages, labels, system=ft.ZERO_SHOT_PROMPT, batch_size=2
    )  # two batches, padded differently
    assert torch.allclose(small, scores, atol=1e-4)


def test_lora_trains_saves_reloads_and_merges(tokenizer, splits, tmp_path) -> None:
    from peft import LoraConfig, PeftModel, get_peft_model

    model = _tiny(vocab_size=len(tokenizer))
    cfg = ft.TrainConfig.for_device("cpu")
    lora = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=0.0,
                      target_modules=list(cfg.target_modules), task_type="CAUSAL_LM")  # fmt: skip
    model = get_peft_model(model, lora)
    rows = [ft.encode_example(tokenizer, r["text"], r["answer"]) for r in splits["train"][:8]]
    batch = ft.to_device(ft.collate(rows, tokenizer.pad_token_id), model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.save_pretrained(tmp_path / "adapter")
    ids = batch["input_ids"][:1]
    with torch.no_grad():
        trained = model(input_ids=ids).logits
        with model.disable_adapter():
            original = model(input_ids=ids).logits
    reloaded = PeftModel.from_pretrained(_tiny(vocab_size=len(tokenizer)), tmp_path / "adapter")
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, trained, atol=1e-5)
        assert not torch.allclose(trained, original, atol=1e-4)
        merged = reloaded.merge_and_unload()
        assert torch.allclose(merged(input_ids=ids).logits, trained, atol=1e-4)
    assert not any("lora" in name for name, _ in merged.named_parameters())


# ---------------------------------------------------------------------------- exercise checks
@pytest.fixture()
def _fresh_checks():
    checks.reset()
    yield
    checks.reset()


def test_rouge_exercise_check(_fresh_checks, capsys) -> None:
    assert ft.check_rouge_exercise(14 / 19)
    assert not ft.check_rouge_exercise(7 / 10)  # recall, not F1
    assert not ft.check_rouge_exercise(None)
    assert "0.736" not in capsys.readouterr().out  # the answer is never printed


def test_lora_exercise_check(_fresh_checks, capsys) -> None:
    from peft import LoraConfig

    seven = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    right = 30 * 4 * (2 * (576 + 576) + 2 * (576 + 192) + 2 * (576 + 1536) + (1536 + 576))
    config = LoraConfig(r=4, lora_alpha=8, target_modules=seven, task_type="CAUSAL_LM")
    assert ft.check_lora_exercise(config, right)
    assert ft.check_lora_exercise(
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"), right
    )
    assert not ft.check_lora_exercise(config, 30 * 4 * (2 * 1152 + 2 * 768))  # attention only
    attention = LoraConfig(r=4, lora_alpha=8, target_modules=seven[:4], task_type="CAUSAL_LM")
    assert not ft.check_lora_exercise(attention, right)
    assert not ft.check_lora_exercise(LoraConfig(r=8, lora_alpha=8, target_modules=seven), right)
    assert not ft.check_lora_exercise(None, None)
    assert str(right) not in capsys.readouterr().out


def test_mcnemar_exercise_check(_fresh_checks) -> None:
    def exact(b: int, c: int) -> float:
        n = b + c
        tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n if n else 1.0
        return min(1.0, 2 * tail)

    assert ft.check_mcnemar_exercise(exact)
    one_sided = lambda b, c: sum(math.comb(b + c, i) for i in range(min(b, c) + 1)) / 2 ** (b + c)  # noqa: E731
    assert not ft.check_mcnemar_exercise(one_sided)
    assert not ft.check_mcnemar_exercise(lambda b, c: None)


# ---------------------------------------------------------------------------- Chinese metrics
def test_chinese_tokenize() -> None:
    assert metrics.chinese_tokenize("退货30天!") == ["退", "货", "30", "天"]
    assert metrics.chinese_tokenize("Maple & Mill 退货") == ["maple", "mill", "退", "货"]
    assert metrics.chinese_tokenize("30天内可以退货", "jieba") == ["30", "天内", "可以", "退货"]
    with pytest.raises(ValueError, match="mode must be"):
        metrics.chinese_tokenize("退货", "words")
    assert metrics.rouge_tokenize("30天内可以退货") == ["30"]  # why Chinese needs its own


def test_rouge_on_chinese_by_hand() -> None:
    ref, out = "退货期限是三十天", "三十天内可以退货"  # 8 characters each
    zh = metrics.chinese_tokenize
    # shared characters: 退 货 三 十 天 -> 5 of 8 on both sides
    assert metrics.rouge_n(out, ref, 1, tokenize=zh) == pytest.approx((5 / 8, 5 / 8, 5 / 8))
    # bigrams: 7 on each side; shared 退货, 三十, 十天
    assert metrics.rouge_n(out, ref, 2, tokenize=zh) == pytest.approx((3 / 7, 3 / 7, 3 / 7))
    # longest common subsequence: 三十天 (3)
    assert metrics.rouge_l(out, ref, tokenize=zh) == pytest.approx((3 / 8, 3 / 8, 3 / 8))
    opposite = metrics.rouge_n("30天内不能退货", "30天内可以退货", 1, tokenize=zh)
    assert opposite.f1 == pytest.approx(5 / 7)
    assert (
        metrics.rouge_n("30天内不能退货", "30天内可以退货", 1).f1 == 1.0
    )  # the default's blind spot
    assert metrics.rouge([out], [ref], tokenize=zh)["rouge2"] == pytest.approx(3 / 7)


def test_rouge_on_chinese_matches_rouge_score() -> None:
    from rouge_score import rouge_scorer

    class Chars:
        def tokenize(self, text: str) -> list[str]:
            return metrics.chinese_tokenize(text)

    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], tokenizer=Chars())
    pairs = [("退货期限是三十天", "三十天内可以退货"), ("订单1042已经发货了", "您的订单1042已发货"),
             ("我们接受支付宝和微信支付", "可以用微信或者支付宝付款吗")]  # fmt: skip
    for ref, out in pairs:
        theirs = scorer.score(ref, out)
        ours = {"rouge1": metrics.rouge_n(out, ref, 1, metrics.chinese_tokenize),
                "rouge2": metrics.rouge_n(out, ref, 2, metrics.chinese_tokenize),
                "rougeL": metrics.rouge_l(out, ref, metrics.chinese_tokenize)}  # fmt: skip
        for key, value in ours.items():
            assert value == pytest.approx(tuple(theirs[key]), abs=1e-12)


def test_bleu_on_chinese_by_hand_and_sacrebleu() -> None:
    import sacrebleu

    out, ref = "30天内不能退货", "30天内可以退货"  # 7 tokens each with the zh tokenizer
    # precisions 5/7, 3/6, 1/5; no 4-gram matches: smoothed to 1 / (2 x 4); no brevity penalty
    by_hand = 100 * (5 / 7 * 3 / 6 * 1 / 5 * 1 / 8) ** 0.25
    assert metrics.bleu([out], [ref], tokenize="zh") == pytest.approx(by_hand, abs=1e-9)
    assert metrics.bleu([out], [ref]) == 0.0  # 13a sees one token per sentence: no bigrams
    outs = ["您的订单1042已发货", "我们接受支付宝", "三十天内可以退货"]
    refs = ["订单1042已经发货了", "我们接受支付宝和微信支付", "退货期限是三十天"]
    expected = sacrebleu.corpus_bleu(outs, [refs], tokenize="zh").score
    assert metrics.bleu(outs, refs, tokenize="zh") == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="tokenize must be"):
        metrics.bleu(outs, refs, tokenize="char")
