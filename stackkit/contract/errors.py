"""The one error type the library raises for expected failures.

The CLI catches :class:`StackkitError`, prints its message as one line and exits non-zero;
anything else is a bug and keeps its traceback.
"""


class StackkitError(Exception):
    """An expected failure: bad input, a missing file, a refused operation."""


class ContractError(StackkitError):
    """An artifact breaks the contract (CONTRACT.md): names the run, the file and the first bad row."""
