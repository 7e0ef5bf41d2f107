"""A Llama-style decoder-only Transformer that regresses cell signals from inputs.

One sequence ``x`` of shape ``(T, n_features)`` in, ``(T, n_outputs)`` out; ``vmap``
for batches. With ``N`` a norm (RMSNorm or LayerNorm) and ``p_t`` the optional
absolute code,

.. math::

    h^0_t = W_\\text{in} x_t + p_t, \\qquad
    u^l = h^{l-1} + \\text{Attn}(N(h^{l-1})), \\qquad
    h^l = u^l + \\text{SwiGLU}(N(u^l)), \\qquad
    y_t = W_\\text{out} N(h^L_t).

Attention is causal and grouped-query: ``n_heads`` query heads share
``n_kv_heads`` key/value heads in consecutive groups. Position enters in one of
four ways (``positional``): a sinusoidal code added to ``h^0``; RoPE, rotating
queries and keys by position; ALiBi, a per-head linear penalty on distance; or
none (the causal mask alone). None of them has a learnt table, so every length up
to ``max_len`` works, not only the training length.

Streaming: ``step(cache, x_t)`` consumes one sample against a preallocated
:class:`KVCache` and returns what the full forward returns at that position.

Parameters are float32; ``compute_dtype`` (e.g. ``"bfloat16"``) casts them and the
activations for the forward pass only. Norms and softmax run in float32.
"""

from __future__ import annotations

import functools
import math
from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray
from pydantic import Field, ValidationInfo, field_validator

from cellax.config import Strict
from cellax.models import attention_kernel, mlp_kernel

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


class TransformerConfig(Strict):
    """Hyperparameters of :class:`Transformer`; each check names its field."""

    kind: Literal["transformer"] = "transformer"
    width: int = Field(64, gt=0, le=16_384)
    n_layers: int = Field(4, gt=0, le=1024)
    n_heads: int = Field(4, gt=0)
    n_kv_heads: int | None = Field(None, gt=0, description="key/value heads; None: n_heads (plain multi-head)")
    mlp_hidden: int | None = Field(None, gt=0, description="SwiGLU hidden size; None: 8/3 width, rounded up to 8")
    norm: Literal["rms", "layer"] = "rms"
    positional: Literal["sinusoidal", "rope", "alibi", "none"] = Field("rope", validate_default=True)
    rope_theta: float = Field(10_000.0, gt=0)
    max_len: int = Field(4096, gt=0)
    norm_eps: float = Field(1e-5, gt=0)
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    attention: Literal["auto", "kernel", "flash", "blockwise", "fused"] = Field(
        "auto", description="full-sequence attention: kernel (a C++ CPU kernel each way), flash (custom VJP), "
        "blockwise, fused (jax.nn.dot_product_attention), or auto (kernel in a one-device CPU process where it "
        "builds, else flash; fused off CPU)"
    )
    swiglu: Literal["auto", "kernel", "xla"] = Field(
        "auto", description="SwiGLU's activation silu(g)·u in the full forward: kernel (a C++ CPU kernel each way), "
        "xla, or auto (kernel in a one-device CPU process where it builds)"
    )

    @field_validator("n_heads")
    @classmethod
    def _heads_divide_width(cls, n_heads: int, info: ValidationInfo) -> int:
        width = info.data.get("width")
        if width is not None and width % n_heads:
            raise ValueError(f"n_heads ({n_heads}) must divide width ({width})")
        return n_heads

    @field_validator("n_kv_heads")
    @classmethod
    def _kv_heads_divide_heads(cls, n_kv_heads: int | None, info: ValidationInfo) -> int | None:
        n_heads = info.data.get("n_heads")
        if n_kv_heads is not None and n_heads is not None and n_heads % n_kv_heads:
            raise ValueError(f"n_kv_heads ({n_kv_heads}) must divide n_heads ({n_heads})")
        return n_kv_heads

    @field_validator("positional")
    @classmethod
    def _rope_needs_even_heads(cls, positional: str, info: ValidationInfo) -> str:
        width, n_heads = info.data.get("width"), info.data.get("n_heads")
        if positional == "rope" and width and n_heads and (width // n_heads) % 2:
            raise ValueError(f"positional 'rope' needs an even head dimension, got width/n_heads = {width // n_heads}")
        return positional

    @property
    def head_dim(self) -> int:
        return self.width // self.n_heads

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def hidden(self) -> int:
        return self.mlp_hidden or 8 * math.ceil(8 * self.width / 3 / 8)

    @property
    def dtype(self):
        return DTYPES[self.compute_dtype]


def sinusoidal(positions: Int[Array, " T"], width: int) -> Float[Array, "T width"]:
    """Absolute code ``p_t = [sin(t ω_i), cos(t ω_i)]``, ``ω_i = 10000^(-i/m)``, ``i < m = ceil(width/2)``."""
    m = (width + 1) // 2
    omega = 10_000.0 ** (-jnp.arange(m, dtype=jnp.float32) / m)
    angles = positions.astype(jnp.float32)[:, None] * omega
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)[:, :width]


