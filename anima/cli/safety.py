"""`anima guard ...` (train and try the safety guard) and `anima eval ...` (measure it)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from anima.cli.common import AnimaGroup, JsonOpt, container_for, err, out, read_stdin, steps_progress
from anima.config import Config, load_config
from anima.errors import BadInput

guard_app = typer.Typer(cls=AnimaGroup, help="Train and try the safety guard.", no_args_is_help=True)
eval_app = typer.Typer(
    cls=AnimaGroup, help="Measure the guard on labelled data (held-out figures only).", no_args_is_help=True
)

DataDirOpt = typer.Option(
    None, "--data", help="Folder of the public safety sets (default: $ANIMA_SAFETY_DATA or ../shared/data/safety)."
)


@guard_app.command("train")
def guard_train(
    data: Optional[Path] = DataDirOpt,
    if_missing: bool = typer.Option(
        False, "--if-missing", help="Do nothing when the heads exist and were trained on the current data."
    ),
    probe: bool = typer.Option(
        False,
        "--probe",
        help="Also train the probe on the chat model's middle layer (about 20 minutes on 2 cores, once).",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Train the guard's fast layer and the injection detector from public data."""
    from anima.safety.train import heads_dir, source_folder, train_all, up_to_date

    config = load_config() if probe else None
    if config is not None and config.backend != "llama_cpp":  # before a minute of training the heads
        raise BadInput(
            f"the probe reads the embedded model's layers; the backend is {config.backend}",
            "train it with backend = llama_cpp (the probe is used only with that backend)",
        )
    if if_missing and up_to_date(data):
        if not as_json:
            err.print(f"guard heads present and up to date in {heads_dir()}")
        if probe:
            _train_probe(config, data, if_missing, as_json)
        return
    data = source_folder(data)  # before the embedder loads: a missing folder is the likelier mistake
    container = container_for(load_config(guard={"enabled": False}))
    with err.status("training the guard...") as status:
        result = train_all(
            container.guard_embedder.embed, data, progress=lambda step: status.update(f"training the guard: {step}")
        )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    for name in ("guard", "reply", "injection"):
        m = result[name]
        out.print(
            f"{name}: {m['rows']} rows ({m['unsafe']} positive), threshold {m['threshold']:.2f}, {m['seconds']} s"
        )
    out.print(f"saved in {result['dir']}")
    if probe:
        _train_probe(config, data, if_missing, as_json)


def _train_probe(config: Config, data: Path | None, if_missing: bool, as_json: bool) -> None:
    """`guard train --probe`: read the training rows with the chat model (`config`'s,
    whose backend `guard_train` checked), fit, save."""
    from anima.models import load_chat_model
    from anima.safety import probe
    from anima.safety.data import training_set
    from anima.safety.train import fingerprint, source_folder

    folder = source_folder(data)
    sources = fingerprint(folder)
    layer = config.guard.probe_layer
    if if_missing and probe.load(config.model, layer, sources) is not None:
        if not as_json:
            err.print(f"guard probe present and up to date: {probe.probe_file(config.model, layer)}")
        return
    examples = training_set(folder)
    model = load_chat_model(config, states=True)
    with steps_progress() as progress:
        task = progress.add_task(f"reading with {config.model}, layer {layer}", total=len(examples))
        head = probe.train(model, examples, sources, layer, lambda done: progress.update(task, completed=done))
    path = probe.probe_file(config.model, layer)
    head.save(path)
    m = head.manifest
    if as_json:
        print(json.dumps({k: v for k, v in m.items() if k != "keys"} | {"path": str(path)}, indent=2))
        return
    out.print(f"probe: {m['rows']} rows ({m['unsafe']} positive), threshold {m['threshold']:.2f}, {m['seconds']} s")
    out.print(f"saved in {path}")


