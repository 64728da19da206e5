"""The `anima` command. Known errors print one line and exit 1; usage errors exit 2."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from anima import __version__
from anima.app import build
from anima.assistant.turn import check_input
from anima.cli.common import AnimaGroup, JsonOpt, bytes_progress, err, labelled_steps, out, steps_progress
from anima.cli.audit import audit_app
from anima.cli.memory import memory_app
from anima.cli.mcp import mcp_app
from anima.cli.proactive import register as register_proactive
from anima.cli.personas import personas_app
from anima.cli.safety import eval_app, guard_app
from anima.cli.serve import serve, users_app
from anima.cli.tasks import do
from anima.cli.tools import calendar_app, docs_app, goals_app, notes_app
from anima.config import config_path, data_dir, load_config, to_toml
from anima.errors import AnimaError

app = typer.Typer(cls=AnimaGroup, help="anima: a local-first personal assistant.", no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
models_app = typer.Typer(cls=AnimaGroup, help="List, download and inspect models.", no_args_is_help=True)
config_app = typer.Typer(cls=AnimaGroup, help="Show the effective configuration.", no_args_is_help=True)
bench_app = typer.Typer(cls=AnimaGroup, help="Benchmarks, printed as a table or --json.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(bench_app, name="bench")
app.add_typer(memory_app, name="memory")
app.add_typer(mcp_app, name="mcp")
app.add_typer(personas_app, name="personas")
app.add_typer(users_app, name="users")
app.add_typer(guard_app, name="guard")
app.add_typer(eval_app, name="eval")
app.add_typer(audit_app, name="audit")
app.add_typer(calendar_app, name="calendar")
app.add_typer(docs_app, name="docs")
app.add_typer(goals_app, name="goals")
app.add_typer(notes_app, name="notes")
app.command()(serve)
app.command(name="do")(do)
register_proactive(app)  # inbox, remind, reminders, todo, briefing, daemon

ModelOpt = typer.Option(None, "--model", "-m", help="Registry name or .gguf path (default: config `model`).")
BackendOpt = typer.Option(None, "--backend", help="llama_cpp | openai_http | fake")
PersonaOpt = typer.Option(None, "--persona", "-p", help="Persona name (`/persona` lists them in chat).")


def _version(value: bool) -> None:
    if value:
        out.print(f"anima {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit.")) -> None:
    logging.basicConfig(level=logging.WARNING)


# --- talking -----------------------------------------------------------------


@app.command()
def ask(
    text: str = typer.Argument(..., help="The message; `-` reads it from stdin."),
    model: Optional[str] = ModelOpt,
    backend: Optional[str] = BackendOpt,
    persona: Optional[str] = PersonaOpt,
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", help="Longest reply in tokens."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="0 = greedy."),
    as_json: bool = JsonOpt,
) -> None:
    """Ask one question and print the answer."""
    if text == "-":
        text = sys.stdin.read()
    config = load_config(model=model, backend=backend, persona=persona)
    check_input(text, config.persona)  # before the model loads
    container = build(config)
    reply = container.assistant.reply(text, persona=persona, options=container.assistant.options(**_given(max_tokens=max_tokens, temperature=temperature)))
    if as_json:
        reply.text()
        _finish_learning(container)
        t = reply.turn
        print(json.dumps({
            "answer": t.reply, "model": t.model, "latency_ms": round(t.latency_ms, 1), "tokens": t.completion_tokens,
            "prompt_tokens": t.prompt_tokens, "first_token_ms": t.first_token_ms and round(t.first_token_ms, 1),
            "finish_reason": t.finish_reason, "persona": t.persona, "conversation_id": t.conversation_id,
            "guard": reply.guard_dict(),
        }))
        return
    _print_stream(reply)
    _finish_learning(container)


def _print_stream(reply) -> None:
    """Write the reply as it comes; Ctrl-C stops it (the partial reply is logged)."""
    try:
        for piece in reply:
            sys.stdout.write(piece)
            sys.stdout.flush()
    except KeyboardInterrupt:
        sys.stdout.write(" [stopped]")
    finally:
        sys.stdout.write("\n")


def _finish_learning(container) -> None:
    """Wait for the background learner: what was said is distilled before we exit."""
    learner = container.assistant.learner
    if learner is not None and learner.jobs.unfinished_tasks:
        with err.status("remembering..."):
            learner.drain()


def _given(**values):
    return {k: v for k, v in values.items() if v is not None}


CHAT_HELP = """Commands:
  /help             this help
  /persona [NAME]   list personas, or switch to NAME
  /new              start a new conversation
  /recall           what anima recalled for its last reply
  /exit             leave (or Ctrl-D)
