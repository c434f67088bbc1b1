"""The transformers engine on the real SmolLM2-135M-Instruct model (CPU)."""

import asyncio
import json
import os
import re
import subprocess
import sys

import pytest

from bon.config import EngineConfig, HFOptions
from bon.engines.base import GenerationRequest
from bon.engines.hf import HFEngine
from conftest import read_jsonl, write_jsonl

pytestmark = pytest.mark.model

HELLO = [{"role": "user", "content": "Say hello in one short sentence."}]
ESSAY = [{"role": "user", "content": "Write a long essay about the history of Rome."}]


@pytest.fixture(scope="module")
def engine(smollm2):
    return asyncio.run(HFEngine.load(EngineConfig("hf", smollm2, options=HFOptions())))


def generate(engine, *requests):
    async def go():
        return await asyncio.gather(*(engine.generate(r) for r in requests))

    return asyncio.run(go())


def test_samples_n_completions_within_the_token_limit(engine):
    (generation,) = generate(engine, GenerationRequest(HELLO, n=3, temperature=0.7, top_p=0.95, max_tokens=12, seed=1))
    assert len(generation.completions) == 3
    assert generation.prompt_tokens > 5
    for completion in generation.completions:
        assert 1 <= completion.completion_tokens <= 12
        assert completion.finish_reason in ("stop", "length")
    assert generation.completion_tokens == sum(c.completion_tokens for c in generation.completions)


def test_reports_truncation_at_the_token_limit(engine):
    (generation,) = generate(engine, GenerationRequest(ESSAY, n=1, temperature=0.6, top_p=1.0, max_tokens=4, seed=2))
    (completion,) = generation.completions
    assert completion.finish_reason == "length" and completion.completion_tokens == 4


def test_same_seed_same_text(engine):
    request = GenerationRequest(HELLO, n=2, temperature=1.0, top_p=1.0, max_tokens=10, seed=123)
    (first,) = generate(engine, request)
    (second,) = generate(engine, request)
    assert [c.text for c in first.completions] == [c.text for c in second.completions]


def test_concurrent_requests_share_batches(engine, monkeypatch):
    batches = []
    run_batch = engine._run_batch

    def counting(requests):
        batches.append(len(requests))
        return run_batch(requests)

    monkeypatch.setattr(engine, "_run_batch", counting)
    requests = [GenerationRequest(HELLO, n=2, temperature=0.7, top_p=0.95, max_tokens=4, seed=i) for i in range(6)]
    generations = generate(engine, *requests)
    assert [len(g.completions) for g in generations] == [2] * 6
    assert len(batches) < 6 and sum(batches) == 6


def test_sample_piped_into_select_on_the_real_model(tmp_path, smollm2):
    """`bon sample … | bon select -` as a user runs it: real processes, real pipe, real model."""
    queries = write_jsonl(
        tmp_path / "q.jsonl",
        [
            {"id": "a", "query": "Name a primary color."},
            {"id": "b", "query": "What is 2 + 3?"},
        ],
    )
    bon = [sys.executable, "-m", "bon"]
    env = dict(os.environ, TRANSFORMERS_VERBOSITY="error")
    sample = subprocess.Popen(
        bon
        + [
            "sample",
            str(queries),
            "--policy",
            smollm2,
            "--backend",
            "hf",
            "-n",
            "3",
            "--policy-max-tokens",
            "12",
            "-q",
        ],
        stdout=subprocess.PIPE,
        env=env,
    )
    select = subprocess.run(
        bon + ["select", "-", "--judge", smollm2, "--backend", "hf", "--votes", "2", "--judge-max-tokens", "24"],
        stdin=sample.stdout,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    sample.stdout.close()
    assert sample.wait(timeout=60) == 0
    assert select.returncode == 0, select.stderr
    assert "bon: 2 records" in select.stderr
    # stderr holds bon's own lines: one saying what loaded where, no weight-loading bar
    assert re.search(rf"^bon: {re.escape(smollm2)} loaded on hf \(cpu, float32\) in [\d.]+ s$", select.stderr, re.M)
    assert "Loading weights" not in select.stderr and "%|" not in select.stderr
    records = read_jsonl(select.stdout)
    assert [r["id"] for r in records] == ["a", "b"]
    for record in records:
        assert len(record["candidates"]) == 3
        assert record["candidates"][record["best_index"]] == record["best"]
        usage = record["usage"]
        votes = [v for rnd in record["tournament"]["rounds"] for m in rnd for v in m["votes"]]
        assert usage["judge_samples"] == len(votes)
        assert usage["invalid_votes"] == sum(v["verdict"] is None for v in votes)
        for vote in votes:
            # A 135M model is a hopeless judge: most votes are invalid, each with its reason.
            assert vote["verdict"] in (
                None,
                vote["first"],
                *[m for rnd in record["tournament"]["rounds"] for x in rnd for m in (x["a"], x["b"])],
            )
            if vote["verdict"] is None:
                assert vote["reason"] in ("truncated", "no_verdict", "bad_verdict")
                assert vote["reason"] != "truncated" or vote["finish_reason"] == "length"
            assert vote["completion_tokens"] <= 24
        json.dumps(record)  # serialisable as written
