"""The six claims of STUDY.md §7 as checks. Each claim has one query (the numbers behind its verdict, printed
beside it), an optional figure drawn from the same rows, and a verdict computed from those rows by the rule
stated in ``rule``: ``confirmed``, ``not confirmed`` or ``not measured in this study``. Nothing is hand-written.

Thresholds are module constants, so the rule text and the computation cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .figures import FIGURES, Figure

CONFIRMED, NOT_CONFIRMED, NOT_MEASURED = "confirmed", "not confirmed", "not measured in this study"
SPARSE_MASS90 = 0.5  # claim 1: 90% of the importance on under half of the tokens
UNSTABLE_RHO = 0.5  # claim 1: mean Spearman ρ between different scoring layers below this
NEAR = 0.05  # claims 2, 5, 6: "near" = within 5 accuracy points (accuracy is a fraction)
SPEEDUP_MIN = 1.5  # claim 5: "large" prefill speedup
CLAIM5_BUDGET = 0.25
COMPETITORS = ("fastv", "pdrop", "random")

Verdict = tuple[str, str]  # (verdict, finding)


@dataclass(frozen=True)
class Claim:
    id: int
    text: str  # STUDY.md §7
    rule: str
    sql: str
    judge: Callable[[list[dict]], Verdict]
    figure: Figure | None = None  # drawn from this claim's rows
    evidence: tuple[str, ...] = ()  # keys of shared figures (figures.FIGURES) shown in the claim's section


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _num(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def _group(rows: list[dict], key: str) -> dict:
    out: dict = {}
    for r in rows:
        out.setdefault(r[key], []).append(r)
    return out


def _overall(results: list[bool]) -> str:
    """Not measured when no model had the rows the rule needs; else confirmed only if it held for each."""
    if not results:
        return NOT_MEASURED
    return CONFIRMED if all(results) else NOT_CONFIRMED


# --- claim 1 -----------------------------------------------------------------------------------------------
def judge_sparse_unstable(rows: list[dict]) -> Verdict:
    hybrids = [r for r in rows if r["hybrid"] and r["mean_cross_layer_spearman"] is not None]
    finding = "; ".join(f"{r['model']}: mean mass90 {_num(r['mean_mass90'])}, mean cross-layer ρ "
                        f"{_num(r['mean_cross_layer_spearman'])}" for r in rows) or "no probing rows"
    ok = [r["mean_mass90"] < SPARSE_MASS90 and r["mean_cross_layer_spearman"] < UNSTABLE_RHO for r in hybrids]
    return _overall(ok), finding


# --- claim 3 -----------------------------------------------------------------------------------------------
def judge_retention(rows: list[dict]) -> Verdict:
    results, parts = [], []
    for target, trows in _group(rows, "target").items():
        hyb = [r["mean_retention"] for r in trows if r["hybrid"]]
        trf = [r["mean_retention"] for r in trows if not r["hybrid"]]
        if hyb and trf:
            results.append(min(hyb) > max(trf))
        parts += [f"{r['model']} {target}: {r['mean_retention']:.2f}" for r in trows]
    return _overall(results), "mean retention after the first scoring layer: " + ("; ".join(parts) or "none")


# --- claims 2, 4 and 5: in-LLM methods against full tokens and against hybrid_progressive, with paired CIs ------
# vs_full = accuracy - the model's full-token accuracy; vs_ours = accuracy - hybrid_progressive's at the same
# budget; both with 95% paired-bootstrap CIs over the samples both answered (table `accuracy`).
def _near(r: dict) -> bool:
    """Near full tokens: the CI of the loss against full tokens stays within NEAR."""
    return r["vs_full_low"] is not None and r["vs_full_low"] >= -NEAR


def _significantly_below_full(r: dict) -> bool:
    return r["vs_full_high"] is not None and r["vs_full_high"] < 0


def _ours_better(rival: dict) -> bool:
    """hybrid_progressive more accurate than ``rival``: the CI of (rival - ours) lies below 0."""
    return rival["vs_ours_high"] is not None and rival["vs_ours_high"] < 0


def _ours_not_worse(rival: dict) -> bool:
    """hybrid_progressive not less accurate than ``rival``: the CI of (rival - ours) does not lie above 0."""
    return rival["vs_ours_low"] is not None and rival["vs_ours_low"] <= 0


def _ci(r: dict, key: str = "vs_full") -> str:
    lo, hi = r.get(f"{key}_low"), r.get(f"{key}_high")
    if r.get(key) is None:
        return "n/a"
    return f"{100 * r[key]:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}] points"


def _survival(r: dict) -> str:
    return "n/a" if r.get("evidence_survival") is None else f"{100 * r['evidence_survival']:.0f}%"


def _by_model_budget(rows: list[dict]) -> dict:
    """model -> method -> budget -> row."""
    out: dict = {}
    for r in rows:
        out.setdefault(r["panel"], {}).setdefault(r["series"], {})[r["x"]] = r
    return out


def _evidence_at_least(ours: dict, rival: dict) -> bool:
    if ours.get("evidence_survival") is None or rival.get("evidence_survival") is None:
        return True  # no ground truth (real benchmarks): accuracy alone decides, and the finding says so
    return ours["evidence_survival"] >= rival["evidence_survival"]


def judge_early_vs_progressive(rows: list[dict]) -> Verdict:
    results, parts, missing = [], [], []
    early = next((r["series"] for r in rows if r["series"] not in ("hybrid_progressive", "none")), None)
    for model, by in _by_model_budget(rows).items():
        e, p = by.get(early, {}), by.get("hybrid_progressive", {})
        common = sorted(b for b in set(e) & set(p) if b < 1 and e[b]["y"] is not None and p[b]["y"] is not None)
        if not common:
            missing.append(model)
            continue
        low = common[0]
        hurts, robust = _significantly_below_full(e[low]), _near(p[low])
        results.append(hurts and robust and all(_ours_not_worse(e[b]) and _evidence_at_least(p[b], e[b])
                                                for b in common))
        parts.append(f"{model}: " + "; ".join(
            f"budget {b:g}: {early} {_pct(e[b]['y'])} ({_ci(e[b])} vs full, evidence kept {_survival(e[b])}) vs "
            f"hybrid_progressive {_pct(p[b]['y'])} ({_ci(p[b])} vs full, evidence kept {_survival(p[b])})"
            for b in common))
    why = ("early_aggressive (one stage at the first stage layer keeping the budget's share, unified score)"
           if early == "early_aggressive" else
           f"{early} (early_aggressive is not in this study; FastV is the single early stage, with last-token "
           "score, so the comparison also changes the score)" if early else "none in this study")
    finding = f"early method: {why}. " + ("; ".join(parts) or "no hybrid model has both methods at a budget < 1")
    if missing and parts:
        finding += f"; not measured for {', '.join(missing)}"
    return _overall(results), finding


def judge_decay_free(rows: list[dict]) -> Verdict:
    results, parts = [], []
    for model, by in _by_model_budget(rows).items():
        free, decay = by.get("hybrid_progressive", {}), by.get("mamba_decay", {})
        common = sorted(b for b in set(free) & set(decay)
                        if b < 1 and free[b]["y"] is not None and decay[b]["y"] is not None)
        if not common:
            continue
        better_somewhere = any(_ours_better(decay[b]) for b in common)
        never_worse = all(_ours_not_worse(decay[b]) for b in common)
        evidence = all(_evidence_at_least(free[b], decay[b]) for b in common)
        results.append(better_somewhere and never_worse and evidence)
        parts.append(f"{model}: " + "; ".join(
            f"budget {b:g}: decay-free {_pct(free[b]['y'])} vs decay {_pct(decay[b]['y'])} (decay minus decay-free "
            f"{_ci(decay[b], 'vs_ours')}); evidence kept {_survival(free[b])} vs {_survival(decay[b])}"
            for b in common))
    return _overall(results), "; ".join(parts) or "no hybrid model has both scores at a budget < 1"


# --- claim 5 -----------------------------------------------------------------------------------------------
def judge_quarter_budget(rows: list[dict]) -> Verdict:
    results, parts = [], []
    for model, mrows in _group(rows, "panel").items():
        by = {r["series"]: r for r in mrows}
        ours, full = by.get("hybrid_progressive"), by.get("none")
        rivals = {m: by[m] for m in COMPETITORS if m in by and by[m]["y"] is not None}
        if not ours or not full or ours["y"] is None or full["y"] is None or ours["x"] is None or not rivals:
            continue
        large, near = ours["x"] >= SPEEDUP_MIN, _near(ours)
        better = all(_ours_better(r) for r in rivals.values())
        results.append(large and near and better)
        parts.append(f"{model}: prefill speedup {ours['x']:.2f}× (FLOPs limit {ours['flops_limit']:.2f}×), accuracy "
                     f"{_pct(ours['y'])} vs {_pct(full['y'])} at full tokens ({_ci(ours)}); "
                     + ", ".join(f"{m} {_pct(r['y'])} ({m} minus ours {_ci(r, 'vs_ours')})" for m, r in rivals.items()))
    return _overall(results), "; ".join(parts) or (
        f"no hybrid model has hybrid_progressive, no reduction and a competitor at budget {CLAIM5_BUDGET:g}")


# --- claim 6 -----------------------------------------------------------------------------------------------
STACKED = "EVS"  # the pre-LLM method claim 6 is about; other pre-LLM methods (e.g. the pool control) are shown


def judge_stacking(rows: list[dict]) -> Verdict:
    results, parts = [], []
    for panel, prows in _group(rows, "panel").items():
        by = {r["series"]: r for r in prows}
        need = ("pre-LLM alone", "in-LLM alone", "pre-LLM + in-LLM")
        if any(k not in by or by[k]["x"] is None or by[k]["y"] is None for k in need):
            continue
        pre, llm, both = (by[k] for k in need)
        faster = both["x"] < min(pre["x"], llm["x"])
        holds = both["y"] >= min(pre["y"], llm["y"]) - NEAR
        if prows[0]["pre_llm"] == STACKED.lower():
            results.append(faster and holds)
        kind = "" if prows[0]["pre_llm"] == STACKED.lower() else " (control, not judged)"
        parts.append(f"{panel}{kind}: total {both['x']:.1f} ms vs pre-LLM alone {pre['x']:.1f} / in-LLM alone "
                     f"{llm['x']:.1f}; accuracy {_pct(both['y'])} vs {_pct(pre['y'])} / {_pct(llm['y'])}")
    return _overall(results), "; ".join(parts) or "no hybrid model has EVS, hybrid_progressive and both together"


CI_COLUMNS = """round(ci_low, 4) AS ci_low, round(ci_high, 4) AS ci_high, round(vs_full, 4) AS vs_full,
       round(vs_full_low, 4) AS vs_full_low, round(vs_full_high, 4) AS vs_full_high, round(vs_ours, 4) AS vs_ours,
       round(vs_ours_low, 4) AS vs_ours_low, round(vs_ours_high, 4) AS vs_ours_high,
       round(evidence_survival, 4) AS evidence_survival, round(chance, 4) AS chance"""
CLAIM2_SQL = f"""
SELECT model AS panel, method AS series, budget AS x, round(accuracy, 4) AS y, round(realised_budget, 4) AS realised,
       samples, {CI_COLUMNS}
