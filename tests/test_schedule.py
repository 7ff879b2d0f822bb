"""utils.schedule: warmup + cosine values at chosen steps, global-norm clipping, bad input."""

import math

import pytest
import torch

from utils import clip_gradients, lr_at_step

# the book's appendix-D run: 135 steps, 27 warmup, peak 1e-3, initial and minimum 1e-5
BOOK = dict(total_steps=135, peak_lr=1e-3, warmup_steps=27, initial_lr=1e-5, min_lr=1e-5)


def test_warmup_starts_at_initial_lr():
    assert lr_at_step(0, **BOOK) == 1e-5


def test_warmup_is_linear_and_ends_at_peak():
    inc = (1e-3 - 1e-5) / 27
    assert lr_at_step(1, **BOOK) == pytest.approx(1e-5 + inc, rel=1e-12)
    assert lr_at_step(26, **BOOK) == pytest.approx(1e-5 + 26 * inc, rel=1e-12)
    assert lr_at_step(27, **BOOK) == pytest.approx(1e-3, rel=1e-12)  # first cosine step: the peak


def test_cosine_midpoint_is_halfway_between_peak_and_min():
    mid = 27 + (135 - 27) // 2  # 108 cosine steps: step 81 is progress 0.5
    assert lr_at_step(mid, **BOOK) == pytest.approx((1e-3 + 1e-5) / 2, rel=1e-12)


def test_last_step_is_just_above_min_and_floor_is_min():
    last = lr_at_step(134, **BOOK)
    expected = 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * 107 / 108))  # the book's formula
    assert last == pytest.approx(expected, rel=1e-12)
    assert 1e-5 < last < 1.3e-5
    assert lr_at_step(135, **BOOK) == pytest.approx(1e-5, rel=1e-12)


def test_same_floats_as_the_books_loop():
    inc = (1e-3 - 1e-5) / 27
    by_hand = [1e-5 + s * inc if s < 27
               else 1e-5 + (1e-3 - 1e-5) * 0.5 * (1 + math.cos(math.pi * ((s - 27) / (135 - 27)))) for s in range(135)]
    assert [lr_at_step(s, **BOOK) for s in range(135)] == by_hand  # exactly, not approximately


def test_schedule_is_monotone_in_each_phase():
    lrs = [lr_at_step(s, **BOOK) for s in range(135)]
    assert all(a < b for a, b in zip(lrs[:27], lrs[1:28]))
    assert all(a > b for a, b in zip(lrs[27:-1], lrs[28:]))


def test_no_warmup_starts_at_peak():
    assert lr_at_step(0, total_steps=10, peak_lr=0.1, min_lr=0.0) == pytest.approx(0.1)
    assert lr_at_step(5, total_steps=10, peak_lr=0.1, min_lr=0.0) == pytest.approx(0.05)


def test_warmup_as_long_as_training():
    assert lr_at_step(9, total_steps=10, peak_lr=0.1, warmup_steps=10, initial_lr=0.0) == pytest.approx(0.09)
    assert lr_at_step(10, total_steps=10, peak_lr=0.1, warmup_steps=10, min_lr=0.0) == 0.0


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(step=-1), ValueError, "step"),
    (dict(step=136), ValueError, "step"),
    (dict(step=1.5), ValueError, "step"),
    (dict(total_steps=0), ValueError, "total_steps"),
    (dict(warmup_steps=200), ValueError, "warmup_steps"),
    (dict(warmup_steps=-1), ValueError, "warmup_steps"),
    (dict(peak_lr=0.0), ValueError, "peak_lr"),
    (dict(peak_lr=float("nan")), TypeError, "peak_lr"),
    (dict(initial_lr=-1e-5), ValueError, "initial_lr"),
    (dict(min_lr=0.1), ValueError, "min_lr"),
    (dict(peak_lr="1e-3"), TypeError, "peak_lr"),
])
def test_bad_arguments(kwargs, error, words):
    args = {"step": 0, **BOOK, **kwargs}
    with pytest.raises(error, match=words):
        lr_at_step(**args)


def _params_with_grads(scale):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7)),
              torch.nn.Parameter(torch.randn(2))]
    for p in params[:2]:
        p.grad = torch.randn_like(p) * scale
    return params  # the last one has no gradient


def _global_norm(params):
    return torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params if p.grad is not None])).item()


def test_clipping_brings_the_global_norm_to_max_norm():
    params = _params_with_grads(10.0)
    before = _global_norm(params)
    grads = [p.grad.clone() for p in params[:2]]
    returned = clip_gradients(params, max_norm=1.0)
    assert returned == pytest.approx(before, rel=1e-6) and before > 1.0
    assert _global_norm(params) == pytest.approx(1.0, rel=1e-5)
    for g, p in zip(grads, params[:2]):  # one factor for all: directions are kept
        torch.testing.assert_close(p.grad, g * (1.0 / before), rtol=1e-5, atol=0)


def test_a_smaller_norm_is_left_alone():
    params = _params_with_grads(0.01)
    grads = [p.grad.clone() for p in params[:2]]
    returned = clip_gradients(iter(params), max_norm=1.0)
    assert returned == pytest.approx(_global_norm(params), rel=1e-6) and returned < 1.0
    for g, p in zip(grads, params[:2]):
        assert torch.equal(p.grad, g)


def test_clipping_matches_torch_and_a_model():
    torch.manual_seed(1)
    a, b = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    x = torch.randn(8, 4)
    for m in (a, b):
        (m(x) ** 2).sum().mul(100).backward()
    assert clip_gradients(a.parameters(), 0.5) == pytest.approx(float(torch.nn.utils.clip_grad_norm_(b.parameters(), 0.5)))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa.grad, pb.grad)


def test_no_gradients_gives_zero():
    assert clip_gradients([torch.nn.Parameter(torch.ones(3))], 1.0) == 0.0


@pytest.mark.parametrize("max_norm, error", [(0.0, ValueError), (-1.0, ValueError), (float("inf"), TypeError),
                                             (None, TypeError)])
def test_bad_max_norm(max_norm, error):
    with pytest.raises(error, match="max_norm"):
        clip_gradients(_params_with_grads(1.0), max_norm)


def test_bad_parameters():
    with pytest.raises(TypeError, match="parameters"):
        clip_gradients(3, 1.0)
    with pytest.raises(TypeError, match="parameters"):
        clip_gradients([1.0, 2.0], 1.0)
