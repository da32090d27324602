"""The final report: experiments × benchmarks table, group averages, JARVIS-vs-LLaVA deltas and plots.

Inputs are the per-(experiment, benchmark) scores JSON files written by ``jarvis.eval.scorers`` (their ``overall``
is the number tabulate.py would report, benchmarks-spec.md §2) and the stage-1 loss logs. Derived columns:

- ``cvbench_2d`` = (ade + coco)/2 and ``cvbench_3d`` = omni when those come as separate files, and ``cvbench`` =
  (2D + 3D)/2 (benchmarks-spec.md §2.3; tabulate.py never computes it, fix #13);
- ``vision_centric``: Cambrian-1's vision-centric group, mean of MMVP, RealWorldQA, CV-Bench-2D, CV-Bench-3D
  (paper-spec.md §10 "Groupings"); ``vision_hera``: HeRA's Vision group (RealWorldQA, MMVP, BLINK, V*, CV-Bench);
  ``general_hera``: GQA, POPE, MME/20, MMBench, SEED. Each average uses the members present for *every* row, so
  rows stay comparable; the members used are listed in ``summary.json``.

Seeds: runs named ``<arm>__s<k>`` (or an explicit grouping) are pooled into one row: mean ± the 95 %
t-interval half-width, t_{0.975, n-1}·s/√n (scipy). Deltas of each arm against its baselines are paired
differences over the seeds both sides ran, with their paired t-interval. Every single run's score also carries its
number of questions and a 95 % Wilson interval over questions (pairs for MMVP), so a one-question delta reads as
noise; scores that are not a proportion of questions (MME's summed score, F1) get no Wilson interval.

Controls (issue 12, jarvis.report_controls): ``<arm> (blind)`` rows (the blank-image evaluation, pooled like any
row, never in a delta), a question-types table against chance, and flags on runs that give one answer to (nearly)
every question (marked ⚠ in the tables, listed in a Flags section, ``answer_flags`` in summary.json).
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jarvis import report_controls as controls
from jarvis.io import StageFailed, write_bytes_atomic

FigureHook = Callable[[str, Any], None] | None  # (file name, matplotlib figure): called before the figure closes

SEED_PATTERN = re.compile(r"^(?P<group>.+)__s(?P<seed>\d+)$")
GROUPS: dict[str, tuple[str, ...]] = {
    "vision_centric": ("mmvp", "realworldqa", "cvbench_2d", "cvbench_3d"),
    "vision_hera": ("realworldqa", "mmvp", "blink", "vstar", "cvbench"),
    "general_hera": ("gqa", "pope", "mme", "mmbench_en", "seed"),
}
GROUP_SCALE = {"mme": 1 / 20}  # MME Perception (out of 2000) is divided by 20 in group averages (HeRA)
BENCH_ORDER = (
    "cvbench_2d",
    "cvbench_3d",
    "cvbench",
    "ade",
    "coco",
    "omni",
    "mmvp",
    "realworldqa",
    "blink",
    "vstar",
    "mme",
    "mmstar",
    "pope",
    "gqa",
)
QTYPE_ORDER = ("count", "relation", "depth", "distance", "presence", "colour", "shape", "mmvp")


# --------------------------------------------------------------------------------------------- I/O
class ScoresError(StageFailed, ValueError):
    """A scores or loss-history file the report cannot use (undefined score, bad coverage, NaN): one ``error:``
    line, exit 1."""


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _read_scores(path: Path) -> dict[str, Any]:
    """A scores JSON, strictly: ``NaN``/``Infinity`` refused, ``overall`` a finite number, ``coverage`` (written by
    ``jarvis evaluate`` / ``jarvis score``) well formed when present."""
    try:
        with open(path, encoding="utf-8") as fh:
            scores = json.load(fh, parse_constant=_no_constants)
    except ValueError as err:
        raise ScoresError(f"{path}: not strict JSON ({err})") from err
    if not isinstance(scores, dict) or "overall" not in scores:
        raise ValueError(f"{path}: not a scores file (no 'overall' key)")
    overall = scores["overall"]
    if isinstance(overall, bool) or not isinstance(overall, (int, float)) or not math.isfinite(overall):
        raise ScoresError(f"{path}: 'overall' is {json.dumps(overall)}, not a finite number (an undefined score)")
    cov = scores.get("coverage")
    if cov is not None:
        ok = isinstance(cov, dict) and all(isinstance(cov.get(k), int) and not isinstance(cov.get(k), bool)
                                           for k in ("answered", "total"))
        if not ok or not 0 < cov["answered"] <= cov["total"]:
            raise ScoresError(f"{path}: malformed coverage {json.dumps(cov)} (want answered/total, 0 < answered <= "
                              "total)")
    return scores


def coverage_of(scores: Mapping[str, Any]) -> tuple[int, int] | None:
    """(answered, total) of a scores file, or None for one written without coverage."""
    cov = scores.get("coverage")
    return (int(cov["answered"]), int(cov["total"])) if cov else None


def read_loss_history(path: str | Path) -> dict[str, np.ndarray]:
    """Stage-1 logged steps from JSONL or CSV: arrays ``step``, ``loss_ntp``, ``loss_jepa`` (NaN where absent)."""
    p = Path(path)
    if p.suffix == ".csv":
        with open(p, encoding="utf-8", newline="") as fh:
            recs: list[dict[str, Any]] = list(csv.DictReader(fh))
    else:
        recs = []
        with open(p, encoding="utf-8") as fh:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:  # strict: NaN/Infinity are not JSON (jarvis.training writes history.jsonl strictly)
                    recs.append(json.loads(line, parse_constant=_no_constants))
                except ValueError as err:
                    raise ScoresError(f"{p}: line {n}: not strict JSON ({err})") from err
    recs = [r for r in recs if r.get("step") not in (None, "")]
    if not recs:
        raise ValueError(f"{p}: no logged steps with a 'step' field")

    def col(key: str) -> np.ndarray:
        return np.array(
            [float(r[key]) if r.get(key) not in (None, "") else np.nan for r in recs], dtype=float
        )

    return {"step": col("step"), "loss_ntp": col("loss_ntp"), "loss_jepa": col("loss_jepa")}


# --------------------------------------------------------------------------------------------- numbers
def wilson(successes: float, n: float, z: float = 1.959963984540054) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion, in percent."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (100 * (centre - half), 100 * (centre + half))


def run_interval(scores: Mapping[str, Any]) -> dict[str, Any]:
    """Number of questions and the per-run Wilson interval of one scores file."""
    n_q = int(scores.get("n_questions", scores.get("n", 0)))
    metric = scores.get("metric")
    if metric == "pair_accuracy" and scores.get("pairs"):
        lo, hi = wilson(float(scores["pairs_correct"]), float(scores["pairs"]))
        units = float(scores["pairs"])
    elif metric == "accuracy" and scores.get("n"):
        lo, hi = wilson(float(scores["overall"]) / 100 * scores["n"], float(scores["n"]))
        units = float(scores["n"])
    else:
        lo = hi = units = float("nan")
    cov = coverage_of(scores)
    out: dict[str, Any] = {"n_questions": n_q, "units": units, "wilson_lo": lo, "wilson_hi": hi}
    if cov is not None:
        out.update(answered=cov[0], total=cov[1], partial=cov[0] < cov[1])
    return out


Loaded = Mapping[tuple[str, str], tuple[Path, dict[str, Any]]]  # (experiment, benchmark) -> (file, its scores)


def _load(score_files: Mapping[tuple[str, str], str | Path]) -> dict[tuple[str, str], tuple[Path, dict[str, Any]]]:
    """Every scores file read (strictly) once; the tables, intervals and controls all reduce these."""
    return {key: (Path(path), _read_scores(Path(path))) for key, path in score_files.items()}


def _intervals(loaded: Loaded) -> dict[str, dict[str, dict[str, Any]]]:
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for (exp, bench), (_, s) in loaded.items():
        out.setdefault(exp, {})[bench] = run_interval(s)
    return out


def _values(loaded: Loaded) -> dict[str, dict[str, float]]:
    """experiment -> benchmark -> overall, with the derived CV-Bench columns."""
    vals: dict[str, dict[str, float]] = {}
    for (exp, bench), (path, s) in loaded.items():
        if s.get("benchmark", bench) != bench:
            raise ValueError(f"{path}: scores for {s['benchmark']!r} filed under benchmark {bench!r}")
        row = vals.setdefault(exp, {})
        row[bench] = float(s["overall"])
        table = s.get("table", {})
        if bench == "cvbench":
            row.setdefault("cvbench_2d", float(table["Accuracy 2D"]))
            row.setdefault("cvbench_3d", float(table["Accuracy 3D"]))
    for row in vals.values():
        if "cvbench_2d" not in row and "ade" in row and "coco" in row:
            row["cvbench_2d"] = (row["ade"] + row["coco"]) / 2
        if "cvbench_3d" not in row and "omni" in row:
            row["cvbench_3d"] = row["omni"]
        if "cvbench" not in row and "cvbench_2d" in row and "cvbench_3d" in row:
            row["cvbench"] = (row["cvbench_2d"] + row["cvbench_3d"]) / 2
    return vals


def _add_groups(vals: dict[str, dict[str, float]]) -> dict[str, list[str]]:
    used: dict[str, list[str]] = {}
    for name, members in GROUPS.items():
        common = [m for m in members if all(m in row for row in vals.values())]
        if not common:
            continue
        used[name] = common
        for row in vals.values():
            row[name] = float(np.mean([row[m] * GROUP_SCALE.get(m, 1.0) for m in common]))
    return used


def ci95(xs: Sequence[float]) -> float:
    """Half-width of the two-sided 95 % t-interval of the mean; NaN for fewer than two values."""
    if len(xs) < 2:
        return float("nan")
    from scipy import stats  # deferred: only needed with seeds

    return float(stats.t.ppf(0.975, len(xs) - 1) * np.std(xs, ddof=1) / math.sqrt(len(xs)))


def _seed_groups(
    experiments: Sequence[str], grouping: Mapping[str, Sequence[str]] | None
) -> dict[str, list[str]]:
    if grouping is not None:
        groups = {g: list(m) for g, m in grouping.items()}
        missing = sorted({e for m in groups.values() for e in m} - set(experiments))
        if missing:
            raise ValueError(f"seed grouping names experiments without scores: {missing}")
        covered = {e for m in groups.values() for e in m}
        groups.update({e: [e] for e in experiments if e not in covered})
        return groups
    groups: dict[str, list[str]] = {}
    for e in experiments:
        m = SEED_PATTERN.match(e)
        groups.setdefault(m.group("group") if m else e, []).append(e)
    return groups


def _seed_of(exp: str) -> str:
    m = SEED_PATTERN.match(exp)
    return m.group("seed") if m else exp


def _cell(xs: list[float]) -> dict[str, Any]:
    return {"mean": float(np.mean(xs)), "ci95": ci95(xs), "n": len(xs), "values": xs}


def _run_markdown(vals: dict[str, dict[str, float]], ivals: dict[str, dict[str, dict[str, Any]]],
                  cols: list[str], flagged: frozenset[tuple[str, str]] = frozenset()) -> str:
    """Per-run scores with [Wilson 95 %] and the number of questions; ⚠ on a flagged (run, benchmark)."""
    benches = [c for c in cols if any(c in ivals.get(r, {}) for r in vals)]
    lines = ["### Per run (95 % Wilson interval over questions; n = questions)", "",
             "| run | " + " | ".join(benches) + " |", "|---" * (len(benches) + 1) + "|"]
    for run in sorted(vals):
        cells = []
        for b in benches:
            iv = ivals.get(run, {}).get(b)
            if b not in vals[run] or iv is None:
                cells.append("—")
                continue
            w = "" if math.isnan(iv["wilson_lo"]) else f" [{iv['wilson_lo']:.1f}, {iv['wilson_hi']:.1f}]"
            n = f"n={iv['n_questions']}"
            if iv.get("partial"):
                n = f"n={iv['answered']}/{iv['total']} PARTIAL"
            flag = f" {controls.FLAG}" if (run, b) in flagged else ""
            cells.append(f"{vals[run][b]:.2f}{w} {n}{flag}")
        lines.append(f"| {run} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _partial_note(ivals: dict[str, dict[str, dict[str, Any]]]) -> str:
    """A warning block listing the scores made on a subset of their benchmark, or ``""``."""
    partial = [f"{run}/{b} ({iv['answered']}/{iv['total']})" for run, benches in sorted(ivals.items())
               for b, iv in sorted(benches.items()) if iv.get("partial")]
    if not partial:
        return ""
    return ("> **PARTIAL scores** (a subset of the benchmark, `evaluation.limit`; not comparable with "
            f"full-benchmark scores): {', '.join(partial)}\n\n")


# --------------------------------------------------------------------------------------------- tables
def _fmt(c: dict[str, Any] | None, signed: bool = False) -> str:
    if c is None:
        return "—"
    s = f"{c['mean']:+.2f}" if signed else f"{c['mean']:.2f}"
    return s + (f" ± {c['ci95']:.2f}" if c["n"] > 1 and not math.isnan(c["ci95"]) else "")


def _markdown(title: str, rows: dict[str, dict[str, Any]], cols: list[str], signed: bool = False,
              marks: Mapping[str, set[str]] | None = None) -> str:
    """A table of pooled cells; ``marks`` (row -> columns) get the flag marker."""
    marks = marks or {}
    lines = [f"### {title}", "", "| row | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, r in rows.items():
        cells = [_fmt(r.get(c), signed) + (f" {controls.FLAG}" if c in marks.get(name, ()) else "") for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv(rows: dict[str, dict[str, Any]], cols: list[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", *[x for c in cols for x in (c, f"{c}_ci95", f"{c}_n")]])
    for name, r in rows.items():
        cells: list[Any] = [name]
        for c in cols:
            v = r.get(c)
            cells += (
                ["", "", 0]
                if v is None
                else [repr(v["mean"]), "" if math.isnan(v["ci95"]) else repr(v["ci95"]), v["n"]]
            )
        w.writerow(cells)
    return buf.getvalue()


def _deltas(
    groups: dict[str, list[str]],
    vals: dict[str, dict[str, float]],
    cols: list[str],
    baselines: Mapping[str, Sequence[str]],
) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for arm, bases in baselines.items():
        for base in bases:
            for g in (arm, base):
                if g not in groups:
                    raise ValueError(
                        f"baseline pairing names {g!r}, which has no scores (rows: {sorted(groups)})"
                    )
            row: dict[str, Any] = {}
            for c in cols:
                a = {_seed_of(e): vals[e][c] for e in groups[arm] if c in vals[e]}
                b = {_seed_of(e): vals[e][c] for e in groups[base] if c in vals[e]}
                if not a or not b:
                    continue
                common = sorted(set(a) & set(b))
                if common:  # paired differences over the seeds both arms ran
                    row[c] = _cell([a[k] - b[k] for k in common]) | {"paired": True}
                else:
                    row[c] = {
                        "mean": float(np.mean(list(a.values())) - np.mean(list(b.values()))),
                        "ci95": float("nan"),
                        "n": min(len(a), len(b)),
                        "paired": False,
                    }
            out[f"{arm} − {base}"] = row
    return out


# --------------------------------------------------------------------------------------------- plots
def _plot_losses(histories: Mapping[str, str | Path], path: Path, on_figure: FigureHook = None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    palette = plt.get_cmap("tab10")
    for k, (exp, hpath) in enumerate(histories.items()):
        h = read_loss_history(hpath)
        for ax, key in zip(axes, ("loss_ntp", "loss_jepa"), strict=True):
            ok = ~np.isnan(h[key])
            if ok.any():  # one colour per experiment in both panels; LLaVA arms have no JEPA curve
                ax.plot(h["step"][ok], h[key][ok], label=exp, linewidth=1.4, color=palette(k % 10))
    for ax, key, title in zip(axes, ("loss_ntp", "loss_jepa"), ("next-token loss", "JEPA loss"), strict=True):
        ax.set_xlabel("stage-1 optimizer step")
        ax.set_ylabel(key)
        ax.set_title(f"Stage 1: {title}")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    _save_fig(fig, path, on_figure)


def _plot_scores(rows: dict[str, dict[str, Any]], cols: list[str], path: Path, title: str = "Benchmark scores",
                 on_figure: FigureHook = None
                 ) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = [c for c in cols if any(c in r for r in rows.values())]
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 0.9 * len(cols) + 2)), 4.5), constrained_layout=True)
    width = 0.8 / max(1, len(rows))
    x = np.arange(len(cols))
    for k, (name, r) in enumerate(rows.items()):
        scale = [GROUP_SCALE.get(c, 1.0) for c in cols]
        means = np.array([r[c]["mean"] * s if c in r else np.nan for c, s in zip(cols, scale, strict=True)])
        errs = np.array([
            0.0 if c not in r or math.isnan(r[c]["ci95"]) else r[c]["ci95"] * s
            for c, s in zip(cols, scale, strict=True)
        ])
        # Every score lives in [0, 100] (MME Perception / 20 too): an interval is drawn inside that range. With two
        # seeds the t quantile is 12.7 and unclipped bars span -400..400, which flattens every bar to a line.
        yerr = np.vstack([np.minimum(errs, np.nan_to_num(means)), np.minimum(errs, 100.0 - np.nan_to_num(means))])
        ax.bar(x + (k - (len(rows) - 1) / 2) * width, means, width, yerr=yerr, capsize=3, label=name)
    ax.set_xticks(x, [c + (" /20" if c in GROUP_SCALE else "") for c in cols], rotation=30, ha="right")
    ax.set_ylabel("score (%; MME Perception / 20)")
    ax.set_ylim(0, 100)
    seeds = min((c["n"] for r in rows.values() for c in r.values()), default=1)
    ax.set_title(f"{title} (error bars: 95% CI over {seeds} seeds, within 0-100)" if seeds >= 2
                 else f"{title} (one seed per row: no interval over seeds)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # beside the axes: bars stay uncovered
    _save_fig(fig, path, on_figure)


def _plot_sweep(rows: dict[str, dict[str, Any]], cols: list[str], path: Path, name: str,
                on_figure: FigureHook = None) -> None:
    """Each benchmark and group average against the swept value, with seed intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = list(rows)
    cols = [c for c in cols if any(c in r for r in rows.values())]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.2 * len(labels) + 3), 4.5), constrained_layout=True)
    x = np.arange(len(labels))
    for c in cols:
        s = GROUP_SCALE.get(c, 1.0)
        means = [rows[v][c]["mean"] * s if c in rows[v] else np.nan for v in labels]
        errs = [0.0 if c not in rows[v] or math.isnan(rows[v][c]["ci95"]) else rows[v][c]["ci95"] * s
                for v in labels]
        ax.errorbar(x, means, yerr=errs, marker="o", capsize=3, label=c + (" /20" if c in GROUP_SCALE else ""))
    ax.set_xticks(x, labels, rotation=20, ha="right")
    ax.set_ylabel("score (%)")
    seeds = min((c["n"] for r in rows.values() for c in r.values()), default=1)
    ax.set_title(f"sweep {name}" + (f" (95% CI over {seeds} seeds)" if seeds >= 2 else " (one seed: no interval)"))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    _save_fig(fig, path, on_figure)


