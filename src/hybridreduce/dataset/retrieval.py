"""Text-only retrieval tasks for a pretraining stage before the video stage (issue 28).

The paper's hybrids come from large-scale LLM pretraining, in which attention and Mamba layers learn
retrieval-like behaviour; our tiny LLMs learn one video task from scratch. This stage gives them long token
sequences of the kinds such pretraining contains and Mamba-2 is known to learn from (Zoology's multi-query
associative recall; Mamba's selective copying; counting), over the benchmark's own word vocabulary so the model's
embedding table is the same with or without the stage.

Every sequence is ``seq_len`` words: a long context in which the few relevant tokens are scattered among filler
words, then the marker ``?`` and a query section. Each answer is the word that follows its answer position
(teacher forcing), and is determined by the sequence before it:

- ``mqar``: the context holds ``pairs`` key-value bigrams (distinct keys); the query section repeats ``queries``
  of the keys, each followed by its value. Answer position: the repeated key; answer: its value.
- ``copy``: the context holds ``copies`` value words at random positions; the query section is those words in
  order. Answer positions: the marker and each copied word but the last; answers: the next word to copy.
- ``count``: the context holds ``counts`` distinct keys, each 1-9 times; the query section is ``key digit`` per
  key. Answer position: the key; answer: how many times it occurs in the context, as a digit.

Keys, values and filler are disjoint word sets, so no filler word can be mistaken for evidence.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TASKS = ("mqar", "copy", "count")
MARKER = "?"
# Disjoint roles over the benchmark vocabulary (models.tokenizer.benchmark_vocabulary): keys are the content words,
# values the option letters, counts the digits, filler the prompt's function words and punctuation.
KEYS = ("blue", "bottom", "circle", "colour", "coloured", "cross", "first", "green", "left", "red", "right",
        "shapes", "square", "top", "triangle", "yellow")
VALUES = ("A", "B", "C", "D", "E", "F", "G", "H", "I", "J")
DIGITS = tuple(str(d) for d in range(1, 10))
FILLER = ("How", "What", "Where", "Which", "answer", "appear", "appeared", "did", "many", "options", "question",
          "that", "the", "video", "was", ",", ".", ":")


@dataclass(frozen=True)
class RetrievalSpec:
    """One retrieval task family (config ``models.<name>.training.retrieval``, without the optimiser settings).
    ``seq_len``: words per sequence; ``pairs`` / ``queries``: key-value pairs in an ``mqar`` context and how many
    are asked; ``copies``: words to copy; ``counts``: keys counted per ``count`` sequence."""

    seq_len: int = 1024
    pairs: int = 8
    queries: int = 8
    copies: int = 8
    counts: int = 4
    tasks: tuple[str, ...] = TASKS

    def __post_init__(self):
        if unknown := set(self.tasks) - set(TASKS):
            raise ValueError(f"retrieval.tasks: unknown {sorted(unknown)}; expected some of {list(TASKS)}")
        if self.pairs > len(KEYS) or self.counts > len(KEYS):
            raise ValueError(f"retrieval.pairs and retrieval.counts: at most {len(KEYS)} (distinct keys)")
        if self.queries > self.pairs:
            raise ValueError("retrieval.queries: at most retrieval.pairs (each query asks a distinct key)")
        # context items + marker + query section of the longest task; at least as much filler again
        longest = max(2 * self.pairs + 2 * self.queries, 2 * self.copies, 9 * self.counts + 2 * self.counts) + 1
        if self.seq_len < 2 * longest:
            raise ValueError(f"retrieval.seq_len: {self.seq_len} is too short for these tasks; at least {2 * longest}")


@dataclass(frozen=True)
class RetrievalSequence:
    """``words`` (``seq_len``,), and per answer: ``positions`` (where the model must predict it) and ``answers``
    (``answers[i] == words[positions[i] + 1]``)."""

    task: str
    words: tuple[str, ...]
    positions: tuple[int, ...]
    answers: tuple[str, ...]


def _scatter(context_len: int, items: list[list[str]], rng: np.random.Generator) -> list[str]:
    """A context of ``context_len`` filler words with each item (a short run of words) at a random place, in
    the given order, never overlapping."""
    spare = context_len - sum(len(item) for item in items)
    # n items split the spare filler into n + 1 gaps: sorted uniform cut points
    cuts = np.sort(rng.integers(0, spare + 1, size=len(items)))
    gaps = np.diff(np.concatenate([[0], cuts, [spare]]))
    words: list[str] = []
    for gap, item in zip(gaps, [*items, []]):
        words += [FILLER[j] for j in rng.integers(0, len(FILLER), size=int(gap))]
        words += item
    return words


def make_sequence(spec: RetrievalSpec, task: str, rng: np.random.Generator) -> RetrievalSequence:
    """One sequence of ``task``, drawn from ``rng``."""
    if task == "mqar":
        keys = [KEYS[j] for j in rng.permutation(len(KEYS))[:spec.pairs]]
        values = [VALUES[j] for j in rng.integers(0, len(VALUES), size=spec.pairs)]
        asked = rng.permutation(spec.pairs)[:spec.queries]
        query = [w for j in asked for w in (keys[j], values[j])]
        context = _scatter(spec.seq_len - 1 - len(query), [[k, v] for k, v in zip(keys, values)], rng)
        start = len(context) + 1
        positions = [start + 2 * i for i in range(spec.queries)]
    elif task == "copy":
        copied = [VALUES[j] for j in rng.integers(0, len(VALUES), size=spec.copies)]
        query = copied
        context = _scatter(spec.seq_len - 1 - len(query), [[w] for w in copied], rng)
        start = len(context) + 1
        positions = [start - 1 + i for i in range(spec.copies)]  # the marker predicts the first word
    elif task == "count":
        keys = [KEYS[j] for j in rng.permutation(len(KEYS))[:spec.counts]]
        counts = rng.integers(1, 10, size=spec.counts)
        query = [w for k, c in zip(keys, counts) for w in (k, str(c))]
        occurrences = [k for k, c in zip(keys, counts) for _ in range(c)]
        occurrences = [[occurrences[j]] for j in rng.permutation(len(occurrences))]
        context = _scatter(spec.seq_len - 1 - len(query), occurrences, rng)
        start = len(context) + 1
        positions = [start + 2 * i for i in range(spec.counts)]
    else:
        raise ValueError(f"retrieval task {task!r}: expected one of {list(TASKS)}")
    words = (*context, MARKER, *query)
    return RetrievalSequence(task, words, tuple(positions), tuple(words[p + 1] for p in positions))


def solve(task: str, words: tuple[str, ...] | list[str], position: int) -> str:
    """The answer of a ``task`` sequence at ``position``, from the words up to it alone, by the task's
    definition (independent of how :func:`make_sequence` builds sequences): what a perfect model predicts."""
    marker = list(words).index(MARKER)
    context, here = list(words[:marker]), words[position]
    if task == "mqar":  # the value that followed the key in the context
        return context[context.index(here) + 1]
    if task == "copy":  # the context's value words in order; the marker asks for the first
        return [w for w in context if w in VALUES][position - marker]
    if task == "count":  # occurrences of the key in the context
        return str(context.count(here))
    raise ValueError(f"retrieval task {task!r}: expected one of {list(TASKS)}")


def sequences(spec: RetrievalSpec, count: int, seed: int) -> list[RetrievalSequence]:
    """``count`` sequences, tasks in turn (so every task is equally represented), from ``seed`` alone."""
    rng = np.random.default_rng([seed, 28])
    return [make_sequence(spec, spec.tasks[i % len(spec.tasks)], rng) for i in range(count)]
