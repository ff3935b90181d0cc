"""The model field: any name may be typed; completes from names the workbench knows."""

from __future__ import annotations

from collections.abc import Iterable

from textual.suggester import Suggester
from textual.widgets import Input, Static


class NameSuggester(Suggester):
    """Completes a prefix from a list that changes (local models, aliases, exact rules, recent names)."""

    def __init__(self) -> None:
        super().__init__(use_cache=False, case_sensitive=True)
        self.names: list[str] = []

    async def get_suggestion(self, value: str) -> str | None:
        if not value:
            return None
        for name in self.names:
            if name.startswith(value) and name != value:
                return name
        folded = value.casefold()
        for name in self.names:
            if name.casefold().startswith(folded) and name != value:
                return name
        return None


class ModelField(Input):
    """A free-text model name; the suggestion (shown dimmed) is taken with → or End."""

    DEFAULT_CSS = """
    ModelField { width: 30; }
    """

    def __init__(self, value: str = "", *, id: str | None = None, classes: str | None = None) -> None:
        self.names_suggester = NameSuggester()
        super().__init__(
            value,
            id=id,
            classes=classes,
            placeholder="model name",
            suggester=self.names_suggester,
            tooltip="model name; → takes the suggestion",
        )

    def set_names(self, names: Iterable[str]) -> None:
        seen: dict[str, None] = {}
        for name in names:
            if name:
                seen.setdefault(name, None)
        self.names_suggester.names = list(seen)

    @property
    def names(self) -> list[str]:
        return list(self.names_suggester.names)


class RouteLine(Static):
    """Where the name in the model field goes: the winning rule and each step with its breaker state."""

    DEFAULT_CSS = """
    RouteLine { height: auto; max-height: 3; color: $text-muted; padding: 0 1; }
    RouteLine.-problem { color: $warning; }
    """
