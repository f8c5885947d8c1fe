"""Search spaces: YAML → validated :class:`SearchSpace` → sampled :class:`ArchConfig`.

A space file has ``parameters`` (sampled in order: int/float ranges, categorical choices, fixed
values; each may carry a ``when`` condition on earlier parameters), ``derived`` values computed
from them (safe expressions), and ``constraints`` over parameters, derived values, resolved
architecture knobs and counts (``params``, ``non_embedding_params``, ``flops_per_token``,
``kv_cache_bytes_per_token``). Every problem in a file is reported at once, each with its key path.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nas.arch import COUNT_NAMES, KNOB_NAMES, ArchConfig
from nas.errors import NasInputError, did_you_mean, validation_problems
from nas.expr import Expr, ExprError
from nas.families import FAMILIES, family_supports
from nas.params import SCHEMAS, Param, TrialLike
from nas.resources import read_text
from nas.userfiles import parse_yaml

__all__ = ["SearchSpace", "Sample", "iter_random_samples", "load_space", "parse_space", "random_samples"]

REQUIRED_KNOBS = ("vocab_size", "max_seq_len", "n_layers", "d_model", "n_heads")
TOP_LEVEL_KEYS = ("name", "description", "parameters", "derived", "constraints")
PARAM_TYPES = ("int", "float", "choice", "fixed")


@dataclass
class Sample:
    """One draw from a space: the values, and the architecture or the reason it is infeasible."""

    values: dict[str, Any]
    arch: ArchConfig | None = None
    reason: str | None = None

    @property
    def feasible(self) -> bool:
        return self.arch is not None


@dataclass
class SearchSpace:
    name: str
    description: str
    params: list[Param]
    derived: list[tuple[str, Expr]]
    constraints: list[Expr]
    source: str = "<string>"
    text: str = ""
    knobs: tuple[str, ...] = field(default=())

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]

    def sample(self, trial: TrialLike) -> Sample:
        """Sample every parameter whose condition holds, then resolve (see :meth:`resolve`)."""
        values: dict[str, Any] = {}
        for param in self.params:
            if param.when is not None:
                try:
                    active = param.when.evaluate({p.name: values.get(p.name) for p in self.params})
                except ExprError as exc:
                    return Sample(values, reason=f"condition of '{param.name}': {exc}")
                if not active:
                    continue
            values[param.name] = param.suggest(trial)
        return self.resolve(values)

    def resolve(self, values: dict[str, Any]) -> Sample:
        """Derived values, the architecture and the constraints for given parameter values.

        An infeasible sample comes back with ``arch=None`` and the reason; it never raises.
        """
        values = dict(values)
        env: dict[str, Any] = {p.name: values.get(p.name) for p in self.params}
        for name, expr in self.derived:
            try:
                env[name] = values[name] = expr.evaluate(env)
            except ExprError as exc:
                return Sample(values, reason=f"derived '{name}': {exc}")
        knobs = {k: env[k] for k in self.knobs if env.get(k) is not None}
        try:
            arch = ArchConfig(**knobs)
        except ValidationError as exc:
            detail = "; ".join(f"{k + ': ' if k else ''}{m}" for k, m in validation_problems(exc))
            return Sample(values, reason=f"not an architecture: {detail}")
        counts = arch.counts()
        scope = {**arch.to_dict(), **counts, **env}
        for constraint in self.constraints:
            try:
                ok = constraint.evaluate(scope)
            except ExprError as exc:
                return Sample(values, reason=f"constraint {exc}")
            if not ok:
                shown = ", ".join(f"{n}={_fmt(scope.get(n))}" for n in sorted(constraint.names))
                return Sample(values, reason=f"constraint `{constraint}` violated ({shown})")
        return Sample(values, arch=arch)


def _fmt(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else repr(value)


def random_samples(space: SearchSpace, n: int, seed: int) -> list[Sample]:
    """``n`` samples from Optuna's RandomSampler: the same seed gives the same samples."""
    return list(itertools.islice(iter_random_samples(space, seed), n))


