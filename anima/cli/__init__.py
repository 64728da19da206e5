"""The `anima` command. Known errors print one line and exit 1; usage errors exit 2."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from anima import __version__
from anima.assistant.turn import check_input
from anima.cli.audit import audit_app
from anima.cli.bench import bench_app
from anima.cli.common import (
    AnimaGroup,
    JsonOpt,
    bytes_progress,
    container_for,
    err,
    is_utf8,
    not_utf8,
    one_line,
    out,
    read_stdin,
    use_parts,
)
from anima.cli.mcp import mcp_app
from anima.cli.memory import memory_app
from anima.cli.personas import personas_app
from anima.cli.proactive import register as register_proactive
from anima.cli.safety import eval_app, guard_app
from anima.cli.serve import serve, users_app
from anima.cli.store import store_app
from anima.cli.tasks import do
from anima.cli.tools import calendar_app, docs_app, goals_app, notes_app
from anima.config import config_path, data_dir, load_config, to_toml
from anima.errors import AnimaError

app = typer.Typer(
    cls=AnimaGroup,
    help="anima: a local-first personal assistant.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
models_app = typer.Typer(cls=AnimaGroup, help="List, download and inspect models.", no_args_is_help=True)
config_app = typer.Typer(cls=AnimaGroup, help="Show the effective configuration.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(config_app, name="config")
app.add_typer(bench_app, name="bench")
app.add_typer(memory_app, name="memory")
app.add_typer(mcp_app, name="mcp")
app.add_typer(personas_app, name="personas")
app.add_typer(users_app, name="users")
app.add_typer(store_app, name="store")
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
def _main(
    ctx: typer.Context,
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    logging.basicConfig(level=logging.WARNING)
    use_parts(ctx.obj)  # a test's own chat model, embedder (common.Parts); nothing for a person


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
        text = read_stdin()
    config = load_config(model=model, backend=backend, persona=persona)
    check_input(text, config.persona)  # before the model loads
    container = container_for(config)
    reply = container.assistant.reply(
        text,
        persona=persona,
        options=container.assistant.options(**_given(max_tokens=max_tokens, temperature=temperature)),
    )
    if as_json:
        reply.text()
        _finish_learning(container)
        t = reply.turn
        print(
            json.dumps(
                {
                    "answer": t.reply,
                    "model": t.model,
                    "latency_ms": round(t.latency_ms, 1),
                    "tokens": t.completion_tokens,
                    "prompt_tokens": t.prompt_tokens,
                    "first_token_ms": t.first_token_ms and round(t.first_token_ms, 1),
                    "finish_reason": t.finish_reason,
                    "persona": t.persona,
                    "conversation_id": t.conversation_id,
                    "guard": reply.guard_dict(),
                }
            )
        )
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
    if learner is not None and learner.pending():
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
def chat(
    model: Optional[str] = ModelOpt, backend: Optional[str] = BackendOpt, persona: Optional[str] = PersonaOpt
) -> None:
    """Talk with anima (streaming). /help inside for commands."""
    from anima.assistant import get_persona, personas

    try:
        import readline  # noqa: F401  (line editing and history for input())
    except ImportError:  # pragma: no cover - not on every platform
        pass
    # Ctrl-C stops a reply. A program started in the background by a script (`cmd &`,
    # nohup) inherits SIGINT ignored, and Python then leaves it ignored: take it back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    config = load_config(model=model, backend=backend, persona=persona)
    current = get_persona(config.persona).name
    container = container_for(config)
    with err.status(f"loading {config.model}..."):
        model_name = container.chat_model.name
    out.print(
        f"[bold]anima[/bold] {__version__} · model [cyan]{model_name}[/cyan] · persona [cyan]{current}[/cyan] · "
        "/help for commands, Ctrl-D to leave"
    )
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
        except UnicodeDecodeError as exc:
            _finish_learning(container)
            raise not_utf8() from exc
        if not is_utf8(text):  # the locale passed bytes that are not UTF-8 on as surrogates
            _finish_learning(container)
            raise not_utf8()
        command, _, arg = text.strip().partition(" ")
        if command in ("/exit", "/quit"):
            _finish_learning(container)
            return
        if command == "/help":
            out.print(CHAT_HELP, highlight=False, markup=False)
            continue
        if command == "/recall":
            used = last.hits if last is not None else []
            out.print(
                "\n".join(h.line() for h in used) or "[dim]nothing recalled for the last reply[/dim]",
                highlight=False,
                markup=not used,
            )
            continue
        if command == "/new":
            conversation_id = None
            out.print("[dim]new conversation[/dim]")
            continue
        if command == "/persona":
            if not arg:
                for p in personas().values():
                    out.print(f"{'*' if p.name == current else ' '} [cyan]{p.name:12}[/cyan] {escape(p.description)}")
                continue
            try:
                current = get_persona(arg.strip()).name
            except AnimaError as exc:
                err.print(f"[red]error:[/red] {one_line(str(exc))}", highlight=False)
                continue
            conversation_id = None
            out.print(f"[dim]persona: {current} (new conversation)[/dim]")
            continue
        if command.startswith("/"):
            err.print(f"unknown command {command}; /help lists them", highlight=False, markup=False)
            continue
        if not text.strip():
            continue
        try:
            reply = container.assistant.reply(text, conversation_id=conversation_id, persona=current)
        except AnimaError as exc:
            err.print(f"[red]error:[/red] {one_line(str(exc))}", highlight=False)
            continue
        conversation_id, last = reply.turn.conversation_id, reply
        sys.stdout.write("anima> ")
        try:
            _print_stream(reply)
        except AnimaError as exc:
            err.print(f"[red]error:[/red] {one_line(str(exc))}", highlight=False)


# --- models -----------------------------------------------------------------


@models_app.command("list")
def models_list(as_json: bool = JsonOpt) -> None:
    """Models anima knows, and which are downloaded."""
    from anima.models.registry import local_models

    rows = [
        {
            "name": s.name,
            "kind": s.kind,
            "size": s.size,
            "present": p is not None,
            "path": str(p) if p else None,
            "description": s.description,
        }
        for s, p in local_models()
    ]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("name", "kind", "size", "downloaded", "description")
    for r in rows:
        table.add_row(
            r["name"], r["kind"], f"{r['size'] / 1e6:,.0f} MB", "yes" if r["present"] else "no", r["description"]
        )
    out.print(table)


@models_app.command("pull")
def models_pull(
    name: Optional[str] = typer.Argument(
        None, help="Model name from `anima models list` (default: the chat model and the embedder)."
    ),
    force: bool = typer.Option(False, "--force", help="Fetch again even if present."),
) -> None:
    """Download models (with resume) and verify their sha256."""
    from anima.models.registry import get_spec, pull

    for spec in [get_spec(name)] if name else [get_spec("default"), get_spec("minilm")]:
        with bytes_progress() as progress:
            task = progress.add_task(f"{spec.name}", total=spec.size)
            path = pull(
                spec,
                progress=lambda done, total: progress.update(task, completed=done, total=total),
                force=force,
                log=lambda msg: progress.console.print(f"[dim]{msg}[/dim]"),
            )
        out.print(f"{spec.name}: {path} (sha256 verified)")


@models_app.command("info")
def models_info(
    name: str, verify: bool = typer.Option(False, "--verify", help="Recompute the sha256 now."), as_json: bool = JsonOpt
) -> None:
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
        "name": spec.name,
        "kind": spec.kind,
        "description": spec.description,
        "file": spec.filename,
        "size": spec.size,
        "sha256": spec.sha256,
        "path": str(path),
        "present": path.exists(),
        "verified": bool(verify and path.exists()),
        "sources": [s.describe() for s in spec.sources],
    }
    if as_json:
        print(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        out.print(
            f"[bold]{key:12}[/bold] {escape(', '.join(value) if isinstance(value, list) else str(value))}",
            highlight=False,
        )
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
    from anima.models.onnx_embed import EMBEDDER
    from anima.safety.classifier import Head
    from anima.safety.train import GUARD_FILE, heads_dir

    if not config.guard.enabled:
        return "off (guard.enabled = false)"
    if not (heads_dir() / GUARD_FILE).is_file():
        return "not trained: run `anima guard train`"
    try:
        trained_on = Head.load(heads_dir() / GUARD_FILE).manifest.get("embedder")
    except AnimaError as exc:
        return f"{exc.args[0]}: run `anima guard train`"
    if config.backend != "fake" and trained_on != EMBEDDER:
        return f"trained on another embedder's vectors ({trained_on or 'llama.cpp'}): run `anima guard train`"
    vote = config.guard.votes and config.backend == "llama_cpp"
    refusal = f"; refusal vote at {config.guard.refusal_threshold}" if vote else ""
    if vote and config.guard.probe:
        from anima.safety import probe

        refusal += "; probe on" if probe.wanted(config) else "; no probe (`anima guard train --probe` adds one)"
    return f"on; fast layer in {heads_dir()}; LLM layer {config.guard.layer2}{refusal}"


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
            return (
                "sqlite-vec (configured, loaded)" if load_sqlite_vec(sqlite.connect(":memory:"), "sqlite-vec") else ""
            )
        except AnimaError as exc:
            return f"sqlite-vec (configured) did not load: {exc}"

    config = load_config()
    checks = {
        "anima": __version__,
        "python": platform.python_version(),
        "llama-cpp-python": version("llama-cpp-python"),
        "sqlcipher3": version("sqlcipher3"),
        "config file": f"{config_path()} ({'present' if config_path().exists() else 'defaults'})",
        "data dir": str(data_dir()),
        "backend": config.backend
        + (f" ({config.openai_http.base_url})" if config.backend == "openai_http" else f" (model {config.model})"),
        "models": ", ".join(f"{s.name}: {'yes' if p else 'missing'}" for s, p in local_models()),
        "encryption": (
            "on, key from "
            + (
                "ANIMA_PASSPHRASE"
                if os.environ.get("ANIMA_PASSPHRASE")
                else "the OS keyring"
                if keyring_backend()
                else f"key files in {keys_dir()}"
            )
        )
        if config.store.encrypt
        else "off",
        "vector search": sqlite_vec_loads()
        if config.store.vectors == "sqlite-vec"
        else f"numpy ({config.store.vectors})",
        "guard": _guard_state(config),
    }
    if config.backend == "llama_cpp" and checks["llama-cpp-python"] != "not installed":
        from anima.models.smoke import run_smoke

        with err.status("trying a short generation in a child process..."):
            checks["llama.cpp check"] = run_smoke(config.model).line()  # a generation in a child process
    if as_json:
        print(json.dumps(checks, indent=2))
        return
    for key, value in checks.items():
        out.print(f"[bold]{key:17}[/bold] {escape(value)}", highlight=False)


def main() -> None:
    """Usage errors are one line too. (A closed pipe, `anima ... | head`, ends quietly
    with exit 1: click catches EPIPE.)"""
    if bad := next((a for a in sys.argv[1:] if not is_utf8(a)), None):  # bytes the terminal's encoding cannot hold
        shown = os.fsencode(bad).decode("utf-8", "backslashreplace")
        err.print(
            f"[red]error:[/red] {one_line(shown)} is not UTF-8 text [dim](give text and file names in UTF-8)[/dim]",
            highlight=False,
        )
        sys.exit(2)
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        err.print("aborted")
        code = 1
    except typer.TyperException as exc:  # click's errors: bad options, missing arguments
        ctx = getattr(exc, "ctx", None)
        if message := exc.format_message():  # none: `anima bench` with no command, whose help typer has printed
            hint = f" [dim](see `{ctx.command_path} --help`)[/dim]" if ctx is not None else ""
            err.print(f"[red]error:[/red] {one_line(message)}{hint}", highlight=False)
        code = getattr(exc, "exit_code", 1)
    sys.exit(code if isinstance(code, int) else 0)
