"""`anima do "TEXT"`: a multi-step task, planned, shown, approved, run and saved."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape
from rich.table import Table

from anima.cli.common import JsonOpt, container_for, err, out, steps_progress
from anima.config import load_config


def do(
    goal: str = typer.Argument("", help='What to do, e.g. "write one announcement per segment in segments.csv".'),
    files: list[Path] = typer.Option(
        [],
        "--file",
        "-f",
        help="A text/CSV file the task works from (repeatable); files the goal names are attached too.",
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Run the plan without asking."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the plan and stop."),
    plan_file: Optional[Path] = typer.Option(
        None, "--plan", help="Run a plan.json written (and maybe edited) earlier."
    ),
    out_dir: Path = typer.Option(Path("anima-tasks"), "--out", help="Where task folders are made."),
    persona: Optional[str] = typer.Option(None, "--persona", "-p", help="Persona whose voice the written steps take."),
    as_json: bool = JsonOpt,
) -> None:
    """Plan a multi-step task, show the plan, and run it with tools once approved."""
    from anima.assistant.tasks import attach, check_goal, load_plan, log_task, make_plan, run_plan, task_folder
    from anima.persona import get_persona

    config = load_config(persona=persona)
    chosen = get_persona(config.persona)
    plan = load_plan(plan_file) if plan_file else None
    if plan is None and not goal.strip():
        check_goal(goal, None)
    container = container_for(config)
    guard = container.guard
    check_goal(plan.goal if plan else goal, guard)
    now = datetime.now().astimezone()
    toolbox = container.toolbox if config.tools.enabled else None
    if plan is None:
        files_ = attach(goal, files, Path.cwd())
        with err.status("planning..."):
            plan = make_plan(container.chat_model, goal, files_, toolbox, now)
    else:
        plan.files = attach(plan.goal, files, Path.cwd())
    folder = task_folder(out_dir, plan.goal, now)
    if not as_json:
        show(plan, toolbox)
    if dry_run:
        if as_json:
            print(plan.to_json())
        return
    changes = plan.changes(toolbox)
    if changes and not yes:
        answer = (
            typer.prompt(
                f"{len(changes)} step(s) change something (files in {folder}, tools marked *). "
                "Run? [y]es / [e]dit / [n]o",
                default="n",
            )
            .strip()
            .lower()
        )
        if answer.startswith("e"):
            folder.mkdir(parents=True, exist_ok=True)
            saved = folder / "plan.json"
            saved.write_text(plan.to_json(), encoding="utf-8")
            editor = os.environ.get("EDITOR")
            if not editor:
                err.print(
                    f"plan saved in {saved}: edit it, then run `anima do --plan {saved}`", highlight=False, markup=False
                )
                return
            subprocess.run([editor, str(saved)], check=False)
            plan = load_plan(saved)
            plan.files = attach(plan.goal, files, Path.cwd())
            show(plan, toolbox)
            if not typer.confirm("Run this plan?", default=False):
                raise typer.Exit(1)
        elif not answer.startswith("y"):
            err.print("cancelled; nothing was run")
            raise typer.Exit(1)
    options = container.assistant.options()
    with steps_progress() as progress:
        task = progress.add_task("running", total=len(plan.steps))
        update = lambda done, total, step: progress.update(task, completed=done, description=step.title[:50])
        result = run_plan(
            plan,
            container.chat_model,
            toolbox=toolbox,
            folder=folder,
            options=options,
            system=chosen.system_prompt,
            guard=guard,
            progress=update,
            today=now,
        )
    log_task(container.store, container.chat_model.name, plan, folder)
    if as_json:
        print(
            json.dumps(
                {
                    "goal": plan.goal,
                    "folder": str(folder),
                    "result": str(result),
                    "left_out": plan.left_out,
                    "steps": [
                        {"title": s.title, "tool": s.tool, "ok": s.ok, "output": s.output, "result": s.result}
                        for s in plan.steps
                    ],
                },
                ensure_ascii=False,
            )
        )
        return
    failed = [s for s in plan.steps if not s.ok]
    out.print(
        f"{len(plan.steps) - len(failed)}/{len(plan.steps)} steps done; saved in {folder}/ "
        f"(result.md{', ' if any(s.output for s in plan.steps) else ''}"
        f"{', '.join(s.output for s in plan.steps if s.output and s.ok)})",
        highlight=False,
        markup=False,
    )
    for s in failed:
        out.print(f"  failed: {s.title}: {s.result[:120]}", highlight=False, markup=False)


def show(plan, toolbox) -> None:
    table = Table(title=f"Plan: {escape(plan.goal)}", title_justify="left")
    for col in ("#", "step", "how", "saves as"):
        table.add_column(col)
    for i, s in enumerate(plan.steps, 1):
        marked = s.tool + (
            "*" if toolbox is not None and s.tool in toolbox.tools and toolbox.tools[s.tool].side_effects else ""
        )
        how = marked + (f" {json.dumps(s.arguments, ensure_ascii=False)}" if s.arguments else "")
        table.add_row(str(i), escape(s.title), escape(how), escape(s.output))
    out.print(table)
    if plan.left_out:
        from anima.assistant.tasks import MAX_EXPANDED

        err.print(
            f"[yellow]{plan.left_out} more step(s) were left out[/yellow]: a task runs at most {MAX_EXPANDED}; "
            "split the file and run the rest as another task"
        )
