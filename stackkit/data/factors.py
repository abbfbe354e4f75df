"""Label factors: classes that are tuples of factor values (mask x gender x age).

The mask layout's classes are the full product of its three factors (label = 6*mask +
3*gender + age). A manifest may declare its own: columns of ``train.csv`` named by
``stackkit folds --factors label_mask,label_gender,label_age``. Each class must then map to
exactly one tuple of their values and no two classes to the same tuple; the classes need not
be the whole product. folds.parquet's ``data.factors`` records the declaration:

    {"columns": ["label_mask", "label_gender"],          # the factors, in the order given
     "values":  [["incorrect", "none", "wear"], ["female", "male"]],   # each one's sorted values
     "classes": [["wear", "male"], ["none", "female"], ...]}          # each class's tuple

    >>> spec = declare_factors(train_csv, frame, ["label_mask", "label_gender"], classes, labels)
    >>> class_codes(spec)   # ((2, 1), (1, 0), ...): each class's index into each factor's values

Values sort as integers when every value of the factor is one, else as strings.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from stackkit.contract.errors import StackkitError


def parse_columns(text: str | list[str] | None) -> list[str] | None:
    """``"a,b,c"`` (or a list) -> ``["a", "b", "c"]``; None stays None."""
    if text is None:
        return None
    cols = [c.strip() for c in (text.split(",") if isinstance(text, str) else text)]
    if len(cols) < 2 or not all(cols) or len(set(cols)) != len(cols):
        raise StackkitError(
            f"--factors {','.join(cols)!r}: needs two or more distinct train.csv column names, "
            "comma-separated (one factor is the class itself)"
        )
    return cols


def _sorted_values(values: pd.Series) -> list[str]:
    uniq = values.unique().tolist()
    if all(v.lstrip("-").isdigit() for v in uniq):
        return sorted(uniq, key=int)
    return sorted(uniq)


def declare_factors(
    csv: Path, frame: pd.DataFrame, columns: list[str], classes: list[str], labels: np.ndarray
) -> dict:
    """The factor declaration of ``frame`` (train.csv's rows, ``labels`` their class indices),
    checked: every factor value present, each class one tuple, no two classes the same tuple."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise StackkitError(f"{csv}: missing factor column(s) {', '.join(missing)} (--factors)")
    vals = frame[columns].apply(lambda s: s.str.strip())
    empty = vals.eq("").to_numpy()
    if empty.any():
        r, c = np.argwhere(empty)[0]
        raise StackkitError(f"{csv}: row {r}: factor column {columns[c]} is empty")
    tuples: list[tuple | None] = [None] * len(classes)
    first: list[int] = [-1] * len(classes)
    for r, (label, row) in enumerate(zip(labels, vals.itertuples(index=False, name=None))):
        have = tuples[label]
        if have is None:
            tuples[label], first[label] = row, r
        elif have != row:
            raise StackkitError(
                f"{csv}: class {classes[label]!r} has factors {_show(row)} in row {r} but "
                f"{_show(have)} in row {first[label]}: each class must be one tuple of "
                f"{', '.join(columns)}"
            )
    seen: dict[tuple, int] = {}
    for c, t in enumerate(tuples):
        if t is None:  # a class without rows: the layout refuses it on its own
            continue
        if t in seen:
            raise StackkitError(
                f"{csv}: classes {classes[seen[t]]!r} and {classes[c]!r} both have factors "
                f"{_show(t)}: the factors must tell every class apart"
            )
        seen[t] = c
    return {
        "columns": list(columns),
        "values": [_sorted_values(vals[col]) for col in columns],
        "classes": [list(t) if t is not None else None for t in tuples],
    }


def _show(t: tuple) -> str:
    return "(" + ", ".join(t) + ")"


def class_codes(spec: dict, n_classes: int | None = None, where: str = "factors") -> tuple:
    """Each class's index into each factor's sorted values: a ``(C, F)`` tuple of tuples.
    A declaration that does not describe ``n_classes`` classes is one StackkitError line."""
    try:
        cols, values, classes = spec["columns"], spec["values"], spec["classes"]
        index = [{v: i for i, v in enumerate(vs)} for vs in values]
        if len(index) != len(cols) or any(len(t) != len(cols) for t in classes):
            raise ValueError("a class tuple or a value list does not match the columns")
        codes = tuple(tuple(index[i][v] for i, v in enumerate(t)) for t in classes)
    except (KeyError, TypeError, ValueError) as exc:
        raise StackkitError(f"{where}: not a factor declaration ({exc!r})") from None
    if n_classes is not None and len(codes) != n_classes:
        raise StackkitError(
            f"{where}: declares factors of {len(codes)} classes, the run has {n_classes}"
        )
    if len(set(codes)) != len(codes):
        raise StackkitError(f"{where}: two classes have the same factor tuple")
    return codes


def factor_sizes(spec: dict) -> dict[str, int]:
    """``{column: number of values}`` in the declaration's order."""
    return {c: len(v) for c, v in zip(spec["columns"], spec["values"])}
