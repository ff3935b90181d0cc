"""Prompt cache reuse: greedy answers are the same with and without the cache, token for token.

Each scenario runs the same conversation through an engine with the cache and one without it
(prompt_cache_bytes=0), on the tiny model and on the real demo model, and checks both the answers
and how many prompt tokens the cache served (so a cache that is never used cannot pass).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.config import EngineConfig
from engine.local.engine import LocalEngine
from engine.types import ChatRequest, ChatResult, Message, collect


@dataclass
class Pair:
    cached: LocalEngine
    plain: LocalEngine
    model: str
    max_tokens: int = 24

    async def ask(self, engine: LocalEngine, messages: list[Message]) -> ChatResult:
        request = ChatRequest(model=self.model, messages=messages, temperature=0, max_tokens=self.max_tokens)
        return await collect(engine.stream(request))

    async def both(self, messages: list[Message]) -> ChatResult:
        """The cached engine's answer, after checking it against the uncached one."""
        with_cache = await self.ask(self.cached, messages)
        without = await self.ask(self.plain, messages)
        assert with_cache.text == without.text
        assert with_cache.usage.completion_tokens == without.usage.completion_tokens
        assert with_cache.usage.prompt_tokens == without.usage.prompt_tokens
        assert without.usage.cached_tokens == 0
        return with_cache


def make_pair(models_dir: Path, tmp_path: Path, model: str, **kw) -> Pair:
    def engine(cache_bytes: int) -> LocalEngine:
        return LocalEngine(EngineConfig(data_dir=tmp_path / "data", model_dirs=[models_dir], scan_hf_cache=False,
                                        prompt_cache_bytes=cache_bytes))

    return Pair(engine(64 * 2**20), engine(0), model, **kw)


def user(text: str) -> Message:
    return Message("user", text)


def assistant(text: str) -> Message:
    return Message("assistant", text)


async def follow_up_turn(p: Pair) -> tuple[list[Message], ChatResult]:
    first = [user("Hello world, this is a test.")]
    a1 = await p.both(first)
    assert a1.usage.cached_tokens == 0  # nothing in the cache yet
    conversation = [*first, assistant(a1.text), user("What is the capital of France?")]
    a2 = await p.both(conversation)
    # The whole first turn's prompt (at least) came from the cache, not a new prefill.
    assert a2.usage.cached_tokens >= a1.usage.prompt_tokens
    return conversation, a2


async def edited_earlier_message(p: Pair, conversation: list[Message]) -> None:
    edited = [user("Hello there, this is a test."), *conversation[1:]]
    first_prompt = (await p.ask(p.plain, conversation[:1])).usage.prompt_tokens
    a = await p.both(edited)
    # The shared start (up to the edit) is reused, nothing after it.
    assert 0 < a.usage.cached_tokens < first_prompt


async def different_system_prompt(p: Pair) -> None:
    terse = [Message("system", "You answer in one short line."), user("alpha beta gamma")]
    a = await p.both(terse)
    wordy = [Message("system", "You answer at great length."), user("alpha beta gamma")]
    b = await p.both(wordy)
    assert 0 < b.usage.cached_tokens < a.usage.prompt_tokens


async def interleaved_conversations(p: Pair) -> None:
    a_conv = [user("The quick brown fox jumps over the lazy dog.")]
    b_conv = [user("Numbers 0 1 2 3 4 5 6 7 8 9 and words.")]
    a1 = await p.both(a_conv)
    b1 = await p.both(b_conv)
    a_conv += [assistant(a1.text), user("delta epsilon")]
    b_conv += [assistant(b1.text), user("alpha beta")]
    a2 = await p.both(a_conv)
    b2 = await p.both(b_conv)
    assert a2.usage.cached_tokens >= a1.usage.prompt_tokens
    assert b2.usage.cached_tokens >= b1.usage.prompt_tokens
    # Both third turns at once: they start from their own caches inside one running batch.
    a_conv += [assistant(a2.text), user("the router sends requests")]
    b_conv += [assistant(b2.text), user("the engine streams tokens")]
    alone = [await p.ask(p.plain, a_conv), await p.ask(p.plain, b_conv)]
    together = await asyncio.gather(p.ask(p.cached, a_conv), p.ask(p.cached, b_conv))
    assert [r.text for r in together] == [r.text for r in alone]
    assert together[0].usage.cached_tokens >= a2.usage.prompt_tokens
    assert together[1].usage.cached_tokens >= b2.usage.prompt_tokens
    assert p.cached._worker.snapshot().models[0].max_running_seen >= 2


