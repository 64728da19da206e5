"""Multi-step tasks (`anima do`): plan, show, approve, run, save.

1. plan: the model writes the steps as JSON under a grammar (each step is "write" —
   the model writes text: a draft, a plan, one variant — or one of the user's tools).
   A step can be repeated for every row of an attached CSV ("one variant per customer
   segment"): it is expanded here, one step per row, with {column} filled in.
2. the plan is shown; anything that changes something (a tool with side effects, files
   written) waits for the user's yes; they can also edit the plan file or cancel.
3. run: step by step with progress; a write step sees the goal, the attached files, its
   row and the earlier steps' results; a tool step goes through the Toolbox (errors come
   back as results, they do not end the task).
4. save: each step's text in its own file in the task folder, plus plan.json and a
   result.md that says what was done; the task is logged as a turn of its own.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from anima.errors import BadInput
from anima.models.base import ChatModel, Options, complete
from anima.safety.guard import Guard, refusal
from anima.store import Store, Turn
from anima.tools import Toolbox

MAX_STEPS = 12  # steps the model may plan
MAX_EXPANDED = 100  # steps after a step runs once per CSV row; past it, the plan says how many were left out
ATTACHED_CHARS = 6000  # of each attached file, into the prompts
_NAMED_FILE = re.compile(r"[\w./-]+\.(?:csv|txt|md|json)\b")


@dataclass
class Step:
    title: str
    tool: str = "write"  # "write", or a tool's name
    arguments: dict[str, Any] = field(default_factory=dict)
    output: str = ""  # file (in the task folder) the step's text is saved in
    row: dict[str, str] | None = None  # the CSV row this step is for
    result: str = ""
    ok: bool | None = None  # None: not run yet


@dataclass
class Plan:
    goal: str
    steps: list[Step]
    files: dict[str, str] = field(default_factory=dict)  # attached: name -> text
    left_out: int = 0  # steps past MAX_EXPANDED (CSV rows), not run: shown with the plan

    def changes(self, toolbox: Toolbox | None) -> list[Step]:
        """The steps that change something: a file they save, or a tool with side effects."""
        return [
            s
            for s in self.steps
            if s.output or (toolbox is not None and s.tool in toolbox.tools and toolbox.tools[s.tool].side_effects)
        ]

    def to_json(self) -> str:
        return json.dumps(
            {
                "goal": self.goal,
                "steps": [asdict(s) for s in self.steps],
                "files": sorted(self.files),
                "left_out": self.left_out,
            },
            indent=2,
            ensure_ascii=False,
        )


def attach(goal: str, paths: list[Path], cwd: Path) -> dict[str, str]:
    """The files the task works from: those given, and files the goal names that exist."""
    named = [cwd / m for m in _NAMED_FILE.findall(goal) if (cwd / m).is_file()]
    files = {}
    for path in [*paths, *named]:
        try:
            files[path.name] = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise BadInput(f"no such file: {path}", "check the path given to --file") from None
        except (UnicodeDecodeError, IsADirectoryError):
            raise BadInput(f"{path} is not a text file", "attach .txt, .md, .csv or .json files") from None
        except OSError as exc:
            raise BadInput(f"cannot read {path}: {exc.strerror}", "check the path given to --file") from None
    return files


def rows(text: str) -> list[dict[str, str]]:
    try:
        return [{k.strip(): (v or "").strip() for k, v in r.items() if k} for r in csv.DictReader(io.StringIO(text))]
    except csv.Error as exc:
        raise BadInput(f"cannot read the CSV: {exc}", "check its quoting") from exc


def _describe(files: dict[str, str]) -> str:
    parts = []
    for name, text in files.items():
        if name.endswith(".csv"):
            table = rows(text)
            head = ", ".join(table[0]) if table else "(empty)"
            parts.append(
                f"{name}: a CSV with {len(table)} rows; columns: {head}; "
                f"first rows: {json.dumps(table[:3], ensure_ascii=False)}"
            )
        else:
            parts.append(f"{name}:\n{text[:ATTACHED_CHARS]}")
    return "\n\n".join(parts)


def plan_schema(toolbox: Toolbox | None, tool_names: list[str], csv_names: list[str]) -> dict[str, Any]:
    """Steps as a grammar: a write step has no arguments (the model would start writing
    the text there), a tool step has that tool's own; strings are kept short."""
    common = {
        "title": {"type": "string", "maxLength": 160},
        "for_each_row_of": {"type": "string", "enum": ["", *csv_names]},
        "output": {"type": "string", "maxLength": 60},
    }
    write = {
        "type": "object",
        "properties": {
            "title": common["title"],
            "tool": {"const": "write"},
            "for_each_row_of": common["for_each_row_of"],
            "output": common["output"],
        },
        "required": ["title", "tool", "for_each_row_of", "output"],
    }
    kinds = [write] + [
        {
            "type": "object",
            "properties": {
                "title": common["title"],
                "tool": {"const": n},
                "arguments": toolbox.tools[n].parameters,
                "for_each_row_of": common["for_each_row_of"],
                "output": common["output"],
            },
            "required": ["title", "tool", "arguments", "for_each_row_of", "output"],
        }
        for n in tool_names
    ]
    return {
        "type": "object",
        "properties": {"steps": {"type": "array", "items": {"anyOf": kinds}, "minItems": 1, "maxItems": 6}},
        "required": ["steps"],
    }


