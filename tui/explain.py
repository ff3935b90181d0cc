"""Where a model name goes, in words: the winning rule and each step of the chain with its state.
Shared by the chat's route line and the Rules pane's explain box."""

from __future__ import annotations

from collections.abc import Collection

from rich.text import Text

from router.rules import CLOUD_OFF, Explanation

STATE_STYLES = {"closed": "green", "half-open": "yellow", "open": "red", "missing": "red"}


def step_problem(backend: str, model: str, state: str, local_names: Collection[str] | None) -> str | None:
    if state == "missing":
        return "no such backend"
    if backend == "local" and local_names is not None and model not in local_names and "/" not in model:
        return "no such local model"
    return None


def steps_text(ex: Explanation, local_names: Collection[str] | None = None) -> tuple[Text, int]:
    """The steps as " → openai/gpt-4o closed → local/demo", and how many of them can answer."""
    out = Text()
    usable = 0
    for step in ex.chain:
        out.append(" → ")
        label = f"{step.backend}/{step.model}"
        if step.skipped:
            out.append(label, style="strike")
            out.append(f" (skipped: {step.reason})", style="red")
            continue
        problem = step_problem(step.backend, step.model, step.state, local_names)
        out.append(label, style="bold" if not problem else "")
        if problem:
            out.append(f" ({problem})", style="red")
        else:
            usable += 1
            if step.backend != "local":
                out.append(f" {step.state}", style=STATE_STYLES.get(step.state, ""))
    return out, usable


def chain_text(ex: Explanation, local_names: Collection[str] | None = None, default_backend: str = "local") -> Text:
    """One line: "→ openai/gpt-4o closed → local/demo · rule #1 gpt-*"."""
    out, usable = steps_text(ex, local_names)
    out.append("  · ")
    if ex.rule is not None:
        out.append(f"rule #{ex.rule.id} {ex.rule.pattern}")
    else:
        out.append(f"no rule: default backend {default_backend}")
    if not usable:
        out.append("  · nothing here can answer", style="bold red")
    if any(s.reason == CLOUD_OFF for s in ex.chain):
        out.append("  · f9 turns cloud routing on")
    return out


def explanation_lines(ex: Explanation, local_names: Collection[str] | None, default_backend: str) -> Text:
    """The Rules pane's box: who wins, whom it beats and why, then the chain."""
    out = Text()
    if ex.rule is not None:
        out.append(f"rule #{ex.rule.id} ")
        out.append(ex.rule.pattern, style="bold")
        out.append(" wins")
    else:
        out.append(f"no rule matches: default route ({default_backend})")
    for rule, why in ex.beaten:
        out.append(f"\n  beats #{rule.id} {rule.pattern}: {why}")
    out.append("\nchain:")
    out.append_text(steps_text(ex, local_names)[0])
    return out
