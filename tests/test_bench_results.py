"""bench/_results.py: RESULTS.md holds one current section per bench; --record moves the old one to history/."""

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_a_record_replaces_its_benchs_section_and_keeps_the_old_one_in_history(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    import _results

    monkeypatch.setattr(_results, "RESULTS", tmp_path / "RESULTS.md")
    monkeypatch.setattr(_results, "HISTORY", tmp_path / "history")
    monkeypatch.setattr(_results, "machine", lambda: "test machine")
    monkeypatch.setattr(sys, "argv", ["bench/x.py", "--record"])
    _results.append("alpha: first", "figure 1")
    _results.append("beta: other", "figure b")
    _results.append("alpha: again", "figure 2")
    text = (tmp_path / "RESULTS.md").read_text()
    assert text.count("## alpha") == 1 and "figure 2" in text and "figure 1" not in text
    assert text.index("## alpha") < text.index("## beta")  # the bench keeps its place
    history = (tmp_path / "history" / "alpha.md").read_text()
    assert "## alpha: first" in history and "figure 1" in history and "- machine: test machine" in history
    assert not (tmp_path / "history" / "beta.md").exists()
