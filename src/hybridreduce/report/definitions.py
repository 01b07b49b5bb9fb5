"""Definitions the Methods section prints for the methods a study actually ran (STUDY.md §2-§3). Kept as text here
so rendering needs no torch import; a test checks that every registered method has an entry."""

from __future__ import annotations

PRE_LLM = {
    "none": "no pre-LLM reduction.",
    "evs": ("Efficient Video Sampling as served (vLLM, SGLang, transformers nemotron_h_omni): dissimilarity "
            "1 − cos(e[t,i,j], e[t−1,i,j]), frame 0 always kept, global top max(h·w, int(T·h·w·(1−q))) "
            "tokens; retained tokens keep their original positions."),
    "evs_pixel": "the EVS paper's variant: per-patch mean |ΔRGB| to the previous frame, patches below the q-th "
                 "percentile dropped, frame 0 kept.",
    "random": "control at EVS's token count: a seeded random subset.",
    "uniform": "control at EVS's token count: tokens evenly spaced over the flattened (t, i, j) order.",
    "divprune": ("DivPrune (Alvar et al., CVPR 2025) at EVS's token count: greedy max-min diversity over the "
                 "whole video's tokens (distance 1 − cos), starting from the token farthest from its nearest "
                 "neighbour; question-blind."),
    "pool": ("control: temporal average pooling (the downsampling baseline): frames in K = ⌊T·(1−q) + ½⌋ "
             "contiguous groups, each group's tokens at a position averaged into one token at the group's first "
             "frame."),
    "cdpruner": ("CDPruner (Zhang et al., NeurIPS 2025; OpenVINO GenAI's semantics) at EVS's token count: a "
                 "conditional DPP over the whole video, kernel diag(r′) S diag(r′) with S the tokens' cosine "
                 "similarity and r′ = exp(θ / (2(1−θ)) · r), r the min-max normalised negated mean cosine of each "
                 "token to the question's token embeddings at the LLM input, θ = redundancy.cdpruner."
                 "relevance_weight; greedy MAP selection. Query-conditioned."),
    "dart_embed": ("DART at the embedding level (Wen et al., 2025; TensorRT-Edge-LLM's semantics) at EVS's token "
                   "count: the vision and question tokens of largest L1 norm are pivots (redundancy.dart_embed); "
                   "each pivot in turn takes its share of the tokens least cosine-similar to it; the vision pivots "
                   "are kept. Duplicates of a pivot go; positions are kept."),
    "dycoke_ttm": ("DyCoke's temporal token merging (Tao et al., CVPR 2025), its pre-LLM stage: frames in groups of "
                   "4, each non-reference frame's tokens most similar to their counterpart (same position) pruned at "
                   "the rate that gives EVS's count (to q ≈ 0.75; above that the reference frames alone)."),
    "fastvid": ("FastVID (Shen et al., 2025): dynamic temporal segmentation, then per segment salient tokens "
                "(similarity to the frame's mean, for [CLS] attention) and density-peak anchors into which the "
                "other tokens merge (redundancy.fastvid); merged tokens sit at their anchor; EVS's count."),
    "prunevid": ("PruneVid (Huang et al., ACL Findings 2025), its pre-LLM merging: DPC-kNN temporal segments, static "
                 "positions averaged over the segment (at its first frame), then spatial DPC-kNN clusters merged "
                 "into their centre (redundancy.prunevid); EVS's count unless the video is mostly static."),
}

