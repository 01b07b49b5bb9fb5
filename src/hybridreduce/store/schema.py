"""DuckDB tables of a study: name -> ordered (column, type, description). The table reference in docs/tables.md is
generated from this list (``python -m hybridreduce tables``), so code and documentation cannot drift."""

from __future__ import annotations

# The key of one inference setting, leading the tables written per setting.
SETTING = [
    ("model", "VARCHAR", "model name"),
    ("pre_method", "VARCHAR", "pre-LLM method"),
    ("method", "VARCHAR", "in-LLM method"),
    ("budget", "DOUBLE", "in-LLM token budget asked for"),
]

TABLES: dict[str, list[tuple[str, str, str]]] = {
    "study": [
        ("study", "VARCHAR", "study name (config key `study`)"),
        ("config_hash", "VARCHAR", "sha256 of the canonical JSON of the full validated config"),
        ("seed", "BIGINT", "global seed"),
        ("config", "JSON", "the full validated config"),
    ],
    "samples": [
        ("sample_id", "VARCHAR", "unique id of one video + question"),
        ("split", "VARCHAR", "train / val / test"),
        ("source", "VARCHAR", "`synthetic` or `manifest`"),
        ("video_path", "VARCHAR", "video file the sample points at"),
        ("question", "VARCHAR", "question text"),
        ("options", "VARCHAR[]", "answer options, option A first"),
        ("answer", "VARCHAR", "letter of the correct option"),
        ("qtype", "VARCHAR", "question type (synthetic: colour, location, count, order)"),
        ("events", "JSON", "synthetic ground truth: shape, colour, quadrant, start_s, end_s per event"),
    ],
    "videos": [
        ("sample_id", "VARCHAR", "sample the video belongs to"),
        ("container", "VARCHAR", "container format as PyAV names it"),
        ("codec", "VARCHAR", "video codec"),
        ("source_width", "INTEGER", "decoded width before resizing"),
        ("source_height", "INTEGER", "decoded height before resizing"),
        ("total_frames", "INTEGER", "frames in the video (counted by demuxing)"),
        ("duration_s", "DOUBLE", "span of the video stream"),
        ("sampled_frames", "INTEGER", "frames extracted"),
        ("decode_s", "DOUBLE", "wall time of extraction"),
    ],
    "frames": [
        ("sample_id", "VARCHAR", "sample"),
        ("frame_index", "INTEGER", "position among the extracted frames (0..T-1)"),
        ("source_index", "INTEGER", "position among all frames of the video"),
        ("timestamp_s", "DOUBLE", "presentation time from the start of the stream"),
        ("height", "INTEGER", "extracted frame height"),
        ("width", "INTEGER", "extracted frame width"),
        ("motion", "DOUBLE", "mean |ΔRGB| to the previous extracted frame (0 for frame 0)"),
    ],
    "visual_reduction": [
        ("sample_id", "VARCHAR", "sample"),
        ("model", "VARCHAR", "model whose vision tokens the method ran on (the masks its infer jobs apply)"),
        ("method", "VARCHAR", "pre-LLM method (registry name)"),
        ("q", "DOUBLE", "pruning rate asked for"),
        ("frames", "INTEGER", "T"),
        ("grid_h", "INTEGER", "h (tokens per column)"),
        ("grid_w", "INTEGER", "w (tokens per row)"),
        ("tokens_total", "INTEGER", "N = T*h*w"),
        ("tokens_kept", "INTEGER", "tokens the method keeps"),
        ("kept_fraction", "DOUBLE", "tokens_kept / tokens_total (the budget)"),
        ("kept_per_frame", "INTEGER[]", "tokens kept in each frame"),
        ("time_ms", "DOUBLE", "wall time of computing the mask"),
        ("evidence_tokens", "INTEGER", "ground-truth evidence tokens of the video (tokens showing an asked-about "
                                       "event; NULL without ground truth)"),
        ("evidence_kept", "INTEGER", "of them, those the method keeps (for a merging method: whose position keeps a "
                                     "token, possibly a merged one)"),
        ("distractor_tokens", "INTEGER", "tokens showing a distractor event (0 in a video without distractors; NULL "
                                         "without ground truth)"),
        ("distractor_kept", "INTEGER", "of them, those the method keeps"),
    ],
    "training": [
        ("model", "VARCHAR", "model trained by the workflow"),
        ("step", "INTEGER", "optimiser steps so far"),
        ("split", "VARCHAR", "`train` (running means since the last row) or `val` (full-token accuracy at the end); "
                             "`retrieval_train` / `retrieval_val` for the text-only retrieval stages"),
        ("qtype", "VARCHAR", "question type of a `val` row (retrieval task of a `retrieval_val` row), or `all`"),
        ("loss", "DOUBLE", "cross-entropy of the answer letter over the four option letters"),
        ("accuracy", "DOUBLE", "answer accuracy"),
        ("samples_seen", "BIGINT", "training samples seen"),
        ("elapsed_s", "DOUBLE", "training wall time so far"),
        ("num_frames", "INTEGER", "frames per training video in this stage (a curriculum may start shorter; NULL "
                                  "in a text-only stage)"),
    ],
    "inference": [
        ("model", "VARCHAR", "model name (config `models`)"),
        ("pre_method", "VARCHAR", "pre-LLM method (`none` or a redundancy registry name)"),
        ("pre_q", "DOUBLE", "pre-LLM pruning rate (0 for `none`)"),
        ("method", "VARCHAR", "in-LLM method (reduction registry name)"),
        ("budget", "DOUBLE", "in-LLM token budget asked for"),
        ("task", "VARCHAR", "lmms-eval task the sample came from"),
        ("sample_id", "VARCHAR", "sample (`<task>/<doc_id>` for tasks without sample ids)"),
        ("qtype", "VARCHAR", "question type"),
        ("predicted", "VARCHAR", "greedy answer restricted to the option letters (scored in `sample_scores`)"),
        ("vision_tokens_full", "INTEGER", "vision tokens of the whole video (T·h·w)"),
        ("vision_tokens_in", "INTEGER", "vision tokens entering the LLM (after the pre-LLM method)"),
        ("pre_kept_fraction", "DOUBLE", "vision_tokens_in / vision_tokens_full"),
        ("stage_layers", "INTEGER[]", "layers at whose input vision tokens are dropped"),
        ("rank_layers", "INTEGER[]", "layer whose mixer ranked each stage's tokens, on its input: "
                                     "the stage layer (the paper's method) or the layer before it (FastV, PDrop)"),
        ("keep_counts", "INTEGER[]", "vision tokens kept by each stage"),
        ("vision_per_layer", "INTEGER[]", "vision tokens processed by each layer (realised)"),
        ("realised_budget", "DOUBLE", "mean over layers of vision_per_layer / vision_tokens_in"),
        ("final_kept_fraction", "DOUBLE", "vision tokens after the last stage / vision_tokens_in"),
        ("overall_budget", "DOUBLE", "pre_kept_fraction × realised_budget (fraction of the full video's tokens)"),
        ("flops", "DOUBLE", "analytic prefill FLOPs of the realised token counts"),
        ("flops_none", "DOUBLE", "analytic prefill FLOPs without in-LLM reduction (same LLM input)"),
        ("layer_pattern", "VARCHAR", "layer types: M = Mamba-2, * = attention, - = MLP"),
        ("unknown_share", "DOUBLE", "share of the question's tokens unknown to the model's tokenizer"),
        ("question_unreadable", "BOOLEAN", "unknown_share above inference.UNREADABLE_SHARE (0.2): the answer is a "
                                           "guess"),
        ("evidence_tokens", "INTEGER", "vision tokens of the whole video that show what the question asks about "
                                       "(synthetic ground truth; NULL without)"),
        ("evidence_per_stage", "INTEGER[]", "evidence tokens entering the LLM, then kept by each stage"),
        ("evidence_survival", "DOUBLE", "evidence tokens after the last stage / evidence_tokens"),
    ],
    "latency": [
        *SETTING,
        ("sample_id", "VARCHAR", "sample"),
        ("device", "VARCHAR", "cpu, or the GPU's name"),
        ("vision_encode_s", "DOUBLE", "vision encoder + projector"),
        ("pre_llm_s", "DOUBLE", "pre-LLM reduction mask"),
        ("prefill_s", "DOUBLE", "LLM prefill to the first answer token: median of `repeats` after warm-up"),
        ("prefill_none_s", "DOUBLE", "prefill without in-LLM reduction on the same prompt, timed in the same job"),
        ("speedup", "DOUBLE", "prefill_none_s / prefill_s"),
        ("score_s", "DOUBLE", "part of prefill_s spent scoring and gathering tokens"),
        ("total_s", "DOUBLE", "vision_encode_s + pre_llm_s + prefill_s"),
        ("repeats", "INTEGER", "timed repeats behind the median"),
        ("peak_mem_mb", "DOUBLE", "peak GPU allocation, or the job's peak resident memory on CPU"),
    ],
    "scores": [
        *SETTING,
        ("task", "VARCHAR", "lmms-eval task"),
        ("metric", "VARCHAR", "metric name as lmms-eval reports it"),
        ("filter", "VARCHAR", "lmms-eval filter (`none` without one)"),
        ("value", "DOUBLE", "aggregated score from lmms-eval's results JSON (NULL if not a number)"),
        ("stderr", "DOUBLE", "lmms-eval's standard error of the score"),
        ("num_samples", "INTEGER", "documents evaluated"),
        ("lmms_eval_version", "VARCHAR", "lmms-eval package version"),
    ],
    "sample_scores": [
        *SETTING,
        ("task", "VARCHAR", "lmms-eval task"),
        ("doc_id", "INTEGER", "document index in the task's split"),
        ("sample_id", "VARCHAR", "sample (joins `inference` and `samples`)"),
        ("target", "VARCHAR", "gold answer as lmms-eval logs it"),
        ("response", "VARCHAR", "the model's response"),
        ("metric", "VARCHAR", "metric name"),
        ("score", "DOUBLE", "per-sample value from lmms-eval's sample log (e.g. 1.0 correct, 0.0 wrong)"),
        ("detail", "JSON", "the per-sample value when it is not a number (e.g. Video-MME's record)"),
    ],
    "layer_sparsity": [
        ("model", "VARCHAR", "model probed"),
        ("score", "VARCHAR", "`decay_free` (the paper's Mamba score; attention's only score) or `decay`"),
        ("layer", "INTEGER", "decoder layer index of a scoring (attention or Mamba) layer"),
        ("layer_type", "VARCHAR", "`attention` or `mamba`"),
        ("metric", "VARCHAR", ("`mass90` (smallest fraction of tokens holding 90% of the importance), `gini`, "
                               "`entropy` (normalised Shannon entropy)")),
        ("mean", "DOUBLE", "mean over probe samples"),
        ("std", "DOUBLE", "sample standard deviation over probe samples"),
        ("ci_low", "DOUBLE", "2.5th percentile of the bootstrap mean"),
        ("ci_high", "DOUBLE", "97.5th percentile of the bootstrap mean"),
        ("n_samples", "INTEGER", "probe samples"),
    ],
    "layer_stability": [
        ("model", "VARCHAR", "model probed"),
        ("layer_a", "INTEGER", "scoring layer"),
        ("layer_b", "INTEGER", "scoring layer"),
        ("spearman", "DOUBLE", "Spearman rank correlation of the two layers' importance, mean over samples"),
        ("jaccard", "DOUBLE", "Jaccard overlap of the two layers' top-25% token sets, mean over samples"),
        ("n_samples", "INTEGER", "probe samples"),
    ],
    "evidence_ranking": [
        ("model", "VARCHAR", "model probed"),
        ("layer", "INTEGER", "scoring layer"),
        ("layer_type", "VARCHAR", "`attention` or `mamba`"),
        ("score", "VARCHAR", ("`attention`, `mamba_decay_free` (the paper's), `mamba_decay`, `mamba_signed`, "
                              "`mamba_head_max`, `mamba_x_norm`, `mamba_clip` (variants of the Mamba score; "
                              "`mamba_clip` is query-blind), `last_token` (FastV's query), `norm` (hidden-state "
                              "norm, question-blind) or `random`")),
        ("auc", "DOUBLE", "ROC-AUC of the ground-truth evidence tokens under the score, mean over probe samples"),
        ("auc_low", "DOUBLE", "2.5th percentile of the bootstrap mean AUC"),
        ("auc_high", "DOUBLE", "97.5th percentile of the bootstrap mean AUC"),
        ("recall_at_k", "DOUBLE", "fraction of the evidence tokens in the score's top k_frac of tokens, mean"),
        ("k_frac", "DOUBLE", "k as a fraction of the vision tokens (probing.topk_frac)"),
        ("n_samples", "INTEGER", "probe samples with evidence tokens"),
    ],
    "probe_retention": [
        ("model", "VARCHAR", "model probed"),
        ("layer", "INTEGER", "scoring layer at whose input the tokens were removed"),
        ("layer_type", "VARCHAR", "`attention` or `mamba`"),
        ("target", "VARCHAR", ("`state` (PCA of the mean discarded-token state, ridge R²) or `event` (colour of "
                               "the event whose frames were dropped, logistic accuracy)")),
        ("keep_ratio", "DOUBLE", "fraction of vision tokens kept (`state`); NULL for `event`"),
        ("mean", "DOUBLE", "retention = (score_l - floor) / (ceiling - floor), mean over resampled splits"),
        ("ci_low", "DOUBLE", "2.5th percentile of retention over resampled splits"),
        ("ci_high", "DOUBLE", "97.5th percentile of retention over resampled splits"),
        ("n_boot_finite", "INTEGER", "resampled splits with a finite retention"),
        ("score_l", "DOUBLE", "held-out probe score with the tokens removed at this layer"),
        ("score_floor", "DOUBLE", "held-out probe score with the same tokens removed at the input"),
        ("score_ceiling", "DOUBLE", "held-out probe score with nothing removed"),
    ],
    "failures": [
        ("sample_id", "VARCHAR", "sample that failed"),
        ("stage", "VARCHAR", "rule in which it failed"),
        ("path", "VARCHAR", "file involved"),
        ("kind", "VARCHAR", ("missing, unreadable, empty, not_a_video, corrupt, truncated, damaged, no_video_stream, "
                             "unsupported_codec, too_large, zero_frames, too_short (errors.VideoError), "
                             "no_ground_truth, infeasible_schedule")),
        ("reason", "VARCHAR", "human-readable reason"),
    ],
    "runs": [
        ("rule", "VARCHAR", "Snakemake rule of the job"),
        ("output", "VARCHAR", "the job's result file"),
        ("started_at", "TIMESTAMPTZ", "job start (UTC)"),
        ("finished_at", "TIMESTAMPTZ", "job end (UTC)"),
        ("duration_s", "DOUBLE", "job wall time"),
        ("host", "VARCHAR", "machine that ran the job"),
        ("params_hash", "VARCHAR", "sha256 of the job's parameters"),
        ("versions", "JSON", "python and package versions used by the job"),
    ],
}


