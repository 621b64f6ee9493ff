r"""Structured starts of the L2 probe run on large images (issue 14, goal 4): short runs of pixels along a
column or a row with alternating signs (``+ - + - ...``, consecutive pixels) or equal signs at stride 2
(``+ 0 + 0 ...``), placed where the image has edges, screened by forward passes.

Why: on the full runs' 28x28 RealNVP flows the L2 objective (NLL over the eps-ball and the data box) has rare
basins 2-7x higher than the usual ones; their maximisers move ~10 pixels in such patterns along a column at the
object's edge (the checkerboard couplings and the 2x2 squeeze put pixels two rows apart into neighbouring
positions of one channel, and consecutive pixels into two channels), or, at eps 0.5, a few pixels four rows apart
on the image's border column. Measured on the hybrid RealNVP at eps 1, on the two worst images of the default
before (fractions of the best point then known): random starts of the ball reach them in 0-2 of 6 tries, and only
after 100-300 ascent steps; after 10 steps all are at 5-10 %, so a short probe cannot tell them apart; the top
Hessian eigenvectors at ``delta = 0`` (20 Lanczos steps) lie on the image border, and ascents from them reach 5-21
%; an ascent of 40 steps from the right pattern reaches 101 %. The forward screen ranks patterns only roughly (the
border's screen well and lead to lower basins than the edges' best), hence the restriction to windows on edges or
on the border and one start per line (column or row) among the best screened."""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import torch

Tensor = torch.Tensor

PATTERN_LENGTH = 8  # pixels per pattern
BORDER_SHARE = 0.5  # of the screened windows on the image's border (where the flows' padding acts)
EDGE_LEVEL = 0.1  # a pixel is on an edge where it differs from a neighbour (8-neighbourhood) by more than this


def _edges(x: Tensor) -> Tensor:
    """Per sample and pixel (summed over channels): the largest absolute difference to a pixel of its
    8-neighbourhood (replicated border), shape ``(B, H, W)``."""
    H, W = x.shape[-2:]
    p = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    d = torch.stack([(p[..., 1:-1, 1:-1] - p[..., a:a + H, b:b + W]).abs() for a in range(3) for b in range(3)])
    return d.amax(dim=0).sum(dim=1)


@lru_cache(maxsize=8)
def _windows(H: int, W: int, length: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every pattern window: ``masks (N, H, W)`` (the pattern's signed unit entries), ``line (N,)`` (an id of the
    column or row it lies on) and ``border (N,)`` (whether that line is on the image's border). Kinds:
    alternating signs on ``length`` consecutive pixels, equal signs at stride 2 on ``length`` pixels and at
    stride 4 on ``length // 2 + 2`` pixels (the strides of the checkerboard and of one and two 2x2 squeezes);
    along columns and rows; windows start every 2 pixels (every 4 on the border). Cached per shape (built once,
    never modified by the callers)."""
    masks, lines, border = [], [], []
    for along_col in (True, False):
        n_line, n_pos = (W, H) if along_col else (H, W)
        for stride, alt, n in ((1, True, length), (2, False, length), (4, False, length // 2 + 2)):
            span = stride * (n - 1) + 1
            for line in range(n_line):
                edge = line in (0, n_line - 1)
                for r0 in range(0, n_pos - span + 1, 4 if edge else 2):
                    m = torch.zeros(n_pos, n_line) if along_col else torch.zeros(n_line, n_pos)
                    for k in range(n):
                        v = (-1.0) ** k if alt else 1.0
                        if along_col:
                            m[r0 + stride * k, line] = v
                        else:
                            m[line, r0 + stride * k] = v
                    masks.append(m)
                    lines.append(line if along_col else W + line)
                    border.append(edge)
    return torch.stack(masks), torch.tensor(lines), torch.tensor(border)


def pattern_starts(value: Callable[[Tensor], Tensor], project: Callable[[Tensor], Tensor], x: Tensor, eps: float,
                   k: int, max_candidates: int, length: int = PATTERN_LENGTH) -> tuple[list[Tensor], int]:
    r"""``k`` structured starts per sample, best first: among the pattern windows (:func:`_windows`, scaled to
    ``||delta||_2 = eps``, both signs, projected), those covering the most edge pixels of ``x`` (``EDGE_LEVEL``)
    are screened by forward passes (``value(delta) -> (B,)``, maximised; one pass of the batch per candidate,
    each sample its own candidates; ``max_candidates`` passes at most), and the best ``k`` on distinct lines
    (columns or rows) are returned with the number of forward passes spent. Images only (``x`` of shape
    ``(B, C, H, W)``, ``H, W >= 2 length``)."""
    B, C, H, W = x.shape
    masks, lines, border = _windows(H, W, min(length, H // 2, W // 2))
    masks = masks.to(x.device, x.dtype)
    cover = torch.einsum("bhw,nhw->bn", (_edges(x) > EDGE_LEVEL).to(x.dtype), masks.abs())
    n_win = max(1, min(masks.shape[0], max_candidates // 2))
    on_border = torch.nonzero(border).flatten().to(x.device)
    n_border = min(len(on_border), int(BORDER_SHARE * n_win)) if BORDER_SHARE > 0 else 0
    cover[:, on_border] = -1.0  # the border's windows are taken apart, the first n_border of them
    win = torch.cat([on_border[:n_border].expand(B, n_border),
                     cover.topk(n_win - n_border, dim=1).indices], dim=1)  # (B, n_win)
    unit = eps * masks / masks.flatten(1).norm(dim=1).view(-1, 1, 1)
    rows = torch.arange(B, device=x.device)

    def cand(i: int) -> Tensor:  # candidate i of every sample: window i // 2, sign +- by parity
        s = 1.0 if i % 2 == 0 else -1.0
        return project((s * unit[win[:, i // 2]]).unsqueeze(1).expand(B, C, H, W) / C ** 0.5)

    n = 2 * n_win
    with torch.no_grad():
        vals = torch.stack([value(cand(i)) for i in range(n)], dim=1)  # (B, n)
    order = vals.argsort(dim=1, descending=True).cpu()
    line_of = lines[win.cpu()]  # (B, n_win)
    picks = []
    for b in range(B):
        seen, mine = set(), []
        for i in order[b].tolist():
            ln = int(line_of[b, i // 2])
            if ln not in seen:
                seen.add(ln)
                mine.append(i)
            if len(mine) == k:
                break
        picks.append(mine + [mine[-1]] * (k - len(mine)))
    out = []
    for j in range(k):
        idx = torch.tensor([picks[b][j] for b in range(B)])
        s = torch.where(idx % 2 == 0, 1.0, -1.0).to(x.dtype).to(x.device)
        d = s.view(B, 1, 1) * unit[win[rows, (idx // 2).to(x.device)]]
        out.append(project(d.unsqueeze(1).expand(B, C, H, W) / C ** 0.5))
    return out, n
