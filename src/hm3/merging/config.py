"""The merge config (YAML), validated once where it enters.

The format follows mergekit's so its users feel at home (docs/design.md, "The merge config")::

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

``merge_method: regmean`` also needs each model's texts: ``models[i].texts`` (its own domain),
else the file of a top-level ``regmean: {texts: ...}`` block, which also sets ``text_column``,
``max_texts`` (per model), ``max_length``; ``parameters: {alpha: 0.9}`` is its off-diagonal scale.

Relative model paths resolve against the YAML file's directory. Every model is frozen, rejects
unknown keys, and turns any problem (from YAML, a dict or keyword arguments) into one
:class:`~hm3.errors.Hm3Error` naming the file, the key and the fix. It opens no checkpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal

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

from hm3.errors import Hm3Error
from hm3.io.paths import absolute, as_path
from hm3.io.yaml_input import (
    PathText,
    UserModel,
    did_you_mean,
    format_validation_error,
    load_yaml_mapping,
)
from hm3.merging.blocks import AlignConfig, HeadsConfig, RegMeanConfig
from hm3.methods import METHODS, ModelParams
from hm3.options import DTYPES, DtypeName

_FROZEN = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)
MERGE_TOP = "`base_model:`, `merge_method:` and `models:`"  # named where a file has no mapping


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
    alpha: float | None = Field(default=None, ge=0, le=1)  # regmean's off-diagonal scale

    def model_defaults(self) -> dict[str, float]:
        return {k: v for k, v in self.given().items() if k in ModelParameters.model_fields}


class ModelEntry(BaseModel):
    """One fine-tuned classifier to merge: one task of the merged model."""

    model_config = _FROZEN

    model: PathText = Field(min_length=1)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.\-]+$")
    labels: tuple[str, ...] | None = None
    parameters: ModelParameters = ModelParameters()
    texts: PathText | None = Field(default=None, min_length=1)  # regmean: its own texts

    @field_validator("labels")
    @classmethod
    def _visible(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        blank = [i for i, label in enumerate(value or ()) if not label.strip()]
        if blank:  # a score keyed "" in every answer, a "task/" in id2label
            raise ValueError(f"label {blank[0]} is empty; give every label a name")
        return value


class MergeConfig(UserModel):
    """A whole merge recipe: :meth:`from_yaml`, :meth:`from_dict` or keyword arguments build it.
    ``model_copy(update=...)`` validates nothing (a bad value fails mid-merge): rebuild instead,
    ``MergeConfig.from_dict(cfg.model_dump(by_alias=True) | changes, root=cfg.root)``."""

    model_config = _FROZEN

    base_model: PathText = Field(min_length=1)
    merge_method: str
    parameters: MethodParameters = MethodParameters()
    models: tuple[ModelEntry, ...] = Field(min_length=1)
    seed: int = 0
    dtype: DtypeName = DTYPES[0]
    heads: HeadsConfig | None = None
    align: AlignConfig | None = None
    regmean: RegMeanConfig | None = None
    #: tensors the base lacks (a bare RoBERTa's ``classifier.dense``): ``mean`` merges them as
    #: the models' plain mean; ``method`` makes that mean their base and runs the method on it
    #: (what mergekit does on ``hm3 expand`` output). ``linear`` reads no base: unaffected.
    no_base: Literal["mean", "method"] = "mean"
    _root: Path | None = PrivateAttr(default=None)
    _path: Path | None = PrivateAttr(default=None)

    what: ClassVar[str] = "merge config"  # keyword construction errors: UserModel

    @field_validator("merge_method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value not in METHODS:
            raise ValueError(f"unknown method {value!r}{did_you_mean(value, METHODS)}; expected "
                             f"one of {', '.join(METHODS)}")  # fmt: skip
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
                switches = sorted(method.global_parameters)  # read in `parameters` only
                reads = ", ".join(sorted(used)) or "nothing"
                reads += f"; method-wide in parameters: {', '.join(switches)}" * bool(switches)
                raise ValueError(
                    f"{where}: {', '.join(unused)} not used by merge_method "
                    f"{self.merge_method!r} (it uses: {reads}); remove it or pick a method that "
                    "uses it"
                )
        names = [m.name for m in self.models if m.name]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(
                f"models: task name(s) {', '.join(dupes)} given twice; names must differ"
            )
        self._check_weights()
        self._check_options()
        self._check_texts()
        return self

    def _check_options(self) -> None:
        """The method-wide switches, early: a merge can take minutes before its first tensor."""
        p = self.parameters
        lambda_ = None if p.lambda_ == 1 else p.lambda_  # 1 scales nothing: as if unset
        switches = {"normalize": p.normalize, "rescale": p.rescale, "alpha": p.alpha}
        given = [k for k, v in {**switches, "lambda": lambda_}.items() if v is not None]
        reads = METHODS[self.merge_method].global_parameters
        unused = [k for k in given if k not in reads]
        if unused:
            raise ValueError(
                f"parameters: {', '.join(unused)} not used by merge_method {self.merge_method!r} "
                f"(it reads {', '.join(sorted(reads))} and each model's own parameters); remove "
                f"{'it' if len(unused) == 1 else 'them'}"
            )

    def _check_texts(self) -> None:
        given = [f"models[{i}].texts" for i, m in enumerate(self.models) if m.texts]
        if self.regmean is not None:
            given.insert(0, "regmean")
        if self.merge_method != "regmean":
            if given:
                raise ValueError(
                    f"{given[0]}: texts are read only by merge_method 'regmean' (not "
                    f"{self.merge_method!r}); remove it, or use `align:` for head alignment"
                )
            return
        default = self.regmean.texts if self.regmean is not None else None
        missing = [i for i, m in enumerate(self.models) if not (m.texts or default)]
        if missing:
            raise ValueError(f"models[{missing[0]}]: merge_method 'regmean' needs texts for "
                             "every model; give it `texts: FILE` (unlabeled texts of its own "
                             "domain) or set a default with `regmean: {texts: FILE}`")  # fmt: skip

    def _check_weights(self) -> None:
        method = METHODS[self.merge_method]
        weights = [p.weight for p in self.model_params()]
        bad = [(i, w) for i, w in enumerate(weights) if not w > 0]
        if method.needs_positive_weights and bad:
            raise ValueError(
                f"models[{bad[0][0]}]: weight {bad[0][1]!r}; {self.merge_method} weights scale "
                "each model's share of the merge and must be > 0"
            )
        normalize = self.parameters.normalize
        if normalize is None:
            normalize = method.default_normalize
        if normalize and method.consensus is None and abs(sum(weights)) < 1e-8:
            raise ValueError(f"parameters: the model weights sum to zero, but merge_method "
                             f"{self.merge_method!r} divides by their sum; change a weight or "
                             "set `normalize: false`")  # fmt: skip
        if normalize and all(w == 0 for w in weights):
            raise ValueError("parameters: every model weight is zero; give at least one a weight")

    def idle_parameters(self) -> list[str]:
        """What the config sets that changes nothing (as in mergekit, a model of density 1 is
        not pruned): its gamma or epsilon, and ``rescale`` when no model is pruned."""
        params, defaults = self.model_params(), set(self.parameters.model_defaults())
        notes = []
        for name in sorted(METHODS[self.merge_method].per_model_parameters & {"gamma", "epsilon"}):
            idle = [str(i) for i, (p, m) in enumerate(zip(params, self.models, strict=True))
                    if p.density >= 1 and name in defaults | set(m.parameters.given())]  # fmt: skip
            if idle:
                notes.append(f"{name} changes nothing for models[{', '.join(idle)}]: "
                              f"{self.merge_method} prunes nothing at density 1 (the default); "
                              "set a density below 1")  # fmt: skip
        if self.parameters.rescale is not None and all(p.density >= 1 for p in params):
            notes.append("parameters: rescale changes nothing: no model has a density below 1, "
                         "so nothing is pruned")  # fmt: skip
        return notes

    def model_params(self) -> list[ModelParams]:
        """Effective per-model parameters: model values, else config defaults, else method's."""
        defaults = self.parameters.model_defaults()
        return [ModelParams(**(defaults | m.parameters.given())) for m in self.models]

    def resolve(self, ref: str) -> str:
        """A model reference as given, or a path resolved against the YAML file's directory.

        A relative reference is never read from the current directory instead: missing beside
        the YAML but present here, it stays the YAML's (so it is reported missing there);
        missing in both, it stays as given (a hub id).
        """
        if self._root is not None and not Path(ref).is_absolute():
            candidate = self._root / ref
            if candidate.exists() or Path(ref).exists():
                return str(candidate)
        return ref

    @classmethod
    def from_yaml(cls, path: str | Path) -> MergeConfig:
        """Load and validate a merge config file."""
        path = as_path(path, "merge config")
        data = load_yaml_mapping(path, "merge config", MERGE_TOP)
        config = cls.from_dict(data, source=str(path), root=path.parent)  # made absolute
        config._path = path
        return config

    @classmethod
    def from_dict(
        cls,
        data: dict[str, Any],
        *,
        source: str = "merge config",
        root: str | Path | None = None,
    ) -> MergeConfig:
        """Validate a config mapping; relative paths resolve against ``root`` (made absolute
        now, so a later ``os.chdir`` changes nothing), or else the current directory."""
        try:
            config = cls.model_validate(data)
        except ValidationError as exc:
            raise Hm3Error(f"{source}: {format_validation_error(exc, cls)}") from None
        config._root = absolute(root) if root is not None else None
        return config

    @property
    def root(self) -> Path | None:
        """Directory that relative model paths are resolved against (the YAML file's)."""
        return self._root

    @property
    def path(self) -> Path | None:
        """The YAML file this config was read from (``None`` when built from a dict)."""
        return self._path

    def to_yaml(self, *, absolute_paths: bool = False) -> str:
        """The config as YAML. Paths are written as given, so relative ones hold beside the
        file it was read from (:attr:`root`); ``absolute_paths=True`` writes each one that
        resolves to a local file or directory as an absolute path, for a file kept elsewhere."""
        data = self.model_dump(mode="json", by_alias=True, exclude_none=True)
        if absolute_paths:
            here = [data, *data["models"], data.get("align") or {}, data.get("regmean") or {}]
            for block, key in [(d, k) for d in here for k in ("base_model", "model", "texts")]:
                if block.get(key) is not None and Path(self.resolve(block[key])).exists():
                    block[key] = str(absolute(self.resolve(block[key])))
        return yaml.safe_dump(data, sort_keys=False)
