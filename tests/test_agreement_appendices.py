"""Appendices D and E: what the notebooks teach agrees with utils (tests/nbextract.py)."""

import pytest
import torch
from nbextract import extract
from tiny import tiny_config

from utils import GPTModel, lora_layers, replace_linear_with_lora, train_model

CPU = torch.device("cpu")


def test_notebook_d_training_loop_equals_utils_train_model(tiny_loaders):
    nb = extract("D_training_extras.ipynb", "global_grad_norm", "train_model")
    nb["generate_and_print_sample"] = lambda *args, **kwargs: None  # the tiny model has no real vocabulary
    nb["print"] = lambda *args, **kwargs: None
    train_loader, val_loader = tiny_loaders
    runs = []
    for loop in ("notebook", "utils"):
        torch.manual_seed(123)
        model = GPTModel(tiny_config(drop_rate=0.1))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
        torch.manual_seed(5)
        if loop == "notebook":
            result = nb["train_model"](model, train_loader, val_loader, optimizer, CPU, n_epochs=3, eval_freq=2,
                                       eval_iter=1, start_context="x", tokenizer=None, warmup_steps=2,
                                       initial_lr=1e-5, min_lr=1e-5, max_norm=0.5)[:4]
        else:  # the notebook follows the printed book: clipping from the step after the warmup
            result = train_model(model, train_loader, val_loader, optimizer, CPU, n_epochs=3, eval_freq=2,
                                 eval_iter=1, start_context=None, tokenizer=None, warmup_steps=2, initial_lr=1e-5,
                                 min_lr=1e-5, max_norm=0.5, clip_from_step=3, progress=False)
        runs.append((result, model.state_dict()))
    (nb_result, nb_state), (utils_result, utils_state) = runs
    assert nb_result == utils_result
    assert all(torch.equal(nb_state[k], utils_state[k]) for k in nb_state)


@pytest.mark.parametrize("rank, alpha", [(2, 4), (16, 16)])
def test_notebook_e_lora_equals_utils(tiny_cfg, rank, alpha):
    nb = extract("E_lora.ipynb", "LoRALayer", "LinearWithLoRA", "replace_linear_with_lora")
    models = []
    for replace in (nb["replace_linear_with_lora"], replace_linear_with_lora):
        torch.manual_seed(123)
        model = GPTModel(tiny_cfg)
        torch.manual_seed(123)
        replace(model, rank=rank, alpha=alpha)
        models.append(model)
    nb_model, utils_model = models
    assert len(lora_layers(nb_model)) == len(lora_layers(utils_model)) == 2 * 6 + 1
    nb_state, utils_state = nb_model.state_dict(), utils_model.state_dict()
    assert list(nb_state) == list(utils_state)  # the same names: files and checkpoints are interchangeable
    assert all(torch.equal(nb_state[k], utils_state[k]) for k in nb_state)  # A drawn in the same order
    torch.manual_seed(1)
    for name in nb_state:
        if name.endswith(".lora.B"):
            b = torch.randn_like(nb_state[name])
            nb_state[name].copy_(b)
            utils_state[name].copy_(b)
    x = torch.randint(0, 100, (2, 10))
    with torch.no_grad():
        assert torch.equal(nb_model(x), utils_model(x))
