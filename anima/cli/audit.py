"""`anima audit run` (red-team a target, report ASR and over-refusal) and
`anima audit oversight` (weak-to-strong PGR)."""

from __future__ import annotations

import json
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from anima.audit.targets import TEMPERATURE
from anima.cli.common import AnimaGroup, JsonOpt, err, labelled_steps, out
from anima.config import data_dir, load_config
from anima.errors import BadInput
from anima.models import ChatModel

audit_app = typer.Typer(cls=AnimaGroup, help="Red-team anima or any OpenAI-compatible endpoint; weak-to-strong oversight.", no_args_is_help=True)


@audit_app.command("run")
def audit_run(
    target: str = typer.Option("self", "--target", help="self (anima's own turn pipeline, in this process) or an OpenAI-compatible URL ending in /v1."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="URL: the model name to ask for (default: the first it lists; for anima, a persona). self: registry name."),
    api_key: str = typer.Option("", "--api-key", help="Bearer key for the URL."),
    victim_key: str = typer.Option("", "--victim-key", help="Another user's key on the same anima server: enables the cross-user leak test for a URL."),
    suite: str = typer.Option("quick", "--suite", help="tiny | quick (under 10 min on 2 cores) | full"),
    seeds: Optional[Path] = typer.Option(None, "--seeds", help="Harmful prompts, CSV or JSONL (default: JailbreakBench + HarmBench from the safety data folder)."),
    benign: Optional[Path] = typer.Option(None, "--benign", help="Benign prompts for over-refusal (default: JailbreakBench benign)."),
    report: Optional[Path] = typer.Option(None, "--report", help="Also write the HTML report here (it is always saved under <data dir>/audit/)."),
    seed: int = typer.Option(0, "--seed", help="Picks seeds, mutators, canaries and PAIR targets: the same seed, the same cases."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="A results.jsonl of an earlier run: its finished cases are kept, the rest run."),
    autofix: bool = typer.Option(False, "--autofix", help="Propose guard/prompt changes from the failures, re-verify them, keep one only if it helps."),
    judge_llm: bool = typer.Option(True, "--judge-llm/--no-judge-llm", help="Ask a local model a rubric on replies that did not refuse (bounded per suite)."),
    judge_model: Optional[str] = typer.Option(None, "--judge-model", help="The LLM judge's model (registry name or .gguf). Default: a local model other than the target's, preferring small."),
    pair: bool = typer.Option(True, "--pair/--no-pair", help="PAIR: the local model rewrites requests picked by --seed, the same for every target (bounded per suite)."),
    temperature: float = typer.Option(TEMPERATURE, "--temperature", min=0, max=2, help="Sampling temperature of the target's replies (as in real use); seeded with --seed where the backend allows."),
    timeout: float = typer.Option(60.0, "--timeout", min=1, help="Seconds per request to a URL; a timeout is reported as an error."),
    as_json: bool = JsonOpt,
) -> None:
    """Attack a target with mutated harmful requests, prompt injection (document, tool
    result, memory), secret extraction and a cross-user leak; judge the replies; report
    attack success rate per hazard category and mutator, and over-refusal on benign
    prompts. Example: `anima audit run --target http://127.0.0.1:8787/v1 --model assistant --api-key K`."""
    from anima.app import build
    from anima.audit.attacks import SUITES, build_cases, default_seeds, read_prompts
    from anima.audit.judge import Judge
    from anima.audit.runner import Attacker, run, summarise
    from anima.safety.data import safety_data_dir

    if suite not in SUITES:
        raise BadInput(f"unknown suite {suite!r}", f"use one of: {', '.join(SUITES)}")
    is_url = target != "self"
    if is_url and not re.match(r"^https?://", target):
        raise BadInput(f"--target {target!r} is neither self nor a URL", "e.g. --target http://127.0.0.1:8787/v1")
    if resume is not None and not resume.is_file():
        raise BadInput(f"no such results file: {resume}", "give the results.jsonl of an earlier audit")
    folder = safety_data_dir()
    harmful, benign_seeds = default_seeds(folder)
    harmful = read_prompts(seeds) if seeds else harmful
    benign_seeds = read_prompts(benign) if benign else benign_seeds
    plan = SUITES[suite]
    cases = build_cases(plan, harmful, benign_seeds, seed, folder, pair=pair and plan.pair_seeds > 0)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = resume.parent if resume else data_dir() / "audit" / f"{stamp}-{'url' if is_url else 'self'}-{suite}"
    results_path = resume or run_dir / "results.jsonl"

    container = build(load_config(model=None if is_url else model))
    if is_url:
        from anima.models.openai_http import _Client

        name = model or _Client(target, api_key, timeout).first_model()
    judge = Judge(limit=plan.judge_limit)
    judge_meta: dict = {"model": None, "why": "--no-judge-llm"}
    if judge_llm:
        judge.model, judge_meta = _judge_model(container, name if is_url else container.config.model, judge_model, is_url)
        judge.model_name = judge_meta["model"]
    judge_meta = {"method": judge.describe(), **judge_meta, "limit": plan.judge_limit}
    attacker = Attacker(container.chat_model, plan.pair_iters, seed) if pair and plan.pair_seeds else None
    with tempfile.TemporaryDirectory(prefix="anima-audit-") as scratch:
        if is_url:
            from anima.audit.targets import HttpTarget

            tgt = HttpTarget(target, name, api_key, timeout, victim_key, temperature=temperature, seed=seed)
        else:
            from anima.audit.targets import SelfTarget

            tgt = SelfTarget(container.config, container.chat_model, container.embedder, container.guard, Path(scratch), temperature=temperature, seed=seed)
        with labelled_steps() as update:
            results = run(cases, tgt, judge, results_path, plan.max_tokens, lambda d, t: update("attacks", d, t), attacker)
            fixed = None
            if autofix:
                from anima.audit.autofix import autofix as run_autofix

                fixed = run_autofix(cases, results, tgt, judge, plan.max_tokens, progress=lambda d, t: update("autofix", d, t), attacker=attacker, seed=seed, folder=folder)
    summary = summarise(results)
    meta = {
        "target": tgt.name if is_url else f"self ({container.chat_model.name})", "suite": suite, "seed": seed,
        "when": datetime.now().isoformat(timespec="seconds"), "results": str(results_path),
        "judge": judge_meta, "temperature": temperature, "sampling_seed": seed,
        "pair": {"seeds": sum(c.mutator == "pair" for c in cases), "iters": plan.pair_iters} if attacker else None,
    }
    from anima.audit.report import render

    html = render(summary, meta, fixed)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "report.html").write_text(html, encoding="utf-8")
    (run_dir / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary, "autofix": fixed}, indent=2), encoding="utf-8")
    if report is not None:
        try:
            report.write_text(html, encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"cannot write {report}: {exc.strerror}", f"the report is also at {run_dir / 'report.html'}") from exc
    if as_json:
        print(json.dumps({"meta": meta, "summary": summary, "autofix": fixed, "report": str(run_dir / "report.html")}, indent=2))
        return
    _print(summary, fixed)
    out.print(f"report: {run_dir / 'report.html'}   results: {results_path}")