async def cached_entry_longer_than_the_prompt(p: Pair, conversation: list[Message]) -> None:
    # The cache holds the whole follow-up turn; asking the first turn again trims it to that prefix.
    a = await p.both(conversation[:1])
    assert a.usage.cached_tokens == a.usage.prompt_tokens - 1


async def unload_and_reload(p: Pair, conversation: list[Message]) -> None:
    assert p.cached.memory().prompt_cache_entries > 0
    assert await p.cached.unload(p.model) is True
    assert p.cached.memory().prompt_cache_entries == 0
    assert p.cached.memory().prompt_cache_bytes == 0
    a = await p.both(conversation)
    assert a.usage.cached_tokens == 0  # the caches went with the model


async def all_scenarios(p: Pair) -> None:
    conversation, _ = await follow_up_turn(p)
    await edited_earlier_message(p, conversation)
    await different_system_prompt(p)
    await interleaved_conversations(p)
    await cached_entry_longer_than_the_prompt(p, conversation)
    await unload_and_reload(p, conversation)


async def test_the_cache_never_changes_a_greedy_answer_tiny(tiny_models_dir: Path, tmp_path: Path) -> None:
    p = make_pair(tiny_models_dir, tmp_path, "tiny-llama-mlx")
    try:
        await all_scenarios(p)
    finally:
        await p.cached.aclose()
        await p.plain.aclose()


