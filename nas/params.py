"""Search-space parameters: the YAML schema of each type (int, float, choice, fixed) and how a
:class:`Param` is sampled from an Optuna trial."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from nas.errors import a_number
from nas.expr import Expr

__all__ = ["SCHEMAS", "ChoiceParam", "FixedParam", "FloatParam", "IntParam", "Param", "ParamSpec", "TrialLike"]

Scalar = int | float | str | bool


class TrialLike(Protocol):
    """What sampling needs from an Optuna trial (``optuna.Trial`` satisfies it)."""

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...
    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...
    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


class _ParamSchema(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    when: str | None = None


Bound = Annotated[int, BeforeValidator(a_number), Field(ge=-(2**53), le=2**53)]
Real = Annotated[float, BeforeValidator(a_number)]


class IntParam(_ParamSchema):
    type: Literal["int"]
    low: Bound
    high: Bound
    step: Bound = Field(default=1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> IntParam:
        if self.low > self.high:
            raise ValueError(f"`low <= high` must hold, but got low={self.low} > high={self.high}")
        if self.log and (self.step != 1 or self.low < 1):
            raise ValueError("log=true needs step=1 and low >= 1")
        return self


class FloatParam(_ParamSchema):
    type: Literal["float"]
    low: Real
    high: Real
    step: Real | None = Field(default=None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _check(self) -> FloatParam:
        if self.low > self.high:
            raise ValueError(f"`low <= high` must hold, but got low={self.low} > high={self.high}")
        if self.log and (self.step is not None or self.low <= 0):
            raise ValueError("log=true needs no step and low > 0")
        return self


class ChoiceParam(_ParamSchema):
    type: Literal["choice"]
    values: list[Scalar] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> ChoiceParam:
        if len(set(map(repr, self.values))) != len(self.values):
            raise ValueError(f"values must be distinct, got {self.values}")
        return self


class FixedParam(_ParamSchema):
    type: Literal["fixed"]
    value: Scalar


ParamSpec = IntParam | FloatParam | ChoiceParam | FixedParam
SCHEMAS: dict[str, type[ParamSpec]] = dict(int=IntParam, float=FloatParam, choice=ChoiceParam, fixed=FixedParam)


@dataclass(frozen=True)
class Param:
    name: str
    spec: ParamSpec
    when: Expr | None = None

    def possible_values(self) -> list[Any] | None:
        """The finite set of values, or None for a range."""
        if isinstance(self.spec, FixedParam):
            return [self.spec.value]
        if isinstance(self.spec, ChoiceParam):
            return list(self.spec.values)
        return None

    def suggest(self, trial: TrialLike) -> Any:
        spec = self.spec
        if isinstance(spec, FixedParam):
            return spec.value
        if isinstance(spec, IntParam):
            return trial.suggest_int(self.name, spec.low, spec.high, step=spec.step, log=spec.log)
        if isinstance(spec, FloatParam):
            return trial.suggest_float(self.name, spec.low, spec.high, step=spec.step, log=spec.log)
        return trial.suggest_categorical(self.name, spec.values)

    def describe(self) -> str:
        spec = self.spec
        if isinstance(spec, FixedParam):
            text = f"= {spec.value!r}"
        elif isinstance(spec, ChoiceParam):
            text = "one of " + ", ".join(map(repr, spec.values))
        else:
            text = f"{spec.type} [{spec.low}, {spec.high}]"
            text += f" step {spec.step}" if spec.step not in (None, 1) else ""
            text += " log" if spec.log else ""
        return text + (f"  when {self.when}" if self.when else "")
