import pytest

from nas.expr import Expr, ExprError


@pytest.mark.parametrize(
    ("source", "env", "expected"),
    [
        ("n_heads * head_dim", {"n_heads": 4, "head_dim": 16}, 64),
        ("n // g", {"n": 12, "g": 4}, 3),
        ("2 ** 3 + 1 - 4 / 2 % 3", {}, 7.0),
        ("-x", {"x": 3}, -3),
        ("a <= 20e6", {"a": 19e6}, True),
        ("1 < x <= 3", {"x": 3}, True),
        ("1 < x <= 3", {"x": 4}, False),
        ("attention != 'full' and window > 8", {"attention": "sliding", "window": 16}, True),
        ("not flag or x", {"flag": True, "x": 0}, 0),
        ("x in (1, 2, 3)", {"x": 2}, True),
        ("x not in [1, 2]", {"x": 2}, False),
        ("a if c else b", {"a": 1, "b": 2, "c": False}, 2),
        ("max(a, b) + min(a, b) + abs(-1)", {"a": 1, "b": 5}, 7),
        ("round_to(2.6 * 64, 8)", {}, 168),
        ("round_to(1, 8)", {}, 8),
        ("ceil(log2(x)) + floor(sqrt(17))", {"x": 100}, 11),
        ("int(7.9) + float(1) + round(2.5)", {}, 10.0),
        ("true and not false", {}, True),
    ],
)
def test_evaluates(source, env, expected):
    assert Expr.parse(source).evaluate(env) == expected


def test_names_are_the_free_variables():
    assert Expr.parse("max(a, b) * c if d == 'x' else 0").names == {"a", "b", "c", "d"}
    assert Expr.parse("true or null").names == set()


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("__import__('os').system('echo hi')", "attribute access"),
        ("__import__('os')", "call of '__import__' is not allowed"),
        ("__builtins__", "dunder"),
        ("().__class__", "attribute access"),
        ("x.y", "attribute access"),
        ("x[0]", "subscripts"),
        ("lambda: 1", "lambdas"),
        ("[i for i in x]", "comprehensions"),
        ("open('f')", "call of 'open' is not allowed"),
        ("eval('1')", "call of 'eval' is not allowed"),
        ("max(a, key=b)", "keyword arguments"),
        ("(y := 3)", "assignment"),
        ("{'a': 1}", "dict literals"),
        ("f'{x}'", "f-strings"),
        ("x << 2", "operator LShift"),
        ("x is None", "comparison Is"),
        ("1 +", "not a valid expression"),
        ("", "non-empty"),
    ],
)
def test_refuses_forbidden(source, fragment):
    with pytest.raises(ExprError, match=None) as info:
        Expr.parse(source)
    assert fragment in str(info.value)


def test_runtime_errors_are_expr_errors():
    with pytest.raises(ExprError, match="ZeroDivisionError"):
        Expr.parse("a / b").evaluate({"a": 1, "b": 0})
    with pytest.raises(ExprError, match="unknown name 'zz'"):
        Expr.parse("zz + 1").evaluate({})


def test_numbers_parse_as_constants():
    assert Expr.parse(3).evaluate({}) == 3
    assert Expr.parse(2.5).evaluate({}) == 2.5
