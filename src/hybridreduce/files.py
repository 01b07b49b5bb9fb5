"""Writing files so that a killed job never leaves a partial one (a ground-floor module: config, the results and
the lmms-eval integration all write through it)."""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager


@contextmanager
def atomic_write(path: str, mode: str = "w", suffix: str = ""):
    """Open a temporary file beside ``path`` and rename it over ``path`` only if the block succeeds, so a killed
    job never leaves a partial file that could be read as a result. ``suffix`` keeps an extension some writers
    need (``np.savez`` appends ``.npz`` otherwise)."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # A unique name opened exclusively (not mkstemp, whose 0600 mode would make reports private): the umask applies.
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp{suffix}")
    try:
        with open(tmp, mode.replace("w", "x")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
