"""utils.dpo: the DPO loss, rewards and log-probabilities against hand computations on tiny tensors, the masks, ln 2
at the start, the frozen reference, bad input named by its entry, and a tiny end-to-end run that learns."""

import copy
import json
import math
from functools import partial

import pytest
import torch
from torch.utils.data import DataLoader

from utils import GPT_CONFIG_124M, GPTModel, fetch, gpt2_tokenizer
from utils.chat import AlpacaChatTemplate
from utils.dpo import (
    PreferenceDataset,
    check_reference,
    compute_dpo_loss,
    compute_dpo_loss_batch,
    compute_dpo_loss_loader,
    compute_logprobs,
    custom_collate_fn,
    dpo_metrics_loader,
    evaluate_dpo_loss_loader,
    load_preference_data,
    plural,
    preference_messages,
    train_model_dpo_simple,
)

PAIRS = [
    {"instruction": "Name a primary color.", "input": "", "chosen": "Red.", "rejected": "Red, obviously."},
    {"instruction": "Fix the spelling.", "input": "freind", "chosen": "The correct spelling is 'friend'.",
     "rejected": "It's 'friend', get it together."},
    {"instruction": "Opposite of hot?", "input": "", "chosen": "Cold.", "rejected": "Cold, duh."},
    {"instruction": "Say hello.", "input": "", "chosen": "Hello! How can I help?", "rejected": "What do you want?"},
]


@pytest.fixture(scope="module")
def template():
    return AlpacaChatTemplate(gpt2_tokenizer())


def small_gpt(seed=123):
    """A GPTModel small enough for the tests: GPT-2's vocabulary, 2 layers of width 32, context 256."""
    torch.manual_seed(seed)
    return GPTModel({**GPT_CONFIG_124M, "emb_dim": 32, "n_heads": 2, "n_layers": 2, "context_length": 256,
                     "drop_rate": 0.0})


def loader(data, template, batch_size=2, shuffle=False):
    return DataLoader(PreferenceDataset(data, template), batch_size=batch_size, shuffle=shuffle,
                      collate_fn=custom_collate_fn, drop_last=shuffle)


# --- the loss and the log-probabilities by hand ----------------------------------------------------------------


def test_compute_logprobs_is_the_mean_log_probability_of_the_selected_next_tokens():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5)
    labels = torch.tensor([[1, 2, 3, 4], [0, 0, 1, 2]])
    mask = torch.tensor([[False, False, True, True], [False, True, True, False]])
    probs = torch.softmax(logits, dim=-1)
    # position t predicts token t + 1: row 0 keeps targets 3 and 4 (predicted at 1, 2), row 1 targets 0 and 1 (at 0, 1)
    by_hand = torch.stack([(probs[0, 1, 3].log() + probs[0, 2, 4].log()) / 2,
                           (probs[1, 0, 0].log() + probs[1, 1, 1].log()) / 2])
    assert torch.allclose(compute_logprobs(logits, labels, mask), by_hand, atol=1e-6)
    unmasked = torch.stack([sum(probs[b, t, labels[b, t + 1]].log() for t in range(3)) / 3 for b in range(2)])
    assert torch.allclose(compute_logprobs(logits, labels), unmasked, atol=1e-6)


def test_compute_dpo_loss_and_rewards_by_hand():
    policy_chosen, policy_rejected = torch.tensor([-1.0, -2.0]), torch.tensor([-3.0, -1.5])
    reference_chosen, reference_rejected = torch.tensor([-1.5, -2.0]), torch.tensor([-2.5, -1.0])
    loss, chosen_reward, rejected_reward = compute_dpo_loss(policy_chosen, policy_rejected, reference_chosen,
                                                            reference_rejected, beta=0.5)
    # pair 0: (-1 - -3) - (-1.5 - -2.5) = 1; pair 1: (-2 - -1.5) - (-2 - -1) = 0.5
    by_hand = (math.log(1 + math.exp(-0.5 * 1.0)) + math.log(1 + math.exp(-0.5 * 0.5))) / 2
    assert loss.item() == pytest.approx(by_hand, abs=1e-6)
    assert chosen_reward.item() == pytest.approx((0.5 + 0.0) / 2)  # policy minus reference, beta left out
    assert rejected_reward.item() == pytest.approx((-0.5 + -0.5) / 2)
    same = compute_dpo_loss(policy_chosen, policy_rejected, policy_chosen, policy_rejected)
    assert same[0].item() == pytest.approx(math.log(2)) and same[1].item() == same[2].item() == 0


