"""Reading YAML config files and turning pydantic errors into one readable line.

What it does: :func:`load_yaml_mapping` reads a YAML file that must hold a mapping, and
:func:`format_validation_error` renders a pydantic ``ValidationError`` as ``where: what (got
value)`` parts, listing the valid keys (and the closest one, :func:`did_you_mean`) for an
unknown key. Shared by the merge config (:mod:`hm3.merging.config`) and the evaluation suite
(:mod:`hm3.evaluation.suite`). What it does not: define any config's fields.
"""

from __future__ import annotations

import difflib
import math
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Any, ClassVar

import yaml
from pydantic import BaseModel, BeforeValidator, ValidationError

from hm3.errors import Hm3Error

#: A path field: text, or a ``pathlib.Path`` (any ``os.PathLike``) given from Python, kept as text.
PathText = Annotated[
    str, BeforeValidator(lambda v: os.fspath(v) if isinstance(v, os.PathLike) else v)
]


class _DuplicateKey(Exception):
    """A mapping gives one key twice (YAML would silently keep the last value)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping, at any level."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor`: explicit keys override merged ones, as YAML says
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, typing.Hashable) and key in seen:
                line = key_node.start_mark.line + 1
                raise _DuplicateKey(f"key {key!r} given twice (line {line}); keep one of them")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml_mapping(path: Path, what: str, top: str = "") -> dict[str, Any]:
    """Read a YAML file that must hold a mapping, with no key given twice; errors name the
    file. ``top``: the keys such a file starts with, named when it holds no mapping."""
    if path.is_dir():
        raise Hm3Error(f"{path}: a directory, not a {what} file; give the YAML file's path")
    if not path.is_file():
        raise Hm3Error(f"{path}: {what} file not found; check the path")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except _DuplicateKey as exc:
        raise Hm3Error(f"{path}: {exc}") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())  # one line: YAML errors quote the source
        raise Hm3Error(f"{path}: not valid YAML ({detail})") from None
    if not isinstance(data, dict):
        found = "nothing" if data is None else f"a {type(data).__name__}"
        hint = f"; a {what} starts with {top}" if top else ""
        raise Hm3Error(
            f"{path}: expected a YAML mapping of keys to values at the top level, found {found}"
            f"{hint}"
        )
    return data


SHOWN_CHARS = 80  # an offending value or key is echoed in a message up to this many characters


def shorten(text: str) -> str:
    """``text`` cut to :data:`SHOWN_CHARS` characters (``…`` marks a cut)."""
    return text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS] + "…"


def format_validation_error(
    exc: ValidationError, model: type[BaseModel] | None = None, within: str = ""
) -> str:
    """One readable line per problem: where, what was wrong, what was given (values and keys
    cut to :data:`SHOWN_CHARS` characters: a request may hold a megabyte in one field).

    With ``model`` (the validated class), an unknown key lists the valid keys at its level.
    ``within`` names the block the model was read from (``"search"``): every place is given
    inside it.
    """
    errors = exc.errors(include_url=False)
    inner = {e["loc"][:n] for e in errors for n in range(len(e["loc"]))}
    # a list's length error where its bad items are reported is noise
    errors = [e for e in errors if not (e["type"] == "too_short" and e["loc"] in inner)]
    lines = [_problem(err, model, within) for err in errors[:_SHOWN_PROBLEMS]]
    more = len(errors) - len(lines)  # a million wrong items: the first few say it, at once
    if more:
        lines.append(f"and {more} more problem{'s' * (more > 1)}")
    return "; ".join(lines)


def _problem(err: Any, model: type[BaseModel] | None, within: str) -> str:
    """One pydantic error as ``where: what (got value)``."""
    loc = _format_loc((within, *err["loc"]) if within else err["loc"])
    if err["type"] == "extra_forbidden":
        return _unknown_key(err["loc"], model, within)
    if err["type"] == "missing":
        return f"{loc}: missing; add it" if loc else "missing; add it"
    msg = err["msg"].removeprefix("Value error, ")
    given = err.get("input")
    text = as_written(given)
    quiet = isinstance(given, dict | list) or text in msg
    shown = "" if quiet else f" (got {shorten(text)}{_as_number(err['type'], given)})"
    if within and not err["loc"]:  # the model's own check, whose message names its key
        return f"{within}.{msg}{shown}"
    return f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}"


_SHOWN_PROBLEMS = 5


def _as_number(kind: str, given: object) -> str:
    """Where a number was expected and text that reads as one given (YAML 1.1 reads
    ``0.5e0``, an exponent without a sign, as text): the fix."""
    if kind not in ("float_type", "int_type") or not isinstance(given, str):
        return ""
    try:
        number = float(given)
    except ValueError:
        return ""
    if not math.isfinite(number) or (kind == "int_type" and not number.is_integer()):
        return ""
    if kind == "int_type":
        return f": text, not a number; write it as a whole number, e.g. {int(number)}"
    mantissa, _, exponent = repr(number).partition("e")  # YAML 1.1 floats: 1.0e-05, not 1e-05
    mantissa += "" if "." in mantissa else ".0"
    written = mantissa + (f"e{'' if exponent[0] in '+-' else '+'}{exponent}" if exponent else "")
    return f": text, not a number; write it as a number, e.g. {written}"


def as_written(value: object) -> str:
    """A given value as YAML and JSON write it where Python's repr differs: ``null``, ``true``,
    ``false`` (a config or a request says ``null``, never ``None``)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    return repr(value)


