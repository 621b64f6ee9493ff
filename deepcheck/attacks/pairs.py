r"""Two-pixel starts of the L2 probe run (issue 14, goal 4): ``delta = eps (s_i e_i + s_j e_j) / sqrt 2`` over
pairs of the best single-coordinate moves of the forward screen (:func:`~.search.screen_moves`), screened by
forward passes only. Why: on the quick digits RealNVP hybrid's worst image the best L2 point pushes two pixels
(0.134 and 0.109, the rest of the budget taking neighbours to the clamp), both among the four best screened
single moves, while every single-coordinate start ascends into the basin of one of them (~5 % lower); from the
midpoint of the two the ascent stays in the joint basin."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

Tensor = torch.Tensor


def pair_order(m: int) -> list[tuple[int, int]]:
    """The pairs ``(a, b)``, ``a < b < m``, of screen positions in the order they are screened: by their worse
    position ``b``, then ``a`` (``(0, 1), (0, 2), (1, 2), (0, 3), ...``), so that a cut keeps the best-ranked."""
    return [(a, b) for b in range(1, m) for a in range(b)]


def pair_starts(value: Callable[[Tensor], Tensor], project: Callable[[Tensor], Tensor], moves: Tensor,
                shape: tuple[int, ...], eps: float, like: Tensor, k: int,
                max_candidates: int) -> tuple[list[Tensor], int]:
    r"""The ``k`` best two-pixel moves per sample, best first: for each pair ``(a, b)`` of :func:`pair_order`
    over the columns of ``moves`` (``(B, m)`` single moves per sample, best first, as
    :func:`~.search.screen_moves` returns them: ``j`` for ``+e_j``, ``D + j`` for ``-e_j``), ``delta = eps (s_a
    e_{j_a} + s_b e_{j_b}) / sqrt 2`` projected onto the ball and the data box, one forward pass of the batch each
    (``value(delta) -> (B,)``, maximised), at most ``max_candidates`` pairs. A pair of one pixel's two signs
    scores ``-inf``. Returns the starts (none when no pair is screened) and the number of forward passes."""
    B, m = moves.shape
    pairs = pair_order(m)[:max(0, max_candidates)]
    if not pairs or k < 1:
        return [], 0
    D = int(math.prod(shape[1:]))
    rows = torch.arange(B, device=like.device)
    pix, sign = moves % D, torch.where(moves < D, 1.0, -1.0).to(like.dtype)

    def move(a: Tensor, b: Tensor) -> Tensor:  # per sample the pair of columns (a[i], b[i])
        delta = torch.zeros((B, D), dtype=like.dtype, device=like.device)
        r = torch.arange(B)
        delta[rows, pix[r, a].to(like.device)] = sign[r, a].to(like.device) * (eps / math.sqrt(2.0))
        delta[rows, pix[r, b].to(like.device)] += sign[r, b].to(like.device) * (eps / math.sqrt(2.0))
        return project(delta.reshape(shape))

    vals = []
    for a, b in pairs:
        ia, ib = torch.full((B,), a), torch.full((B,), b)
        with torch.no_grad():
            v = value(move(ia, ib))
        same = (pix[:, a] == pix[:, b]).to(v.device)
        vals.append(torch.where(same, torch.full_like(v, -math.inf), v))
    top = torch.stack(vals, dim=1).topk(min(k, len(pairs)), dim=1).indices.cpu()  # (B, k)
    first = torch.tensor([a for a, _ in pairs])
    second = torch.tensor([b for _, b in pairs])
    return [move(first[top[:, i]], second[top[:, i]]) for i in range(top.shape[1])], len(pairs)
