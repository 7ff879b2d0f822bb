"""Chapter 10's exercises: the DPO loss of one pair by hand, the margin beta asks for, summed log-probabilities."""

from __future__ import annotations

import math

import torch

from .core import Wrong, exercise, items, number

PAIR = (-1.2, -2.0, -1.5, -1.8)  # exercise 10.1: policy chosen, policy rejected, reference chosen, reference rejected
BETA, TARGET_LOSS = 0.1, 0.5


def dpo_loss(policy_chosen, policy_rejected, reference_chosen, reference_rejected, beta) -> float:
    from ..dpo import compute_dpo_loss

    values = [torch.tensor([v]) for v in (policy_chosen, policy_rejected, reference_chosen, reference_rejected)]
    return compute_dpo_loss(*values, beta=beta)[0].item()


@exercise("10.1")
def loss_by_hand(answer):
    got = number(answer, "the loss")
    expected = dpo_loss(*PAIR, beta=BETA)
    if abs(got - dpo_loss(*PAIR, beta=1.0)) < 1e-3:
        raise Wrong("beta multiplies the log-ratio difference before the sigmoid: you left it out")
    if abs(got - dpo_loss(PAIR[0], PAIR[1], 0.0, 0.0, beta=BETA)) < 1e-3:
        raise Wrong("the reference's log-ratio is subtracted too: (pi_c - pi_r) - (ref_c - ref_r)")
    if abs(got - dpo_loss(PAIR[1], PAIR[0], PAIR[3], PAIR[2], beta=BETA)) < 1e-3:
        raise Wrong("the sign is flipped: the loss falls when the chosen answer gains, -log sigmoid(beta * z)")
    if abs(got - expected) > 1e-3:
        raise Wrong("not quite. Hint: z = (policy chosen - policy rejected) - (reference chosen - reference rejected), "
                    "then -log(sigmoid(beta * z))")
    return f"a margin of 0.5 at beta 0.1 only takes the loss from ln 2 = 0.6931 to {expected:.4f}."


def margin_for(beta: float, loss: float = TARGET_LOSS) -> float:
    """The z with -log sigmoid(beta z) = loss."""
    p = math.exp(-loss)
    return math.log(p / (1 - p)) / beta


@exercise("10.2")
def margins_for_beta(answer):
    small, large = (number(v, "a margin") for v in items(answer, "(margin at beta 0.1, margin at beta 0.5)"))
    want_small, want_large = margin_for(0.1), margin_for(0.5)
    if abs(small - want_large) < 0.01 * want_large and abs(large - want_small) < 0.01 * want_small:
        raise Wrong("the two margins are swapped: the larger beta needs the smaller margin")
    for got, want, beta in ((small, want_small, 0.1), (large, want_large, 0.5)):
        if abs(got - want) > 0.01 * abs(want):
            raise Wrong(f"the margin at beta {beta} is off. Hint: solve sigmoid(beta * z) = exp(-0.5) for z, "
                        "with the logit (the inverse of the sigmoid): log(p / (1 - p))")
    return (f"beta 0.5 is content with a margin five times smaller ({want_large:.2f} instead of {want_small:.2f}): "
            "the policy stays nearer the reference.")


@exercise("10.3")
def summed_logprobs(answer):
    from ..dpo import compute_logprobs

    if not callable(answer):
        raise Wrong(f"the answer should be the function compute_logprobs_sum, got {type(answer).__name__}")
    torch.manual_seed(123)
    logits, labels = torch.randn(3, 6, 11), torch.randint(0, 11, (3, 6))  # (batch, num_tokens, vocab), (batch, num_tokens)
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0]]).bool()
    try:
        got = answer(logits, labels, mask)
    except Exception as exc:  # noqa: BLE001  (the learner's code)
        raise Wrong(f"compute_logprobs_sum(logits, labels, mask) raised {type(exc).__name__}: {exc}") from None
    if not isinstance(got, torch.Tensor) or got.shape != (3,):
        raise Wrong(f"return one number a sequence, a tensor of shape (batch,) = (3,), got {getattr(got, 'shape', got)!r}")
    mean = compute_logprobs(logits, labels, mask)
    expected = mean * mask[:, 1:].sum(-1)
    if torch.allclose(got, mean, atol=1e-5):
        raise Wrong("that is the mean: leave out the division by the number of selected tokens")
    if not torch.allclose(got, expected, atol=1e-4):
        raise Wrong("not the expected sums. Hint: shift as compute_logprobs does (labels[:, 1:], logits[:, :-1], "
                    "selection_mask[:, 1:]), gather each target's log-probability, zero it outside the mask, sum")
    return "with sums, every extra token lowers an answer's log-probability: short answers win by default."
