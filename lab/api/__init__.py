"""lab's Python API: the command line's workflows as functions, typed requests in, typed results out.

Every ``lab`` command is one call here (or a few); the CLI only parses arguments
into these requests, calls, prints and maps errors to exit codes, and imports
nothing of lab but this API and the tables and config beneath it (a test checks).
Errors are :class:`~lab.errors.UserError` or :class:`~lab.errors.InfraError`
(see :mod:`lab.errors`); Ctrl-C propagates after every guest has been shut down.

    cfg = lab.config.load("lab.yaml")
    result = lab.run(cfg, lab.RunRequest(arch="all", repeat=5))
    nightly = lab.nightly(cfg, lab.NightlyRequest(lab.RunRequest(), baseline="nightly"))

One module per command group: :mod:`~lab.api.runs`, :mod:`~lab.api.results`,
:mod:`~lab.api.explain`, :mod:`~lab.api.guests`.
"""

from __future__ import annotations

from lab.api.explain import EXPLAIN_FORMATS as EXPLAIN_FORMATS
from lab.api.explain import Explained as Explained
from lab.api.explain import ExplainRequest as ExplainRequest
from lab.api.explain import diff_text as diff_text
from lab.api.explain import explain as explain
from lab.api.explain import explain_labels as explain_labels
from lab.api.explain import explain_text as explain_text
from lab.api.explain import parse_cell as parse_cell
from lab.api.explain import stage_of as stage_of
from lab.api.guests import Booted as Booted
from lab.api.guests import booted as booted
from lab.api.guests import doctor as doctor
from lab.api.guests import images_build as images_build
from lab.api.guests import images_list as images_list
from lab.api.guests import payloads_build as payloads_build
from lab.api.guests import payloads_list as payloads_list
from lab.api.guests import prune_images as prune_images
from lab.api.guests import smoke as smoke
from lab.api.results import CompareRequest as CompareRequest
from lab.api.results import HistoryRow as HistoryRow
from lab.api.results import NightlyRequest as NightlyRequest
from lab.api.results import NightlyResult as NightlyResult
from lab.api.results import across as across
from lab.api.results import across_text as across_text
from lab.api.results import baseline_delete as baseline_delete
from lab.api.results import baseline_export as baseline_export
from lab.api.results import baseline_import as baseline_import
from lab.api.results import baseline_list as baseline_list
from lab.api.results import baseline_save as baseline_save
from lab.api.results import baseline_show as baseline_show
from lab.api.results import compare as compare
from lab.api.results import compare_explained as compare_explained
from lab.api.results import comparison_json as comparison_json
from lab.api.results import comparison_junit as comparison_junit
from lab.api.results import comparison_text as comparison_text
from lab.api.results import explained_text as explained_text
from lab.api.results import history as history
from lab.api.results import nightly as nightly
from lab.api.results import site as site
from lab.api.runs import EXPORT_FORMATS as EXPORT_FORMATS
from lab.api.runs import REPORT_FORMATS as REPORT_FORMATS
from lab.api.runs import ProbeRun as ProbeRun
from lab.api.runs import Progress as Progress
from lab.api.runs import RunRequest as RunRequest
from lab.api.runs import RunResult as RunResult
from lab.api.runs import export_bundle as export_bundle
from lab.api.runs import export_run as export_run
from lab.api.runs import fleet_provision as fleet_provision
from lab.api.runs import fleet_run as fleet_run
from lab.api.runs import import_bundles as import_bundles
from lab.api.runs import plan as plan
from lab.api.runs import probe as probe
from lab.api.runs import render_report as render_report
from lab.api.runs import run as run
from lab.api.runs import run_report as run_report
from lab.api.runs import runs_list as runs_list
from lab.api.runs import size as size
from lab.api.runs import summary_dict as summary_dict
from lab.api.runs import write_run_junit as write_run_junit