FROM settings
WHERE hybrid AND pre_method = 'none' AND method IN ('none', 'hybrid_progressive', (
    -- the early-pruning method: the early_aggressive ablation, else FastV (a single early stage)
    SELECT CASE WHEN bool_or(method = 'early_aggressive') THEN 'early_aggressive' ELSE 'fastv' END FROM settings))
ORDER BY model, method, budget DESC"""
CLAIM4_SQL = f"""
SELECT model AS panel, method AS series, budget AS x, round(accuracy, 4) AS y, round(realised_budget, 4) AS realised,
       samples, {CI_COLUMNS}
FROM settings
WHERE hybrid AND pre_method = 'none' AND method IN ('none', 'hybrid_progressive', 'mamba_decay')
ORDER BY model, method, budget DESC"""
CLAIM5_SQL = f"""
SELECT model AS panel, method AS series, budget, round(speedup, 3) AS x, round(accuracy, 4) AS y,
       round(flops_limit, 3) AS flops_limit, round(prefill_s * 1000, 2) AS prefill_ms, samples, {CI_COLUMNS}
FROM settings
WHERE hybrid AND pre_method = 'none' AND (method = 'none' OR budget = {CLAIM5_BUDGET})
  AND method IN ('none', 'hybrid_progressive', {", ".join(f"'{m}'" for m in COMPETITORS)})
