"""utils.pretrain: 2 processes under torchrun (gloo) train exactly like 1, resume exactly, and fail clearly.

The model is the tiny GPT over byte tokens (257), so each run takes seconds; every torchrun call has a timeout
and LLM_DIST_TIMEOUT makes a stuck collective fail instead of hanging.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from utils.corpus import ByteTokenizer, build_token_file
from utils.pretrain import pretrain

ROOT = Path(__file__).resolve().parent.parent
VERDICT = ROOT / "data" / "the-verdict.txt"
COMMON = ["--tokenizer", "bytes", "--context-length", "16", "--max-steps", "6", "--eval-every", "3",
          "--eval-batches", "2", "--lr", "1e-3", "--warmup-steps", "2", "--no-progress"]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "LLM_DIST_TIMEOUT": "60", "PYTHONPATH": str(ROOT)}


def torchrun(nproc, *args, timeout=240):
    """`python -m torch.distributed.run --standalone --nproc_per_node=nproc -m utils.pretrain args`."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "utils.pretrain", *map(str, args)]
    return subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)


def weights(out):
    return torch.load(Path(out) / "checkpoint.pt", map_location="cpu", weights_only=True)


def steps_done(out):
    return weights(out)["global_step"] + 1


def in_process(out, batch_size, **kw):
    settings = dict(context_length=16, max_steps=6, eval_every=3, eval_batches=2, lr=1e-3, warmup_steps=2,
                    tokenizer=ByteTokenizer(), progress=False)
    return pretrain(VERDICT, out, batch_size=batch_size, **{**settings, **kw})


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """6 steps, 2 processes x batch 2, dropout 0: the reference of the equivalence and resume tests."""
    out = tmp_path_factory.mktemp("ddp") / "run"
    done = torchrun(2, "--data", VERDICT, "--out", out, "--batch-size", "2", "--dropout", "0", *COMMON)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out, done


def test_two_processes_equal_one_process_with_twice_the_batch(two_process_run, tmp_path):
    out, done = two_process_run
    one = in_process(tmp_path / "one", batch_size=4, dropout=0.0)
    two = weights(out)
    assert two["global_step"] + 1 == 6 and two["run"]["world_size"] == 2
    for name, tensor in one["model"].state_dict().items():
        assert torch.allclose(two["model_state_dict"][name], tensor, atol=1e-5, rtol=0), name
    # evaluation after steps 0 and 3 (the book's schedule), on validation batches of a whole step: the same losses
    assert one["steps"] == [0, 3] and len(two["history"]["val_losses"]) == 2
    assert torch.allclose(torch.tensor(two["history"]["val_losses"]), torch.tensor(one["val_losses"]), atol=1e-4)
    assert "error" not in done.stderr


def test_resume_equals_uninterrupted_with_two_processes(two_process_run, tmp_path):
    out = tmp_path / "stopped"
    first = torchrun(2, "--data", VERDICT, "--out", out, "--batch-size", "2", "--dropout", "0", "--stop-after", "4",
                     *COMMON)
    assert first.returncode == 0, first.stderr[-3000:]
    assert steps_done(out) == 4
    second = torchrun(2, "--data", VERDICT, "--out", out, "--batch-size", "2", "--dropout", "0", "--resume", *COMMON)
    assert second.returncode == 0, second.stderr[-3000:]
    resumed, reference = weights(out), weights(two_process_run[0])
    assert resumed["global_step"] + 1 == 6
    for name, tensor in reference["model_state_dict"].items():
        assert torch.equal(resumed["model_state_dict"][name], tensor), name
    assert resumed["history"] == reference["history"]


def test_resume_equals_uninterrupted_in_one_process_with_dropout(tmp_path):
    whole = in_process(tmp_path / "whole", batch_size=3, dropout=0.2)
    part = in_process(tmp_path / "part", batch_size=3, dropout=0.2, stop_after=2)
    assert part["stopped_early"] and steps_done(tmp_path / "part") == 2
    rest = in_process(tmp_path / "part", batch_size=3, dropout=0.2, resume=True)
    for name, tensor in whole["model"].state_dict().items():
        assert torch.equal(rest["model"].state_dict()[name], tensor), name
    assert rest["val_losses"] == whole["val_losses"]
    checkpoint = weights(tmp_path / "part")  # plain tensors, numbers, strings, lists and dicts only
    assert checkpoint["global_step"] + 1 == 6 and checkpoint["config"]["vocab_size"] == 257


def test_resume_with_other_settings_is_refused(tmp_path):
    in_process(tmp_path / "r", batch_size=2, dropout=0.0, stop_after=1)
    with pytest.raises(ValueError, match="batch_size: checkpoint 2, now 3"):
        in_process(tmp_path / "r", batch_size=3, dropout=0.0, resume=True)


LONG = [a if a != "6" else "1000" for a in COMMON]  # --max-steps 1000: runs until interrupted


