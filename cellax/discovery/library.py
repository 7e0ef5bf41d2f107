"""Candidate libraries: named terms evaluated on signals, composable by ``+`` (union) and ``*`` (products).

A :class:`Library` maps a dict of signals (arrays of one shape, e.g. samples in time)
to the matrix :math:`\\Theta` whose columns are its terms,

.. math::

    \\dot x \\approx \\Theta(x, u)\\,\\xi, \\qquad \\Theta = [\\theta_1(x,u), \\dots, \\theta_p(x,u)],

and carries a readable name per column. Terms are elementwise functions of the
signals, so the same library evaluates a whole record, one sample (inside a
diffrax vector field) or a batch under ``vmap``. A library is an Equinox module
whose fields are static: it is a PyTree that ``jit`` closes over.

Spatial terms (:func:`spherical_terms`) act on a field ``c[t, i]`` on cellax's
spherical particle mesh (:class:`cellax.physics.particle.SphericalMesh`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import equinox as eqx
import jax.numpy as jnp

GAS_CONSTANT = 8.314462618


class Term(eqx.Module):
    """One column of a library: ``fn(signals) -> array`` with a readable ``name``."""

    name: str = eqx.field(static=True)
    fn: Callable = eqx.field(static=True)

    def __call__(self, signals: dict):
        return self.fn(signals)

    def __mul__(self, other: Term) -> Term:
        return Term(f"{self.name}*{other.name}", lambda s, a=self.fn, b=other.fn: a(s) * b(s))


class Library(eqx.Module):
    """An ordered set of terms; ``lib(signals)`` stacks them on the last axis."""

    terms: tuple[Term, ...] = eqx.field(static=True)

    def __init__(self, terms: Sequence[Term]):
        names = [t.name for t in terms]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"library terms named twice: {twice}")
        self.terms = tuple(terms)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.terms)

    def __len__(self) -> int:
        return len(self.terms)

    def __call__(self, signals: dict):
        columns = [t(signals) for t in self.terms]
        shape = jnp.broadcast_shapes(*[jnp.shape(c) for c in columns])
        return jnp.stack([jnp.broadcast_to(c, shape) for c in columns], axis=-1)

    def __add__(self, other: Library) -> Library:
        return Library(self.terms + tuple(t for t in other.terms if t.name not in self.names))

    def __mul__(self, other: Library) -> Library:
        """All pairwise products (the tensor product of two libraries)."""
        return Library([a * b for a in self.terms for b in other.terms])

    def select(self, names: Sequence[str]) -> Library:
        """The sub-library of ``names``, in that order."""
        by_name = dict(zip(self.names, self.terms))
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"terms {missing} are not in the library {list(self.names)}")
        return Library([by_name[n] for n in names])


def signal(name: str) -> Term:
    """The signal itself."""
    return Term(name, lambda s: s[name])


def constant() -> Term:
    """The constant 1."""
    return Term("1", lambda s: 1.0)


def difference(a: str, b: str) -> Term:
    """``a - b`` (e.g. a temperature difference driving heat exchange)."""
    return Term(f"({a}-{b})", lambda s: s[a] - s[b])


def polynomial(names: Sequence[str], degree: int, bias: bool = True) -> Library:
    """All monomials of ``names`` up to ``degree`` (``x``, ``x^2``, ``x*y``, ...)."""
    terms = [constant()] if bias else []
    for d in range(1, degree + 1):
        for combo in itertools.combinations_with_replacement(names, d):
            label = "*".join(f"{n}^{combo.count(n)}" if combo.count(n) > 1 else n for n in dict.fromkeys(combo))
            terms.append(Term(label, lambda s, c=combo: _product([s[n] for n in c])))
    return Library(terms)


def _product(values):
    out = values[0]
    for v in values[1:]:
        out = out * v
    return out


def function(name: str, of: str, fn: Callable, scale: float = 1.0) -> Term:
    """A user function ``fn(of / scale)`` named ``name``."""
    return Term(name, lambda s: fn(s[of] / scale))


def sinh(of: str, scale: float = 1.0) -> Term:
    """``sinh(of / scale)``: Butler–Volmer current as a function of overpotential."""
    return function(f"sinh({of}/{scale:g})", of, jnp.sinh, scale)


def arcsinh(of: str, scale: float = 1.0) -> Term:
    """``arcsinh(of / scale)``: symmetric Butler–Volmer overpotential as a function of current."""
    return function(f"arcsinh({of}/{scale:g})", of, jnp.arcsinh, scale)


def arrhenius(temp_k: str, activation_j_mol: float, reference_k: float = 298.15) -> Term:
    """``exp(-E/R (1/T - 1/T_ref))``, the Arrhenius factor of a rate constant (``T`` in kelvin)."""
    return Term(
        f"exp(-{activation_j_mol:g}/R(1/{temp_k}-1/{reference_k:g}))",
        lambda s: jnp.exp(-activation_j_mol / GAS_CONSTANT * (1.0 / s[temp_k] - 1.0 / reference_k)),
    )


def inverse(of: str) -> Term:
    """``1 / of`` (e.g. ``1/T``)."""
    return Term(f"1/{of}", lambda s: 1.0 / s[of])


def spherical_terms(nodes, field: str = "c") -> Library:
    """``d2c/dr2`` and ``(2/r) dc/dr`` of ``signals[field][..., i]`` on the interior nodes of a uniform
    spherical mesh (node radii ``nodes``, dimensionless), weighted so that their sum is exactly the
    finite-volume Laplacian :math:`\\frac{1}{r^2}\\partial_r(r^2\\partial_r c)` of the shell averages:

    .. math::

        \\nabla^2 c_i = \\frac{(r_i^2 + h^2/4)\\,\\delta^2 c_i + 2 r_i\\,\\delta c_i}{r_i^2 + h^2/12},

    with :math:`\\delta^2, \\delta` the central second and first differences. Both weights tend to the
    continuous ``1`` and ``2/r`` as ``h → 0``.
    """
    nodes = jnp.asarray(nodes)
    h = nodes[1] - nodes[0]
    r = nodes[1:-1]
    volume = r**2 + h**2 / 12

    def second(s):
        c = s[field]
        return (r**2 + h**2 / 4) / volume * (c[..., 2:] - 2 * c[..., 1:-1] + c[..., :-2]) / h**2

    def radial(s):
        c = s[field]
        return 2 * r / volume * (c[..., 2:] - c[..., :-2]) / (2 * h)

    return Library([Term(f"d2{field}/dr2", second), Term(f"(2/r)d{field}/dr", radial)])


def spherical_laplacian(nodes, field: str = "c", power: int = 1) -> Term:
    """``lap(c^k)``: the finite-volume spherical Laplacian of ``c**power`` on the interior nodes. With
    :math:`\\nabla\\cdot(D(c)\\nabla c) = \\nabla^2 G(c)`, :math:`G' = D`, a polynomial :math:`D(c)` is a
    short sum of these terms."""
    parts = spherical_terms(nodes, "_g")
    label = field if power == 1 else f"{field}^{power}"
    return Term(f"lap({label})", lambda s: jnp.sum(parts({"_g": s[field] ** power}), axis=-1))


def interior(field: str, power: int = 1) -> Term:
    """``c^k`` on the interior nodes (a non-derivative distractor for field libraries)."""
    return Term(field if power == 1 else f"{field}^{power}", lambda s: s[field][..., 1:-1] ** power)