PLANNER = """You plan tasks for a personal assistant. Split the user's goal into at most 6 steps, in order.
A step's tool is "write" (you write text: a draft, a plan, one variant) or one of these tools, with its arguments:
{tools}
To repeat a step for every row of an attached CSV file, set for_each_row_of to the file's name and use {{column}} \
placeholders (the CSV's column names) in title and output.
output is a file name for the step's text (like "variant-{{segment}}.md"), or "" when nothing needs saving. \
Save what the user asked for.
When the goal is about the user's own things (their goals, calendar, notes, reminders, documents), \
first use the tools that look them up; later steps see what they returned.
Titles say what to write or do; the writing itself happens later, step by step.
Example: goal "an invitation per guest in guests.csv" -> {{"steps": [{{"title": "Write an invitation for {{name}}", \
"tool": "write", "for_each_row_of": "guests.csv", "output": "invitation-{{name}}.md"}}]}}
Today is {today}."""


def make_plan(model: ChatModel, goal: str, files: dict[str, str], toolbox: Toolbox | None, today: datetime) -> Plan:
    names = list(toolbox.select(goal, k=6)) if toolbox is not None else []
    tools = (
        "\n".join(
            f"- {n}: {toolbox.tools[n].description} arguments: "
            f"{json.dumps(toolbox.tools[n].parameters.get('properties', {}))}"
            for n in names
        )
        or "(none)"
    )
    csvs = [n for n in files if n.endswith(".csv")]
    user = goal + (f"\n\nAttached files:\n{_describe(files)}" if files else "")
    messages = [
        {"role": "system", "content": PLANNER.format(tools=tools, today=f"{today:%A %d %B %Y}")},
        {"role": "user", "content": user},
    ]
    raw = complete(
        model, messages, Options(max_tokens=800, temperature=0.0, json_schema=plan_schema(toolbox, names, csvs))
    )
    try:
        raw = raw.json()
    except ValueError:
        raise BadInput("the model's plan was not valid JSON", "try again, or say the steps more plainly") from None
    steps = []
    for s in raw.get("steps", [])[:MAX_STEPS]:
        base = Step(
            s.get("title", "").strip() or "write",
            s.get("tool", "write"),
            s.get("arguments") or {},
            s.get("output", "").strip(),
        )
        table = rows(files[s["for_each_row_of"]]) if s.get("for_each_row_of") in files else [None]
        if table != [None] and "{" not in base.title + base.output:
            # the model wrote this step for one row already ("Write the students' variant")
            named = [r for r in table if any(v and v.lower() in base.title.lower() for v in r.values())]
            table = named[:1] or table
        for row in table:
            step = _fill(base, row)
            if all((step.title, step.output) != (t.title, t.output) for t in steps):
                steps.append(step)
    if not steps:
        raise BadInput("the model returned an empty plan", "say more precisely what you want done")
    if toolbox is not None and not any(
        s.tool in toolbox.tools and not toolbox.tools[s.tool].side_effects for s in steps
    ):
        steps = lookups(goal, toolbox) + steps  # the small model sometimes plans "my goal" without reading it
    return Plan(goal, steps[:MAX_EXPANDED], files, max(0, len(steps) - MAX_EXPANDED))


