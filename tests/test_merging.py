"""The merging peers (dycoke_ttm, fastvid, prunevid) against reference computations written here, frame by frame and
token by token in plain Python/NumPy, from each paper's algorithm and its authors' code, on small grids with planted
structure (static regions, scene cuts); their kept counts against EVS's; the positions and values of merged tokens;
tiny grids; option checks."""

import itertools
import math

import numpy as np
import pytest
import torch

import hybridreduce.redundancy.merging  # registers the methods
from hybridreduce.errors import ConfigError
from hybridreduce.redundancy import TokenGrid, evs_retained_count, reduce_grid

METHODS = ["dycoke_ttm", "fastvid", "prunevid"]


# ------------------------------------------------------------------------------------------------------------------
# inputs


def planted_video(t: int, h: int, w: int, d: int = 16, scenes: tuple[int, ...] = (0,), static: float = 0.5,
                  noise: float = 0.05, seed: int = 0) -> torch.Tensor:
    """``(T, h, w, d)`` float32 tokens: a new random scene starts at every frame of ``scenes``; within a scene the
    first ``static`` fraction of the spatial positions (row-major) hold the scene's token plus small noise, the
    others a fresh random token every frame (motion)."""
    rng = np.random.default_rng(seed)
    n = h * w
    n_static = round(static * n)
    out = np.empty((t, n, d))
    base = rng.normal(size=(n, d))
    for f in range(t):
        if f in scenes:
            base = rng.normal(size=(n, d))
        out[f, :n_static] = base[:n_static] + noise * rng.normal(size=(n_static, d))
        out[f, n_static:] = rng.normal(size=(n - n_static, d))
    return torch.from_numpy(out.reshape(t, h, w, d)).float()


def grid_of(e: torch.Tensor) -> TokenGrid:
    return TokenGrid(embeddings=e)


