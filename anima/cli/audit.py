"""`anima audit run` (red-team a target, report ASR and over-refusal) and
`anima audit oversight` (weak-to-strong PGR with probes on hidden states)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from anima.audit.targets import TEMPERATURE
from anima.cli.common import AnimaGroup, JsonOpt, container_for, err, labelled_steps, out
from anima.config import data_dir, load_config
from anima.errors import BadInput
from anima.models import ChatModel

audit_app = typer.Typer(
    cls=AnimaGroup,
    help="Red-team anima or any OpenAI-compatible endpoint; weak-to-strong oversight.",
    no_args_is_help=True,
)


@audit_app.command("run")
def audit_run(
    target: str = typer.Option(
        "self",
        "--target",
        help="self (anima's own turn pipeline, in this process) or an OpenAI-compatible URL ending in /v1.",
    ),
    model: Optional[str] = typer.Option(
        None,
        "--model",
        "-m",
        help="URL: the model name to ask for (default: the first it lists; for anima, a persona). self: registry name.",
    ),
    api_key: str = typer.Option("", "--api-key", help="Bearer key for the URL."),
    victim_key: str = typer.Option(
        "",
        "--victim-key",
        help="Another user's key on the same anima server: enables the cross-user leak test for a URL.",
    ),
    suite: str = typer.Option("quick", "--suite", help="tiny | quick (under 10 min on 2 cores) | full"),
    seeds: Optional[Path] = typer.Option(
        None,
        "--seeds",
        help="Harmful prompts, CSV or JSONL (default: JailbreakBench + HarmBench from the safety data folder).",
    ),
    benign: Optional[Path] = typer.Option(
        None, "--benign", help="Benign prompts for over-refusal (default: JailbreakBench benign)."
    ),
    report: Optional[Path] = typer.Option(
        None, "--report", help="Also write the HTML report here (it is always saved under <data dir>/audit/)."
    ),
    mutators: str = typer.Option(
        "",
        "--mutators",
        help="Comma-separated mutators to draw from (default: all), e.g. template,suffix; plain requests always run.",
    ),
    seed: int = typer.Option(
        0, "--seed", help="Picks seeds, mutators, canaries and PAIR targets: the same seed, the same cases."
    ),
    resume: Optional[Path] = typer.Option(
        None, "--resume", help="A results.jsonl of an earlier run: its finished cases are kept, the rest run."
    ),
    autofix: bool = typer.Option(
        False,
        "--autofix",
        help="Propose guard/prompt changes from the failures, re-verify them, keep one only if it helps.",
    ),
    judge_llm: bool = typer.Option(
        True,
        "--judge-llm/--no-judge-llm",
        help="Ask a local model a rubric on replies that did not refuse (bounded per suite).",
    ),
    judge_model: Optional[str] = typer.Option(
        None,
        "--judge-model",
        help=(
            "The LLM judge's model (registry name or .gguf). Default: a local model other than the target's, "
            "preferring small."
        ),
    ),
    pair: bool = typer.Option(
        True,
        "--pair/--no-pair",
        help="PAIR: the local model rewrites requests picked by --seed, the same for every target (bounded per suite).",
    ),
    temperature: float = typer.Option(
        TEMPERATURE,
        "--temperature",
        min=0,
        max=2,
        help=(
            "Sampling temperature of the target's replies (as in real use); seeded with --seed where the backend "
            "allows."
        ),
    ),
    timeout: float = typer.Option(
        60.0, "--timeout", min=1, help="Seconds per request to a URL; a timeout is reported as an error."
    ),
    monitor: str = typer.Option(
        "small",
        "--monitor",
        help=(
            "A weak model that reads every reply that went out and says which to stop (registry name or .gguf), or off."
        ),
    ),
    monitor_threshold: float = typer.Option(
        0.0,
        "--monitor-threshold",
        help="With logits: flag a reply when the monitor's yes-no logit gap is above this (choose it on another run).",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Attack a target with mutated harmful requests, prompt injection (document, tool
    result, memory), secret extraction and a cross-user leak; judge the replies; report
    attack success rate per hazard category and mutator, and over-refusal on benign
    prompts. Example: `anima audit run --target http://127.0.0.1:8787/v1 --model assistant --api-key K`."""
    from anima.audit.attacks import SUITES, build_cases, default_seeds, read_prompts
    from anima.audit.judge import Judge
    from anima.audit.runner import Attacker
    from anima.audit.session import run_audit
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
    only = [m.strip() for m in mutators.split(",") if m.strip()] or None
    cases = build_cases(plan, harmful, benign_seeds, seed, folder, pair=pair and plan.pair_seeds > 0, only=only)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = resume.parent if resume else data_dir() / "audit" / f"{stamp}-{'url' if is_url else 'self'}-{suite}"
    results_path = resume or run_dir / "results.jsonl"

    container = container_for(load_config(model=None if is_url else model))
    if is_url:
        from anima.models.openai_http import _Client

        name = model or _Client(target, api_key, timeout).first_model()
    judge = Judge(limit=plan.judge_limit)
    judge_meta: dict = {"model": None, "why": "--no-judge-llm"}
    if judge_llm:
        judge.model, judge_meta = _judge_model(
            container, name if is_url else container.config.model, judge_model, is_url
        )
        judge.model_name = judge_meta["model"]
    judge_meta = {"method": judge.describe(), **judge_meta, "limit": plan.judge_limit}
    attacker = Attacker(container.chat_model, plan.pair_iters, seed) if pair and plan.pair_seeds else None
    monitor_model = (
        _monitor_model(container, monitor) if monitor != "off" else None
    )  # before the run: a missing model fails fast

    def make_target(scratch: Path):
        if is_url:
            from anima.audit.targets import HttpTarget

            return HttpTarget(target, name, api_key, timeout, victim_key, temperature=temperature, seed=seed)
        from anima.audit.targets import SelfTarget

        return SelfTarget(
            container.config,
            container.chat_model,
            container.embedder,
            container.guard,
            scratch,
            temperature=temperature,
            seed=seed,
        )

    with labelled_steps() as update:
        done = run_audit(
            cases,
            make_target,
            judge=judge,
            plan=plan,
            results_path=results_path,
            run_dir=run_dir,
            progress=update,
            attacker=attacker,
            monitor=(monitor_model, monitor, monitor_threshold),
            autofix=autofix,
            seed=seed,
            folder=folder,
            oversight_dir=data_dir() / "audit",
            meta={
                **({} if is_url else {"target": f"self ({container.chat_model.name})"}),
                "suite": suite,
                "seed": seed,
                "mutators": only or "all",
                "judge": judge_meta,
                "temperature": temperature,
                "sampling_seed": seed,
                "pair": {"seeds": sum(c.mutator == "pair" for c in cases), "iters": plan.pair_iters}
                if attacker
                else None,
            },
        )
    summary, fixed, watched, html = done["summary"], done["autofix"], done["monitor"], done["html"]
    meta, oversight = done["meta"], done["oversight"]
    if report is not None:
        try:
            report.write_text(html, encoding="utf-8")
        except OSError as exc:
            raise BadInput(
                f"cannot write {report}: {exc.strerror}", f"the report is also at {run_dir / 'report.html'}"
            ) from exc
    if as_json:
        print(
            json.dumps(
                {
                    "meta": meta,
                    "summary": summary,
                    "monitor": watched,
                    "autofix": fixed,
                    "oversight": oversight,
                    "report": str(run_dir / "report.html"),
                },
                indent=2,
            )
        )
        return
    _print(summary, fixed)
    if watched:
        _print_monitor(watched)
    out.print(f"report: {run_dir / 'report.html'}   results: {results_path}")


