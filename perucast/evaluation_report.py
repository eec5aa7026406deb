"""The evaluation report: metrics file, Markdown and HTML report, plots and DVC plot tables.

``write_report`` writes one directory, atomically (a failure leaves the previous directory or
nothing):

* ``metrics.json``: goals, blessing and every score (``perucast.evaluation.scores_to_dict``).
* ``report.md`` and ``report.html``: the same content for people; the HTML is self-contained
  (plots embedded as PNG data URIs), the Markdown links ``plots/*.png``.
* ``plots/*.png``: fan charts of sample series, error and coverage by horizon, wQL per model.
* ``scores.csv`` (the whole tidy score table), ``by_horizon.csv`` (long: horizon, model,
  metrics) and ``by_horizon_wide.csv`` (horizon, ``<model>_<metric>`` columns: what DVC
  ``plots`` draws as one line per column).
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from perucast.blessing import Blessing
from perucast.evaluation import (
    CANDIDATE,
    GROUP,
    GROUP_VALUE,
    METRICS,
    ORACLE,
    OVERALL,
    Goal,
    model_order,
    scores_to_dict,
)
from perucast.forecasts import ACTUAL, HORIZON, MODEL, ORIGIN, TARGET_TIME
from perucast.io import atomic_directory, write_json_atomic, write_text_atomic

METRICS_FILE = "metrics.json"
MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
SCORES_FILE = "scores.csv"
BY_HORIZON_FILE = "by_horizon.csv"
BY_HORIZON_WIDE_FILE = "by_horizon_wide.csv"
PLOTS_DIR = "plots"

_LABELS = {
    "mase": "MASE",
    "rmse": "RMSE",
    "smape": "sMAPE %",
    "wql": "wQL",
    "coverage_80": "coverage 80%",
    "n": "n",
}
# Metrics shown per horizon and per segment (sMAPE and n only in the overall table).
_BREAKDOWN_METRICS = ("mase", "rmse", "wql", "coverage_80")
_COLORS = {
    CANDIDATE: "tab:blue",
    "blessed": "tab:purple",
    "seasonal_naive": "tab:gray",
    "ets": "tab:orange",
    "gbt": "tab:green",
    ORACLE: "black",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; no display here or in pods
    import matplotlib.pyplot as plt

    return plt


def _integer_ticks(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # horizons are whole periods


def _color(model: str, index: int) -> str:
    return _COLORS.get(model, f"C{index % 10}")


# ---------------------------------------------------------------------------------------------
# Formatting


def _number(value: Any) -> str:
    if value is None:
        return "–"
    value = float(value)
    if not math.isfinite(value):
        return "–"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _fmt(metric: str, value: Any) -> str:
    """A metric value for a table cell."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if metric == "coverage_80":
        return f"{float(value):.1%}"
    if metric == "n":
        return f"{int(value):,}"
    if metric == "smape":
        return f"{float(value):.2f}"
    return _number(value)


def _bound_text(goal: Goal) -> str:
    if isinstance(goal.bound, tuple):
        low, high = goal.bound
        return f"{low:.0%}–{high:.0%}"
    sign = "<" if goal.name == "wql_vs_baselines" else "≤"
    return f"{sign} {_number(goal.bound)}"


def _goal_value(goal: Goal) -> str:
    return _fmt("coverage_80", goal.value) if goal.name == "coverage_80" else _number(goal.value)


# ---------------------------------------------------------------------------------------------
# The document: a list of blocks rendered to Markdown and to HTML.

Block = tuple[str, Any]


def _table_block(header: list[str], rows: list[list[str]]) -> Block:
    return ("table", (header, rows))


def _pivot(scores: pd.DataFrame, group: str, metric: str) -> Block:
    """One metric of one group kind: a row per group value, a column per model."""
    sub = scores[scores[GROUP] == group]
    models = model_order(list(sub[MODEL].unique()))
    values = list(dict.fromkeys(sub[GROUP_VALUE]))  # score() already ordered them
    cell = {(r[MODEL], r[GROUP_VALUE]): r[metric] for r in sub.to_dict("records")}
    rows = [[v, *(_fmt(metric, cell.get((m, v))) for m in models)] for v in values]
    return _table_block([group, *models], rows)