Multi-line input: end a line with \\ to continue it, or put \"\"\" on a line to start and end a block.
Ctrl-C stops the current reply."""


def read_message(prompt: str = "you> ") -> str:
    """One message from stdin: a single line, `\\`-continued lines, or a \"\"\" block."""
    line = input(prompt)
    if line.strip() == '"""':
        lines = []
        while (line := input("... ")).strip() != '"""':
            lines.append(line)
        return "\n".join(lines)
    lines = []
    while line.endswith("\\"):
        lines.append(line[:-1])
        line = input("... ")
    return "\n".join(lines + [line])


@app.command()
def chat(model: Optional[str] = ModelOpt, backend: Optional[str] = BackendOpt, persona: Optional[str] = PersonaOpt) -> None:
    """Talk with anima (streaming). /help inside for commands."""
    from anima.assistant import get_persona, personas

    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # pragma: no cover - not on every platform
        pass
    config = load_config(model=model, backend=backend, persona=persona)
    current = get_persona(config.persona).name
    container = build(config)
    with err.status(f"loading {config.model}..."):
        model_name = container.chat_model.name
    out.print(f"[bold]anima[/bold] {__version__} · model [cyan]{model_name}[/cyan] · persona [cyan]{current}[/cyan] · /help for commands, Ctrl-D to leave")
    conversation_id, last = None, None
    while True:
        try:
            text = read_message()
        except EOFError:
            out.print()
            _finish_learning(container)
            return
        except KeyboardInterrupt:
            out.print("\n[dim](Ctrl-C stops a reply; /exit or Ctrl-D leaves)[/dim]")
            continue
        command, _, arg = text.strip().partition(" ")
        if command in ("/exit", "/quit"):
            _finish_learning(container)
            return
        if command == "/help":
            out.print(CHAT_HELP, highlight=False, markup=False)
            continue
        if command == "/recall":
            used = last.hits if last is not None else []
            out.print("\n".join(h.line() for h in used) or "[dim]nothing recalled for the last reply[/dim]", highlight=False, markup=not used)
            continue
        if command == "/new":
            conversation_id = None
            out.print("[dim]new conversation[/dim]")
            continue
        if command == "/persona":
            if not arg:
                for p in personas().values():
                    out.print(f"{'*' if p.name == current else ' '} [cyan]{p.name:12}[/cyan] {p.description}")
                continue
            try:
                current = get_persona(arg.strip()).name
            except AnimaError as exc:
                err.print(f"[red]error:[/red] {exc}", highlight=False)
                continue
            conversation_id = None
            out.print(f"[dim]persona: {current} (new conversation)[/dim]")
            continue
        if command.startswith("/"):
            err.print(f"unknown command {command}; /help lists them")
            continue
        if not text.strip():
            continue
        try:
            reply = container.assistant.reply(text, conversation_id=conversation_id, persona=current)
        except AnimaError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)
            continue
        conversation_id, last = reply.turn.conversation_id, reply
        sys.stdout.write("anima> ")
        try:
            _print_stream(reply)
        except AnimaError as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False)


# --- models -----------------------------------------------------------------


@models_app.command("list")
def models_list(as_json: bool = JsonOpt) -> None:
    """Models anima knows, and which are downloaded."""
    from anima.models.registry import local_models

    rows = [{"name": s.name, "kind": s.kind, "size": s.size, "present": p is not None, "path": str(p) if p else None, "description": s.description} for s, p in local_models()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "kind", "size", "downloaded", "description")
    for r in rows:
        table.add_row(r["name"], r["kind"], f"{r['size'] / 1e6:,.0f} MB", "yes" if r["present"] else "no", r["description"])
    out.print(table)


