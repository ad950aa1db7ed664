"""The core settings the River estimators pass through, and their documentation.

The one place they are listed for the River adapter: ``_CORE`` (every estimator has them),
``_CORE_OPTIONAL`` (some estimators expose them) and ``_PARAMS_DOC`` (their docstring entries),
written out by ``params_doc``. A settings schema of the core can replace these three by
generating them, with ``params_doc`` the one function to change. The estimators' ``__init__``
signatures stay explicit: River's ``clone()`` reads them.
"""

from __future__ import annotations

from typing import TypeVar

_CORE = ("hidden", "layers", "cell", "bptt", "update_every", "optimizer", "lr", "momentum", "betas",
         "rho", "eps", "clip", "l2", "dtype", "seed")

_CORE_OPTIONAL = ("loss", "huber_delta", "standardize_inputs", "standardize_targets")

# (names, description) for each entry of the "Parameters" section; names join settings that
# one description covers. The descriptions of ``_CORE_OPTIONAL`` depend on the estimator and
# are in its own docstring.
_PARAMS_DOC: tuple[tuple[str, str], ...] = (
    ("hidden, layers, cell",
     'Units per layer, stacked layers, ``"lstm"`` or ``"rnn"`` (vanilla tanh RNN).'),
    ("bptt, update_every",
     ("Truncated BPTT: every ``update_every`` events the losses of the labelled steps are\n"
      "backpropagated through at most ``bptt`` steps.")),
    ("optimizer, lr, momentum, betas, rho, eps, clip, l2",
     ('``"adam"``, ``"sgd"`` or ``"rmsprop"`` and their settings; ``clip`` is the global\n'
      "gradient-norm clip (``None`` disables it), ``l2`` an L2 penalty.")),
    ("dtype",
     ('``"float32"`` (default here: per-event latency is what a River estimator is measured\n'
      "by, and float32 learns about 25% faster at ``hidden=32``; the running normalisers\n"
      'stay float64) or ``"float64"``.')),
    ("seed",
     "Seeds the initial weights (``None``: fresh randomness)."),
)

_PLACEHOLDER = "    {params}\n"


def params_doc(indent: str = "    ") -> str:
    """The numpydoc "Parameters" entries of the core settings, each name line at ``indent``.

    >>> print(params_doc("").splitlines()[0])
    hidden, layers, cell
    """
    lines = []
    for names, text in _PARAMS_DOC:
        lines.append(indent + names)
        lines += [indent + "    " + line for line in text.splitlines()]
    return "\n".join(lines) + "\n"


T = TypeVar("T", bound=type)


def with_params_doc(cls: T) -> T:
    """Class decorator: the core settings' entries, then a blank line, in place of the line
    ``{params}`` of the class docstring."""
    doc = cls.__doc__ or ""
    if _PLACEHOLDER not in doc:
        raise ValueError(f"{cls.__name__}'s docstring has no '{{params}}' line")
    cls.__doc__ = doc.replace(_PLACEHOLDER, params_doc() + "\n")
    return cls