def _save_fig(fig: Any, path: Path, on_figure: FigureHook = None) -> None:
    import matplotlib.pyplot as plt

    if on_figure is not None:  # e.g. mlflow.log_figure, before the figure is closed
        on_figure(path.name, fig)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())


def _no_nan(obj: Any) -> Any:
    """NaN -> None, so summary.json is strict JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _no_nan(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_no_nan(v) for v in obj]
    return obj


# --------------------------------------------------------------------------------------------- entry point
def build_report(
    score_files: Mapping[tuple[str, str], str | Path],
    loss_histories: Mapping[str, str | Path],
    out_dir: str | Path,
    baselines: Mapping[str, Sequence[str]] | None = None,
    seed_groups: Mapping[str, Sequence[str]] | None = None,
    sweeps: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    on_figure: FigureHook = None,
) -> dict[str, Any]:
    """Write ``table.csv``, ``table.md``, ``deltas.csv``, ``summary.json``, ``loss_curves.png``, ``scores.png``.

    ``score_files`` maps (experiment, benchmark) to a scores JSON; ``loss_histories`` maps experiment to a stage-1
    log (JSONL/CSV with ``step``, ``loss_ntp``, ``loss_jepa``); ``baselines`` maps an arm (row name: experiment or
    seed group) to the baseline rows it is compared with. Returns the summary dict.
    """
    if not score_files:
        raise ValueError("build_report: no score files")
    out = Path(out_dir)
    loaded = _load(score_files)
    vals = _values(loaded)
    used = _add_groups(vals)
    present = {c for r in vals.values() for c in r}
    cols = (
        [c for c in BENCH_ORDER if c in present]
        + sorted(present - set(BENCH_ORDER) - set(GROUPS))
        + list(used)
    )
    groups = _seed_groups(sorted(vals), seed_groups)
    rows = {
        g: {c: _cell([vals[e][c] for e in members]) for c in cols if all(c in vals[e] for e in members)}
        for g, members in groups.items()
    }
    deltas = _deltas(groups, vals, cols, baselines or {})

    ivals = _intervals(loaded)
    checks = _controls(loaded, groups)
    flagged = frozenset((f["run"], f["benchmark"]) for f in checks["answer_flags"])
    marks = {g: {b for e in members for r, b in flagged if r == e} for g, members in groups.items()}
    md = "# JARVIS reproduction: results\n\n" + _partial_note(ivals) + _markdown("Scores", rows, cols, marks=marks)
    if deltas:
        md += "\n" + _markdown("Deltas against baselines (paired over seeds)", deltas, cols, signed=True)
    md += "\n" + _qtypes_markdown(checks["question_types"])
    md += "\n" + controls.flags_markdown(checks["answer_flags"], sum(len(d) for d in checks["answer_distribution"]
                                                                      .values()))
    md += "\n" + _run_markdown(vals, ivals, cols, flagged)
    sweep_files: dict[str, Path] = {}
    for name, variants in (sweeps or {}).items():
        srows = {f"{label}": rows[v] for v, label in variants if v in rows}
        md += "\n" + _markdown(f"Sweep {name}", srows, cols)
        sweep_files[f"sweep_{name}_png"] = out / f"sweep-{name}.png"
        _plot_sweep(srows, cols, sweep_files[f"sweep_{name}_png"], name, on_figure)
    md += "\nGroup averages use: " + "; ".join(f"{k} = {', '.join(v)}" for k, v in used.items()) + "\n"
    files = {
        "table_csv": out / "table.csv",
        "table_md": out / "table.md",
        "deltas_csv": out / "deltas.csv",
        "summary": out / "summary.json",
        "scores_png": out / "scores.png",
    }
    write_bytes_atomic(files["table_csv"], _csv(rows, cols).encode())
    write_bytes_atomic(files["deltas_csv"], _csv(deltas, cols).encode())
    files.update(sweep_files)
    write_bytes_atomic(files["table_md"], md.encode())
    _plot_scores(rows, cols, files["scores_png"], on_figure=on_figure)
    if loss_histories:
        files["loss_png"] = out / "loss_curves.png"
        _plot_losses(loss_histories, files["loss_png"], on_figure)
    summary = {
        "columns": cols,
        "rows": rows,
        "deltas": deltas,
        "groups_used": used,
        "seed_groups": groups,
        "runs": ivals,
        "partial": sorted(f"{run}/{b}" for run, bs in ivals.items() for b, iv in bs.items() if iv.get("partial")),
        "blind_rows": [r for r in rows if r.endswith(controls.BLIND_SUFFIX)],
        **checks,
        "files": {k: str(v) for k, v in files.items()},
    }
    write_bytes_atomic(files["summary"], json.dumps(_no_nan(summary), indent=2, allow_nan=False).encode())
    return summary


# --------------------------------------------------------------------------------------------- controls
def _arm_seed(run: str) -> tuple[str, str]:
    m = SEED_PATTERN.match(run)
    return (m.group("group"), m.group("seed")) if m else (run, "—")


def _controls(loaded: Loaded, groups: dict[str, list[str]]) -> dict[str, Any]:
    """Question types per run and per row (mean ± CI over seeds) with the chance row, answer distributions and
    their flags (jarvis.report_controls)."""
    per_run: dict[str, dict[str, dict[str, Any]]] = {}
    for (run, bench), (_, s) in loaded.items():
        per_run.setdefault(run, {})[bench] = s
    types = {run: controls.run_types(b) for run, b in per_run.items()}
    present = {t for r in types.values() for t in r}
    order = {t: i for i, t in enumerate(QTYPE_ORDER)}
    cols = sorted(present, key=lambda t: (order.get(t.removesuffix(controls.OPEN), len(order)), t))
    rows = {g: {t: _cell([types[e][t]["accuracy"] for e in members]) for t in cols
                if all(t in types.get(e, {}) for e in members)} for g, members in groups.items()}
    dists = {run: {b: s["answer_distribution"] for b, s in benches.items() if "answer_distribution" in s}
             for run, benches in per_run.items()}
    return {"question_types": {"columns": cols, "rows": rows, "chance": controls.chance_row(types), "runs": types},
            "answer_distribution": dists, "answer_flags": controls.answer_flags(dists, _arm_seed)}


def _qtypes_markdown(qt: Mapping[str, Any]) -> str:
    cols = qt["columns"]
    if not cols:
        return "### Question types\n\nNo scores file carries question types.\n"
    chance = {t: {"mean": v, "ci95": float("nan"), "n": 1} for t, v in qt["chance"].items() if v is not None}
    return _markdown("Question types", {**qt["rows"], "chance": chance}, cols) + "\n" + controls.QTYPES_NOTE


# --------------------------------------------------------------------------------------------- DVC's views
def write_curves(histories: Mapping[tuple[str, int], str | Path], files: Mapping[tuple[str, int], Path]) -> None:
    """Each stage-1 history as CSV (``step,loss_ntp,loss_jepa``; empty where absent): `dvc plots show` reads CSV,
    not the JSONL the training stage writes."""
    for key, path in files.items():
        h = read_loss_history(histories[key])
        lines = ["step,loss_ntp,loss_jepa"]
        for i in range(len(h["step"])):
            cells = [f"{int(h['step'][i])}"] + ["" if np.isnan(h[k][i]) else repr(float(h[k][i]))
                                                 for k in ("loss_ntp", "loss_jepa")]
            lines.append(",".join(cells))
        write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())


def write_arm_metrics(summary: Mapping[str, Any], files: Mapping[str, Path]) -> None:
    """Per arm, its mean over seeds of every column (benchmarks and group averages): `dvc metrics show` prints one
    short row per arm."""
    for arm, path in files.items():
        cells = summary["rows"].get(arm, {})
        means = {c: _no_nan(cells[c]["mean"]) for c in summary["columns"] if c in cells}
        write_bytes_atomic(path, json.dumps({"n_seeds": max((cells[c]["n"] for c in means), default=0), **means},
                                            indent=2, allow_nan=False).encode())


def write_bars(summary: Mapping[str, Any], path: Path) -> None:
    """One row per (column, arm) with its mean over seeds: the score bars of `dvc plots show`."""
    lines = ["run,score"]
    for col in summary["columns"]:
        for arm, cells in summary["rows"].items():
            if col in cells and not math.isnan(cells[col]["mean"]):
                lines.append(f"{col} | {arm},{cells[col]['mean']!r}")
    write_bytes_atomic(path, ("\n".join(lines) + "\n").encode())
