"""Self-contained HTML report of a sweep: every figure is an embedded base64 PNG, no external files,
no network, so the file opens offline and can be mailed around.

A small inline script checks, once the page has loaded, that every figure decoded (naturalWidth > 0)
and records it in ``#render-check`` (``data-images``, ``data-broken``, ``data-errors``), which lets a
headless browser test verify the rendering without screenshots.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from witune.analysis import figures, wit
from witune.analysis.dynamics import dynamics_figure
from witune.analysis.gam import gam_figure
from witune.analysis.summary import Analysis, design, diagnostic_columns
from witune.report import readings

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:12px;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 6px}
th{background:#f3f3f3}img{max-width:100%;display:block;margin:.5em 0}.reading{background:#f6f8ff;
padding:.6em 1em;border-left:4px solid #4a6fdc}.rec{background:#effaf0;border-left:4px solid #3a9b4a;
padding:.6em 1em}.scroll{max-height:420px;overflow:auto}.wide{max-width:100%;overflow-x:auto}"""

CHECK = """<div id="render-check" data-done="0"></div><script>
var errs=[];window.addEventListener('error',function(e){errs.push(String(e.message))});
window.addEventListener('load',function(){var imgs=document.images,bad=0;
for(var i=0;i<imgs.length;i++){if(!imgs[i].complete||imgs[i].naturalWidth===0)bad++;}
var c=document.getElementById('render-check');c.setAttribute('data-images',imgs.length);
c.setAttribute('data-broken',bad);c.setAttribute('data-errors',errs.length);c.setAttribute('data-done','1');});
</script>"""