ORDER BY model, method"""
CLAIM6_SQL = """
WITH levels AS (SELECT DISTINCT model, budget FROM settings WHERE method = 'hybrid_progressive' AND budget < 1),
     pre AS (SELECT DISTINCT model, pre_method FROM settings WHERE pre_method <> 'none')
SELECT s.model || ' · ' || p.pre_method || ' · in-LLM budget ' || l.budget AS panel,
       CASE WHEN s.pre_method = 'none' AND s.method = 'none' THEN 'no reduction'
            WHEN s.method = 'none' THEN 'pre-LLM alone'
            WHEN s.pre_method = 'none' THEN 'in-LLM alone' ELSE 'pre-LLM + in-LLM' END AS series,
       round(s.total_s * 1000, 2) AS x, round(s.accuracy, 4) AS y, p.pre_method AS pre_llm, s.pre_method, s.method,
       s.budget, round(s.prefill_s * 1000, 2) AS prefill_ms, round(s.overall_budget, 4) AS overall_budget, s.samples
FROM settings s JOIN levels l ON l.model = s.model AND (s.budget = l.budget OR s.method = 'none')
     JOIN pre p ON p.model = s.model AND s.pre_method IN ('none', p.pre_method)
WHERE s.hybrid AND s.method IN ('none', 'hybrid_progressive')
ORDER BY l.model, p.pre_method, l.budget DESC, s.pre_method, s.method"""

CLAIMS = [
    Claim(1, "Importance is sparse within layers but unstable across layers.",
          f"sparse: 90% of a layer's importance sits on under {SPARSE_MASS90:.0%} of the vision tokens (mean mass90 "
          f"over scoring layers < {SPARSE_MASS90}); unstable: mean Spearman ρ between different scoring layers < "
          f"{UNSTABLE_RHO}. Confirmed when both hold for every hybrid model (decay-free score).",
          """
