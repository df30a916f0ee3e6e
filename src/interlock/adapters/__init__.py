"""Agent entry points: every way an agent acts passes the same gate.

    from interlock.adapters.sdk import Agent, governed

* :mod:`interlock.adapters.sdk` — ``@gate.governed`` and ``gate.agent(principal, capability)``:
  governed Python functions, per-agent capabilities, delegation, automatic lineage.
* :mod:`interlock.adapters.langchain` — wrap a LangChain ``BaseTool`` (needs ``langchain-core``,
  ``pip install 'interlock[langchain]'``).
* :mod:`interlock.adapters.openai_agents` — wrap an OpenAI Agents SDK ``FunctionTool`` (needs
  ``openai-agents``, ``pip install 'interlock[openai-agents]'``).

The framework adapters are not imported here, so the SDK works without the frameworks.
"""

from __future__ import annotations