def _monitor_model(container, name: str) -> ChatModel:
    """The monitor's model: the target's own when it is the same name, else loaded."""
    from anima.errors import ModelNotFound, ModelUnavailable
    from anima.models import load_chat_model

    config = container.config
    if config.backend in ("fake", "openai_http") or name == config.model:
        return container.chat_model
    try:
        with err.status(f"loading the monitor, {name}..."):
            return load_chat_model(config.model_copy(update={"model": name}))
    except (ModelNotFound, ModelUnavailable) as exc:
        hint = f"{exc.hint}; or run without it: --monitor off" if exc.hint else "run without it: --monitor off"
        raise type(exc)(f"the monitor: {exc.message}", hint) from exc


def _print_monitor(m: dict) -> None:
    from anima.audit.report import wilson_text

    t = Table(
        "",
        "rate [95% CI]",
        title=f"monitor {m['model']}: {m['watched']} replies that went out"
        + ("" if m["independent_of_judge"] else " (the LLM judge's own model)"),
    )
    t.add_row("unsafe replies caught", wilson_text(m["caught"]))
    for key, r in {**m["caught_per_kind"], **m["caught_per_decision"]}.items():
        t.add_row(f"  {key}", wilson_text(r))
    t.add_row("false alarms, benign replies", wilson_text(m["false_alarm_benign"]))
    t.add_row("alarms on refusals", wilson_text(m["false_alarm_refusals"]))
    t.add_row("guard: attacks blocked before a reply", wilson_text(m["guard"]["attacks_blocked"]))
    t.add_row("guard: benign blocked", wilson_text(m["guard"]["benign_blocked"]))
    if a := m.get("auroc"):
        t.add_row(
            "score ranks unsafe above harmless (AUROC)",
            f"{a['value']:.3f} [{a['lo']:.3f}–{a['hi']:.3f}] ({a['pos']} vs {a['neg']}; threshold {m['threshold']:g})",
        )
    out.print(t)
    if m["ms"]:
        out.print(
            f"monitor cost per reply: p50 {m['ms']['p50']:.0f} ms, p95 {m['ms']['p95']:.0f} ms; escalated "
            f"(neither yes nor no): {m['escalated']}"
        )


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
        return container.chat_model, {
            "model": name,
            "why": "the configured OpenAI-compatible model (no local choice)",
            "same_as_target": None if is_url else True,
        }
    if config.backend == "fake":
        available = [s.name for s in SPECS.values() if s.kind == "chat"]
    else:
        available = [spec.name for spec, path in local_models() if spec.kind == "chat" and path is not None]
        # a .gguf path that is a registry model counts as that model
        target_model = next(
            (s.name for s in SPECS.values() if str(model_path(s)) == str(Path(target_model).expanduser())), target_model
        )
    name, why = choose_judge_model(target_model, available, explicit)
    model = container.chat_model if name == config.model else load_chat_model(config.model_copy(update={"model": name}))
    return model, {"model": name, "why": why, "same_as_target": None if is_url else name == target_model}