@pytest.mark.demo
async def test_the_cache_never_changes_a_greedy_answer_demo(demo_model_path: Path, tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    (models / demo_model_path.name).symlink_to(demo_model_path)
    p = make_pair(models, tmp_path, "demo", max_tokens=20)
    try:
        await all_scenarios(p)
    finally:
        await p.cached.aclose()
        await p.plain.aclose()


# ---------------------------------------------------------------- the setting and the memory budget


def engine_with(models_dir: Path, tmp_path: Path, **kw) -> LocalEngine:
    return LocalEngine(EngineConfig(data_dir=tmp_path / "data", model_dirs=[models_dir], scan_hf_cache=False, **kw))


async def two_turns(engine: LocalEngine, model: str = "tiny-llama-mlx",
                    opener: str = "Hello world") -> tuple[list[Message], ChatResult]:
    """A first turn, then its follow-up; returns the follow-up's messages and answer."""
    first = [user(opener)]
    a1 = await collect(engine.stream(ChatRequest(model=model, messages=first, temperature=0, max_tokens=12)))
    follow = [*first, assistant(a1.text), user("And then?")]
    return follow, await collect(engine.stream(ChatRequest(model=model, messages=follow, temperature=0, max_tokens=12)))


async def test_zero_turns_caching_off(tiny_models_dir: Path, tmp_path: Path) -> None:
    engine = engine_with(tiny_models_dir, tmp_path, prompt_cache_bytes=0)
    try:
        _, second = await two_turns(engine)
        assert second.usage.cached_tokens == 0
        mem = engine.memory()
        assert (mem.prompt_cache_bytes, mem.prompt_cache_entries, mem.prompt_cache_limit_bytes) == (0, 0, 0)
    finally:
        await engine.aclose()


async def test_caches_count_in_the_memory_snapshot(tiny_models_dir: Path, tmp_path: Path) -> None:
    engine = engine_with(tiny_models_dir, tmp_path, prompt_cache_bytes=2**20)
    try:
        _, second = await two_turns(engine)
        assert second.usage.cached_tokens > 0
        mem = engine.memory()
        assert mem.prompt_cache_entries >= 1 and 0 < mem.prompt_cache_bytes <= 2**20
        [model] = mem.loaded
        assert mem.used_bytes == model.bytes + mem.prompt_cache_bytes
        assert mem.prompt_cache_limit_bytes == 2**20
    finally:
        await engine.aclose()


async def test_the_byte_limit_evicts_the_least_recently_used_conversation(tiny_models_dir: Path,
                                                                          tmp_path: Path) -> None:
    probe = engine_with(tiny_models_dir, tmp_path)
    try:
        await two_turns(probe, opener="The quick brown fox")
        one_conversation = probe.memory().prompt_cache_bytes
    finally:
        await probe.aclose()
    # Room for about one conversation: the second evicts the first.
    engine = engine_with(tiny_models_dir, tmp_path, prompt_cache_bytes=int(one_conversation * 1.5))
    try:
        follow, first = await two_turns(engine, opener="The quick brown fox")
        await two_turns(engine, opener="Numbers 0 1 2 3 4 5 6 7 8 9")
        assert engine.memory().prompt_cache_bytes <= int(one_conversation * 1.5)
        request = ChatRequest(model="tiny-llama-mlx", messages=follow, temperature=0, max_tokens=12)
        again = await collect(engine.stream(request))
        # Its conversation was evicted: only the chat template's opening can match the other entry.
        assert again.text == first.text
        assert again.usage.cached_tokens < first.usage.cached_tokens
    finally:
        await engine.aclose()


async def test_caches_are_evicted_before_any_model(tiny_models_dir: Path, tmp_path: Path) -> None:
    probe = engine_with(tiny_models_dir, tmp_path)
    try:
        await probe.load("tiny-llama-mlx")
        await probe.load("tiny-llama")
        models_bytes = probe.memory().model_bytes
        await two_turns(probe)
        cache_bytes = probe.memory().prompt_cache_bytes
        assert cache_bytes > 0
    finally:
        await probe.aclose()
    engine = engine_with(tiny_models_dir, tmp_path, prompt_cache_bytes=2**30)
    try:
        await engine.load("tiny-llama-mlx")
        await engine.load("tiny-llama")
        # Now both models fit with a little room for caches (the budget is read live; loading under
        # it would involve the load-time size estimates): the caches are squeezed, never a model.
        budget = engine.config.memory_budget_bytes = models_bytes + int(cache_bytes * 1.5)
        await two_turns(engine)
        await two_turns(engine, opener="alpha beta gamma delta")
        mem = engine.memory()
        assert {m.id for m in mem.loaded} == {"tiny-llama", "tiny-llama-mlx"}
        assert mem.used_bytes <= budget
        assert 0 < mem.prompt_cache_bytes <= int(cache_bytes * 1.5)
    finally:
        await engine.aclose()


async def test_loading_a_model_drops_caches_first(tiny_models_dir: Path, tmp_path: Path) -> None:
    probe = engine_with(tiny_models_dir, tmp_path)
    try:
        await two_turns(probe, "tiny-llama-mlx")
        a_bytes, cache_bytes = probe.memory().model_bytes, probe.memory().prompt_cache_bytes
        await probe.load("tiny-llama")
        b_bytes = probe.memory().model_bytes - a_bytes
        b_estimate = probe.resolve("tiny-llama").est_memory_bytes
    finally:
        await probe.aclose()
    # Both models fit only if most of the caches go.
    budget = a_bytes + max(b_bytes, b_estimate) + cache_bytes // 3
    engine = engine_with(tiny_models_dir, tmp_path, memory_budget_bytes=budget, prompt_cache_bytes=2**30)
    try:
        await two_turns(engine, "tiny-llama-mlx")
        assert engine.memory().prompt_cache_bytes == cache_bytes
        await engine.load("tiny-llama")
        mem = engine.memory()
        assert {m.id for m in mem.loaded} == {"tiny-llama", "tiny-llama-mlx"}
        assert mem.prompt_cache_bytes < cache_bytes
        assert mem.used_bytes <= budget
    finally:
        await engine.aclose()
