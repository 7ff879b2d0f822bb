"""Chapter 6: finetuning a GPT to classify SMS messages as spam or not spam.

Data prep (read the SMS Spam Collection, balance, split, save), `SpamDataset`, accuracy and loss of the
last token's class logits, the book's classifier training loop (plus a progress bar and a NaN guard),
`classify_text`, and a speed-up that gives the same training: the frozen blocks' output is computed once
(`compute_frozen_hidden`) and only the trainable top of the model (`TrainableTop`) runs in every step.
"""

from __future__ import annotations

import csv
import io
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm import tqdm

from .checks import END_OF_TEXT, atomic_write, check_file, check_int, check_loader, check_training_args
from .extras import check_finite
from .train import calc_loss_loader, evaluate_model

LABELS = {"ham": 0, "spam": 1}  # the book's label ids
CSV_HEADER = ["Label", "Text"]


def _read_text(path, hint: str) -> str:
    """The UTF-8 text of `path`; a missing file says `hint`, a decoding error names the line."""
    data = check_file(path, "file", hint).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ValueError(f"{path}, line {line}: not UTF-8 text: save the file as UTF-8, or fix that line. {hint}") from None


# --- reading, balancing and splitting the data -------------------------------------------------------


def read_sms_spam(path) -> list[tuple[str, str]]:
    """The SMS Spam Collection as `(label, text)` pairs, label 'ham' or 'spam', one pair per line of the file.

    The file is tab-separated and not quoted: a `"` is part of the message, so it is read with
    `csv.QUOTE_NONE` (pandas' and csv's default quoting merge three lines into one, see chapter 6).
    """
    rows = []
    text = _read_text(path, "fetch('sms-spam') downloads the SMSSpamCollection file (delete a damaged copy first)")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    try:
        for fields in reader:
            if len(fields) != 2 or fields[0] not in LABELS:
                raise ValueError(
                    f"{path}, line {reader.line_num}: expected 'ham' or 'spam', a tab, then the message; "
                    f"got {fields!r:.120}. Is this the SMSSpamCollection file? Delete it and fetch('sms-spam') again."
                )
            rows.append((fields[0], fields[1]))
    except csv.Error as exc:
        raise ValueError(f"{path}, line {reader.line_num}: {exc}: fix that line, or delete the file and "
                         "fetch('sms-spam') again") from None
    if not rows:
        raise ValueError(f"{path} holds no messages (it is empty): delete it and fetch('sms-spam') again")
    return rows


def create_balanced_dataset(rows, seed: int = 123) -> list[tuple[int, str]]:
    """As many randomly chosen ham messages as there are spam messages, then all spam; labels as 0/1.

    Samples exactly as the book's pandas code `df.sample(n, random_state=seed)` does: the first n entries
    of numpy's legacy `RandomState(seed).permutation` (pandas calls `RandomState.choice`, which does that).
    """
    for i, row in enumerate(rows):
        if not (isinstance(row, (tuple, list)) and len(row) == 2 and row[0] in LABELS and isinstance(row[1], str)):
            raise ValueError(f"row {i} is {row!r:.80}: expected a ('ham' or 'spam', message) pair, as read_sms_spam returns")
    ham = [text for label, text in rows if label == "ham"]
    spam = [text for label, text in rows if label == "spam"]
    if not spam:
        raise ValueError(f"the rows hold no spam message ({len(ham)} ham): a balanced set needs both classes; "
                         "pass all rows of read_sms_spam(...)")
    if len(spam) > len(ham):
        raise ValueError(f"the rows hold more spam ({len(spam)}) than ham ({len(ham)}): this function keeps all spam "
                         "and samples as many ham messages, so it needs at least as many ham as spam messages")
    chosen = np.random.RandomState(seed).permutation(len(ham))[: len(spam)]
    return [(LABELS["ham"], ham[i]) for i in chosen] + [(LABELS["spam"], text) for text in spam]