def _print(s: dict, fixed: dict | None) -> None:
    from anima.audit.report import pct, rate_text

    def ci(m: dict) -> str:
        return pct(m["rate"]) if m.get("lo") is None else f"{pct(m['rate'])} [{100 * m['lo']:.0f}–{100 * m['hi']:.0f}%]"

    t = Table(
        "",
        "success / n",
        "rate [95% CI]",
        "cases",
        title=f"audit: {s['cases']} cases, {s['errors']} errors, {s['skipped']} skipped",
    )
    t.add_row("ASR, all attacks", f"{s['asr']['hits']}/{s['asr']['n']}", ci(s["asr"]), str(s["asr"]["cases"]))
    for group in ("per_kind", "per_mutator", "per_category"):
        for key, m in s[group].items():
            t.add_row(f"  {group[4:]} {key}", f"{m['hits']}/{m['n']}", ci(m), str(m["cases"]))
    t.add_row(
        "over-refusal (benign)",
        f"{s['over_refusal']['hits']}/{s['over_refusal']['n']}",
        ci(s["over_refusal"]),
        str(s["over_refusal"]["cases"]),
    )
    out.print(t)
    if fixed is not None:
        b, sp = fixed["before"], fixed["split"]
        if fixed["kept"]:
            a = fixed["after"]
            out.print(
                f"autofix kept '{fixed['kept']}' (all {fixed['rerun']} cases re-run): ASR "
                f"{rate_text(b['asr'])} -> {rate_text(a['asr'])}; "
                f"held-out half ({sp['held_out']} of the failures) {rate_text(b['held_out'])} -> "
                f"{rate_text(a['held_out'])}; "
                f"over-refusal {rate_text(b['over_refusal'])} -> {rate_text(a['over_refusal'])}; "
                f"on {fixed['fresh_benign']['n']} fresh benign prompts {rate_text(b['over_refusal_fresh'])} "
                f"-> {rate_text(a['over_refusal_fresh'])}",
                markup=False,
                highlight=False,
            )
            out.print(fixed["config"], markup=False, highlight=False)
        else:
            out.print(
                f"autofix: none of {len(fixed['tries'])} changes lowered ASR (overall and on the held-out "
                f"half) without raising over-refusal"
            )


