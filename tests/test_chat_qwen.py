"""The chat on chapter 8's Qwen3 through its own template: a tiny random Qwen3 folder written by transformers
(`save_pretrained`) with a tiny tokenizer.json trained by `tokenizers`, loaded by `python -m utils.chat --model`."""

from __future__ import annotations

import pytest
import torch

llama = pytest.importorskip("utils.llama", reason="utils.llama (chapter 8) is not in this checkout")
transformers = pytest.importorskip("transformers", reason="transformers (tests only) is not installed")

from utils.chat import Chat, main, stream_reply, stream_text  # noqa: E402

SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory):
    """A Hugging Face Qwen3 folder: random weights (float32) and a byte-level BPE tokenizer with Qwen3's specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("qwen3")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["the cat sat on the mat, then the dog ate the hat. Crème brûlée 🙂 user assistant"] * 20,
                            trainer)
    tok.save(str(folder / "tokenizer.json"))
    torch.manual_seed(0)
    cfg = transformers.Qwen3Config(vocab_size=tok.get_vocab_size(), hidden_size=64, intermediate_size=96,
                                   num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                                   max_position_embeddings=256, tie_word_embeddings=True)
    transformers.Qwen3ForCausalLM(cfg).save_pretrained(folder)
    return folder


def test_a_qwen3_chat_streams_through_its_own_template(qwen_folder):
    model, template = llama.load_pretrained(qwen_folder, device="cpu")
    chat = Chat(model.float(), template, context_size=256, max_new_tokens=20, temperature=1.0, top_k=50)
    torch.manual_seed(1)
    pieces = list(chat.send("Crème brûlée 🙂?"))
    assert "<|im_start|>user\nCrème brûlée 🙂?<|im_end|>\n<|im_start|>assistant\n" in chat.last_prompt
    torch.manual_seed(1)
    ids = list(stream_reply(model, template.encode(chat.messages[:-1]), template.stop_ids, 20, 1.0, 50))
    assert "".join(pieces) == template.tokenizer.decode(ids) == "".join(stream_text(ids, template.tokenizer))


def test_the_terminal_chat_takes_a_qwen3_folder(qwen_folder, monkeypatch, capsys):
    typed = iter(["Hello", "the cat?", "/reset", "/quit"])
    monkeypatch.setattr("builtins.input", lambda prompt="": (print(prompt, end=""), next(typed))[1])
    assert main(["--model", str(qwen_folder), "--max-new-tokens", "10", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.count("model> ") == 2 and "(new conversation)" in out


def test_a_folder_that_is_no_model_says_so(tmp_path, capsys):
    assert main(["--model", str(tmp_path), "--device", "cpu"]) == 2
    assert "config.json" in capsys.readouterr().err
