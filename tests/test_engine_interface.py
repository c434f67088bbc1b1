"""The Engine interface: a backend that only generates gets every capability's default, and
each wrapper bon puts in front of an engine forwards every capability of the one inside."""

import asyncio
import threading

import pytest

from bon.config import EngineConfig, SamplingConfig, ServerOptions, TournamentConfig
from bon.engines.base import Completion, Engine, Generation, GenerationRequest, RecordError
from bon.engines.openai import OpenAIEngine
from bon.engines.scripted import ScriptedEngine
from bon.io.prompts import judge_template
from bon.io.records import Record
from bon.runs.checkpoint import CachedEngine, Sidecar
from bon.runs.judge import Referee, compare
from bon.runs.pipeline import StopGate
from bon.runs.roles import _OnLoop
from fault_server import FaultyServer

JUDGE_SAMPLING = SamplingConfig(0.6, 1.0, 64)


def judge_request(text="Which is better?"):
    return GenerationRequest([{"role": "user", "content": text}], 1, 0.6, 1.0, 16, seed=3)


class OnlyGenerates(Engine):
    """A third party's engine at its smallest: it answers, and declares nothing else."""

    async def generate(self, request):
        text = "<think>no idea</think>\\boxed{Assistant 1}"
        return Generation([Completion(text, "stop", 5)] * request.n, 7, 5 * request.n)


def test_an_engine_that_only_generates_gets_every_default():
    engine = OnlyGenerates()
    assert engine.name == "OnlyGenerates"  # named in records by its class when it names itself nothing
    assert engine.context_limit is None and engine.count_prompt_tokens([]) is None and engine.health() is None
    assert engine.can_stream is False

    async def stream():
        pieces = [piece async for piece in engine.stream(judge_request())]
        await engine.close()
        return pieces

    text, completion = asyncio.run(stream())  # one whole generation: its text, then its Completion
    assert completion == Completion(text, "stop", 5)


def test_an_engine_that_only_generates_judges_whole_prompts_and_compares_without_streaming():
    engine = OnlyGenerates()
    referee = Referee(engine, judge_template(), JUDGE_SAMPLING, TournamentConfig(votes=2, seed=0))
    long = "word " * 5000
    messages, shortened = referee.messages("q", long, "short")
    assert not shortened and long in messages[-1]["content"]  # it cannot count: nothing is cut

    record = Record(line=1, id=0, data={}, question="q", messages=None, candidates=["a", "bb", "ccc"])
    usage = asyncio.run(referee.select(record))
    assert record.output["tournament"]["judge"] == "OnlyGenerates" and usage.judge_prompt_tokens > 0

    texts = []
    match, _ = asyncio.run(compare(referee, "q", ["a", "bb"], on_text=texts.append))
    assert texts == [] and match.winner in (0, 1)  # can_stream is False: votes come whole, no live text


class Capable(ScriptedEngine):
    """Every capability declared, each recording the loop it ran on."""

    name = "capable:judge"
    context_limit = 600  # words: the judge template alone takes about 300

    def __init__(self):
        super().__init__()
        self.loops: list[asyncio.AbstractEventLoop] = []

    def count_prompt_tokens(self, messages):
        return sum(len(m["content"].split()) for m in messages)

    def health(self):
        return (1, 2)

    async def generate(self, request):
        self.loops.append(asyncio.get_running_loop())
        return await super().generate(request)

    async def stream(self, request):
        async for piece in super().stream(request):
            self.loops.append(asyncio.get_running_loop())
            yield piece


@pytest.fixture
def other_loop():
    """A running loop in a thread of its own, where an engine can live (as with bon's sync API)."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    thread.join()
    loop.close()


WRAPPERS = {
    "CachedEngine": lambda engine, tmp_path, _: CachedEngine(engine, Sidecar(tmp_path / "c.jsonl", {}, False), "judge"),
    "StopGate": lambda engine, _, __: StopGate(engine, asyncio.Event()),
    "_OnLoop": lambda engine, _, loop: _OnLoop(engine, loop),
}


@pytest.mark.parametrize("wrap", WRAPPERS.values(), ids=WRAPPERS.keys())
def test_each_wrapper_forwards_every_capability(wrap, tmp_path, other_loop):
    engine = Capable()
    wrapper = wrap(engine, tmp_path, other_loop)
    home = other_loop if isinstance(wrapper, _OnLoop) else None
    assert isinstance(wrapper, Engine)
    assert (wrapper.name, wrapper.context_limit, wrapper.can_stream) == ("capable:judge", 600, True)
    messages = [{"role": "user", "content": "three little words"}]
    assert wrapper.count_prompt_tokens(messages) == 3 and wrapper.health() == (1, 2)

    async def use():
        generation = await wrapper.generate(judge_request())
        pieces = [piece async for piece in wrapper.stream(judge_request())]
        return generation, pieces, asyncio.get_running_loop()

    generation, pieces, here = asyncio.run(use())
    assert generation.completions[0].text.startswith("answer 0 to: Which is better?")
    assert isinstance(pieces[-1], Completion) and "".join(pieces[:-1]).strip() == pieces[-1].text
    assert len(pieces) > 2  # streamed as the engine streams, not gathered into one piece
    assert set(engine.loops) == {home or here}  # the engine ran on its own loop only


def test_the_judge_fits_its_prompt_through_the_wrappers(tmp_path, other_loop):
    engine = Capable()
    wrapped = StopGate(
        CachedEngine(_OnLoop(engine, other_loop), Sidecar(tmp_path / "c.jsonl", {}, False), "judge"), asyncio.Event()
    )
    referee = Referee(wrapped, judge_template(), SamplingConfig(0.6, 1.0, 20), TournamentConfig(votes=1))
    long = "word " * 2000
    messages, shortened = referee.messages("q", long, long)
    assert shortened and 600 - 20 - 10 < engine.count_prompt_tokens(messages) <= 600 - 20
    assert referee.messages("q", "a", "b")[1] is False


def test_a_stopped_gate_sends_nothing():
    engine, stop = Capable(), asyncio.Event()
    gate = StopGate(engine, stop)
    stop.set()

    async def use(call):
        with pytest.raises(asyncio.CancelledError):
            await call()

    asyncio.run(use(lambda: gate.generate(judge_request())))
    asyncio.run(use(lambda: anext(gate.stream(judge_request()))))
    assert engine.loops == []


def test_the_openai_backend_cannot_fit_and_says_so_when_the_server_refuses_a_long_prompt():
    server = FaultyServer(poison="POISON", poison_status=400)  # "This model's maximum context length is …"
    try:
        engine = OpenAIEngine(EngineConfig("openai", "judge", options=ServerOptions(base_url=(server.url,))))
        assert engine.context_limit is None and engine.count_prompt_tokens([]) is None

        async def ask():
            try:
                await engine.generate(judge_request("POISON"))
            finally:
                await engine.close()

        with pytest.raises(
            RecordError,
            match=r"rejected the request: .*maximum context length is 2048 tokens \(the "
            "openai backend counts no tokens, so bon cannot cut a judge prompt",
        ):
            asyncio.run(ask())
    finally:
        server.close()