def _document(
    title: str,
    context: Mapping[str, Any],
    scores: pd.DataFrame,
    goals: Sequence[Goal],
    blessing: Blessing | None,
    plots: list[tuple[str, str]],
) -> list[Block]:
    blocks: list[Block] = [("h1", title)]
    if context:
        rows = [[str(k), str(v)] for k, v in context.items()]
        blocks.append(_table_block(["context", "value"], rows))

    blocks.append(("h2", "Goals"))
    passed = sum(g.passed is True for g in goals)
    blocks.append(("p", f"{passed} of {len(goals)} goals passed."))
    blocks.append(
        _table_block(
            ["goal", "value", "bound", "result", "detail"],
            [
                [g.description, _goal_value(g), _bound_text(g), g.status.upper(), g.detail]
                for g in goals
            ],
        )
    )

    blocks.append(("h2", "Blessing"))
    if blessing is None:
        blocks.append(("p", "No blessing decision was made."))
    else:
        verdict = "BLESSED" if blessing.blessed else "NOT BLESSED"
        blocks.append(("p", f"Decision: {verdict}."))
        blocks.append(("ul", list(blessing.reasons)))

    blocks.append(("h2", "Metrics overall"))
    overall = scores[scores[GROUP] == OVERALL]
    blocks.append(
        _table_block(
            ["model", *(_LABELS[m] for m in METRICS)],
            [[r[MODEL], *(_fmt(m, r[m]) for m in METRICS)] for r in overall.to_dict("records")],
        )
    )
    blocks.append(
        (
            "p",
            "MASE scales the P50's absolute errors by each series' in-sample seasonal naive "
            "error; wQL is the weighted quantile loss over P10, P50 and P90; coverage 80% is the "
            "share of actuals within [P10, P90]. The oracle's P10 = P50 = P90 is the generator's "
            "noise-free expectation: the floor for point errors, not an interval.",
        )
    )

    if plots:
        blocks.append(("h2", "Plots"))
        blocks += [("img", plot) for plot in plots]

    groups = [g for g in dict.fromkeys(scores[GROUP]) if g != OVERALL]
    for group in groups:
        blocks.append(("h2", f"By {group}"))
        for metric in _BREAKDOWN_METRICS:
            blocks.append(("h3", f"{_LABELS[metric]} by {group}"))
            blocks.append(_pivot(scores, group, metric))
    return blocks


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _markdown(blocks: list[Block]) -> str:
    out: list[str] = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            out += ["#" * int(kind[1]) + " " + content, ""]
        elif kind == "p":
            out += [content, ""]
        elif kind == "ul":
            out += [f"- {item}" for item in content] + [""]
        elif kind == "table":
            header, rows = content
            out.append("| " + " | ".join(_md_cell(h) for h in header) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
            out.append("")
        elif kind == "img":
            file, caption = content
            out += [f"![{caption}]({PLOTS_DIR}/{file})", "", f"*{caption}*", ""]
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222;
       line-height: 1.4; padding: 0 1em; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; vertical-align: top; }
th { background: #f0f3f7; text-align: left; }
tr:nth-child(even) td { background: #fafafa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.pass { background: #dff3e0 !important; color: #1b6e20; font-weight: bold; }
td.fail { background: #fbe2e2 !important; color: #a31515; font-weight: bold; }
td.na { color: #777; }
figure { margin: 1em 0 2em; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { color: #555; font-size: 0.9em; }
"""
_NUMERIC = re.compile(r"^[-+]?[\d,]*\.?\d+(e[-+]?\d+)?%?$|^–$")
# Whole cells that get a colour: goal results, and the monitor's drift status and checks.
_STATUS_CLASS = {
    "PASS": "pass",
    "FAIL": "fail",
    "N/A": "na",
    "OK": "pass",
    "DRIFTED": "fail",
    "FIRED": "fail",
}


def _esc(text: str) -> str:
    return html.escape(str(text), quote=False)  # text nodes; attributes use html.escape


def _td(text: str) -> str:
    cls = _STATUS_CLASS.get(text) or ("num" if _NUMERIC.match(text) else "")
    attr = f' class="{cls}"' if cls else ""
    return f"<td{attr}>{_esc(text)}</td>"


def _html(blocks: list[Block], title: str, images: Mapping[str, bytes]) -> str:
    esc = _esc
    body: list[str] = []
    for kind, content in blocks:
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{esc(content)}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{esc(content)}</p>")
        elif kind == "ul":
            body.append("<ul>" + "".join(f"<li>{esc(i)}</li>" for i in content) + "</ul>")
        elif kind == "table":
            header, rows = content
            head = "".join(f"<th>{esc(h)}</th>" for h in header)
            lines = ["<tr>" + "".join(_td(c) for c in row) + "</tr>" for row in rows]
            body.append(
                f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(lines)}</tbody></table>"
            )
        elif kind == "img":
            file, caption = content
            data = base64.b64encode(images[file]).decode("ascii")
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
                f"<figcaption>{esc(caption)}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{esc(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )


def markdown_page(blocks: list[Block]) -> str:
    """A Markdown page from the blocks `html_page` takes (images link ``plots/<key>``)."""
    return _markdown(blocks)


def html_page(blocks: list[Block], title: str, images: Mapping[str, bytes]) -> str:
    """A self-contained HTML page (PNG images inlined) from blocks: ``("h1", text)``,
    ``("p", text)``, ``("ul", items)``, ``("table", (header, rows))``, ``("img", (key, caption))``.
    """
    return _html(blocks, title, images)


# ---------------------------------------------------------------------------------------------
# Plots


def _horizon_rows(scores: pd.DataFrame) -> pd.DataFrame:
    rows = scores[scores[GROUP] == HORIZON].copy()
    rows[HORIZON] = rows[GROUP_VALUE].astype(int)
    return rows


def _plot_error_by_horizon(scores: pd.DataFrame, path: Path) -> Path | None:
    rows = _horizon_rows(scores)
    if rows.empty:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for i, model in enumerate(model_order(list(rows[MODEL].unique()))):
        sub = rows[rows[MODEL] == model].sort_values(HORIZON)
        style = {
            "color": _color(model, i),
            "ls": "--" if model == ORACLE else "-",
            "lw": 2.2 if model == CANDIDATE else 1.2,
            "marker": "o",
            "ms": 3,
        }
        for ax, metric in zip(axes, ("mase", "rmse"), strict=True):
            ax.plot(sub[HORIZON], sub[metric], label=model, **style)
    for ax, metric in zip(axes, ("mase", "rmse"), strict=True):
        _integer_ticks(ax)
        ax.set_xlabel("horizon (periods ahead)")
        ax.set_title(f"{_LABELS[metric]} by horizon")
        ax.grid(alpha=0.3)
    axes[0].axhline(1.0, color="grey", lw=0.6)  # MASE 1: as good as seasonal naive in-sample
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_coverage_by_horizon(
    scores: pd.DataFrame, coverage_range: tuple[float, float], path: Path
) -> Path | None:
    # The oracle's interval is a point (P10 = P90): its coverage says nothing.
    rows = _horizon_rows(scores)
    rows = rows[rows[MODEL] != ORACLE]
    if rows.empty:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    low, high = coverage_range
    ax.axhspan(low, high, color="tab:green", alpha=0.1, lw=0, label=f"goal {low:.0%}–{high:.0%}")
    ax.axhline(0.8, color="tab:green", lw=1, ls=":", label="nominal 80%")
    for i, model in enumerate(model_order(list(rows[MODEL].unique()))):
        sub = rows[rows[MODEL] == model].sort_values(HORIZON)
        ax.plot(
            sub[HORIZON],
            sub["coverage_80"],
            color=_color(model, i),
            lw=2.2 if model == CANDIDATE else 1.2,
            marker="o",
            ms=3,
            label=model,
        )
    ax.set_ylim(0, 1)
    _integer_ticks(ax)
    ax.set_xlabel("horizon (periods ahead)")
    ax.set_ylabel("share of actuals in [P10, P90]")
    ax.set_title("80% interval coverage by horizon")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _plot_wql(scores: pd.DataFrame, path: Path) -> Path | None:
    overall = scores[scores[GROUP] == OVERALL]
    if overall.empty:
        return None
    plt = _pyplot()
    models = list(overall[MODEL])
    values = overall["wql"].to_numpy(dtype=float)
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(models) + 1.5))
    y = np.arange(len(models))[::-1]  # first model on top
    bars = ax.barh(y, np.nan_to_num(values), color=[_color(m, i) for i, m in enumerate(models)])
    for bar, model, value in zip(bars, models, values, strict=True):
        if model == ORACLE:
            bar.set_hatch("//")
            bar.set_facecolor("white")
            bar.set_edgecolor("black")
        ax.text(
            bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {_number(value)}", va="center"
        )
    ax.set_yticks(y, models)
    ax.set_xlabel("weighted quantile loss (lower is better)")
    ax.set_title("wQL per model")
    ax.margins(x=0.15)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _pick_series(candidate: pd.DataFrame, keys: list[str], count: int) -> list[tuple]:
    """A few series spread over the sorted list of series, deterministic."""
    series = sorted(set(candidate[keys].itertuples(index=False, name=None)))
    if not series or count <= 0:
        return []
    picks = np.unique(np.linspace(0, len(series) - 1, min(count, len(series))).round().astype(int))
    return [series[i] for i in picks]


def _matches(frame: pd.DataFrame, keys: list[str], key: tuple) -> np.ndarray:
    """Rows of ``frame`` belonging to the series ``key`` (compared as strings)."""
    return np.logical_and.reduce(
        [frame[k].astype(str).to_numpy() == str(v) for k, v in zip(keys, key, strict=True)]
    )


def _observed_before(
    forecasts: pd.DataFrame,
    keys: list[str],
    key: tuple,
    origin: Any,
    history: pd.DataFrame | None,
    time_column: str | None,
    target: str | None,
) -> pd.Series:
    """Observed targets of one series up to ``origin``, indexed by time.

    From ``history`` and from the actuals of earlier forecast rows, so the line reaches the
    origin even when the history is only the training period.
    """
    parts = []
    if history is not None and time_column is not None and target is not None:
        own = history[_matches(history, keys, key)]
        parts.append(pd.Series(own[target].to_numpy(dtype=float), pd.to_datetime(own[time_column])))
    own = forecasts[_matches(forecasts, keys, key)]
    parts.append(pd.Series(own[ACTUAL].to_numpy(dtype=float), pd.to_datetime(own[TARGET_TIME])))
    observed = pd.concat(parts).dropna()
    observed = observed[~observed.index.duplicated(keep="first")].sort_index()
    return observed[observed.index <= pd.Timestamp(origin)]


def _plot_fan_charts(
    forecasts: pd.DataFrame,
    keys: list[str],
    path: Path,
    *,
    candidate: str,
    history: pd.DataFrame | None,
    time_column: str | None,
    target: str | None,
    count: int,
) -> Path | None:
    cand = forecasts[forecasts[MODEL] == candidate]
    chosen = _pick_series(cand, keys, count)
    if not chosen:
        return None
    plt = _pyplot()
    cols = 1 if len(chosen) == 1 else 2
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(7 * cols, 3.4 * rows), squeeze=False)
    for ax, key in zip(axes.flat, chosen, strict=False):
        series = cand[_matches(cand, keys, key)]
        # The origin with the most known actuals; the latest among equals.
        known = series.groupby(ORIGIN)[ACTUAL].count()
        origin = known[known == known.max()].index.max()
        window = series[series[ORIGIN] == origin].sort_values(HORIZON)
        past = _observed_before(forecasts, keys, key, origin, history, time_column, target)
        # Four forecast windows of context: enough to see the recent level and trend.
        origin_ts = pd.Timestamp(origin)
        first_target = pd.Timestamp(window[TARGET_TIME].iloc[0])
        start = origin_ts - 4 * len(window) * (first_target - origin_ts)
        past = past[past.index >= start]
        if len(past):
            ax.plot(past.index, past.to_numpy(), color="0.35", lw=1, label="observed")
        times = pd.to_datetime(window[TARGET_TIME])
        ax.fill_between(
            times,
            window["p10"],
            window["p90"],
            color="tab:blue",
            alpha=0.25,
            lw=0,
            label=f"{candidate} P10–P90",
        )
        ax.plot(times, window["p50"], color="tab:blue", lw=1.8, label=f"{candidate} P50")
        oracle = forecasts[forecasts[MODEL] == ORACLE]
        if not oracle.empty:
            owin = oracle[_matches(oracle, keys, key) & (oracle[ORIGIN] == origin)].sort_values(
                HORIZON
            )
            if not owin.empty:
                ax.plot(
                    pd.to_datetime(owin[TARGET_TIME]),
                    owin["p50"],
                    color="black",
                    ls="--",
                    lw=1.2,
                    label="oracle",
                )
        ax.plot(times, window[ACTUAL], color="black", marker="o", ms=3, lw=0, label="actual")
        ax.axvline(pd.Timestamp(origin), color="grey", lw=0.8, ls=":")
        ax.set_title(" / ".join(str(v) for v in key) + f" — origin {pd.Timestamp(origin):%Y-%m-%d}")
        ax.tick_params(axis="x", labelrotation=30, labelsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(chosen) :]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# Tables for DVC plots


def _by_horizon_tables(scores: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    rows = _horizon_rows(scores)
    long = rows[[HORIZON, MODEL, *METRICS]].sort_values([HORIZON, MODEL], kind="stable")
    long = long.reset_index(drop=True)
    wide = rows.pivot(index=HORIZON, columns=MODEL, values=["mase", "rmse", "coverage_80"])
    models = model_order(list(rows[MODEL].unique()))
    ordered = [(metric, m) for m in models for metric in ("mase", "rmse", "coverage_80")]
    wide = wide[ordered] if len(wide) else wide
    wide.columns = [f"{m}_{metric}" for metric, m in wide.columns]
    return long, wide.reset_index()


# ---------------------------------------------------------------------------------------------
# The report


def write_report(
    output_dir: Path | str,
    scores: pd.DataFrame,
    goals: Sequence[Goal],
    blessing: Blessing | None,
    forecasts: pd.DataFrame,
    *,
    series_keys: Sequence[str],
    history: pd.DataFrame | None = None,
    time_column: str | None = None,
    target: str | None = None,
    title: str = "Evaluation",
    context: Mapping[str, Any] | None = None,
    candidate: str = CANDIDATE,
    sample_series: int = 4,
) -> Path:
    """Write the evaluation report directory (replacing it atomically) and return its path.

    Args:
        output_dir: The directory to (re)create.
        scores: The table of ``perucast.evaluation.score``.
        goals: ``perucast.evaluation.goals`` on those scores.
        blessing: ``perucast.evaluation.bless`` on those scores, or None when not decided.
        forecasts: The long forecast frame scored (for the fan charts).
        series_keys: The columns identifying one series.
        history: Observed targets before the origins (``time_column``, series keys,
            ``target``) drawn left of the fan charts; None to draw the forecast window only.
        time_column: The period column of ``history``.
        target: The target column of ``history``.
        title: The report's heading.
        context: Facts listed under the title and stored in ``metrics.json`` (use case, data
            version, origins, ...); JSON-ready values.
        candidate: The model the goals and fan charts are about.
        sample_series: How many series get a fan chart.
    """
    keys = list(series_keys)
    context = dict(context or {})
    coverage_range = next(
        (g.bound for g in goals if g.name == "coverage_80" and isinstance(g.bound, tuple)),
        (0.75, 0.85),
    )
    payload = {
        "title": title,
        "context": context,
        "candidate": candidate,
        "goals_passed": all(g.passed is True for g in goals),
        "goals": [g.to_dict() for g in goals],
        "blessing": None if blessing is None else blessing.to_dict(),
        "scores": scores_to_dict(scores),
    }
    with atomic_directory(output_dir) as tmp:
        plot_dir = tmp / PLOTS_DIR
        plot_dir.mkdir()
        made = [
            (
                _plot_fan_charts(
                    forecasts,
                    keys,
                    plot_dir / "fan_charts.png",
                    candidate=candidate,
                    history=history,
                    time_column=time_column,
                    target=target,
                    count=sample_series,
                ),
                f"{candidate} P50 and P10–P90 band from one origin for sample series, with the "
                "actuals (dots) and the oracle (dashed)",
            ),
            (
                _plot_error_by_horizon(scores, plot_dir / "error_by_horizon.png"),
                "MASE and RMSE per model by horizon (oracle dashed)",
            ),
            (
                _plot_coverage_by_horizon(
                    scores, coverage_range, plot_dir / "coverage_by_horizon.png"
                ),
                "Share of actuals within [P10, P90] by horizon; the band is the goal",
            ),
            (
                _plot_wql(scores, plot_dir / "wql_by_model.png"),
                "Weighted quantile loss per model (the oracle, hatched, has P10 = P50 = P90)",
            ),
        ]
        plots = [(p.name, caption) for p, caption in made if p is not None]
        images = {name: (plot_dir / name).read_bytes() for name, _ in plots}

        long, wide = _by_horizon_tables(scores)
        write_text_atomic(tmp / SCORES_FILE, scores.to_csv(index=False))
        write_text_atomic(tmp / BY_HORIZON_FILE, long.to_csv(index=False))
        write_text_atomic(tmp / BY_HORIZON_WIDE_FILE, wide.to_csv(index=False))

        blocks = _document(title, context, scores, goals, blessing, plots)
        write_text_atomic(tmp / MARKDOWN_FILE, _markdown(blocks))
        write_text_atomic(tmp / HTML_FILE, _html(blocks, title, images))
        write_json_atomic(tmp / METRICS_FILE, payload)
    return Path(output_dir)
