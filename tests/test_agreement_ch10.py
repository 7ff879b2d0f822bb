"""Notebook 10 and utils.dpo must agree: the bonus's functions typed in the notebook (PreferenceDataset,
custom_collate_fn, compute_logprobs, compute_dpo_loss, compute_dpo_loss_batch, compute_dpo_loss_loader,
evaluate_dpo_loss_loader, train_model_dpo_simple) are pulled out of it (tests/nbextract.py) and compared with the
utils versions on the same seeded input."""

import copy
import random

import pytest
import torch
from nbextract import extract
from torch.utils.data import DataLoader

from utils import GPT_CONFIG_124M, GPTModel, fetch, gpt2_tokenizer
from utils import dpo as ours
from utils.chat import AlpacaChatTemplate

NOTEBOOK = "10_preference_tuning.ipynb"
NAMES = ("PreferenceDataset", "custom_collate_fn", "compute_logprobs", "compute_dpo_loss", "compute_dpo_loss_batch",
         "compute_dpo_loss_loader", "evaluate_dpo_loss_loader", "train_model_dpo_simple")


@pytest.fixture(scope="module")
def nb():
    return extract(NOTEBOOK, *NAMES)


@pytest.fixture(scope="module")
def template():
    return AlpacaChatTemplate(gpt2_tokenizer())


@pytest.fixture(scope="module")
def pairs():
    return ours.load_preference_data(fetch("instruction-data-with-preference"))


def small_gpt(seed):
    torch.manual_seed(seed)
    return GPTModel({**GPT_CONFIG_124M, "emb_dim": 32, "n_heads": 2, "n_layers": 2, "context_length": 256,
                     "drop_rate": 0.0})


def loaders(dataset_class, collate, data, template, batch_size=4):
    dataset = dataset_class(data, template)
    torch.manual_seed(123)
    return (DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=collate),
            DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate))


def test_preference_dataset_agrees_on_every_entry(nb, template, pairs):
    theirs, mine = nb["PreferenceDataset"](pairs, template), ours.PreferenceDataset(pairs, template)
    assert len(theirs) == len(mine) == 1100 and all(theirs[i] == mine[i] for i in range(1100))


@pytest.mark.parametrize("allowed_max_length, mask_prompt_tokens", [(None, True), (12, True), (None, False)])
def test_collate_agrees_on_seeded_batches(nb, allowed_max_length, mask_prompt_tokens):
    rng = random.Random(123)
    for _ in range(20):
        batch = []
        for _ in range(rng.randint(1, 5)):
            prompt = [rng.randrange(50257) for _ in range(rng.randint(1, 8))]
            batch.append({"prompt": prompt, **{k: prompt + [rng.randrange(50257) for _ in range(rng.randint(1, 9))]
                                                for k in ("chosen", "rejected")}})
        kwargs = {"allowed_max_length": allowed_max_length, "mask_prompt_tokens": mask_prompt_tokens}
        a, b = nb["custom_collate_fn"](batch, **kwargs), ours.custom_collate_fn(batch, **kwargs)
        assert a.keys() == b.keys() and all(torch.equal(x, y) for x, y in zip(a["prompt"], b["prompt"]))
        assert all(torch.equal(a[k], b[k]) for k in ("chosen", "rejected", "chosen_mask", "rejected_mask"))


def test_logprobs_and_loss_agree_on_seeded_tensors(nb):
    torch.manual_seed(123)
    logits, labels = torch.randn(3, 7, 20), torch.randint(0, 20, (3, 7))
    mask = torch.rand(3, 7) > 0.4
    mask[:, 1] = True  # every row selects at least one target
    for m in (mask, None):
        assert torch.equal(nb["compute_logprobs"](logits, labels, m), ours.compute_logprobs(logits, labels, m))
    logprobs = [-torch.rand(5) * 3 for _ in range(4)]
    for beta in (0.1, 0.5):
        for x, y in zip(nb["compute_dpo_loss"](*logprobs, beta=beta), ours.compute_dpo_loss(*logprobs, beta=beta)):
            assert torch.equal(x, y)


def test_batch_loader_and_evaluation_agree(nb, template, pairs):
    policy, reference = small_gpt(1), small_gpt(2)
    train, val = loaders(ours.PreferenceDataset, ours.custom_collate_fn, pairs[:10], template)
    batch = next(iter(val))
    for x, y in zip(nb["compute_dpo_loss_batch"](batch, policy, reference, 0.1),
                    ours.compute_dpo_loss_batch(batch, policy, reference, 0.1)):
        assert torch.allclose(x, y, atol=1e-7)
    for num_batches in (None, 1, 5):  # 10 pairs in batches of 4: the last one holds 2
        a = nb["compute_dpo_loss_loader"](val, policy, reference, 0.1, num_batches=num_batches)
        b = ours.compute_dpo_loss_loader(val, policy, reference, 0.1, num_batches=num_batches)
        assert a == pytest.approx(b, abs=1e-7)
    torch.manual_seed(0)
    theirs = nb["evaluate_dpo_loss_loader"](policy, reference, train, val, 0.1, 2)
    torch.manual_seed(0)
    mine = ours.evaluate_dpo_loss_loader(policy, reference, train, val, 0.1, 2)
    assert theirs == pytest.approx({k: mine[k] for k in theirs}, abs=1e-7)


def test_training_agrees(nb, template, pairs, capsys):
    runs = []
    for train_loop in (nb["train_model_dpo_simple"], ours.train_model_dpo_simple):
        policy = small_gpt(3)
        reference = copy.deepcopy(policy).eval().requires_grad_(False)
        train, val = loaders(ours.PreferenceDataset, ours.custom_collate_fn, pairs[:16], template)
        optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-3, weight_decay=0.01)
        extra = {"progress": False, "max_new_tokens": 60} if train_loop is ours.train_model_dpo_simple else {}
        tracking = train_loop(policy, reference, train, val, optimizer, 2, 0.1, eval_freq=2, eval_iter=1,
                              start_context="Name a color.", tokenizer=template, **extra)
        runs.append((tracking, policy.state_dict(), capsys.readouterr().out.splitlines()))
    (theirs, theirs_weights, theirs_out), (mine, mine_weights, mine_out) = runs
    assert set(theirs) <= set(mine) and all(theirs[k] == pytest.approx(mine[k], abs=1e-6) for k in theirs)
    assert all(torch.allclose(theirs_weights[k], mine_weights[k], atol=1e-6) for k in theirs_weights)
    assert [line.split(", Train reward acc")[0] for line in mine_out] == theirs_out  # the same lines, then accuracy