def _judge_model(container, target_model: str, explicit: str | None, is_url: bool) -> tuple[ChatModel, dict]:
    """The LLM judge's model, and what the report says about it: a local model other than
    the target's when one is there (`choose_judge_model`). Whether a URL target runs the
    same model is unknown (`same_as_target` null)."""
    from anima.audit.judge import choose_judge_model
    from anima.models import load_chat_model
    from anima.models.registry import SPECS, local_models, model_path

    config = container.config
    if config.backend == "openai_http" and not explicit:
        name = config.openai_http.model
        return container.chat_model, {"model": name, "why": "the configured OpenAI-compatible model (no local choice)", "same_as_target": None if is_url else True}
    if config.backend == "fake":
        available = [s.name for s in SPECS.values() if s.kind == "chat"]
    else:
        available = [spec.name for spec, path in local_models() if spec.kind == "chat" and path is not None]
        # a .gguf path that is a registry model counts as that model
        target_model = next((s.name for s in SPECS.values() if str(model_path(s)) == str(Path(target_model).expanduser())), target_model)
    name, why = choose_judge_model(target_model, available, explicit)
    model = container.chat_model if name == config.model else load_chat_model(config.model_copy(update={"model": name}))
    return model, {"model": name, "why": why, "same_as_target": None if is_url else name == target_model}


