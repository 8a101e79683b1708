"""Offline word-level tokenizer with a character fallback, Qwen-style special tokens and chat template.

Text is split into letter runs (with their leading space, GPT-2 style: " circle") and single other
characters (digits, punctuation, spaces, newlines: every digit is its own token). A letter run that is a
task word (WORD_VOCAB) is one token; any other run is spelled letter by letter (WordPiece with "##"
continuations), so every ASCII text round-trips exactly. Whole words keep the sequences short (a step
costs about half of a character-level one) and let the model see "red" as one symbol instead of
composing it from characters, which the organism otherwise learns only slowly.
"""

from __future__ import annotations

import string
from collections.abc import Sequence

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
    "<|image_pad|>", "<|video_pad|>", "<pad>",
)
CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"
#: Whole-word tokens: every word of the organism's prompts, answers, descriptions and solutions
#: (tests/test_organism.py checks that each is one token), each also with a leading space.
WORD_VOCAB = (
    "APPLE", "Ann", "Answer", "BIRD", "BOOK", "BOX", "BUS", "Ben", "CAR", "CAT", "CHAIR", "CLOUD", "CUP", "DOG",
    "DOOR", "Describe", "Eva", "FISH", "FROG", "Give", "HAT", "HORSE", "HOUSE", "How", "Image", "Is", "KEY", "LAMP", "LIGHT",
    "MAP", "MILK", "MOON", "Max", "Mia", "PEN", "RAIN", "RED", "SHIP", "STAR", "SUN", "Sam", "TRAIN", "TREE", "The",
    "There", "Tom", "WATER", "What", "Zoe", "a", "and", "apples", "are", "as", "away", "bags", "balls", "blue",
    "books", "bounding", "box", "buys", "cards", "circle", "circles", "coins", "colour", "cups", "description", "digits", "does",
    "each", "eggs", "empty", "gives", "green", "has", "have", "image", "in", "is", "largest", "left", "many", "more",
    "no", "now", "object", "of", "one", "or", "pens", "red", "shape", "shapes", "shown", "shows", "square",
    "squares", "sum", "than", "the", "there", "total", "triangle", "triangles", "with", "word", "written", "x", "y",
    "yellow", "yes", "user", "assistant", "system",
)
_PIECES = r" ?[A-Za-z]+|[^A-Za-z]"

# Qwen-style chat template: <|im_start|>role\n...<|im_end|>\n; an image item becomes
# <|vision_start|><|image_pad|><|vision_end|> (the processor expands <|image_pad|> per image).
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item %}{{ '<|vision_start|><|image_pad|><|vision_end|>' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def wordpiece_core(vocab: dict[str, int], special_tokens: Sequence[str]) -> Tokenizer:
    """The tokenizer core the organism and the tiny family checkpoints share: WordPiece over `vocab` (unknown
    letter runs spelled with "##" continuations, `<unk>` for the rest), text split into letter runs with their
    leading space and single other characters, decoding that drops "##" and joins the pieces."""
    core = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>", max_input_chars_per_word=10_000))
    core.pre_tokenizer = pre_tokenizers.Split(pattern=Regex(_PIECES), behavior="isolated")
    core.decoder = decoders.Sequence([decoders.Replace("##", ""), decoders.Fuse()])
    core.add_special_tokens(list(special_tokens))
    return core


def build_tokenizer() -> PreTrainedTokenizerFast:
    """The organism's tokenizer (module docstring).

    Vocabulary: the 8 special tokens (ids 0-7), the printable characters, "##" + each letter, the task
    words and " " + each task word, then <unk>.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for piece in [*CHARS, *("##" + c for c in string.ascii_letters), *WORD_VOCAB, *(" " + w for w in WORD_VOCAB)]:
        vocab.setdefault(piece, len(vocab))
    vocab["<unk>"] = len(vocab)
    core = wordpiece_core(vocab, SPECIAL_TOKENS)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", eos_token="<|im_end|>", bos_token=None,
        extra_special_tokens={
            "image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
            "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>",
        },
    )
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok
