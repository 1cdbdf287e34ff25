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


def render(a: Analysis, title: str = "witune sweep report") -> str:
    """The whole report as one HTML string."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; must be set before pyplot is first imported
    d = design(a)
    design_rows = pd.DataFrame(
        [{"what": k, "value": ", ".join(map(str, v)) if isinstance(v, list) else v} for k, v in d.items()]
    )
    sections = [_section("Sweep design", table(design_rows))]
    engine_note = (
        "The Python engine is a Gaussian approximation: it finds the critical PLW, but its "
        "coefficients and p-values are not comparable with the PLW paper's Table 3 (install R with "
        "glmmTMB and mgcv and use --engine r for the paper's own models)."
        if a.engine == "python"
        else "The R engine fits the PLW paper's own models: coefficients comparable with its Table 3 "
        "(a fit's note says when the paper's random effects did not converge and were simplified)."
    )
    sections.append(
        _section(
            f"Which engine and model fitted what (engine: {a.engine})",
            _reading(engine_note),
            table(pd.DataFrame(a.models_used)),
        )
    )
    if a.roles is not None:
        votes = pd.DataFrame(sorted(a.primary.items()), columns=["benchmark", "primary metric (its one vote)"])
        sections.append(
            _section(
                "Scores and diagnostics",
                _reading(
                    "Each benchmark votes once, on its primary metric; lm-eval subtasks are folded into their "
                    "benchmark (lm-eval's group score where present). Diagnostics are reported beside the "
                    "scores and never enter an aggregate, gain, best configuration or model."
                ),
                table(votes),
                "<details><summary>every (benchmark, metric) and its role</summary>"
                + table(a.roles, scroll=True)
                + "</details>",
            )
        )
    run_cols = [c for c in a.runs.columns if c not in ("rg",)]
    sections.append(
        _section(
            "Runs",
            table(a.runs[run_cols].sort_values(["model", "dataset", "prompt_weight", "response_weight"]), scroll=True),
        )
    )
    agg_fig = figures.aggregate_figure(a.aggregates, a.results)
    sections.append(
        _section(
            "Aggregates",
            _reading(readings.aggregate_reading(a)),
            table(a.best),
            fig_to_img(agg_fig, "aggregates against PLW") if agg_fig is not None else "",
        )
    )
    if not a.gains.empty:
        sections.append(
            _section(
                "WIT view: gains over conventional tuning",
                _reading(readings.wit_reading(a)),
                fig_to_img(wit.heatmap_figure(a.gains), "WIT heatmaps"),
                "<h3>Where the optimum lies</h3>",
                table(a.optimum_counts),
            )
        )
    plw_fig = figures.plw_fit_figure(a.results, a.fits)
    sections.append(
        _section(
            "PLW view: quadratic mixed model in wp",
            _reading(readings.plw_reading(a)),
            *[
                f"<h3>{html.escape(f.dataset)}: {html.escape(f.model)}</h3>" + table(pd.DataFrame([f.summary()]))
                for f in a.fits
            ],
            fig_to_img(plw_fig, "PLW fits") if plw_fig is not None else "",
        )
    )
    if a.gam is not None:
        sections.append(
            _section(
                f"Optimal PLW per generation ratio: [{a.gam.engine}] {a.gam.model}",
                _reading(readings.gam_reading(a)),
                table(a.gam.table),
                fig_to_img(gam_figure(a.gam), "GAM surface"),
            )
        )
    sections.append(
        _section(
            "Correlations with the optimal prompt weight",
            _reading(readings.correlation_reading(a)),
            table(a.correlations),
            table(a.mean_optima),
        )
    )
    dyn = dynamics_figure(a.runs)
    diag = diagnostic_columns(a)
    diag_table = table(a.runs.groupby("prompt_weight")[diag].mean().reset_index()) if diag else ""
    sections.append(
        _section(
            "Training dynamics and diagnostics (never in any aggregate)",
            _reading(readings.dynamics_reading(a)),
            diag_table,
            fig_to_img(dyn, "training dynamics") if dyn is not None else "",
        )
    )
    if a.subtasks is not None and (a.subtasks["benchmark"] != a.subtasks["group"]).any():
        drill = (
            a.subtasks.groupby(["group", "benchmark", "metric", "prompt_weight", "response_weight"])["score"]
            .mean()
            .reset_index()
        )
        sections.append(
            _section(
                "Subtasks (drill-down; each benchmark still votes once)",
                "<details><summary>mean score per subtask and configuration</summary>"
                + table(drill, scroll=True)
                + "</details>",
            )
        )
    if a.stages is not None and len(a.stages):
        sections.append(
            _section(
                "After DPO: gains over conventional tuning (WIT's DPO claim)",
                _reading(
                    "Mean gain over (0, 1) in percent after SFT, and after the same DPO stage applied to every "
                    "configuration (the reference is (0, 1) followed by DPO); dpo_change: mean score change through DPO."
                ),
                table(a.stages),
            )
        )
    if a.robustness is not None:
        sections.append(
            _section(
                "Prompt robustness (diagnostic)",
                _reading(
                    "Accuracy with the clean prompt, its drop under reworded instructions, changed option formats, typos "
                    "and shuffled few-shot order, and the worst variant. Not part of the aggregates."
                ),
                table(a.robustness),
            )
        )
    recs = "".join(f"<li>{html.escape(r)}</li>" for r in readings.recommendation(a))
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in a.notes)
    sections.append(
        _section(
            "Recommendation",
            f'<div class="rec"><ul>{recs}</ul></div>',
            f"<h3>Notes</h3><ul>{notes}</ul>" if notes else "",
        )
    )
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n"
        + "\n".join(sections)
        + CHECK
        + "</body></html>"
    )


def write_html_report(a: Analysis, path: str | Path, title: str = "witune sweep report") -> Path:
    """Write the report to ``path`` (parent folders created) and return the path."""
    from witune.atomic import atomic_write_text

    return atomic_write_text(path, render(a, title))
