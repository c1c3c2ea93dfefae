"""Tests for shared.finetune: data set, leakage check, label masking, LoRA training and saving."""

from __future__ import annotations

import json

import pytest
import torch

from shared import finetune as ft
from shared.config import FriendlyError
from shared.paths import data_dir


@pytest.fixture(scope="module")
def splits() -> dict[str, list[dict]]:
    return ft.build_examples()


@pytest.fixture(scope="module")
def tok_model():
    from shared.models import load_chat_model

    return load_chat_model(device="cpu")


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


def test_label_masking_ignores_prompt_tokens(tok_model) -> None:
    tok, _ = tok_model
    ex = ft.encode_example(tok, "Where is order 1042?", "intent: order_status\nreply: Checking.")
    n_prompt = sum(label == -100 for label in ex["labels"])
    prompt = tok.apply_chat_template(
        [{"role": "system", "content": ft.SYSTEM_PROMPT},
         {"role": "user", "content": "Where is order 1042?"}],
        tokenize=False, add_generation_prompt=True,
    )  # fmt: skip
    assert ex["input_ids"][:n_prompt] == tok(prompt, add_special_tokens=False)["input_ids"]
    assert ex["labels"][:n_prompt] == [-100] * n_prompt
    answer = ex["labels"][n_prompt:]
    assert answer == ex["input_ids"][n_prompt:] and -100 not in answer
    assert tok.decode(answer) == "intent: order_status\nreply: Checking.<|im_end|>\n"
    with pytest.raises(ValueError, match="over max_length=10"):
        ft.encode_example(tok, "Where is order 1042?", "intent: x", max_length=10)


def test_collate_pads_with_ignored_labels() -> None:
    batch = ft.collate([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                        {"input_ids": [8], "labels": [8]}], pad_id=0)  # fmt: skip
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def test_masked_loss_is_the_mean_over_answer_tokens(tok_model) -> None:
    tok, model = tok_model
    ex = ft.encode_example(tok, "Hi", "intent: account\nreply: Sure.")
    batch = ft.collate([ex], tok.pad_token_id)
    with torch.no_grad():
        loss = model(**batch).loss.item()
        logits = model(input_ids=batch["input_ids"]).logits[0, :-1]  # (T-1, V)
    targets = batch["labels"][0, 1:]
    keep = targets != -100
    by_hand = torch.nn.functional.cross_entropy(logits[keep], targets[keep]).item()
    assert loss == pytest.approx(by_hand, rel=1e-4)


def test_config_for_device() -> None:
    cpu, gpu = ft.TrainConfig.for_device("cpu"), ft.TrainConfig.for_device("cuda")
    assert cpu.max_steps < gpu.max_steps and cpu.target_modules == ("q_proj", "v_proj")
    assert ft.TrainConfig.for_device("cpu", max_steps=3).max_steps == 3


def test_lora_trains_saves_and_reloads(tok_model, splits, tmp_path) -> None:
    from peft import PeftModel

    from shared.models import load_chat_model

    tok, _ = tok_model
    _, base = load_chat_model(device="cpu")  # a private copy: add_lora changes the model
    cfg = ft.TrainConfig.for_device("cpu", max_steps=2, eval_every=1, batch_size=4)
    model = ft.add_lora(base, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # 30 layers; q_proj 576 -> 576 and v_proj 576 -> 192 each get A (r x in) and B (out x r)
    assert trainable == 30 * ((8 * 576 + 576 * 8) + (8 * 576 + 192 * 8)) == 460_800
    result = ft.train_lora(model, tok, splits["train"][:8], splits["validation"][:4], cfg,
                           progress=False)  # fmt: skip
    assert len(result.train_loss) == 2 and [s for s, _ in result.val_loss] == [1, 2]
    assert result.best_step == min(result.val_loss, key=lambda sv: sv[1])[0]
    assert result.val_loss[-1][1] < result.val_loss[0][1] + 1.0
    b = next(v for k, v in model.state_dict().items() if "lora_B" in k)
    assert b.abs().sum() > 0, "B starts at zero and must have moved"

    model.save_pretrained(tmp_path / "adapter")
    assert (tmp_path / "adapter" / "adapter_config.json").is_file()
    ids = tok("Where is my order?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        trained = model(input_ids=ids).logits
        with model.disable_adapter():
            original = model(input_ids=ids).logits
    _, fresh = load_chat_model(device="cpu")
    reloaded = PeftModel.from_pretrained(fresh, tmp_path / "adapter").eval()
    with torch.no_grad():
        assert torch.allclose(reloaded(input_ids=ids).logits, trained, atol=1e-5)
        assert not torch.allclose(trained, original, atol=1e-3)
        merged = reloaded.merge_and_unload()
        assert torch.allclose(merged(input_ids=ids).logits, trained, atol=1e-4)
    assert not any("lora" in name for name, _ in merged.named_parameters())
