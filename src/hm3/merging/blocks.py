"""The merge config's optional blocks: ``heads:``, ``align:`` and ``regmean:``.

Each is frozen and rejects unknown keys, as the rest of :mod:`hm3.merging.config` (which
holds them) does; their paths are text, resolved against the config's root by it.
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from hm3.defaults import DEFAULT_RIDGE, DEFAULT_SCALE, ridge_or_auto, scale_or_auto
from hm3.io.yaml_input import PathText
from hm3.methods.regmean import DEFAULT_REGMEAN_TEXTS

_FROZEN = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class HeadsConfig(BaseModel):
    """Declares the label projection of an architecture hm3 does not know."""

    model_config = _FROZEN

    projection: tuple[str, ...] = Field(min_length=1, max_length=2)


class AlignConfig(BaseModel):
    """Optional head alignment after merging (see ``hm3 align``)."""

    model_config = _FROZEN

    # one file for every head, or task -> its own file (each head fitted on its task's texts)
    texts: PathText | dict[str, PathText] = Field(min_length=1)
    text_column: str = "text"
    ridge: float | Literal["auto"] = DEFAULT_RIDGE
    scale: float | Literal["auto"] = DEFAULT_SCALE  # the body's task vector, as `hm3 align --scale`
    max_texts: int | None = Field(default=None, gt=0)
    max_length: int = Field(default=512, gt=0)  # tokens per text, as `hm3 align --max-length`

    def files(self) -> list[str]:
        """The text files as the YAML names them (each once)."""
        files = [self.texts] if isinstance(self.texts, str) else list(self.texts.values())
        return list(dict.fromkeys(files))

    @field_validator("texts", mode="before")
    @classmethod
    def _texts(cls, value: Any) -> Any:
        fix = "give one file for every head, or TASK: FILE for every task"
        if isinstance(value, dict):
            bad = [k for k, v in value.items() if not isinstance(v, str | os.PathLike) or not v]
            if not value or bad:
                what = f"{bad[0]!r} names no file" if bad else "an empty mapping"
                raise ValueError(f"{what}; {fix}")
        elif not isinstance(value, str | os.PathLike):
            raise ValueError(f"expected a file or a mapping, got {type(value).__name__}; {fix}")
        elif not os.fspath(value):
            raise ValueError(f"empty; {fix}")
        return value

    # pydantic names the key and the value given; Hm3Error is a ValueError
    @field_validator("ridge", mode="before")
    @classmethod
    def _ridge(cls, value: Any) -> float | str:
        return ridge_or_auto(value, None)

    @field_validator("scale", mode="before")
    @classmethod
    def _scale(cls, value: Any) -> float | str:
        return scale_or_auto(value, None)


class RegMeanConfig(BaseModel):
    """Where ``merge_method: regmean`` reads texts: the default file and how to read it."""

    model_config = _FROZEN

    texts: PathText | None = Field(default=None, min_length=1)  # for models without their own
    text_column: str = "text"
    max_texts: int | None = Field(default=DEFAULT_REGMEAN_TEXTS, gt=0)  # per model; null: all
    max_length: int = Field(default=512, gt=0)  # tokens per text