# What the user's words name -> the read-only tool that looks it up, with its arguments.
_LOOKUPS = [
    (r"\bmy (?:\w+ )*goals?\b", "goal_list", {}, "Look up your goals"),
    (
        r"\bmy (?:calendar|schedule|week|day|agenda)\b",
        "calendar_on",
        {"when": "this week"},
        "Look up your calendar this week",
    ),
    (r"\bmy (?:\w+ )?notes?\b", "note_search", {}, "Look up your notes"),
    (r"\bmy reminders?\b", "reminders_list", {}, "Look up your reminders"),
    (r"\bmy (?:to-?dos?|tasks)\b", "todo_list", {}, "Look up your to-dos"),
]


def lookups(goal: str, toolbox: Toolbox) -> list[Step]:
    """Steps that read what the goal says is the user's own ("my goal", "my week")."""
    return [
        Step(title, name, dict(args))
        for pattern, name, args, title in _LOOKUPS
        if name in toolbox.tools and re.search(pattern, goal, re.I)
    ]


def _fill(step: Step, row: dict[str, str] | None) -> Step:
    if row is None:
        return Step(step.title, step.tool, dict(step.arguments), _safe_name(step.output))
    sub = lambda text: re.sub(r"\{(\w[\w ]*)\}", lambda m: row.get(m.group(1), m.group(0)), text)
    output = _safe_name(sub(step.output)) if step.output else ""
    if output and output == _safe_name(step.output):  # no placeholder in the name: make one per row anyway
        stem, dot, ext = output.rpartition(".")
        output = f"{stem or ext}-{_slug(next(iter(row.values()), 'row'))}.{ext if dot else 'md'}"
    title = sub(step.title)
    if title == step.title:
        title += f" ({', '.join(f'{k}: {v}' for k, v in list(row.items())[:3])})"
    args = {k: sub(v) if isinstance(v, str) else v for k, v in step.arguments.items()}
    return Step(title, step.tool, args, output, row)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "task"


def _safe_name(name: str) -> str:
    """A file name inside the task folder: no directories, no hidden files."""
    name = Path(name.strip()).name.lstrip(".")
    return re.sub(r"[^\w.-]+", "-", name)[:80]


def load_plan(path: Path) -> Plan:
    """A plan saved (and maybe edited) by the user. Its output names are made safe like
    the model's: a plan file cannot write outside its task folder."""
    hint = "it needs a goal and a list of steps, each with a text title"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        goal, steps = (
            data["goal"],
            [Step(**{k: v for k, v in s.items() if k in Step.__dataclass_fields__}) for s in data["steps"]],
        )
    except FileNotFoundError:
        raise BadInput(f"no such plan file: {path}", "give the plan.json `anima do` wrote") from None
    except OSError as exc:
        raise BadInput(f"cannot read plan file {path}: {exc.strerror}", "give the plan.json `anima do` wrote") from None
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise BadInput(f"{path} is not a valid plan: {type(exc).__name__}: {exc}"[:300], hint) from None
    text = lambda v: isinstance(v, str)
    if not text(goal) or not all(
        text(s.title)
        and text(s.tool)
        and text(s.output)
        and isinstance(s.arguments, dict)
        and isinstance(s.row, dict | None)
        for s in steps
    ):
        raise BadInput(
            f"{path} is not a valid plan: goal, titles, tools and outputs must be text, arguments an object", hint
        )
    for s in steps:
        s.output = _safe_name(s.output) if s.output else ""
    return Plan(goal, steps)


WRITER = """You are carrying out one step of a task for the user. \
Write only what the step asks for, ready to use, with no preamble.
When the step is for one audience or person, tailor it to them: lead with what they care about, \
use their words and the tone given, and leave out what does not matter to them.
Today is {today}."""