WITH kind AS (SELECT model, bool_or(layer_type = 'mamba') AS hybrid FROM layer_sparsity GROUP BY model),
     mass AS (SELECT model, avg(mean) AS mass90, count(*) AS scoring_layers, min(n_samples) AS samples
              FROM layer_sparsity
              WHERE score = 'decay_free' AND metric = 'mass90' GROUP BY model),
     rho AS (SELECT model, avg(spearman) AS rho, avg(jaccard) AS jaccard, count(*) AS layer_pairs
             FROM layer_stability WHERE layer_a <> layer_b GROUP BY model)
SELECT model, hybrid, round(mass90, 4) AS mean_mass90, scoring_layers, round(rho, 4) AS mean_cross_layer_spearman,
       round(jaccard, 4) AS mean_cross_layer_jaccard, layer_pairs, samples
FROM kind JOIN mass USING (model) LEFT JOIN rho USING (model) ORDER BY model""",
          judge_sparse_unstable, evidence=("sparsity", "stability")),
    Claim(2, "Aggressive early pruning hurts; progressive low-to-high is robust on the hybrid.",
          f"on every hybrid model (no pre-LLM reduction), at the lowest budget < 1 run with both methods, the early "
          "method is significantly less accurate than full tokens (hurts: the 95% paired-bootstrap CI of its "
          f"difference lies below 0) while hybrid_progressive is near full tokens (robust: that CI stays above "
          f"-{NEAR * 100:.0f} points), and at every budget both ran hybrid_progressive is not significantly less "
          "accurate than the early method (the CI of early minus progressive does not lie above 0) and keeps at least "
          "as many of the ground-truth evidence tokens (mean survival; where the benchmark has ground truth). "
          "Early method: early_aggressive if the study ran it, else fastv.",
          CLAIM2_SQL, judge_early_vs_progressive,
          Figure("claim2", "Claim 2: early vs progressive pruning on the hybrid", "Claims", "Accuracy against the "
                 "budget asked for, early-pruning method vs hybrid_progressive, hybrid models, no pre-LLM reduction.",
                 CLAIM2_SQL, xlabel="budget", ylabel="accuracy")),
    Claim(3, "Discarded-token information persists more in the hybrid than in the Transformer.",
          "mean retention over the scoring layers after the first (where removal differs from removal at the input) "
          "is higher for every hybrid model than for every Transformer, for each probe target measured on both.",
          """
