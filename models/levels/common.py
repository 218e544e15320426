"""Small building blocks shared by the levels: spec checks, heads, normalisation, rotary
positions, the short causal convolution and the output norm-and-gate. Everything works on any
device/dtype (tensors are created from the input's)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nlstudio.models.levels.base import Level
from nlstudio.models.precision import state_dtype

ROPE_BASE = 10000.0


def check_level_shape(level: Level) -> None:
    """The checks every level of this package makes on its spec: the period against the kind's
    rule (``registry.period_fault``, the wording the project files get too) and ``heads``
    dividing ``d_model``. Raises ``ValueError`` naming the level."""
    fault = level.info.period_fault(level.period)
    if fault:
        raise ValueError(f"level {level.level_id!r} ({level.info.name}): period {fault}, got "
                         f"{level.period!r}")
    if level.d_model % level.heads:
        raise ValueError(f"level {level.level_id!r}: d_model {level.d_model} is not divisible "
                         f"by {level.heads} heads")


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``[B, T, H*dh] -> [B, H, T, dh]`` (contiguous)."""
    b, t, d = x.shape
    if d % heads:
        raise ValueError(f"width {d} is not divisible by {heads} heads")
    return x.view(b, t, heads, d // heads).transpose(1, 2).contiguous()


def merge_heads(x: Tensor) -> Tensor:
    """``[B, H, T, dh] -> [B, T, H*dh]`` (contiguous)."""
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)


#: l2_normalize's floor on the norm (the fused self-modifying chunk node uses the same)
L2_EPS = 1e-6


def l2_normalize(x: Tensor, eps: float = L2_EPS) -> Tensor:
    """``x / max(‖x‖, eps)`` along the last dimension (differentiable, zero-safe)."""
    return x / x.norm(dim=-1, keepdim=True).clamp_min(eps)


def apply_rope(x: Tensor, positions: Tensor, base: float = ROPE_BASE) -> Tensor:
    """Rotary position embedding (RoFormer, rotate-half layout) of ``x [B, H, T, dh]``.

    ``positions`` (LongTensor ``[T]``) are absolute stream positions, so a stream split over
    calls rotates every token exactly as one call would. With an odd ``dh`` the last channel is
    left unrotated.
    """
    dh = x.shape[-1]
    half = dh // 2
    if half == 0:
        return x
    # Angles in float32 at least: float16 positions lose integers above 2048.
    work = torch.promote_types(x.dtype, torch.float32)
    inv_freq = base ** (-torch.arange(half, device=x.device, dtype=work) / half)
    angles = positions.to(device=x.device, dtype=work)[:, None] * inv_freq  # [T, half]
    cos = angles.cos().to(x.dtype)
    sin = angles.sin().to(x.dtype)
    x1, x2, rest = x[..., :half], x[..., half:2 * half], x[..., 2 * half:]
    rotated = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest), dim=-1)
    return rotated