def rope(x: Float[Array, "T heads d"], positions: Int[Array, " T"], theta: float) -> Float[Array, "T heads d"]:
    """Rotary embedding: rotate each pair ``(x_2i, x_2i+1)`` by the angle ``t θ^(-2i/d)``.

    A rotation by ``t`` on queries and by ``s`` on keys leaves ``q·k`` a function of
    ``t - s`` only, so attention sees relative position.
    """
    return _from_halves(rope_halves(_to_halves(x), positions, theta))


def rope_halves(x: Float[Array, "T heads d"], positions: Int[Array, " T"], theta: float) -> Float[Array, "T heads d"]:
    """:func:`rope` on the halves layout: pair ``i`` is ``(x_i, x_{i+d/2})`` instead of ``(x_2i, x_2i+1)``.

    Contiguous halves need no strided gather; the model projects its queries and keys
    straight into this layout (:func:`_halves_rows`), which leaves every ``q·k`` unchanged.
    """
    half = x.shape[-1] // 2
    angles = positions.astype(jnp.float32)[:, None, None] * theta ** (-jnp.arange(half, dtype=jnp.float32) / half)
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x1, x2 = x[..., :half].astype(jnp.float32), x[..., half:].astype(jnp.float32)
    return jnp.concatenate([x1 * cos - x2 * sin, x1 * sin + x2 * cos], axis=-1).astype(x.dtype)


def _to_halves(x: Float[Array, "*a d"]) -> Float[Array, "*a d"]:
    """``(x_0, x_1, x_2, x_3, …) → (x_0, x_2, …, x_1, x_3, …)`` on the last axis."""
    return x.reshape(*x.shape[:-1], -1, 2).swapaxes(-1, -2).reshape(x.shape)


def _from_halves(x: Float[Array, "*a d"]) -> Float[Array, "*a d"]:
    """The inverse of :func:`_to_halves`."""
    return x.reshape(*x.shape[:-1], 2, -1).swapaxes(-1, -2).reshape(x.shape)


def _halves_rows(weight: Float[Array, "heads*d width"], heads: int) -> Float[Array, "heads*d width"]:
    """A projection's output rows reordered so each head's output is in the halves layout of :func:`rope_halves`."""
    return _to_halves(weight.reshape(heads, -1, weight.shape[-1]).swapaxes(-1, -2)).swapaxes(-1, -2).reshape(weight.shape)


def alibi_slopes(n_heads: int) -> Float[Array, " heads"]:
    """ALiBi's per-head penalty ``m_h = 2^(-8h/n)``, ``h = 1..n`` (Press et al., 2022).

    For ``n`` not a power of two: the slopes of the power ``p < n`` below it, then
    every other slope of ``2p``, as in the paper.
    """

    def geometric(n: int) -> list[float]:
        return [2.0 ** (-8.0 * h / n) for h in range(1, n + 1)]

    p = 2 ** int(math.log2(n_heads))
    return jnp.asarray(geometric(p) + geometric(2 * p)[0::2][: n_heads - p], dtype=jnp.float32)


