"""Fault catalogue of utils.spam: data files, balancing, splits, the dataset, the classifier and its training.

Each case: (id, set-up(tmp) -> callable, exception, message fragment); afterwards no `.tmp`/`.part` file is left.
"""

import csv

import torch
from faults import catalogue, expect_fault
from tiny import CharTokenizer, tiny_model
from torch.utils.data import DataLoader, TensorDataset

from utils import TrainingExtras
from utils.spam import (
    SpamDataset,
    TrainableTop,
    calc_accuracy_loader,
    classify_text,
    create_balanced_dataset,
    prepare_classifier,
    random_split,
    read_sms_spam,
    read_split_csv,
    train_classifier_simple,
    write_split_csv,
)


def gpt(classifier=True):
    model = tiny_model(0, vocab_size=60, emb_dim=16, n_heads=2)
    return prepare_classifier(model) if classifier else model


def write(tmp, name, content):
    path = tmp / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def loaders(n=8):
    x = torch.randint(0, 60, (n, 6), generator=torch.Generator().manual_seed(0))
    y = torch.arange(n) % 2
    return DataLoader(TensorDataset(x, y), batch_size=4), DataLoader(TensorDataset(x, y), batch_size=4)


def empty_loader():
    return DataLoader(TensorDataset(torch.zeros(1, 6, dtype=torch.long), torch.zeros(1, dtype=torch.long)),
                      batch_size=2, drop_last=True)


def train(**kw):
    model = gpt()
    tl, vl = loaders()
    args = dict(train_loader=tl, val_loader=vl, device="cpu", num_epochs=1, eval_freq=1, eval_iter=1)
    args.update(kw)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    return lambda: train_classifier_simple(model, args["train_loader"], args["val_loader"], opt, args["device"],
                                           args["num_epochs"], args["eval_freq"], args["eval_iter"], progress=False,
                                           extras=args.get("extras"))


def interrupted_write(tmp):
    path = write_split_csv([(0, "old")], tmp / "train.csv")

    class Broken:
        def __init__(self, *a, **k):
            pass

        def writerow(self, row):
            pass

        def writerows(self, rows):
            raise OSError("disk full")

    def call():
        original = csv.writer
        csv.writer = Broken
        try:
            write_split_csv([(1, "new")], path)
        finally:
            csv.writer = original
            assert read_split_csv(path) == ([0], ["old"])  # the old file is intact
    return call


SMS_OK = "ham\thello there\nspam\tWIN now\n"
CSV_OK = "Label,Text\n0,hello\n1,win now\n"

