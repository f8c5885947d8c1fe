"""Safe arithmetic/boolean expressions for search spaces (conditions, derived values, constraints).

An expression is parsed once with :mod:`ast` and checked against a whitelist of node types,
operators and functions; evaluation walks the tree itself. Python ``eval`` is never used, so
attributes, subscripts, lambdas, comprehensions and ``__import__`` cannot run: they are refused
when the file loads.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Expr", "ExprError", "FUNCTIONS", "MAX_INT_BITS", "MAX_NODES"]

# Bounds that keep every expression's cost in milliseconds (checked when the file loads, and again for
# the values it meets): at most MAX_NODES syntax nodes, MAX_DEPTH levels of nesting, MAX_SOURCE
# characters, integers of at most MAX_INT_BITS bits, and strings/tuples built of at most MAX_ITEMS items.
MAX_NODES = 256
MAX_DEPTH = 32
MAX_SOURCE = 2000
MAX_INT_BITS = 128
MAX_ITEMS = 10_000


class ExprError(ValueError):
    """An expression that is not allowed or cannot be evaluated."""


def _round_to(x: float, multiple: float) -> int:
    """Round ``x`` to the nearest multiple of ``multiple`` (at least one multiple)."""
    return int(max(multiple, multiple * round(x / multiple)))


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "round": round,
    "int": int,
    "float": float,
    "ceil": math.ceil,
    "floor": math.floor,
    "sqrt": math.sqrt,
    "log2": math.log2,
    "round_to": _round_to,
}

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
}
_COMPARE = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b,
}
_CONSTANT_TYPES = (int, float, str, bool, type(None))
_NAMED_CONSTANTS = {"true": True, "false": False, "null": None}

_FORBIDDEN_HINTS = {
    ast.Attribute: "attribute access (x.y)",
    ast.Subscript: "subscripts (x[i])",
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignment expressions (:=)",
    ast.Starred: "starred arguments",
    ast.Dict: "dict literals",
    ast.JoinedStr: "f-strings",
    ast.Await: "await",
}


@dataclass(frozen=True)
class Expr:
    """A parsed, whitelisted expression. ``names`` are the free variables it reads."""

    source: str
    tree: ast.Expression
    names: frozenset[str]

    @classmethod
    def parse(cls, source: str | int | float | bool) -> Expr:
        """Parse and check ``source``; raise :class:`ExprError` saying what is not allowed."""
        if isinstance(source, bool | int | float):
            source = repr(source)
        if isinstance(source, dict):
            raise ExprError("YAML read this as a mapping (a ': ' inside?); quote the expression")
        if not isinstance(source, str) or not source.strip():
            raise ExprError("an expression must be a non-empty string")
        if len(source) > MAX_SOURCE:
            raise ExprError(f"expression of {len(source)} characters; at most {MAX_SOURCE}")
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ExprError(f"not a valid expression: {_short(source)} ({exc.msg})") from None
        except (RecursionError, MemoryError):
            raise ExprError(f"expression nested too deep: {_short(source)}") from None
        count = sum(1 for _ in ast.walk(tree))
        if count > MAX_NODES:
            raise ExprError(f"expression of {count} parts; at most {MAX_NODES}: {_short(source)}")
        names: set[str] = set()
        _check(tree.body, names, 0)
        expr = cls(source.strip(), tree, frozenset(names))
        if not names:  # a constant: evaluated now, so that one too costly is refused when the file loads
            expr.evaluate({})
        else:
            _fold_constants(tree.body)
        return expr

    def evaluate(self, env: Mapping[str, Any]) -> Any:
        """Evaluate with the variables in ``env``; errors (unknown name, 1/0, …) raise ExprError."""
        try:
            return _eval(self.tree.body, env)
        except ExprError:
            raise
        except Exception as exc:  # arithmetic on user values: report, never crash the caller
            raise ExprError(f"`{self.source}` failed: {type(exc).__name__}: {exc}") from None

    def __str__(self) -> str:
        return self.source


def _short(source: str) -> str:
    return repr(source if len(source) <= 80 else source[:77] + "...")


def _fold_constants(node: ast.AST) -> None:
    """Evaluate every sub-expression without names (``2 ** 10 ** 10`` inside ``x * ...``) under the bounds."""
    if not isinstance(node, ast.expr) or isinstance(node, ast.Constant | ast.Name):
        return
    if not any(isinstance(n, ast.Name) and n.id not in _NAMED_CONSTANTS for n in ast.walk(node)):
        try:
            _eval(node, {})
        except ExprError:
            raise
        except Exception:  # arithmetic errors are reported when evaluated with values (e.g. 1/0 under an if)
            pass
        return
    for child in ast.iter_child_nodes(node):
        _fold_constants(child)


def _check(node: ast.AST, names: set[str], depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ExprError(f"expression nested more than {MAX_DEPTH} deep")
    depth += 1
    if isinstance(node, ast.Constant):
        if not isinstance(node.value, _CONSTANT_TYPES):
            raise ExprError(f"constant {node.value!r} is not allowed")
    elif isinstance(node, ast.Name):
        if node.id.startswith("__"):
            raise ExprError(f"name '{node.id}' is not allowed (dunder names are refused)")
        if node.id not in _NAMED_CONSTANTS:
            names.add(node.id)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _BINARY:
            raise ExprError(f"operator {type(node.op).__name__} is not allowed")
        _check(node.left, names, depth)
        _check(node.right, names, depth)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in _UNARY:
            raise ExprError(f"operator {type(node.op).__name__} is not allowed")
        _check(node.operand, names, depth)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, names, depth)
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _COMPARE:
                raise ExprError(f"comparison {type(op).__name__} is not allowed")
        _check(node.left, names, depth)
        for comparator in node.comparators:
            _check(comparator, names, depth)
    elif isinstance(node, ast.IfExp):
        for part in (node.test, node.body, node.orelse):
            _check(part, names, depth)
    elif isinstance(node, ast.Tuple | ast.List):
        for element in node.elts:
            _check(element, names, depth)
    elif isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            _check(node.func, names, depth)  # says what is wrong with it (attribute access, ...)
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            called = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ExprError(f"call of '{called}' is not allowed; allowed functions: {', '.join(sorted(FUNCTIONS))}")
        if node.keywords:
            raise ExprError(f"keyword arguments are not allowed in a call of '{node.func.id}'")
        for arg in node.args:
            _check(arg, names, depth)
    else:
        what = _FORBIDDEN_HINTS.get(type(node), type(node).__name__)
        raise ExprError(f"{what} not allowed in expressions")


def _too_big(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > MAX_INT_BITS


def _check_cost(op: type[ast.operator], left: Any, right: Any) -> None:
    """Refuse, before computing it, an operation whose result would be too large to compute quickly."""
    if op is ast.Pow and isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
        if right * math.log2(abs(left)) > MAX_INT_BITS:
            raise ExprError(f"{left} ** {right} is larger than {MAX_INT_BITS}-bit integers allow")
    if op is ast.Mult:
        for seq, count in ((left, right), (right, left)):
            if isinstance(seq, str | tuple) and isinstance(count, int) and len(seq) * count > MAX_ITEMS:
                raise ExprError(f"repetition of {len(seq)} items {count} times: more than {MAX_ITEMS} items")


def _bounded(value: Any) -> Any:
    if _too_big(value):
        raise ExprError(f"integer of {value.bit_length()} bits; at most {MAX_INT_BITS}")
    if isinstance(value, str | tuple) and len(value) > MAX_ITEMS:
        raise ExprError(f"a value of {len(value)} items; at most {MAX_ITEMS}")
    return value


def _eval(node: ast.AST, env: Mapping[str, Any]) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        if node.id in _NAMED_CONSTANTS:
            return _NAMED_CONSTANTS[node.id]
        raise ExprError(f"unknown name '{node.id}'")
    if isinstance(node, ast.BinOp):
        left, right = _eval(node.left, env), _eval(node.right, env)
        _check_cost(type(node.op), left, right)
        return _bounded(_BINARY[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_eval(node.operand, env))
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            result: Any = True
            for value in node.values:
                result = _eval(value, env)
                if not result:
                    return result
            return result
        result = False
        for value in node.values:
            result = _eval(value, env)
            if result:
                return result
        return result
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, env)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.IfExp):
        return _eval(node.body, env) if _eval(node.test, env) else _eval(node.orelse, env)
    if isinstance(node, ast.Tuple | ast.List):
        return tuple(_eval(element, env) for element in node.elts)
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)  # guaranteed by _check
        return _bounded(FUNCTIONS[node.func.id](*(_eval(arg, env) for arg in node.args)))
    raise ExprError(f"{type(node).__name__} not allowed in expressions")  # unreachable after _check
