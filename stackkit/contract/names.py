"""The one rule every run, ensemble and pseudo-set name obeys before it becomes a path (contract 1.1).

A name matches ``[A-Za-z0-9][A-Za-z0-9._-]{0,99}``: no separators, no leading dot (so never
``.`` or ``..``), nothing a shell or an HTML page would read twice. Every command that takes a
name checks it here, before anything is read or written.

    >>> check_name("nfnet_f0", "run")
    'nfnet_f0'
    >>> check_name("../runs", "ensemble")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    stackkit.contract.errors.StackkitError: ensemble name '../runs' is not allowed: ...
"""

from __future__ import annotations

import re

from stackkit.contract.errors import StackkitError

NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"
_NAME = re.compile(NAME_PATTERN)
KINDS = ("run", "ensemble", "pseudo set")


def is_valid_name(name: object) -> bool:
    """Whether ``name`` is a string that matches the contract's name rule."""
    return isinstance(name, str) and _NAME.fullmatch(name) is not None


def check_name(name: object, kind: str = "run") -> str:
    """Return ``name`` unchanged if it obeys the rule, else raise one line saying why."""
    if is_valid_name(name):
        return name  # type: ignore[return-value]
    raise StackkitError(
        f"{kind} name {name!r} is not allowed: a name is 1-100 characters of letters, digits, "
        f"'.', '_' or '-', starting with a letter or digit (pattern {NAME_PATTERN})"
    )
