"""Fault catalogue of utils.train: every bad input raises a clear error up front and leaves nothing half-written.

Each case: (id, build -> callable, expected exception, message fragment). The callable runs in a temporary
folder; afterwards no `.tmp`/`.part` file may remain there.
"""

import errno
import io
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from faults import MakesMarker, catalogue, expect_fault
from tiny import TINY, CharTokenizer, tiny_model, token_loaders
from torch.utils.data import DataLoader, TensorDataset

from utils import (
    CheckpointError,
    TrainingExtras,
    calc_loss_loader,
    checks,
    evaluate_model,
    get_device,
    load_checkpoint,
    perplexity,
    read_checkpoint,
    save_checkpoint,
    set_seed,
    train_model_simple,
)

CPU = torch.device("cpu")
loaders = token_loaders


def empty_loader():
    return DataLoader(TensorDataset(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long)),
                      batch_size=2, drop_last=True)


def fresh(cfg=TINY):
    model = tiny_model(1, **cfg)
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def train(tmp, model=None, optimizer=None, train_loader=None, val_loader=None, checkpoint_path=None,
          checkpoint_every=None, resume=False, max_steps=None, **kw):
    if checkpoint_path is not None or max_steps is not None:
        kw["extras"] = TrainingExtras(checkpoint_path, checkpoint_every, resume, max_steps)
    if model is None:
        model, optimizer = fresh()
    tl, vl = loaders()
    args = dict(device=CPU, num_epochs=1, eval_freq=1, eval_iter=1, start_context=None, tokenizer=None, progress=False)
    args.update(kw)
    return train_model_simple(model, tl if train_loader is None else train_loader, vl if val_loader is None else val_loader,
                              optimizer, **args)


def evil_checkpoint(tmp, name="evil.pth"):
    model, optimizer = fresh()
    payload = {"model_state_dict": model.state_dict(), "config": TINY, "x": MakesMarker(tmp / "MARKER")}
    torch.save(payload, tmp / name)
    return tmp / name


def training_checkpoint(tmp, name="run.pth", **kw):
    model, optimizer = fresh()
    train(tmp, model, optimizer, checkpoint_path=tmp / name, max_steps=2, **kw)
    return tmp / name


