"""The shared argument checks and constants: one place, so each public function checks its input in one line.

Every check raises a ValueError or TypeError that names the argument and says what to pass instead.
"""

from __future__ import annotations

import contextlib
import errno
import numbers
import os
import shutil
import uuid
from pathlib import Path

END_OF_TEXT = "<|endoftext|>"  # GPT-2's only special token: separates documents, and pads batches
END_OF_TEXT_ID = 50256  # its id in GPT-2's vocabulary


def is_int(value) -> bool:
    """True for a whole number (an int or a NumPy integer), False for bool, float and everything else."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value, name: str, minimum: int = 1, hint: str = "") -> None:
    """Raise ValueError unless `value` is a whole number >= `minimum`; `hint` says what to do."""
    if not is_int(value) or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value!r}{'; ' + hint if hint else ''}")


def check_tokenizer(tokenizer) -> None:
    """Raise TypeError unless `tokenizer` has tiktoken's `encode`/`decode` (tiktoken, BPETokenizer, ...)."""
    if not (callable(getattr(tokenizer, "encode", None)) and callable(getattr(tokenizer, "decode", None))):
        raise TypeError(
            f"tokenizer must have encode() and decode() like tiktoken's, got {type(tokenizer).__name__}: "
            "use utils.gpt2_tokenizer() or tiktoken.get_encoding('gpt2')"
        )


def check_loader(data_loader, name: str = "data_loader") -> int:
    """Number of batches of `data_loader`; ValueError if it has none (a text or data set shorter than one batch)."""
    if len(data_loader) == 0:
        raise ValueError(f"{name} has no batches: the data is smaller than one batch. Use a smaller batch_size or "
                         "context length, drop_last=False, or more data")
    return len(data_loader)


def check_file(path, what: str, hint: str = "") -> Path:
    """`Path(path)`, or FileNotFoundError naming `what` and what to do (`hint`) when it is not a file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}{'. ' + hint if hint else ''}")
    return path


def disk_full_error(exc: BaseException, path: Path, tmp: Path) -> OSError | None:
    """The clear error for `exc` when it (or what it wraps: torch wraps it) is a full disk, else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            written = tmp.stat().st_size if tmp.exists() else 0
            free = shutil.disk_usage(tmp.parent).free
            kept = f"the previous {path.name} there is unchanged" if path.exists() else "nothing was written there"
            return OSError(exc.errno, f"the disk is full: could not write {path} ({written / 1e6:.1f} MB written when it "
                           f"filled, {free / 1e6:.1f} MB free in {tmp.parent}); {kept}. Free some space, or write to another disk")
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb"):
    """Open a temporary file beside `path` and move it onto `path` only when the block ends without error.

    Nothing half-written is ever left at `path`; a full disk is one OSError that says so, naming `path`.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception as exc:
        full = disk_full_error(exc, path, tmp)
        if full is None:
            raise
        raise full from None
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically (see `atomic_write`)."""
    with atomic_write(path, "w") as f:
        f.write(text)
    return Path(path)


def check_token_ids(in_idx, vocab_size: int, context_length: int, cached: int = 0) -> None:
    """Raise ValueError unless `in_idx` is `(batch, num_tokens)`, fits the context after `cached` tokens, ids < `vocab_size`."""
    if in_idx.dim() != 2 or not 0 < in_idx.shape[1] <= context_length - cached:
        raise ValueError(f"token ids must have shape (batch, num_tokens) with 1 to {context_length} tokens (the model's context length"
                         f"{f', of which the KV cache already holds {cached}' if cached else ''}), got {tuple(in_idx.shape)}: add the batch "
                         f"dimension with ids.unsqueeze(0), keep the last tokens with idx[:, -{context_length}:] (in generate: context_size <= {context_length})")
    if not 0 <= int(in_idx.min()) <= int(in_idx.max()) < vocab_size:
        raise ValueError(f"token ids must be in the model's vocabulary 0..{vocab_size - 1}, got ids "
                         f"{int(in_idx.min())}..{int(in_idx.max())}: encode with the tokenizer the model was built for")


def check_training_args(model, optimizer, train_loader, val_loader, num_epochs, eval_freq, eval_iter,
                        start_context=None, tokenizer=None, epochs_name="num_epochs") -> None:
    """Before a training loop's first step: the arguments torch would reject late (after an epoch) or never.

    `epochs_name` is the loop's own name for the epoch count (appendix D's `train_model` says `n_epochs`).
    """
    for name, loader in (("train_loader", train_loader), ("val_loader", val_loader)):
        check_loader(loader, name)
    for name, value in ((epochs_name, num_epochs), ("eval_freq", eval_freq), ("eval_iter", eval_iter)):
        check_int(value, name)
    if not {id(p) for p in model.parameters()} & {id(p) for group in optimizer.param_groups for p in group["params"]}:
        raise ValueError("the optimizer updates none of the model's parameters: create it with model.parameters()")
    if start_context is not None and not tokenizer.encode(start_context):  # the sample after each epoch will work
        raise ValueError("start_context is empty: give the text the sample after each epoch starts with, or None")
