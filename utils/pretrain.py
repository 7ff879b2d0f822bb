"""Pretrain the chapter-4 GPT on your own text: one process, or N processes with DistributedDataParallel.

    python -m utils.pretrain --data books/ --out runs/books                       # one process
    torchrun --nproc_per_node=2 -m utils.pretrain --data books/ --out runs/books  # two (gloo on CPU, nccl on CUDA)

The notebook 05b calls `pretrain(...)` below: the same code path. The corpus becomes `<out>/tokens.bin`
(utils.corpus, built once by rank 0). The training loop is appendix D's `train_model` (utils/train.py); around it
the multi-process pieces: every process draws its share of each step's windows through a `DistributedSampler`
(so N processes with batch b take the same steps as one process with batch N*b), DistributedDataParallel
averages the gradients, and only rank 0 prints and writes `<out>/checkpoint.pt` (utils/extras.py's format: it
loads with `torch.load(weights_only=True)` and `--resume` continues exactly where it stopped).
"""

from __future__ import annotations

import argparse
import builtins
import contextlib
import inspect
import math
import os
import signal
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from .checkpoint import CheckpointError, NonFiniteLossError, read_checkpoint
from .corpus import CorpusError, TokenFile, build_token_file, get_tokenizer, tokenizer_fingerprint, train_val_windows
from .device import get_device
from .extras import TrainingExtras
from .model import GPT_CONFIG_124M, MODEL_SIZES, GPTModel
from .train import train_model

# Sizes to train from scratch: the book's GPT_CONFIG_124M layout (no qkv bias) at three widths.
MODELS = {
    "tiny": {"emb_dim": 64, "n_layers": 2, "n_heads": 2},  # a few seconds per hundred steps on a laptop CPU
    "small": {"emb_dim": 256, "n_layers": 4, "n_heads": 4},  # minutes on a laptop CPU for a book-sized corpus
    "124M": MODEL_SIZES["124M"],
    "355M": MODEL_SIZES["355M"],
}
CHECKPOINT_FORMAT = "utils.pretrain checkpoint v1"
# Settings that must be the same to resume a checkpoint (they fix the order of the batches and the schedule)
RESUME_KEYS = ("world_size", "batch_size", "seed", "total_steps", "val_fraction", "warmup_steps", "lr")


class _Ranks:
    """Where this process stands: rank, world size, device; `started` if it opened the process group."""

    def __init__(self, device=None):
        self.started = False
        if "RANK" in os.environ and "WORLD_SIZE" in os.environ and not dist.is_initialized():
            use_cuda = torch.cuda.is_available() and (device is None or str(device).startswith("cuda"))
            local_rank = int(os.environ.get("LOCAL_RANK", "0"))
            if use_cuda:
                torch.cuda.set_device(local_rank)
            timeout = timedelta(seconds=float(os.environ.get("LLM_DIST_TIMEOUT", "1800")))
            dist.init_process_group("nccl" if use_cuda else "gloo", timeout=timeout)
            self.started = True
            device = f"cuda:{local_rank}" if use_cuda else "cpu"
        self.distributed = dist.is_initialized()
        self.rank = dist.get_rank() if self.distributed else 0
        self.world = dist.get_world_size() if self.distributed else 1
        self.device = torch.device(device) if device is not None else get_device()
        self.main = self.rank == 0

    def shared(self, fn):
        """Run `fn` on rank 0 and return its result on every rank; if it raised, raise the same error everywhere."""
        outcome = None
        if self.main:
            try:
                outcome = ("ok", fn())
            except (Exception, KeyboardInterrupt) as e:  # noqa: B036 (re-raised on every rank below)
                outcome = ("error", type(e).__name__, str(e))
                if not self.distributed:
                    raise
        if self.distributed:
            box = [outcome]
            dist.broadcast_object_list(box, src=0)
            outcome = box[0]
        if outcome[0] == "error":
            cls = {"CorpusError": CorpusError, "NonFiniteLossError": NonFiniteLossError,
                   "CheckpointError": CheckpointError}.get(outcome[1])
            cls = cls or getattr(builtins, outcome[1], None)
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                cls = RuntimeError
            err = cls(outcome[2] if self.main else f"{outcome[2]} (reported by rank 0)")
            if self.distributed and isinstance(err, (ValueError, FileNotFoundError, NonFiniteLossError)):
                # Every rank says it, then waits for the others: torchrun stops the rest as soon as one exits,
                # which could cut another rank's message short. All ranks are here together (the broadcast above).
                _say(f"error (rank {self.rank}): {err}")
                err.reported = True  # main() does not print it again
                dist.barrier()
            raise err
        return outcome[1]

    def close(self):
        if self.started and dist.is_initialized():
            dist.destroy_process_group()


