"""utils.spam: the SMS data prep, SpamDataset, the classifier head, accuracy, training, classify_text, bad input."""

import csv

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from utils import GPTModel, NonFiniteLossError, TrainingExtras, fetch, gpt2_tokenizer
from utils.spam import (
    SpamDataset,
    TrainableTop,
    calc_accuracy_loader,
    calc_classifier_loss_batch,
    classify_text,
    compute_frozen_hidden,
    create_balanced_dataset,
    last_token_block,
    prepare_classifier,
    random_split,
    read_sms_spam,
    read_split_csv,
    train_classifier_simple,
    write_split_csv,
)

TINY = {"vocab_size": 50257, "context_length": 16, "emb_dim": 32, "n_heads": 2, "n_layers": 2, "drop_rate": 0.0, "qkv_bias": True}


@pytest.fixture(scope="module")
def tokenizer():
    return gpt2_tokenizer()


@pytest.fixture(scope="module")
def sms_rows():
    return read_sms_spam(fetch("sms-spam"))


def tiny_classifier(seed=123, **overrides):
    torch.manual_seed(seed)
    model = GPTModel({**TINY, **overrides})
    torch.manual_seed(seed)
    return prepare_classifier(model)


def write_rows(path, rows):
    return write_split_csv(rows, path)


# --- reading, balancing, splitting --------------------------------------------------------------------------


def test_the_file_has_5574_messages_and_the_books_quoting_loses_two(sms_rows):
    labels = [label for label, _ in sms_rows]
    assert len(sms_rows) == 5574 and labels.count("ham") == 4827 and labels.count("spam") == 747
    assert sms_rows[588] == ("ham", '"Pete can you please ring meive hardly gotany credit"')  # line 589 keeps its quotes
    with open(fetch("sms-spam"), encoding="utf-8", newline="") as f:
        book_rows = list(csv.reader(f, delimiter="\t"))  # default quoting, as pandas.read_csv
    assert [r[0] for r in book_rows].count("ham") == 4825
    merged = book_rows[5081][1]  # line 5082 opens a quote that only line 5084 closes
    assert merged.count("\n") == 2 and "Yeah, give me a call" in merged


def test_malformed_sms_line_names_the_line(tmp_path):
    path = tmp_path / "SMSSpamCollection"
    path.write_text("ham\tfine\nspam\tfine too\nhammm a line without a tab\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 3"):
        read_sms_spam(path)


def test_balance_split_and_seed():
    rows = [("ham", f"h{i}") for i in range(30)] + [("spam", f"s{i}") for i in range(10)]
    balanced = create_balanced_dataset(rows)
    assert len(balanced) == 20 and sum(label for label, _ in balanced) == 10
    assert all(label == 0 for label, _ in balanced[:10]) and len({t for _, t in balanced}) == 20
    assert balanced == create_balanced_dataset(rows)  # same seed, same messages
    assert balanced != create_balanced_dataset(rows, seed=1)
    train, val, test = random_split(balanced, 0.7, 0.1)
    assert (len(train), len(val), len(test)) == (14, 2, 4)
    assert sorted(train + val + test) == sorted(balanced)
    assert (train, val, test) == random_split(balanced, 0.7, 0.1)
    assert train != random_split(balanced, 0.7, 0.1, seed=7)[0]
    with pytest.raises(ValueError, match="train_frac"):
        random_split(balanced, 0.9, 0.2)


def test_the_books_sizes_and_pandas_sampling(sms_rows):
    balanced = create_balanced_dataset(sms_rows)
    assert len(balanced) == 1494 and sum(label for label, _ in balanced) == 747
    assert [len(s) for s in random_split(balanced, 0.7, 0.1)] == [1045, 149, 300]
    # on the book's 5572-row reading, the split equals what the book's pandas code gives (checked with pandas 3.1)
    with open(fetch("sms-spam"), encoding="utf-8", newline="") as f:
        book_rows = list(csv.reader(f, delimiter="\t"))
    train, val, test = random_split(create_balanced_dataset(book_rows), 0.7, 0.1)
    assert train[0] == (0, "Dude how do you like the buff wind.")


def test_csv_round_trip_keeps_awkward_text(tmp_path):
    rows = [(0, 'say "hi", then\nleave'), (1, "WIN £1000, call now!\t")]
    path = write_rows(tmp_path / "split.csv", rows)
    assert read_split_csv(path) == ([0, 1], [rows[0][1], rows[1][1]])
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "content, line",
    [
        ("Label,Text\n0,fine\n1,also fine\n2,bad label\n", "line 4"),
        ("Label,Text\n0,fine\nno comma here\n", "line 3"),
        ("Text,Label\nfine,0\n", "line 1"),
    ],
)
def test_malformed_split_csv_names_the_line(tmp_path, content, line):
    path = tmp_path / "bad.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ValueError, match=line):
        read_split_csv(path)


