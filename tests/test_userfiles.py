"""nas.userfiles: strict decoding with offsets, bounded YAML, line patterns with a time limit."""

from __future__ import annotations

import time

import pytest

from nas.errors import NasInputError
from nas.expr import Expr, ExprError
from nas.userfiles import check_decodes, compile_line_pattern, expand_paths, parse_yaml, parse_yaml_value, read_text


def test_read_text_names_the_byte_offset_and_honours_an_encoding(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes("abc café\n".encode("latin-1"))
    with pytest.raises(NasInputError, match=r"k: .*a.txt: not utf-8 text: byte 7 \(0xe9"):
        read_text(path, "p.yaml", "k")
    assert read_text(path, "p.yaml", "k", encoding="latin-1") == "abc café\n"


def test_check_decodes_finds_a_bad_byte_past_the_first_chunk(tmp_path):
    path = tmp_path / "big.txt"
    path.write_bytes(b"a" * (3 << 20) + "é".encode("latin-1") + b"tail")
    with pytest.raises(NasInputError, match=f"byte {3 << 20} "):
        check_decodes(path, "p.yaml", "k")
    path.write_bytes(b"a" * ((1 << 20) - 1) + "é".encode() + b"b")  # a character split across chunks is fine
    check_decodes(path, "p.yaml", "k")


def test_yaml_aliases_are_kept_within_bounds():
    assert parse_yaml("a: &x {b: 1}\nc: *x\nd: {<<: *x, e: 2}\n", "f") == {
        "a": {"b": 1},
        "c": {"b": 1},
        "d": {"b": 1, "e": 2},
    }
    wide = "a: &a [" + ",".join(["1"] * 50) + "]\nb: [" + ",".join(["*a"] * 50) + "]\n"
    assert len(parse_yaml(wide, "f")["b"]) == 50  # 2,600 values: fine
    bomb = (
        "a: &a ["
        + ",".join(["1"] * 50)
        + "]\nb: &b ["
        + ",".join(["*a"] * 50)
        + "]\nc: ["
        + ",".join(["*b"] * 50)
        + "]\n"
    )
    start = time.perf_counter()
    with pytest.raises(NasInputError, match="YAML expands to more than 100000 values"):
        parse_yaml(bomb, "f")
    assert time.perf_counter() - start < 1


def test_yaml_values_fall_back_to_text_but_not_past_the_bounds():
    assert parse_yaml_value("[1, 2", "--set k") == "[1, 2"
    assert parse_yaml_value("{a: 1}", "--set k") == {"a": 1}
    with pytest.raises(NasInputError, match="--set k: YAML nested more than 64"):
        parse_yaml_value("[" * 300 + "]" * 300, "--set k")


def test_line_patterns_are_checked_for_their_groups():
    assert compile_line_pattern(r"^(?P<label>\S+) (?P<text>.*)$", ("text", "label")).match("pos fine")["text"] == "fine"
    with pytest.raises(ValueError, match="missing: label"):
        compile_line_pattern(r"(?P<text>.*)", ("text", "label"))
    with pytest.raises(ValueError, match="not a valid regular expression"):
        compile_line_pattern(r"(?P<text>", ("text",))


@pytest.mark.parametrize(
    "source, message",
    [
        ("10**10**10", "larger than 128-bit"),
        ("'ab' * 10**6", "repetition"),
        ("int(1e300)", "integer of 997 bits"),
        ("+".join(["1"] * 300), "parts; at most 256"),
        ("-" * 40 + "1", "nested more than 32"),
        ("x" * 2001, "characters; at most 2000"),
    ],
)
def test_costly_expressions_are_refused_when_parsed(source, message):
    start = time.perf_counter()
    with pytest.raises(ExprError, match=message):
        Expr.parse(source)
    assert time.perf_counter() - start < 0.5


def test_costly_values_are_refused_when_evaluated():
    expr = Expr.parse("x ** y")
    assert expr.evaluate({"x": 2, "y": 100}) == 2**100
    with pytest.raises(ExprError, match="larger than 128-bit"):
        expr.evaluate({"x": 3, "y": 10**9})
    assert Expr.parse("x if x else 1/0").evaluate({"x": 3}) == 3  # a constant error under a branch is not refused early


def test_file_lists_expand_glob_patterns_in_sorted_order(tmp_path):
    for name in ("b.txt", "a.txt", "notes.md", "sub/c.txt", "sub/deeper/d.txt"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    (tmp_path / "folder.txt").mkdir()  # a folder that matches is not a file
    (tmp_path / "notes[v2].md").write_text("x")  # brackets in a real file's name: the file itself
    plain = str(tmp_path / "missing.txt")  # a plain entry stays as written: it is checked where it is read
    bracketed = str(tmp_path / "notes[v2].md")
    got = expand_paths([str(tmp_path / "*.txt"), plain, str(tmp_path / "**" / "[cd].txt"), bracketed])
    names = ("a.txt", "b.txt", "missing.txt", "sub/c.txt", "sub/deeper/d.txt", "notes[v2].md")
    assert got == [str(tmp_path / n) for n in names]
    with pytest.raises(NasInputError, match=r"data.files.paths: .*\*\.csv: no file matches this pattern"):
        expand_paths([str(tmp_path / "*.csv")], "p.yaml", "data.files.paths")