class _StopAtStepEnd:
    """While training, Ctrl-C (SIGINT) and SIGTERM only ask to stop: the loop finishes the step, saves, then stops.

    A second Ctrl-C stops at once. Outside the main thread (where signals cannot be handled) it does nothing.
    """

    def __init__(self):
        self.requested, self.previous = False, {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt(f"signal {signum} twice: stopped mid-step (the last checkpoint is intact)")
        self.requested = True

    def restore(self):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}


def model_config(model: str, vocab_size: int, context_length: int, drop_rate: float) -> dict:
    """The GPTModel config of size `model` ('tiny', 'small', '124M', '355M') for this tokenizer and context length."""
    if model not in MODELS:
        raise ValueError(f"model={model!r} is not a known size: choose one of {', '.join(MODELS)}")
    return {**GPT_CONFIG_124M, **MODELS[model], "vocab_size": vocab_size, "context_length": context_length,
            "drop_rate": drop_rate, "qkv_bias": False}


def _check_settings(s: dict) -> None:
    for name in ("context_length", "batch_size", "eval_every", "eval_batches"):
        if not isinstance(s[name], int) or s[name] <= 0:
            raise ValueError(f"{name} must be a positive whole number, got {s[name]!r}")
    for name in ("epochs", "max_steps", "stop_after", "checkpoint_every"):
        if s[name] is not None and (not isinstance(s[name], int) or s[name] <= 0):
            raise ValueError(f"{name} must be a positive whole number or None, got {s[name]!r}")
    if s["epochs"] is not None and s["max_steps"] is not None:
        raise ValueError("give epochs or max_steps, not both")
    if not s["lr"] > 0:
        raise ValueError(f"lr must be positive, got {s['lr']!r}: the book uses 4e-4")
    if not 0 <= s["dropout"] < 1:
        raise ValueError(f"dropout must be in [0, 1), got {s['dropout']!r}")
    if s["warmup_steps"] < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {s['warmup_steps']!r}")


def _load_checkpoint(path: Path) -> dict:
    """The payload of `<out>/checkpoint.pt` (read_checkpoint's errors), or an error saying what to give instead."""
    if not path.exists():
        raise FileNotFoundError(
            f"--resume: there is no checkpoint at {path}: start without --resume, or give the --out folder "
            "of the run to continue"
        )
    payload = read_checkpoint(path)
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a utils.pretrain checkpoint ({CHECKPOINT_FORMAT}): give its --out folder")
    return payload


def pretrain(
    data,
    out,
    *,
    model: str = "tiny",
    context_length: int = 256,
    batch_size: int = 8,
    epochs: int | None = None,
    max_steps: int | None = None,
    lr: float = 4e-4,
    warmup_steps: int = 0,
    min_lr: float = 1e-5,
    weight_decay: float = 0.1,
    grad_clip: float | None = 1.0,
    dropout: float = 0.1,
    val_fraction: float = 0.1,
    eval_every: int = 50,
    eval_batches: int = 5,
    checkpoint_every: int | None = None,
    resume: bool = False,
    seed: int = 123,
    prompt: str | None = "Every effort moves you",
    sample_tokens: int = 30,
    stop_after: int | None = None,
    tokenizer=None,
    device=None,
    progress: bool = True,
) -> dict:
    """Train GPTModel of size `model` on the text file/folder (or token file .bin) `data`; files go to `out`.

    Returns a dict: `model` (the trained GPTModel), `config`, `steps`, `train_losses`, `val_losses`,
    `tokens_seen` (one entry per evaluation), `tokens_per_second`, `checkpoint` (path), `stopped_early`.
    `stop_after=k` stops after step k as if interrupted (the schedule still plans the whole run); `resume=True`
    continues from `<out>/checkpoint.pt`. Under torchrun each process calls this with the same arguments.
    """
    settings = dict(context_length=context_length, batch_size=batch_size, epochs=epochs, max_steps=max_steps, lr=lr,
                    warmup_steps=warmup_steps, dropout=dropout, eval_every=eval_every, eval_batches=eval_batches,
                    stop_after=stop_after, checkpoint_every=checkpoint_every)
    ranks = _Ranks(device)
    try:
        result = _pretrain(ranks, data, Path(out), model, settings, min_lr, weight_decay, grad_clip, val_fraction,
                           resume, seed, prompt, sample_tokens, tokenizer, progress)
        if ranks.distributed:  # nobody leaves the group while another rank still talks to it (gloo aborts then)
            dist.barrier()
        return result
    finally:
        ranks.close()