# --- data, masks ------------------------------------------------------------------------------------------------


def test_masks_select_exactly_the_answer_and_its_end_of_turn_token(template):
    batch = next(iter(loader(PAIRS[:2], template)))
    tokenizer = template.tokenizer
    assert batch["chosen"].shape == batch["rejected"].shape == batch["chosen_mask"].shape
    longest = max(len(template.encode(preference_messages(e) + [{"role": "assistant", "content": e[k]}], False))
                  for e in PAIRS[:2] for k in ("chosen", "rejected"))
    assert batch["chosen"].shape == (2, longest + 1)  # at least one padding token, as the bonus pads
    for i, entry in enumerate(PAIRS[:2]):
        for key in ("chosen", "rejected"):
            ids, mask = batch[key][i], batch[f"{key}_mask"][i]
            assert tokenizer.decode(ids[mask].tolist()) == entry[key] + "<|endoftext|>"
            prompt = len(batch["prompt"][i])
            assert not mask[:prompt].any() and tokenizer.decode(ids[:prompt].tolist()).endswith("### Response:\n")


def test_allowed_max_length_and_device(template):
    collate = partial(custom_collate_fn, allowed_max_length=10, device="cpu")
    batch = collate([PreferenceDataset(PAIRS[:1], template)[0]])
    assert batch["chosen"].shape == batch["rejected_mask"].shape == (1, 10)


def test_the_book_file_loads_with_its_split_and_names_its_six_equal_pairs(capsys):
    data = load_preference_data(fetch("instruction-data-with-preference"))
    assert len(data) == 1100
    assert "entries 122, 226, 400, 566, 628, 676 of instruction-data-with-preference.json" in capsys.readouterr().out


@pytest.mark.parametrize("entry, words", [
    ({"instruction": "x", "chosen": "a"}, "entry 1 has no 'rejected'"),
    ({"instruction": "x", "chosen": "", "rejected": "b"}, "entry 1 has no 'chosen'"),
    ({"instruction": "x", "chosen": "a", "rejected": "b", "input": 3}, "entry 1: 'input' must be a string"),
    ("just text", "entry 1 is a str"),
])
def test_a_broken_entry_is_named(tmp_path, entry, words):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([PAIRS[0], entry]), encoding="utf-8")
    with pytest.raises(ValueError, match=words):
        load_preference_data(path)


def test_an_empty_file_or_list_is_refused(tmp_path):
    path = tmp_path / "pairs.json"
    path.write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="is empty"):
        load_preference_data(path)
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(ValueError, match="non-empty list"):
        load_preference_data(path)


def test_an_equal_pair_gets_one_line(tmp_path, capsys):
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps([PAIRS[0], {**PAIRS[1], "rejected": PAIRS[1]["chosen"]}]), encoding="utf-8")
    assert len(load_preference_data(path)) == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "entries 1 of pairs.json have the same chosen and rejected answer" in out


def test_a_pair_longer_than_the_context_is_named(template):
    long = {**PAIRS[0], "rejected": "no " * 300}
    with pytest.raises(ValueError, match="entry 1: prompt and rejected answer make .* context of 256"):
        PreferenceDataset([PAIRS[0], long], template, max_length=256)


def test_an_empty_loader_is_refused(template):
    empty = DataLoader(PreferenceDataset(PAIRS[:1], template), batch_size=2, drop_last=True,
                       collate_fn=custom_collate_fn)
    model = small_gpt()
    with pytest.raises(ValueError, match="has no batches"):
        compute_dpo_loss_loader(empty, model, copy.deepcopy(model), beta=0.1)


# --- the reference ----------------------------------------------------------------------------------------------


def test_ln2_at_the_start_rewards_zero_and_no_reward_accuracy(template):
    policy = small_gpt()
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    metrics = dpo_metrics_loader(loader(PAIRS, template), policy.eval(), reference, beta=0.1)
    assert metrics["loss"] == pytest.approx(math.log(2), abs=1e-7)
    assert metrics["chosen_reward"] == metrics["rejected_reward"] == metrics["reward_accuracy"] == 0
    assert metrics["preference"] == metrics["reference_preference"]


