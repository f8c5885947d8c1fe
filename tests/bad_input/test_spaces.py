"""Bad search spaces: every case ends in exit 2 naming the file and key, no traceback, within 10 s,
for each of `nas spaces validate / sample / show` (issue 15)."""

from __future__ import annotations

import gzip

import pytest

from tests.bad_input.harness import Case, check
from tests.conftest import MINIMAL_SPACE

VERBS = (("spaces", "validate"), ("spaces", "sample"), ("spaces", "show"))
BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{c}: &{c} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)
)


def _with(old: str, new: str) -> str:
    assert old in MINIMAL_SPACE, old
    return MINIMAL_SPACE.replace(old, new)


def _derived(expr: str) -> str:
    return _with("d_model: n_heads * head_dim", f'd_model: "{expr}"')


def _constraint(expr: str) -> str:
    return MINIMAL_SPACE + f'constraints:\n  - "{expr}"\n'


# (id, file text or bytes, fragments of the message after "{path}: ")
TEXTS: list[tuple[str, str | bytes, str]] = [
    # hangs before: expressions whose cost explodes
    ("pow tower in derived", _derived("n_heads * 10**10**10"), "derived.d_model: 10 ** 10000000000 is larger"),
    ("pow tower constant", _derived("9**9**9"), "derived.d_model: 9 ** 387420489 is larger"),
    ("pow tower in constraint", _constraint("params < 2**2**2**2**2"), "constraints[0]:"),
    ("pow of names", _derived("n_heads ** (n_layers * 10**6)"), "derived 'd_model': 2 ** 1000000 is larger"),
    ("string repetition", _constraint("'a' * 10**9 == 'a'"), "constraints[0]: repetition"),
    ("tuple repetition", _constraint("n_layers in (1,) * 10**9"), "constraints[0]: repetition"),
    ("huge int literal", _derived("1" + "0" * 60), "d_model: Input should be less than or equal to 131072"),
    ("int of huge float", _derived("int(1e300)"), "integer of 997 bits"),
    ("ceil of huge float", _derived("ceil(1e300) + n_heads"), "integer of 997 bits"),
    ("long expression", _derived("+".join(["n_heads"] * 400)), "derived.d_model: expression of"),
    ("deep unary", _derived("-" * 100 + "n_heads"), "derived.d_model: expression nested more than"),
    ("deep not", _constraint("not " * 100 + "true"), "constraints[0]: expression nested more than"),
    ("deep parentheses", _derived("(" * 300 + "n_heads" + ")" * 300), "derived.d_model:"),
    ("deep lists", _constraint("[" * 100 + "]" * 100), "constraints[0]: expression nested more than"),
    ("expression too long", _constraint("n_layers + " * 400 + "1"), "constraints[0]: expression of"),
    ("division by zero", _derived("n_heads / 0"), "derived 'd_model': `n_heads / 0` failed: ZeroDivisionError"),
    ("sqrt of negative", _derived("int(sqrt(-n_heads))"), "derived 'd_model': `int(sqrt(-n_heads))` failed"),
    ("log2 of zero", _derived("int(log2(n_heads - n_heads))"), "math domain error"),
    ("round_to zero", _derived("round_to(n_heads, 0)"), "derived 'd_model': `round_to(n_heads, 0)` failed"),
    ("float overflow", _derived("int(10.0 ** 400)"), "derived.d_model:"),
    ("min of nothing", _derived("min()"), "derived.d_model:"),
    ("string in arithmetic", _derived("n_heads * 'x'"), "d_model: Input should be a valid integer"),
    # a list where the architecture takes one value, a number past a float (these raised TypeError, OverflowError)
    ("derived width a tuple", _derived("(64, 128)"), "d_model: expected one value, got a list"),
    ("derived width a list", _derived("[n_heads, 128]"), "d_model: expected one value, got a list"),
    (
        "derived rope_theta a tuple",
        _with("d_model: n_heads * head_dim\n", 'd_model: n_heads * head_dim\n  rope_theta: "(64, 128)"\n'),
        "rope_theta: expected one value, got a list",
    ),
    (
        "rope_theta past a float",
        _with("  head_dim: 8\n", "  head_dim: 8\n  rope_theta: 1" + "0" * 400 + "\n"),
        "rope_theta: Input should be a valid number",
    ),
    ("dunder name", _constraint("__class__ > 1"), "constraints[0]: name '__class__' is not allowed"),
    ("attribute", _constraint("n_layers.real > 1"), "constraints[0]: attribute access"),
    ("import call", _constraint("__import__('os')"), "constraints[0]:"),
    ("eval call", _constraint("eval('1')"), "constraints[0]: call of 'eval' is not allowed"),
    ("open call", _constraint("open('/etc/passwd')"), "constraints[0]: call of 'open' is not allowed"),
    ("comprehension", _constraint("[x for x in (1, 2)]"), "constraints[0]: comprehensions not allowed"),
    ("walrus", _constraint("(y := 3) > 1"), "constraints[0]: assignment expressions"),
    ("f-string", _constraint("f'{n_layers}' == '1'"), "constraints[0]: f-strings not allowed"),
    ("dict literal", _constraint("{1: 2} == 1"), "constraints[0]: dict literals not allowed"),
    ("keyword argument", _derived("round(n_heads, ndigits=1)"), "derived.d_model: keyword arguments"),
    ("starred", _derived("max(*[1, 2])"), "derived.d_model: starred arguments"),
    ("bytes constant", _constraint("b'x' == b'x'"), "constraints[0]: constant b'x' is not allowed"),
    ("syntax error", _derived("n_heads *"), "derived.d_model: not a valid expression"),
    ("empty expression", _with("n_heads * head_dim", "''"), "derived.d_model: an expression must be"),
    ("condition hangs", _with("high: 2}", "high: 2, when: '10**10**10 > 1'}"), "parameters.n_layers.when:"),
    ("condition bad", _with("high: 2}", "high: 2, when: 'n_layers.x'}"), "parameters.n_layers.when:"),
    # YAML that explodes or nests
    ("alias bomb", BOMB, "YAML expands to more than"),
    (
        "alias bomb under parameters",
        "parameters:\n" + "".join("  " + line + "\n" for line in BOMB.splitlines()),
        "YAML expands to more than",
    ),
    ("recursive alias", "parameters: &p\n  self: *p\n", "YAML alias refers to a collection that contains it"),
    ("deep flow YAML", "parameters: " + "[" * 5000 + "]" * 5000, "YAML nested more than 64 levels deep"),
    ("deep mapping YAML", "parameters: " + "{a: " * 100 + "1" + "}" * 100, "YAML nested more than"),
    ("huge YAML", "parameters: {}\n# " + "x" * 1_100_000 + "\n", "characters of YAML; at most 1000000"),
    ("two documents", MINIMAL_SPACE + "---\nparameters: {}\n", "not valid YAML at line"),
    ("tab indent", "parameters:\n\tn_layers: 2\n", "not valid YAML at line 2"),
    ("bad date", "parameters: {when: 2024-13-45}\n", "not valid YAML"),
    ("huge integer literal", "parameters:\n  n_layers: 1" + "0" * 5000 + "\n", "not valid YAML"),
    # not UTF-8 text
    ("latin-1", MINIMAL_SPACE.replace("parameters:", "# café\nparameters:").encode("latin-1"), "not utf-8 text: byte"),
    ("utf-16", MINIMAL_SPACE.encode("utf-16"), "it looks like UTF-16"),
    ("gzip", gzip.compress(MINIMAL_SPACE.encode()), "it looks gzip-compressed"),
    ("binary", bytes(range(256)) * 4, "not utf-8 text"),
    ("NUL bytes", b"parameters:\x00\xff\n", "not utf-8 text"),
    # numbers
    ("inf high", _with("high: 2}", "high: .inf}"), "parameters.n_layers.high: Input should be a finite number"),
    ("nan low", _with("low: 1,", "low: .nan,"), "parameters.n_layers.low: Input should be a finite number"),
    ("huge high", _with("high: 2}", "high: " + "9" * 40 + "}"), "parameters.n_layers.high: Input should be less than"),
    ("huge negative low", _with("low: 1,", "low: -" + "9" * 40 + ","), "parameters.n_layers.low:"),
    ("bool high", _with("high: 2}", "high: true}"), "parameters.n_layers.high: expected a number, got true"),
    ("bool low", _with("low: 1,", "low: false,"), "parameters.n_layers.low: expected a number, got false"),
    ("bool step", _with("high: 2}", "high: 2, step: true}"), "parameters.n_layers.step: expected a number"),
    ("zero step", _with("high: 2}", "high: 2, step: 0}"), "parameters.n_layers.step:"),
    ("fractional step", _with("high: 2}", "high: 2, step: 0.5}"), "parameters.n_layers.step:"),
    ("low above high", _with("low: 1, high: 2", "low: 3, high: 2"), "parameters.n_layers: `low <= high` must hold"),
    ("log with low 0", _with("low: 1, high: 2}", "low: 0, high: 2, log: true}"), "parameters.n_layers: log=true"),
    ("string high", _with("high: 2}", "high: many}"), "parameters.n_layers.high:"),
    ("list high", _with("high: 2}", "high: [2]}"), "parameters.n_layers.high:"),
    (
        "huge layer range",
        _with("high: 2}", "high: 100000000000000}"),
        "n_layers: Input should be less than or equal to 1024",
    ),
    ("huge fixed layers", _with("n_layers: {type: int, low: 1, high: 2}", "n_layers: 100000000000000"), "n_layers"),
    ("inf vocab", _with("vocab_size: 256", "vocab_size: .inf"), "parameters.vocab_size"),
    ("nan vocab", _with("vocab_size: 256", "vocab_size: .nan"), "parameters.vocab_size"),
    ("huge vocab", _with("vocab_size: 256", "vocab_size: " + "9" * 30), "vocab_size: Input should be less than"),
    ("huge seq len", _with("max_seq_len: 32", "max_seq_len: " + "9" * 20), "max_seq_len: Input should be less than"),
    ("zero seq len", _with("max_seq_len: 32", "max_seq_len: 0"), "max_seq_len: Input should be greater"),
    ("zero heads", _with("values: [2, 4]", "values: [0]"), "not an architecture"),
    (
        "negative heads",
        _with("values: [2, 4]", "values: [-2, -4]"),
        "d_model: Input should be greater than or equal to 1",
    ),
    ("huge head dim", _with("head_dim: 8", "head_dim: 100000000000"), "d_model: Input should be less than"),
    ("huge derived width", _derived("n_heads * head_dim * 10**30"), "d_model: Input should be less than"),
    ("inf rope theta", MINIMAL_SPACE + "  rope_theta: 1.0e999\n", "rope_theta: Input should be a finite number"),
    (
        "float range inf",
        _with("  head_dim: 8\n", "  head_dim: 8\n  dropout: {type: float, low: 0, high: .inf}\n"),
        "parameters.dropout.high: Input should be a finite number",
    ),
    (
        "float step nan",
        _with("  head_dim: 8\n", "  head_dim: 8\n  dropout: {type: float, low: 0, high: 0.5, step: .nan}\n"),
        "parameters.dropout.step",
    ),
    (
        "duplicate choice values",
        _with("values: [2, 4]", "values: [2, 2]"),
        "parameters.n_heads: values must be distinct",
    ),
    ("empty choice", _with("values: [2, 4]", "values: []"), "parameters.n_heads.values"),
    ("choice of mappings", _with("values: [2, 4]", "values: [{a: 1}]"), "parameters.n_heads.values"),
    # structure
    ("empty file", "", "a search space must be a YAML mapping"),
    ("a list", "- 1\n", "a search space must be a YAML mapping, got list"),
    ("a number", "3\n", "a search space must be a YAML mapping"),
    ("parameters a list", "parameters: [1, 2]\n", "parameters"),
    ("unknown top key", MINIMAL_SPACE + "paramters: {}\n", "paramters: unknown key (did you mean 'parameters'?)"),
    ("unknown param key", _with("high: 2}", "high: 2, hihg: 3}"), "parameters.n_layers"),
    ("constraint a mapping", MINIMAL_SPACE + "constraints:\n  - {a: 1}\n", "constraints[0]:"),
    ("constraints a string", MINIMAL_SPACE + "constraints: params < 10\n", "constraints"),
    ("derived a list", _with("derived:\n  d_model: n_heads * head_dim\n", "derived: [1]\n"), "derived"),
    ("bad parameter name", _with("  head_dim: 8\n", "  head_dim: 8\n  'x y': 3\n"), "parameters"),
    ("dunder parameter", _with("  head_dim: 8\n", "  head_dim: 8\n  __class__: 3\n"), "parameters"),
    (
        "missing n_layers",
        _with("  n_layers: {type: int, low: 1, high: 2}\n", ""),
        "parameters: the architecture needs 'n_layers'",
    ),
    (
        "bad attention",
        _with("  head_dim: 8\n", "  head_dim: 8\n  attention: everywhere\n"),
        "parameters.attention: attention='everywhere' cannot be expressed",
    ),
    (
        "window without sliding",
        _with("  head_dim: 8\n", "  head_dim: 8\n  attention: sliding\n  window: -5\n"),
        "window",
    ),
]