CASES = [
    ("sms file missing", lambda t: lambda: read_sms_spam(t / "none"), FileNotFoundError, "fetch('sms-spam')"),
    ("sms not UTF-8", lambda t: lambda: read_sms_spam(write(t, "sms", SMS_OK.encode() + b"ham\t\xff\xfe\n")),
     ValueError, "line 3: not UTF-8 text"),
    ("sms bad label", lambda t: lambda: read_sms_spam(write(t, "sms", SMS_OK + "maybe\tx\n")), ValueError,
     "line 3: expected 'ham' or 'spam'"),
    ("sms no tab", lambda t: lambda: read_sms_spam(write(t, "sms", "ham hello\n")), ValueError, "fetch('sms-spam') again"),
    ("sms empty", lambda t: lambda: read_sms_spam(write(t, "sms", "")), ValueError,
     "sms holds no messages (it is empty): delete it and fetch('sms-spam') again"),
    ("balance with no spam", lambda t: lambda: create_balanced_dataset([("ham", "a"), ("ham", "b")]), ValueError,
     "hold no spam message"),
    ("balance with more spam than ham", lambda t: lambda: create_balanced_dataset([("ham", "a"), ("spam", "b"),
                                                                                  ("spam", "c")]),
     ValueError, "needs at least as many ham as spam"),
    ("balance a bad row", lambda t: lambda: create_balanced_dataset([("ham", "a"), ("junk", "b")]), ValueError,
     "row 1 is"),
    ("split train_frac 0", lambda t: lambda: random_split([1, 2, 3], train_frac=0), ValueError, "need 0 < train_frac"),
    ("split fractions over 1", lambda t: lambda: random_split([1, 2], 0.8, 0.3), ValueError,
     "train_frac + validation_frac <= 1"),
    ("split nan", lambda t: lambda: random_split([1, 2], float("nan")), ValueError, "need 0 < train_frac"),
    ("write a bad label", lambda t: lambda: write_split_csv([("spam", "x")], t / "train.csv"), ValueError,
     "expected a (label 0 or 1, message) pair"),
    ("write interrupted", interrupted_write, OSError, "disk full"),
    ("csv bad header", lambda t: lambda: read_split_csv(write(t, "a.csv", "label,text\n0,x\n")), ValueError,
     "line 1: expected the header Label,Text"),
    ("csv bad row", lambda t: lambda: read_split_csv(write(t, "a.csv", CSV_OK + "2,x\n")), ValueError,
     "line 4: expected a label 0 or 1"),
    ("csv not UTF-8", lambda t: lambda: read_split_csv(write(t, "a.csv", CSV_OK.encode() + b"0,\xe9t\xe9\n")),
     ValueError, "line 4: not UTF-8 text"),
    ("csv only a header", lambda t: lambda: read_split_csv(write(t, "a.csv", "Label,Text\n")), ValueError,
     "holds no messages"),
    ("csv missing", lambda t: lambda: read_split_csv(t / "none.csv"), FileNotFoundError, "write_split_csv"),
    ("csv message holding <|endoftext|>", lambda t: lambda: SpamDataset(write(t, "a.csv", CSV_OK + '0,"a\nb <|endoftext|>"\n'),
                                                                        CharTokenizer()),
     ValueError, "a.csv, line 5: the message holds the text <|endoftext|>, GPT-2's end-of-text token, which its tokenizer "
     "refuses inside a message: remove it from that row"),
    ("dataset max_length 0", lambda t: lambda: SpamDataset(write(t, "a.csv", CSV_OK), CharTokenizer(), max_length=0),
     ValueError, "max_length must be a whole number >= 1, got 0; the number of tokens each message is padded or truncated to"),
    ("dataset max_length over context", lambda t: lambda: SpamDataset(write(t, "a.csv", CSV_OK), CharTokenizer(), max_length=40,
                                                                      context_length=16),
     ValueError, "pass max_length=16"),
    ("prepare too many blocks", lambda t: lambda: prepare_classifier(gpt(False), trainable_blocks=5), ValueError,
     "trainable_blocks must be between 0 and 2"),
    ("classify without the 2-class head", lambda t: lambda: classify_text("win cash", gpt(False), CharTokenizer(), "cpu",
                                                                         pad_token_id=0),
     ValueError, "call prepare_classifier(model) and train it"),
    ("classify max_length over context", lambda t: lambda: classify_text("hi", gpt(), CharTokenizer(), "cpu", max_length=99,
                                                                        pad_token_id=0),
     ValueError, "with 1 to 16 tokens"),
    ("classify pad outside vocabulary", lambda t: lambda: classify_text("hi", gpt(), CharTokenizer(), "cpu"), ValueError,
     "in the model's vocabulary"),
    ("accuracy on an empty loader", lambda t: lambda: calc_accuracy_loader(empty_loader(), gpt(), "cpu"), ValueError,
     "data_loader has no batches"),
    ("accuracy num_batches 0", lambda t: lambda: calc_accuracy_loader(loaders()[0], gpt(), "cpu", num_batches=0),
     ValueError, "num_batches must be a whole number >= 1"),
    ("train eval_freq 0", lambda t: train(eval_freq=0), ValueError, "eval_freq must be a whole number >= 1"),
    ("train eval_iter 0", lambda t: train(eval_iter=0), ValueError, "eval_iter must be a whole number >= 1"),
    ("train empty val loader", lambda t: train(val_loader=empty_loader()), ValueError, "val_loader has no batches"),
    ("train device typo", lambda t: train(device="cpuu"), RuntimeError, "device type at start of device string: cpuu"),
    ("train extras with a path", lambda t: train(extras=TrainingExtras(t / "c.pth")), ValueError,
     "train_classifier_simple takes TrainingExtras without a path"),
    ("top with every block frozen", lambda t: lambda: TrainableTop(prepare_classifier(gpt(False), trainable_blocks=0)),
     ValueError, "unfreeze at least the last one"),
]


@catalogue(CASES)
def test_fault(tmp_path, case):
    expect_fault(case, tmp_path, tmp_path)


def test_max_steps_zero_takes_no_step():
    model = gpt()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    assert train_classifier_simple(model, *loaders(), opt, "cpu", 2, 1, 1, progress=False,
                                   extras=TrainingExtras(max_steps=0)) == (
        [], [], [], [], 0)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