class CausalConv1d(nn.Module):
    """Depthwise causal short convolution over time: ``y_t = Σ_{i<width} w_i ⊙ x_{t−i}``.

    ``forward(x [B, T, C], history [B, width−1, C] | None) -> (y, new_history)``; ``history``
    holds the last ``width−1`` inputs of the stream (zeros at its start), so a stream split
    over calls equals one call. ``width`` 0 or 1 is the identity (no parameters; the history is
    then an empty ``[B, 0, C]`` tensor). Initialised to the identity (newest tap 1, others 0) so
    a fresh level behaves as if it had no convolution until training shapes the filter.
    """

    def __init__(self, channels: int, width: int):
        super().__init__()
        if width < 0:
            raise ValueError(f"convolution width must be >= 0, got {width}")
        self.channels = channels
        self.width = width
        if width > 1:
            weight = torch.zeros(channels, 1, width)
            weight[:, 0, -1] = 1.0  # conv1d is a correlation: the last tap reads x_t
            self.weight = nn.Parameter(weight)
        else:
            self.register_parameter("weight", None)

    def forward(self, x: Tensor, history: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, t, c = x.shape
        keep = max(self.width - 1, 0)
        if history is None:
            history = x.new_zeros(b, keep, c, dtype=state_dtype(x))
        if self.weight is None or t == 0:
            return x, history
        full = torch.cat((history.to(x.dtype), x), dim=1)  # [B, keep + T, C]
        # [B, C, 1, keep + T] as a view of the token-major input is a channels-last 2-D image:
        # the depthwise convolution then runs without transposed copies and its output is
        # token-major again (2.5x faster on the CPU than conv1d on [B, C, T])
        y = F.conv2d(full.transpose(1, 2).unsqueeze(2), self.weight.to(x.dtype).unsqueeze(2),
                     groups=c)
        # the history keeps the state's dtype (float32 under bf16 autocast, models/precision.py)
        return y.squeeze(2).transpose(1, 2), full[:, full.shape[1] - keep:].to(history.dtype)

    def alone(self, x: Tensor) -> Tensor:
        """The output for tokens that each start a stream (zero history): ``w_newest ⊙ x_t``.
        What ``read`` uses: it reads without context."""
        if self.weight is None:
            return x
        return x * self.weight[:, 0, -1].to(x.dtype)

    def init_history(self, batch: int, device=None, dtype=None) -> Tensor:
        """The history of a fresh stream: ``[B, width−1, C]`` zeros."""
        return torch.zeros(batch, max(self.width - 1, 0), self.channels, device=device,
                           dtype=dtype)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, width={self.width}"


def conv_qkv(conv: CausalConv1d, qkv: tuple[Tensor, Tensor, Tensor], history: Tensor | None
             ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The short convolution of q, k, v projections ``[B, T, D]`` each (one depthwise
    convolution over their ``3·D`` channels), and its new history."""
    q, k, v = qkv
    if conv.weight is None:
        b = q.shape[0]
        return q, k, v, (q.new_zeros(b, 0, conv.channels, dtype=state_dtype(q)) if history is None
                         else history)
    y, history = conv(torch.cat((q, k, v), dim=-1), history)
    q, k, v = y.chunk(3, dim=-1)
    return q, k, v, history


def write_norm_series(surprise: Tensor, key: Tensor | None = None) -> Tensor:
    """Per-token Frobenius norm of rank-one writes ``u_t k_tᵀ`` (``‖u_t‖·‖k_t‖``) from
    ``[B, H, T, d]`` tensors, summed over heads and averaged over the batch: ``[T]``."""
    norms = surprise.norm(dim=-1)
    if key is not None:
        norms = norms * key.norm(dim=-1)
    return norms.sum(1).mean(0)


def head_timescale_bias(heads: int, low: float = 3.0, high: float = 6.0) -> Tensor:
    """Initial biases of per-head sigmoid forget gates, spread from ``low`` to ``high`` so the
    heads start at different retention timescales (σ(3) ≈ 0.95: ~14 tokens half-life;
    σ(6) ≈ 0.9975: ~280 tokens)."""
    if heads == 1:
        return torch.tensor([high])
    return torch.linspace(low, high, heads)


class OutputNormGate(nn.Module):
    """Normalisation and gating before a level's output projection (Titans §4.4, after Mehta et
    al. 2023; the form of Gated DeltaNet / flash-linear-attention's ``FusedRMSNormGated``):
    ``RMSNorm(o_h) ⊙ silu(W_g x)`` per head, the RMSNorm's scale shared by the heads (init 1).
    ``o [B, H, T, dh]``, ``x [B, T, d_model]`` -> ``[B, T, d_model]`` (heads merged)."""

    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.RMSNorm(d_model // heads)
        self.gate = nn.Linear(d_model, d_model, bias=False)

    def forward(self, o: Tensor, x: Tensor) -> Tensor:
        return merge_heads(self.norm(o)) * F.silu(self.gate(x))


def tensor_floats(obj) -> int:
    """Total numel of the tensors in a (nested) state: dicts, tuples and lists walked."""
    if isinstance(obj, Tensor):
        return obj.numel()
    if isinstance(obj, dict):
        return sum(tensor_floats(v) for v in obj.values())
    if isinstance(obj, (tuple, list)):
        return sum(tensor_floats(v) for v in obj)
    return 0