WITH first AS (SELECT model, min(layer) AS first_layer, bool_or(layer_type = 'mamba') AS hybrid
               FROM probe_retention GROUP BY model)
SELECT r.model, f.hybrid, r.target, round(avg(r.mean), 4) AS mean_retention, count(r.mean) AS layers,
       (SELECT min(n_samples) FROM layer_sparsity s WHERE s.model = r.model) AS samples  -- the same probe set
FROM probe_retention r JOIN first f USING (model)
WHERE r.layer > f.first_layer AND r.mean IS NOT NULL GROUP BY ALL ORDER BY r.target, r.model""",
          judge_retention, evidence=("retention", "zero_out")),
    Claim(4, "The decay-free Mamba score selects better than the decay-included one (accuracy at equal budget).",
          "on every hybrid model (no pre-LLM reduction), at the budgets < 1 both ran: hybrid_progressive (decay-free) "
          "is significantly more accurate than mamba_decay (same schedule, decay-included Mamba score) at one budget "
          "at least (the 95% paired-bootstrap CI of decay minus decay-free lies below 0), never significantly less "
          "accurate, and keeps at least as many ground-truth evidence tokens at every budget (mean survival).",
          CLAIM4_SQL, judge_decay_free,
          Figure("claim4", "Claim 4: decay-free vs decay-included Mamba score", "Claims", "Accuracy against the "
                 "budget asked for, hybrid_progressive (decay-free) vs mamba_decay, hybrid models.",
                 CLAIM4_SQL, xlabel="budget", ylabel="accuracy"),
          evidence=("evidence",)),
    Claim(5, f"At {CLAIM5_BUDGET:.0%} budget: large prefill speedup, near-baseline accuracy; better than "
             "FastV/PDrop/random on the hybrid.",
          f"on every hybrid model (no pre-LLM reduction) at budget {CLAIM5_BUDGET:g}: hybrid_progressive's median "
          f"prefill speedup ≥ {SPEEDUP_MIN} (large), the 95% paired-bootstrap CI of its accuracy minus full tokens' "
          f"stays above -{NEAR * 100:.0f} points (near-baseline), and it is significantly more accurate than each of "
          f"{', '.join(COMPETITORS)} that ran at that budget (the CI of the rival minus hybrid_progressive lies "
          "below 0).",
          CLAIM5_SQL, judge_quarter_budget,
          Figure("claim5", f"Claim 5: accuracy vs prefill speedup at budget {CLAIM5_BUDGET:g}", "Claims",
                 f"Accuracy against median prefill speedup at budget {CLAIM5_BUDGET:g} per in-LLM method (none = "
                 "full tokens, speedup ≈ 1), hybrid models, no pre-LLM reduction. Up and right is better.",
                 CLAIM5_SQL, kind="scatter", xlabel="prefill speedup", ylabel="accuracy")),
    Claim(6, "Combined with EVS, in-LLM reduction stacks (accuracy/latency of EVS + in-LLM vs either alone).",
          f"on every hybrid model and every in-LLM budget < 1: EVS + hybrid_progressive has a lower median total "
          f"time (vision encoding + EVS + prefill) than EVS alone and than hybrid_progressive alone, and its "
          f"accuracy is at most {NEAR * 100:.0f} points below the less accurate of the two. Other pre-LLM methods "
          "the study ran (a merging peer such as fastvid; the pool control) are shown beside EVS, each alone and "
          "stacked, not judged.",
          CLAIM6_SQL, judge_stacking,
          Figure("claim6", "Claim 6: EVS + in-LLM reduction vs either alone", "Claims", "Accuracy against median "
                 "total time per sample (vision encoding + pre-LLM mask + prefill) for no reduction, the pre-LLM "
                 "method alone (EVS; a merging peer, fastvid; the pool control), hybrid_progressive alone and both, per hybrid model, pre-LLM "
                 "method and in-LLM budget. Up and left is better.",
                 CLAIM6_SQL, kind="scatter", xlabel="total time (ms)", ylabel="accuracy")),
]

# Every figure written as reports/<study>/figures/<key>.svg (and declared in workflow/rules/report.smk).
ALL_FIGURES = [*FIGURES, *(c.figure for c in CLAIMS if c.figure)]
