"""Images as integer levels (:class:`ImageData`), the pixel tensors a model sees (:func:`as_pixels`), and
transforms of levels (pad/crop/resample, channel conversion). Conventions in :mod:`deepcheck.data`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..flows.base import parameter_device, parameter_dtype

__all__ = ["ImageData", "as_pixels"]


@dataclass(frozen=True, eq=False)
class ImageData:
    """Images as integer levels ``(N, C, H, W)`` (``uint8``), with labels ``(N,)`` (``int64``, -1 if unknown).

    ``n_bins`` is the number of levels; ``name`` says where the data came from (e.g. ``"digits/train"``).
    """

    levels: torch.Tensor
    labels: torch.Tensor
    n_bins: int
    name: str

    def __post_init__(self) -> None:
        if not isinstance(self.levels, torch.Tensor) or self.levels.dtype != torch.uint8:
            got = getattr(self.levels, "dtype", type(self.levels).__name__)
            raise TypeError(f"levels must be a uint8 torch tensor, got {got}")
        if self.levels.ndim != 4:
            raise ValueError(f"levels must have shape (N, C, H, W), got {tuple(self.levels.shape)}")
        if not isinstance(self.labels, torch.Tensor) or self.labels.shape != (self.levels.shape[0],):
            raise ValueError(f"labels must be a tensor of shape ({self.levels.shape[0]},)")
        if isinstance(self.n_bins, bool) or not isinstance(self.n_bins, int) or not 2 <= self.n_bins <= 256:
            raise ValueError(f"n_bins must be an int in [2, 256], got {self.n_bins!r}")
        if self.levels.numel() and int(self.levels.max()) >= self.n_bins:
            raise ValueError(f"levels must lie in [0, n_bins - 1] = [0, {self.n_bins - 1}], "
                             f"got max {int(self.levels.max())}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape ``(C, H, W)`` of one image."""
        return tuple(self.levels.shape[1:])  # type: ignore[return-value]

    @property
    def dim(self) -> int:
        """``D = C * H * W``, the number of dimensions of one image."""
        c, h, w = self.shape
        return c * h * w

    def __len__(self) -> int:
        return int(self.levels.shape[0])

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray | torch.Tensor) -> ImageData:
        """A subset (an int gives a one-image subset, so the result is always an ``ImageData``)."""
        if isinstance(index, bool):
            raise TypeError("index must be an int, a slice or a sequence of ints, got bool")
        if isinstance(index, int | np.integer):
            n = len(self)
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"index {i} out of range for {n} images")
            index = slice(i % n, i % n + 1)
        elif not isinstance(index, slice):
            arr = index.cpu().numpy() if isinstance(index, torch.Tensor) else np.asarray(index)
            if arr.dtype == bool:  # a boolean mask selects where it is True
                if arr.shape != (len(self),):
                    raise ValueError(f"a boolean index must have shape ({len(self)},), got {arr.shape}")
                arr = np.flatnonzero(arr)
            elif arr.size and arr.dtype.kind not in "iu":
                raise TypeError(f"index must hold integers or booleans, got dtype {arr.dtype}")
            index = torch.as_tensor(arr, dtype=torch.long)
            if index.ndim != 1:
                raise ValueError(f"index must be 1-D, got shape {tuple(index.shape)}")
        return ImageData(self.levels[index].contiguous(), self.labels[index].contiguous(), self.n_bins, self.name)

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor | slice) -> ImageData:
        """The images at ``indices`` (same as indexing)."""
        return self[indices]

    def pixels(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Mid-bin pixels ``y = (k + 0.5) / n_bins`` in ``(0, 1)``, shape ``(N, C, H, W)``."""
        return (self.levels.to(dtype) + 0.5) / self.n_bins

    def dequantize(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Uniformly dequantised pixels ``y = (k + u) / n_bins``, ``u ~ U[0, 1)`` from ``generator`` (a new tensor)."""
        if not isinstance(generator, torch.Generator):
            raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
        u = torch.rand(self.levels.shape, generator=generator, dtype=dtype)
        return (self.levels.to(dtype) + u) / self.n_bins

    def __repr__(self) -> str:
        return f"ImageData(name={self.name!r}, n={len(self)}, shape={self.shape}, n_bins={self.n_bins})"


def as_pixels(data: object, like: nn.Module | None = None, *, name: str = "data") -> torch.Tensor:
    """The pixel tensor a model is evaluated on: the mid-bin pixels ``(k + 0.5) / n_bins`` of an
    :class:`ImageData` (deterministic, no dequantisation noise), or a floating tensor as is. With ``like``
    (a model) the result is cast to its parameters' dtype and moved to their device; without, an ImageData
    gives the default dtype on the CPU and a tensor is returned unchanged. ``name`` names the argument in
    errors."""
    dtype = parameter_dtype(like) if like is not None else torch.get_default_dtype()
    if isinstance(data, torch.Tensor):
        if not data.is_floating_point():
            raise TypeError(f"{name} must be a float tensor or an ImageData, got dtype {data.dtype}")
        if like is None:
            return data
        x = data
    elif callable(getattr(data, "pixels", None)):
        x = data.pixels(dtype)
    else:
        raise TypeError(f"{name} must be a float tensor or an ImageData, got {type(data).__name__}")
    if like is None:
        return x
    return x.to(dtype=dtype, device=parameter_device(like))


def _resize(levels: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    h, w = levels.shape[-2:]
    th, tw = size
    if (h, w) == (th, tw):
        return levels
    if mode == "interpolate":
        out = F.interpolate(levels.float(), size=(th, tw), mode="bilinear", align_corners=False, antialias=True)
        return out.round().clamp(0, 255).to(torch.uint8)
    # pad (with level 0) or centre-crop each spatial dimension independently
    out = levels
    for axis, (n, t) in ((2, (h, th)), (3, (w, tw))):
        if t > n:
            before = (t - n) // 2
            pad = [0, 0, 0, 0]
            pad[(3 - axis) * 2: (3 - axis) * 2 + 2] = [before, t - n - before]
            out = F.pad(out, pad)
        elif t < n:
            start = (n - t) // 2
            out = out.narrow(axis, start, t)
    return out.contiguous()


def _set_channels(levels: torch.Tensor, channels: int) -> torch.Tensor:
    c = levels.shape[1]
    if c == channels:
        return levels
    if c == 1:
        return levels.expand(-1, channels, -1, -1).contiguous()
    if c == 3 and channels == 1:  # ITU-R BT.601 luma, rounded back to a level
        weights = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64).view(1, 3, 1, 1)
        return (levels.double() * weights).sum(1, keepdim=True).round().to(torch.uint8)
    raise ValueError(f"channels: cannot convert {c} channels to {channels} (supported: 1 -> C, 3 -> 1)")

