"""Config validation: the JSON schema (which also fills defaults, as ``snakemake.utils.validate`` does), extended by
the installed plugins' method names, plus a short error message that names the offending field and what was
expected."""

from __future__ import annotations

import copy
import json
import os

import jsonschema
import yaml

from .errors import ConfigError


def _field(path) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<top level>"


def _explain(error: jsonschema.ValidationError) -> str:
    field = _field(error.absolute_path)
    v = error.validator
    if v == "additionalProperties":
        allowed = ", ".join(sorted(error.schema.get("properties", {})))
        return f"config field '{field}': {error.message}; allowed keys: {allowed}"
    if v == "enum":
        return f"config field '{field}': {error.instance!r} is not allowed; expected one of {error.validator_value}"
    return f"config field '{field}': {error.message}"


def _fill_defaults(validate_properties):
    """The jsonschema FAQ's recipe: a ``properties`` check that first sets each missing property's default."""

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from validate_properties(validator, props, instance, schema)

    return properties


_DefaultFilling = jsonschema.validators.extend(
    jsonschema.Draft202012Validator,
    {"properties": _fill_defaults(jsonschema.Draft202012Validator.VALIDATORS["properties"])})


def _accept_plugins(schema: dict) -> None:
    """Add the installed plugins' method names (hybridreduce.plugins) to the schema's method enums, in place.
    The in-LLM enum is one YAML anchor, so extending it once extends every use."""
    from .plugins import IN_LLM, PRE_LLM, plugin_names

    props = schema["properties"]
    pre_llm = plugin_names(PRE_LLM)
    for enum in (props["redundancy"]["properties"]["methods"]["items"]["enum"],
                 props["inference"]["properties"]["pre_llm"]["items"]["enum"]):
        enum += pre_llm
    props["inference"]["properties"]["methods"]["items"]["enum"] += plugin_names(IN_LLM)


def validate_config(config: dict, schema_path: str) -> dict:
    """Validate ``config`` in place against the schema at ``schema_path``; raise :class:`ConfigError`."""
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    _accept_plugins(schema)
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        raise ConfigError("invalid config:\n  " + "\n  ".join(_explain(e) for e in errors))
    for model, cfg in config.get("models", {}).items():
        if cfg.get("training", False) is None:  # `training: null` switches off a default's training section
            del cfg["training"]
    for model in config.get("models", {}):
        base_model(config, model)
    # Fill the schema's defaults (what snakemake.utils.validate does, on the schema with the plugins' names).
    for error in _DefaultFilling(schema).iter_errors(config):  # not expected after the check above
        raise ConfigError(f"invalid config: {_explain(error)}")
    _check_pre_llm(config)
    return config


def method_rates(config: dict, method: str) -> list[float]:
    """The pruning rates at which the redundancy stage runs ``method``: ``redundancy.method_q``'s, else
    ``redundancy.q``."""
    redundancy = config.get("redundancy") or {}
    return list((redundancy.get("method_q") or {}).get(method, redundancy.get("q", [])))


# the pre-LLM methods with settings of their own: config section redundancy.<method>, passed to the method
METHOD_OPTIONS = ("cdpruner", "dart_embed", "fastvid", "prunevid")


def method_options(config: dict, method: str) -> dict:
    """The settings of a pre-LLM ``method`` (``redundancy.<method>``, schema defaults filled; ``{}`` for a method
    without any)."""
    return dict((config.get("redundancy") or {}).get(method) or {}) if method in METHOD_OPTIONS else {}


