"""Chapter 10: preference tuning with DPO (direct preference optimization), the book repository's bonus by its names.

Each entry holds an instruction (and input) with two answers, `chosen` (preferred) and `rejected`. DPO raises the
policy's log-probability of the chosen answer relative to the rejected one, measured against a frozen reference copy
of the model: loss = -log sigmoid(beta * ((pi_c - pi_r) - (ref_c - ref_r))), with pi and ref the mean log-probabilities
of an answer's tokens. Beyond the bonus: the prompt is written by a chat template (chapter 7's Alpaca prompt through
`utils.chat.AlpacaChatTemplate`, or a model's own, such as SmolLM2's ChatML), the reference is read under `no_grad`,
and the evaluation adds reward accuracy and the log-probabilities themselves.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm import tqdm

from .chat import INPUT_HEADER, check_template, model_context_length, reply_to
from .checks import END_OF_TEXT_ID, check_loader, check_training_args
from .extras import check_finite
from .instruct import read_json_list

PREFERENCE_KEYS = ("instruction", "chosen", "rejected")  # non-empty strings in every entry; 'input' is optional


# --- data -----------------------------------------------------------------------------------------------------------


def check_preference_entries(data) -> list[int]:
    """ValueError naming the first entry without an instruction, chosen or rejected text. Returns the indices of the
    entries whose chosen answer equals the rejected one: such a pair teaches nothing (its loss is ln 2 whatever the
    model), and the book's file holds six."""
    if not isinstance(data, list) or not data:
        got = "an empty list" if isinstance(data, list) else type(data).__name__
        raise ValueError("the preference data must be a non-empty list of {'instruction', 'input', 'chosen', "
                         f"'rejected'}} dicts, got {got}")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise ValueError(f"entry {i} is a {type(entry).__name__}, not a dict with 'instruction', 'chosen', 'rejected'")
        for key in PREFERENCE_KEYS:
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                raise ValueError(f"entry {i} has no {key!r} text (keys: {sorted(entry)}): every pair needs an "
                                 "instruction, a chosen and a rejected answer; fix or drop that entry")
        if not isinstance(entry.get("input", ""), str):
            raise ValueError(f"entry {i}: 'input' must be a string (use '' for none)")
    return [i for i, entry in enumerate(data) if entry["chosen"].strip() == entry["rejected"].strip()]


def load_preference_data(path) -> list[dict]:
    """Read the preference JSON (a list of {'instruction', 'input', 'chosen', 'rejected', ...} dicts), checked; one
    line names the entries whose two answers are the same (they are kept: their loss is ln 2, their gradient 0)."""
    data = read_json_list(path, "instruction-data-with-preference", "preference data file")
    try:
        same = check_preference_entries(data)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    if same:
        print(f"note: entries {', '.join(map(str, same))} of {Path(path).name} have the same chosen and rejected "
              "answer: such a pair teaches nothing")
    return data


def preference_messages(entry) -> list[dict]:
    """The user turn of an entry: its instruction, and its input under chapter 7's '### Input:' header."""
    return [{"role": "user", "content": entry["instruction"] + (INPUT_HEADER + entry["input"] if entry.get("input") else "")}]


class PreferenceDataset(Dataset):
    """Pairs tokenized once: item i is a dict of token id lists: "prompt", and "chosen" / "rejected" (the prompt, then
    that answer as `template` writes a finished turn, its end-of-turn token included). With `max_length` (the model's
    context), a pair longer than that is refused, naming the entry."""

    def __init__(self, data, template, max_length=None):
        check_preference_entries(data)
        check_template(template)
        self.data = data
        self.encoded_texts = []
        for i, entry in enumerate(data):
            messages = preference_messages(entry)
            prompt_tokens = template.encode(messages)  # ends where the answer begins
            item = {"prompt": prompt_tokens}
            for key in ("chosen", "rejected"):
                answer = {"role": "assistant", "content": entry[key]}
                item[key] = template.encode(messages + [answer], add_generation_prompt=False)
                if item[key][:len(prompt_tokens)] != prompt_tokens:
                    raise ValueError(f"entry {i}: the template does not write the prompt as the start of the finished "
                                     "turn, so the answer's tokens cannot be told apart: use a template whose turns are "
                                     "encoded piece by piece (see utils.chat.AlpacaChatTemplate)")
                if max_length is not None and len(item[key]) > max_length:
                    raise ValueError(f"entry {i}: prompt and {key} answer make {len(item[key])} tokens, more than the "
                                     f"model's context of {max_length}: shorten that entry or leave it out")
            self.encoded_texts.append(item)

    def __getitem__(self, index):
        return self.encoded_texts[index]

    def __len__(self):
        return len(self.data)


