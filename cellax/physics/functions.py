"""PyBaMM expression trees compiled to pure JAX functions.

PyBaMM builds every parameter function a model uses as an expression tree
(``pybamm.Symbol``): the parameter set's own Python function, called with
symbols, wrapped in the model-level clipping, regularisation and asymptotes of
``pybamm.LithiumIonParameters``. :func:`compile_expression` walks such a tree
once, after ``pybamm.ParameterValues`` has substituted the parameter values,
and returns a closure of ``jax.numpy`` operations: nothing is retyped, so a
compiled function is the same arithmetic PyBaMM's numpy evaluator performs
(agreement to rounding, ~1e-15 relative).

The free symbols of a tree are its arguments: ``pybamm.Variable`` or
``pybamm.InputParameter`` nodes, looked up by name. Every subtree without free
symbols is evaluated by PyBaMM once and becomes a float64 constant.

Interpolants. PyBaMM evaluates data tables with scipy (``interp1d`` for
``"linear"``, ``CubicSpline`` (not-a-knot) for ``"cubic"``,
``PchipInterpolator`` for ``"pchip"``) and, inside IDAKLU, with CasADi
(``interpn_linear``, the B-spline of the same not-a-knot cubic, and the same
Hermite cubics): the same piecewise polynomials. We take scipy's breakpoints
and coefficients and evaluate them with ``jnp.searchsorted`` and Horner's rule,
extrapolating with the end pieces as scipy does (``extrapolate=False`` gives
NaN outside the table). Only 1-D tables are supported; PyBaMM's own
``EvaluatorJax`` cannot compile interpolants at all (it calls the scipy object).
Beyond a cubic table's range PyBaMM's two paths disagree (scipy extrapolates the
end cubic, CasADi's B-spline does not: Ai2020's LiCoO2 OCP, tabulated on
sto in [0.4, 1], reads 0.006 V at sto = 0.3 in IDAKLU, 4.70 V here and in
PyBaMM's numpy evaluation); inside it they agree to ~1e-14 V.

A node type not listed in :func:`compile_expression` raises
:class:`UnsupportedExpression`, a ``ValueError`` naming the node.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

Env = dict[str, jax.Array]


class UnsupportedExpression(ValueError):
    """A PyBaMM expression that cannot be compiled to JAX (the message names the node)."""


class ParameterFunction:
    """A PyBaMM parameter function as a pure JAX function of named arguments.

    ``f(*args)`` broadcasts its arguments against each other and returns an array
    of the broadcast shape in their floating dtype (float64 for Python numbers); it is traceable by ``jit``, ``vmap`` and ``grad``.
    Instances compare equal when they compile the same PyBaMM expression, so two
    loads of one parameter set give equal (static) functions and share ``jit`` caches.
    """

    __slots__ = ("_fn", "_key", "arg_names", "name")

    def __init__(self, name: str, arg_names: Sequence[str], fn: Callable[[Env], jax.Array], key: object):
        self.name = name
        self.arg_names = tuple(arg_names)
        self._fn = fn
        self._key = (name, self.arg_names, key)

    def __call__(self, *args) -> jax.Array:
        if len(args) != len(self.arg_names):
            raise TypeError(f"{self.name} takes ({', '.join(self.arg_names)}), got {len(args)} argument(s)")
        dtype = jnp.result_type(*args)
        dtype = dtype if jnp.issubdtype(dtype, jnp.floating) else jnp.float64
        xs = [jnp.asarray(a, dtype=dtype) for a in args]
        out = self._fn(dict(zip(self.arg_names, xs)))
        shape = jnp.broadcast_shapes(*(x.shape for x in xs))
        return jnp.broadcast_to(jnp.asarray(out, dtype=dtype), shape)

    def __eq__(self, other) -> bool:
        return isinstance(other, ParameterFunction) and self._key == other._key

    def __hash__(self) -> int:
        return hash(self._key)

    def __repr__(self) -> str:
        return f"ParameterFunction({self.name!r}, args={self.arg_names})"


def compile_expression(symbol, arg_names: Sequence[str], name: str = "expression") -> ParameterFunction:
    """Compile a processed PyBaMM expression into a :class:`ParameterFunction`.

    Supported nodes: constants (any subtree without free symbols), ``Variable`` /
    ``InputParameter`` arguments, ``+ - * / **``, ``minimum``, ``maximum``,
    ``hypot``, ``%``, Heaviside comparisons, ``Negate``, ``AbsoluteValue``,
    ``Sign``, ``Floor``, ``Ceiling``, ``NotConstant``, broadcasts (identity on
    pointwise values), numpy/scipy.special elementwise functions (``exp``,
    ``log``, ``tanh``, ``erf`` ...), ``RegPower``, ``Arcsinh2`` and 1-D
    ``Interpolant`` nodes.
    """
    import pybamm

    arg_names = tuple(arg_names)
    cache: dict[int, Callable[[Env], jax.Array]] = {}

    def build(node) -> Callable[[Env], jax.Array]:
        if node.id not in cache:
            cache[node.id] = _build(pybamm, node, arg_names, build, name)
        return cache[node.id]

    return ParameterFunction(name, arg_names, build(symbol), key=symbol.id)


def _binary_ops(pybamm) -> dict[type, Callable]:
    return {
        pybamm.Addition: operator.add,
        pybamm.Subtraction: operator.sub,
        pybamm.Multiplication: operator.mul,
        pybamm.Inner: operator.mul,
        pybamm.Division: operator.truediv,
        pybamm.Power: _power,
        pybamm.Minimum: jnp.minimum,
        pybamm.Maximum: jnp.maximum,
        pybamm.Hypot: jnp.hypot,
        pybamm.Modulo: jnp.mod,
        pybamm.EqualHeaviside: lambda a, b: jnp.where(a <= b, 1.0, 0.0),
        pybamm.NotEqualHeaviside: lambda a, b: jnp.where(a < b, 1.0, 0.0),
    }


def _unary_ops(pybamm) -> dict[type, Callable]:
    return {
        pybamm.Negate: operator.neg,
        pybamm.AbsoluteValue: jnp.abs,
        pybamm.Sign: jnp.sign,
        pybamm.Floor: jnp.floor,
        pybamm.Ceiling: jnp.ceil,
        pybamm.NotConstant: lambda x: x,
    }


def _power(base, exponent):
    return jnp.power(base, exponent)


def _build(pybamm, node, arg_names, build, name) -> Callable[[Env], jax.Array]:
    if isinstance(node, pybamm.Variable | pybamm.InputParameter):
        if node.name not in arg_names:
            raise UnsupportedExpression(f"{name}: free symbol {node.name!r} is not one of the arguments {arg_names}")
        key = node.name
        return lambda env: env[key]
    if isinstance(node, pybamm.Scalar) or node.is_constant():  # pybamm.Constant (R, F) says it is not
        value = np.asarray(node.evaluate(), dtype=np.float64)
        if value.size != 1:
            raise UnsupportedExpression(f"{name}: non-scalar constant of shape {value.shape} ({node!s:.80})")
        constant = float(value.reshape(()))
        return lambda env: constant
    kind = type(node)
    children = [build(child) for child in node.children]
    binary = _binary_ops(pybamm)
    unary = _unary_ops(pybamm)
    if kind is pybamm.Power and node.children[1].is_constant():
        exponent = float(np.asarray(node.children[1].evaluate()).reshape(()))
        if exponent.is_integer():  # x**2.0 -> integer_pow: exact, and a finite gradient at 0
            base, k = children[0], int(exponent)
            return lambda env: base(env) ** k
    if kind in binary:
        op, (left, right) = binary[kind], children
        return lambda env: op(left(env), right(env))
    if kind in unary:
        op, (child,) = unary[kind], children
        return lambda env: op(child(env))
    if isinstance(node, pybamm.Broadcast):
        return children[0]
    if kind is pybamm.Interpolant:
        return _interpolant(node, children, name)
    if kind is pybamm.RegPower:
        base, exponent, scale = children
        delta = float(node.delta)
        if node.children[1].is_constant() and float(np.asarray(node.children[1].evaluate()).reshape(())) == 0.5:

            def reg_power(env):  # the square roots of j0: (x² + δ²)^(-1/4) without exp/log
                x = base(env) / scale(env)
                return x * jax.lax.rsqrt(jnp.sqrt(x**2 + delta**2)) * jnp.sqrt(scale(env))

            return reg_power

        def reg_power(env):
            x = base(env) / scale(env)
            a = exponent(env)
            return x * (x**2 + delta**2) ** ((a - 1) / 2) * scale(env) ** a

        return reg_power
    if kind is pybamm.Arcsinh2:
        a, b = children
        eps = float(node.eps)

        def arcsinh2(env):
            bv = b(env)
            b_eff = jnp.where(bv >= 0, 1.0, -1.0) * jnp.sqrt(bv**2 + eps**2)
            return jnp.arcsinh(a(env) / b_eff)

        return arcsinh2
    if isinstance(node, pybamm.Function) and len(children) == 1:
        op = _elementwise(node.function)
        if op is not None:
            (child,) = children
            return lambda env: op(child(env))
    raise UnsupportedExpression(f"{name}: cannot compile a PyBaMM {kind.__name__} node ({node!s:.80}) to JAX")


def _elementwise(function) -> Callable | None:
    """The jax equivalent of a numpy / scipy.special ufunc (or np.max/np.min), else None."""
    if isinstance(function, np.ufunc):
        fn_name = function.__name__
        return getattr(jnp, fn_name, None) or getattr(jax.scipy.special, fn_name, None)
    if function is np.max:
        return jnp.max
    if function is np.min:
        return jnp.min
    return None


def _interpolant(node, children, name) -> Callable[[Env], jax.Array]:
    """A 1-D PyBaMM interpolant as the piecewise polynomial scipy evaluates."""
    if node.dimension != 1 or np.asarray(node.y).ndim != 1:
        raise UnsupportedExpression(f"{name}: only 1-D scalar interpolants are supported ({node.name})")
    if node.interpolator == "linear":
        x = np.asarray(node.x[0], dtype=np.float64)
        y = np.asarray(node.y, dtype=np.float64)
        coeffs = np.stack([np.diff(y) / np.diff(x), y[:-1]])
    else:  # "cubic" (CubicSpline) and "pchip" (PchipInterpolator) are scipy PPoly objects
        x = np.asarray(node.function.x, dtype=np.float64)
        coeffs = np.asarray(node.function.c, dtype=np.float64).reshape(-1, len(x) - 1)
    breaks, coeffs = jnp.asarray(x), jnp.asarray(coeffs)
    lo, hi, last = float(x[0]), float(x[-1]), len(x) - 2
    extrapolate = bool(node.extrapolate)
    (child,) = children

    def ppoly(env):
        v = child(env)
        knots, table = breaks.astype(v.dtype), coeffs.astype(v.dtype)
        i = jnp.clip(jnp.searchsorted(knots, v, side="right") - 1, 0, last)
        dx = v - knots[i]
        out = table[0][i]
        for c in table[1:]:
            out = out * dx + c[i]
        if not extrapolate:
            out = jnp.where((v < lo) | (v > hi), jnp.nan, out)
        return out

    return ppoly