def random_split(rows, train_frac: float = 0.7, validation_frac: float = 0.1, seed: int = 123):
    """Shuffle `rows` as the book's `df.sample(frac=1, random_state=seed)` does, then cut train / validation / test."""
    if not (0 < train_frac and 0 <= validation_frac and train_frac + validation_frac <= 1):
        raise ValueError(f"need 0 < train_frac and train_frac + validation_frac <= 1, got {train_frac}, {validation_frac}")
    shuffled = [rows[i] for i in np.random.RandomState(seed).permutation(len(rows))]  # = pandas' sample(frac=1)
    train_end = int(len(shuffled) * train_frac)
    validation_end = train_end + int(len(shuffled) * validation_frac)
    return shuffled[:train_end], shuffled[train_end:validation_end], shuffled[validation_end:]


def write_split_csv(rows, path) -> Path:
    """Write `(label, text)` rows to a CSV file with the header `Label,Text` (as the book's `to_csv`), atomically."""
    for i, row in enumerate(rows):
        if not (isinstance(row, (tuple, list)) and len(row) == 2 and row[0] in (0, 1) and not isinstance(row[0], float)
                and isinstance(row[1], str)):
            raise ValueError(f"row {i} is {row!r:.80}: expected a (label 0 or 1, message) pair, as "
                             "create_balanced_dataset returns")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        writer.writerows([int(label), text] for label, text in rows)
    return path


def read_split_csv(path) -> tuple[list[int], list[str]]:
    """Labels (0 = ham, 1 = spam) and texts of a file written by `write_split_csv`; a bad row names its line."""
    labels, texts = [], []
    text = _read_text(path, "write it with write_split_csv (chapter 6)")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header != CSV_HEADER:
            raise ValueError(f"{path}, line 1: expected the header {','.join(CSV_HEADER)}, got {header!r:.80}")
        for fields in reader:
            if len(fields) != 2 or fields[0] not in ("0", "1"):
                raise ValueError(
                    f"{path}, line {reader.line_num}: expected a label 0 or 1, a comma, then the message; "
                    f"got {fields!r:.120}. Fix or delete that row (or write the file again with write_split_csv)."
                )
            if END_OF_TEXT in fields[1]:
                raise ValueError(f"{path}, line {reader.line_num}: the message holds the text {END_OF_TEXT}, GPT-2's end-of-text token, which its tokenizer refuses inside a message: remove it from that row (or write it as '< |endoftext| >')")
            labels.append(int(fields[0]))
            texts.append(fields[1])
    except csv.Error as exc:
        raise ValueError(f"{path}, line {reader.line_num}: {exc}: fix that line, or write the file again with "
                         "write_split_csv") from None
    if not labels:
        raise ValueError(f"{path} holds no messages (only a header or nothing at all)")
    return labels, texts


# --- the dataset ---------------------------------------------------------------------------------------


class SpamDataset(Dataset):
    """Messages of a split CSV file as token ids padded to `max_length`: items `((max_length,), label)`.

    `max_length=None` pads to the longest message; a given `max_length` truncates longer messages (with a
    warning that says how many). `context_length` (the model's) makes a too large `max_length` an error.
    """

    def __init__(self, csv_file, tokenizer, max_length=None, pad_token_id=50256, *, context_length=None):
        self.labels, self.texts = read_split_csv(csv_file)
        self.encoded_texts = [tokenizer.encode(text) for text in self.texts]
        if max_length is None:
            self.max_length = self._longest_encoded_length()
        else:
            check_int(max_length, "max_length", hint="the number of tokens each message is padded or truncated to; None: the longest message")
            self.max_length = max_length
            too_long = sum(len(ids) > max_length for ids in self.encoded_texts)
            if too_long:
                warnings.warn(f"{too_long} of {len(self.encoded_texts)} messages in {Path(csv_file).name} are longer than "
                              f"max_length={max_length} tokens and were truncated to their first {max_length} tokens", stacklevel=2)
            self.encoded_texts = [ids[:max_length] for ids in self.encoded_texts]  # truncate longer messages
        if context_length is not None and self.max_length > context_length:
            raise ValueError(f"max_length={self.max_length} tokens exceeds the model's context length {context_length}: "
                             f"pass max_length={context_length} (longer messages are then truncated)")
        self.encoded_texts = [ids + [pad_token_id] * (self.max_length - len(ids)) for ids in self.encoded_texts]

    def __getitem__(self, index):
        encoded = self.encoded_texts[index]  # (max_length,) token ids
        label = self.labels[index]
        return torch.tensor(encoded, dtype=torch.long), torch.tensor(label, dtype=torch.long)

    def __len__(self):
        return len(self.labels)

    def _longest_encoded_length(self):
        return max(len(ids) for ids in self.encoded_texts)


