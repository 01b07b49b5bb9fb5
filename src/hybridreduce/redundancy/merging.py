"""The merging peers: three published pre-LLM video-token reduction methods that combine or prune tokens across
frames, as the study's comparison points for EVS. ``dycoke_ttm`` is DyCoke's temporal token merging (Tao et al., CVPR
2025), ``fastvid`` FastVID's dynamic segmentation and density spatiotemporal pruning (Shen et al., 2025) and
``prunevid`` PruneVid's spatio-temporal token merging (Huang et al., ACL Findings 2025). Their semantics follow the
papers and the authors' code (KD-TAO/DyCoke, LunarShen/FastVID and Visual-AI/PruneVid, and their ports in the
LightCompress/llmc toolkit), with two changes for this study: the kept count is derived from the pruning rate ``q``
so that each method keeps EVS's count where its algorithm allows, and ties are broken by index instead of by the
authors' random noise, so that every method is deterministic. The methods see only the ``(T, h, w, d)`` token grid:
the encoder signals the authors read (FastVID's [CLS]/pooling-head attention) are replaced by functions of the tokens,
as each docstring states. Their stages inside the LLM (DyCoke's decoding-time KV-cache pruning, PruneVid's
question-guided attention) are out of scope here.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .grid import TokenGrid
from .methods import evs_retained_count, register

# ---------------------------------------------------------------------------------------------------------------
# option checks


def _check_int(method: str, name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"redundancy.{method}.{name}: {value!r} is not an integer >= {low}")
    return value


def _check_float(method: str, name: str, value: object, low: float, high: float, low_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ConfigError(f"redundancy.{method}.{name}: {value!r} is not a number in {bracket}{low}, {high}]")
    return float(value)


# ---------------------------------------------------------------------------------------------------------------
# shared helpers


def _even_split(total: int, parts: int) -> list[int]:
    """``total`` split into ``parts`` near-equal whole shares, the earlier parts taking the remainder."""
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _runs(labels: list[int]) -> list[tuple[int, int, int]]:
    """Maximal runs of equal labels as ``(label, start, stop)``."""
    runs, start = [], 0
    for i in range(1, len(labels) + 1):
        if i == len(labels) or labels[i] != labels[start]:
            runs.append((labels[start], start, i))
            start = i
    return runs


def _pairwise_distance(x: torch.Tensor) -> torch.Tensor:
    """``(B, N, d)`` -> ``(B, N, N)`` Euclidean distances over ``sqrt(d)``, as the DPC-kNN of both FastVID's and
    PruneVid's code scales them. Computed directly (not through the matmul expansion), so that equal tokens are at
    distance exactly 0."""
    return torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") / math.sqrt(x.shape[-1])


def _dpc_scores(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-kNN (density peaks clustering with k nearest neighbours, Du et al. 2016) as the authors' code of FastVID
    and PruneVid computes it, batched: ``x`` ``(B, N, d)`` -> the ``(B, N)`` centre scores ``delta * rho`` and the
    ``(B, N, N)`` distances.

    - ``rho_i = exp(-mean of the squared distances to the k nearest tokens)`` (the token itself among them, at 0;
      ``k`` is clamped to ``N``);
    - ``delta_i``: the distance to the nearest denser token, the largest distance of the matrix for the densest one.

    The authors add noise of 1e-6 to ``rho`` to make densities distinct; here equal densities are ordered by index
    instead (the earlier token counts as the denser), so the result is deterministic."""
    n = x.shape[1]
    dist = _pairwise_distance(x)
    nearest = dist.topk(min(k, n), dim=-1, largest=False).values
    density = torch.exp(-(nearest**2).mean(dim=-1))  # (B, N)
    idx = torch.arange(n, device=x.device)
    denser = density[:, None, :] > density[:, :, None]  # denser[b, i, j]: token j is denser than token i
    denser |= (density[:, None, :] == density[:, :, None]) & (idx[None, :] < idx[:, None])[None]
    dist_max = dist.flatten(1).max(dim=-1).values[:, None, None]
    delta = torch.where(denser, dist, dist_max).min(dim=-1).values
    return delta * density, dist


