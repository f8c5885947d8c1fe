"""The README and docs/ stay true: links resolve, the README's protocol examples load, it stays short."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page):
    text = page.read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    missing = [link for link in links if "://" not in link and not (page.parent / link).exists()]
    assert not missing, f"{page.name}: links to missing files {missing}"


def test_the_readme_is_short_and_its_protocol_examples_load():
    from nas.protocol import parse_protocol

    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    corpus, tasks = re.findall(r"```yaml\n(.*?)```", text, re.S)[:2]
    alone = parse_protocol(corpus, source="README corpus example")
    assert alone.tasks == [] and list(alone.objectives) == ["val_loss"]
    both = parse_protocol(corpus.replace("tasks: []\nobjectives: {val_loss: minimize}\n", "") + tasks, source="README")
    assert [t.name for t in both.tasks] == ["sentiment"] and list(both.objectives) == ["val_loss", "sentiment.accuracy"]


def test_the_docs_pages_are_listed_in_the_readme():
    readme = (ROOT / "README.md").read_text()
    unlisted = [p.name for p in PAGES[1:] if p.name != "index.md" and f"docs/{p.name}" not in readme]
    assert not unlisted, f"docs pages the README does not point to: {unlisted}"


@pytest.mark.parametrize("command", ["search", "train"])
def test_protocol_is_the_flag_the_readme_names(command, tmp_path, monkeypatch, capsys):
    from tests.conftest import run

    monkeypatch.chdir(tmp_path)
    argv = [command, "--protocol", "nope.yaml"] + (["--dry-run"] if command == "search" else ["x", "-o", "o"])
    code, _, err = run(argv, capsys)
    assert code == 2 and "No such option" not in err


def test_version_and_the_next_steps_after_a_search(capsys):
    from nas import __version__
    from nas.cli.results import print_next
    from tests.conftest import run

    code, out, _ = run(["--version"], capsys)
    assert code == 0 and out.strip() == f"nas {__version__}"

    class Study:  # print_next reads a name; the leaderboard and best need a real study, so stub them
        study_name = "s"

    import nas.cli.results as results

    saved = results.render_leaderboard, results.print_best
    results.render_leaderboard, results.print_best = (lambda *a, **k: None), (lambda *a, **k: None)
    try:
        print_next(Study(), None)
    finally:
        results.render_leaderboard, results.print_best = saved
    assert "nas report s" in capsys.readouterr().out


COMMANDS = [["search"], ["worker"], ["status"], ["dashboard"], ["export"], ["report"], ["train"], ["spaces", "sample"]]
COMMANDS += [["spaces", "show"], ["protocols", "run"], ["protocols", "validate"], []]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "nas")
def test_help_reads_at_80_columns(command, monkeypatch, capsys):
    """Help wraps at the terminal's width: no line past 80 columns, no option name cut short."""
    from tests.conftest import run

    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run([*command, "--help"], capsys)
    assert code == 0 and "Options" in out
    assert not [line for line in out.splitlines() if len(line) > 80 or "…" in line]


def _quick_commands() -> list[str]:
    """The `nas spaces ...` and `nas protocols list|show|validate ...` commands the README and docs show: each
    runs in a second or two, so each is run (a command that trains, `nas protocols run`, is left out)."""
    found = set()
    for page in PAGES:
        for command in re.findall(r"`(nas (?:spaces|protocols|trials) [^`]*)`", page.read_text()):
            if command.split()[2:3] and command.split()[2] in ("list", "show", "validate", "sample"):
                found.add(command)
    return sorted(found)


@pytest.mark.parametrize("command", _quick_commands())
def test_the_commands_the_docs_show_run(command, monkeypatch, capsys):
    import glob
    import shlex

    from tests.conftest import run

    monkeypatch.chdir(ROOT)  # the docs' paths are relative to the repository root
    argv = [a for part in shlex.split(command)[1:] for a in (sorted(glob.glob(part)) if "*" in part else [part])]
    code, out, err = run(argv, capsys)
    assert code == 0, (command, err[-1000:])


def _study_commands() -> list[str]:
    """The commands on the default study that the README and docs show (status, report, export): each runs in
    seconds once the study exists (`nas dashboard` serves until stopped, and is left out)."""
    found = set()
    for page in PAGES:
        for match in re.findall(r"(nas (?:status|report|export) tiny-cpu-tiny[^`#|\n]*)", page.read_text()):
            found.add(match.strip())
    return sorted(found)


def test_the_study_commands_the_docs_show_run(in_tmp, micro_cache, capsys):
    """A micro study under the default study's name, then every command the docs show on it, as written."""
    import shlex

    from tests.conftest import cli_search, micro_sets, run

    commands = _study_commands()
    assert {c.split()[1] for c in commands} == {"status", "report", "export"}, commands
    code, _, err = cli_search(capsys, "tiny-cpu-tiny", 2, *micro_sets(micro_cache))
    assert code == 0, err
    for command in commands:
        code, out, err = run(shlex.split(command)[1:], capsys)
        assert code == 0, (command, err[-1000:])