def _check_pre_llm(config: dict) -> None:
    """Inference applies the redundancy stage's masks: its pre-LLM methods and rate must be ones that stage makes."""
    inference, redundancy = config.get("inference") or {}, config.get("redundancy") or {}
    methods = redundancy.get("methods", [])
    stray = [m for m in (redundancy.get("method_q") or {}) if m not in methods]
    if stray:
        raise ConfigError(f"redundancy.method_q: {', '.join(stray)} not in redundancy.methods ({', '.join(methods)})")
    missing = [m for m in inference.get("pre_llm", []) if m != "none" and m not in methods]
    if missing:
        raise ConfigError(f"inference.pre_llm: {', '.join(missing)} not in redundancy.methods "
                          f"({', '.join(methods)}); the infer jobs apply the masks that the "
                          "redundancy stage computes, so add them there")
    for method in inference.get("pre_llm", []):
        rates = method_rates(config, method)
        if method != "none" and inference.get("pre_llm_q") not in rates:
            where = "redundancy.method_q." + method if method in (redundancy.get("method_q") or {}) else "redundancy.q"
            raise ConfigError(f"inference.pre_llm_q: {inference.get('pre_llm_q')} is not one of {where} "
                              f"({', '.join(map(str, rates))}); the infer jobs apply the redundancy stage's {method} "
                              "masks at this rate")


def merge_config(base: dict, override: dict) -> dict:
    """``override`` merged over ``base`` as Snakemake merges ``--configfile`` files over the embedded default:
    nested mappings key by key, everything else (lists included) replaced."""
    out = dict(base)
    for key, value in override.items():
        out[key] = merge_config(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) \
            else value
    return out


def load_config(repo_dir: str, *configfiles: str) -> dict:
    """The validated config of ``snakemake --configfile <configfiles>`` run from the repository ``repo_dir``:
    ``config/config.yaml`` with each file merged over it, schema defaults filled."""
    config = {}
    for path in (os.path.join(repo_dir, "config", "config.yaml"), *configfiles):
        with open(path) as f:
            config = merge_config(config, yaml.safe_load(f) or {})
    return validate_config(config, os.path.join(repo_dir, "workflow", "schemas", "config.schema.yaml"))


def check_checkpoint(path: str, field: str) -> str:
    """``path`` must be a checkpoint folder; the error names the config ``field``."""
    if not path or not os.path.isdir(path):
        raise ConfigError(f"{field}: model checkpoint '{path}' does not exist (expected a save_pretrained folder; "
                          "download it first, `snakemake -n` plans the study without it)")
    return path


def check_checkpoints(config: dict, paths: dict[str, str]) -> None:
    """Every checkpoint that inference uses and that is read from its configured path must be a folder (checked for
    real runs; a dry run plans the study without the weights). ``paths``: model -> resolved folder
    (:func:`model_paths`)."""
    for model in (config.get("inference") or {}).get("models", []):
        if config["models"][model].get("path"):
            check_checkpoint(paths[model], f"models.{model}.path")


def _config_ids(configfiles: list[str]) -> list[str]:
    # Relative to the working directory when inside it, so a copied or moved study folder keeps its identity.
    return sorted(os.path.relpath(f) if not os.path.relpath(f).startswith("..") else os.path.abspath(f)
                  for f in configfiles)


def check_study_name(study: str, results_dir: str, configfiles: list[str]) -> None:
    """Two config files with the same ``study`` name would overwrite each other's results: the first run of a
    study records its config files in ``<results_dir>/configfiles.json``; a run with other files is rejected."""
    marker = os.path.join(results_dir, "configfiles.json")
    if not os.path.exists(marker):
        return
    with open(marker) as f:
        previous = json.load(f)
    if previous != _config_ids(configfiles):
        raise ConfigError(f"study: '{study}' is already the name of the study in {results_dir}/, made from "
                          f"{', '.join(previous)}; this run uses {', '.join(_config_ids(configfiles))}. Give this "
                          "config its own `study` name (or delete that folder to replace the study)")


def claim_study_name(results_dir: str, configfiles: list[str]) -> None:
    """Record which config files make the study in ``results_dir`` (see :func:`check_study_name`)."""
    from .files import atomic_write

    with atomic_write(os.path.join(results_dir, "configfiles.json")) as f:
        json.dump(_config_ids(configfiles), f)


def resolve_path(path: str, repo_dir: str) -> str:
    """A relative checkpoint ``path`` names a folder under the working directory, or else under the repository
    ``repo_dir`` (so the shipped checkpoints are found from any working directory)."""
    if os.path.isabs(path) or os.path.exists(path) or not os.path.exists(os.path.join(repo_dir, path)):
        return path
    return os.path.join(repo_dir, path)