def iter_random_samples(space: SearchSpace, seed: int) -> Iterator[Sample]:
    """The endless stream of which :func:`random_samples` takes the first ``n``, drawn only as read."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    while True:
        trial = study.ask()
        sample = space.sample(trial)
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        yield sample


# ---- loading --------------------------------------------------------------------------------
def load_space(name_or_path: str | Path, feasibility_probe: int = 256) -> SearchSpace:
    """Load a space by shipped name or path; raise :class:`NasInputError` listing every problem."""
    path, text = read_text("search_spaces", name_or_path)
    return parse_space(text, source=str(path), default_name=path.stem, feasibility_probe=feasibility_probe)


def parse_space(
    text: str, source: str = "<string>", default_name: str = "space", feasibility_probe: int = 256
) -> SearchSpace:
    raw = parse_yaml(text, source)
    if not isinstance(raw, dict):
        raise NasInputError(source, f"a search space must be a YAML mapping, got {type(raw).__name__}")
    problems: list[tuple[str, str]] = []
    for key in (str(k) for k in raw if k not in TOP_LEVEL_KEYS):
        problems.append((key, f"unknown key{did_you_mean(key, TOP_LEVEL_KEYS)}; allowed: {', '.join(TOP_LEVEL_KEYS)}"))
    params = _parse_params(raw.get("parameters"), problems)
    derived = _parse_derived(raw.get("derived") or {}, params, problems)
    constraints = _parse_constraints(raw.get("constraints") or [], params, derived, problems)
    knobs = _check_knobs(raw, params, derived, constraints, problems)
    for key in ("name", "description"):
        if key in raw and not isinstance(raw[key], str):
            problems.append((key, f"must be a string, got {raw[key]!r}"))
    if problems:
        raise NasInputError(source, problems)
    space = SearchSpace(
        name=raw.get("name") or default_name,
        description=raw.get("description") or "",
        params=params,
        derived=derived,
        constraints=constraints,
        source=source,
        text=text,
        knobs=knobs,
    )
    if feasibility_probe:
        _probe_feasibility(space, feasibility_probe)
    return space


def _parse_params(raw: Any, problems: list[tuple[str, str]]) -> list[Param]:
    if not isinstance(raw, dict) or not raw:
        problems.append(("parameters", "must be a non-empty mapping of parameter name to spec"))
        return []
    params: list[Param] = []
    for name, spec in raw.items():
        path = f"parameters.{name}"
        if not _check_name(str(name), path, problems):
            continue
        if not isinstance(spec, dict):
            if isinstance(spec, list):
                problems.append((path, "a list is not a spec; write {type: choice, values: [...]}"))
                continue
            spec = {"type": "fixed", "value": spec}
        kind = spec.get("type")
        if kind not in SCHEMAS:
            hint = did_you_mean(str(kind), PARAM_TYPES) if kind else ""
            problems.append((f"{path}.type", f"must be one of {', '.join(PARAM_TYPES)}, got {kind!r}{hint}"))
            continue
        schema = SCHEMAS[kind]
        try:
            parsed = schema.model_validate(spec)
        except ValidationError as exc:
            problems.extend(validation_problems(exc, path, schema.model_fields))
            continue
        when = None
        if parsed.when is not None:
            when = _parse_expr(parsed.when, f"{path}.when", problems)
            if when is not None:
                _check_condition(when, str(name), [p.name for p in params], list(raw), problems)
        params.append(Param(str(name), parsed, when))
    return params


def _check_condition(
    when: Expr, name: str, earlier: list[str], names: list[Any], problems: list[tuple[str, str]]
) -> None:
    """A condition reads only parameters defined before its own (``names``: every parameter, in order)."""
    path = f"parameters.{name}.when"
    later = [n for n in names if n not in earlier and n != name]
    for ref in sorted(when.names):
        if ref == name:
            problems.append((path, f"a condition cannot read its own parameter '{ref}'"))
        elif ref in later:
            problems.append((path, f"'{ref}' is a later parameter; a condition reads only earlier ones"))
        elif ref not in earlier:
            problems.append((path, f"unknown name '{ref}'{did_you_mean(ref, earlier)}"))


def _parse_derived(raw: Any, params: list[Param], problems: list[tuple[str, str]]) -> list[tuple[str, Expr]]:
    if not isinstance(raw, dict):
        problems.append(("derived", "must be a mapping of name to expression"))
        return []
    known = [p.name for p in params]
    derived: list[tuple[str, Expr]] = []
    for name, text in raw.items():
        path = f"derived.{name}"
        if not _check_name(str(name), path, problems):
            continue
        if name in known:
            problems.append((path, f"'{name}' is already defined as a parameter or derived value"))
            continue
        expr = _parse_expr(text, path, problems)
        if expr is not None:
            for ref in sorted(expr.names):
                if ref == name:
                    problems.append((path, f"'{name}' cannot refer to itself"))
                elif ref in known:
                    continue
                elif ref in raw:
                    problems.append((path, f"'{ref}' is a later derived value; define it before '{name}'"))
                else:
                    problems.append((path, f"unknown name '{ref}'{did_you_mean(ref, known)}"))
            derived.append((str(name), expr))
        known.append(str(name))
    return derived


def _parse_constraints(
    raw: Any, params: list[Param], derived: list[tuple[str, Expr]], problems: list[tuple[str, str]]
) -> list[Expr]:
    if not isinstance(raw, list):
        problems.append(("constraints", "must be a list of expressions"))
        return []
    known = [p.name for p in params] + [n for n, _ in derived] + list(KNOB_NAMES) + list(COUNT_NAMES)
    constraints = []
    for i, text in enumerate(raw):
        path = f"constraints[{i}]"
        expr = _parse_expr(text, path, problems)
        if expr is None:
            continue
        for ref in sorted(expr.names - set(known)):
            problems.append((path, f"unknown name '{ref}'{did_you_mean(ref, known)}"))
        constraints.append(expr)
    return constraints


def _parse_expr(text: Any, path: str, problems: list[tuple[str, str]]) -> Expr | None:
    try:
        return Expr.parse(text)
    except ExprError as exc:
        problems.append((path, str(exc)))
        return None


def _check_name(name: str, path: str, problems: list[tuple[str, str]]) -> bool:
    if not name.isidentifier() or name.startswith("__"):
        problems.append((path, f"'{name}' is not a valid name (letters, digits, _; no leading __)"))
        return False
    if name in COUNT_NAMES:
        problems.append((path, f"'{name}' is a computed count and cannot be set"))
        return False
    return True


def _check_knobs(
    raw: dict[str, Any],
    params: list[Param],
    derived: list[tuple[str, Expr]],
    constraints: list[Expr],
    problems: list[tuple[str, str]],
) -> tuple[str, ...]:
    """Every name is a knob or read by an expression; required knobs exist; families can express them."""
    defined = {p.name: f"parameters.{p.name}" for p in params} | {n: f"derived.{n}" for n, _ in derived}
    exprs = [p.when for p in params if p.when] + [expr for _, expr in derived] + constraints
    read: set[str] = set().union(*(expr.names for expr in exprs))
    for name, path in defined.items():
        if name not in KNOB_NAMES and name not in read:
            hint = did_you_mean(name, KNOB_NAMES)
            problems.append((path, f"'{name}' is not an architecture knob{hint} and no expression reads it"))
    if params or derived:
        for knob in REQUIRED_KNOBS:
            if knob not in defined:
                need = f"the architecture needs '{knob}': define it as a parameter or derived value"
                problems.append(("parameters", need))
    if "family" not in dict(derived):
        _check_family_values({p.name: p for p in params}, problems)
    return tuple(n for n in defined if n in KNOB_NAMES)


def _check_family_values(by_name: dict[str, Param], problems: list[tuple[str, str]]) -> None:
    """Load-time check of categorical knobs against the families the space can map to."""
    family_param = by_name.get("family")
    families = list(FAMILIES)
    if family_param is not None and family_param.possible_values() is not None:
        families = [f for f in family_param.possible_values() or [] if f in FAMILIES]
        for value in family_param.possible_values() or []:
            if value not in FAMILIES:
                hint = did_you_mean(str(value), FAMILIES)
                problems.append(("parameters.family", f"unknown family {value!r}{hint}; known: {', '.join(FAMILIES)}"))
    for knob in ("position", "norm", "ffn", "attention", "activation", "qk_norm"):
        param = by_name.get(knob)
        if param is None or param.possible_values() is None:
            continue
        for value in param.possible_values() or []:
            if families and not any(family_supports(f, knob, value) for f in families):
                message = f"{knob}={value!r} cannot be expressed by family {' or '.join(families)}"
                problems.append((f"parameters.{knob}", message))


def _probe_feasibility(space: SearchSpace, n: int) -> None:
    """Refuse a space in which no sample of ``n`` random draws is feasible (an impossible constraint)."""
    reasons: Counter[str] = Counter()
    for sample in itertools.islice(iter_random_samples(space, seed=0), n):  # stop at the first feasible one
        if sample.feasible:
            return
        reasons[(sample.reason or "").split(" (")[0]] += 1
    top = "; ".join(f"{reason} ({count}×)" for reason, count in reasons.most_common(3))
    key = "constraints" if all(r.startswith("constraint") for r in reasons) else "parameters"
    raise NasInputError(space.source, [(key, f"no feasible architecture in {n} random samples: {top}")])