def _pretrain(ranks, data, out, model_name, s, min_lr, weight_decay, grad_clip, val_fraction, resume, seed, prompt,
              sample_tokens, tokenizer, progress):
    _check_settings(s)
    if tokenizer is None:
        from .tokenizer import gpt2_tokenizer

        tokenizer = gpt2_tokenizer()
    token_file, train_ds, train_loader, val_loader = _data(ranks, Path(data), out, s, val_fraction, seed, tokenizer,
                                                           progress)
    steps_per_epoch = len(train_loader)
    total_steps = s["max_steps"] or (s["epochs"] or 1) * steps_per_epoch
    run = {"world_size": ranks.world, "batch_size": s["batch_size"], "seed": seed, "total_steps": total_steps,
           "val_fraction": val_fraction, "warmup_steps": s["warmup_steps"], "lr": s["lr"]}

    # The model and optimizer; a resumed run's settings are checked against its checkpoint first.
    config = model_config(model_name, token_file.n_vocab, s["context_length"], s["dropout"])
    token_id = {"num_tokens": token_file.num_tokens, "tokenizer": tokenizer_fingerprint(tokenizer)}
    state = ranks.shared(lambda: _load_checkpoint(out / "checkpoint.pt")) if resume else None
    if state is not None:
        _check_resume(state, run, config, token_id, out / "checkpoint.pt")
    torch.manual_seed(seed)
    gpt = GPTModel(config).to(ranks.device)
    optimizer = torch.optim.AdamW(gpt.parameters(), lr=s["lr"], weight_decay=weight_decay)
    torch.manual_seed(seed + 1)  # dropout: one random stream, the same on every rank (a checkpoint's fits them all)

    # Appendix D's train_model, with the multi-process pieces around it.
    extras = _RankZeroExtras(ranks, gpt, out / "checkpoint.pt", every=s["checkpoint_every"], resume=resume,
                             max_steps=min(total_steps, s["stop_after"] or total_steps),
                             meta={"format": CHECKPOINT_FORMAT, "config": config, "run": run, "token_file": token_id})
    first_step = state["global_step"] + 1 if state is not None else 0
    say = print if ranks.main else (lambda *a, **k: None)
    say(f"{ranks.world} process(es) on {ranks.device.type}, {sum(p.numel() for p in gpt.parameters()):,} parameters, "
        f"{len(train_ds):,} training windows, {steps_per_epoch} steps per epoch, {total_steps} steps")
    if state is not None:
        say(f"resuming checkpoint.pt at step {first_step} of {total_steps}")
    started = time.perf_counter()
    try:
        with _rank_zero_prints(ranks):
            train_losses, val_losses, tokens_seen, _ = train_model(
                _ddp(gpt, ranks), train_loader, val_loader, optimizer, ranks.device,
                math.ceil(total_steps / steps_per_epoch), s["eval_every"], s["eval_batches"], prompt or None, tokenizer,
                s["warmup_steps"], min(min_lr, s["lr"]), min(min_lr, s["lr"]), max_norm=grad_clip,
                total_steps=total_steps, extras=extras, progress=progress, sample_tokens=sample_tokens)
    finally:  # Ctrl-C works as usual again, also after an error
        if extras.interrupt is not None:
            extras.interrupt.restore()
    seconds, steps = time.perf_counter() - started, extras.step
    speed = (steps - first_step) * s["batch_size"] * s["context_length"] * ranks.world / seconds
    stopped_early = steps < total_steps
    if stopped_early:
        say(f"stopped after step {steps} (stop_after): checkpoint saved; continue with --resume")
    say(f"{steps} steps, {steps * s['batch_size'] * s['context_length'] * ranks.world:,} tokens seen; "
        f"{speed:,.0f} tokens/s over all processes (evaluations and samples included)")
    return {"model": gpt, "config": config, "steps": list(range(0, steps, s["eval_every"])),
            "train_losses": train_losses, "val_losses": val_losses, "tokens_seen": tokens_seen,
            "tokens_per_second": speed, "checkpoint": out / "checkpoint.pt", "stopped_early": stopped_early,
            "world_size": ranks.world}