def _interrupt_once_training(command, out, signal_group):
    """Start `command`, wait for its first checkpoint, send Ctrl-C (SIGINT); return (returncode, stderr)."""
    proc = subprocess.Popen(command, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (out / "checkpoint.pt").exists():
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "no checkpoint after 180 s"
            time.sleep(0.2)
        if signal_group:  # as a terminal's Ctrl-C does: every process of the group
            os.killpg(proc.pid, signal.SIGINT)
        else:
            proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, stderr


def test_ctrl_c_keeps_the_finished_step_and_resume_goes_on_exactly(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "utils.pretrain", "--data", str(VERDICT), "--out", str(out), "--batch-size", "2",
               "--checkpoint-every", "1", *LONG]
    returncode, stderr = _interrupt_once_training(command, out, signal_group=False)
    assert returncode == 130 and "interrupted (rank 0)" in stderr, stderr[-3000:]
    k = steps_done(out)
    assert 1 <= k < 1000
    rest = in_process(out, batch_size=2, max_steps=1000, stop_after=k + 2, resume=True)
    whole = in_process(tmp_path / "whole", batch_size=2, max_steps=1000, stop_after=k + 2)
    for name, tensor in whole["model"].state_dict().items():
        assert torch.equal(rest["model"].state_dict()[name], tensor), name


def test_ctrl_c_stops_every_process_cleanly(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
               "utils.pretrain", "--data", str(VERDICT), "--out", str(out), "--batch-size", "2",
               "--checkpoint-every", "1", *LONG]
    returncode, stderr = _interrupt_once_training(command, out, signal_group=True)
    assert returncode != 0
    for rank in (0, 1):
        assert f"interrupted (rank {rank})" in stderr, stderr[-3000:]
    assert steps_done(out) >= 1


def _tiny_corpus(folder):
    (folder / "small.txt").write_text("A short text of a few hundred bytes. " * 8)
    return folder / "small.txt"


def _other_tokenizer_file(folder):
    (folder / "t.txt").write_text("text tokenized as bytes, not with GPT-2's BPE. " * 40)
    return build_token_file(folder / "t.txt", folder / "tokens.bin", ByteTokenizer(), progress=False).path


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


BAD = {
    # name: (make the --data path in tmp_path, extra args, what every rank must say)
    "more windows a step than there are": (_tiny_corpus, ["--tokenizer", "bytes", "--batch-size", "40"],
                                    "use fewer processes"),
    "missing data path": (lambda d: d / "nowhere.txt", ["--tokenizer", "bytes"], "does not exist"),
    "empty data file": (lambda d: _touch(d / "empty.txt"), ["--tokenizer", "bytes"], "is empty"),
    "folder without .txt": (lambda d: _touch(d / "books" / "notes.md").parent, ["--tokenizer", "bytes"],
                            "holds no .txt files"),
    "token file of another tokenizer": (_other_tokenizer_file, [], "made by tokenizer 'bytes'"),
    "resume without checkpoint": (lambda d: VERDICT, ["--tokenizer", "bytes", "--resume"], "no checkpoint at"),
}


def run_cli(*args) -> tuple[int, str, str]:
    """`python -m utils.pretrain args` in this process: (exit code, stdout, stderr)."""
    import contextlib
    import io

    from utils.pretrain import main

    previous = signal.getsignal(signal.SIGTERM)
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main([str(a) for a in args])
    finally:
        signal.signal(signal.SIGTERM, previous)
    return code, out.getvalue(), err.getvalue()


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_a_clear_error(case, tmp_path):
    """In one process: the CLI exits with 2 and one line that says what to do (no traceback)."""
    make, extra, message = BAD[case]
    if case == "token file of another tokenizer" and not (ROOT.parent / "shared" / "data" / "gpt2-bpe").is_dir():
        pytest.skip("GPT-2's tokenizer files (../shared/data/gpt2-bpe) are not here")
    (tmp_path / "data").mkdir()
    data = make(tmp_path / "data")
    code, _, err = run_cli("--data", data, "--out", tmp_path / "out", "--context-length", "16", "--max-steps", "2",
                           "--no-progress", *extra)
    assert code == 2 and err.startswith("error (rank 0): ") and message in err, err
    assert not (tmp_path / "out" / "checkpoint.pt").exists()


def test_a_bad_input_is_said_by_every_rank(tmp_path):
    """Rank 0 finds the problem; every rank says it and exits (torchrun: the point is the second process)."""
    done = torchrun(2, "--data", VERDICT, "--out", tmp_path / "out", "--tokenizer", "bytes", "--context-length", "16",
                    "--max-steps", "2", "--no-progress", "--resume", timeout=180)
    assert done.returncode != 0
    for rank in (0, 1):
        lines = [line for line in done.stderr.splitlines() if line.startswith(f"error (rank {rank}): ")]
        assert lines and "no checkpoint at" in lines[0], f"rank {rank}:\n{done.stderr[-3000:]}"


def test_no_progress_keeps_the_evaluation_lines_sample_and_summary(tmp_path):
    code, out, err = run_cli("--data", VERDICT, "--out", tmp_path / "out", "--tokenizer", "bytes", "--context-length",
                             "16", "--max-steps", "4", "--eval-every", "2", "--no-progress")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("1 process(es) on")
    assert [line.split(":")[0] for line in lines if line.startswith("Ep ")] == ["Ep 1 (Step 000000)", "Ep 1 (Step 000002)"]
    assert any(line.startswith("Every effort moves you") for line in lines)  # the sample after the epoch
    assert lines[-1].startswith("4 steps, ") and "tokens/s" in lines[-1]
    assert "|" not in out + err  # no progress bar


def test_the_checkpoint_is_the_one_format(tmp_path):
    from utils import GPTModel, load_checkpoint

    in_process(tmp_path / "r", batch_size=2, dropout=0.0, max_steps=2)
    payload = load_checkpoint(tmp_path / "r" / "checkpoint.pt", GPTModel(weights(tmp_path / "r")["config"]))
    assert payload["global_step"] + 1 == 2 and payload["run"]["world_size"] == 1
