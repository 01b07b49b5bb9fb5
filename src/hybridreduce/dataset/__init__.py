"""Dataset sources behind one interface: the synthetic long-video benchmark and user manifests.

Both produce :class:`Sample` records; :func:`study_samples` lists a study's samples and videos at DAG-build time (so a bad
manifest is rejected before any job runs).
"""

from .manifest import read_manifest
from .sample import Sample, study_samples
from .synthetic import SyntheticSpec, generate_sample

__all__ = ["Sample", "SyntheticSpec", "generate_sample", "read_manifest", "study_samples"]