def truncated(tmp):
    good = save_checkpoint(tmp / "good.pth", fresh()[0])
    data = good.read_bytes()
    (tmp / "cut.pth").write_bytes(data[: len(data) // 2])
    return tmp / "cut.pth"


def other_config_resume(tmp):
    ckpt = training_checkpoint(tmp)
    model, optimizer = fresh({**TINY, "emb_dim": 64})
    return lambda: train(tmp, model, optimizer, checkpoint_path=ckpt, resume=True)


def other_loader_resume(tmp):
    ckpt = training_checkpoint(tmp)
    model, optimizer = fresh()
    return lambda: train(tmp, model, optimizer, train_loader=loaders(n_train=10)[0], checkpoint_path=ckpt, resume=True)


def plain_file_resume(tmp):
    model, optimizer = fresh()
    save_checkpoint(tmp / "plain.pth", model, optimizer, config=TINY)
    return lambda: train(tmp, model, optimizer, checkpoint_path=tmp / "plain.pth", resume=True)


def other_optimizer_resume(tmp):
    ckpt = training_checkpoint(tmp)
    model, _ = fresh()
    optimizer = torch.optim.AdamW(model.out_head.parameters(), lr=1e-3)
    return lambda: train(tmp, model, optimizer, checkpoint_path=ckpt, resume=True)


CASES = [
    # (id, factory(tmp) -> callable, exception, message fragment)
    ("eval_freq 0", lambda t: lambda: train(t, eval_freq=0), ValueError, "eval_freq must be a whole number >= 1"),
    ("eval_iter 0", lambda t: lambda: train(t, eval_iter=0), ValueError, "eval_iter must be a whole number >= 1"),
    ("eval_freq float", lambda t: lambda: train(t, eval_freq=2.5), ValueError, "eval_freq must be a whole number"),
    ("num_epochs 0", lambda t: lambda: train(t, num_epochs=0), ValueError, "num_epochs must be a whole number >= 1"),
    ("max_steps -1", lambda t: lambda: train(t, max_steps=-1), ValueError, "max_steps must be a whole number >= 0"),
    ("empty train loader", lambda t: lambda: train(t, train_loader=empty_loader()), ValueError,
     "train_loader has no batches"),
    ("empty val loader", lambda t: lambda: train(t, val_loader=empty_loader()), ValueError,
     "val_loader has no batches"),
    ("train loader an iterator", lambda t: lambda: train(t, train_loader=iter([])), TypeError,
     "object of type 'list_iterator' has no len()"),  # Python says it
    ("extras a path", lambda t: lambda: train(t, extras=str(t / "r.pth")), AttributeError,
     "'str' object has no attribute 'start'"),  # Python says it: pass TrainingExtras(path)
    ("every without a path", lambda t: lambda: TrainingExtras(every=5), ValueError,
     "every and resume need a checkpoint path"),
    ("checkpoint every 0", lambda t: lambda: train(t, checkpoint_every=0, checkpoint_path=t / "r.pth"), ValueError,
     "every must be a whole number >= 1"),
    ("extras path empty", lambda t: lambda: TrainingExtras(""), TypeError, "path must be a file path"),
    ("resume missing file", lambda t: lambda: train(t, resume=True, checkpoint_path=t / "none.pth"),
     FileNotFoundError, "train once with TrainingExtras(path) and resume=False"),
    ("resume other model config", other_config_resume, CheckpointError, "Build the model with the config it was"),
    ("resume other loader length", other_loader_resume, CheckpointError,
     "resume with the same data, batch_size and drop_last"),
    ("resume plain save_checkpoint file", plain_file_resume, CheckpointError,
     "load_checkpoint(path, model) and train with resume=False"),
    ("resume other optimizer", other_optimizer_resume, CheckpointError, "create the optimizer as for the saved run"),
    ("optimizer not an optimizer", lambda t: lambda: train(t, fresh()[0], "adam"), AttributeError,
     "'str' object has no attribute 'param_groups'"),  # Python says it
    ("optimizer of another model", lambda t: lambda: train(t, fresh()[0], fresh()[1]), ValueError,
     "create it with model.parameters()"),
    ("device garbage", lambda t: lambda: train(t, device="gpu"), RuntimeError,
     "device type at start of device string: gpu"),  # torch says it, at the first step
    ("start_context empty", lambda t: lambda: train(t, start_context="", tokenizer=CharTokenizer()), ValueError,
     "start_context is empty: give the text the sample after each epoch starts with, or None"),
    ("start_context without tokenizer", lambda t: lambda: train(t, start_context="Every"), AttributeError,
     "'NoneType' object has no attribute 'encode'"),  # Python says it, before the first step
    ("load empty checkpoint", lambda t: (t.joinpath("e.pth").write_bytes(b""),
                                         lambda: load_checkpoint(t / "e.pth", fresh()[0]))[1],
     CheckpointError, "is empty (0 bytes): a save was interrupted. Delete it, or re-save"),
    ("load truncated checkpoint", lambda t: (lambda p: lambda: load_checkpoint(p, fresh()[0]))(truncated(t)),
     CheckpointError, "truncated or corrupt"),
    ("load garbage", lambda t: (t.joinpath("g.pth").write_bytes(b"hello"),
                                lambda: load_checkpoint(t / "g.pth", fresh()[0]))[1],
     CheckpointError, "is not a PyTorch checkpoint (it starts with b'hell'"),
    ("load missing", lambda t: lambda: load_checkpoint(t / "none.pth", fresh()[0]), FileNotFoundError,
     "there is no checkpoint at"),
    ("load other shapes", lambda t: (save_checkpoint(t / "c.pth", fresh()[0], config=TINY),
                                     lambda: load_checkpoint(t / "c.pth", fresh({**TINY, "n_layers": 3})[0]))[1],
     CheckpointError, "It was saved with config"),
    ("load a bare state_dict", lambda t: (torch.save(fresh()[0].state_dict(), t / "sd.pth"),
                                          lambda: load_checkpoint(t / "sd.pth", fresh()[0]))[1],
     CheckpointError, "not a save_checkpoint file"),
    ("load model not a module", lambda t: lambda: load_checkpoint(t / "x.pth", {}), TypeError,
     "needs the model (a torch.nn.Module)"),
    ("save a Path in the state", lambda t: lambda: save_checkpoint(t / "p.pth", fresh()[0], where=t), TypeError,
     "pass str(...)"),
    ("save numpy float", lambda t: lambda: save_checkpoint(t / "p.pth", fresh()[0], loss=__import__("numpy").float64(1)),
     TypeError, "pass str(...), float(...)"),
    ("save a reserved key", lambda t: lambda: save_checkpoint(t / "p.pth", fresh()[0], model_state_dict={}), ValueError,
     "written by save_checkpoint itself"),
    ("save path None", lambda t: lambda: save_checkpoint(None, fresh()[0]), TypeError, "path must be a file path"),
    ("unsafe checkpoint", lambda t: (lambda p: lambda: read_checkpoint(p))(evil_checkpoint(t)), CheckpointError,
     "Nothing was loaded"),
    ("calc_loss_loader num_batches 0", lambda t: lambda: calc_loss_loader(loaders()[1], fresh()[0], CPU, num_batches=0),
     ValueError, "num_batches must be a whole number >= 1"),
    ("evaluate eval_iter 0", lambda t: lambda: evaluate_model(fresh()[0], *loaders(), CPU, 0), ValueError,
     "num_batches must be a whole number >= 1"),
    ("perplexity nan", lambda t: lambda: perplexity(float("nan")), ValueError, "loss must be a number"),
    ("set_seed str", lambda t: lambda: set_seed("123"), TypeError, "seed must be a whole number"),
    ("get_device garbage", lambda t: lambda: get_device("gpu"), ValueError, "preferred='gpu' is not a device"),
]


@catalogue(CASES)
def test_fault(tmp_path, case):
    expect_fault(case, tmp_path, tmp_path)


@pytest.mark.parametrize("value", ["gpu", "cuda:x", "", "  "])
def test_llm_device_env_is_named(monkeypatch, value):
    monkeypatch.setenv("LLM_DEVICE", value)
    if not value.strip():
        assert get_device().type in {"cuda", "mps", "cpu"}  # empty means unset
        return
    with pytest.raises(ValueError, match="the environment variable LLM_DEVICE='.*' is not a device"):
        get_device()


def test_llm_device_cuda_without_a_gpu(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("LLM_DEVICE", "cuda")
    with pytest.raises(ValueError, match="LLM_DEVICE='cuda' but this machine has no CUDA GPU"):
        get_device()


def test_a_pth_that_runs_code_is_refused_by_load_checkpoint_and_resume(tmp_path):
    evil = evil_checkpoint(tmp_path)
    with pytest.raises(pickle.UnpicklingError):  # a plain unpickle of this file would run code...
        torch.load(evil, weights_only=True)
    model, optimizer = fresh()
    with pytest.raises(CheckpointError, match=r"refused to load .*evil.pth.*can run any code.*Nothing was loaded"):
        load_checkpoint(evil, model, optimizer)
    with pytest.raises(CheckpointError, match=r"refused to load .*evil.pth"):
        train(tmp_path, model, optimizer, checkpoint_path=evil, resume=True)
    assert not (tmp_path / "MARKER").exists()
    assert not optimizer.state  # nothing was loaded or trained
    # ...and the marker mechanism itself works: an unsafe load would create it
    pickle.loads(pickle.dumps(MakesMarker(tmp_path / "MARKER"))).close()
    assert (tmp_path / "MARKER").exists()
    os.remove(tmp_path / "MARKER")


class FullDisk(io.FileIO):
    """A file on a disk with `room` bytes free: a write past them raises ENOSPC, as a full disk does."""

    room = 4096

    def write(self, data):
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().write(data)


def test_a_full_disk_is_said_and_the_old_checkpoint_kept(tmp_path, monkeypatch):
    """torch's zip writer reports a full disk as 'unexpected pos 896 vs 790': the error says the disk is full, where."""
    path = save_checkpoint(tmp_path / "run.pth", fresh()[0], step=1)
    before = path.read_bytes()
    monkeypatch.setattr(checks, "open", lambda file, mode, **kw: FullDisk(file, "w"), raising=False)
    with pytest.raises(OSError, match=r"the disk is full: could not write .*run.pth .*MB free in .*; the previous "
                                      r"run.pth there is unchanged. Free some space, or write to another disk") as info:
        save_checkpoint(path, fresh()[0], step=2)
    assert info.value.errno == errno.ENOSPC and "inline_container" not in str(info.value)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["run.pth"]


def test_a_really_full_disk(tmp_path):
    """The same on a real 200 kB disk (a tmpfs in a user namespace, where the system allows one)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no user namespaces here to mount a small disk in")
    script = (f"from utils import save_checkpoint; import torch; p = {str(disk / 'c.pth')!r}\n"
              "save_checkpoint(p, torch.nn.Linear(10, 10)); old = open(p, 'rb').read()\n"
              "try: save_checkpoint(p, torch.nn.Linear(300, 300))\n"
              "except OSError as e: print(e); assert open(p, 'rb').read() == old\n")
    run = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount -t tmpfs -o size=200k tmpfs {disk} && "
                          f"{sys.executable} -c \"$0\"", script], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    if "mount:" in run.stderr:
        pytest.skip(f"cannot mount a small disk here: {run.stderr.strip()}")
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith(f"[Errno 28] the disk is full: could not write {disk / 'c.pth'}"), run.stdout
    assert "the previous c.pth there is unchanged" in run.stdout
