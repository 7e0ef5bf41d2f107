"""The CPU attention kernel: the dense causal attention's values and gradients, for any shape the model makes."""

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cellax.models import attention_kernel
from cellax.models.attention_kernel import kernel_attend
from cellax.models.transformer import alibi_slopes, attend, resolve_attention, rope_halves


def dense(qkv, heads, slopes, rope_theta=None):
    """The reference: split, RoPE on the halves layout, :func:`attend`."""
    kv_heads = (qkv.shape[1] - heads) // 2
    q, k, v = jnp.split(qkv, [heads, heads + kv_heads], axis=1)
    positions = jnp.arange(qkv.shape[0])
    if rope_theta is not None:
        q, k = rope_halves(q, positions, rope_theta), rope_halves(k, positions, rope_theta)
    return attend(q, k.transpose(1, 0, 2), v.transpose(1, 0, 2), positions, positions, slopes)


def sample(batch: tuple[int, ...], length: int, heads: int, kv_heads: int, d: int, seed: int = 0):
    kx, kw = jax.random.split(jax.random.key(seed))
    qkv = jax.random.normal(kx, (*batch, length, heads + 2 * kv_heads, d))
    return qkv, jax.random.normal(kw, (*batch, length, heads * d))


def value_and_grad(f, qkv, weights):
    """A loss that weighs every output differently, its value and gradient (the batch vmapped)."""
    return jax.jit(jax.value_and_grad(lambda x: jnp.sum(weights * jnp.tanh(jax.vmap(f)(x)))))(qkv)


# (length, heads, kv_heads, d): blocks of four rows and vectors of 16 keys, whole and partial; grouped queries;
# head dimensions of one, two and four padded vectors.
SHAPES = [(64, 4, 4, 16), (37, 4, 2, 8), (5, 2, 1, 16), (50, 6, 3, 24), (19, 2, 2, 40)]


@pytest.mark.parametrize("shape, position", [(SHAPES[0], "none"), (SHAPES[0], "alibi"), (SHAPES[0], "rope"),
                                             (SHAPES[1], "none"), (SHAPES[2], "rope"), (SHAPES[3], "alibi"),
                                             (SHAPES[4], "rope"), (SHAPES[4], "none")])
def test_the_kernel_equals_the_dense_attention_in_values_and_gradients(shape, position):
    length, heads, kv_heads, d = shape
    qkv, weights = sample((3,), *shape)
    slopes = alibi_slopes(heads) if position == "alibi" else None
    theta = 500.0 if position == "rope" else None  # a short wavelength: every pair turns visibly over 64 steps
    kernel = lambda x: kernel_attend(x, heads, slopes, theta)
    reference = lambda x: dense(x, heads, slopes, theta)
    np.testing.assert_allclose(jax.jit(jax.vmap(kernel))(qkv), jax.vmap(reference)(qkv), rtol=1e-5, atol=2e-6)
    (value, grad), (dense_value, dense_grad) = (value_and_grad(f, qkv, weights) for f in (kernel, reference))
    np.testing.assert_allclose(value, dense_value, rtol=1e-5)
    assert float(jnp.max(jnp.abs(dense_grad))) > 0
    np.testing.assert_allclose(grad, dense_grad, rtol=1e-4, atol=3e-6)


def test_unbatched_and_nested_vmaps_give_the_same_result():
    qkv, _ = sample((2, 3), 24, 4, 2, 16, seed=1)
    slopes = alibi_slopes(4)
    one = lambda x: kernel_attend(x, 4, slopes)
    nested = jax.jit(jax.vmap(jax.vmap(one)))(qkv)
    np.testing.assert_allclose(nested[1, 2], jax.jit(one)(qkv[1, 2]), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(nested, jax.vmap(jax.vmap(lambda x: dense(x, 4, slopes)))(qkv), rtol=1e-5, atol=2e-6)


def test_inputs_in_other_dtypes_come_back_in_their_dtype():
    qkv, _ = sample((), 32, 2, 2, 16, seed=2)
    out = kernel_attend(qkv.astype(jnp.bfloat16), 2, None)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), dense(qkv, 2, None), atol=0.05)


def test_bad_shapes_are_refused_by_name_and_auto_takes_flash_above_the_kernels_head_dimension():
    qkv, _ = sample((), 8, 1, 1, 136)
    with pytest.raises(ValueError, match="head dimensions up to 128, got 136; use attention 'flash'"):
        kernel_attend(qkv, 1, None)
    assert resolve_attention("auto", 136) == "flash"
    qkv, _ = sample((), 8, 4, 1, 16)  # 6 rows
    with pytest.raises(ValueError, match="qkv has 6 heads per position; 3 query heads"):
        kernel_attend(qkv, 3, None)
    with pytest.raises(ValueError, match="RoPE needs an even head dimension"):
        kernel_attend(sample((), 8, 2, 1, 7)[0], 2, None, rope_theta=1e4)


def test_over_several_devices_auto_takes_the_xla_forms_and_an_explicit_kernel_stays_correct():
    """GSPMD cannot split a custom call: on a batch sharded over two (forced host) devices the kernel would run on
    the whole batch on each, so auto takes flash and XLA's activation; asking for the kernel still gives the same
    values as one device."""
    script = """
import os
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from cellax.models.attention_kernel import kernel_attend
from cellax.models.transformer import resolve_attention, resolve_swiglu
assert jax.device_count() == 2
assert (resolve_attention("auto", 16), resolve_swiglu("auto")) == ("flash", "xla")
qkv = jax.random.normal(jax.random.key(0), (4, 32, 6, 16))
sharded = jax.device_put(qkv, NamedSharding(Mesh(np.array(jax.devices()), ("data",)), PartitionSpec("data")))
f = jax.jit(jax.vmap(lambda x: kernel_attend(x, 2, None, 1e4)))
np.testing.assert_allclose(f(sharded), f(qkv), rtol=1e-6, atol=1e-7)
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=os.getcwd())
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-2000:]


def test_auto_takes_the_kernel_on_cpu_and_flash_where_it_cannot_be_built(monkeypatch):
    assert attention_kernel.available()  # the suite's machines have a C++ compiler
    assert resolve_attention("auto", 16) == "kernel"
    monkeypatch.setattr(attention_kernel, "available", lambda: False)
    assert resolve_attention("auto", 16) == "flash"
    assert resolve_attention("blockwise", 16) == "blockwise"
