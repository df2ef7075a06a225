"""Pydantic's validation errors cut down to the ones that describe what the caller meant to send.

A field that accepts several forms (`stop`: a string or a list of strings; `prompt`: text, texts, token ids or
lists of token ids) is a union, and pydantic reports a failure under every form: a list of 100 stop strings
fails "as a string" (wrong type) and "as a list" (too long), and the first of those, the one a caller sees,
is the irrelevant one (`stop.constrained-str: Input should be a valid string`). Each form's errors sit under a
location segment naming the form (`constrained-str`, `list[constrained-int]`, a model's class name).

`relevant` keeps, for each field that is such a union, the errors of the form the input came closest to:
one that failed on a value's bounds (too long, below a minimum) before one that failed only on the input's
type, and the one that got deeper into the input before one that stopped at its top. Where the closest form
failed on type alone, one error remains that lists what each form would have taken at that place. The form segments are
dropped from the locations, so the field is named as the caller wrote it (`prompt.0`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

Error = dict[str, Any]

_FORM = re.compile(r"str|int|float|bool|none|bytes|list|dict|tuple|set|constrained-[a-z]+|[a-z]+(-[a-z]+)*\[.*\]",
                   re.DOTALL)
"""pydantic's labels for a union's forms: a type, a constrained type, or a wrapper with what it wraps."""
_TYPE_MESSAGE = re.compile(r"^Input should be (.*)$")


def is_form(segment: object) -> bool:
    """Whether a location segment names a union's form (pydantic's label for it) rather than a field, a
    mapping's key or an index: a type's label, or the name of a pydantic model (a form that is a model is
    labelled with its class name). A caller's key spelled like one of those could be taken for a form, which
    only shortens the message."""
    return _Forms()(segment)


class _Forms:
    """`is_form` for one error list, answering each distinct segment once: a large body's thousands of errors
    repeat a few field and form names, and the pydantic model names are listed (a walk of every model class)
    only when a segment could be a class name."""

    def __init__(self) -> None:
        self._names: set[str] | None = None
        self._seen: dict[str, bool] = {}

    def __call__(self, segment: object) -> bool:
        if not isinstance(segment, str):
            return False
        known = self._seen.get(segment)
        if known is None:
            known = self._seen[segment] = self._judge(segment)
        return known

    def _judge(self, segment: str) -> bool:
        if _FORM.fullmatch(segment):
            return True
        if not segment[:1].isupper():
            return False
        if self._names is None:
            self._names = _model_names()
        return segment in self._names


def _model_names() -> set[str]:
    from pydantic import BaseModel

    names: set[str] = set()
    seen: set[type] = set()  # by class, not name: another library's model of the same name hides no subclass
    pending = list(BaseModel.__subclasses__())
    while pending:
        cls = pending.pop()
        if cls not in seen:
            seen.add(cls)
            names.add(cls.__name__)
            pending.extend(cls.__subclasses__())
    return names


def is_type_mismatch(error: Error) -> bool:
    """An error that says only that the input was not of the expected kind (not a string, not a list...)."""
    kind = str(error.get("type", ""))
    return kind.endswith(("_type", "_parsing")) or kind in ("int_from_float", "model_attributes_type")


def relevant(errors: Sequence[Error]) -> list[Error]:
    """`errors` with only the closest form's errors kept for each union field (see the module docstring),
    in their original order, each with `loc` free of form segments."""
    is_form_here = _Forms()
    clean: list[tuple[object, ...]] = []  # each error's location without form segments
    sites: dict[tuple[object, ...], dict[str, list[int]]] = {}  # site -> form -> error positions
    for position, error in enumerate(errors):
        loc = tuple(error.get("loc", ()))
        marks = [is_form_here(segment) for segment in loc]
        clean.append(tuple(segment for segment, form in zip(loc, marks, strict=True) if not form))
        if True in marks:
            at = marks.index(True)
            sites.setdefault(loc[:at], {}).setdefault(str(loc[at]), []).append(position)
    dropped: set[int] = set()
    merged: dict[int, Error] = {}
    for site, forms in sites.items():
        if len(forms) < 2:
            continue
        best = max(forms.values(), key=lambda positions: _closeness(errors, clean, positions, len(site)))
        dropped.update(p for positions in forms.values() if positions is not best for p in positions)
        if all(is_type_mismatch(errors[p]) for p in best):
            merged[best[0]] = _either(errors, clean, [p for positions in forms.values() for p in positions],
                                      clean[best[0]])
            dropped.update(best[1:])
    return [{**merged.get(position, error), "loc": clean[position]}
            for position, error in enumerate(errors) if position not in dropped]


def _closeness(errors: Sequence[Error], clean: list[tuple[object, ...]], positions: list[int],
               site_length: int) -> tuple[bool, int, int]:
    """A form's rank: got past type checks somewhere, then how deep into the input (location segments past
    the field, forms left out), then fewer errors."""
    return (any(not is_type_mismatch(errors[p]) for p in positions),
            max(len(clean[p]) - site_length for p in positions),
            -len(positions))


def _either(errors: Sequence[Error], clean: list[tuple[object, ...]], positions: list[int],
            where: tuple[object, ...]) -> Error:
    """One error for a value no form took, at `where` (a location without form segments): what each form
    wanted there, 'Input should be a valid string or a valid list'."""
    wanted: list[str] = []
    for p in positions:
        if clean[p] != where:
            continue
        message = str(errors[p].get("msg", ""))
        match = _TYPE_MESSAGE.match(message)
        text = match.group(1) if match else message
        if text not in wanted:
            wanted.append(text)
    first = errors[positions[0]]
    return {**first, "loc": where, "msg": "Input should be " + " or ".join(wanted)}