def test_empty_split_csv_is_an_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("Label,Text\n", encoding="utf-8")
    with pytest.raises(ValueError, match="no messages"):
        read_split_csv(path)


# --- SpamDataset ----------------------------------------------------------------------------------------


@pytest.fixture
def split_file(tmp_path):
    return write_rows(tmp_path / "train.csv", [(0, "Hi there"), (1, "You won a prize, call now to claim it"), (0, "ok")])


def test_dataset_pads_to_the_longest_message(split_file, tokenizer):
    ds = SpamDataset(split_file, tokenizer)
    longest = len(tokenizer.encode("You won a prize, call now to claim it"))
    assert ds.max_length == longest and len(ds) == 3
    x, y = ds[0]
    assert x.shape == (longest,) and x.dtype == torch.long and y.item() == 0
    ids = tokenizer.encode("Hi there")
    assert x[: len(ids)].tolist() == ids and set(x[len(ids) :].tolist()) == {50256}
    assert ds[1][1].item() == 1


def test_dataset_truncates_with_a_warning(split_file, tokenizer):
    with pytest.warns(UserWarning, match="1 of 3 messages .* truncated"):
        ds = SpamDataset(split_file, tokenizer, max_length=3)
    assert [len(ds[i][0]) for i in range(3)] == [3, 3, 3]
    assert ds[1][0].tolist() == tokenizer.encode("You won a prize, call now to claim it")[:3]


def test_dataset_max_length_beyond_context_is_an_error(split_file, tokenizer):
    with pytest.raises(ValueError, match="exceeds the model's context length 4"):
        SpamDataset(split_file, tokenizer, context_length=4)


# --- the classifier ---------------------------------------------------------------------------------------


def test_head_replacement_and_freezing():
    model = tiny_classifier()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    last = {f"trf_blocks.1.{name}" for name, _ in model.trf_blocks[1].named_parameters()}
    assert trainable == last | {"final_norm.scale", "final_norm.shift", "out_head.weight", "out_head.bias"}
    assert model.out_head.weight.shape == (2, 32) and model.out_head.bias is not None
    assert model(torch.tensor([[5211, 345, 423, 640]])).shape == (1, 4, 2)
    with pytest.raises(ValueError, match="between 0 and 2"):
        prepare_classifier(model, trainable_blocks=3)


class LastTokenParity(torch.nn.Module):
    """A stand-in model: predicts class = last token id mod 2, logits `(batch, num_tokens, 2)`."""

    def forward(self, x):
        return torch.nn.functional.one_hot(x % 2, 2).float()


def test_accuracy_on_a_hand_made_batch():
    inputs = torch.tensor([[1, 2, 3], [1, 2, 4], [7, 7, 5], [0, 0, 8]])  # predictions 1, 0, 1, 0
    labels = torch.tensor([1, 0, 0, 0])  # 3 of 4 right
    loader = DataLoader(TensorDataset(inputs, labels), batch_size=2)
    assert calc_accuracy_loader(loader, LastTokenParity(), "cpu") == 0.75
    assert calc_accuracy_loader(loader, LastTokenParity(), "cpu", num_batches=1) == 1.0
    loss = calc_classifier_loss_batch(inputs, labels, LastTokenParity(), "cpu")  # 3 right (1 vs 0), 1 wrong (0 vs 1)
    expected = (3 * torch.log(1 + torch.exp(torch.tensor(-1.0))) + torch.log(1 + torch.exp(torch.tensor(1.0)))) / 4
    assert torch.isclose(loss, expected)
    with pytest.raises(ValueError, match="has no batches"):
        calc_accuracy_loader(DataLoader(TensorDataset(inputs, labels), batch_size=8, drop_last=True), LastTokenParity(), "cpu")


def token_loaders(n=24, num_tokens=8):
    torch.manual_seed(0)
    x = torch.randint(0, 1000, (n, num_tokens))
    y = (x[:, 0] % 2).long()
    return TensorDataset(x[:16], y[:16]), TensorDataset(x[16:], y[16:])


def test_training_loop_updates_only_the_trainable_part():
    model = tiny_classifier()
    train_ds, val_ds = token_loaders()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    torch.manual_seed(123)
    train_loader = DataLoader(train_ds, batch_size=4, shuffle=True, drop_last=True)
    val_loader = DataLoader(val_ds, batch_size=4)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    tl, vl, ta, va, seen = train_classifier_simple(model, train_loader, val_loader, optimizer, "cpu", 2, 3, 2, progress=False)
    assert seen == 2 * 16 and len(tl) == len(vl) == 3 and len(ta) == len(va) == 2  # evals at steps 0, 3, 6
    assert all(0 <= a <= 1 for a in ta + va)
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]) != p.requires_grad, name
    _, _, ta, _, seen = train_classifier_simple(model, train_loader, val_loader, optimizer, "cpu", 5, 50, 1, progress=False,
                                                 extras=TrainingExtras(max_steps=5))
    assert seen == 5 * 4 and len(ta) == 2  # stopped in the second epoch


