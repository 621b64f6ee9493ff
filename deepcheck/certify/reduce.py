r"""Order reduction of the zonotope mode: the error symbols of one propagation compacted to a budget (issue 15,
the full-size certify step).

At a layer boundary of a flow every live enclosure (the flow's state ``h``, the log-det accumulators and the
latents already split off) is known. When the context holds more than ``budget`` symbols, :func:`compact`

* keeps the ``budget - n`` symbols with the largest mass ``max_b sum_i |E_{m,i}|`` in ``h`` (``n`` the number
  of elements of ``h`` per sample),
* replaces the dropped symbols' part of ``h`` by one *fresh* symbol per element,
  ``sum_{m in D} E_{m,i} e_m = \beta_i e'_i`` with ``\beta_i = sum_{m in D} |E_{m,i}|`` (rounded up) and
  ``e'_i = (sum_{m in D} E_{m,i} e_m) / \beta_i in [-1, 1]`` (the box of the dropped part, DeepZ order
  reduction), so later layers still propagate it with signed weights,
* and moves the dropped symbols' part of every other live form into its remainder, ``r += sum_{m in D} |E_m|``.

Soundness: for every ``delta`` and symbol values ``e`` of the old enclosures, the kept symbols, the fresh ones
``e'`` as defined and the old remainders give every live tensor its old value, so the joint set of values is
still enclosed (the fresh symbols are treated as independent of the remainders, which only widens it). The
symbols are renumbered ``0 .. |kept| + n - 1``; forms not passed to :func:`compact` must not be used afterwards.
"""

from __future__ import annotations

import torch

from .forms import ABS_SLACK, Form, _pad, gamma


def _dropped_mass(e: torch.Tensor, drop: torch.Tensor) -> torch.Tensor:
    """``sum_{m in drop} |e_m|`` rounded up, shape ``e.shape[0:1] + e.shape[2:]``."""
    k = int(drop.sum())
    return e[:, drop].abs().sum(dim=1) * (1 + gamma(k + 2)) + ABS_SLACK


def compact(h: Form, others: list[Form], budget: int) -> tuple[Form, list[Form]]:
    """``(h, others)`` with at most ``max(budget, n)`` symbols in all (module docstring); unchanged when the
    context holds at most ``budget`` symbols or is not in the zonotope mode."""
    ctx = h.ctx
    m = ctx.n_symbols
    if ctx.mode != "zonotope" or m <= budget or h.E is None:
        return h, others
    b, shape = h.c.shape[0], h.c.shape[1:]
    eh = _pad(h.E, m, h.c).reshape(b, m, -1)
    n = eh.shape[2]
    n_keep = max(0, budget - n)
    keep = eh.abs().sum(dim=2).amax(dim=0).topk(n_keep).indices
    drop = torch.ones(m, dtype=torch.bool, device=eh.device)
    drop[keep] = False
    keep = keep.sort().values
    beta = _dropped_mass(eh, drop)
    fresh = eh.new_zeros(b, n, n)
    fresh[:, torch.arange(n), torch.arange(n)] = beta
    new_h = h._new(h.c, h.G, torch.cat([eh[:, keep], fresh], dim=1).reshape(b, n_keep + n, *shape), h.r)
    out = []
    for f in others:
        if f.E is None:
            out.append(f)
            continue
        e = _pad(f.E, m, f.c)
        out.append(f._new(f.c, f.G, e[:, keep] if n_keep else None, f.r + _dropped_mass(e, drop)))
    ctx.n_symbols = n_keep + n
    ctx.compactions += 1
    return new_h, out