def model_paths(config: dict, results_dir: str, repo_dir: str = ".") -> dict[str, str]:
    """``model name -> checkpoint folder``: the configured ``path`` (see :func:`resolve_path`), or where the
    workflow builds it (``pretraining.out_dir`` in a pretraining run, else ``results_dir/models``)."""
    built = (config.get("pretraining") or {}).get("out_dir") or f"{results_dir}/models"
    return {name: resolve_path(cfg["path"], repo_dir) if cfg.get("path") else f"{built}/{name}"
            for name, cfg in config.get("models", {}).items()}


def inference_settings(config: dict) -> list[tuple[str, str, str, float]]:
    """Every (model, pre-LLM method, in-LLM method, budget) of the study. ``none`` runs at budget 1.0 only,
    and a budget of 1.0 only with ``none``: every method is identical to it there. A model runs its
    ``inference.model_methods`` entry (default ``methods``); after a pre-LLM method other than ``none`` only the
    methods in ``with_pre_llm`` run (default all)."""
    inf = config.get("inference")
    if not inf:
        return []
    settings = []
    for model in inf.get("model_methods") or {}:  # an entry for a model the study does not run is unused
        if model not in config.get("models", {}):
            raise ConfigError(f"inference.model_methods: '{model}' is not defined under models")
    for model in inf["models"]:
        if model not in config.get("models", {}):
            raise ConfigError(f"inference.models: '{model}' is not defined under models (defined: "
                              f"{', '.join(config.get('models', {})) or 'none'})")
        methods = (inf.get("model_methods") or {}).get(model) or inf["methods"]
        for pre in inf["pre_llm"]:
            with_pre = inf.get("with_pre_llm")
            for method in methods if pre == "none" or with_pre is None else [m for m in methods if m in with_pre]:
                for budget in inf["budgets"]:
                    if (method == "none") == (float(budget) >= 1.0):
                        settings.append((model, pre, method, float(budget)))
    return settings


def base_model(config: dict, model: str) -> str | None:
    """The study model that ``models.<model>`` is finetuned from (``training.init_from``): a tiny model, built by
    the workflow or loaded from its ``path`` (e.g. a shipped checkpoint), that is not itself (transitively)
    finetuned from ``model``."""
    cfg = config["models"][model]
    if cfg.get("path") and cfg.get("training"):
        raise ConfigError(f"models.{model}: a model loaded from its path ('{cfg['path']}') is not trained by the "
                          "study; to finetune a checkpoint, define a new model with training.init_from naming this "
                          "one (or set training: null)")
    name, seen = cfg.get("training", {}).get("init_from"), [model]
    base = name
    while base is not None:
        if base not in config["models"]:
            raise ConfigError(f"models.{model}.training.init_from: unknown model '{name}' "
                              f"(known: {', '.join(m for m in config['models'] if m != model)})")
        if base in seen:
            raise ConfigError(f"models.{model}.training.init_from: '{name}' leads back to '{base}' (a cycle)")
        if config["models"][base].get("kind", "tiny") != "tiny":
            raise ConfigError(f"models.{model}.training.init_from: '{base}' must be a tiny model (kind: tiny)")
        seen.append(base)
        base = config["models"][base].get("training", {}).get("init_from")
    architecture = ("llm", "image_size", "patch_size", "vision_hidden_size")
    clash = [k for k in architecture if name and k in cfg]
    if clash:
        raise ConfigError(f"models.{model}: {', '.join(clash)} cannot be set on a model finetuned from '{name}' "
                          "(its architecture is the base model's)")
    return name


def training_data(config: dict, model: str) -> dict:
    """What training ``models.<model>`` depends on besides its own config: the benchmark's generator settings
    (not the test set's size or split), the frames per video, and the reduction config when it finetunes under
    reduction. Empty for untrained models, so dataset changes never rebuild them."""
    training = config["models"][model].get("training")
    if not training:
        return {}
    from .dataset.synthetic import generator_settings

    synthetic = generator_settings(config["dataset"].get("synthetic", {}))
    return {"synthetic": synthetic, "num_frames": config["frames"]["num_frames"],
            "reduction": config["reduction"] if training.get("reduction_budgets") else {}}