def fig_to_img(fig, alt: str) -> str:
    """Render a matplotlib figure as an <img> with a base64 PNG, and close it."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def table(df: pd.DataFrame, digits: int = 3, scroll: bool = False) -> str:
    body = df.to_html(index=False, float_format=lambda x: f"{x:.{digits}g}", na_rep="–", border=0)
    # every table scrolls sideways inside the page instead of widening it
    return f'<div class="scroll">{body}</div>' if scroll else f'<div class="wide">{body}</div>'


def _section(title: str, *parts: str) -> str:
    return f"<h2>{html.escape(title)}</h2>\n" + "\n".join(p for p in parts if p)


def _reading(text: str) -> str:
    return f'<p class="reading">{html.escape(text)}</p>'


def _findings(lines: Sequence[str]) -> str:
    return '<div class="rec"><ul>' + "".join(f"<li>{html.escape(line)}</li>" for line in lines) + "</ul></div>"


def _details(summary: str, body: str) -> str:
    return f"<details><summary>{html.escape(summary)}</summary>{body}</details>"


# --- the sections, in page order: each takes the analysis and returns its HTML ("" when it has nothing to show)


def design_section(a: Analysis) -> str:
    rows = [{"what": k, "value": ", ".join(map(str, v)) if isinstance(v, list) else v} for k, v in design(a).items()]
    return _section("Sweep design", table(pd.DataFrame(rows)))


def engine_section(a: Analysis) -> str:
    note = (
        "The Python engine is a Gaussian approximation: it finds the critical PLW, but its "
        "coefficients and p-values are not comparable with the PLW paper's Table 3 (install R with "
        "glmmTMB and mgcv and use --engine r for the paper's own models)."
        if a.engine == "python"
        else "The R engine fits the PLW paper's own models: coefficients comparable with its Table 3 "
        "(a fit's note says when the paper's random effects did not converge and were simplified)."
    )
    return _section(
        f"Which engine and model fitted what (engine: {a.engine})", _reading(note), table(pd.DataFrame(a.models_used))
    )


def roles_section(a: Analysis) -> str:
    if a.roles is None:
        return ""
    votes = pd.DataFrame(sorted(a.primary.items()), columns=["benchmark", "primary metric (its one vote)"])
    return _section(
        "Scores and diagnostics",
        _reading(
            "Each benchmark votes once, on its primary metric; lm-eval subtasks are folded into their "
            "benchmark (lm-eval's group score where present). Diagnostics are reported beside the "
            "scores and never enter an aggregate, gain, best configuration or model."
        ),
        table(votes),
        _details("every (benchmark, metric) and its role", table(a.roles, scroll=True)),
    )


def runs_section(a: Analysis) -> str:
    runs = a.runs[[c for c in a.runs.columns if c != "rg"]]
    return _section(
        "Runs", table(runs.sort_values(["model", "dataset", "prompt_weight", "response_weight"]), scroll=True)
    )


def aggregates_section(a: Analysis) -> str:
    fig = figures.aggregate_figure(a.aggregates, a.results)
    return _section(
        "Aggregates",
        _reading(readings.aggregate_reading(a)),
        table(a.best),
        fig_to_img(fig, "aggregates against PLW") if fig is not None else "",
    )


def wit_section(a: Analysis) -> str:
    if a.gains.empty:
        return ""
    return _section(
        "WIT view: gains over conventional tuning",
        _reading(readings.wit_reading(a)),
        fig_to_img(wit.heatmap_figure(a.gains), "WIT heatmaps"),
        "<h3>Where the optimum lies</h3>",
        _reading(
            "Counts of the best measured cell of each model × dataset × benchmark combination. "
            + readings.optimum_evidence(a)
        ),
        table(a.optimum_counts),
    )


def plw_section(a: Analysis) -> str:
    fig = figures.plw_fit_figure(a.results, a.fits)
    return _section(
        "PLW view: quadratic mixed model in wp",
        _reading(readings.plw_reading(a)),
        *[
            f"<h3>{html.escape(f.dataset)}: {html.escape(f.model)}</h3>" + table(pd.DataFrame([f.summary()]))
            for f in a.fits
        ],
        fig_to_img(fig, "PLW fits") if fig is not None else "",
    )


def gam_section(a: Analysis) -> str:
    if a.gam is None:
        return ""
    return _section(
        f"Optimal PLW per generation ratio: [{a.gam.engine}] {a.gam.model}",
        _reading(readings.gam_reading(a)),
        table(a.gam.table),
        fig_to_img(gam_figure(a.gam), "GAM surface"),
    )


def correlations_section(a: Analysis) -> str:
    title, reading = "Correlations with the optimal prompt weight", _reading(readings.correlation_reading(a))
    if a.correlations.empty:  # the one sentence says why; no empty or unexplained tables
        return _section(title, reading)
    return _section(
        title,
        reading,
        table(a.correlations),
        "<h3>Mean optimal prompt weight per dataset, benchmark and model</h3>",
        table(a.mean_optima),
    )


def dynamics_section(a: Analysis) -> str:
    fig = dynamics_figure(a.runs)
    diag = diagnostic_columns(a)
    return _section(
        "Training dynamics and diagnostics (never in any aggregate)",
        _reading(readings.dynamics_reading(a)),
        table(a.runs.groupby("prompt_weight")[diag].mean().reset_index()) if diag else "",
        fig_to_img(fig, "training dynamics") if fig is not None else "",
    )


def subtasks_section(a: Analysis) -> str:
    if a.subtasks is None or not (a.subtasks["benchmark"] != a.subtasks["group"]).any():
        return ""
    keys = ["group", "benchmark", "metric", "prompt_weight", "response_weight"]
    drill = a.subtasks.groupby(keys)["score"].mean().reset_index()
    return _section(
        "Subtasks (drill-down; each benchmark still votes once)",
        _details("mean score per subtask and configuration", table(drill, scroll=True)),
    )


def dpo_section(a: Analysis) -> str:
    if a.stages is None or not len(a.stages):
        return ""
    return _section(
        "After DPO: gains over conventional tuning (WIT's DPO claim)",
        _reading(
            "Mean gain over (0, 1) in percent after SFT, and after the same DPO stage applied to every "
            "configuration (the reference is (0, 1) followed by DPO); dpo_change: mean score change through DPO."
        ),
        table(a.stages),
    )


def robustness_section(a: Analysis) -> str:
    if a.robustness is None:
        return ""
    return _section(
        "Prompt robustness (diagnostic)",
        _reading(
            "Accuracy with the clean prompt, its drop under reworded instructions, changed option formats, typos "
            "and shuffled few-shot order, and the worst variant. Not part of the aggregates."
        ),
        table(a.robustness),
    )


def recommendation_section(a: Analysis) -> str:
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in a.notes)
    return _section(
        "Recommendation",
        _findings(readings.recommendation(a)),
        f"<h3>Notes</h3><ul>{notes}</ul>" if notes else "",
    )


SECTIONS: list[Callable[[Analysis], str]] = [
    design_section,
    engine_section,
    roles_section,
    runs_section,
    aggregates_section,
    wit_section,
    plw_section,
    gam_section,
    correlations_section,
    dynamics_section,
    subtasks_section,
    dpo_section,
    robustness_section,
    recommendation_section,
]


def findings_section(title: str, lines: Sequence[str], reading: str = "") -> str:
    """A section of plain findings (a list of sentences) and how to read them: the demo's headline."""
    return _section(title, _findings(lines), _reading(reading) if reading else "")


def render(a: Analysis, title: str = "witune sweep report", lead: Sequence[str] = ()) -> str:
    """The whole report as one HTML string: the `lead` sections (already HTML) first, then every section."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must be set before pyplot is first imported
    sections = [*lead, *(part for section in SECTIONS if (part := section(a)))]
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n"
        + "\n".join(sections)
        + CHECK
        + "</body></html>"
    )


def write_html_report(
    a: Analysis, path: str | Path, title: str = "witune sweep report", lead: Sequence[str] = ()
) -> Path:
    """Write the report to ``path`` (parent folders created) and return the path."""
    from witune.atomic import atomic_write_text

    return atomic_write_text(path, render(a, title, lead))