# Tables filled from the checkout rather than from the study's jobs (a job cannot write them): the benchmark
# records saved by benchmarks/*.py (hybridreduce.store.benchmarks), shown in the report's Methods section.
CHECKOUT_TABLES: dict[str, list[tuple[str, str, str]]] = {
    "benchmarks": [
        ("benchmark", "VARCHAR", "benchmark script (`benchmarks/<name>.py`; `prefill_cpu` / `prefill_gpu` by device)"),
        ("setting", "VARCHAR", "what was measured (model and budget, sampling, workflow)"),
        ("metric", "VARCHAR", "e.g. `speedup_over_limit`, `scoring_share`, `throughput_vs_ffmpeg`, `noop_rerun_s`"),
        ("value", "DOUBLE", "the figure the script printed"),
        ("unit", "VARCHAR", "unit of `value`"),
        ("target", "DOUBLE", "the target it is held to (NULL if none)"),
        ("met", "BOOLEAN", "whether `value` meets `target` (NULL if no target)"),
        ("machine", "VARCHAR", "CPU, cores, device, load average and versions where it was measured"),
        ("measured_at", "TIMESTAMPTZ", "when the script ran"),
        ("command", "VARCHAR", "the command that produced it"),
    ],
}
# Tables the collect step derives from the jobs' rows (hybridreduce.scoring.stats): accuracy with bootstrap CIs.
DERIVED_TABLES: dict[str, list[tuple[str, str, str]]] = {
    "models": [
        ("model", "VARCHAR", "model name (config `models`)"),
        ("kind", "VARCHAR", "adapter family (`tiny`, `nemotron_h_omni`, ...)"),
        ("path", "VARCHAR", "checkpoint folder"),
        ("origin", "VARCHAR", ("`shipped checkpoint` (pretrained by a recipe, with provenance), `finetuned by the "
                               "study`, `trained by the study`, `random weights`, or `external checkpoint`")),
        ("base", "VARCHAR", "the checkpoint it was finetuned from (NULL if none)"),
        ("recipe_hash", "VARCHAR", "sha256 of its training recipe (provenance.json)"),
        ("seed", "BIGINT", "training seed"),
        ("code_commit", "VARCHAR", "git commit of the code that trained it"),
        ("steps", "INTEGER", "optimiser steps of its training (all stages)"),
        ("reduction_budgets", "DOUBLE[]", "budgets it was finetuned under (finetuning under reduction)"),
        ("val_accuracy", "JSON", "validation accuracy per question type at the end of its training"),
    ],
    "accuracy": [
        *SETTING,
        ("task", "VARCHAR", "lmms-eval task"),
        ("samples", "INTEGER", "samples scored"),
        ("accuracy", "DOUBLE", "mean per-sample accuracy (lmms-eval's sample log)"),
        ("ci_low", "DOUBLE", "2.5th percentile of the bootstrap mean over samples (2000 resamples, fixed seed)"),
        ("ci_high", "DOUBLE", "97.5th percentile of the bootstrap mean"),
        ("chance", "DOUBLE", "chance level: mean of 1 / number of options over the samples (NULL if unknown)"),
        ("vs_full", "DOUBLE", "accuracy minus the same model's full-token accuracy, on the samples both answered"),
        ("vs_full_low", "DOUBLE", "2.5th percentile of the paired bootstrap of vs_full"),
        ("vs_full_high", "DOUBLE", "97.5th percentile of the paired bootstrap of vs_full"),
        ("vs_ours", "DOUBLE", "accuracy minus hybrid_progressive's at the same pre-LLM method and budget (paired)"),
        ("vs_ours_low", "DOUBLE", "2.5th percentile of the paired bootstrap of vs_ours"),
        ("vs_ours_high", "DOUBLE", "97.5th percentile of the paired bootstrap of vs_ours"),
    ],
}
ALL_TABLES = {**TABLES, **CHECKOUT_TABLES, **DERIVED_TABLES}


def create_statement(table: str) -> str:
    cols = ", ".join(f'"{name}" {typ}' for name, typ, _ in ALL_TABLES[table])
    return f'CREATE TABLE "{table}" ({cols})'


def markdown_reference() -> str:
    """The table reference as Markdown (docs/tables.md)."""
    out = []
    for table, cols in ALL_TABLES.items():
        out.append(f"**`{table}`**\n\n| column | type | meaning |\n| --- | --- | --- |")
        out.extend(f"| `{n}` | {t} | {d} |" for n, t, d in cols)
        out.append("")
    return "\n".join(out)
