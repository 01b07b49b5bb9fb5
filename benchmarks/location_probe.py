"""Where a tiny checkpoint loses an event's location: linear probes of the answer (the event's quadrant) on the
hidden states of three positions, at every layer of the LLM, for the benchmark's location questions.

    python benchmarks/location_probe.py CHECKPOINT [CHECKPOINT ...] [--frames 16] [--train 1600] [--val 400]

Positions: ``event`` (the first vision token that shows the asked-about event, from the generator's events),
``colour`` (the question's colour word, the word that names the event) and ``last`` (the last prompt token, where
the answer is read). A ridge-regularised least-squares probe onto the four quadrants is fitted on the location
questions of ``--train`` rendered ``train`` videos and scored on those of ``--val`` ``val`` videos (chance 25%).
If the event token carries the location at every layer but the colour word and the last token never do, the LLM
has not learnt to move it from the event to the question; that is what the issue-20 notes report for the tiny
Transformer.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import yaml
from common import REPO, machine

from hybridreduce.dataset.synthetic import (
    QUADRANTS,
    SyntheticSpec,
    evidence_mask,
    targets,
)
from hybridreduce.models.adapter import TinyVLMAdapter
from hybridreduce.training import Pool

POSITIONS = ("event", "colour", "last")


@torch.no_grad()
def hidden_states(adapter: TinyVLMAdapter, pool: Pool) -> tuple[dict[tuple[int, str], np.ndarray], np.ndarray]:
    """Per (layer, position): ``(n, D)`` hidden states of the location questions of ``pool``; and their answers."""
    grid = adapter.model.config.grid_size
    states: dict[tuple[int, str], list[np.ndarray]] = {}
    answers = []
    for i, sample in enumerate(pool.samples):
        if sample.qtype != "location":
            continue
        event = targets(sample.events)[0]
        vision = adapter.model.video_features(pool.batch([i])[0])
        vision = vision.reshape(-1, vision.shape[-1])
        row, num_prefix, _ = adapter.embed_prompt(vision, sample.question, sample.options)
        query = adapter.tokenizer.convert_ids_to_tokens(adapter.prompt_ids(sample.question, sample.options)[1])
        evidence = np.flatnonzero(evidence_mask(sample.events, pool.timestamps, (grid, grid)).ravel())
        where = {"event": num_prefix + int(evidence[0]),
                 "colour": num_prefix + len(vision) + query.index(event["colour"]),
                 "last": len(row) - 1}
        out = adapter.model.language_model(inputs_embeds=row[None], output_hidden_states=True)
        for layer, h in enumerate(out.hidden_states):
            for name, pos in where.items():
                states.setdefault((layer, name), []).append(h[0, pos].float().numpy())
        answers.append(QUADRANTS.index(event["quadrant"]))
    return {k: np.stack(v) for k, v in states.items()}, np.array(answers)


def probe_accuracy(x_train, y_train, x_val, y_val, ridge: float = 1.0) -> float:
    """Validation accuracy of a ridge least-squares probe onto one-hot answers."""
    a = np.c_[x_train, np.ones(len(x_train))]
    w = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ np.eye(4)[y_train])
    return float(((np.c_[x_val, np.ones(len(x_val))] @ w).argmax(1) == y_val).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--train", type=int, default=1600)
    parser.add_argument("--val", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    synthetic = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["dataset"]["synthetic"]
    print(machine(threads=1))
    for path in args.checkpoints:
        adapter = TinyVLMAdapter(path)
        size = adapter.model.config.image_size
        pools = [Pool(SyntheticSpec.for_split(synthetic, split, 0), n, args.frames, size)
                 for split, n in (("train", args.train), ("val", args.val))]
        (x_train, y_train), (x_val, y_val) = (hidden_states(adapter, p) for p in pools)
        print(f"\n{path}: {len(y_train)} / {len(y_val)} location questions, {args.frames} frames; probe accuracy "
              "of the quadrant (chance 0.25) at the input of each layer")
        print("layer  " + "  ".join(f"{p:>6}" for p in POSITIONS))
        for layer in sorted({k[0] for k in x_train}):
            accs = [probe_accuracy(x_train[layer, p], y_train, x_val[layer, p], y_val) for p in POSITIONS]
            print(f"{layer:5d}  " + "  ".join(f"{a:6.2f}" for a in accs))


if __name__ == "__main__":
    main()