def test_the_reference_never_receives_gradients(template):
    policy = small_gpt()
    reference = copy.deepcopy(policy)  # not even frozen: the loss reads it under no_grad
    loss, _, _ = compute_dpo_loss_batch(next(iter(loader(PAIRS, template))), policy, reference, beta=0.1)
    loss.backward()
    assert all(p.grad is None for p in reference.parameters())
    assert all(p.grad is not None for p in policy.parameters())


def test_the_policy_itself_as_reference_is_refused(template):
    policy = small_gpt()
    batch = next(iter(loader(PAIRS, template)))
    with pytest.raises(ValueError, match="reference model is the policy itself"):
        compute_dpo_loss_batch(batch, policy, policy, beta=0.1)
    sharing = small_gpt()
    sharing.out_head = policy.out_head  # one weight in common is enough to move the reference
    with pytest.raises(ValueError, match="shares its weights"):
        check_reference(policy, sharing)


# --- evaluation and training ------------------------------------------------------------------------------------


def test_loader_values_are_means_over_pairs(template):
    policy, reference = small_gpt(1), small_gpt(2)
    batches = loader(PAIRS, template, batch_size=3)  # one batch of 3 and one of 1
    per_pair = [compute_dpo_loss_batch(b, policy, reference, 0.1)[0].item() for b in loader(PAIRS, template, 1)]
    loss, chosen, rejected = compute_dpo_loss_loader(batches, policy, reference, 0.1)
    assert loss == pytest.approx(sum(per_pair) / 4, abs=1e-6)
    assert compute_dpo_loss_loader(batches, policy, reference, 0.1, num_batches=1)[0] == pytest.approx(
        sum(per_pair[:3]) / 3, abs=1e-6)


def test_evaluate_keeps_the_bonus_keys_and_adds_reward_accuracy(template):
    policy, reference = small_gpt(1), small_gpt(2)
    res = evaluate_dpo_loss_loader(policy, reference, loader(PAIRS, template), loader(PAIRS[:2], template), 0.1, 1)
    assert {"train_loss", "train_chosen_reward", "train_rejected_reward", "val_loss", "val_chosen_reward",
            "val_rejected_reward", "train_reward_accuracy", "val_reward_accuracy", "val_chosen_logprob"} <= set(res)
    assert policy.training  # evaluation hands the policy back in training mode, as the bonus does
    assert [plural(k) for k in ("train_loss", "val_reward_accuracy", "tokens_seen")] == [
        "train_losses", "val_reward_accuracies", "tokens_seens"]


def test_a_tiny_run_lowers_the_loss_and_raises_reward_accuracy(template, capsys):
    policy = small_gpt()
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    torch.manual_seed(123)
    train_loader = loader(PAIRS, template, shuffle=True)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3)
    tracking = train_model_dpo_simple(policy, reference, train_loader, loader(PAIRS, template), optimizer, 5, 0.1,
                                      eval_freq=2, eval_iter=2, start_context=None, tokenizer=template,
                                      progress=False)
    assert len(tracking["train_losses"]) == len(tracking["tokens_seen"]) == 5  # steps 0, 2, 4, 6, 8
    assert tracking["val_losses"][-1] < math.log(2) - 0.01
    assert tracking["val_reward_accuracies"][-1] == 1.0 and tracking["val_reward_accuracies"][0] < 1.0
    assert "Val reward acc 100%" in capsys.readouterr().out
    assert all(p.grad is None for p in reference.parameters())


def test_training_prints_the_policys_answer_after_each_epoch(template, capsys):
    policy = small_gpt()
    reference = copy.deepcopy(policy).eval().requires_grad_(False)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-4)
    train_model_dpo_simple(policy, reference, loader(PAIRS[:2], template, shuffle=True), loader(PAIRS[:2], template),
                           optimizer, 1, 0.1, eval_freq=1, eval_iter=1, start_context="Name a color.",
                           tokenizer=template, progress=False, max_new_tokens=3)
    assert len(capsys.readouterr().out.splitlines()) == 2  # one evaluation line, one answer
    assert policy.training
