"""Dataset sources behind one interface: the synthetic long-video benchmark and user manifests.

Both produce :class:`Sample` records; :func:`study_samples` lists a study's samples and videos at DAG-build time (so a bad
manifest is rejected before any job runs).
"""

from ..lazy import lazy_exports

__getattr__, __all__ = lazy_exports(__name__, {
    ".manifest": ["read_manifest"],
    ".sample": ["Sample", "study_samples"],
    ".synthetic": ["SyntheticSpec", "generate_sample"],
})