def attend(
    q: Float[Array, "Tq heads d"],
    k: Float[Array, "kv_heads Tk d"],
    v: Float[Array, "kv_heads Tk d"],
    q_pos: Int[Array, " Tq"],
    k_pos: Int[Array, " Tk"],
    slopes: Float[Array, " heads"] | None,
) -> Float[Array, "Tq heads*d"]:
    """Causal grouped-query attention ``softmax(q kᵀ/√d − m_h (t − s), s ≤ t) v``.

    Query head ``h`` reads key/value head ``h // (heads / kv_heads)``. Keys at a
    position after the query's (``s > t``, including unwritten cache rows) get
    weight zero. Logits and softmax are float32 whatever the inputs. Keys and values
    are head-major, the layout of the KV cache, so that no step transposes the cache.
    """
    tq, heads, d = q.shape
    kv_heads = k.shape[0]
    q = (q / math.sqrt(d)).reshape(tq, kv_heads, heads // kv_heads, d).transpose(1, 2, 0, 3)
    weights = jax.nn.softmax(_scores(q, k, q_pos, k_pos, slopes), axis=-1).astype(v.dtype)
    return jnp.einsum("grts,gsd->tgrd", weights, v).reshape(tq, heads * d)


def _scores(q, k, q_pos, k_pos, slopes):
    """Float32 logits ``q kᵀ − m_h (t − s)`` masked to ``s ≤ t``; ``q`` is ``(g, r, Tq, d)``, pre-scaled."""
    logits = jnp.einsum("grtd,gsd->grts", q, k, preferred_element_type=jnp.float32)
    distance = q_pos[:, None] - k_pos[None, :]
    if slopes is not None:
        logits = logits - slopes.reshape(k.shape[0], -1, 1, 1) * distance
    return jnp.where(distance >= 0, logits, -jnp.inf)


ATTENTION_BLOCK = 64
FLASH_BLOCK = 32


def causal_self_attend(
    q: Float[Array, "T heads d"],
    k: Float[Array, "kv_heads T d"],
    v: Float[Array, "kv_heads T d"],
    positions: Int[Array, " T"],
    slopes: Float[Array, " heads"] | None,
    block: int = ATTENTION_BLOCK,
) -> Float[Array, "T heads*d"]:
    """:func:`attend` over a whole sequence, one block of ``block`` queries at a time.

    Query block ``i`` reads only keys ``0 … (i + 1)·block``: the masked upper triangle is
    never computed (``(n + 1) / 2n`` of the dense work for ``n`` blocks), and each block's
    scores stay small enough for the cache. The result is the dense one (the skipped
    keys have weight exactly zero). Lengths that are not a multiple of ``block`` take
    the dense path. Reverse mode keeps every block's weights (see :func:`flash_attend`).
    """
    length = q.shape[0]
    if length % block or length <= block:
        return attend(q, k, v, positions, positions, slopes)
    outputs = []
    for end in range(block, length + 1, block):
        start = end - block
        outputs.append(attend(q[start:end], k[:, :end], v[:, :end], positions[start:end], positions[:end], slopes))
    return jnp.concatenate(outputs, axis=0)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _flash(q, k, v, positions, slopes, block):
    return _flash_forward(q, k, v, positions, slopes, block)[0]


def _flash_forward(q, k, v, positions, slopes, block):
    """Output and residuals ``(Q/√d, K, V, O, ℓ)``; each query block's logits against its key prefix."""
    length, heads, d = q.shape
    g = k.shape[0]
    qs = (q / math.sqrt(d)).reshape(length, g, heads // g, d).transpose(1, 2, 0, 3)
    outs, lses = [], []
    for end in range(block, length + 1, block):
        sl = slice(end - block, end)
        s = _scores(qs[:, :, sl], k[:, :end], positions[sl], positions[:end], slopes)
        m = jnp.max(s, axis=-1, keepdims=True)
        p = jnp.exp(s - m)
        l = jnp.sum(p, axis=-1, keepdims=True)
        outs.append(jnp.einsum("grts,gsd->grtd", p.astype(v.dtype), v[:, :end], preferred_element_type=jnp.float32) / l)
        lses.append(m + jnp.log(l))
    o = jnp.concatenate(outs, axis=2)  # (g, r, T, d) float32
    lse = jnp.concatenate(lses, axis=2)  # (g, r, T, 1)
    out = o.transpose(2, 0, 1, 3).reshape(length, heads * d).astype(q.dtype)
    return out, (qs, k, v, positions, slopes, o, lse)


def _flash_bwd(block, res, dout):
    """``dQ, dK, dV`` with each block's weights recomputed from ``ℓ``."""
    qs, k, v, positions, slopes, o, lse = res
    g, r, length, d = qs.shape
    do = dout.reshape(length, g, r, d).transpose(1, 2, 0, 3).astype(jnp.float32)
    delta = jnp.sum(do * o, axis=-1, keepdims=True)  # rowsum(dP ⊙ P) = do · o
    dq, dk, dv = [], jnp.zeros(k.shape, jnp.float32), jnp.zeros(v.shape, jnp.float32)
    for end in range(block, length + 1, block):
        sl = slice(end - block, end)
        p = jnp.exp(_scores(qs[:, :, sl], k[:, :end], positions[sl], positions[:end], slopes) - lse[:, :, sl])
        dv = dv.at[:, :end].add(jnp.einsum("grts,grtd->gsd", p, do[:, :, sl]))
        ds = p * (jnp.einsum("grtd,gsd->grts", do[:, :, sl], v[:, :end].astype(jnp.float32)) - delta[:, :, sl])
        dq.append(jnp.einsum("grts,gsd->grtd", ds, k[:, :end].astype(jnp.float32)))
        dk = dk.at[:, :end].add(jnp.einsum("grts,grtd->gsd", ds, qs[:, :, sl].astype(jnp.float32)))
    dq = (jnp.concatenate(dq, axis=2) / math.sqrt(d)).transpose(2, 0, 1, 3).reshape(length, g * r, d)
    return dq.astype(qs.dtype), dk.astype(k.dtype), dv.astype(v.dtype), None, None


_flash.defvjp(_flash_forward, _flash_bwd)


def flash_attend(
    q: Float[Array, "T heads d"],
    k: Float[Array, "kv_heads T d"],
    v: Float[Array, "kv_heads T d"],
    positions: Int[Array, " T"],
    slopes: Float[Array, " heads"] | None,
    block: int = FLASH_BLOCK,
) -> Float[Array, "T heads*d"]:
    """:func:`causal_self_attend` with a memory-efficient gradient (FlashAttention, Dao et al., 2022).

    The forward pass attends block by block and keeps only the output ``o`` and the
    log-sum-exp ``ℓ_t = log Σ_s exp(S_ts)`` of every query. The backward pass recomputes
    each block's weights ``P = exp(S − ℓ)`` instead of storing the ``T × T`` matrix, and with
    ``D_t = dO_t · O_t`` forms

    .. math::

        dV = Pᵀ dO, \\qquad dS = P ⊙ (dO\\,Vᵀ − D), \\qquad dQ = dS\\,K / √d, \\qquad dK = dSᵀ Q / √d.

    Values and gradients equal the dense ones. Lengths that are not a multiple of
    ``block`` take the dense path; the ALiBi slopes are constants (no gradient).
    """
    length = q.shape[0]
    if length % block or length <= block:
        return attend(q, k, v, positions, positions, slopes)
    return _flash(q, k, v, positions, slopes, block)


def fused_attend(
    q: Float[Array, "T heads d"],
    k: Float[Array, "T kv_heads d"],
    v: Float[Array, "T kv_heads d"],
    positions: Int[Array, " T"],
    slopes: Float[Array, " heads"] | None,
) -> Float[Array, "T heads*d"]:
    """Causal self-attention by ``jax.nn.dot_product_attention`` (the fused cuDNN kernel on a GPU).

    Positions are ``0 … T-1`` (a whole sequence), so the mask is ``is_causal``; ALiBi
    enters as the bias ``−m_h (t − s)``. Keys and values are position-major.
    """
    length, heads, d = q.shape
    bias = None
    if slopes is not None:
        distance = (positions[:, None] - positions[None, :]).astype(jnp.float32)
        bias = (-slopes[:, None, None] * distance).astype(q.dtype)
    out = jax.nn.dot_product_attention(q, k, v, bias=bias, is_causal=True)
    return out.reshape(length, heads * d)


def _cpu_kernels_apply() -> bool:
    """Whether ``auto`` may take a C++ CPU kernel: a CPU backend with one device. XLA's SPMD partitioner cannot split
    a custom call, so over several (forced host) devices a kernel would run on the whole batch on every device;
    the kernels use every core through XLA's thread pool instead."""
    return jax.default_backend() == "cpu" and jax.device_count() == 1


def resolve_attention(implementation: str, head_dim: int) -> str:
    """``auto``'s choice here: the C++ kernel on a one-device CPU process where it builds (head dimension up to
    :data:`~cellax.models.attention_kernel.MAX_HEAD_DIM`), else ``flash``; ``fused`` off CPU."""
    if implementation != "auto":
        return implementation
    if jax.default_backend() != "cpu":
        return "fused"
    kernel = _cpu_kernels_apply() and head_dim <= attention_kernel.MAX_HEAD_DIM and attention_kernel.available()
    return "kernel" if kernel else "flash"


def resolve_swiglu(implementation: str) -> str:
    """``auto``'s choice here: the C++ kernel on a one-device CPU process where it builds, else ``xla``."""
    if implementation != "auto":
        return implementation
    return "kernel" if _cpu_kernels_apply() and mlp_kernel.available() else "xla"


def self_attend(
    q: Float[Array, "T heads d"],
    k: Float[Array, "T kv_heads d"],
    v: Float[Array, "T kv_heads d"],
    positions: Int[Array, " T"],
    slopes: Float[Array, " heads"] | None,
    implementation: str = "auto",
) -> Float[Array, "T heads*d"]:
    """Causal self-attention of a whole sequence by ``implementation`` (:func:`resolve_attention`); all give one
    result. Keys and values are position-major, as projected."""
    implementation = resolve_attention(implementation, q.shape[-1])
    if implementation == "kernel":
        return attention_kernel.kernel_attend(jnp.concatenate([q, k, v], axis=1), q.shape[1], slopes)
    if implementation == "fused":
        return fused_attend(q, k, v, positions, slopes)
    k, v = k.transpose(1, 0, 2), v.transpose(1, 0, 2)
    if implementation == "flash":
        return flash_attend(q, k, v, positions, slopes)
    return causal_self_attend(q, k, v, positions, slopes)


def _linear(x: Float[Array, "T a"], layer: eqx.nn.Linear) -> Float[Array, "T b"]:
    return jax.vmap(layer)(x)


class Attention(eqx.Module):
    """Causal grouped-query self-attention with the configured position signal."""

    config: TransformerConfig = eqx.field(static=True)
    wq: eqx.nn.Linear
    wk: eqx.nn.Linear
    wv: eqx.nn.Linear
    wo: eqx.nn.Linear

    def __init__(self, config: TransformerConfig, *, key: PRNGKeyArray):
        c, f32 = config, jnp.float32
        kq, kk, kv, ko = jax.random.split(key, 4)
        self.config = config
        self.wq = eqx.nn.Linear(c.width, c.n_heads * c.head_dim, use_bias=False, dtype=f32, key=kq)
        self.wk = eqx.nn.Linear(c.width, c.kv_heads * c.head_dim, use_bias=False, dtype=f32, key=kk)
        self.wv = eqx.nn.Linear(c.width, c.kv_heads * c.head_dim, use_bias=False, dtype=f32, key=kv)
        self.wo = eqx.nn.Linear(c.n_heads * c.head_dim, c.width, use_bias=False, dtype=f32, key=ko)

    def _project(self, x: Float[Array, "T width"]) -> Float[Array, "T heads+2*kv_heads d"]:
        """Queries, keys and values of every position as one array (one matmul); with RoPE, the query and
        key rows in the halves layout of :func:`rope_halves`, not yet rotated (the same ``q·k``)."""
        c = self.config
        wq, wk = self.wq.weight, self.wk.weight
        if c.positional == "rope":
            wq, wk = _halves_rows(wq, c.n_heads), _halves_rows(wk, c.kv_heads)
        w = jnp.concatenate([wq, wk, self.wv.weight])
        return (x @ w.T).reshape(-1, c.n_heads + 2 * c.kv_heads, c.head_dim)

    def _qkv(self, x: Float[Array, "T width"], positions: Int[Array, " T"]):
        """Queries, keys and values, position-major; with RoPE, queries and keys rotated (halves layout)."""
        c = self.config
        q, k, v = jnp.split(self._project(x), [c.n_heads, c.n_heads + c.kv_heads], axis=1)
        if c.positional == "rope":
            q, k = rope_halves(q, positions, c.rope_theta), rope_halves(k, positions, c.rope_theta)
        return q, k, v

    def _slopes(self) -> Float[Array, " heads"] | None:
        return alibi_slopes(self.config.n_heads) if self.config.positional == "alibi" else None

    def __call__(self, x: Float[Array, "T width"], positions: Int[Array, " T"]) -> Float[Array, "T width"]:
        """Self-attention of a whole sequence at ``positions`` ``0 … T-1``. The CPU kernel takes the projection
        as it comes and rotates queries and keys itself; the other implementations get them split and rotated."""
        c = self.config
        implementation = resolve_attention(c.attention, c.head_dim)
        if implementation == "kernel":
            theta = c.rope_theta if c.positional == "rope" else None
            out = attention_kernel.kernel_attend(self._project(x), c.n_heads, self._slopes(), theta)
        else:
            q, k, v = self._qkv(x, positions)
            out = self_attend(q, k, v, positions, self._slopes(), implementation)
        return _linear(out, self.wo)

    def step(
        self,
        x_t: Float[Array, " width"],
        pos: Int[Array, ""],
        k_cache: Float[Array, "kv_heads L d"],
        v_cache: Float[Array, "kv_heads L d"],
    ):
        """One position: write its key/value at slot ``pos`` (axis 1), attend over slots ``≤ pos``."""
        q, k, v = self._qkv(x_t[None], pos[None])
        k_cache, v_cache = k_cache.at[:, pos].set(k[0]), v_cache.at[:, pos].set(v[0])
        rows = jnp.arange(k_cache.shape[1], dtype=pos.dtype)
        out = attend(q, k_cache, v_cache, pos[None], rows, self._slopes())
        return self.wo(out[0]), k_cache, v_cache


class SwiGLU(eqx.Module):
    """``W_2 (silu(W_1 h) ⊙ W_3 h)`` (Shazeer, 2020), no biases."""

    w1: eqx.nn.Linear
    w2: eqx.nn.Linear
    w3: eqx.nn.Linear

    def __init__(self, width: int, hidden: int, *, key: PRNGKeyArray):
        k1, k2, k3 = jax.random.split(key, 3)
        self.w1 = eqx.nn.Linear(width, hidden, use_bias=False, dtype=jnp.float32, key=k1)
        self.w2 = eqx.nn.Linear(hidden, width, use_bias=False, dtype=jnp.float32, key=k2)
        self.w3 = eqx.nn.Linear(width, hidden, use_bias=False, dtype=jnp.float32, key=k3)

    def __call__(self, h: Float[Array, "*T width"], kernel: bool = False) -> Float[Array, "*T width"]:
        """``kernel``: the activation by the C++ CPU kernel (:mod:`cellax.models.mlp_kernel`); the gate and up
        projections are one matmul either way."""
        gu = h @ jnp.concatenate([self.w1.weight, self.w3.weight]).T
        activation = mlp_kernel.kernel_swiglu if kernel else mlp_kernel.xla_swiglu
        return activation(gu) @ self.w2.weight.T


def _norm(config: TransformerConfig) -> eqx.nn.RMSNorm | eqx.nn.LayerNorm:
    if config.norm == "rms":
        return eqx.nn.RMSNorm(config.width, eps=config.norm_eps, use_bias=False, dtype=jnp.float32)
    return eqx.nn.LayerNorm(config.width, eps=config.norm_eps, dtype=jnp.float32)


class Block(eqx.Module):
    """Pre-norm residual block: attention then SwiGLU, each behind its own norm."""

    attn_norm: eqx.nn.RMSNorm | eqx.nn.LayerNorm
    attn: Attention
    mlp_norm: eqx.nn.RMSNorm | eqx.nn.LayerNorm
    mlp: SwiGLU

    def __init__(self, config: TransformerConfig, *, key: PRNGKeyArray):
        ka, km = jax.random.split(key)
        self.attn_norm, self.mlp_norm = _norm(config), _norm(config)
        self.attn = Attention(config, key=ka)
        self.mlp = SwiGLU(config.width, config.hidden, key=km)

    def __call__(self, h: Float[Array, "T width"], positions: Int[Array, " T"]) -> Float[Array, "T width"]:
        h = h + self.attn(jax.vmap(self.attn_norm)(h), positions)
        return h + self.mlp(jax.vmap(self.mlp_norm)(h), kernel=resolve_swiglu(self.attn.config.swiglu) == "kernel")

    def step(self, h_t: Float[Array, " width"], pos: Int[Array, ""], k_cache: Array, v_cache: Array):
        a, k_cache, v_cache = self.attn.step(self.attn_norm(h_t), pos, k_cache, v_cache)
        h_t = h_t + a
        return h_t + self.mlp(self.mlp_norm(h_t)), k_cache, v_cache


class KVCache(eqx.Module):
    """Keys and values of the positions seen so far, one preallocated array per layer.

    ``pos`` is the position the next sample takes; rows at and after it are unused.
    Fixed shapes, so a cache is a ``lax.scan`` carry.
    """

    k: tuple[Float[Array, "kv_heads L d"], ...]
    v: tuple[Float[Array, "kv_heads L d"], ...]
    pos: Int[Array, ""]


def _cast(tree, dtype):
    return jax.tree.map(lambda a: a.astype(dtype) if eqx.is_inexact_array(a) else a, tree)


class Transformer(eqx.Module):
    """Decoder-only Transformer regressor: ``(T, n_features) → (T, n_outputs)``, causal."""

    config: TransformerConfig = eqx.field(static=True)
    embed: eqx.nn.Linear
    blocks: list[Block]
    norm: eqx.nn.RMSNorm | eqx.nn.LayerNorm
    head: eqx.nn.Linear

    def __init__(self, config: TransformerConfig | dict, n_features: int, n_outputs: int, *, key: PRNGKeyArray):
        config = TransformerConfig.model_validate(config)
        ke, kh, *kb = jax.random.split(key, config.n_layers + 2)
        self.config = config
        self.embed = eqx.nn.Linear(n_features, config.width, dtype=jnp.float32, key=ke)
        self.blocks = [Block(config, key=k) for k in kb]
        self.norm = _norm(config)
        self.head = eqx.nn.Linear(config.width, n_outputs, dtype=jnp.float32, key=kh)

    def _embed(self, x: Float[Array, "T n_features"], positions: Int[Array, " T"]) -> Float[Array, "T width"]:
        h = _linear(x.astype(self.config.dtype), self.embed)
        if self.config.positional == "sinusoidal":
            h = h + sinusoidal(positions, self.config.width).astype(h.dtype)
        return h

    def __call__(self, x: Float[Array, "T n_features"]) -> Float[Array, "T n_outputs"]:
        """Outputs at every position; ``y_t`` depends on ``x_{≤t}`` only."""
        if x.shape[0] > self.config.max_len:
            raise ValueError(f"sequence length {x.shape[0]} exceeds max_len {self.config.max_len}")
        model = _cast(self, self.config.dtype)
        positions = jnp.arange(x.shape[0], dtype=jnp.int32)
        h = model._embed(x, positions)
        for block in model.blocks:
            h = block(h, positions)
        return _linear(jax.vmap(model.norm)(h), model.head).astype(jnp.float32)

    def init_cache(self, max_len: int | None = None) -> KVCache:
        """An empty cache for up to ``max_len`` (default ``config.max_len``) streamed samples."""
        c = self.config
        max_len = c.max_len if max_len is None else max_len
        if not 0 < max_len <= c.max_len:
            raise ValueError(f"max_len must lie in [1, config.max_len = {c.max_len}], got {max_len}")
        def zeros():  # distinct buffers, so a jitted step may donate the cache
            return tuple(jnp.zeros((c.kv_heads, max_len, c.head_dim), c.dtype) for _ in range(c.n_layers))

        return KVCache(k=zeros(), v=zeros(), pos=jnp.zeros((), jnp.int32))

    def init_state(self) -> KVCache:
        """The streaming state shared with the other models: :meth:`init_cache` at ``config.max_len``."""
        return self.init_cache()

    def step(self, cache: KVCache, x_t: Float[Array, " n_features"]) -> tuple[Float[Array, " n_outputs"], KVCache]:
        """Consume sample ``x_t`` at position ``cache.pos``; equals ``self(x)[cache.pos]``.

        Stepping a full cache is an error (raised by ``equinox.error_if``, also under ``jit``).
        """
        model = _cast(self, self.config.dtype)
        pos = eqx.error_if(cache.pos, cache.pos >= cache.k[0].shape[1], "KV cache is full; use a larger init_cache")
        h = model._embed(x_t[None], pos[None])[0]
        ks, vs = [], []
        for block, k, v in zip(model.blocks, cache.k, cache.v):
            h, k, v = block.step(h, pos, k, v)
            ks.append(k)
            vs.append(v)
        y = model.head(model.norm(h)).astype(jnp.float32)
        return y, KVCache(k=tuple(ks), v=tuple(vs), pos=pos + 1)