def custom_collate_fn(batch, pad_token_id=END_OF_TEXT_ID, allowed_max_length=None, mask_prompt_tokens=True,
                      device="cpu"):
    """The bonus's collate: "chosen" and "rejected" padded to one length `(batch, num_tokens)`, with boolean masks
    "chosen_mask" / "rejected_mask" True on the answer's tokens only (False on padding and, by default, the prompt);
    "prompt" stays a list of `(prompt_len,)` tensors."""
    batch_data = {"prompt": [], "chosen": [], "rejected": [], "rejected_mask": [], "chosen_mask": []}
    max_length_common = max(len(item[key]) + 1 for item in batch for key in ("chosen", "rejected"))
    for item in batch:
        prompt = torch.tensor(item["prompt"])
        batch_data["prompt"].append(prompt)
        for key in ("chosen", "rejected"):
            sequence = item[key]
            padded = sequence + [pad_token_id] * (max_length_common - len(sequence))
            mask = torch.ones(len(padded)).bool()
            mask[len(sequence):] = False  # padding
            if mask_prompt_tokens:
                mask[:prompt.shape[0]] = False  # the prompt (the bonus's Alpaca prompt also masked 2 more: "\n\n")
            batch_data[key].append(torch.tensor(padded))
            batch_data[f"{key}_mask"].append(mask)
    for key in ("chosen", "rejected", "chosen_mask", "rejected_mask"):
        tensor_stack = torch.stack(batch_data[key])  # (batch, num_tokens)
        if allowed_max_length is not None:
            tensor_stack = tensor_stack[:, :allowed_max_length]
        batch_data[key] = tensor_stack.to(device)
    return batch_data


# --- the loss -------------------------------------------------------------------------------------------------------


def compute_logprobs(logits, labels, selection_mask=None):
    """Mean log-probability of each sequence's tokens `(batch,)`: logits `(batch, num_tokens, vocab_size)`, labels
    and selection_mask `(batch, num_tokens)`; with a mask only its True tokens count (the answer's)."""
    labels = labels[:, 1:].clone()  # position t predicts token t + 1
    logits = logits[:, :-1, :]
    log_probs = F.log_softmax(logits, dim=-1)  # (batch, num_tokens - 1, vocab_size)
    selected_log_probs = torch.gather(input=log_probs, dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)
    if selection_mask is not None:
        mask = selection_mask[:, 1:].clone()
        selected_log_probs = selected_log_probs * mask  # (batch, num_tokens - 1): 0 outside the answer
        return selected_log_probs.sum(-1) / mask.sum(-1)
    return selected_log_probs.mean(-1)


def compute_dpo_loss(model_chosen_logprobs, model_rejected_logprobs, reference_chosen_logprobs,
                     reference_rejected_logprobs, beta=0.1):
    """(loss, chosen_rewards, rejected_rewards), each the mean over the batch of `(batch,)` log-probabilities.

    A reward is the policy's log-probability minus the reference's (the bonus leaves beta out of it).
    """
    model_logratios = model_chosen_logprobs - model_rejected_logprobs
    reference_logratios = reference_chosen_logprobs - reference_rejected_logprobs
    logits = model_logratios - reference_logratios
    losses = -F.logsigmoid(beta * logits)  # DPO, Eq. 7 of arXiv:2305.18290
    chosen_rewards = (model_chosen_logprobs - reference_chosen_logprobs).detach()
    rejected_rewards = (model_rejected_logprobs - reference_rejected_logprobs).detach()
    return losses.mean(), chosen_rewards.mean(), rejected_rewards.mean()


def check_reference(policy_model, reference_model) -> None:
    """ValueError when the reference is the policy itself, or shares weights with it (it would move with it)."""
    if reference_model is policy_model or {id(p) for p in policy_model.parameters()} & {
            id(p) for p in reference_model.parameters()}:
        raise ValueError("the reference model is the policy itself (or shares its weights): DPO measures the policy "
                         "against a frozen copy made before training: "
                         "reference_model = copy.deepcopy(policy_model).eval().requires_grad_(False)")