def _data(ranks, data, out, s, val_fraction, seed, tokenizer, progress):
    """The token file (built or reused by rank 0, then mapped by every rank), its training windows and the loaders."""

    def make_token_file():
        if data.suffix in (".bin", ".json"):
            return str(TokenFile(data.with_suffix(".bin"), tokenizer).path)
        return str(build_token_file(data, out / "tokens.bin", tokenizer, progress=progress).path)

    token_file = TokenFile(ranks.shared(make_token_file), tokenizer)
    train_ds, val_ds = train_val_windows(token_file, s["context_length"], val_fraction)
    # Each rank draws its share of every epoch's shuffled windows; evaluation batches are as large as a whole step,
    # so the logged validation losses are the same for any number of processes. Private generators: iterating a
    # loader never draws from torch's global random numbers (dropout's).
    sampler = DistributedSampler(train_ds, num_replicas=ranks.world, rank=ranks.rank, shuffle=True, seed=seed,
                                 drop_last=True)
    train_loader = DataLoader(train_ds, s["batch_size"], sampler=sampler, drop_last=True, generator=torch.Generator())
    val_loader = DataLoader(val_ds, s["batch_size"] * ranks.world, generator=torch.Generator())
    if len(train_loader) == 0:
        raise ValueError(
            f"the training part of {token_file.path.name} gives {len(train_ds)} windows of {s['context_length']} "
            f"tokens, but one step takes {ranks.world} process(es) x batch {s['batch_size']} = "
            f"{ranks.world * s['batch_size']} windows: use fewer processes (--nproc_per_node), a smaller "
            "--batch-size or --context-length, or more text"
        )
    return token_file, train_ds, train_loader, val_loader


def _check_resume(state: dict, run: dict, config: dict, token_id: dict, path: Path) -> None:
    """ValueError listing every setting of this run that differs from the checkpoint's."""
    problems = [f"{k}: checkpoint {state['run'][k]!r}, now {run[k]!r}" for k in RESUME_KEYS
                if state["run"].get(k) != run[k]]
    if state["config"] != config:
        problems.append(f"model config: checkpoint {state['config']}, now {config}")
    if state["token_file"] != token_id:
        problems.append("the token file differs from the one the checkpoint trained on")
    if problems:
        raise ValueError(f"cannot resume {path}: settings differ ({'; '.join(problems)}); "
                         "resume with the settings of the first run, or start afresh without --resume")


class _DDP(DistributedDataParallel):
    """DistributedDataParallel that also answers for the GPT's own attributes (`pos_emb`, `reset_kv_cache`, ...),
    which the book's sample code reads from the model it is given."""

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "module":
                raise
            return getattr(self.module, name)


def _ddp(gpt, ranks):
    """The model train_model steps: `gpt` itself in one process; wrapped in DistributedDataParallel (gradients
    averaged over the processes in every backward pass) in several."""
    if not ranks.distributed:
        return gpt
    device_ids = [ranks.device.index] if ranks.device.type == "cuda" else None
    # the only buffers are the causal masks, equal everywhere: no need to send them at every step
    quiet = ({"forward_sync_buffers": False} if "forward_sync_buffers" in inspect.signature(
        DistributedDataParallel).parameters else {"broadcast_buffers": False})
    return _DDP(gpt, device_ids=device_ids, **quiet)


@contextlib.contextmanager
def _rank_zero_prints(ranks):
    """Only rank 0 prints: the evaluation lines, the samples and the progress bar of the other ranks go nowhere."""
    if ranks.main:
        yield
        return
    with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
        yield


