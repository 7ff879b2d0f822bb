"""utils.tokenizer and utils.data: the book's values on the happy path, a clear error for every bad input."""

import pytest
import torch

from utils import (
    GPTDatasetV1,
    SimpleTokenizerV1,
    SimpleTokenizerV2,
    build_vocab,
    create_dataloader_v1,
    fetch,
    gpt2_tokenizer,
    split_text,
)

SHORT = "In the sunlit terraces of the palace."  # 10 GPT-2 tokens


@pytest.fixture(scope="module")
def verdict():
    return fetch("the-verdict").read_text(encoding="utf-8")


# --- tokenizers ---------------------------------------------------------------------------------------------


def test_split_and_vocab_give_the_books_counts(verdict):
    assert len(verdict) == 20479
    assert len(split_text(verdict)) == 4690
    assert len(build_vocab(verdict)) == 1130
    vocab = build_vocab(verdict, special_tokens=("<|endoftext|>", "<|unk|>"))
    assert len(vocab) == 1132
    assert vocab["<|endoftext|>"] == 1130 and vocab["<|unk|>"] == 1131
    assert split_text("Hello, world. Is this-- a test?") == ["Hello", ",", "world", ".", "Is", "this", "--", "a", "test", "?"]


def test_v1_unknown_word_names_the_word_and_points_to_v2(verdict):
    tokenizer = SimpleTokenizerV1(build_vocab(verdict))
    with pytest.raises(KeyError) as err:
        tokenizer.encode("Hello, do you like tea?")
    message = err.value.args[0]
    assert "'Hello'" in message
    assert "SimpleTokenizerV2" in message and "<|unk|>" in message


def test_v1_encodes_the_books_sentence(verdict):
    tokenizer = SimpleTokenizerV1(build_vocab(verdict))
    text = '"It\'s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'
    ids = tokenizer.encode(text)
    assert ids == [1, 56, 2, 850, 988, 602, 533, 746, 5, 1126, 596, 5, 1, 67, 7, 38, 851, 1108, 754, 793, 7]
    assert tokenizer.decode(ids) == '" It\' s the last he painted, you know," Mrs. Gisburn said with pardonable pride.'


def test_v2_maps_unknown_words_to_unk(verdict):
    vocab = build_vocab(verdict, special_tokens=("<|endoftext|>", "<|unk|>"))
    tokenizer = SimpleTokenizerV2(vocab)
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terraces of the palace."
    ids = tokenizer.encode(text)
    assert ids == [1131, 5, 355, 1126, 628, 975, 10, 1130, 55, 988, 956, 984, 722, 988, 1131, 7]
    assert tokenizer.decode(ids) == "<|unk|>, do you like tea? <|endoftext|> In the sunlit terraces of the <|unk|>."


def test_v2_needs_an_unk_token(verdict):
    with pytest.raises(ValueError, match="special_tokens"):
        SimpleTokenizerV2(build_vocab(verdict))


@pytest.mark.parametrize("cls", [SimpleTokenizerV1, SimpleTokenizerV2])
def test_round_trip_on_known_words(verdict, cls):
    tokenizer = cls(build_vocab(verdict, special_tokens=("<|endoftext|>", "<|unk|>")))
    # exact only where spacing follows the decode rule: "--" and apostrophes come back with spaces around them
    for text in [
        "Mrs. Gisburn said with pardonable pride.",
        "I HAD always thought Jack Gisburn rather a cheap genius, though a good fellow enough.",
    ]:
        assert tokenizer.decode(tokenizer.encode(text)) == text


def test_v2_decode_joins_colon_and_semicolon_as_the_book(verdict):
    tokenizer = SimpleTokenizerV2(build_vocab(verdict, special_tokens=("<|endoftext|>", "<|unk|>")))
    text = "I felt it: he was; of course."
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_gpt2_bpe_round_trip_and_unknown_words():
    tokenizer = gpt2_tokenizer()
    text = "Hello, do you like tea? <|endoftext|> In the sunlit terracesof someunknownPlace."
    ids = tokenizer.encode(text, allowed_special={"<|endoftext|>"})
    assert ids == [15496, 11, 466, 345, 588, 8887, 30, 220, 50256, 554, 262, 4252, 18250, 8812, 2114, 1659,
                   617, 34680, 27271, 13]
    assert tokenizer.decode(ids) == text
    assert [tokenizer.decode([i]) for i in tokenizer.encode("someunknownPlace")] == ["some", "unknown", "Place"]
    assert tokenizer.n_vocab == 50257


# --- data loader --------------------------------------------------------------------------------------------


def test_dataloader_gives_the_books_first_batch(verdict):
    loader = create_dataloader_v1(verdict, batch_size=8, max_length=4, stride=4, shuffle=False)
    inputs, targets = next(iter(loader))
    assert inputs.shape == targets.shape == (8, 4)
    assert inputs[0].tolist() == [40, 367, 2885, 1464]
    assert inputs[1].tolist() == [1807, 3619, 402, 271]
    assert targets[0].tolist() == [367, 2885, 1464, 1807]
    assert torch.equal(inputs[:, 1:], targets[:, :-1])  # targets are the inputs shifted by one
    assert len(loader) == 5141 // 4 // 8  # 1286 windows -> 160 full batches


def test_dataset_windows_on_a_short_text():
    dataset = GPTDatasetV1(SHORT, gpt2_tokenizer(), max_length=4, stride=2)
    ids = gpt2_tokenizer().encode(SHORT)
    assert len(ids) == 10
    assert len(dataset) == 3  # windows start at 0, 2, 4 (each needs one more token for its target)
    x, y = dataset[2]
    assert x.tolist() == ids[4:8] and y.tolist() == ids[5:9]


def test_text_shorter_than_one_window():
    with pytest.raises(ValueError) as err:
        create_dataloader_v1(SHORT, batch_size=1, max_length=10)
    message = str(err.value)
    assert "10 tokens" in message and "max_length=10" in message
    assert "longer text" in message and "smaller max_length" in message
    # exactly max_length + 1 tokens is enough for one window
    assert len(create_dataloader_v1(SHORT, batch_size=1, max_length=9, stride=9)) == 1


@pytest.mark.parametrize("stride", [0, -4])
def test_stride_must_be_positive(stride):
    with pytest.raises(ValueError) as err:
        create_dataloader_v1(SHORT, batch_size=1, max_length=4, stride=stride)
    assert f"got {stride}" in str(err.value) and "stride=max_length" in str(err.value)


@pytest.mark.parametrize("max_length", [0, -1])
def test_max_length_must_be_positive(max_length):
    with pytest.raises(ValueError) as err:
        create_dataloader_v1(SHORT, batch_size=1, max_length=max_length, stride=1)
    assert f"got {max_length}" in str(err.value) and "max_length=256" in str(err.value)


def test_batch_larger_than_the_number_of_windows_with_drop_last():
    with pytest.raises(ValueError) as err:
        create_dataloader_v1(SHORT, batch_size=4, max_length=4, stride=2, drop_last=True)
    message = str(err.value)
    assert "only 3 windows" in message and "batch_size=4" in message
    assert "lower batch_size" in message and "drop_last=False" in message
    # the same settings without drop_last give one short batch instead
    loader = create_dataloader_v1(SHORT, batch_size=4, max_length=4, stride=2, drop_last=False, shuffle=False)
    assert [x.shape[0] for x, _ in loader] == [3]


def test_batch_size_must_be_positive():
    with pytest.raises(ValueError, match="batch_size"):
        create_dataloader_v1(SHORT, batch_size=0, max_length=4, stride=4)
