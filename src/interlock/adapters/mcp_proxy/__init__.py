"""The MCP governance proxy behind ``interlock mcp-proxy``: an MCP server to the agent's client,
an MCP client to the upstream server, and the gate in between.

    gate = interlock.open(".interlock")
    upstream = Upstream(command=("python", "-m", "mcp_server_time"))
    options = ProxyOptions(principal="spiffe://acme.test/agent/researcher",
        capability=token)
    run_proxy(gate, upstream, options)     # MCP on stdin/stdout until EOF

What is governed (DESIGN §1: an MCP request is an action like any other):

==================  ======================  ==================================  ===============
MCP request         action                  resource                            args
==================  ======================  ==================================  ===============
the proxy session   ``mcp.session``         ``McpServer::"<server>"``           ``transport``,
                                                                                ``command`` or
                                                                                ``url``
``tools/call``      ``mcp.tools/call``      ``McpTool::"<server>/<tool>"``      the arguments
``resources/read``  ``mcp.resources/read``  ``McpResource::"<server>/<uri>"``   ``{uri}``
``prompts/get``     ``mcp.prompts/get``     ``McpPrompt::"<server>/<prompt>"``  the arguments
==================  ======================  ==================================  ===============

``<server>`` is ``--name`` or else the upstream's ``serverInfo.name`` (a name the upstream
chooses for itself: pin it with ``--name`` when policies rely on it).

* **The session is an execution.** It is admitted (decision, ``exec.start``) before anything is
  served — before the upstream is even started when the name is given — and re-verified while
  it runs (:class:`~interlock.runtime.execution.Execution`); it ends with ``exec.end`` (or
  ``exec.terminated``). Every governed request names it as ``parent``: once the session is
  terminated (its capability revoked, its principal quarantined, ...), every request in it is
  denied (``LINEAGE_BROKEN``, unless an earlier validator already denies it) and listing is
  refused.
* **Each governed request is an execution too** (I1): the allow decision and ``exec.start``
  are committed before the request is forwarded; ``exec.end`` carries ``result_sha256`` (the
  SHA-256 of the RFC 8785 bytes of the upstream's result, in its JSON form) or the failure.
  The request is re-verified while it waits for the upstream and cancelled (and recorded as
  ``exec.terminated``) when its authorization stops holding. Only the admission is a durable
  commit on the critical path: ``exec.end`` is committed after the answer by a background
  writer (:class:`~interlock.adapters.mcp_proxy.ending.EndRecorder`), once the next request's
  admission is committed (or after 50 ms without one), drained before the
  session ends; an end that cannot be committed leaves the run ``running`` until
  ``reap_orphans`` terminates it (what an attacker gains then: an answer whose digest is not on
  the ledger; the allow and the start always are).
* **On stdio, ``tools/call`` bypasses the SDK server stack** once the handshake is done
  (:class:`~interlock.adapters.mcp_proxy.relay.ToolCallRelay`): same checks, same governance,
  answered directly; everything else goes to the SDK server.
* **A denial is never forwarded.** ``tools/call`` answers a tool error (``isError``);
  ``resources/read`` and ``prompts/get`` answer the JSON-RPC error :data:`DENIED_ERROR_CODE`.
  The text names the reason codes and the decision hash, e.g. ``denied by Interlock:
  POLICY_NO_PERMIT: ... (decision <sha256>, request <id>)``. The details of capability
  failures stay on the ledger (STYLE: the agent learns only the code).
* **Upstream failures are answered, never retried**: an upstream that does not answer within
  ``timeout`` (``REQUEST_TIMEOUT``), or that died (``CONNECTION_CLOSED``: every later request
  is answered at once, not forwarded, and still decided and recorded), or that answered
  something that is not MCP. An upstream JSON-RPC error is passed through unchanged.
* **A ``tools/call`` must name a listed tool, with arguments its schema accepts.** Before any
  decision, a call whose name is not exactly one the upstream listed (:class:`ToolCatalogue`:
  every page; listed again after ``notifications/tools/list_changed``; the proxy lists at
  session start) or whose arguments fail the tool's ``inputSchema`` (compiled once per listing,
  with bounds against hostile schemas: :func:`compile_input_schema`) is denied
  ``MALFORMED_REQUEST`` — recorded like any denial (``gate.refuse``, stage ``gate``), answered
  as a tool error naming the failing path, and never forwarded. MALFORMED_REQUEST, because the
  request does not have the shape the server declared (DESIGN §2: the request-shape check comes
  first); no policy or capability could make it valid.
* Listing (``tools/list``, ``resources/list``, ``resources/templates/list``, ``prompts/list``)
  reads metadata and is not an action: it is forwarded without a decision while the session is
  authorized. ``tools/list`` is answered from a fresh complete listing, in one page (a cursor
  from the client is invalid), without the tools that cannot be called. With
  ``hide_denied``, ``tools/list`` keeps only the tools the capability and policy could allow,
  probed with empty arguments through ``gate.reverify`` (pure: nothing is
  recorded, so listing does not fill the ledger). A tool that policy allows only for some
  arguments is therefore hidden; a hidden tool that is called anyway is decided like any other.
* Not proxied: completions, subscriptions, logging, notifications from the upstream (its
  ``tools/list_changed`` only makes the proxy list again), and requests from the upstream to
  the client (sampling, elicitation, roots).
* A continued request (``inputResponses`` / ``requestState``, answering an upstream's
  ``InputRequiredResult``) is decided with their RFC 8785 digests as the request's ``context``
  (:func:`continuation_context`): what is forwarded is what was decided and recorded.
* Containment: the spawned upstream gets the proxy's environment without any ``INTERLOCK_*``
  variable, but it runs as the same OS user (it could read the home's files: run untrusted
  upstreams as another user). ``--listen`` serves only the clients that present the bearer
  token generated at start (:class:`ListenToken`: 401 otherwise, nothing decided or forwarded),
  and always enables DNS-rebinding protection (:func:`transport_security`). A stdio client
  line longer than :data:`MAX_LINE_BYTES` ends the session (:class:`ClientLineTooLong`)."""

