"""The merge config (YAML), validated once where it enters.

The format follows mergekit's so its users feel at home (see DESIGN.md, "Formats")::

    base_model: path-or-hub-id
    merge_method: dare_ties
    parameters: {density: 0.3}          # defaults for every model
    models:
      - model: path-or-hub-id
        name: jailbreak                 # task name; default: directory name
        labels: [benign, jailbreak]     # optional, replaces uninformative names
        parameters: {weight: 1.0, density: 0.5}
    seed: 0
    dtype: float32
    no_base: mean                       # tensors the base lacks: mean | method

Relative model paths are resolved against the YAML file's directory. Every model is frozen
and rejects unknown keys; :meth:`MergeConfig.from_yaml` turns any problem into one
:class:`~hm3.errors.Hm3Error` that names the file, the key and the fix. This module opens no
checkpoint.
"""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from hm3.defaults import DEFAULT_RIDGE
from hm3.errors import Hm3Error
from hm3.methods import METHODS, ModelParams

DTYPES = ("float32", "float16", "bfloat16")
_FROZEN = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class ModelParameters(BaseModel):
    """Per-model merge parameters; unset values fall back to the config-wide defaults."""

    model_config = _FROZEN

    weight: float | None = None
    density: float | None = Field(default=None, gt=0, le=1)
    gamma: float | None = Field(default=None, ge=0, lt=1)
    epsilon: float | None = Field(default=None, gt=0, lt=1)

    def given(self) -> dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class MethodParameters(ModelParameters):
    """Config-wide parameters: per-model defaults plus the method's shared switches."""

    normalize: bool | None = None
    rescale: bool | None = None
    lambda_: float | None = Field(default=None, alias="lambda")

    def model_defaults(self) -> dict[str, float]:
        return ModelParameters(
            weight=self.weight, density=self.density, gamma=self.gamma, epsilon=self.epsilon
        ).given()


class ModelEntry(BaseModel):
    """One fine-tuned classifier to merge: one task of the merged model."""

    model_config = _FROZEN

    model: str = Field(min_length=1)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]+$")
    labels: tuple[str, ...] | None = None
    parameters: ModelParameters = ModelParameters()


class HeadsConfig(BaseModel):
    """Declares the label projection of an architecture hm3 does not know."""

    model_config = _FROZEN

    projection: tuple[str, ...] = Field(min_length=1, max_length=2)


class AlignConfig(BaseModel):
    """Optional head alignment after merging (see ``hm3 align``)."""

    model_config = _FROZEN

    texts: str = Field(min_length=1)
    text_column: str = "text"
    ridge: float = Field(default=DEFAULT_RIDGE, ge=0)
    max_texts: int | None = Field(default=None, gt=0)
    max_length: int = Field(default=512, gt=0)  # tokens per text, as `hm3 align --max-length`