def _dpc_knn_cluster(x: torch.Tensor, num_clusters: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DPC-kNN clustering of ``x`` ``(N, d)`` into ``num_clusters`` (1..N) clusters: the centres are the tokens of
    highest score (ties: the earlier index), every other token joins its nearest centre (ties: the centre of higher
    score), each centre its own cluster. Returns the ``(c,)`` centre indices, by descending score, and the ``(N,)``
    cluster index of every token."""
    score, dist = _dpc_scores(x[None], k)
    centres = torch.argsort(score[0], descending=True, stable=True)[:num_clusters]
    assign = dist[0][centres].argmin(dim=0)  # argmin gives the first minimum: the higher-scoring centre
    assign[centres] = torch.arange(len(centres), device=x.device)
    return centres, assign


def _cluster_sums(x: torch.Tensor, assign: torch.Tensor, num_clusters: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c, d)`` sums and ``(c, 1)`` sizes of the clusters ``assign`` ``(N,)`` of the tokens ``x`` ``(N, d)``. A
    one-hot product rather than ``index_add_``, which is far slower on the CPU for these small float64 groups."""
    one_hot = F.one_hot(assign, num_clusters).to(x.dtype)  # (N, c)
    return one_hot.T @ x, one_hot.sum(dim=0)[:, None]


def _cluster_means(x: torch.Tensor, assign: torch.Tensor, num_clusters: int) -> torch.Tensor:
    """``(c, d)`` mean of the tokens of ``x`` ``(N, d)`` in each cluster (every cluster holds its centre)."""
    sums, counts = _cluster_sums(x, assign, num_clusters)
    return sums / counts


def _rank(score: torch.Tensor, descending: bool) -> torch.Tensor:
    """Rank of every entry of ``score`` ``(B, N)`` along its row (0: first), ties to the earlier index."""
    order = torch.argsort(score, dim=-1, descending=descending, stable=True)
    ranks = torch.empty_like(order)
    ranks.scatter_(-1, order, torch.arange(score.shape[-1], device=score.device).expand_as(order).contiguous())
    return ranks


# ---------------------------------------------------------------------------------------------------------------
# DyCoke


def _dycoke_reference(t: int) -> list[int]:
    """The frame each frame is compared with in DyCoke's TTM (-1: a reference frame). Frames come in groups of 4,
    ``(a, a+1, a+2, a+3)``; as the authors' code pairs them, ``a+1`` is compared with ``a`` and ``a+3`` with ``a+2``
    (the odd frames against the even ones), then ``a+2`` with ``a``, so only ``a`` is a reference frame."""
    offsets = {0: -1, 1: 1, 2: 2, 3: 1}
    return [-1 if f % 4 == 0 else f - offsets[f % 4] for f in range(t)]


@register("dycoke_ttm")
def dycoke_ttm(grid: TokenGrid, q: float, seed: int = 0) -> torch.Tensor:
    """DyCoke's temporal token merging (Tao et al., CVPR 2025: "DyCoke: Dynamic Compression of Tokens for Fast Video
    Large Language Models"), the stage before the LLM; its dynamic KV-cache pruning during decoding is out of scope.

    Frames come in groups of 4 with the first as the reference; each non-reference frame's token at ``(i, j)`` is
    compared by cosine similarity with the token at ``(i, j)`` of the frame it is paired with (frame 1 with 0 and 3
    with 2, then 2 with 0, as the authors' code does: :func:`_dycoke_reference`), and the non-reference frames keep
    only their least similar tokens: "merging" in the paper, but the authors' code drops the similar tokens without
    averaging them into anything, so this is a plain keep mask (the kept tokens keep their values and positions).

    Pruning rate: the paper prunes the same fraction ``m`` of every non-reference frame. Here ``m`` is chosen so the
    video keeps EVS's count ``K = evs_retained_count(T, h, w, q)``: with ``G = ceil(T / 4)`` reference frames of
    ``n = h * w`` tokens kept whole, ``m = 1 - (K - G n) / ((T - G) n)``, clamped to ``[0, 1]`` (``4q / 3`` when
    ``T`` is a multiple of 4). The ``K - G n`` tokens are split over the non-reference frames as evenly as whole
    numbers allow (the earlier frames take the remainder), so the count is exactly ``K`` while ``m <= 1``, i.e. up
    to ``q ≈ 3/4``; above it only the reference frames are kept, more than EVS keeps. A last group of fewer than 4
    frames is paired as a full group's first frames are (``a+1`` with ``a``, ``a+2`` with ``a``); the authors'
    code instead leaves a last group's third frame unpruned when ``T`` is a multiple of 4, and drops a trailing odd
    frame. Ties in similarity: the lower spatial index is kept. Deterministic; ``seed`` is unused."""
    t, h, w = grid.shape
    n = h * w
    e = grid.embeddings.reshape(t, n, -1).double()
    reference = torch.tensor(_dycoke_reference(t), device=e.device)
    others = torch.nonzero(reference >= 0).view(-1)  # (T - G,) the non-reference frames, in time order
    keep = torch.zeros(t, n, dtype=torch.bool, device=e.device)
    keep[reference < 0] = True
    if len(others):
        budget = min(max(evs_retained_count(t, h, w, q) - (t - len(others)) * n, 0), len(others) * n)
        shares = torch.tensor(_even_split(budget, len(others)), device=e.device)
        similarity = F.cosine_similarity(e[others], e[reference[others]], dim=-1)  # (T - G, n)
        keep[others] = _rank(similarity, descending=False) < shares[:, None]  # the least similar are kept
    return keep.view(t, h, w).cpu()


# ---------------------------------------------------------------------------------------------------------------
# FastVID


def _dyseg(frame_features: torch.Tensor, c: int, tau: float) -> list[tuple[int, int]]:
    """FastVID's dynamic temporal segmentation: the cosine similarity of adjacent frames' global features
    ``(T, d)``; the video is cut after frame ``i`` at the ``c - 1`` lowest similarities (ties: the earlier) and
    wherever the similarity is below ``tau``. Returns the segments as ``(start, length)``."""
    t = len(frame_features)
    similarity = F.cosine_similarity(frame_features[:-1], frame_features[1:], dim=-1)  # (T - 1,)
    cuts = set(torch.argsort(similarity, stable=True)[: min(c - 1, t - 1)].tolist())
    cuts |= set(torch.nonzero(similarity < tau).view(-1).tolist())
    bounds = [-1, *sorted(cuts), t - 1]
    return [(a + 1, b - a) for a, b in pairwise(bounds)]


def _anchor_plan(length: int, p: int, budget: int, capacity: list[int]) -> tuple[list[int], list[int]]:
    """FastVID's anchor frames of a segment and each one's number of anchor tokens. The anchor frames are every
    ``p``-th frame counted back from the segment's last (the authors' ``(L - 1 - i) % p == 0``); the segment's
    contextual budget is split evenly over them (earlier anchor frames take the remainder), none above its
    ``capacity`` (its non-salient tokens), the excess going to the anchor frames with room, in order. Where the
    anchor frames cannot hold the budget (retention above about ``1 / (1 + d (p - 1))``: 45% at FastVID's defaults;
    the authors' code fails there), ``p`` is lowered to the largest step whose anchor frames can (``p = 1``:
    every frame is an anchor frame, which always can). Returns segment-relative frame indices and their counts."""
    for step in range(p, 0, -1):
        frames = sorted(length - 1 - i for i in range(0, length, step))
        if sum(capacity[f] for f in frames) >= budget:
            break
    shares = [min(s, capacity[f]) for s, f in zip(_even_split(budget, len(frames)), frames)]
    excess = budget - sum(shares)
    for i, f in enumerate(frames):
        more = min(excess, capacity[f] - shares[i])
        shares[i] += more
        excess -= more
    return frames, shares


def _salient_mask(x: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """FastVID's attention token selection, with a substitute for its signal: the authors keep each frame's tokens
    of highest attention from the vision tower's [CLS] / attention-pooling query; a grid has no encoder attention,
    so each token's salience is its cosine similarity to its frame's mean token (the frame's global feature here,
    which an attention-pooling query resembles). ``x`` ``(T, n, d)``, ``counts`` ``(T,)`` -> ``(T, n)`` bool."""
    salience = F.cosine_similarity(x, x.mean(dim=1, keepdim=True), dim=-1)  # (T, n)
    return _rank(salience, descending=True) < counts[:, None]


def _density_scores(x: torch.Tensor, salient: torch.Tensor, k: int) -> torch.Tensor:
    """DPC-kNN centre score of every non-salient token among its own frame's non-salient tokens, as FastVID's code
    computes it (per frame, after the salient tokens are taken out); salient tokens score -inf. ``(T, n)``."""
    scores = torch.full(salient.shape, -torch.inf, dtype=x.dtype, device=x.device)
    remaining = (~salient).sum(dim=1)
    for count in torch.unique(remaining).tolist():  # frames with as many non-salient tokens, batched
        if count == 0:
            continue
        frames = torch.nonzero(remaining == count).view(-1)
        positions = torch.nonzero(~salient[frames])[:, 1].view(len(frames), count)  # (B, count), ascending
        score, _ = _dpc_scores(torch.gather(x[frames], 1, positions[..., None].expand(-1, -1, x.shape[-1])), k)
        scores[frames[:, None], positions] = score
    return scores


@register("fastvid")
def fastvid(grid: TokenGrid, q: float, seed: int = 0, dyseg_c: int = 8, dyseg_tau: float = 0.9,
            stprune_d: float = 0.4, dtm_p: int = 4, dtm_beta: float = 0.6, density_k: int = 4
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """FastVID (Shen et al., 2025: "FastVID: Dynamic Density Pruning for Fast Video Large Language Models"), with the
    semantics of the authors' code (LunarShen/FastVID, as LightCompress ports it) and its defaults
    (``redundancy.fastvid``: ``dyseg_c`` 8, ``dyseg_tau`` 0.9, ``stprune_d`` 0.4, ``dtm_p`` 4, ``dtm_beta`` 0.6, the
    density's ``density_k`` 4 nearest neighbours):

    1. DySeg (:func:`_dyseg`) on frame-global features: the authors' SigLIP pooling-head output; here each frame's
       mean token.
    2. Budget: the video keeps EVS's count ``K = evs_retained_count(T, h, w, q)``, split evenly over the frames
       (the earlier frames take the remainder) into ``r_t`` per frame, of which ``c_t`` are contextual, ``c_t`` the
       same even split of ``int(K d)``, and the rest salient. The authors round per frame (``r = int(n (1 - q))``,
       ``c = int(r d)``), which on small frames falls short of ``K`` and leaves no contextual token at all (16
       tokens a frame at ``q = 0.9``: ``r = 1``, ``c = 0``); rounding over the video keeps both the count and the
       share ``d``.
    3. Salient tokens (ATS) per frame: :func:`_salient_mask` (similarity to the frame's mean token, standing in for
       the [CLS] attention the grid does not have). They keep their values.
    4. Density token merging (DTM) per segment over its non-salient tokens: the segment's contextual budget goes to
       its anchor frames (:func:`_anchor_plan`); in each anchor frame the non-salient tokens of highest DPC-kNN score
       (:func:`_density_scores`, within that frame) are anchors; every non-salient token of the segment joins the
       most cosine-similar anchor *of each anchor frame* (as the authors' code merges: per anchor frame, over the
       whole segment), and each anchor becomes ``a * anchor + (1 - a) * mean(its tokens)`` with
       ``a = max(1 / (count + 1), dtm_beta)``: a weighted mean of real tokens (the anchor is among its own tokens,
       so ``a = dtm_beta``; the authors' code weights this way, not by similarity).

    A merged token takes its anchor's position. The count is exactly ``K`` (every frame's salient tokens plus every
    segment's anchors). Ties (salience, density, similarity) go to the earlier index; deterministic, ``seed`` is
    unused. Returns the keep mask and the merged embeddings."""
    name = "fastvid"
    c = _check_int(name, "dyseg_c", dyseg_c, 1)
    tau = _check_float(name, "dyseg_tau", dyseg_tau, -1.0, 1.0)
    d = _check_float(name, "stprune_d", stprune_d, 0.0, 1.0)
    p = _check_int(name, "dtm_p", dtm_p, 1)
    beta = _check_float(name, "dtm_beta", dtm_beta, 0.0, 1.0)
    k = _check_int(name, "density_k", density_k, 1)
    t, h, w = grid.shape
    n = h * w
    x = grid.embeddings.reshape(t, n, -1).double()
    kept = evs_retained_count(t, h, w, q)
    retain = _even_split(kept, t)
    contextual = _even_split(int(kept * d), t)  # never above ``retain``: both split the same way, int(K d) <= K
    salient_counts = torch.tensor([r - cx for r, cx in zip(retain, contextual)], device=x.device)
    keep = _salient_mask(x, salient_counts)
    scores = _density_scores(x, keep, k)
    merged = x.clone()
    for start, length in _dyseg(x.mean(dim=1), c, tau):
        budget = sum(contextual[start:start + length])
        if budget == 0:
            continue
        capacity = [n - int(salient_counts[start + f]) for f in range(length)]
        pool = x[start:start + length][~keep[start:start + length]]  # (M, d) the segment's non-salient tokens
        pool_unit = F.normalize(pool, dim=-1)
        for frame, count in zip(*_anchor_plan(length, p, budget, capacity)):
            if count == 0:
                continue
            f = start + frame
            anchors = torch.argsort(scores[f], descending=True, stable=True)[:count]  # (count,) spatial indices
            assign = (pool_unit @ F.normalize(x[f, anchors], dim=-1).T).argmax(dim=1)  # (M,) first max on ties
            sums, members = _cluster_sums(pool, assign, count)
            weight = (1 / (members + 1)).clamp(min=beta)
            merged[f, anchors] = weight * x[f, anchors] + (1 - weight) * sums / members.clamp(min=1)
            keep[f, anchors] = True
    return keep.view(t, h, w).cpu(), merged.view(grid.embeddings.shape).to(grid.embeddings.dtype)


# ---------------------------------------------------------------------------------------------------------------
# PruneVid


def _contiguous_segments(labels: list[int]) -> list[tuple[int, int]]:
    """PruneVid's refinement of a frame clustering into contiguous segments, as the authors' code does it: each
    cluster keeps only its longest runs of frames (a cluster whose runs are all single frames keeps none); every
    gap left joins the neighbouring run that is longer (the left one on equal lengths, cluster 0 when there is
    neither), left to right. Returns the runs of the result as ``(start, length)``."""
    t = len(labels)
    longest: dict[int, int] = {}
    for label, a, b in _runs(labels):
        longest[label] = max(longest.get(label, 0), b - a)
    refined = list(labels)
    for label, a, b in _runs(labels):
        if longest[label] == 1 or b - a < longest[label]:
            refined[a:b] = [-1] * (b - a)
    i = 0
    while i < t:
        if refined[i] != -1:
            i += 1
            continue
        j = i
        while j < t and refined[j] == -1:
            j += 1
        left = 0
        while i - left - 1 >= 0 and refined[i - left - 1] == refined[i - 1]:
            left += 1
        right = 0
        while j + right < t and refined[j + right] == refined[j]:
            right += 1
        if left > right or (left == right and i > 0):
            new = refined[i - 1]
        else:
            new = refined[j] if j < t else 0
        refined[i:j] = [new] * (j - i)
        i = j
    return [(a, b - a) for _, a, b in _runs(refined)]


def _static_positions(frames: torch.Tensor, threshold: float) -> torch.Tensor:
    """PruneVid's static/dynamic split within a segment ``(L, n, d)``: a spatial position is static when the mean
    cosine similarity of its tokens over all pairs of distinct frames exceeds ``threshold``. A single-frame segment
    has no pairs (the authors' code divides by zero there): all its tokens are dynamic. ``(n,)`` bool."""
    length = len(frames)
    if length < 2:
        return torch.zeros(frames.shape[1], dtype=torch.bool, device=frames.device)
    unit = F.normalize(frames, dim=-1)
    total = unit.sum(dim=0)  # sum over pairs t != t' of <u_t, u_t'> = |sum u|^2 - sum |u|^2
    pair_sum = (total * total).sum(-1) - (unit * unit).sum(-1).sum(0)
    return pair_sum / (length * (length - 1)) > threshold


def _hamilton(total: int, sizes: list[int]) -> list[int]:
    """``total`` (at most ``sum(sizes)``) apportioned to groups in proportion to ``sizes`` by largest remainders
    (ties: the earlier group), in exact integer arithmetic; no group gets more than its size."""
    whole = sum(sizes)
    shares = [total * s // whole for s in sizes]
    remainders = sorted(range(len(sizes)), key=lambda g: (-(total * sizes[g] % whole), g))
    for g in remainders[: total - sum(shares)]:
        shares[g] += 1
    return shares


@register("prunevid")
def prunevid(grid: TokenGrid, q: float, seed: int = 0, temporal_segment_ratio: float = 0.25,
             threshold: float = 0.8, cluster_ratio: float | None = None, k: int = 7
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """PruneVid's token merging before the LLM (Huang et al., ACL Findings 2025: "PruneVid: Visual Token Pruning for
    Efficient Video Large Language Models"), with the semantics of the authors' code (Visual-AI/PruneVid, as
    LightCompress ports it) and its defaults (``redundancy.prunevid``: ``temporal_segment_ratio`` 0.25,
    ``threshold`` 0.8, ``k`` 7 neighbours). Its question-guided attention pruning inside the LLM is out of scope.

    1. Temporal segmentation: DPC-kNN clustering (:func:`_dpc_knn_cluster`) of the frames' mean tokens into
       ``max(1, int(T * temporal_segment_ratio))`` clusters, refined into contiguous segments
       (:func:`_contiguous_segments`).
    2. Per segment, the static positions (:func:`_static_positions`, mean pairwise cosine similarity above
       ``threshold``) are averaged over the segment's frames into one token each; the dynamic positions keep one
       token per frame.
    3. Spatial merging: the segment's static tokens form one group and each frame's dynamic tokens another; each
       group is clustered by DPC-kNN and every cluster replaced by its mean.

    Cluster counts. ``cluster_ratio`` None (the default): derived from ``q`` for equal retention: EVS's count
    ``K = evs_retained_count(T, h, w, q)`` is apportioned to the groups in proportion to their sizes
    (:func:`_hamilton`), so exactly ``K`` tokens are kept, unless step 2 alone leaves ``M <= K`` tokens (a mostly
    static video), when all ``M`` are kept, fewer than EVS; a small group can get no cluster, i.e. be dropped.
    ``cluster_ratio`` a number in (0, 1]: the authors' rule, ``max(1, int(size * cluster_ratio))`` clusters for a
    group of more than ``2k`` tokens (the authors' 14 at ``k = 7``) and no merging of smaller groups; the count
    then depends on the video (the paper's retention is data-dependent).

    Positions: a cluster's mean takes its DPC centre's position; a static token (merged or not) sits in the
    segment's first frame. Ties go to the earlier index (instead of the authors' random density noise);
    deterministic, ``seed`` is unused. Returns the keep mask and the merged embeddings."""
    name = "prunevid"
    ratio = _check_float(name, "temporal_segment_ratio", temporal_segment_ratio, 0.0, 1.0, low_open=True)
    tau = _check_float(name, "threshold", threshold, -1.0, 1.0)
    if cluster_ratio is not None:
        cluster_ratio = _check_float(name, "cluster_ratio", cluster_ratio, 0.0, 1.0, low_open=True)
    k = _check_int(name, "k", k, 1)
    t, h, w = grid.shape
    n = h * w
    x = grid.embeddings.reshape(t, n, -1).double()
    frame_features = x.mean(dim=1)
    _, labels = _dpc_knn_cluster(frame_features, min(t, max(1, int(t * ratio))), k)

    # the groups of step 3: (frame of their tokens' positions, spatial indices (m,), tokens (m, d))
    groups: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    for start, length in _contiguous_segments(labels.tolist()):
        frames = x[start:start + length]
        static = _static_positions(frames, tau)
        if static.any():
            groups.append((start, torch.nonzero(static).view(-1), frames[:, static].mean(dim=0)))
        dynamic = torch.nonzero(~static).view(-1)
        if len(dynamic):
            groups += [(start + f, dynamic, frames[f, dynamic]) for f in range(length)]

    sizes = [len(positions) for _, positions, _ in groups]
    if cluster_ratio is None:
        target = evs_retained_count(t, h, w, q)
        clusters = sizes if sum(sizes) <= target else _hamilton(target, sizes)
    else:
        clusters = [max(1, int(s * cluster_ratio)) if s > 2 * k else s for s in sizes]

    keep = torch.zeros(t, n, dtype=torch.bool, device=x.device)
    merged = x.clone()
    for (frame, positions, tokens), size, count in zip(groups, sizes, clusters):
        if count == 0:
            continue
        if count == size:  # every token its own cluster
            keep[frame, positions] = True
            merged[frame, positions] = tokens
            continue
        centres, assign = _dpc_knn_cluster(tokens, count, k)
        keep[frame, positions[centres]] = True
        merged[frame, positions[centres]] = _cluster_means(tokens, assign, count)
    return keep.view(t, h, w).cpu(), merged.view(grid.embeddings.shape).to(grid.embeddings.dtype)