# --- the classifier: head, accuracy, loss --------------------------------------------------------------


def prepare_classifier(model, num_classes: int = 2, trainable_blocks: int = 1):
    """Freeze `model`, put a new `nn.Linear(emb_dim, num_classes)` head on it, unfreeze the last blocks and final norm.

    The new head's weights come from torch's random generator: call `torch.manual_seed(123)` first to match
    the book. Returns the same model, now mapping `(batch, num_tokens)` to `(batch, num_tokens, num_classes)`.
    """
    if not 0 <= trainable_blocks <= len(model.trf_blocks):
        raise ValueError(f"trainable_blocks must be between 0 and {len(model.trf_blocks)} (the model's blocks), got {trainable_blocks}")
    for param in model.parameters():
        param.requires_grad = False
    model.out_head = nn.Linear(model.out_head.in_features, num_classes)  # new parameters are trainable
    for block in list(model.trf_blocks)[len(model.trf_blocks) - trainable_blocks :]:
        for param in block.parameters():
            param.requires_grad = True
    for param in model.final_norm.parameters():
        param.requires_grad = True
    return model


def calc_accuracy_loader(data_loader, model, device, num_batches=None):
    """Share of messages whose last-token logits pick the right class, over `num_batches` batches (all if None)."""
    model.eval()
    correct_predictions, num_examples = 0, 0

    check_loader(data_loader)  # beyond the book: an empty loader is an error that says what to do
    if num_batches is None:
        num_batches = len(data_loader)
    else:
        check_int(num_batches, "num_batches", hint="None means every batch")
        num_batches = min(num_batches, len(data_loader))
    for i, (input_batch, target_batch) in enumerate(data_loader):
        if i < num_batches:
            input_batch, target_batch = input_batch.to(device), target_batch.to(device)
            with torch.no_grad():
                logits = model(input_batch)[:, -1, :]  # (batch, num_classes): the last token's logits
            predicted_labels = torch.argmax(logits, dim=-1)  # (batch,)
            num_examples += predicted_labels.shape[0]
            correct_predictions += (predicted_labels == target_batch).sum().item()
        else:
            break
    return correct_predictions / num_examples


def calc_classifier_loss_batch(input_batch, target_batch, model, device):
    """Cross-entropy of the last token's class logits; inputs `(batch, num_tokens)`, targets `(batch,)`."""
    input_batch, target_batch = input_batch.to(device), target_batch.to(device)
    logits = model(input_batch)[:, -1, :]  # (batch, num_classes)
    return torch.nn.functional.cross_entropy(logits, target_batch)


def calc_classifier_loss_loader(data_loader, model, device, num_batches=None):
    """Average classifier loss over the first `num_batches` batches (all if None)."""
    return calc_loss_loader(data_loader, model, device, num_batches, loss_fn=calc_classifier_loss_batch)