def preference_logprobs(batch, policy_model, reference_model):
    """(policy chosen, policy rejected, reference chosen, reference rejected) mean answer log-probabilities, each
    `(batch,)`; the reference is read under `no_grad`, so it never receives gradients."""
    check_reference(policy_model, reference_model)
    policy_chosen = compute_logprobs(policy_model(batch["chosen"]), batch["chosen"], batch["chosen_mask"])
    policy_rejected = compute_logprobs(policy_model(batch["rejected"]), batch["rejected"], batch["rejected_mask"])
    with torch.no_grad():
        reference_chosen = compute_logprobs(reference_model(batch["chosen"]), batch["chosen"], batch["chosen_mask"])
        reference_rejected = compute_logprobs(reference_model(batch["rejected"]), batch["rejected"],
                                              batch["rejected_mask"])
    return policy_chosen, policy_rejected, reference_chosen, reference_rejected


def compute_dpo_loss_batch(batch, policy_model, reference_model, beta):
    """The DPO loss of one batch and its mean chosen and rejected rewards (three 0-dim tensors)."""
    return compute_dpo_loss(*preference_logprobs(batch, policy_model, reference_model), beta=beta)


# --- evaluation -----------------------------------------------------------------------------------------------------


def dpo_metrics_loader(data_loader, policy_model, reference_model, beta, num_batches=None) -> dict:
    """Means over the pairs of the first `num_batches` batches (None: all): "loss", "chosen_reward",
    "rejected_reward", "reward_accuracy" (share of pairs whose chosen reward is strictly greater), the policy's
    "chosen_logprob" / "rejected_logprob", and "preference" / "reference_preference" (share of pairs where the
    policy / the reference gives the chosen answer the higher mean log-probability)."""
    num_batches = min(num_batches or len(data_loader), check_loader(data_loader))
    totals, pairs = {}, 0
    with torch.no_grad():
        for i, batch in enumerate(data_loader):
            if i >= num_batches:
                break
            logprobs = preference_logprobs(batch, policy_model, reference_model)  # four (batch,) tensors
            policy_chosen, policy_rejected, reference_chosen, reference_rejected = logprobs
            loss, chosen_reward, rejected_reward = compute_dpo_loss(*logprobs, beta=beta)
            chosen_rewards, rejected_rewards = policy_chosen - reference_chosen, policy_rejected - reference_rejected
            n = policy_chosen.shape[0]
            values = {"loss": loss.item() * n, "chosen_reward": chosen_reward.item() * n,
                      "rejected_reward": rejected_reward.item() * n,
                      "reward_accuracy": (chosen_rewards > rejected_rewards).sum().item(),
                      "chosen_logprob": policy_chosen.sum().item(), "rejected_logprob": policy_rejected.sum().item(),
                      "preference": (policy_chosen > policy_rejected).sum().item(),
                      "reference_preference": (reference_chosen > reference_rejected).sum().item()}
            totals = {key: totals.get(key, 0.0) + value for key, value in values.items()}
            pairs += n
    return {key: value / pairs for key, value in totals.items()}


def compute_dpo_loss_loader(data_loader, policy_model, reference_model, beta, num_batches=None):
    """The bonus's: (loss, chosen reward, rejected reward) over the first `num_batches` batches (None: all), as
    floats. Averaged over pairs (the bonus averages batch means: the same when every batch is full)."""
    metrics = dpo_metrics_loader(data_loader, policy_model, reference_model, beta, num_batches)
    return metrics["loss"], metrics["chosen_reward"], metrics["rejected_reward"]


def evaluate_dpo_loss_loader(policy_model, reference_model, train_loader, val_loader, beta, eval_iter):
    """The bonus's dict ("train_loss", "train_chosen_reward", ..., "val_rejected_reward") over `eval_iter` batches
    of each loader, with every other value of `dpo_metrics_loader` too ("train_reward_accuracy", ...)."""
    policy_model.eval()
    res = {}
    for split, loader in (("train", train_loader), ("val", val_loader)):
        metrics = dpo_metrics_loader(loader, policy_model, reference_model, beta, num_batches=eval_iter)
        res.update({f"{split}_{key}": value for key, value in metrics.items()})
    policy_model.train()
    return res


# --- training -------------------------------------------------------------------------------------------------------


def plural(key: str) -> str:
    """"train_loss" -> "train_losses", "val_reward_accuracy" -> "val_reward_accuracies": the tracking lists' names."""
    return key[:-1] + "ies" if key.endswith("y") else key + ("es" if key.endswith("s") else "s")


