"""One inference setting, typed and frozen: built by the infer job from the validated config (whose schema gives
every default of a study), written as the run's ``setting.json``, and read back by the lmms-eval plugin,
which hands it to :class:`~.inference.SettingRunner`. The defaults below serve only the plugin used on its own
(``python -m lmms_eval --model hybridreduce --model_args model=...``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace

from .errors import ConfigError


@dataclass(frozen=True)
class RunOptions:
    """How a setting runs and is timed (config section ``inference``): device, CPU threads (None: torch's
    default), warm-up runs and timed repeats of each prefill, and how many samples are timed (None: all)."""

    device: str = "cpu"
    threads: int | None = None
    warmup: int = 1
    repeats: int = 3
    latency_samples: int | None = None

    @classmethod
    def from_config(cls, inference: dict) -> "RunOptions":
        """The options in the study config's ``inference`` section (schema defaults filled)."""
        return cls(**{f.name: inference[f.name] for f in fields(cls) if f.name in inference})


@dataclass(frozen=True)
class Setting:
    """A (model, pre-LLM method and rate, in-LLM method, budget) setting and what it needs to run.

    ``model``: the model's config (``kind``, ``path``, ...); ``frames``: frame sampling for videos the plugin
    decodes itself; ``reduction``: the in-LLM schedule options (``reduction.methods.DEFAULTS`` fill the rest);
    ``frames_dir`` / ``vision_dir`` / ``pre_masks``: in the workflow, frame extraction's output, this model's vision
    tokens (``encode_vision``) and the redundancy stage's masks of this model and pre-LLM method (None: decode the
    document's video / encode it / run the pre-LLM method in the setting).
    """

    model_name: str
    model: dict
    pre: str = "none"
    pre_q: float = 0.5
    method: str = "none"
    budget: float = 1.0
    frames: dict = field(default_factory=lambda: {"sampling": "uniform", "num_frames": 16, "size": [224, 224],
                                                  "resize": "crop"})
    reduction: dict = field(default_factory=dict)
    run: RunOptions = field(default_factory=RunOptions)
    seed: int = 0
    frames_dir: str | None = None
    vision_dir: str | None = None
    pre_masks: str | None = None

    @property
    def label(self) -> str:
        return f"{self.model_name}/{self.pre}/{self.method}/{self.budget}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "setting") -> "Setting":
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}; a setting has "
                              f"{', '.join(sorted(known))}")
        try:
            run = RunOptions(**data.pop("run", {}))
            return cls(**data, run=run)
        except TypeError as e:
            raise ConfigError(f"{source}: {e}") from None

    def with_overrides(self, **changes) -> "Setting":
        """A copy with the given fields replaced (``None`` values left as they are); ``run`` and ``frames``
        entries can be given as ``run_<name>`` / ``frames_<name>``."""
        run = {k[4:]: v for k, v in changes.items() if k.startswith("run_") and v is not None}
        frames = {k[7:]: v for k, v in changes.items() if k.startswith("frames_") and v is not None}
        direct = {k: v for k, v in changes.items() if not k.startswith(("run_", "frames_")) and v is not None}
        return replace(self, **direct, run=replace(self.run, **run), frames={**self.frames, **frames})