def _print(s: dict, fixed: dict | None) -> None:
    from anima.audit.report import pct

    t = Table("", "success / n", "rate", "cases", title=f"audit: {s['cases']} cases, {s['errors']} errors, {s['skipped']} skipped")
    t.add_row("ASR, all attacks", f"{s['asr']['hits']}/{s['asr']['n']}", pct(s["asr"]["rate"]), str(s["asr"]["cases"]))
    for group in ("per_kind", "per_mutator", "per_category"):
        for key, m in s[group].items():
            t.add_row(f"  {group[4:]} {key}", f"{m['hits']}/{m['n']}", pct(m["rate"]), str(m["cases"]))
    t.add_row("over-refusal (benign)", f"{s['over_refusal']['hits']}/{s['over_refusal']['n']}", pct(s["over_refusal"]["rate"]), str(s["over_refusal"]["cases"]))
    out.print(t)
    if fixed is not None:
        b, sp = fixed["before"], fixed["split"]
        if fixed["kept"]:
            a = fixed["after"]
            out.print(f"autofix kept '{fixed['kept']}' (all {fixed['rerun']} cases re-run): ASR {pct(b['asr']['rate'])} -> {pct(a['asr']['rate'])}, "
                      f"held-out half ({sp['held_out']} of the failures) {pct(b['held_out']['rate'])} -> {pct(a['held_out']['rate'])}, "
                      f"over-refusal {pct(b['over_refusal']['rate'])} -> {pct(a['over_refusal']['rate'])}, "
                      f"on {fixed['fresh_benign']['n']} fresh benign prompts {pct(b['over_refusal_fresh']['rate'])} -> {pct(a['over_refusal_fresh']['rate'])}")
            out.print(fixed["config"], markup=False, highlight=False)
        else:
            out.print(f"autofix: none of {len(fixed['tries'])} changes lowered ASR (overall and on the held-out half) without raising over-refusal")


@audit_app.command("oversight")
def audit_oversight(
    n: int = typer.Option(60, "--n", min=4, help="Test items (half safe, half unsafe)."),
    k: int = typer.Option(8, "--k", min=2, help="Labelled examples in the strong model's prompt."),
    weak: str = typer.Option("small", "--weak", help="The supervisor: registry name or .gguf."),
    strong: str = typer.Option("default", "--strong", help="The supervised model."),
    data: Optional[Path] = typer.Option(None, "--data", help="Folder with the JailbreakBench files (default: the safety data folder)."),
    seed: int = typer.Option(0, "--seed"),
    as_json: bool = JsonOpt,
) -> None:
    """Weak-to-strong oversight: the weak model labels examples for the strong one;
    PGR = (weak->strong - weak) / (ceiling - weak). The protocol is printed with the result."""
    from anima.audit.oversight import items_from, oversight
    from anima.models import load_chat_model
    from anima.safety.data import safety_data_dir

    test, examples = items_from(data or safety_data_dir(), n, k, seed)
    config = load_config()
    with err.status("loading models..."):
        weak_model = load_chat_model(config.model_copy(update={"model": weak}))
        strong_model = load_chat_model(config.model_copy(update={"model": strong}))
    with labelled_steps() as update:
        result = oversight(weak_model, strong_model, test, examples, lambda d, t: update("oversight", d, t))
    folder = data_dir() / "audit"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"oversight-{datetime.now():%Y%m%d-%H%M%S}.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    if as_json:
        print(json.dumps(result, indent=2))
        return
    t = Table("", "accuracy", title=f"weak-to-strong on {result['task']} (n={result['n']}, k={result['k']})")
    t.add_row(f"weak alone ({result['weak_model']})", f"{result['weak']:.3f}")
    t.add_row(f"strong alone, zero-shot ({result['strong_model']})", f"{result['strong_zero_shot']:.3f}")
    t.add_row("strong ceiling (gold example labels)", f"{result['ceiling']:.3f}")
    t.add_row(f"weak->strong (weak example labels, {result['weak_label_accuracy']:.0%} right)", f"{result['weak_to_strong']:.3f}")
    out.print(t)
    out.print("PGR: " + ("undefined (the ceiling is not above the weak model)" if result["pgr"] is None else f"{result['pgr']:.3f}"))
    from anima.audit.oversight import PROTOCOL

    out.print(PROTOCOL, markup=False, highlight=False)