def train_model_dpo_simple(policy_model, reference_model, train_loader, val_loader, optimizer, num_epochs, beta,
                           eval_freq, eval_iter, start_context, tokenizer, *, progress=True, max_new_tokens=60):
    """The bonus's DPO loop: one optimizer step per batch, an evaluation every `eval_freq` steps. Returns `tracking`,
    one list per evaluated value ("train_losses", ..., "val_reward_accuracies", "tokens_seen").

    Beyond the bonus: a progress bar, a stop at a NaN or inf loss, reward accuracy in the printed line; after each
    epoch the policy answers `start_context` (a user message; None: no sample) through `tokenizer`, a chat template.
    """
    check_training_args(policy_model, optimizer, train_loader, val_loader, num_epochs, eval_freq, eval_iter)
    check_reference(policy_model, reference_model)
    tracking = {"tokens_seen": []}
    tokens_seen, global_step = 0, -1
    for epoch in range(num_epochs):
        policy_model.train()
        for batch in tqdm(train_loader, f"Epoch {epoch + 1}", disable=not progress):
            optimizer.zero_grad()
            loss, chosen_rewards, rejected_rewards = compute_dpo_loss_batch(batch, policy_model, reference_model, beta)
            check_finite(loss, global_step + 1)  # beyond the bonus: stop at a NaN or inf loss
            loss.backward()
            optimizer.step()
            tokens_seen += batch["chosen"].numel()
            global_step += 1
            if global_step % eval_freq == 0:
                res = evaluate_dpo_loss_loader(policy_model, reference_model, train_loader, val_loader, beta, eval_iter)
                for key, value in res.items():
                    tracking.setdefault(plural(key), []).append(value)
                tracking["tokens_seen"].append(tokens_seen)
                train_reward_margin = res["train_chosen_reward"] - res["train_rejected_reward"]
                val_reward_margin = res["val_chosen_reward"] - res["val_rejected_reward"]
                tqdm.write(f"Ep {epoch + 1} (Step {global_step:06d}): Train loss {res['train_loss']:.3f}, "
                           f"Val loss {res['val_loss']:.3f}, Train reward margins {train_reward_margin:.3f}, "
                           f"Val reward margins {val_reward_margin:.3f}, Train reward acc "
                           f"{res['train_reward_accuracy']:.0%}, Val reward acc {res['val_reward_accuracy']:.0%}")
        if start_context is not None:
            messages = [{"role": "user", "content": start_context}]
            print(reply_to(policy_model, tokenizer, messages, model_context_length(policy_model), max_new_tokens))
            policy_model.train()
    return tracking


# --- the figure -----------------------------------------------------------------------------------------------------


def plot_dpo_tracking(tracking, eval_freq):
    """Four panels over the training steps: DPO loss, reward margin and reward accuracy (training and validation),
    and the policy's mean log-probabilities of the validation pairs' chosen and rejected answers. Returns the figure."""
    import matplotlib.pyplot as plt

    steps = [i * eval_freq for i in range(len(tracking["train_losses"]))]
    margins = {s: [c - r for c, r in zip(tracking[f"{s}_chosen_rewards"], tracking[f"{s}_rejected_rewards"])]
               for s in ("train", "val")}
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.5), sharex=True)
    for (ax, title), values in zip(
            [(axes[0, 0], "DPO loss"), (axes[0, 1], "reward margin"), (axes[1, 0], "reward accuracy")],
            [{s: tracking[f"{s}_losses"] for s in ("train", "val")}, margins,
             {s: tracking[f"{s}_reward_accuracies"] for s in ("train", "val")}]):
        ax.plot(steps, values["train"], label="training")
        ax.plot(steps, values["val"], linestyle="-.", label="validation")
        ax.set_title(title)
    axes[0, 0].axhline(0.6931, color="gray", linestyle=":", linewidth=1, label="ln 2")
    axes[1, 0].yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax = axes[1, 1]
    for key, color in (("chosen", "tab:green"), ("rejected", "tab:red")):  # the same validation pairs each time
        ax.plot(steps, tracking[f"val_{key}_logprobs"], color=color, linestyle="-.", label=f"{key} answers")
    ax.set_title("validation: mean log-probability (policy)")
    for ax in axes.flat:
        ax.legend(fontsize=7)
    for ax in axes[1]:
        ax.set_xlabel("step")
    fig.tight_layout()
    return fig
