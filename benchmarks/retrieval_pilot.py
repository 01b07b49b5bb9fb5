"""Does a tiny LLM of the pretraining recipe learn the text-only retrieval tasks (issue 28), and how fast?

    python benchmarks/retrieval_pilot.py MODEL STAGES_JSON [--every 250]

``MODEL``: a model of ``config/pretrain-tiny.yaml`` (its architecture; freshly initialised with the recipe's seed);
``STAGES_JSON``: a list of ``training.retrieval`` stages, e.g.
``'[{"seq_len": 128, "pairs": 4, "queries": 4, "steps": 3000, "batch_size": 32, "lr": 0.003, "tasks": ["mqar"]}]'``.
Prints the running train accuracy at the answer positions every ``--every`` steps and the held-out accuracy per
task at the end of each stage (chance: 1/10 for mqar and copy values, 1/9 for counts). One thread, as the recipe.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from common import REPO, machine

from hybridreduce.config import load_config
from hybridreduce.models.adapter import TinyVLMAdapter
from hybridreduce.models.build import new_tiny_model
from hybridreduce.training import train_retrieval


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("stages", type=json.loads)
    parser.add_argument("--every", type=int, default=250)
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = load_config(str(REPO), str(REPO / "config" / "pretrain-tiny.yaml"))
    model, tokenizer = new_tiny_model(config["models"][args.model], config["seed"])
    adapter = TinyVLMAdapter.from_model(model, tokenizer)
    print(f"# {machine()}; {args.model}; stages {json.dumps(args.stages)}")
    t0 = time.perf_counter()
    for j, stage in enumerate(args.stages):
        stage = {"log_every": args.every, **stage}
        for row in train_retrieval(adapter, stage, config["seed"] + 1000 + j):
            print(f"stage {j} step {row['step']:5d} {row['split']:15s} {row['qtype']:5s} "
                  f"accuracy {row['accuracy']:.3f}  ({time.perf_counter() - t0:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
