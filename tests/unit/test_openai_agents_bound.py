"""The OpenAI Agents adapter reaches one private SDK class; it is bound to the releases the tests
cover and refuses any other loudly (issue 10: no silent reach-in across a library boundary)."""

from __future__ import annotations

import pytest

from interlock.adapters import openai_agents


def test_the_installed_release_is_the_supported_one() -> None:
    cls = openai_agents._failure_invoker()
    assert cls.__name__ == "_FailureHandlingFunctionToolInvoker"


@pytest.mark.parametrize("release", ["0.25.0", "0.23.9", "1.0.0"])
def test_another_release_fails_loudly(monkeypatch: pytest.MonkeyPatch, release: str) -> None:
    monkeypatch.setattr(openai_agents, "version", lambda _name: release)
    with pytest.raises(ImportError, match=f"supports openai-agents 0.24.x; {release}"):
        openai_agents._failure_invoker()
