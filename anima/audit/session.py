"""One `anima audit run`, start to end: the cases against the target, judged; the weak
monitor over the replies that went out; autofix when asked; then the summary, the HTML
report and `summary.json` in the run's folder. The command line only reads its options,
builds the parts and prints what this returns.

    done = run_audit(cases, make_target, judge=judge, plan=SUITES["quick"], results_path=p,
                     run_dir=d, progress=update, meta={"suite": "quick", ...})
    done["summary"], done["monitor"], done["autofix"], done["html"]
"""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from anima.audit.runner import run, summarise


def latest_oversight(folder: Path) -> dict | None:
    """The newest `anima audit oversight` result, shown beside the red-team results."""
    for path in sorted(folder.glob("oversight-*.json"), reverse=True):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(result, dict) and "tasks" in result:
            return result
    return None


def run_audit(
    cases: list,
    make_target: Callable[[Path], Any],
    *,
    judge,
    plan,
    results_path: Path,
    run_dir: Path,
    progress: Callable[[str, int, int], None],
    meta: dict,
    attacker=None,
    monitor: tuple[Any, str, float] = (None, "off", 0.0),
    autofix: bool = False,
    seed: int = 0,
    folder: Path | None = None,
    oversight_dir: Path | None = None,
) -> dict:
    """Run it; returns meta, summary, monitor, autofix, oversight and html, as saved.
    `make_target(scratch)`: the target, given a scratch folder that lives for the run.
    `monitor`: (its model or None, its name, its threshold). The newest oversight result
    in `oversight_dir` (default: the run folder's parent) goes into the report."""
    monitor_model, monitor_name, threshold = monitor
    with tempfile.TemporaryDirectory(prefix="anima-audit-") as scratch:
        target = make_target(Path(scratch))
        results = run(
            cases,
            target,
            judge=judge,
            path=results_path,
            max_tokens=plan.max_tokens,
            progress=lambda d, t: progress("attacks", d, t),
            attacker=attacker,
        )
        watched = None
        if monitor_model is not None:
            from anima.audit.monitor import score, watch

            verdicts = watch(monitor_model, cases, results, lambda d, t: progress("monitor", d, t), threshold)
            watched = score(results, verdicts, monitor_name, meta.get("judge", {}).get("model"), threshold)
        fixed = None
        if autofix:
            from anima.audit.autofix import autofix as run_autofix

            fixed = run_autofix(
                cases,
                results,
                target,
                judge,
                plan.max_tokens,
                progress=lambda d, t: progress("autofix", d, t),
                attacker=attacker,
                seed=seed,
                folder=folder,
            )
    summary = summarise(results)
    meta = {
        "target": target.name,
        **meta,
        "when": datetime.now().isoformat(timespec="seconds"),
        "results": str(results_path),
    }
    from anima.audit.report import render

    oversight = latest_oversight(oversight_dir or run_dir.parent)
    html = render(summary, meta, fixed, oversight, watched)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.html").write_text(html, encoding="utf-8")
    saved = {"meta": meta, "summary": summary, "monitor": watched, "autofix": fixed, "oversight": oversight}
    (run_dir / "summary.json").write_text(json.dumps(saved, indent=2), encoding="utf-8")
    return {**saved, "html": html}
