"""Chapter 9's exercises: a chat template of your own, the tokens an assistant-only loss learns, the history that fits."""

from __future__ import annotations

from .core import Wrong, exercise, tokenizer, whole_number

EXERCISE_CONVERSATION = [  # exercise 9.2, as printed in the notebook
    {"role": "user", "content": "Name a primary color."},
    {"role": "assistant", "content": "Red."},
    {"role": "user", "content": "Say that again."},
    {"role": "assistant", "content": "Red."},
]
PROBE = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "Bye"}]
# exercise 9.3: context, reply room, tokens per turn, preamble, the new user message with its generation prompt
CONTEXT, REPLY, TURN, PREAMBLE, NEW_MESSAGE = 256, 60, 40, 20, 20


@exercise("9.1")
def phi_template(answer):
    if not isinstance(answer, type):
        raise Wrong("the answer should be the class itself (PhiChatTemplate), not an instance or a function")
    try:
        template = answer(tokenizer())
        ids = template.encode(PROBE)
        closed = template.encode(PROBE[:2], add_generation_prompt=False)
    except Exception as exc:  # noqa: BLE001  (the learner's code)
        raise Wrong(f"PhiChatTemplate(tokenizer).encode(messages) raised {type(exc).__name__}: {exc}") from None
    if 50256 not in set(getattr(template, "stop_ids", ())):
        raise Wrong("stop_ids should hold the end-of-text token's id (50256): the chat stops there")
    if getattr(template, "tokenizer", None) is None:
        raise Wrong("keep the tokenizer as an attribute `tokenizer`: the chat decodes the reply with it")
    text = tokenizer().decode(list(ids))
    if text != "<|user|>\nHi\n<|assistant|>\nHello!<|endoftext|><|user|>\nBye\n<|assistant|>\n":
        raise Wrong(f"the prompt reads {text!r}. Hint: '<|user|>\\n' + content + '\\n', then '<|assistant|>\\n' + "
                    "content + the end-of-text token, and '<|assistant|>\\n' at the end for the reply")
    if list(closed)[-1] != 50256:
        raise Wrong("with add_generation_prompt=False the last assistant turn should end with the end-of-text token")
    return "Chat(model, PhiChatTemplate(tokenizer), ...) now talks in Phi-3's turns"


@exercise("9.2")
def learned_tokens(answer):
    from ..chat import AlpacaChatTemplate, assistant_token_ids

    _, labels = assistant_token_ids(AlpacaChatTemplate(tokenizer()), EXERCISE_CONVERSATION)
    expected = sum(label != -100 for label in labels)
    got = whole_number(answer, "the number of learned tokens")
    if got == expected - 2:
        raise Wrong("close: the end-of-turn token after each reply is learned too (that is how the model learns to stop)")
    if got != expected:
        raise Wrong("that is not it. Hint: count tokens as the template encodes the conversation, not words, and "
                    "only those whose targets the loss keeps")
    return "two short replies and their end-of-turn tokens: everything else in the prompt is only read"


@exercise("9.3")
def turns_that_fit(answer):
    got = whole_number(answer, "the number of turns")
    expected = (CONTEXT - REPLY - PREAMBLE - NEW_MESSAGE) // TURN
    if got == (CONTEXT - PREAMBLE - NEW_MESSAGE) // TURN:
        raise Wrong("the reply needs room in the context too: subtract its 60 tokens first")
    if got != expected:
        raise Wrong("not quite. Hint: the whole prompt and the reply share the one context; only what is left "
                    "of it holds earlier turns, and only whole ones")
    return "older turns are dropped first, so a long chat forgets its beginning"
