"""The text-only retrieval tasks of the pretraining recipe (issue 28): every answer is determined by the words
before it, by each task's definition; the generator builds what the definitions say; bad settings are named."""

import numpy as np
import pytest

from hybridreduce.dataset.retrieval import (DIGITS, FILLER, KEYS, MARKER, TASKS, VALUES, RetrievalSpec, make_sequence,
                                            sequences, solve)
from hybridreduce.errors import ConfigError
from hybridreduce.models.build import new_tiny_model
from hybridreduce.models.adapter import TinyVLMAdapter
from hybridreduce.models.tokenizer import benchmark_vocabulary
from hybridreduce.training import train_retrieval


def test_hand_built_sequences_have_the_answers_their_definitions_give():
    # mqar: a key's value is the word after it in the context
    mqar = ["the", "red", "A", ".", "blue", "C", "was", MARKER, "blue", "C", "red", "A"]
    assert [solve("mqar", mqar, p) for p in (8, 10)] == ["C", "A"]
    # copy: the context's value words in order; the marker asks for the first
    copy = ["B", ".", "D", ",", "B", MARKER, "B", "D", "B"]
    assert [solve("copy", copy, p) for p in (5, 6, 7)] == ["B", "D", "B"]
    # count: occurrences of the key before the marker (the query section's own words do not count)
    count = ["red", ".", "red", "blue", "the", "red", MARKER, "red", "3", "blue", "1"]
    assert [solve("count", count, p) for p in (7, 9)] == ["3", "1"]


@pytest.mark.parametrize("task", TASKS)
def test_every_generated_answer_is_determined_by_the_words_before_it(task):
    spec = RetrievalSpec(seq_len=256)
    rng = np.random.default_rng(0)
    for _ in range(20):
        seq = make_sequence(spec, task, rng)
        assert len(seq.words) == spec.seq_len and seq.words.count(MARKER) == 1
        assert len(seq.positions) == {"mqar": spec.queries, "copy": spec.copies, "count": spec.counts}[task]
        for position, answer in zip(seq.positions, seq.answers):
            assert seq.words[position + 1] == answer  # teacher forcing: the answer is the next input word
            assert solve(task, seq.words[:position + 1], position) == answer  # from the prefix alone
        marker = seq.words.index(MARKER)
        context = seq.words[:marker]
        if task == "mqar":  # distinct keys, each once, each followed by a value
            keys = [w for w in context if w in KEYS]
            assert len(keys) == len(set(keys)) == spec.pairs
            assert all(context[context.index(k) + 1] in VALUES for k in keys)
        if task == "count":
            assert all(answer in DIGITS for answer in seq.answers)
        # most of the context is filler: the evidence is sparse in a long sequence
        assert sum(w in FILLER for w in context) >= len(context) / 2


def test_roles_are_disjoint_words_of_the_tokenizer_and_sequences_are_reproducible():
    roles = [set(KEYS), set(VALUES), set(DIGITS), set(FILLER), {MARKER}]
    assert sum(map(len, roles)) == len(set().union(*roles))
    assert set().union(*roles) <= set(benchmark_vocabulary())  # the embedding table is unchanged by the stage
    spec = RetrievalSpec(seq_len=128, pairs=4, queries=4, copies=4, counts=2)
    assert sequences(spec, 6, seed=3) == sequences(spec, 6, seed=3)
    assert sequences(spec, 6, seed=3) != sequences(spec, 6, seed=4)
    assert [s.task for s in sequences(spec, 6, seed=3)] == list(TASKS) * 2


def test_bad_retrieval_settings_are_named():
    model, tokenizer = new_tiny_model({"llm": {"family": "qwen2", "num_layers": 1, "hidden_size": 16,
                                               "num_attention_heads": 2, "intermediate_size": 32},
                                       "image_size": 32, "patch_size": 16, "vision_hidden_size": 16}, seed=0)
    adapter = TinyVLMAdapter.from_model(model, tokenizer)
    stage = {"steps": 1, "batch_size": 2, "lr": 1e-3}
    with pytest.raises(ConfigError, match=r"training\.retrieval\.seq_len: 40 is too short"):
        next(train_retrieval(adapter, {**stage, "seq_len": 40}, seed=0))
    with pytest.raises(ConfigError, match=r"training\.retrieval\.tasks: unknown \['recall'\]"):
        next(train_retrieval(adapter, {**stage, "tasks": ["mqar", "recall"]}, seed=0))
    with pytest.raises(ConfigError, match=r"training\.retrieval\.queries"):
        next(train_retrieval(adapter, {**stage, "pairs": 2, "queries": 3}, seed=0))
