"""lmms-eval registration of the ``hybridreduce`` model (entry-point group ``lmms_eval.models``).

Loaded on every ``import lmms_eval.models``, so it imports nothing heavy: lmms-eval resolves the class path only
when ``--model hybridreduce`` is asked for.
"""


def manifest():
    # Imported here, not at module level: lmms_eval.models imports this module while it initialises.
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="hybridreduce", simple_class_path="hybridreduce.lmms.model.HybridReduceLMM")
