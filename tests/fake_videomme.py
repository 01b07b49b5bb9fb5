"""A tiny fake copy of lmms-eval's ``videomme`` dataset layout under an ``HF_HOME``, loadable offline.

- ``datasets/lmms-eval___video-mme/default/0.0.0/<hash>/``: the Arrow cache ``datasets.load_dataset
  ("lmms-eval/Video-MME")`` falls back to with ``HF_HUB_OFFLINE=1`` (a fake hub snapshot is not consulted offline);
- ``videomme/data/<videoID>.mp4``: where the task's ``doc_to_visual`` looks; the folder's existence also makes
  lmms-eval skip its snapshot download and unzip.
"""

from __future__ import annotations

import os

import datasets
import numpy as np
from datasets.arrow_writer import ArrowWriter

from hybridreduce.video import write_video

_STR = datasets.Value("string")
FEATURES = datasets.Features({
    **{name: _STR for name in ("video_id", "duration", "domain", "sub_category", "url", "videoID", "question_id",
                               "task_type", "question", "answer")},
    "options": datasets.Sequence(_STR),
})


def make_fake_videomme(hf_home: str, n: int = 3, options: list[str] | None = None) -> list[dict]:
    """Write ``n`` documents (categories from the task's own fixed lists) and their mp4 videos; return the rows.
    ``options``: every document's option lines (default ``A. 1`` to ``D. 4``)."""
    options = ["A. 1", "B. 2", "C. 3", "D. 4"] if options is None else options
    rows = [{"video_id": f"{i + 1:03d}", "duration": ("short", "medium", "long")[i % 3], "domain": "Knowledge",
             "sub_category": "Humanity & History", "url": f"https://www.youtube.com/watch?v=fake{i:03d}",
             "videoID": f"fake{i:03d}", "question_id": f"{i + 1:03d}-1", "task_type": "Counting Problem",
             "question": f"How many shapes appeared in video {i}?", "options": options,
             "answer": "AB"[i % 2]} for i in range(n)]
    video_dir = os.path.join(hf_home, "videomme", "data")
    os.makedirs(video_dir, exist_ok=True)
    for i, row in enumerate(rows):
        frames = [np.full((48, 64, 3), (30 * i + 8 * t) % 256, np.uint8) for t in range(12)]
        write_video(os.path.join(video_dir, row["videoID"] + ".mp4"), frames, fps=4)
    cache = os.path.join(hf_home, "datasets", "lmms-eval___video-mme", "default", "0.0.0", "0" * 40)
    os.makedirs(cache, exist_ok=True)
    with ArrowWriter(features=FEATURES, path=os.path.join(cache, "video-mme-test.arrow")) as writer:
        for row in rows:
            writer.write(row)
        num_examples, num_bytes = writer.finalize()
    info = datasets.DatasetInfo(features=FEATURES, dataset_name="video-mme", config_name="default")
    info.splits = datasets.SplitDict(dataset_name="video-mme")
    info.splits.add(datasets.SplitInfo("test", num_bytes=num_bytes, num_examples=num_examples,
                                       dataset_name="video-mme"))
    info.write_to_directory(cache)
    return rows
