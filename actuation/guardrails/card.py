"""The model card: a version's description in the MLflow UI, so its page reads on its own.

Task, inputs and outputs with units, the data it learned from (tables at Delta versions,
classes, tenants), metrics against the baseline and the champion, the guardrail verdict
with every failed check and the plots, and the edge files with size, sha256 and latency.
"""

from __future__ import annotations

import json

from actuation.contract import RuntimeLimits
from actuation.guardrails.report import REPORT_DIR, Report
from actuation.guardrails.source import EdgeFiles, Version
from fieldloop.datasets import layout

# Units by signal-name suffix (fieldloop.datasets names signals with their unit).
_UNITS = {"_mps2": "m/s²", "_mps": "m/s", "_dps": "°/s", "_deg": "°", "_z": "standard deviations (z-score)"}
_NAMED = {
    "brake": "pedal, 0 to 1",
    "perception.vehicles": "count",
    "perception.pedestrians": "count",
    "perception.cyclists": "count",
}


def _unit(name: str) -> str:
    for suffix, unit in _UNITS.items():
        if name.endswith(suffix):
            return unit
    return _NAMED.get(name, "")


def card(version: Version, report: Report, edge: EdgeFiles, runtime: RuntimeLimits) -> str:
    rows = layout(version.task)
    lineage = version.lineage_fields
    v = report.verdict
    lines = [
        f"# {version.model} v{version.version}",
        "",
        f"**Task** `{version.task}`; **tenant** {version.tenant or 'none (a base model, any fleet)'}; "
        f"training run `{version.run_id}`.",
        "",
        "## Inputs",
        f"`{edge.manifest.input_name}`: float32, {rows.width} values: the last {rows.window} frames (oldest first) of:",
        "",
    ]
    lines += [f"- `{s}` ({_unit(s) or 'as in gold'})" for s in rows.signals]
    lines += [f"- then once: `{e}` ({_unit(e)})" for e in rows.extras]
    lines += ["", "## Outputs", ""]
    limits = {o.name: o for o in runtime.outputs}
    for name in edge.manifest.outputs:
        if name in limits:
            o = limits[name]
            step = f", at most {o.max_step} {o.unit} per frame" if o.max_step else ""
            lines.append(
                f"- `{name}` ({o.unit or 'score'}): actuated, envelope [{o.min}, {o.max}]{step}, fallback {o.fallback}"
            )
        elif name == runtime.ood_output:
            lines.append(
                f"- `{name}` (score in [0, 1)): out-of-distribution; the device falls back at ≥ {runtime.ood_threshold}"
            )
        else:
            lines.append(f"- `{name}`")
    lines += ["", "## Data it learned from", ""]
    lines.append(f"- tables: {lineage.get('tables', '?')}")
    lines.append(
        f"- classes: {lineage.get('classes') or '-'}; tenants: {lineage.get('tenants') or '-'}; "
        f"contracts: {lineage.get('contracts') or '-'}"
    )
    holdout = json.loads(lineage.get("holdout") or "{}")
    lines.append(
        f"- frozen holdout: {', '.join(f'{p}@v{n}' for p, n in holdout.get('tables', {}).items()) or '?'} "
        f"(frozen {holdout.get('frozen_at', '?')})"
    )
    s = report.scores
    lines += ["", "## Holdout metrics", "", "| | " + s["metric"] + " |", "|---|---|"]
    lines.append(f"| this version | {_f(s['candidate'])} |")
    lines.append(f"| champion | {_f(s['champion']) if s['champion'] is not None else 'none'} |")
    lines.append(f"| baseline: {s['baseline_name']} | {_f(s['baseline'])} |")
    r = report.readiness
    lines += ["", f"## Guardrail verdict: **{v.verdict.upper()}**", ""]
    lines.append(
        f"Policy `{v.policy.name}@{v.policy.version}` (sha256 {v.policy.sha256[:12]}), fleets "
        f"{', '.join(v.fleets)}, judged {v.judged_at:%Y-%m-%d %H:%M} UTC: {r['passed']} of {r['checks']} "
        f"checks passed, {r['incidents']} incidents."
    )
    if v.failed:
        lines += ["", "Failed checks:", ""]
        lines += [f"- `{c.name}`: {_f(c.value)} {c.unit} against {c.op} {c.limit:g}. {c.detail}" for c in v.failed]
    lines += [
        "",
        f"Report and plots in the run's artifacts: `{REPORT_DIR}/report.json`, "
        + ", ".join(f"`{REPORT_DIR}/{p}`" for p in ("envelope.png", "ood_roc.png", "regression.png"))
        + f"; signed attestation `{report.attestation}`.",
    ]
    lines += ["", "## Edge files", "", "| file | bytes | sha256 | p50 µs | p99 µs |", "|---|---|---|---|---|"]
    for label, b in edge.manifest.builds.items():
        lines.append(f"| {b.file} ({label}) | {b.bytes:,} | `{b.sha256}` | {b.p50_us:.1f} | {b.p99_us:.1f} |")
    lines.append("")
    lines.append(
        f"Latency at training: {edge.manifest.latency}. Measured again by the guardrails: "
        f"p99 {report.p99_us:.1f} µs for the int8 file."
    )
    return "\n".join(lines) + "\n"


def _f(value: float | None) -> str:
    return "unmeasurable" if value is None else f"{value:.4f}"
