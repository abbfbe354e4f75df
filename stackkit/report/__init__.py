"""The report: one self-contained HTML page about an ensemble, for a person to look at.

``data`` loads and aligns what a page draws from, ``stats`` computes its figures, ``plots`` and
``html`` draw them, ``sections`` orders them, and ``build`` writes the page.
"""

from stackkit.report.build import build_report

__all__ = ["build_report"]
