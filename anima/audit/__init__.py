"""`anima audit`: an automated red team against anima itself or any OpenAI-compatible
endpoint, and a weak-to-strong oversight experiment.

    attacks.py    seeds, mutators, agentic cases (pure, deterministic given the seed)
    targets.py    SelfTarget (the turn pipeline in-process) and HttpTarget (a URL)
    judge.py      refusal detector, guard, LLM rubric and canary rules
    runner.py     cases -> results JSONL (resumable) -> metrics; PAIR
    autofix.py    propose a guard or prompt change, verify it, keep it only if it helps
    report.py     the self-contained HTML report
    w2s.py        weak-to-strong: PGR of a small model supervising a bigger one (probes on hidden states)
"""
