"""User manifests: JSONL or CSV files pointing at existing videos on disk.

Fields per row: ``video`` (path; relative paths are resolved against the manifest's folder), ``question``,
``options`` (JSON list, or in CSV a ``|``-separated string), ``answer`` (an option letter ``A``.. or the exact
option text), optional ``sample_id`` (default: the video file's stem) and ``split`` (default ``test``).
"""

from __future__ import annotations

import csv
import json
import os
import re

from ..errors import ConfigError
from .sample import LETTERS, Sample

REQUIRED = ("video", "question", "options", "answer")
OPTIONAL = ("sample_id", "split", "qtype")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def _rows(path: str) -> list[tuple[int, dict]]:
    if not os.path.isfile(path):
        raise ConfigError(f"dataset.manifest: file '{path}' does not exist")
    ext = os.path.splitext(path)[1].lower()
    with open(path, newline="", encoding="utf-8") as f:
        if ext == ".jsonl":
            rows = []
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise ConfigError(f"{path}:{n}: not valid JSON ({e.msg})") from None
                if not isinstance(row, dict):
                    raise ConfigError(f"{path}:{n}: expected a JSON object per line")
                rows.append((n, row))
            return rows
        if ext == ".csv":
            return [(n, dict(row)) for n, row in enumerate(csv.DictReader(f), 2)]
    raise ConfigError(f"dataset.manifest: '{path}' must end in .jsonl or .csv")


def _sample(path: str, n: int, row: dict) -> Sample:
    where = f"{path}:{n}"
    if unknown := [key for key in row if key not in REQUIRED + OPTIONAL]:
        raise ConfigError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; a row has "
                          f"{', '.join(REQUIRED)} and optionally {', '.join(OPTIONAL)} (names are case-sensitive)")
    for key in REQUIRED:
        if row.get(key) in (None, ""):
            raise ConfigError(f"{where}: field '{key}' is missing or empty (required: {', '.join(REQUIRED)})")
    options = row["options"]
    if isinstance(options, str):
        options = [o.strip() for o in options.split("|")]
    if not isinstance(options, list) or not 2 <= len(options) <= len(LETTERS):
        raise ConfigError(f"{where}: field 'options' must list 2 to {len(LETTERS)} options, got {options!r}")
    options = [str(o) for o in options]
    answer = str(row["answer"]).strip()
    if answer in options and not (len(answer) == 1 and answer in LETTERS[: len(options)]):
        answer = LETTERS[options.index(answer)]
    if answer not in LETTERS[: len(options)]:
        raise ConfigError(
            f"{where}: field 'answer' is {row['answer']!r}; expected a letter A-{LETTERS[len(options) - 1]} "
            "or the exact text of one option"
        )
    video = str(row["video"])
    if not os.path.isabs(video):
        video = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(path)), video))
    sample_id = str(row.get("sample_id") or os.path.splitext(os.path.basename(video))[0])
    if not _ID_RE.match(sample_id):
        raise ConfigError(
            f"{where}: sample_id {sample_id!r} must start with a letter or digit and use only letters, digits, "
            "'_', '.', '-'"
        )
    return Sample(
        sample_id=sample_id,
        video_path=video,
        question=str(row["question"]),
        options=options,
        answer=answer,
        source="manifest",
        split=str(row.get("split") or "test"),
        qtype=str(row.get("qtype") or ""),
    )


def read_manifest(path: str) -> list[Sample]:
    """Read and validate a manifest. Raises :class:`ConfigError` naming the file, line and field."""
    rows = _rows(path)
    samples = [_sample(path, n, row) for n, row in rows]
    if not samples:
        raise ConfigError(f"dataset.manifest: '{path}' lists no samples")
    line_of: dict[str, int] = {}
    for (n, _), s in zip(rows, samples):
        if s.sample_id in line_of:
            raise ConfigError(
                f"{path}:{n}: sample_id '{s.sample_id}' is already used on line {line_of[s.sample_id]} (ids default "
                "to the video file's name); give each row a unique 'sample_id'"
            )
        line_of[s.sample_id] = n
    return samples
