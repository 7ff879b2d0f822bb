"""Chapter 6: the definitions the notebook teaches agree with the ones in utils.spam (tests/nbextract.py)."""

import warnings

import pytest
import torch
from nbextract import extract
from torch.utils.data import DataLoader, TensorDataset

from utils import fetch, gpt2_tokenizer
from utils import spam as ours

NB06 = "06_spam_classification.ipynb"


@pytest.fixture(scope="module")
def nb06():
    return extract(
        NB06, "create_balanced_dataset", "random_split", "SpamDataset", "calc_accuracy_loader", "calc_loss_batch",
        "calc_loss_loader",
    )


def test_balance_and_split_agree(nb06):
    rows = ours.read_sms_spam(fetch("sms-spam"))
    balanced = nb06["create_balanced_dataset"](rows)
    assert balanced == ours.create_balanced_dataset(rows)
    assert nb06["random_split"](balanced, 0.7, 0.1) == ours.random_split(balanced, 0.7, 0.1)
    assert nb06["random_split"](balanced, 0.5, 0.3, seed=5) == ours.random_split(balanced, 0.5, 0.3, seed=5)


def test_spam_dataset_agrees(nb06, tmp_path):
    tokenizer = gpt2_tokenizer()
    path = ours.write_split_csv([(0, "Hi there"), (1, 'WIN "now", call 0800'), (0, "ok, see you at 8 then")], tmp_path / "s.csv")
    for kwargs in ({}, {"max_length": 4}, {"max_length": 30}):
        with warnings.catch_warnings(record=True) as caught_nb:
            warnings.simplefilter("always")
            nb_ds = nb06["SpamDataset"](path, tokenizer, **kwargs)
        with warnings.catch_warnings(record=True) as caught_utils:
            warnings.simplefilter("always")
            utils_ds = ours.SpamDataset(path, tokenizer, **kwargs)
        assert [str(w.message) for w in caught_nb] == [str(w.message) for w in caught_utils]
        assert nb_ds.max_length == utils_ds.max_length and len(nb_ds) == len(utils_ds) == 3
        for i in range(3):
            assert all(torch.equal(a, b) for a, b in zip(nb_ds[i], utils_ds[i]))
    for ds_class in (nb06["SpamDataset"], ours.SpamDataset):
        with pytest.raises(ValueError, match="context length 5"):
            ds_class(path, tokenizer, context_length=5)


def test_accuracy_and_loss_agree(nb06):
    torch.manual_seed(123)
    model = torch.nn.Sequential(torch.nn.Embedding(100, 8), torch.nn.Linear(8, 2))  # (batch, tokens) -> (batch, tokens, 2)
    x, y = torch.randint(0, 100, (20, 6)), torch.randint(0, 2, (20,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8)
    for n in (None, 1, 2):
        assert nb06["calc_accuracy_loader"](loader, model, "cpu", n) == ours.calc_accuracy_loader(loader, model, "cpu", n)
        with torch.no_grad():
            assert nb06["calc_loss_loader"](loader, model, "cpu", n) == pytest.approx(
                ours.calc_classifier_loss_loader(loader, model, "cpu", n)
            )
    assert torch.equal(nb06["calc_loss_batch"](x, y, model, "cpu"), ours.calc_classifier_loss_batch(x, y, model, "cpu"))


def test_the_typed_training_loop_agrees_with_utils():
    """Chapter 6 types the book's train_classifier_simple (issue 18); utils' adds a progress bar and a NaN guard only."""
    nb = extract(NB06, "calc_accuracy_loader", "calc_loss_batch", "calc_loss_loader", "evaluate_model",
                 "train_classifier_simple")
    x, y = torch.randint(0, 100, (40, 6), generator=torch.Generator().manual_seed(1)), torch.arange(40) % 2
    results = []
    for train in (nb["train_classifier_simple"], lambda *args, **kw: ours.train_classifier_simple(*args, **kw, progress=False)):
        torch.manual_seed(123)
        model = torch.nn.Sequential(torch.nn.Embedding(100, 8), torch.nn.Linear(8, 2))
        train_loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, drop_last=True)
        val_loader = DataLoader(TensorDataset(x[:16], y[:16]), batch_size=8)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        results.append(train(model, train_loader, val_loader, optimizer, "cpu", num_epochs=2, eval_freq=3, eval_iter=2))
    (nb_losses, nb_val, nb_accs, nb_val_accs, nb_seen), (u_losses, u_val, u_accs, u_val_accs, u_seen) = results
    assert nb_losses == pytest.approx(u_losses) and nb_val == pytest.approx(u_val)
    assert nb_accs == u_accs and nb_val_accs == u_val_accs and nb_seen == u_seen == 80
