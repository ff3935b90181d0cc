"""Rule matching: every tie-break, globs, regexes, disabled rules, the default route, explain()."""

from __future__ import annotations

import pytest

from router.rules import Rule, RuleError, Step, explain, literal_chars, match, order, validate_rule


def rule(pattern: str, id: int, backend: str = "b", **kw) -> Rule:
    return Rule(pattern=pattern, backend=backend, id=id, **kw)


def test_exact_beats_any_pattern_even_with_lower_priority() -> None:
    rules = [rule("gpt-*", 1, priority=100), rule("gpt-4o", 2, priority=-5), rule("re:gpt-.*", 3, priority=50)]
    assert match(rules, "gpt-4o").id == 2


def test_higher_priority_wins_among_patterns() -> None:
    rules = [rule("gpt-4*", 1, priority=1), rule("gpt-*", 2, priority=5)]
    assert match(rules, "gpt-4o").id == 2


def test_more_specific_pattern_wins_at_equal_priority() -> None:
    rules = [rule("*", 1), rule("gpt-*", 2), rule("gpt-4?", 3)]
    assert match(rules, "gpt-4o").id == 3
    assert literal_chars("gpt-4?") == 5 and literal_chars("gpt-*") == 4 and literal_chars("[ab]x*") == 1


def test_lower_id_breaks_the_last_tie() -> None:
    rules = [rule("claude-*", 7), rule("claude-?*", 3)]
    assert match(rules, "claude-3").id == 3


def test_regex_fullmatch_and_its_specificity() -> None:
    r = rule(r"re:llama-\d+b", 1)
    assert r.matches("llama-8b") and not r.matches("llama-8b-instruct") and not r.matches("xllama-8b")
    assert literal_chars(r"re:llama-\d+b") == 7
    assert literal_chars(r"re:a\.b") == 3


def test_glob_character_sets_and_case() -> None:
    r = rule("qwen[23]-*", 1)
    assert r.matches("qwen2-7b") and r.matches("qwen3-1b") and not r.matches("qwen4-7b")
    assert not rule("GPT-*", 2).matches("gpt-4o")


def test_disabled_rules_never_match() -> None:
    assert match([rule("gpt-4o", 1, enabled=False)], "gpt-4o") is None


def test_validation_reasons() -> None:
    with pytest.raises(RuleError, match="invalid regular expression"):
        validate_rule(Rule("re:gpt-(", "b"))
    with pytest.raises(RuleError, match="must not be empty"):
        validate_rule(Rule("  ", "b"))
    with pytest.raises(RuleError, match="unknown backend 'nope'"):
        validate_rule(Rule("x", "local", fallbacks=[Step("nope")]), known_backends={"local"})
    with pytest.raises(RuleError, match="priority"):
        validate_rule(Rule("x", "local", priority=5000))
    validate_rule(Rule("re:ok.*", "local"), known_backends={"local"})


def test_explain_lists_beaten_rules_with_reasons_and_the_chain() -> None:
    rules = [
        rule("gpt-*", 1, backend="openai", fallbacks=[Step("anthropic", "claude-x"), Step("ghost")]),
        rule("*", 2, backend="local"),
        rule("gpt-4o", 3, backend="local", enabled=False),
        rule("gpt-?o", 4, backend="local", priority=-1),
    ]
    ex = explain(rules, "gpt-4o", "local", {"local": "closed", "openai": "open", "anthropic": "closed"})
    assert ex.rule.id == 1 and not ex.default_used
    reasons = {r.id: why for r, why in ex.beaten}
    assert reasons == {2: "more specific: 4 literal chars > 0", 3: "disabled", 4: "priority 0 > -1"}
    assert [(s.backend, s.model, s.skipped, s.reason) for s in ex.chain] == [
        ("openai", "gpt-4o", True, "breaker open"),
        ("anthropic", "claude-x", False, None),
        ("ghost", "gpt-4o", True, "no such backend"),
    ]


def test_default_route_when_nothing_matches() -> None:
    ex = explain([rule("gpt-*", 1)], "mistral", "local", {"local": "closed"})
    assert ex.rule is None and ex.default_used
    assert [(s.backend, s.model) for s in ex.chain] == [("local", "mistral")]


def test_order_is_the_match_order() -> None:
    rules = [rule("*", 1), rule("a", 2, priority=-9), rule("a*", 3, priority=2)]
    assert [r.id for r in order(rules)] == [2, 3, 1]


def test_rename_target_model() -> None:
    r = rule("fast", 1, backend="local", model="demo")
    assert [(s.backend, s.model) for s in r.chain("fast")] == [("local", "demo")]


def test_explain_reasons_for_exact_and_lower_id() -> None:
    rules = [rule("gpt-*", 7), rule("gpt-4o", 9, priority=-3), rule("gpt-*", 2)]
    ex = explain(rules, "gpt-4o", "local", {"local": "closed"})
    assert ex.rule.id == 9
    assert {r.id: why for r, why in ex.beaten} == {2: "exact match beats pattern", 7: "exact match beats pattern"}
    ex = explain(rules[::2], "gpt-4o", "local", {"local": "closed"})
    assert ex.rule.id == 2
    assert [(r.id, why) for r, why in ex.beaten] == [(7, "lower id: 2 < 7")]


def test_unknown_fallback_backend_is_refused() -> None:
    with pytest.raises(RuleError, match="unknown backend 'ghost'"):
        validate_rule(Rule("x", "local", fallbacks=[Step("ghost")]), known_backends={"local", "openai"})
    with pytest.raises(RuleError, match=r"invalid regular expression: .*"):
        validate_rule(Rule("re:(unclosed", "local"))


def test_cloud_routing_off_skips_every_step_but_the_local_engine() -> None:
    rules = [Rule("m", "openai", id=1, fallbacks=[Step("local"), Step("anthropic"), Step("gone")])]
    states = {"local": "closed", "openai": "open", "anthropic": "closed"}
    on = explain(rules, "m", "local", states)
    assert [(s.backend, s.skipped, s.reason) for s in on.chain] == [
        ("openai", True, "breaker open"),
        ("local", False, None),
        ("anthropic", False, None),
        ("gone", True, "no such backend"),
    ]
    off = explain(rules, "m", "local", states, cloud_routing=False)
    assert [(s.backend, s.skipped, s.reason) for s in off.chain] == [
        ("openai", True, "cloud routing is off"),
        ("local", False, None),
        ("anthropic", True, "cloud routing is off"),
        ("gone", True, "no such backend"),
    ]
    assert "anthropic/m (skipped: cloud routing is off)" in off.summary()
