"""A word-level tokenizer built by the workflow from the benchmark's vocabulary (no hub download).

Saved with ``save_pretrained`` next to the model, loaded with ``PreTrainedTokenizerFast.from_pretrained``.
"""

from __future__ import annotations

import re

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from ..dataset.sample import LETTERS
from ..dataset.synthetic import COLOURS, QUADRANTS, QTYPES, SHAPES

SPECIAL = ["<pad>", "<unk>", "<bos>", "<eos>"]
PROMPT_WORDS = ["video", "question", "options", "answer", ":", ".", "?", ","]
_WORD = re.compile(r"\w+|[^\w\s]")


def benchmark_vocabulary() -> list[str]:
    """Every word the synthetic benchmark's prompts use, plus option letters and digits."""
    from ..dataset.synthetic import _question

    words = set(PROMPT_WORDS) | set(LETTERS) | {str(d) for d in range(10)}
    for qtype in QTYPES:
        for shape in SHAPES:
            for colour in COLOURS:
                event = {"shape": shape, "colour": colour, "quadrant": QUADRANTS[0]}
                question, options, _ = _question(qtype, [event])
                for text in [question, *options]:
                    words.update(_WORD.findall(text))
    return sorted(words)


def build_tokenizer(extra_words: list[str] = ()) -> PreTrainedTokenizerFast:
    vocab = {tok: i for i, tok in enumerate(SPECIAL)}
    for word in [*benchmark_vocabulary(), *extra_words]:
        vocab.setdefault(word, len(vocab))
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=core, unk_token="<unk>", pad_token="<pad>", bos_token="<bos>", eos_token="<eos>")