IN_LLM = {
    "none": "no in-LLM reduction (the baseline; budget 1).",
    "hybrid_progressive": "the paper's method: progressive low-to-high schedule, one query-conditioned score for "
                          "attention and Mamba layers, decay-free Mamba score.",
    "fastv": ("FastV as its official code runs: one stage at layer K (reduction.fastv_layer; as a fraction of "
              "depth, 2 of 32 layers by default, at least 1; R solved from the budget); layer K−1 ranks the "
              "tokens on its input (all of them) by the last token's score, head mean, and layers K.. see the kept "
              "ones. On a hybrid, a Mamba-2 layer K−1 ranks with the decay-free Mamba score; an MLP layer K−1 is "
              "replaced by the nearest earlier Mamba-2 or attention layer (table schedules: rank_layers)."),
    "pdrop": ("PyramidDrop as its official scripts run: stages at ¼, ½, ¾ depth (layer_list 8, 16, 24 of 32) with "
              "one retained ratio λ per stage, solved from the budget; the last layer of each stage ranks the "
              "tokens it saw by the last token's score, head mean, and the next stage sees the kept ones (on a "
              "hybrid, as for FastV)."),
    "framefusion": ("FrameFusion (Fu et al., ICCV 2025): from layer 0, at every layer's input, each vision token whose "
                    "hidden state is cosine-similar (≥ reduction.framefusion.similarity_lower_bound) to the previous "
                    "frame's token of its spatial position merges into it (their mean, at the earlier token's "
                    "position) while the budget allows; once a layer's candidates fall below ratio_lower_bound, the "
                    "next layer prunes the rest by the unified query-conditioned score to spend the budget exactly. "
                    "Its stage layers and counts depend on the video; a budget a video's merges overspend is "
                    "infeasible for that sample."),
    "dart": ("DART (Wen et al., 2025; the paper's version, which TensorRT-Edge-LLM's embedding-level dart_embed "
             "adapts): one stage at layer K (reduction.fastv_layer: 2 of 32 layers, as FastV's); on the states "
             "entering layer K under its RMSNorm, the 4 vision and 4 question tokens of largest L1 norm are pivots "
             "(DART ranks by layer K−1's key norms, which a Mamba layer lacks) and each takes its share of the "
             "vision tokens least cosine-similar to it; the vision pivots are kept. Not query-ranked: duplication."),
    "random": "the paper's schedule, random choice of tokens.",
    "oracle": ("control (synthetic benchmark only): the paper's schedule keeping the ground-truth evidence tokens "
               "(those showing what the question asks about) first, the rest at random: the ceiling of a token "
               "selection at each budget."),
    "attention_only": ("ablation: score from attention layers only, stages at attention layers (on a hybrid with "
                       "few of them, as many stages as there are attention layers from the first stage layer)."),
    "mamba_decay": "ablation: the paper's schedule, Mamba score with the position-dependent decay "
                   "exp(A·Σ Δ_r) included.",
    "mamba_signed": "ablation: the paper's schedule, Mamba score with the signed C_t·B_s (no magnitude).",
    "mamba_head_max": "ablation: the paper's schedule, Mamba score with the maximum over heads instead of the mean.",
    "mamba_x_norm": "ablation: the paper's schedule, Mamba score times ‖x_s‖ per head (STUDY.md's option).",
    "mamba_clip": ("ablation: the paper's schedule, Mamba layers rank by the clip score of token reduction for state "
                   "space models (Zhan et al., EMNLP 2024): Σ_d max(0, y_s,d) of the mixer's output, query-blind; "
                   "attention layers as in the paper's method."),
    "zero_out": ("ablation: the paper's method with the dropped tokens zeroed in place (at every later layer's "
                 "input) instead of removed: same length, positions and recurrence steps, no compute saved. Against "
                 "hybrid_progressive it separates what removal does to the Mamba state from what the tokens carry."),
    "early_aggressive": ("ablation: one stage at the first stage layer keeping the budget's share (FastV-like, "
                         "aggressive early), unified query-conditioned score."),
    "uniform_ratio": "ablation: the paper's stages with an equal keep ratio per stage.",
    "high_to_low": "ablation: pruning shrinks with depth (the reverse of the paper's schedule).",
}

SCORES = [
    ("attention layer",
     ("I(s) = mean over heads and query tokens t ∈ Q of softmax(q_t·k/√d)[s], computed for the query rows only")),
    ("Mamba-2 layer (decay-free, the paper's)",
     ("I(s) = mean over heads and t ∈ Q of |C_t·B_s|·Δ_s, recomputed from the layer's own in_proj, conv, dt_bias "
      "and A_log")),
    ("Mamba-2 layer (decay-included ablation)", "|C_t·B_s|·Δ_s·exp(A·Σ_{r=s+1..t} Δ_r)"),
    ("Mamba-2 layer (signed ablation)", "mean over heads and t ∈ Q of (C_t·B_s)·Δ_s, shifted by its minimum"),
    ("Mamba-2 layer (head-max ablation)", "max over heads of mean over t ∈ Q of |C_t·B_s|·Δ_s"),
    ("Mamba-2 layer (x-norm ablation)", "mean over heads and t ∈ Q of |C_t·B_s|·Δ_s·‖x_s‖ (per head)"),
    ("MLP-only layer", "no score; a stage placed there uses the next scoring layer"),
    ("all", ("normalised to sum 1 over the vision tokens, so attention and Mamba scores are comparable; text tokens "
             "are never dropped and kept tokens keep their positions")),
]

TERMS = [
    ("budget", ("mean over all decoder layers of the fraction of the vision tokens entering the LLM that the layer "
                "processes (compute ∝ budget); schedules are solved to realise it within one token per layer, "
                "with every layer processing at least reduction.min_layer_share × budget of the tokens (5% at "
                "budget 0.25); a budget a schedule cannot reach that way is recorded in failures as "
                "infeasible_schedule. Progressive schedules use the steepest low-to-high shape that keeps that "
                "floor")),
    ("95% CI", ("percentile bootstrap over samples (2000 resamples, fixed seed); differences between two settings "
                "are paired over the samples both answered (table accuracy: vs_full, vs_ours)")),
    ("evidence tokens", ("the vision tokens that show the events the question asks about, known from the "
                         "synthetic generator (each event fills one cell of the token grid in each frame it is "
                         "visible in); evidence kept = those still present after the last stage")),
    ("overall budget", "pre-LLM kept fraction × realised in-LLM budget (fraction of the full video's tokens)"),
    ("accuracy", ("mean of lmms-eval's per-sample score (metric accuracy, table sample_scores) over the scored "
                  "documents of the setting")),
    ("prefill speedup", ("prefill time without in-LLM reduction ÷ with it, on the same prompt in the same job "
                         "(warm-up, then the median of repeats); the median over samples is reported")),
    ("FLOPs limit", "analytic prefill FLOPs without in-LLM reduction ÷ with it (flops_none ÷ flops)"),
    ("total time", "vision encoding + pre-LLM mask + prefill to the first answer token"),
]