def as_np(e: torch.Tensor) -> np.ndarray:
    """``(T, h, w, d)`` -> ``(T, n, d)`` float64 (the methods compute in float64 from the float32 tokens)."""
    t, h, w, d = e.shape
    return e.double().numpy().reshape(t, h * w, d)


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def even(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


# ------------------------------------------------------------------------------------------------------------------
# reference DPC-kNN (Du et al. 2016, as FastVID's and PruneVid's code score it), one token at a time


def ref_dpc_scores(x: np.ndarray, k: int) -> tuple[list[float], np.ndarray]:
    n, d = x.shape
    dist = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            dist[i, j] = math.sqrt(float(np.sum((x[i] - x[j]) ** 2))) / math.sqrt(d)
    density = []
    for i in range(n):
        nearest = sorted(dist[i])[: min(k, n)]
        density.append(math.exp(-sum(v * v for v in nearest) / len(nearest)))
    scores = []
    for i in range(n):
        # a denser token: higher density, or the same density at an earlier index
        denser = [j for j in range(n) if density[j] > density[i] or (density[j] == density[i] and j < i)]
        delta = min(dist[i, j] for j in denser) if denser else dist.max()
        scores.append(delta * density[i])
    return scores, dist


def ref_dpc_cluster(x: np.ndarray, c: int, k: int) -> tuple[list[int], list[int]]:
    scores, dist = ref_dpc_scores(x, k)
    centres = sorted(range(len(x)), key=lambda i: (-scores[i], i))[:c]
    assign = []
    for i in range(len(x)):
        if i in centres:
            assign.append(centres.index(i))
        else:
            best = 0
            for m in range(1, c):
                if dist[centres[m], i] < dist[centres[best], i]:
                    best = m
            assign.append(best)
    return centres, assign


# ------------------------------------------------------------------------------------------------------------------
# reference DyCoke TTM


def ref_dycoke(e: torch.Tensor, q: float) -> np.ndarray:
    x = as_np(e)
    t, n, _ = x.shape
    keep = np.zeros((t, n), bool)
    others = []
    for group in range(0, t, 4):
        keep[group] = True  # the group's reference frame
        for f in range(group + 1, min(group + 4, t)):
            partner = {1: group, 2: group, 3: group + 2}[f - group]  # 1 vs 0, 3 vs 2, then 2 vs 0
            others.append((f, partner))
    if not others:
        return keep.reshape(e.shape[:3])
    budget = evs_retained_count(*e.shape[:3], q) - (t - len(others)) * n
    budget = min(max(budget, 0), len(others) * n)
    for (f, partner), share in zip(others, even(budget, len(others))):
        sims = [cos(x[f, i], x[partner, i]) for i in range(n)]
        for i in sorted(range(n), key=lambda i: (sims[i], i))[:share]:  # the least similar stay
            keep[f, i] = True
    return keep.reshape(e.shape[:3])


# ------------------------------------------------------------------------------------------------------------------
# reference FastVID


def ref_fastvid(e: torch.Tensor, q: float, c: int = 8, tau: float = 0.9, d: float = 0.4, p: int = 4,
                beta: float = 0.6, k: int = 4) -> tuple[np.ndarray, np.ndarray]:
    x = as_np(e)
    t, n, dim = x.shape
    # DySeg on the frames' mean tokens
    means = x.mean(axis=1)
    sims = [cos(means[f], means[f + 1]) for f in range(t - 1)]
    cuts = set(sorted(range(t - 1), key=lambda i: (sims[i], i))[: c - 1])
    cuts |= {i for i in range(t - 1) if sims[i] < tau}
    segments, start = [], 0
    for i in sorted(cuts):
        segments.append(list(range(start, i + 1)))
        start = i + 1
    segments.append(list(range(start, t)))
    # per-frame budget: EVS's count K split evenly; int(K d) contextual, split evenly too; the rest salient
    total = evs_retained_count(*e.shape[:3], q)
    retain = even(total, t)
    contextual = even(int(total * d), t)
    salient = [r - cx for r, cx in zip(retain, contextual)]
    keep = np.zeros((t, n), bool)
    merged = x.copy()
    rest = {}  # frame -> its non-salient spatial indices, ascending
    for f in range(t):
        salience = [cos(x[f, i], means[f]) for i in range(n)]
        for i in sorted(range(n), key=lambda i: (-salience[i], i))[: salient[f]]:
            keep[f, i] = True
        rest[f] = [i for i in range(n) if not keep[f, i]]
    for seg in segments:
        length, budget = len(seg), sum(contextual[f] for f in seg)
        if budget == 0:
            continue
        capacity = {f: len(rest[f]) for f in seg}
        for step in range(p, 0, -1):
            anchor_frames = [seg[r] for r in range(length) if (length - 1 - r) % step == 0]
            if sum(capacity[f] for f in anchor_frames) >= budget:
                break
        shares = {}
        for f, s in zip(anchor_frames, even(budget, len(anchor_frames))):
            shares[f] = min(s, capacity[f])
        left = budget - sum(shares.values())
        for f in anchor_frames:
            extra = min(left, capacity[f] - shares[f])
            shares[f] += extra
            left -= extra
        pool = [(f, i) for f in seg for i in rest[f]]
        originals = {fi: x[fi[0], fi[1]].copy() for fi in pool}
        for a in anchor_frames:
            if shares[a] == 0:
                continue
            scores, _ = ref_dpc_scores(x[a, rest[a]], k)
            ranked = sorted(range(len(rest[a])), key=lambda r: (-scores[r], r))[: shares[a]]
            anchors = [rest[a][r] for r in ranked]
            members = {i: [] for i in anchors}
            for fi in pool:
                best = max(range(len(anchors)), key=lambda m: (cos(originals[fi], x[a, anchors[m]]), -m))
                members[anchors[best]].append(originals[fi])
            for i in anchors:
                weight = max(1 / (len(members[i]) + 1), beta)
                mean = np.mean(members[i], axis=0) if members[i] else np.zeros(dim)
                merged[a, i] = weight * x[a, i] + (1 - weight) * mean
                keep[a, i] = True
    return keep.reshape(e.shape[:3]), merged.reshape(e.shape)


# ------------------------------------------------------------------------------------------------------------------
# reference PruneVid


def ref_segments(labels: list[int]) -> list[list[int]]:
    """PruneVid's contiguous refinement: keep each cluster's longest runs (none if they are single frames); fill each
    gap, left to right, from its longer neighbouring run (left on ties, cluster 0 without neighbours)."""
    runs, pos = [], 0
    for label, group in itertools.groupby(labels):
        size = len(list(group))
        runs.append((label, pos, size))
        pos += size
    best = {}
    for label, _, size in runs:
        best[label] = max(best.get(label, 0), size)
    out = list(labels)
    for label, a, size in runs:
        if best[label] == 1 or size != best[label]:
            for f in range(a, a + size):
                out[f] = None
    f = 0
    while f < len(out):
        if out[f] is not None:
            f += 1
            continue
        g = f
        while g < len(out) and out[g] is None:
            g += 1
        left_len = 0
        if f > 0:
            while f - 1 - left_len >= 0 and out[f - 1 - left_len] == out[f - 1]:
                left_len += 1
        right_len = 0
        if g < len(out):
            while g + right_len < len(out) and out[g + right_len] == out[g]:
                right_len += 1
        if f > 0 and left_len >= right_len:
            label = out[f - 1]
        elif g < len(out):
            label = out[g]
        else:
            label = 0
        for u in range(f, g):
            out[u] = label
        f = g
    segments, start = [], 0
    for u in range(1, len(out) + 1):
        if u == len(out) or out[u] != out[start]:
            segments.append(list(range(start, u)))
            start = u
    return segments


def ref_hamilton(total: int, sizes: list[int]) -> list[int]:
    whole = sum(sizes)
    quotas = [total * s / whole for s in sizes]
    shares = [total * s // whole for s in sizes]
    fractions = [(total * s) % whole for s in sizes]  # remainders, exactly
    for g in sorted(range(len(sizes)), key=lambda g: (-fractions[g], g))[: total - sum(shares)]:
        shares[g] += 1
    assert all(abs(s - qu) < 1 for s, qu in zip(shares, quotas))
    return shares


def ref_prunevid(e: torch.Tensor, q: float, ratio: float = 0.25, tau: float = 0.8, cluster_ratio=None,
                 k: int = 7) -> tuple[np.ndarray, np.ndarray]:
    x = as_np(e)
    t, n, _ = x.shape
    _, labels = ref_dpc_cluster(x.mean(axis=1), min(t, max(1, int(t * ratio))), k)
    groups = []  # (frame, spatial indices, tokens)
    for seg in ref_segments(labels):
        static = []
        for i in range(n):
            pairs = [cos(x[a, i], x[b, i]) for a, b in itertools.combinations(seg, 2)]
            static.append(bool(pairs) and sum(pairs) / len(pairs) > tau)
        s_idx = [i for i in range(n) if static[i]]
        dyn = [i for i in range(n) if not static[i]]
        if s_idx:
            groups.append((seg[0], s_idx, np.array([x[seg, i].mean(axis=0) for i in s_idx])))
        if dyn:
            for f in seg:
                groups.append((f, dyn, np.array([x[f, i] for i in dyn])))
    sizes = [len(g[1]) for g in groups]
    if cluster_ratio is None:
        target = evs_retained_count(*e.shape[:3], q)
        counts = sizes if sum(sizes) <= target else ref_hamilton(target, sizes)
    else:
        counts = [max(1, int(s * cluster_ratio)) if s > 2 * k else s for s in sizes]
    keep = np.zeros((t, n), bool)
    merged = x.copy()
    for (f, idx, tokens), size, count in zip(groups, sizes, counts):
        if count == 0:
            continue
        if count == size:
            for r, i in enumerate(idx):
                keep[f, i] = True
                merged[f, i] = tokens[r]
            continue
        centres, assign = ref_dpc_cluster(tokens, count, k)
        for m, centre in enumerate(centres):
            keep[f, idx[centre]] = True
            merged[f, idx[centre]] = np.mean([tokens[r] for r in range(size) if assign[r] == m], axis=0)
    return keep.reshape(e.shape[:3]), merged.reshape(e.shape)


# ------------------------------------------------------------------------------------------------------------------
# reference equality


VIDEOS = {
    "two_scenes": {"t": 12, "h": 3, "w": 4, "scenes": (0, 7), "static": 0.5},
    "mostly_static": {"t": 9, "h": 2, "w": 4, "scenes": (0,), "static": 0.75},
    "three_scenes_odd": {"t": 11, "h": 4, "w": 4, "scenes": (0, 3, 8), "static": 0.25},
    "all_motion": {"t": 6, "h": 2, "w": 3, "scenes": (0,), "static": 0.0},
}


@pytest.mark.parametrize("video", VIDEOS)
@pytest.mark.parametrize("q", [0.0, 0.3, 0.5, 0.7, 0.9])
def test_dycoke_equals_reference(video, q):
    e = planted_video(**VIDEOS[video], seed=1)
    keep = reduce_grid("dycoke_ttm", grid_of(e), q)[1]
    assert np.array_equal(keep.numpy(), ref_dycoke(e, q))


@pytest.mark.parametrize("video", VIDEOS)
@pytest.mark.parametrize("q", [0.0, 0.3, 0.6, 0.9])
@pytest.mark.parametrize("options", [{}, {"dyseg_c": 2, "dyseg_tau": 0.5}, {"dyseg_c": 1, "dyseg_tau": -1.0,
                                                                           "dtm_p": 2, "stprune_d": 0.7}])
def test_fastvid_equals_reference(video, q, options):
    assert_equals_reference("fastvid", planted_video(**VIDEOS[video], seed=2), q, options, ref_fastvid,
                            {"dyseg_c": "c", "dyseg_tau": "tau", "stprune_d": "d", "dtm_p": "p"})


def assert_equals_reference(method: str, e, q: float, options: dict, reference, names: dict) -> None:
    """``method``'s mask and merged grid equal ``reference``'s (its options renamed by ``names``)."""
    reduced, keep = reduce_grid(method, grid_of(e), q, options=options)
    ref_keep, ref_merged = reference(e, q, **{names[key]: v for key, v in options.items()})
    assert np.array_equal(keep.numpy(), ref_keep)
    assert np.allclose(reduced.embeddings.double().numpy(), ref_merged, atol=1e-5)


@pytest.mark.parametrize("video", VIDEOS)
@pytest.mark.parametrize("q", [0.0, 0.4, 0.7, 0.9])
@pytest.mark.parametrize("options", [{}, {"temporal_segment_ratio": 0.5, "threshold": 0.6, "k": 3},
                                     {"cluster_ratio": 0.5, "k": 2}])
def test_prunevid_equals_reference(video, q, options):
    assert_equals_reference("prunevid", planted_video(**VIDEOS[video], seed=3), q, options, ref_prunevid,
                            {"temporal_segment_ratio": "ratio", "threshold": "tau", "cluster_ratio": "cluster_ratio",
                             "k": "k"})


def test_reference_segmentation_of_a_frame_clustering():
    # the refinement itself, on label sequences whose answer is known by hand
    assert ref_segments([0, 0, 1, 1, 1, 0, 2, 2]) == [[0, 1], [2, 3, 4, 5], [6, 7]]  # stray 0 joins the longer run
    assert ref_segments([0, 1, 0]) == [[0, 1, 2]]  # only single-frame runs: one segment
    assert ref_segments([3, 3, 1, 2, 2]) == [[0, 1, 2], [3, 4]]  # a lone frame between equals goes left
    assert hybridreduce.redundancy.merging._contiguous_segments([0, 0, 1, 1, 1, 0, 2, 2]) == [(0, 2), (2, 4), (6, 2)]
    assert hybridreduce.redundancy.merging._contiguous_segments([0, 1, 0]) == [(0, 3)]
    assert hybridreduce.redundancy.merging._contiguous_segments([3, 3, 1, 2, 2]) == [(0, 3), (3, 2)]


# ------------------------------------------------------------------------------------------------------------------
# kept counts


@pytest.mark.parametrize("shape", [(16, 4, 4), (13, 3, 5), (7, 2, 2), (64, 4, 4)])
@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.6, 0.75, 0.9, 0.95])
def test_fastvid_keeps_exactly_evs_count(shape, q):
    e = planted_video(*shape, scenes=(0, shape[0] // 2), static=0.5, seed=4)
    assert int(reduce_grid("fastvid", grid_of(e), q)[1].sum()) == evs_retained_count(*shape, q)


@pytest.mark.parametrize("shape", [(16, 4, 4), (13, 3, 5), (7, 2, 2), (64, 4, 4)])
@pytest.mark.parametrize("q", [0.0, 0.25, 0.5, 0.6, 0.75, 0.9])
def test_dycoke_keeps_evs_count_up_to_three_quarters(shape, q):
    t, h, w = shape
    e = planted_video(*shape, static=0.5, seed=5)
    kept = int(reduce_grid("dycoke_ttm", grid_of(e), q)[1].sum())
    references = math.ceil(t / 4) * h * w
    assert kept == max(evs_retained_count(*shape, q), references)  # never fewer than the whole reference frames


@pytest.mark.parametrize("shape", [(16, 4, 4), (13, 3, 5), (64, 4, 4)])
@pytest.mark.parametrize("q", [0.0, 0.5, 0.75, 0.9])
def test_prunevid_keeps_evs_count_unless_temporal_merging_goes_below(shape, q):
    e = planted_video(*shape, scenes=(0, shape[0] // 2), static=0.25, seed=6)
    kept = int(reduce_grid("prunevid", grid_of(e), q)[1].sum())
    assert kept <= evs_retained_count(*shape, q)
    if shape[0] < 64:  # the reference is slow on long videos
        assert kept == int(ref_prunevid(e, q)[0].sum())
    # all-motion video: nothing is static, so the temporal merging leaves every token and the count is EVS's
    moving = planted_video(*shape, static=0.0, seed=6)
    assert int(reduce_grid("prunevid", grid_of(moving), q)[1].sum()) == evs_retained_count(*shape, q)


def test_prunevid_static_video_keeps_fewer_than_evs_at_low_q():
    # 8 nearly identical frames: every position is static, averaged into one frame's worth; at q = 0.25 EVS keeps
    # 6 frames' worth, more than the temporal merging leaves, so all of the merged tokens are kept
    e = planted_video(8, 3, 3, static=1.0, noise=0.01, seed=7)
    keep = reduce_grid("prunevid", grid_of(e), 0.25, options={"temporal_segment_ratio": 0.125})[1]
    assert int(keep.sum()) == 9 < evs_retained_count(8, 3, 3, 0.25)
    assert keep[0].all() and not keep[1:].any()


# ------------------------------------------------------------------------------------------------------------------
# positions and values of merged tokens


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("q", [0.3, 0.8])
def test_merged_equals_embeddings_outside_kept_positions(method, q):
    e = planted_video(10, 3, 3, scenes=(0, 5), seed=8)
    reduced, keep = reduce_grid(method, grid_of(e), q)
    assert keep.dtype == torch.bool and tuple(keep.shape) == (10, 3, 3) and keep.device.type == "cpu"
    assert reduced.embeddings.shape == e.shape and reduced.embeddings.dtype == e.dtype
    assert torch.equal(reduced.embeddings[~keep], e[~keep])


def test_dycoke_keeps_reference_frames_whole_and_drops_repeated_tokens():
    e = planted_video(8, 2, 4, static=0.5, noise=0.0, seed=9)  # the static half repeats exactly
    grid = grid_of(e)
    reduced, keep = reduce_grid("dycoke_ttm", grid, 0.6)
    assert reduced is grid  # a plain mask: nothing is averaged
    assert keep[0].all() and keep[4].all()
    # EVS keeps int(64 * 0.4) = 25: the 2 reference frames' 16, and 9 over the 6 others (m = 1 - 9 / 48); the
    # repeated half (similarity 1) is pruned first, so only moving tokens are kept there
    assert int(keep[[1, 2, 3, 5, 6, 7]].sum()) == int(8 * 8 * 0.4) - 16
    assert not keep[[1, 2, 3, 5, 6, 7]].view(6, 8)[:, :4].any()


def test_fastvid_merges_a_static_segment_into_its_anchor_frames():
    # one scene of 8 near-identical frames, one segment (no forced cuts): p = 4 puts the anchor frames at 3 and 7
    e = planted_video(8, 4, 4, static=1.0, noise=0.02, seed=10)
    reduced, keep = reduce_grid("fastvid", grid_of(e), 0.75, options={"dyseg_c": 1, "dyseg_tau": 0.0})
    original = e.view(8, 16, -1)
    kept_values = reduced.embeddings.view(8, 16, -1)
    retain = even(evs_retained_count(8, 4, 4, 0.75), 8)  # 4 a frame; int(32 * 0.4) = 12 contextual: 1 or 2 a frame
    changed = ~torch.isclose(kept_values, original).all(dim=-1) & keep.view(8, 16)
    assert int(keep.sum()) == sum(retain) == 32
    assert set(torch.nonzero(changed)[:, 0].tolist()) <= {3, 7}  # merged tokens sit only in the anchor frames
    salient = [r - cx for r, cx in zip(retain, even(12, 8))]  # [2, 2, 2, 2, 3, 3, 3, 3]
    # the segment's 12 contextual tokens: 6 anchors in each anchor frame
    assert int(keep.view(8, 16)[3].sum()) == salient[3] + 6 and int(keep.view(8, 16)[7].sum()) == salient[7] + 6
    for f in (0, 1, 2, 4, 5, 6):
        assert int(keep.view(8, 16)[f].sum()) == salient[f]  # salient only, unchanged
        assert torch.equal(kept_values[f][keep.view(8, 16)[f]], original[f][keep.view(8, 16)[f]])


def test_fastvid_cuts_at_a_scene_change():
    # two scenes of 4 frames, c = 2: the one forced cut is at the scene change, so no merged token of frame 3's
    # anchors takes anything from the second scene
    e = planted_video(8, 3, 3, scenes=(0, 4), static=1.0, noise=0.02, seed=11)
    segments = hybridreduce.redundancy.merging._dyseg(e.view(8, 9, -1).double().mean(1), 2, -1.0)
    assert segments == [(0, 4), (4, 4)]
    reduced, keep = reduce_grid("fastvid", grid_of(e), 0.5, options={"dyseg_c": 2, "dyseg_tau": -1.0})
    ref_keep, ref_merged = ref_fastvid(e, 0.5, c=2, tau=-1.0)
    assert np.array_equal(keep.numpy(), ref_keep)
    assert np.allclose(reduced.embeddings.double().numpy(), ref_merged, atol=1e-5)


def test_prunevid_puts_static_tokens_in_the_segments_first_frame():
    # two scenes of 6 frames; the first 2 of 4 positions static: a static token per position per scene, at frames
    # 0 and 6; the moving positions stay in every frame; at q = 0 nothing is clustered away
    e = planted_video(12, 2, 2, scenes=(0, 6), static=0.5, noise=0.01, seed=12)
    reduced, keep = reduce_grid("prunevid", grid_of(e), 0.0, options={"temporal_segment_ratio": 0.2})
    flat = keep.view(12, 4)
    assert flat[[0, 6], :2].all() and not flat[[1, 2, 3, 4, 5, 7, 8, 9, 10, 11], :2].any()
    assert flat[:, 2:].all()
    merged = reduced.embeddings.view(12, 4, -1)
    assert torch.allclose(merged[0, 0], e.view(12, 4, -1)[0:6, 0].mean(0), atol=1e-6)
    assert torch.allclose(merged[6, 1], e.view(12, 4, -1)[6:12, 1].mean(0), atol=1e-6)
    assert torch.equal(merged[:, 2:], e.view(12, 4, -1)[:, 2:])


def test_prunevid_cluster_means_take_a_members_position():
    e = planted_video(6, 4, 4, scenes=(0, 3), static=0.5, seed=13)
    reduced, keep = reduce_grid("prunevid", grid_of(e), 0.8)
    x = e.view(6, 16, -1)
    for f, i in torch.nonzero(keep.view(6, 16)).tolist():
        value = reduced.embeddings.view(6, 16, -1)[f, i]
        # an average of real tokens: inside the bounding box of the video's tokens at least
        assert (value >= x.min(dim=0).values.min(dim=0).values - 1e-6).all()
        assert (value <= x.max(dim=0).values.max(dim=0).values + 1e-6).all()


# ------------------------------------------------------------------------------------------------------------------
# edge cases, determinism, options


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 1, 2), (1, 3, 3), (2, 1, 1), (3, 1, 2), (5, 2, 1)])
@pytest.mark.parametrize("q", [0.0, 0.5, 0.99])
def test_tiny_grids(method, shape, q):
    e = planted_video(*shape, d=4, seed=14)
    reduced, keep = reduce_grid(method, grid_of(e), q)
    kept = int(keep.sum())
    assert 1 <= kept <= math.prod(shape)
    assert torch.isfinite(reduced.embeddings).all()
    if shape[0] == 1:  # one frame: EVS keeps it whole, and so do all three, without changing a token (FastVID's
        # anchors are then all of the frame's non-salient tokens, each merged with itself alone)
        assert keep.all()
        assert torch.allclose(reduced.embeddings, e, atol=1e-6)
    if method == "fastvid":
        assert kept == evs_retained_count(*shape, q)


def test_one_frame_is_kept_unchanged_by_dycoke_and_prunevid_at_q0():
    e = planted_video(1, 3, 3, seed=15)
    for method in ("dycoke_ttm", "prunevid"):
        reduced, keep = reduce_grid(method, grid_of(e), 0.0)
        assert keep.all() and torch.equal(reduced.embeddings, e)


@pytest.mark.parametrize("method", METHODS)
def test_deterministic_and_seed_free(method):
    e = planted_video(16, 4, 4, scenes=(0, 9), seed=16)
    a = reduce_grid(method, grid_of(e), 0.7, seed=0)
    b = reduce_grid(method, grid_of(e), 0.7, seed=123)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0].embeddings, b[0].embeddings)


