"""Consolidated code of the chapter notebooks: `from utils import GPTModel`."""

import os as _os

if not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(_os.environ):
    # Set before torch loads OpenMP, the one moment it is read: `import utils` comes first in every notebook, and
    # Python runs this first for `python -m utils.chat` or `utils.pretrain`. Between two operations an idle OpenMP
    # thread spins GOMP_SPINCOUNT times, then sleeps. The default (300,000) spins so long that on a machine shared with
    # other work the spinning threads steal the cores (SmolLM2 decoding at 3.5 tokens/s); sleeping at once
    # (OMP_WAIT_POLICY=PASSIVE) wakes too late on a quiet one (15 instead of 25 tokens/s). 20,000 keeps 22-25 tokens/s
    # quiet and 5-6 beside two busy processes (2-core Intel Xeon, 2026-12-08; README, "Decoding speed"). Linux's
    # torch uses GNU OpenMP, which reads it; elsewhere it changes nothing. Your own setting of either always wins.
    _os.environ["GOMP_SPINCOUNT"] = "20000"

from .assets import ASSETS, AssetError, AssetUnavailable, data_dir, fetch
from .attention import MultiHeadAttention
from .bpe import BPETokenizer
from .checkpoint import (
    CheckpointError,
    NonFiniteLossError,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
)
from .corpus import (
    ByteTokenizer,
    CorpusError,
    TokenFile,
    TokenWindows,
    build_token_file,
    get_tokenizer,
    train_val_windows,
    write_series_corpus,
)
from .data import GPTDatasetV1, create_dataloader_v1
from .device import FastSetting, bf16_support, fast_setting, get_device, inference_dtype
from .extras import TrainingExtras, check_finite
from .generate import (
    generate,
    generate_text_simple,
    sample_next_token,
    text_to_token_ids,
    token_ids_to_text,
    top_k_filter,
    top_p_filter,
)
from .gguf_reader import GGUFError, dequantize_q4_1, dequantize_q8_0, load_gguf, unpermute_qk
from .gpt2 import download_and_load_gpt2, gpt2_or_fallback, load_weights_into_gpt
from .instruct import (
    InstructionDataset,
    LengthGroupedBatchSampler,
    custom_collate_fn,
    format_input,
    generate_response,
    generate_responses,
    lcs_length,
    length_grouped_loader,
    load_instruction_data,
    padding_fraction,
    rouge_l_f1,
    side_by_side,
    split_data,
)
from .judge import (
    OllamaError,
    OllamaModelMissing,
    OllamaTimeout,
    OllamaUnreachable,
    judge_scores,
    ollama_reachable,
    ollama_url,
    query_ollama,
)
from .llama import (
    LLAMA32_1B,
    QWEN3_06B,
    ChatMLTemplate,
    GroupedQueryAttention,
    HFTokenizer,
    Llama3ChatTemplate,
    Llama3Tokenizer,
    LlamaBlock,
    LlamaModel,
    Qwen3ChatTemplate,
    Qwen3Tokenizer,
    RMSNorm,
    SwiGLU,
    apply_rope,
    compute_rope_params,
    count_unique_parameters,
    load_hf_weights,
    load_pretrained,
    rope_inv_freq,
)
from .lora import (
    LinearWithLoRA,
    LoRALayer,
    load_lora,
    lora_layers,
    lora_state_dict,
    merge_lora,
    replace_linear_with_lora,
    save_lora,
)
from .model import (
    GELU,
    GPT_CONFIG_124M,
    MODEL_SIZES,
    FeedForward,
    GPTModel,
    LayerNorm,
    TransformerBlock,
    count_parameters,
    gpt2_config,
)
from .plots import plot_losses, plot_model_diagram, plot_values, record_output_shapes
from .schedule import clip_gradients, lr_at_step
from .spam import (
    SpamDataset,
    TrainableTop,
    calc_accuracy_loader,
    calc_classifier_loss_batch,
    calc_classifier_loss_loader,
    classify_text,
    compute_frozen_hidden,
    create_balanced_dataset,
    prepare_classifier,
    random_split,
    read_sms_spam,
    read_split_csv,
    train_classifier_simple,
    write_split_csv,
)
from .tokenizer import SimpleTokenizerV1, SimpleTokenizerV2, build_vocab, gpt2_tokenizer, split_text
from .train import (
    calc_loss_batch,
    calc_loss_loader,
    evaluate_model,
    generate_and_print_sample,
    perplexity,
    set_seed,
    train_model,
    train_model_simple,
)

__all__ = [
    "ASSETS", "AssetError", "data_dir", "fetch",
    "MultiHeadAttention",
    "BPETokenizer",
    "ByteTokenizer", "CorpusError", "TokenFile", "TokenWindows", "build_token_file", "get_tokenizer", "train_val_windows",
    "write_series_corpus",
    "InstructionDataset", "OllamaError", "custom_collate_fn", "format_input", "generate_response", "generate_responses",
    "judge_scores", "lcs_length", "load_instruction_data", "ollama_reachable", "ollama_url", "query_ollama", "rouge_l_f1",
    "split_data",
    "GPTDatasetV1", "create_dataloader_v1", "bf16_support",
    "generate", "generate_text_simple", "sample_next_token", "text_to_token_ids", "token_ids_to_text", "top_k_filter", "top_p_filter",
    "download_and_load_gpt2", "gpt2_or_fallback", "load_weights_into_gpt",
    "LinearWithLoRA", "LoRALayer", "load_lora", "lora_layers", "lora_state_dict", "merge_lora",
    "replace_linear_with_lora", "save_lora",
    "GELU", "GPT_CONFIG_124M", "MODEL_SIZES", "FeedForward", "GPTModel", "LayerNorm", "TransformerBlock",
    "count_parameters", "gpt2_config",
    "plot_losses", "plot_values",
    "clip_gradients", "lr_at_step",
    "SpamDataset", "TrainableTop", "calc_accuracy_loader", "calc_classifier_loss_batch", "calc_classifier_loss_loader",
    "classify_text", "compute_frozen_hidden", "create_balanced_dataset", "prepare_classifier",
    "random_split", "read_sms_spam", "read_split_csv", "train_classifier_simple", "write_split_csv",
    "SimpleTokenizerV1", "SimpleTokenizerV2", "build_vocab", "gpt2_tokenizer", "split_text",
    "NonFiniteLossError", "calc_loss_batch", "calc_loss_loader", "evaluate_model", "generate_and_print_sample",
    "get_device", "load_checkpoint", "perplexity", "save_checkpoint", "set_seed", "train_model", "train_model_simple",
    "CheckpointError", "read_checkpoint",
    "TrainingExtras", "check_finite",
    "AssetUnavailable", "OllamaModelMissing", "OllamaTimeout", "OllamaUnreachable",
    "LLAMA32_1B", "QWEN3_06B", "GroupedQueryAttention", "Llama3ChatTemplate", "Llama3Tokenizer", "LlamaBlock",
    "LlamaModel", "Qwen3ChatTemplate", "Qwen3Tokenizer", "RMSNorm", "SwiGLU", "apply_rope", "compute_rope_params",
    "count_unique_parameters", "load_hf_weights", "load_pretrained", "rope_inv_freq",
    "ChatMLTemplate", "HFTokenizer", "GGUFError", "dequantize_q4_1", "dequantize_q8_0", "load_gguf", "unpermute_qk",
    "inference_dtype",
    "side_by_side",
    "plot_model_diagram", "record_output_shapes",
    "FastSetting", "fast_setting",
    "LengthGroupedBatchSampler", "length_grouped_loader", "padding_fraction",
]