def train_classifier_simple(model, train_loader, val_loader, optimizer, device, num_epochs,
                            eval_freq, eval_iter, *, extras=None, progress=True):
    """The book's classifier training loop. Returns `(train_losses, val_losses, train_accs, val_accs, examples_seen)`.

    Beyond the book: a progress bar, a stop at a NaN or inf loss, and only when asked, `extras` (a TrainingExtras
    of utils/extras.py without a path: max_steps, after which the epoch's accuracies are still measured; log_every).
    """
    check_training_args(model, optimizer, train_loader, val_loader, num_epochs, eval_freq, eval_iter)
    # Initialize lists to track losses and examples seen
    train_losses, val_losses, train_accs, val_accs = [], [], [], []
    examples_seen, global_step = 0, -1
    if extras:
        examples_seen, global_step = extras.start(model, optimizer, train_loader, num_epochs, loop="train_classifier_simple")

    # Main training loop
    for epoch in range(num_epochs):
        if extras and extras.skip_epoch(epoch):  # after max_steps
            continue
        model.train()  # Set model to training mode

        for input_batch, target_batch in tqdm(train_loader, f"Epoch {epoch + 1}", disable=not progress):
            optimizer.zero_grad()  # Reset loss gradients from previous batch iteration
            loss = calc_classifier_loss_batch(input_batch, target_batch, model, device)
            check_finite(loss, global_step + 1)  # beyond the book: stop at a NaN or inf loss
            loss.backward()  # Calculate loss gradients
            optimizer.step()  # Update model weights using loss gradients
            examples_seen += input_batch.shape[0]  # New: track examples instead of tokens
            global_step += 1

            # Optional evaluation step
            if global_step % eval_freq == 0:
                train_loss, val_loss = evaluate_model(model, train_loader, val_loader, device, eval_iter,
                                                      loss_fn=calc_classifier_loss_batch)
                train_losses.append(train_loss)
                val_losses.append(val_loss)
                if not extras or extras.shows(global_step):  # print (above the progress bar)
                    tqdm.write(f"Ep {epoch + 1} (Step {global_step:06d}): "
                               f"Train loss {train_loss:.3f}, Val loss {val_loss:.3f}")
            if extras and extras.after_step(global_step, examples_seen):  # True at max_steps
                break

        # Calculate accuracy after each epoch
        train_accuracy = calc_accuracy_loader(train_loader, model, device, num_batches=eval_iter)
        val_accuracy = calc_accuracy_loader(val_loader, model, device, num_batches=eval_iter)
        tqdm.write(f"Training accuracy: {train_accuracy * 100:.2f}% | Validation accuracy: {val_accuracy * 100:.2f}%")
        train_accs.append(train_accuracy)
        val_accs.append(val_accuracy)

    return train_losses, val_losses, train_accs, val_accs, examples_seen


def classify_text(text, model, tokenizer, device, max_length=None, pad_token_id=50256):
    """'spam' or 'not spam' for one message, padded (or truncated, with a warning) to `max_length` tokens.

    Use the training set's `max_length` (the book's 120): the classifier learned on messages padded to it.
    """
    if not text.strip():
        raise ValueError(f"classify_text needs a non-empty message, got {text!r}")
    model.eval()
    input_ids = tokenizer.encode(text)
    supported_context_length = model.pos_emb.weight.shape[0]
    max_length = supported_context_length if max_length is None else max_length
    if len(input_ids) > max_length:
        warnings.warn(f"the message is {len(input_ids)} tokens long; only its first {max_length} tokens are classified", stacklevel=2)
    input_ids = input_ids[:max_length]  # truncate a longer message
    input_ids += [pad_token_id] * (max_length - len(input_ids))  # pad to the training length
    input_tensor = torch.tensor(input_ids, device=device).unsqueeze(0)  # (1, max_length)
    with torch.no_grad():
        logits = model(input_tensor)[:, -1, :]  # (1, num_classes)
    if logits.shape[-1] != 2:
        raise ValueError(f"the model's output head has {logits.shape[-1]} outputs, not the 2 classes (not spam, spam): call "
                         "prepare_classifier(model) and train it (or load the finetuned classifier) before classify_text")
    predicted_label = torch.argmax(logits, dim=-1).item()
    return "spam" if predicted_label == 1 else "not spam"


# --- same training, less work: run the frozen blocks once ----------------------------------------------


def num_frozen_blocks(model) -> int:
    """How many leading transformer blocks (after frozen embeddings) have no trainable parameter."""
    if any(p.requires_grad for p in (*model.tok_emb.parameters(), *model.pos_emb.parameters())):
        return 0
    count = 0
    for block in model.trf_blocks:
        if any(p.requires_grad for p in block.parameters()):
            break
        count += 1
    return count


def _has_dropout(modules) -> bool:
    return any(d.p > 0 for part in modules for d in part.modules() if isinstance(d, nn.Dropout))