@pytest.mark.parametrize("method, option, value", [
    ("fastvid", "dyseg_c", 0), ("fastvid", "dyseg_c", 2.5), ("fastvid", "dyseg_c", True),
    ("fastvid", "dyseg_tau", 1.5), ("fastvid", "stprune_d", -0.1), ("fastvid", "stprune_d", "0.4"),
    ("fastvid", "dtm_p", 0), ("fastvid", "dtm_beta", 1.2), ("fastvid", "density_k", 0),
    ("prunevid", "temporal_segment_ratio", 0.0), ("prunevid", "temporal_segment_ratio", 1.5),
    ("prunevid", "threshold", -2.0), ("prunevid", "threshold", float("nan")), ("prunevid", "cluster_ratio", 0.0),
    ("prunevid", "cluster_ratio", 2.0), ("prunevid", "k", 0), ("prunevid", "k", 3.0),
])
def test_invalid_options_are_config_errors(method, option, value):
    e = planted_video(4, 2, 2, seed=17)
    with pytest.raises(ConfigError, match=rf"redundancy\.{method}\.{option}"):
        reduce_grid(method, grid_of(e), 0.5, options={option: value})


def test_unknown_option_is_refused():
    e = planted_video(4, 2, 2, seed=18)
    with pytest.raises(TypeError):
        reduce_grid("dycoke_ttm", grid_of(e), 0.5, options={"merging_ratio": 0.5})


def test_fastvid_lowers_the_anchor_step_when_anchor_frames_cannot_hold_the_budget():
    # q = 0: every token is kept; at p = 4 the anchor frames could not hold the contextual budget, so every frame
    # becomes an anchor frame, and every kept token is its frame's own (salient, or an anchor merged with its tokens)
    e = planted_video(8, 3, 3, static=1.0, noise=0.02, seed=19)
    reduced, keep = reduce_grid("fastvid", grid_of(e), 0.0, options={"dyseg_c": 1, "dyseg_tau": 0.0})
    assert keep.all()
    ref_keep, ref_merged = ref_fastvid(e, 0.0, c=1, tau=0.0)
    assert ref_keep.all()
    assert np.allclose(reduced.embeddings.double().numpy(), ref_merged, atol=1e-5)
