"""Chapter 4's model diagram helpers in utils.plots (moved out of the notebook, issue 18)."""

import matplotlib

matplotlib.use("Agg")

import torch  # noqa: E402

from utils import GPTModel, plot_model_diagram, record_output_shapes  # noqa: E402

TINY = {"vocab_size": 50, "context_length": 8, "emb_dim": 16, "n_heads": 2, "n_layers": 1, "drop_rate": 0.0,
        "qkv_bias": False}


def test_record_output_shapes_reads_every_layer_and_leaves_no_hook():
    torch.manual_seed(0)
    model = GPTModel(TINY).eval()
    batch = torch.randint(0, 50, (2, 4))
    shapes = record_output_shapes(model, batch, ["tok_emb", "pos_emb", "final_norm", "out_head"])
    assert shapes == {"tok_emb": (2, 4, 16), "pos_emb": (4, 16), "final_norm": (2, 4, 16), "out_head": (2, 4, 50)}
    assert not any(m._forward_hooks for m in model.modules())


def test_plot_model_diagram_draws_one_box_per_step():
    fig = plot_model_diagram([("a", "(2, 4)", "0.9"), ("b\nc", "", "tab:blue")], title="t")
    assert len(fig.axes[0].patches) == 2 and fig.axes[0].get_title() == "t"