@guard_app.command("check")
def guard_check(
    text: str = typer.Argument(..., help="The text; `-` reads stdin."),
    role: str = typer.Option("user", help="user | assistant"),
    as_json: bool = JsonOpt,
) -> None:
    """Show the guard's verdict on one text."""
    from anima.safety.guard import refusal

    if text == "-":
        text = read_stdin()
    if role not in ("user", "assistant"):
        raise BadInput(f"unknown role {role!r}", "use user or assistant")
    guard = container_for(load_config()).guard
    if guard is None:
        raise BadInput("the guard is off (guard.enabled = false)", "turn it on to check text")
    v = guard.check(text, role)  # type: ignore[arg-type]
    if as_json:
        print(json.dumps(v.to_dict()))
        return
    verdict = "safe" if v.safe else f"unsafe ({', '.join(v.categories)}) -> {v.action}"
    out.print(
        f"{verdict}   score {v.score:.3f}   layer {v.layer}   injection {v.injection:.2f}   {v.latency_ms:.1f} ms"
    )
    if v.action == "block":
        out.print(refusal(v))


@eval_app.command("guard")
def eval_guard(
    data: Optional[Path] = typer.Option(
        None, "--data", help="Labelled prompts: OpenAI moderation JSONL, or any CSV / JSONL."
    ),
    split: Optional[str] = typer.Option(
        None, "--split", help="test: instead of --data, the public sets' test split (never trained or tuned on)."
    ),
    fmt: str = typer.Option("auto", "--format", help="moderation | csv | jsonl (default: from the file)."),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="Column with the text."),
    label_field: Optional[str] = typer.Option(None, "--label-field", help="Column with the label."),
    unsafe_values: Optional[str] = typer.Option(
        None,
        "--unsafe-values",
        help="Label values meaning unsafe, comma-separated (default: 1,true,unsafe,yes,harmful,toxic).",
    ),
    limit: Optional[int] = typer.Option(
        None, "--limit", min=1, help="Score a random sample of this many rows (seeded)."
    ),
    layers: str = typer.Option("auto", "--layers", help="1 (fast layer only) | auto (LLM when unsure) | always"),
    training_data: Optional[Path] = typer.Option(
        None,
        "--training-data",
        help="Folder of the sets the head was trained on, for cross-validation (default: as `guard train`).",
    ),
    replies: bool = typer.Option(
        False,
        "--replies",
        help="The rows are assistant replies: each is read as a turn reads it while it streams; flagged = stopped.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Precision, recall, F1, FPR, AUPRC and latency of the guard on a labelled file."""
    from anima.safety.data import held_out, read_labelled, safety_data_dir
    from anima.safety.evaluate import eval_guard as run
    from anima.safety.evaluate import sample
    from anima.safety.train import source_folder

    if layers not in ("1", "auto", "always"):
        raise BadInput(f"unknown --layers {layers!r}", "use 1, auto or always")
    if (data is None) == (split is None):
        raise BadInput("give either --data FILE or --split test", "e.g. `anima eval guard --split test`")
    if split is not None and split != "test":
        raise BadInput(f"unknown --split {split!r}", "the one split to report on is test")
    if split:
        examples = sample(held_out(source_folder(training_data)), limit)
    else:
        examples = sample(
            read_labelled(data, fmt, text_field, label_field, unsafe_values.split(",") if unsafe_values else None),
            limit,
        )
    container = container_for(load_config(guard={"layer2": "off" if layers == "1" else layers}))
    guard = container.guard
    if guard is None:
        raise BadInput("the guard is off (guard.enabled = false)", "turn it on to evaluate it")
    with steps_progress() as progress:
        task = progress.add_task("scoring", total=len(examples))
        result = run(
            examples,
            guard,
            training_data or safety_data_dir(),
            progress=lambda d, t: progress.update(task, completed=d, total=t),
            replies=replies,
        )
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    what = "replies in" if replies else "guard on"
    _table(f"{what} {data.name if data else 'the public test split'} ({layers=})", result)
    if result.per_source:
        t = Table("source", "unsafe", "recall", "safe", "FPR", title="per source")
        fmt3 = lambda v: "-" if v is None else f"{v:.3f}"
        for source, m in result.per_source.items():
            t.add_row(source, str(m["unsafe"]), fmt3(m["recall"]), str(m["safe"]), fmt3(m["fpr"]))
        out.print(t)
    if result.per_category:
        t = Table("category", "n", "recall", title="recall per category")
        for code, m in result.per_category.items():
            t.add_row(code, str(m["n"]), f"{m['recall']:.3f}")
        out.print(t)


@eval_app.command("injection")
def eval_injection(
    data: Path = typer.Option(
        ...,
        "--data",
        help="A BIPIA folder (cases are built from it), or a CSV / JSONL of texts labelled injected or not.",
    ),
    text_field: Optional[str] = typer.Option(None, "--text-field"),
    label_field: Optional[str] = typer.Option(None, "--label-field"),
    unsafe_values: Optional[str] = typer.Option(None, "--unsafe-values", help="Label values meaning injected."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1),
    insert: Optional[Path] = typer.Option(
        None,
        "--insert",
        help="A text file of attack instructions, one per line: each document of --data (all clean) "
        "is scored as is and with one of them inserted.",
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Precision, recall, F1 and FPR of the injection detector on documents with and
    without an inserted instruction."""
    from anima.safety.data import read_labelled, text_lines
    from anima.safety.evaluate import bipia_cases, inserted_cases, sample
    from anima.safety.evaluate import eval_injection as run

    guard = container_for(load_config(guard={"layer2": "off"})).guard
    if guard is None or guard.injection is None:
        raise BadInput("the injection detector is off (guard.enabled / guard.injection)", "turn them on to evaluate it")
    folder = (data.parent if (data / "email_train.jsonl").is_file() else data) if data.is_dir() else None
    if folder is not None:
        if not (folder / "bipia" / "text_attack_train.json").is_file():
            raise BadInput(
                f"{data} is not a BIPIA folder (no bipia/text_attack_train.json)",
                "give ../shared/data/safety/bipia, or a labelled CSV / JSONL file",
            )
        cases, types, ctx = bipia_cases(folder, limit)
    else:
        cases = sample(
            read_labelled(data, "auto", text_field, label_field, unsafe_values.split(",") if unsafe_values else None),
            limit,
        )
        types = ctx = None
        if insert is not None:
            attacks = text_lines(insert)
            if any(c.unsafe for c in cases) or not attacks:
                raise BadInput(
                    f"--insert needs clean documents in {data.name} and attack lines in {insert.name}",
                    "give a file of clean documents and a text file of one instruction per line",
                )
            cases = inserted_cases(cases, attacks)
    with steps_progress() as progress:
        task = progress.add_task("scoring", total=len(cases))
        result = run(
            cases,
            guard.injection,
            folder,
            types,
            ctx,
            progress=lambda d, t: progress.update(task, completed=d, total=t),
        )
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    _table(f"injection detector on {data.name}", result)
    r = result.metrics["rules_only"]
    out.print(
        f"rules alone: precision {r['precision']:.3f}  recall {r['recall']:.3f}  F1 {r['f1']:.3f}  FPR {r['fpr']:.3f}"
    )


def _table(title: str, result) -> None:
    m = result.metrics
    t = Table("n", "unsafe", "precision", "recall", "F1", "FPR", "AUPRC", "p50 ms", "p95 ms", title=title)
    t.add_row(
        str(m["n"]),
        str(m["unsafe"]),
        f"{m['precision']:.3f}",
        f"{m['recall']:.3f}",
        f"{m['f1']:.3f}",
        f"{m['fpr']:.3f}",
        f"{m['auprc']:.3f}",
        f"{result.latency['latency_p50_ms']:.1f}",
        f"{result.latency['latency_p95_ms']:.1f}",
    )
    out.print(t)
    out.print(f"[dim]{result.mode}[/dim]")
    for name, lat in result.latency.get("per_layer", {}).items():
        out.print(f"  {name:<11} p50 {lat['p50_ms']:.1f} ms  p95 {lat['p95_ms']:.1f} ms  ({lat['calls']} calls)")
    if result.layers:
        out.print(
            "  decided by: "
            + ", ".join(
                f"{k} {v['decided']} ({v['caught']} caught, {v['false_alarms']} false alarms)"
                for k, v in result.layers.items()
            )
        )
