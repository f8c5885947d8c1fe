"""The data sections of a trial protocol: the pretraining corpus (builtin, files, hub), its cleaning and
held-out split, and each task's data; plus the strict base and number types every protocol section uses
(finite floats, no true/false for numbers, bounded counts and seeds)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from nas.errors import a_number
from nas.userfiles import check_encoding, compile_line_pattern

__all__ = [
    "BuiltinCorpus",
    "BuiltinTaskData",
    "Cleaning",
    "Count",
    "DataConfig",
    "FilesCorpus",
    "FilesTaskData",
    "HubCorpus",
    "Real",
    "Seed",
    "Strict",
    "TaskData",
    "Validation",
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)  # every number finite


MAX_COUNT = 2**53  # counts (tokens, steps, sizes) beyond this are mistakes, and lose precision as floats
Count = Annotated[int, BeforeValidator(a_number), Field(le=MAX_COUNT)]
Real = Annotated[float, BeforeValidator(a_number)]
Seed = Annotated[int, BeforeValidator(a_number), Field(ge=0, le=2**32 - 1)]  # what numpy and torch accept


def _known_encoding(encoding: str) -> str:
    problem = check_encoding(encoding)
    if problem:
        raise ValueError(problem)
    return encoding


# ---- data -----------------------------------------------------------------------------------
class BuiltinCorpus(Strict):
    seed: Seed = 0
    documents: Count = Field(default=3000, ge=10)


class FilesCorpus(Strict):
    paths: list[str] = Field(min_length=1)
    format: Literal["text", "json", "jsonl", "csv", "parquet"] | None = None  # None: from the suffix
    text_field: str = "text"
    sample_by: Literal["line", "paragraph", "document"] = "paragraph"  # for text files
    encoding: str = "utf-8"  # of text, json, jsonl and csv files

    _encoding_known = field_validator("encoding")(classmethod(lambda cls, v: _known_encoding(v)))


class HubCorpus(Strict):
    name: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    text_field: str = "text"


class Cleaning(Strict):
    normalize: Literal["none", "nfc", "nfkc"] = "nfkc"
    lowercase: bool = False
    dedup: bool = True  # exact duplicates (after normalisation) are dropped
    min_chars: Count = Field(default=1, ge=0)
    max_chars: Count | None = Field(default=None, ge=1)


class Validation(Strict):
    fraction: Real = Field(default=0.05, gt=0, le=0.5)
    seed: Seed = 0


class DataConfig(Strict):
    source: Literal["builtin", "files", "hub"] = "builtin"
    builtin: BuiltinCorpus = BuiltinCorpus()
    files: FilesCorpus | None = None
    hub: HubCorpus | None = None
    cleaning: Cleaning = Cleaning()
    validation: Validation = Validation()

    @model_validator(mode="after")
    def _source_has_its_section(self) -> DataConfig:
        if self.source == "files" and self.files is None:
            raise ValueError("source 'files' needs a 'files' section (paths, format, text_field)")
        if self.source == "hub" and self.hub is None:
            raise ValueError("source 'hub' needs a 'hub' section (name, config, split, text_field)")
        return self


# ---- tasks ----------------------------------------------------------------------------------
GRADE = Literal["near", "mid", "far"]  # nas.data.builtin.GRADE_WORDS: how far back the asked fact is


class BuiltinTaskData(Strict):
    seed: Seed = 1
    train: Count = Field(default=512, ge=1)
    eval: Count = Field(default=128, ge=1)
    # Examples take these grades in turn; each grade is scored apart too ("task.grade.metric").
    grades: list[GRADE] = Field(default=["near", "mid", "far"], min_length=1)

    @model_validator(mode="after")
    def _distinct_grades(self) -> BuiltinTaskData:
        if len(set(self.grades)) != len(self.grades):
            raise ValueError(f"grades: each grade once, got {self.grades}")
        return self


class FilesTaskData(Strict):
    train: list[str] = Field(min_length=1)
    eval: list[str] | None = None  # without it, eval_fraction of train is held out
    format: Literal["text", "json", "jsonl", "csv", "parquet", "squad"] | None = None
    line_pattern: str | None = None  # text files: a regex with named groups (text, label)
    encoding: str = "utf-8"  # of text, json, jsonl, csv and squad files
    text_field: str = "text"
    label_field: str = "label"
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    # generation: a field holding each example's candidate completions (a list, the completion among them),
    # scored as multiple choice ("choice_accuracy"); null: no candidates
    choices_field: str | None = None
    eval_fraction: Real = Field(default=0.2, gt=0, lt=1)
    split_by: Literal["example", "article"] = "example"  # qa: keep each article on one side
    seed: Seed = 0
    max_train: Count | None = Field(default=None, ge=1)
    max_eval: Count | None = Field(default=None, ge=1)

    _encoding_known = field_validator("encoding")(classmethod(lambda cls, v: _known_encoding(v)))

    @field_validator("line_pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            compile_line_pattern(pattern, ("text", "label"))  # ValueError says what is wrong
        return pattern


class TaskData(Strict):
    source: Literal["builtin", "files"] = "builtin"
    builtin: BuiltinTaskData = BuiltinTaskData()
    files: FilesTaskData | None = None

    @model_validator(mode="after")
    def _files_given(self) -> TaskData:
        if self.source == "files" and self.files is None:
            raise ValueError("source 'files' needs a 'files' section (train, eval, format, fields)")
        return self
