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