def _cases() -> dict[str, Case]:
    cases = {}
    for name, content, fragment in TEXTS:
        for verb in VERBS:
            kwargs = {"data": content} if isinstance(content, bytes) else {"text": content}
            cases[f"{verb[1]}: {name}"] = Case((*verb, "{path}"), ("{path}: ", fragment), name="space.yaml", **kwargs)
    return cases


CASES = _cases()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_space(case, tmp_path, capsys):
    check(CASES[case], tmp_path, capsys)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (("spaces", "validate", "/nonexistent/dir/space.yaml"), "/nonexistent/dir/space.yaml: no such file"),
        (("spaces", "validate", "x" * 300 + ".yaml"), "file name too long"),
        (("spaces", "validate", "/tmp/" + "x" * 5000), "file name too long"),
        (("spaces", "sample", "tinny"), "did you mean 'tiny'"),
        (("spaces", "validate", "{tmp}"), "is a folder, not a file"),
        (("spaces", "sample", "tiny", "--seed", "-1"), "--seed"),
        (("spaces", "sample", "tiny", "--seed", str(2**32)), "--seed"),
        (("spaces", "sample", "tiny", "--seed", "1e3"), "--seed"),
        (("spaces", "sample", "tiny", "-n", "0"), "-n"),
        (("spaces", "sample", "tiny", "-n", "1000000000"), "-n"),
        (("spaces", "sample", "tiny", "-n", "many"), "-n"),
    ],
)
def test_bad_space_arguments(argv, fragment, tmp_path, capsys):
    check(Case(argv, (fragment,)), tmp_path, capsys)
