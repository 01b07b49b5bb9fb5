"""The sample record shared by every dataset source."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

LETTERS = "ABCDEFGHIJ"


@dataclass
class Sample:
    """One video + one multiple-choice question.

    ``answer`` is the letter of the correct option (``A`` = ``options[0]``). ``events`` holds the generator's
    ground truth for synthetic samples (what appeared, where, when) and is empty for manifest samples.
    """

    sample_id: str
    video_path: str
    question: str
    options: list[str]
    answer: str
    source: str
    split: str = "test"
    qtype: str = ""
    events: list[dict] = field(default_factory=list)

    def to_row(self) -> dict:
        return asdict(self)


def study_samples(config: dict, results_dir: str) -> dict[str, str]:
    """``sample_id -> video path`` for the study, from the config alone: synthetic videos are written under
    ``results_dir``; manifest rows are read and validated here (errors surface before any job runs)."""
    ds = config["dataset"]
    if ds["source"] == "synthetic":
        from .synthetic import SyntheticSpec

        spec = SyntheticSpec.from_config(ds["synthetic"], seed=config["seed"])
        return {s: f"{results_dir}/dataset/videos/{s}.{spec.container}" for s in spec.sample_ids()}
    from .manifest import read_manifest

    return {s.sample_id: s.video_path for s in read_manifest(ds["manifest"])}