class _RankZeroExtras(TrainingExtras):
    """train_model's extras for N processes: checkpoints of the GPT itself (not of its DDP wrapper) written by rank 0,
    and Ctrl-C (or SIGTERM) on any rank stops every rank after the same finished step, saved."""

    def __init__(self, ranks, gpt, path, **kwargs):
        super().__init__(path, **kwargs)
        self.ranks, self.gpt, self.interrupt = ranks, gpt, None

    def start(self, model, optimizer, *args, **kwargs):
        self.interrupt = _StopAtStepEnd()
        try:
            return super().start(self.gpt, optimizer, *args, **kwargs)
        except BaseException:
            self.interrupt.restore()
            raise

    def save(self) -> None:
        if self.ranks.main:
            super().save()

    def after_step(self, global_step: int, tokens_seen: int) -> bool:
        stopped = super().after_step(global_step, tokens_seen)
        asked = torch.tensor(float(self.interrupt.requested), device=self.ranks.device)
        if self.ranks.distributed:
            dist.all_reduce(asked)  # the same answer on every rank
        if asked.item() > 0:
            self.save()
            self.interrupt.restore()
            if self.ranks.main:
                print(f"\ninterrupted: saved step {self.step} to {self.path.name}; continue with --resume")
            raise KeyboardInterrupt(f"interrupted after step {self.step}")
        if self.stopped or self.step == self.total:
            self.interrupt.restore()
        return stopped


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m utils.pretrain",
        description="Pretrain the chapter-4 GPT on a text file or folder of .txt files; under torchrun, on N processes.",
    )
    p.add_argument("--data", required=True, help="a UTF-8 text file, a folder of .txt files, or a token file (.bin)")
    p.add_argument("--out", required=True, help="folder for tokens.bin/.json and checkpoint.pt")
    p.add_argument("--model", default="tiny", choices=list(MODELS), help="model size (default tiny)")
    p.add_argument("--context-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=8, help="windows per process per step")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, default=None, help="passes over the training windows (default 1)")
    length.add_argument("--max-steps", type=int, default=None, help="optimizer steps in all (instead of --epochs)")
    p.add_argument("--lr", type=float, default=4e-4, help="peak learning rate (cosine decay after warmup)")
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--dropout", type=float, default=0.1)
    p.add_argument("--val-fraction", type=float, default=0.1, help="last fraction of the tokens kept for validation")
    p.add_argument("--eval-every", type=int, default=50, help="evaluate (and log) every N steps")
    p.add_argument("--eval-batches", type=int, default=5)
    p.add_argument("--checkpoint-every", type=int, default=None, help="also checkpoint every N steps (always at the end)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--seed", type=int, default=123)
    p.add_argument("--prompt", default="Every effort moves you", help="start of the sample printed after each epoch")
    p.add_argument("--tokenizer", default="gpt2", help="gpt2 (default), another tiktoken encoding, bytes (257 tokens), or the folder of a saved "
                   "utils.bpe.BPETokenizer (trained on your text, notebook 02b)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best there is)")
    p.add_argument("--stop-after", type=int, default=None, help="stop after step N as if interrupted (try --resume)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the evaluation lines, samples and summary stay)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    rank = os.environ.get("RANK", "0")
    if threading.current_thread() is threading.main_thread():  # torchrun stops the others with SIGTERM when
        signal.signal(signal.SIGTERM, _raise_interrupt)  # one fails: shut down cleanly (destroy_process_group) too
    try:
        tokenizer = get_tokenizer(args.tokenizer)
        pretrain(
            args.data, args.out, model=args.model, context_length=args.context_length, batch_size=args.batch_size,
            epochs=args.epochs, max_steps=args.max_steps, lr=args.lr, warmup_steps=args.warmup_steps,
            dropout=args.dropout, val_fraction=args.val_fraction, eval_every=args.eval_every,
            eval_batches=args.eval_batches, checkpoint_every=args.checkpoint_every, resume=args.resume,
            seed=args.seed, prompt=args.prompt, stop_after=args.stop_after, tokenizer=tokenizer,
            device=args.device, progress=not args.no_progress,
        )
    except (ValueError, FileNotFoundError, NonFiniteLossError) as e:
        if not getattr(e, "reported", False):
            _say(f"error (rank {rank}): {e}")
        return 2
    except KeyboardInterrupt:
        _say(f"interrupted (rank {rank})")
        return 130
    return 0


def _say(line: str) -> None:
    """One line to stderr in a single write: the ranks share torchrun's stderr, and print() writes the text and the
    newline separately, so two ranks' lines could interleave."""
    sys.stderr.flush()
    try:
        os.write(sys.stderr.fileno(), (line + "\n").encode())  # one write of under 4 KiB to a pipe is atomic
    except (AttributeError, OSError, ValueError):  # a stderr without a file descriptor (captured, in a notebook)
        sys.stderr.write(line + "\n")
        sys.stderr.flush()


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(main())