@models_app.command("pull")
def models_pull(name: Optional[str] = typer.Argument(None, help="Model name from `anima models list` (default: the chat model and the embedder)."), force: bool = typer.Option(False, "--force", help="Fetch again even if present.")) -> None:
    """Download models (with resume) and verify their sha256."""
    from anima.models.registry import get_spec, pull

    for spec in [get_spec(name)] if name else [get_spec("default"), get_spec("minilm")]:
        with bytes_progress() as progress:
            task = progress.add_task(f"{spec.name}", total=spec.size)
            path = pull(spec, progress=lambda done, total: progress.update(task, completed=done, total=total), force=force, log=lambda msg: progress.console.print(f"[dim]{msg}[/dim]"))
        out.print(f"{spec.name}: {path} (sha256 verified)")


@models_app.command("info")
def models_info(name: str, verify: bool = typer.Option(False, "--verify", help="Recompute the sha256 now."), as_json: bool = JsonOpt) -> None:
    """Details of one model: file, size, sha256, sources."""
    from anima.models.registry import get_spec, model_path
    from anima.models.registry import verify as verify_file

    spec = get_spec(name)
    path = model_path(spec)
    if verify and path.exists():
        with bytes_progress() as progress:
            task = progress.add_task("sha256", total=spec.size)
            verify_file(spec, path, progress=lambda d, t: progress.update(task, completed=d), force=True)
    info = {
        "name": spec.name, "kind": spec.kind, "description": spec.description, "file": spec.filename, "size": spec.size,
        "sha256": spec.sha256, "path": str(path), "present": path.exists(), "verified": bool(verify and path.exists()),
        "sources": [s.describe() for s in spec.sources],
    }
    if as_json:
        print(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        out.print(f"[bold]{key:12}[/bold] {', '.join(value) if isinstance(value, list) else value}", highlight=False)
    if not path.exists():
        out.print(f"[yellow]not downloaded[/yellow]: run `anima models pull {spec.name}`")


# --- config -----------------------------------------------------------------


@config_app.command("show")
def config_show(as_json: bool = JsonOpt) -> None:
    """The effective settings (defaults < file < ANIMA_* env), and where they come from."""
    config = load_config()
    data = config.model_dump(mode="json")
    if as_json:
        print(json.dumps({"config_file": str(config_path()), "data_dir": str(data_dir()), "settings": data}, indent=2))
        return
    print(f"# config file: {config_path()}{'' if config_path().exists() else ' (not present; defaults)'}")
    print(f"# data dir:    {data_dir()}")
    print(to_toml(data))


def _guard_state(config) -> str:
    from anima.safety.train import GUARD_FILE, heads_dir

    if not config.guard.enabled:
        return "off (guard.enabled = false)"
    if not (heads_dir() / GUARD_FILE).is_file():
        return "not trained: run `anima guard train`"
    return f"on; fast layer in {heads_dir()}; LLM layer {config.guard.layer2}"


@app.command()
def doctor(as_json: bool = JsonOpt) -> None:
    """What this installation has: versions, models, encryption, vector search, backends."""
    import importlib.metadata as md
    import platform

    from anima.models.registry import local_models
    from anima.store.keys import keyring_backend, keys_dir

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"

    def sqlite_vec_loads() -> str:
        import sqlcipher3.dbapi2 as sqlite

        from anima.store.db import load_sqlite_vec

        try:
            return "sqlite-vec (loaded)" if load_sqlite_vec(sqlite.connect(":memory:"), "auto") else "numpy fallback (sqlite-vec did not load)"
        except AnimaError as exc:
            return f"numpy fallback ({exc})"

    config = load_config()
    checks = {
        "anima": __version__,
        "python": platform.python_version(),
        "llama-cpp-python": version("llama-cpp-python"),
        "sqlcipher3": version("sqlcipher3"),
        "config file": f"{config_path()} ({'present' if config_path().exists() else 'defaults'})",
        "data dir": str(data_dir()),
        "backend": config.backend + (f" ({config.openai_http.base_url})" if config.backend == "openai_http" else f" (model {config.model})"),
        "models": ", ".join(f"{s.name}: {'yes' if p else 'missing'}" for s, p in local_models()),
        "encryption": ("on, key from " + ("ANIMA_PASSPHRASE" if os.environ.get("ANIMA_PASSPHRASE") else "the OS keyring" if keyring_backend() else f"key files in {keys_dir()}")) if config.store.encrypt else "off",
        "vector search": sqlite_vec_loads() if config.store.vectors != "numpy" else "numpy (configured)",
        "guard": _guard_state(config),
    }
    if config.backend == "llama_cpp" and checks["llama-cpp-python"] != "not installed":
        from anima.models.smoke import run_smoke

        with err.status("trying a short generation in a child process..."):
            checks["llama.cpp on this CPU"] = run_smoke(config.model).line()
    if as_json:
        print(json.dumps(checks, indent=2))
        return
    for key, value in checks.items():
        out.print(f"[bold]{key:17}[/bold] {value}", highlight=False)


# --- benchmarks ---------------------------------------------------------------


@bench_app.command("overhead")
def bench_overhead(
    model: Optional[str] = ModelOpt,
    prompts: int = typer.Option(8, "--prompts", help="How many prompts to time."),
    max_tokens: int = typer.Option(64, "--max-tokens", help="Tokens generated per prompt."),
    rounds: int = typer.Option(2, "--rounds", help="Times each prompt is timed per side (order alternates)."),
    as_json: bool = JsonOpt,
) -> None:
    """Raw llama-cpp-python vs anima's `ask` pipeline: same model, prompts, greedy."""
    from anima.bench.overhead import run_overhead

    config = load_config(model=model, backend="llama_cpp")
    with steps_progress() as progress:
        task = progress.add_task("bench overhead", total=None)
        result = run_overhead(config, n_prompts=prompts, max_tokens=max_tokens, rounds=rounds, progress=lambda done, total: progress.update(task, completed=done, total=total))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table("", "raw llama-cpp-python", "anima pipeline", title=f"overhead · {result['model']} · {result['prompts']} prompts × {result['rounds']} rounds · max_tokens {result['max_tokens']}")
    raw, ours = result["raw"], result["anima"]
    table.add_row("wall time (s)", f"{raw['wall_s']:.2f}", f"{ours['wall_s']:.2f}")
    table.add_row("tokens generated", str(raw["completion_tokens"]), str(ours["completion_tokens"]))
    table.add_row("tokens/s", f"{raw['tokens_per_s']:.2f}", f"{ours['tokens_per_s']:.2f}")
    table.add_row("first token p50 (ms)", f"{raw['first_token_p50_ms']:.0f}", f"{ours['first_token_p50_ms']:.0f}")
    out.print(table)
    verdict = "[green]meets[/green]" if result["ratio"] >= 0.95 else "[red]misses[/red]"
    out.print(f"anima side: memory {result['memory']}; guard {result['guard']}")
    out.print(f"ratio (anima tokens/s ÷ raw tokens/s): [bold]{result['ratio']:.3f}[/bold] — {verdict} the ≥ 0.95 target")


@bench_app.command("locomo")
def bench_locomo(
    data: Path = typer.Option(..., "--data", help="A LoCoMo JSON file, e.g. ../shared/data/locomo/locomo_dev.json."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N conversations."),
    answer_limit: int = typer.Option(50, "--answer-limit", help="Answer (and score F1 on) the first N questions."),
    full_limit: int = typer.Option(10, "--full-limit", help="Questions also answered with the opening sessions in full."),
    learn: bool = typer.Option(False, "--learn/--no-learn", help="Also distil memories with the model while ingesting."),
    learn_model: Optional[str] = typer.Option(None, "--learn-model", help="Model for learning (default: the chat model), e.g. small."),
    expand: bool = typer.Option(False, "--expand", help="Query expansion: one more model call per question."),
    model: Optional[str] = ModelOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Memory on LoCoMo: recall@5/@10 (turn and session level), answer F1, latency,
    against BM25 over raw turns and full context."""
    from anima.bench.locomo import run_locomo
    from anima.models import load_embedder
    from anima.models.llama_cpp import LlamaCppChatModel
    from anima.models.registry import resolve

    config = load_config(model=model, backend="llama_cpp")
    chat = container_model = build(config).chat_model
    learner = None
    if learn:
        learner = container_model if not learn_model or learn_model == config.model else LlamaCppChatModel(resolve(learn_model), name=learn_model)
    with labelled_steps() as update:
        result = run_locomo(data, chat, load_embedder(config), limit, answer_limit, full_limit, learner, expand, update)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_locomo(result)


def _print_locomo(result: dict) -> None:
    from anima.bench.locomo_data import CATEGORY_NAMES

    table = Table("category", "n", "system", "turn R@5", "turn R@10", "session R@5", "session R@10", "F1 (n)", title="LoCoMo")
    rows = [("overall", "overall")] + [(str(c), f"{c} {name}") for c, name in CATEGORY_NAMES.items()]
    for key, label in rows:
        for system in ("anima", "bm25"):
            r = result[system]["overall"] if key == "overall" else result[system]["by_category"][key]
            fmt = lambda v: "-" if v is None else f"{v:.3f}"
            table.add_row(label if system == "anima" else "", str(r["n"]), system, fmt(r["turn_recall@5"]), fmt(r["turn_recall@10"]), fmt(r["session_recall@5"]), fmt(r["session_recall@10"]), f"{fmt(r['f1'])} ({r['n_answered']})")
    out.print(table)
    fc, ing = result["full_context"], result["ingest"]
    out.print(f"full context (opening sessions in the prompt): F1 {fc['f1']} on {fc['n']} questions; anima on the same: {fc['anima_f1_same_questions']}")
    out.print(f"ingest: {ing['messages']} messages in {ing['seconds']} s ({ing['ms_per_message']} ms/message)" + (f"; learning {ing['learn_seconds']} s" if ing["learn_seconds"] is not None else ""))
    out.print(f"search: p50 {result['search_ms'].get('p50')} ms, p95 {result['search_ms'].get('p95')} ms; memory context: mean {result['context_tokens'].get('mean')} tokens, max {result['context_tokens'].get('max')}")


@bench_app.command("memory-scale")
def bench_memory_scale(
    n: int = typer.Option(10000, "--n", help="Largest memory size; steps are 1k, 10k, 100k up to it."),
    queries: int = typer.Option(50, "--queries", help="Searches timed at each size."),
    as_json: bool = JsonOpt,
) -> None:
    """Search latency at growing memory sizes, sqlite-vec and numpy side by side."""
    from anima.bench.memory_scale import run_memory_scale

    sizes = sorted({s for s in (1000, 10_000, 100_000) if s <= n} | {n})
    with labelled_steps() as update:
        result = run_memory_scale(sizes, queries, progress=update)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table("memories", "sqlite-vec p50 (ms)", "sqlite-vec p95 (ms)", "numpy p50 (ms)", "numpy p95 (ms)", title=f"hybrid search latency, {queries} queries per size")
    for vec, npy in zip(result["backends"]["sqlite-vec"], result["backends"]["numpy"]):
        table.add_row(f"{vec['memories']:,}", str(vec["p50_ms"]), str(vec["p95_ms"]), str(npy["p50_ms"]), str(npy["p95_ms"]))
    out.print(table)


@bench_app.command("serve")
def bench_serve(
    clients: int = typer.Option(4, "--clients", help="Concurrent streaming clients."),
    duration: float = typer.Option(60, "--duration", help="Seconds of load on each server."),
    max_tokens: int = typer.Option(32, "--max-tokens"),
    model: Optional[str] = ModelOpt,
    as_json: bool = JsonOpt,
) -> None:
    """anima's server (memory on) vs llama-cpp-python's server: same model, same load."""
    from anima.bench.serve import run_serve_bench

    config = load_config(model=model, backend="llama_cpp")
    with labelled_steps() as update:
        result = run_serve_bench(config, clients, duration, max_tokens, progress=lambda label, done, total: update(label, int(done), int(total)))
    if as_json:
        print(json.dumps(result, indent=2))
        return
    table = Table("", "anima serve", "llama_cpp.server", title=f"{clients} clients × {duration:.0f} s · {result['model']} · max_tokens {max_tokens}")
    a, r = result["anima"], result["llama_cpp_server"]
    for key in ("requests", "requests_per_s", "tokens_per_s", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "rejected_429", "errors"):
        table.add_row(key, str(a[key]), str(r[key]))
    out.print(table)
    out.print(f"anima side: memory {result['memory']}, guard {result['guard']}")
    out.print(f"throughput ratio (anima ÷ llama_cpp.server tokens/s): [bold]{result['throughput_ratio']}[/bold] (target ≥ 0.95)")


def main() -> None:
    app()