class MergeConfig(BaseModel):
    """A whole merge recipe. Build it with :meth:`from_yaml` or from keyword arguments."""

    model_config = _FROZEN

    base_model: str = Field(min_length=1)
    merge_method: str
    parameters: MethodParameters = MethodParameters()
    models: tuple[ModelEntry, ...] = Field(min_length=1)
    seed: int = 0
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"
    heads: HeadsConfig | None = None
    align: AlignConfig | None = None
    #: tensors the base lacks (a bare RoBERTa's ``classifier.dense``): ``mean`` merges them as
    #: the models' plain mean; ``method`` makes that mean their base and runs the method on it
    #: (what mergekit does on ``hm3 expand`` output). ``linear`` reads no base: unaffected.
    no_base: Literal["mean", "method"] = "mean"
    _root: Path | None = PrivateAttr(default=None)

    @field_validator("merge_method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(
                f"unknown method {value!r}{did_you_mean(value, METHODS)}; expected one of "
                f"{', '.join(METHODS)}"
            )
        return value

    @model_validator(mode="after")
    def _check(self) -> MergeConfig:
        method = METHODS[self.merge_method]
        used = method.per_model_parameters
        sources = [("parameters", self.parameters.model_defaults())] + [
            (f"models[{i}].parameters", m.parameters.given()) for i, m in enumerate(self.models)
        ]
        for where, given in sources:
            unused = sorted(set(given) - used)
            if unused:
                raise ValueError(
                    f"{where}: {', '.join(unused)} not used by merge_method "
                    f"{self.merge_method!r} (it uses: {', '.join(sorted(used)) or 'nothing'}); "
                    "remove it or pick a method that uses it"
                )
        names = [m.name for m in self.models if m.name]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"models: task name(s) {', '.join(dupes)} given twice; names must differ"
            )
        self._check_weights()
        return self

    def _check_weights(self) -> None:
        method = METHODS[self.merge_method]
        weights = [p.weight for p in self.model_params()]
        normalize = self.parameters.normalize
        if normalize is None:
            normalize = method.default_normalize
        if normalize and method.consensus is None and abs(sum(weights)) < 1e-8:
            raise ValueError(
                f"parameters: the model weights sum to zero, but merge_method "
                f"{self.merge_method!r} divides by their sum; change a weight or set "
                "`normalize: false`"
            )
        if normalize and all(w == 0 for w in weights):
            raise ValueError("parameters: every model weight is zero; give at least one a weight")

    def model_params(self) -> list[ModelParams]:
        """Effective per-model parameters: model values, else config defaults, else method's."""
        defaults = self.parameters.model_defaults()
        return [ModelParams(**(defaults | m.parameters.given())) for m in self.models]

    def resolve(self, ref: str) -> str:
        """A model reference as given, or a path resolved against the YAML file's directory."""
        if self._root is not None and not Path(ref).is_absolute():
            candidate = self._root / ref
            if candidate.exists():
                return str(candidate)
        return ref

    @classmethod
    def from_yaml(cls, path: str | Path) -> MergeConfig:
        """Load and validate a merge config file."""
        path = Path(path)
        data = load_yaml_mapping(path, "merge config")
        return cls.from_dict(data, source=str(path), root=path.parent)

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], *, source: str = "merge config", root: Path | None = None
    ) -> MergeConfig:
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            raise Hm3Error(f"{source}: {format_validation_error(exc, cls)}") from None
        config._root = root
        return config

    @property
    def root(self) -> Path | None:
        """Directory that relative model paths are resolved against (the YAML file's)."""
        return self._root

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        return yaml.safe_dump(data, sort_keys=False)


def load_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """Read a YAML file that must hold a mapping; errors name the file."""
    if not path.is_file():
        raise Hm3Error(f"{path}: {what} file not found; check the path")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        detail = " ".join(str(exc).split())  # one line: YAML errors quote the source
        raise Hm3Error(f"{path}: not valid YAML ({detail})") from None
    if not isinstance(data, dict):
        raise Hm3Error(f"{path}: expected a YAML mapping of keys to values at the top level")
    return data


def format_validation_error(exc: ValidationError, model: type[BaseModel] | None = None) -> str:
    """One readable line per problem: where, what was wrong, what was given.

    With ``model`` (the validated class), an unknown key lists the valid keys at its level.
    """
    lines = []
    errors = exc.errors(include_url=False)
    inner = {e["loc"][:n] for e in errors for n in range(len(e["loc"]))}
    for err in errors:
        if err["type"] == "too_short" and err["loc"] in inner:
            continue  # a list whose bad items are reported: its length error is noise
        loc = _format_loc(err["loc"])
        if err["type"] == "extra_forbidden":
            lines.append(_unknown_key(err["loc"], model))
            continue
        msg = err["msg"].removeprefix("Value error, ")
        given = err.get("input")
        quiet = isinstance(given, dict | list) or err["type"] == "missing" or repr(given) in msg
        shown = "" if quiet else f" (got {given!r})"
        lines.append(f"{loc}: {msg}{shown}" if loc else f"{msg}{shown}")
    return "; ".join(lines)


def did_you_mean(value: object, valid: typing.Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest valid name, or ``""`` when none is close."""
    close = difflib.get_close_matches(str(value), list(valid), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown_key(loc: tuple[Any, ...], model: type[BaseModel] | None) -> str:
    where = _format_loc(loc)
    keys = _keys_at(model, loc[:-1]) if model is not None else None
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