def test_training_stops_on_a_nan_loss():
    model = tiny_classifier()
    model.out_head.register_forward_hook(lambda module, args, output: output * float("nan"))
    train_ds, val_ds = token_loaders()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    with pytest.raises(NonFiniteLossError, match="loss became nan at step 0: .*still finite"):
        train_classifier_simple(model, DataLoader(train_ds, batch_size=4), DataLoader(val_ds, batch_size=4), optimizer, "cpu", 1, 1, 1, progress=False)


def test_nan_weights_stop_at_the_first_loss_and_max_steps_zero_takes_no_step():
    model = tiny_classifier()
    train_ds, val_ds = token_loaders()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loaders = DataLoader(train_ds, batch_size=4), DataLoader(val_ds, batch_size=4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert train_classifier_simple(model, *loaders, optimizer, "cpu", 1, 1, 1, progress=False,
                                   extras=TrainingExtras(max_steps=0)) == (
        [], [], [], [], 0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()) and not optimizer.state
    with torch.no_grad():
        model.out_head.weight.fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match="loss became nan at step 0: .*whether the model's weights hold NaN"):
        train_classifier_simple(model, *loaders, optimizer, "cpu", 1, 1, 1, progress=False)


# --- the frozen blocks computed once ----------------------------------------------------------------------


def test_last_token_block_matches_the_block():
    model = tiny_classifier()
    torch.manual_seed(1)
    x = torch.randn(3, 7, 32)
    block = model.trf_blocks[-1]
    assert torch.allclose(last_token_block(block, x), block(x)[:, -1:, :], atol=1e-6)


def test_cached_hidden_states_give_the_whole_models_logits():
    model = tiny_classifier()
    train_ds, _ = token_loaders()
    hidden = compute_frozen_hidden(model, train_ds, progress=False)
    assert hidden.tensors[0].shape == (16, 8, 32) and torch.equal(hidden.tensors[1], train_ds.tensors[1])
    top = TrainableTop(model)
    assert top.num_frozen == 1
    x = train_ds.tensors[0]
    assert torch.allclose(top(hidden.tensors[0])[:, -1, :], model(x)[:, -1, :], atol=1e-5)


def test_cached_training_is_the_books_training():
    """Same seeds: the book's loop on the whole model and on (cached hidden states, TrainableTop) end alike."""
    train_ds, val_ds = token_loaders()
    results = []
    for cached in (False, True):
        model = tiny_classifier()
        train_data, val_data, net = train_ds, val_ds, model
        if cached:
            train_data = compute_frozen_hidden(model, train_ds, progress=False)
            val_data = compute_frozen_hidden(model, val_ds, progress=False)
            net = TrainableTop(model)
        torch.manual_seed(123)
        train_loader = DataLoader(train_data, batch_size=4, shuffle=True, drop_last=True)
        val_loader = DataLoader(val_data, batch_size=4)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
        losses = train_classifier_simple(net, train_loader, val_loader, optimizer, "cpu", 3, 2, 2, progress=False)
        results.append((losses, model.state_dict()))
    (book_losses, book_state), (fast_losses, fast_state) = results
    for a, b in zip(book_losses[:4], fast_losses[:4]):
        assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4)
    for name in book_state:
        if name.endswith("W_key.bias"):
            # its true gradient is 0 (a shift of every key's score cancels in the softmax), so AdamW moves it by
            # rounding noise, which differs between the two ways; the logits do not depend on it
            continue
        assert torch.allclose(book_state[name], fast_state[name], atol=1e-5), name


def test_cached_path_refuses_dropout():
    model = tiny_classifier(drop_rate=0.1)
    train_ds, _ = token_loaders()
    with pytest.raises(ValueError, match="drop_rate=0.0"):
        compute_frozen_hidden(model, train_ds, progress=False)
    with pytest.raises(ValueError, match="drop_rate=0.0"):
        TrainableTop(model)


# --- classify_text ---------------------------------------------------------------------------------------


def test_classify_text(tokenizer):
    model = tiny_classifier()
    assert classify_text("Hey, are we still on for dinner?", model, tokenizer, "cpu", max_length=12) in ("spam", "not spam")


def test_classify_long_text_is_truncated_with_a_warning(tokenizer):
    model = tiny_classifier()
    long_text = "win a free prize now " * 10
    with pytest.warns(UserWarning, match="only its first 12 tokens"):
        label = classify_text(long_text, model, tokenizer, "cpu", max_length=12)
    first_12 = tokenizer.decode(tokenizer.encode(long_text)[:12])
    assert label == classify_text(first_12, model, tokenizer, "cpu", max_length=12)
    with pytest.warns(UserWarning, match="only its first 16 tokens"):  # max_length None: the model's context
        classify_text(long_text, model, tokenizer, "cpu")


def test_classify_max_length_beyond_context_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="with 1 to 16 tokens"):
        classify_text("hello", tiny_classifier(), tokenizer, "cpu", max_length=120)
