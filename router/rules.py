"""Routing rules: which backend (and model name) serves a requested model, and what comes next.

Patterns: an exact name; a glob (`*`, `?`, `[...]`, case-sensitive); or `re:<regex>` (full match).
Among the enabled rules that match a name, the winner is decided by, in order:
  1. an exact pattern beats any glob or regex;
  2. higher priority;
  3. the more specific pattern: more literal characters (glob wildcards and bracket sets, and
     regex metacharacters and escapes, don't count);
  4. lower id (the older rule).
No rule matches: the default route (the default backend with the requested name).
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

REGEX_PREFIX = "re:"
LOCAL_BACKEND = "local"
CLOUD_OFF = "cloud routing is off"
_GLOB_CHARS = set("*?[")


@dataclass(frozen=True)
class Step:
    backend: str
    model: str | None = None  # None: the requested name

    def __str__(self) -> str:
        return f"{self.backend}:{self.model}" if self.model else self.backend

    @classmethod
    def parse(cls, text: str) -> Step:
        backend, _, model = text.partition(":")
        if not backend.strip():
            raise RuleError(f"fallback {text!r}: expected BACKEND or BACKEND:MODEL")
        return cls(backend.strip(), model.strip() or None)


@dataclass
class Rule:
    pattern: str
    backend: str
    model: str | None = None
    fallbacks: list[Step] = field(default_factory=list)
    priority: int = 0
    enabled: bool = True
    note: str = ""
    id: int | None = None
    created_at: float | None = None
    updated_at: float | None = None

    @property
    def kind(self) -> str:
        if self.pattern.startswith(REGEX_PREFIX):
            return "regex"
        return "glob" if _GLOB_CHARS & set(self.pattern) else "exact"

    def matches(self, model: str) -> bool:
        kind = self.kind
        if kind == "exact":
            return self.pattern == model
        if kind == "glob":
            return fnmatch.fnmatchcase(model, self.pattern)
        return _compiled(self.pattern[len(REGEX_PREFIX) :]).fullmatch(model) is not None

    @property
    def specificity(self) -> int:
        return literal_chars(self.pattern)

    def chain(self, requested: str) -> list[Step]:
        return [Step(self.backend, self.model or requested)] + [
            Step(s.backend, s.model or requested) for s in self.fallbacks
        ]


class RuleError(ValueError):
    """A rule cannot be saved; the message says why."""


_regex_cache: dict[str, re.Pattern[str]] = {}


def _compiled(expr: str) -> re.Pattern[str]:
    pat = _regex_cache.get(expr)
    if pat is None:
        pat = _regex_cache[expr] = re.compile(expr)
    return pat


def literal_chars(pattern: str) -> int:
    if pattern.startswith(REGEX_PREFIX):
        expr = pattern[len(REGEX_PREFIX) :]
        # Escapes (\d, \.) and metacharacters are not literals; an escaped metachar is one literal.
        count, i = 0, 0
        while i < len(expr):
            ch = expr[i]
            if ch == "\\" and i + 1 < len(expr):
                count += 0 if expr[i + 1].isalnum() else 1
                i += 2
                continue
            if ch not in ".^$*+?{}[]|()":
                count += 1
            i += 1
        return count
    count, in_set = 0, False
    for ch in pattern:
        if in_set:
            in_set = ch != "]"
        elif ch == "[":
            in_set = True
        elif ch not in "*?":
            count += 1
    return count


def validate_rule(rule: Rule, known_backends: Collection[str] | None = None) -> None:
    if not rule.pattern or not rule.pattern.strip():
        raise RuleError("pattern: must not be empty")
    if rule.pattern != rule.pattern.strip():
        raise RuleError("pattern: must not start or end with spaces")
    if rule.pattern.startswith(REGEX_PREFIX):
        expr = rule.pattern[len(REGEX_PREFIX) :]
        if not expr:
            raise RuleError("pattern: 're:' must be followed by a regular expression")
        try:
            re.compile(expr)
        except re.error as exc:
            raise RuleError(f"pattern: invalid regular expression: {exc}") from None
    if not rule.backend or not rule.backend.strip():
        raise RuleError("backend: must not be empty")
    if not -1000 <= rule.priority <= 1000:
        raise RuleError("priority: must be between -1000 and 1000")
    if known_backends is not None:
        for b in [rule.backend, *(s.backend for s in rule.fallbacks)]:
            if b not in known_backends:
                raise RuleError(f"backend: unknown backend {b!r} (known: {', '.join(sorted(known_backends))})")


def rules_using(rules: list[Rule], backend: str) -> list[tuple[Rule, str]]:
    """The rules (enabled or not) that name `backend`, each with how: "target" or "fallback"."""
    found: list[tuple[Rule, str]] = []
    for r in rules:
        if r.backend == backend:
            found.append((r, "target"))
        elif any(s.backend == backend for s in r.fallbacks):
            found.append((r, "fallback"))
    return found


def _rank(rule: Rule) -> tuple[int, int, int, int]:
    """Sort key: smaller is better."""
    newest = rule.id if rule.id is not None else 1 << 62
    return (0 if rule.kind == "exact" else 1, -rule.priority, -rule.specificity, newest)


def order(rules: list[Rule]) -> list[Rule]:
    """Rules in the order a name is tried against them (for display: 'match order')."""
    return sorted(rules, key=_rank)


def match(rules: list[Rule], model: str) -> Rule | None:
    candidates = [r for r in rules if r.enabled and r.matches(model)]
    return min(candidates, key=_rank) if candidates else None


def _why(winner: Rule, loser: Rule) -> str:
    if winner.kind == "exact" and loser.kind != "exact":
        return "exact match beats pattern"
    if winner.priority != loser.priority:
        return f"priority {winner.priority} > {loser.priority}"
    if winner.specificity != loser.specificity:
        return f"more specific: {winner.specificity} literal chars > {loser.specificity}"
    return f"lower id: {winner.id} < {loser.id}"


@dataclass
class ChainStep:
    backend: str
    model: str
    state: str  # breaker state, "missing" for an unknown backend
    skipped: bool = False
    reason: str | None = None


@dataclass
class Explanation:
    model: str
    rule: Rule | None
    beaten: list[tuple[Rule, str]]
    chain: list[ChainStep]
    default_used: bool

    def summary(self) -> str:
        head = f"rule #{self.rule.id} {self.rule.pattern!r}" if self.rule else "no rule matched: default route"
        steps = " -> ".join(
            f"{s.backend}/{s.model}" + (f" (skipped: {s.reason})" if s.skipped else "") for s in self.chain
        )
        return f"{self.model}: {head}; {steps}"


def explain(
    rules: list[Rule],
    model: str,
    default_backend: str,
    breaker_states: Mapping[str, str],
    *,
    cloud_routing: bool = True,
) -> Explanation:
    """The winning rule and the attempt chain. With cloud routing off, every step on a backend other
    than the local engine is skipped (CLOUD_OFF): no prompt leaves the machine."""
    winner = match(rules, model)
    beaten: list[tuple[Rule, str]] = []
    for r in order(rules):
        if r is winner or not r.matches(model):
            continue
        beaten.append((r, "disabled" if not r.enabled else _why(winner, r)))  # type: ignore[arg-type]
    steps = winner.chain(model) if winner else [Step(default_backend, model)]
    chain: list[ChainStep] = []
    for s in steps:
        state = breaker_states.get(s.backend)
        if state is None:
            chain.append(ChainStep(s.backend, s.model or model, "missing", True, "no such backend"))
        elif not cloud_routing and s.backend != LOCAL_BACKEND:
            chain.append(ChainStep(s.backend, s.model or model, state, True, CLOUD_OFF))
        elif state == "open":
            chain.append(ChainStep(s.backend, s.model or model, state, True, "breaker open"))
        else:
            chain.append(ChainStep(s.backend, s.model or model, state))
    return Explanation(model=model, rule=winner, beaten=beaten, chain=chain, default_used=winner is None)
