"""Provenance of a tiny checkpoint: the recipe that made it (and its hash), the seed, the code commit, the training
curve and the final validation accuracy per question type, written as ``provenance.json`` inside the
``save_pretrained`` folder. The shipped checkpoints carry one; a test checks it against the recipe in the repo.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from dataclasses import asdict, dataclass, field

FILENAME = "provenance.json"


def recipe(model_cfg: dict, training_data: dict, seed: int) -> dict:
    """Everything the trained weights depend on: the model section (architecture and ``training``), the
    benchmark's generator settings, the frames per video, the reduction config (finetuning under reduction) and
    the seed."""
    return {"model": model_cfg, "training_data": training_data, "seed": seed}


def recipe_hash(rec: dict) -> str:
    """sha256 of the recipe's canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# What trains a model: the code and the configs (and the environment's pins). Not checkpoints/: Snakemake deletes a
# job's output folder before the job runs, so retraining a shipped checkpoint in place always removes tracked files.
CODE_PATHS = ("src", "workflow", "Snakefile", "config", "envs", "pyproject.toml")


def code_commit(here: str | None = None) -> str | None:
    """The git commit of the code that trained the model (``+dirty`` when the code or configs have uncommitted
    changes, :data:`CODE_PATHS`), or None outside a git checkout. ``here``: a folder of the checkout (default:
    this package's)."""
    here = here or os.path.dirname(os.path.abspath(__file__))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True)
        root = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=here, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS],
                               cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


@dataclass(frozen=True)
class Provenance:
    """What ``provenance.json`` holds. ``curve``: the training log rows (train running means, per-stage val);
    ``val_accuracy``: question type -> full-token accuracy on the ``val`` split at the end (key ``all`` overall);
    ``base``: the checkpoint it was finetuned from (None when trained from scratch)."""

    recipe: dict
    recipe_hash: str
    seed: int
    code_commit: str | None
    val_accuracy: dict
    curve: list = field(default_factory=list)
    base: str | None = None
    versions: dict = field(default_factory=dict)


def write_provenance(out_dir: str, rec: dict, log: list[dict], commit: str | None, base: str | None = None
                     ) -> Provenance:
    """Write ``out_dir/provenance.json`` for a model trained by ``rec`` with training log ``log``, by the code at
    ``commit`` (:func:`code_commit` taken when training started: the tree may change while a long run goes on)."""
    import torch
    import transformers

    from .. import __version__

    final = max(r["step"] for r in log)
    val = {r["qtype"]: r["accuracy"] for r in log if r["split"] == "val" and r["step"] == final}
    prov = Provenance(recipe=rec, recipe_hash=recipe_hash(rec), seed=rec["seed"], code_commit=commit,
                      val_accuracy=val, curve=log, base=base,
                      versions={"hybridreduce": __version__, "torch": torch.__version__,
                                "transformers": transformers.__version__})
    with open(os.path.join(out_dir, FILENAME), "w") as f:
        json.dump(asdict(prov), f, indent=1, sort_keys=True)
    return prov


def read_provenance(path: str) -> Provenance | None:
    """The provenance of the checkpoint folder ``path``, or None when it has none (e.g. a real checkpoint)."""
    file = os.path.join(path, FILENAME)
    if not os.path.exists(file):
        return None
    with open(file) as f:
        return Provenance(**json.load(f))


def model_row(name: str, model_cfg: dict, path: str) -> dict:
    """The ``models`` table row of ``models.<name>`` with checkpoint folder ``path``: where its weights come from
    (its provenance.json when it has one) and what it was trained on."""
    prov = read_provenance(path) if path and os.path.isdir(path) else None
    training = (prov.recipe["model"].get("training") if prov else None) or {}
    if prov is None:
        origin = "external checkpoint" if model_cfg.get("path") else "random weights"
    elif model_cfg.get("path"):
        origin = "shipped checkpoint"
    else:
        origin = "finetuned by the study" if prov.base else "trained by the study"
    steps = [r["step"] for r in prov.curve] if prov else []
    return {"model": name, "kind": model_cfg.get("kind", "tiny"), "path": path, "origin": origin,
            "base": prov.base if prov else None, "recipe_hash": prov.recipe_hash if prov else None,
            "seed": prov.seed if prov else None, "code_commit": prov.code_commit if prov else None,
            "steps": max(steps) if steps else None, "reduction_budgets": training.get("reduction_budgets"),
            "val_accuracy": prov.val_accuracy if prov else None}