def run_plan(
    plan: Plan,
    model: ChatModel,
    toolbox: Toolbox | None,
    folder: Path,
    options: Options,
    system: str = "",
    guard: Guard | None = None,
    progress: Callable[[int, int, Step], None] | None = None,
    today: datetime | None = None,
) -> Path:
    """Run every step, save the outputs in `folder`; returns the path of result.md."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "plan.json").write_text(plan.to_json(), encoding="utf-8")
    today = today or datetime.now().astimezone()
    for i, step in enumerate(plan.steps):
        if progress:
            progress(i, len(plan.steps), step)
        if step.tool == "write":
            step.result, step.ok = (
                _write(
                    plan, step, model=model, options=options, system=system, guard=guard, today=today, toolbox=toolbox
                ),
                True,
            )
        elif toolbox is None or step.tool not in toolbox:
            step.result, step.ok = f"error: no tool named '{step.tool}'", False
        else:
            result = toolbox.call(step.tool, step.arguments)
            step.result, step.ok = result.content, result.ok
        if step.output and step.ok:
            (folder / step.output).write_text(step.result.strip() + "\n", encoding="utf-8")
    if progress:
        progress(len(plan.steps), len(plan.steps), plan.steps[-1])
    (folder / "plan.json").write_text(plan.to_json(), encoding="utf-8")
    result = folder / "result.md"
    result.write_text(summary(plan), encoding="utf-8")
    return result


def _write(
    plan: Plan,
    step: Step,
    model: ChatModel,
    options: Options,
    system: str,
    guard: Guard | None,
    today: datetime,
    toolbox: Toolbox | None = None,
) -> str:
    """One written step. What earlier steps' tools returned is data, as in chat: the
    instructions hidden in it are removed before the model reads it; the files the user
    handed in lose only the rules' phrasings (they are the user's own, like a message)."""
    injection = guard.injection if guard is not None else None
    seen = lambda s: s.result if s.tool == "write" or toolbox is None else toolbox.readable(s.tool, s.result, injection)
    attached = lambda t: injection.neutralise(t, learned_too=False)[0] if injection is not None else t
    done = [s for s in plan.steps if s.ok and s is not step and s.row is None]
    context = [f"The task: {plan.goal}"]
    texts = {n: t for n, t in plan.files.items() if not n.endswith(".csv")}
    if texts:
        context.append("Files:\n" + "\n\n".join(f"{n}:\n{attached(t[:ATTACHED_CHARS])}" for n, t in texts.items()))
    if done:
        context.append("Done so far:\n" + "\n\n".join(f"{s.title}:\n{seen(s)[:1500]}" for s in done))
    if step.row:
        who = "; ".join(f"{k}: {v}" for k, v in step.row.items())
        context.append(f"This one is for: {who}.")
        context.append(
            f"Now: {step.title}. Rewrite it for them in your own words — their needs first, in their tone — "
            "not a copy of the original."
        )
    else:
        context.append(f"Now: {step.title}")
    messages = [
        {
            "role": "system",
            "content": "\n\n".join(p for p in (system, WRITER.format(today=f"{today:%A %d %B %Y}")) if p),
        },
        {"role": "user", "content": "\n\n".join(context)},
    ]
    text = complete(model, messages, options).text.strip()
    if guard is not None:
        verdict = guard.check_fast(text, "assistant")
        if verdict.action == "block":
            return refusal(verdict)
    return text


def summary(plan: Plan) -> str:
    lines = [f"# {plan.goal}", ""]
    for i, s in enumerate(plan.steps, 1):
        mark = "done" if s.ok else "failed" if s.ok is False else "not run"
        saved = f" → `{s.output}`" if s.output and s.ok else ""
        lines += [f"## {i}. {s.title} ({s.tool}, {mark}){saved}", "", s.result.strip(), ""]
    return "\n".join(lines)


def task_folder(root: Path, goal: str, now: datetime) -> Path:
    return root / f"{now:%Y%m%d-%H%M%S}-{_slug(goal)[:30]}"


def log_task(store: Store, model: str, plan: Plan, folder: Path) -> None:
    """The task as a turn of its own conversation: it shows in the history."""
    conversation = store.new_conversation("task", title=plan.goal[:80])
    done = sum(1 for s in plan.steps if s.ok)
    store.log_turn(
        Turn(
            conversation_id=conversation,
            persona="task",
            model=model,
            user_text=plan.goal,
            reply=f"{done}/{len(plan.steps)} steps done; saved in {folder}\n\n" + summary(plan)[:4000],
        )
    )


def check_goal(goal: str, guard: Guard | None) -> None:
    if not goal.strip():
        raise BadInput("the task is empty", 'say what to do, e.g. anima do "plan my week"')
    if guard is not None:
        verdict = guard.check(goal, "user")
        if verdict.action == "block":
            raise BadInput(refusal(verdict), "ask for something else")