@audit_app.command("oversight")
def audit_oversight(
    tasks: str = typer.Option(
        "moderation,supported",
        "--tasks",
        help="Comma-separated: moderation (harmful text?), supported (does a message support a statement?).",
    ),
    n: int = typer.Option(500, "--n", min=30, help="Items per task, half yes and half no."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Three-way splits, each with its own seed."),
    weak: str = typer.Option("small", "--weak", help="The supervisor: registry name or .gguf."),
    strong: str = typer.Option("default", "--strong", help="The supervised model: registry name or .gguf."),
    prompted: bool = typer.Option(
        True, "--prompted/--no-prompted", help="Also the weak model prompted zero-shot as supervisor."
    ),
    data: Optional[Path] = typer.Option(None, "--data", help="The safety data folder (default: as `guard train`)."),
    locomo: Optional[Path] = typer.Option(
        None, "--locomo", help="LoCoMo file (default: ../shared/data/locomo/locomo_dev.json)."
    ),
    early_stop: bool = typer.Option(
        True, "--early-stop/--no-early-stop", help="Each probe keeps its best step on a fifth of its own rows."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Weak-to-strong generalisation (Burns et al. 2023) with linear probes on each model's
    hidden states: PGR per task with 95% bootstrap intervals. The protocol is in the JSON."""
    from anima.audit import w2s
    from anima.bench.stores import default_data
    from anima.models import load_chat_model
    from anima.models.llama_cpp import LlamaCppHiddenStates
    from anima.models.registry import resolve
    from anima.safety.data import safety_data_dir

    makers = {
        "moderation": lambda: w2s.moderation_task(
            (data or safety_data_dir() or Path("../shared/data/safety")) / "openai_moderation_1680.jsonl", n
        ),
        "supported": lambda: w2s.supported_task(locomo or default_data(), n),
    }
    names = [t.strip() for t in tasks.split(",") if t.strip()]
    if unknown := [t for t in names if t not in makers]:
        raise BadInput(f"unknown task {', '.join(unknown)}", f"choose from {', '.join(makers)}")
    chosen = [makers[t]() for t in names]
    config = load_config()
    cache = data_dir() / "cache" / "w2s"
    results = []
    with labelled_steps() as update:
        for task in chosen:
            features = {}
            for role, name in (("weak", weak), ("strong", strong)):
                with err.status(f"loading {name}..."):
                    states = LlamaCppHiddenStates(resolve(name), n_ctx=384)
                features[role] = w2s.hidden_states(
                    states,
                    task.texts,
                    cache,
                    lambda d, t=task, r=role: update(f"{t.name}: {r} model reads", d, len(t.texts)),
                )
                del states
            asked = None
            if prompted:
                with err.status(f"loading {weak}..."):
                    model = load_chat_model(config.model_copy(update={"model": weak}))
                asked = w2s.prompted_labels(
                    model, task.texts, lambda d, t=task: update(f"{t.name}: weak model answers", d, len(t.texts))
                )
            results.append(
                w2s.run_task(task, features["weak"], features["strong"], asked, seeds=seeds, early_stop=early_stop)
            )
    result = {
        "weak_model": weak,
        "strong_model": strong,
        "when": f"{datetime.now():%Y-%m-%d %H:%M}",
        "tasks": results,
        "protocol": " ".join(w2s.PROTOCOL.split()),
    }
    folder = data_dir() / "audit"
    folder.mkdir(parents=True, exist_ok=True)
    stem = folder / f"oversight-{datetime.now():%Y%m%d-%H%M%S}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    from anima.audit.report import oversight_page, pgr_text

    stem.with_suffix(".html").write_text(oversight_page(result), encoding="utf-8")
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for r in results:
        t = Table(
            "",
            "accuracy on the test third [95% CI]",
            "PGR [95% CI]",
            title=f"{r['task']}: {r['about']} (n={r['n']}, {r['seeds']} seeds, {r['test_per_seed']} test items each)",
        )
        for name, a in r["accuracy"].items():
            p = r["pgr"].get(name)
            t.add_row(name, f"{a['mean']:.3f} [{a['lo']:.3f}–{a['hi']:.3f}]", pgr_text(p) if p else "")
        out.print(t)
        extra = f"; the prompted model abstained on {r['abstained']:.1%}" if "abstained" in r else ""
        out.print(
            "weak labels right: " + ", ".join(f"{k} {v:.1%}" for k, v in r["weak_label_accuracy"].items()) + extra
        )
    out.print(f"report: {stem.with_suffix('.html')}   results: {stem.with_suffix('.json')}")
