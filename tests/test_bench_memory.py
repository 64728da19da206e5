"""The memory benchmarks, offline: scripted model, hashed embeddings, real stores."""

import json
from pathlib import Path

import pytest

from anima.bench.locomo import _coverage, report, run_locomo
from anima.bench.memory_scale import run_memory_scale
from anima.models.fake import FakeChatModel, FakeEmbedder

LOCOMO = Path(__file__).resolve().parents[2] / "shared" / "data" / "locomo" / "locomo_dev.json"


def tiny_locomo(tmp_path) -> Path:
    sample = {
        "sample_id": "tiny",
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
        "qa": [
            {"question": "What is the name of Ana's puppy?", "answer": "Biscuit", "evidence": ["D1:3"], "category": 4},
            {"question": "Where did Ben run a marathon?", "answer": "Lisbon", "evidence": ["D2:1"], "category": 4},
            {"question": "What pet did Ana get and where did Ben run?", "answer": "puppy, Lisbon", "evidence": ["D1:3", "D2:1"], "category": 1},
            {"question": "What did Ana name her cat?", "adversarial_answer": "Biscuit", "evidence": ["D1:3"], "category": 5},
        ],
    }
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps([sample]))
    return path


def test_coverage_counts_a_question_only_when_all_evidence_is_found():
    provenance = [["D1:3"], ["D2:1", "D2:2"], ["D5:1"]]
    assert _coverage(provenance, ("D1:3", "D2:1"))[5] == (True, True)
    assert _coverage(provenance, ("D1:3", "D9:9"))[10] == (False, False)
    assert _coverage(provenance, ("D1:3", "D1:9"))[10] == (False, True)  # session found, turn not


def test_locomo_run_on_a_tiny_file(tmp_path):
    model = FakeChatModel()
    answers = {"name of Ana's puppy": "Biscuit", "run a marathon": "Lisbon"}
    model.script = [lambda messages, a=answers: next((v for k, v in a.items() if k in messages[-1]["content"]), "Not mentioned in the conversation")] * 50
    result = run_locomo(tiny_locomo(tmp_path), model, FakeEmbedder(), answer_limit=4, full_limit=2)
    anima, bm25 = result["anima"], result["bm25"]
    assert anima["overall"]["n"] == 4 and anima["overall"]["n_answered"] == 4
    assert anima["by_category"]["4"]["turn_recall@5"] == 1.0  # both single-hop questions found
    assert anima["by_category"]["4"]["f1"] == 1.0
    assert anima["by_category"]["5"]["f1"] == 1.0  # "not mentioned" is right for the adversarial one
    assert bm25["overall"]["n"] == 4
    assert result["ingest"]["messages"] == 5 and result["ingest"]["ms_per_message"] > 0
    assert result["search_ms"]["p95"] >= result["search_ms"]["p50"] > 0
    assert result["full_context"]["n"] == 2
    assert 0 < result["context_tokens"]["max"] <= 1000


def test_report_shape_has_the_promised_keys():
    out = report([])
    assert set(out["overall"]) >= {"turn_recall@5", "turn_recall@10", "session_recall@5", "session_recall@10", "f1", "n"}
    assert set(out["by_category"]) == {"1", "2", "3", "4", "5"}


@pytest.mark.skipif(not LOCOMO.exists(), reason="needs ../shared/data/locomo")
def test_locomo_retrieval_on_one_real_conversation():
    result = run_locomo(LOCOMO, FakeChatModel(), FakeEmbedder(), limit=1, answer_limit=0, full_limit=0)
    assert result["anima"]["overall"]["n"] == 199  # conv-26
    assert result["ingest"]["messages"] == 419
    for system in ("anima", "bm25"):
        o = result[system]["overall"]
        assert 0 < o["turn_recall@5"] <= o["turn_recall@10"] <= o["session_recall@10"] <= 1


def test_memory_scale_both_backends():
    result = run_memory_scale([200, 1000], queries=5, dim=32)
    for backend in ("sqlite-vec", "numpy"):
        rows = result["backends"][backend]
        assert [r["memories"] for r in rows] == [200, 1000]
        assert all(r["p95_ms"] >= r["p50_ms"] > 0 for r in rows)