def last_token_block(block, x):
    """A TransformerBlock's output for the last position only: `(batch, num_tokens, emb_dim) -> (batch, 1, emb_dim)`.

    The last token attends to every position, so it needs all keys and values but only its own query;
    attention output, feed-forward and both shortcuts run for that one position (same result, less work).
    """
    att = block.att
    b, num_tokens, _ = x.shape
    h = block.norm1(x)  # (b, num_tokens, emb_dim)
    query = att.W_query(h[:, -1:, :]).view(b, 1, att.num_heads, att.head_dim).transpose(1, 2)  # (b, heads, 1, hd)
    keys = att.W_key(h).view(b, num_tokens, att.num_heads, att.head_dim).transpose(1, 2)  # (b, heads, n, hd)
    values = att.W_value(h).view(b, num_tokens, att.num_heads, att.head_dim).transpose(1, 2)  # (b, heads, n, hd)
    context = torch.nn.functional.scaled_dot_product_attention(query, keys, values)  # no mask: it sees all
    context = context.transpose(1, 2).reshape(b, 1, att.d_out)  # (b, 1, emb_dim)
    x = x[:, -1:, :] + att.out_proj(context)
    return x + block.ff(block.norm2(x))  # (b, 1, emb_dim)


class TrainableTop(nn.Module):
    """The part of a classifier GPTModel that training changes: blocks `num_frozen`.., final norm, head.

    Shares those modules with `model` (training this trains the model). Maps the frozen blocks' output
    `(batch, num_tokens, emb_dim)` to the last token's logits `(batch, 1, num_classes)`, computing only
    what those logits depend on. Needs drop_rate 0 (dropout would make it differ from the whole model).
    """

    def __init__(self, model, num_frozen=None):
        super().__init__()
        self.num_frozen = num_frozen_blocks(model) if num_frozen is None else num_frozen
        if self.num_frozen >= len(model.trf_blocks):
            raise ValueError("every transformer block is frozen: unfreeze at least the last one (prepare_classifier)")
        self.blocks = nn.Sequential(*list(model.trf_blocks)[self.num_frozen :])
        self.final_norm = model.final_norm
        self.out_head = model.out_head
        if _has_dropout(self.blocks):
            raise ValueError("the trainable blocks use dropout: build the model with drop_rate=0.0 (as the book does)")

    def forward(self, hidden):
        x = hidden  # (batch, num_tokens, emb_dim)
        for block in list(self.blocks)[:-1]:
            x = block(x)
        x = last_token_block(self.blocks[-1], x)  # (batch, 1, emb_dim)
        return self.out_head(self.final_norm(x))  # (batch, 1, num_classes)


def compute_frozen_hidden(model, dataset, num_frozen=None, batch_size=32, progress=True) -> TensorDataset:
    """Run every message of `dataset` once through the embeddings and the frozen blocks.

    Returns a TensorDataset of `(hidden (num_tokens, emb_dim), label)` in the dataset's order; with
    `TrainableTop` it gives the same logits as the whole model. Needs no dropout in the frozen part.
    (`batch_size` only sets how many messages go through at once; 32 uses a CPU better than 8.)
    """
    num_frozen = num_frozen_blocks(model) if num_frozen is None else num_frozen
    frozen = [model.tok_emb, model.pos_emb, *list(model.trf_blocks)[:num_frozen]]
    if any(p.requires_grad for m in frozen for p in m.parameters()):
        raise ValueError("the embeddings and the first num_frozen blocks must be frozen (requires_grad=False)")
    if _has_dropout([model.drop_emb, *frozen]):
        raise ValueError(
            "the frozen blocks use dropout, so their output changes from step to step and cannot be computed once: "
            "build the model with drop_rate=0.0 (as the book does for finetuning)"
        )
    from tqdm import tqdm

    was_training = model.training
    model.eval()
    hidden, labels = [], []
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    device = model.tok_emb.weight.device
    with torch.no_grad():
        for input_batch, target_batch in tqdm(loader, desc="frozen blocks", disable=not progress, unit="batch", mininterval=1.0, ncols=90):
            input_batch = input_batch.to(device)
            positions = torch.arange(input_batch.shape[1], device=device)
            x = model.drop_emb(model.tok_emb(input_batch) + model.pos_emb(positions))  # (batch, num_tokens, emb_dim)
            for block in list(model.trf_blocks)[:num_frozen]:
                x = block(x)
            hidden.append(x)
            labels.append(target_batch.to(device))
    model.train(was_training)
    return TensorDataset(torch.cat(hidden), torch.cat(labels))