def did_you_mean(value: object, valid: typing.Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest valid name, or ``""`` when none is close: a
    similarity of 0.7 (difflib's ratio), or the name typed is part of it (``param`` of
    ``parameters``); at difflib's usual 0.6, ``extra`` would be offered ``texts``."""
    typed = str(value)
    close = difflib.get_close_matches(typed, list(valid), n=1, cutoff=0.6)
    if close and (
        typed in close[0] or difflib.SequenceMatcher(None, typed, close[0]).ratio() >= 0.7
    ):
        return f" (did you mean {close[0]!r}?)"
    return ""


def _unknown_key(loc: tuple[Any, ...], model: type[BaseModel] | None, within: str = "") -> str:
    keys = _keys_at(model, loc[:-1]) if model is not None else None
    loc = (within, *loc) if within else loc
    where = shorten(_format_loc(loc))
    if not keys:
        return f"unknown key {where!r}; check its spelling against the documented keys"
    parent = f"in {_format_loc(loc[:-1])}" if loc[:-1] else "at the top level"
    return (
        f"unknown key {where!r}{did_you_mean(loc[-1], keys)}; valid keys {parent}: "
        f"{', '.join(keys)}"
    )


def _keys_at(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The keys a model accepts at ``path`` (field names, by alias), or [] if unknown."""
    cls: type[BaseModel] | None = model
    for part in path:
        if isinstance(part, int):
            continue  # an item of a list of models
        field = cls.model_fields.get(part) if cls is not None else None
        cls = _model_in(field.annotation) if field is not None else None
    if cls is None:
        return []
    return [f.alias or name for name, f in cls.model_fields.items()]


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The pydantic model inside ``X``, ``X | None`` or ``tuple[X, ...]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _format_loc(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class UserModel(BaseModel):
    """A pydantic model a user builds from keyword arguments: a bad value raises one
    :class:`Hm3Error` (``<what>: <the message of format_validation_error>``), as reading it from
    YAML does, instead of pydantic's multi-line error. Subclasses set ``what``."""

    what: ClassVar[str] = "input"

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise Hm3Error(f"{self.what}: {format_validation_error(exc, type(self))}") from None

    # pydantic's mark (RootModel's) that this __init__ only validates: model_validate skips it
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]