from interlock.adapters.mcp_proxy.auth import ListenToken, require_bearer
from interlock.adapters.mcp_proxy.catalogue import MAX_TOOL_PAGES, MAX_TOOLS, ToolCatalogue
from interlock.adapters.mcp_proxy.ending import EndRecorder
from interlock.adapters.mcp_proxy.forwarding import McpProxy
from interlock.adapters.mcp_proxy.governance import continuation_context, denial_text, result_digest
from interlock.adapters.mcp_proxy.options import (
    DEFAULT_STARTUP_TIMEOUT_S,
    DEFAULT_TIMEOUT_S,
    DENIED_ERROR_CODE,
    MAX_LINE_BYTES,
    PROMPT_ACTION,
    RESOURCE_ACTION,
    SESSION_ACTION,
    TOOL_ACTION,
    ClientLineTooLong,
    ProxyOptions,
    Upstream,
    UpstreamError,
    check_server_name,
)
from interlock.adapters.mcp_proxy.relay import ToolCallRelay
from interlock.adapters.mcp_proxy.schema import UnsafeSchema, compile_input_schema
from interlock.adapters.mcp_proxy.session import open_proxy
from interlock.adapters.mcp_proxy.transport import (
    bind,
    run_proxy,
    serve_http,
    serve_stdio,
    transport_security,
)
from interlock.adapters.mcp_proxy.upstream import ANSWER_TOO_LARGE_CODE, DEFAULT_MAX_ANSWER_BYTES

__all__ = [
    "ANSWER_TOO_LARGE_CODE",
    "DEFAULT_MAX_ANSWER_BYTES",
    "DEFAULT_STARTUP_TIMEOUT_S",
    "DEFAULT_TIMEOUT_S",
    "DENIED_ERROR_CODE",
    "MAX_LINE_BYTES",
    "MAX_TOOLS",
    "MAX_TOOL_PAGES",
    "PROMPT_ACTION",
    "RESOURCE_ACTION",
    "SESSION_ACTION",
    "TOOL_ACTION",
    "ClientLineTooLong",
    "EndRecorder",
    "ListenToken",
    "McpProxy",
    "ProxyOptions",
    "ToolCallRelay",
    "ToolCatalogue",
    "UnsafeSchema",
    "Upstream",
    "UpstreamError",
    "bind",
    "check_server_name",
    "compile_input_schema",
    "continuation_context",
    "denial_text",
    "open_proxy",
    "require_bearer",
    "result_digest",
    "run_proxy",
    "serve_http",
    "serve_stdio",
    "transport_security",
]
