"""One offline HTML report of a study, for deciding which architecture to train for real.

plotly.js is embedded once for the whole page; every figure is a div that uses it. Sections:
summary and best-architecture card, optimisation history, learning curves, parameter importances,
parallel coordinates, Pareto fronts (quality vs each cost) with hypervolume history, top-10 % vs
all, proxy check (Spearman's rho), where the time went (seconds by phase), a sortable leaderboard
and a failures table. Task metrics are shown beside their no-model baselines (a line under the
leaderboard, the best card; a dashed line where the objective is a task metric). A study with no
completed trial gives a report that says so.

- ``page``: :func:`build_report`, the page template and the PNG export;
- ``tables``: the summary with the best-architecture card, the leaderboard and the failures;
- ``figures``: the Plotly figures (plotly imported lazily, inside each);
- ``fidelity``: the proxy check and the prediction at the target budget (figures and text).

Trials are read as :class:`nas.search.TrialRecord` and the study's metadata with
:func:`nas.search.study_info`; the report reads no attribute key itself.
"""

from nas.report.page import Report, build_report, check_report_path

__all__ = ["build_report", "check_report_path", "Report"]
