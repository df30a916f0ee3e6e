"""``interlock`` mcp-proxy, serve, demo and bench: the long-running entry points."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from interlock.cli.common import (
    EXIT_DENY,
    EXIT_OK,
    HomeOpt,
    JsonOpt,
    _emit_json,
    _fail,
    _gate,
    _read_token,
    app,
    err,
    out,
    parse_listen,
    parse_seconds,
)
from interlock.errors import Error


@app.command("mcp-proxy", context_settings={"allow_interspersed_args": False})
def mcp_proxy(
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="The upstream MCP server's command and arguments (after --), spoken to over"
            " stdio.",
            metavar="UPSTREAM_CMD",
            show_default=False,
        ),
    ] = None,
    capability: Annotated[
        str,
        typer.Option(
            envvar="INTERLOCK_CAPABILITY",
            help="Token or @file (or $INTERLOCK_CAPABILITY: keeps it out of ps). Never passed to"
            " the upstream.",
        ),
    ] = "",
    principal: Annotated[
        str | None,
        typer.Option(
            envvar="INTERLOCK_PRINCIPAL", help="SPIFFE ID (default $INTERLOCK_PRINCIPAL)."
        ),
    ] = None,
    upstream_url: Annotated[
        str | None,
        typer.Option(
            "--upstream-url", help="A streamable-HTTP upstream (instead of UPSTREAM_CMD)."
        ),
    ] = None,
    listen: Annotated[
        str | None,
        typer.Option(
            help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (loopback only;"
            " port 0 picks a free one, printed on stderr). Clients must send Authorization:"
            " Bearer <the token in --token-file>."
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="With --listen: where to write the bearer token generated at start (mode"
            " 0600; removed at exit). Default: HOME/run/mcp-proxy-<pid>.token.",
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option(
            help="The server name in McpServer/McpTool ids (default: the upstream's"
            " serverInfo.name; pin it when policies rely on it)."
        ),
    ] = None,
    parent: Annotated[
        str | None,
        typer.Option(
            envvar="INTERLOCK_EXECUTION_ID",
            help="Parent execution of the session (default $INTERLOCK_EXECUTION_ID).",
        ),
    ] = None,
    timeout: Annotated[
        str, typer.Option(help="How long to wait for each upstream answer: 30s, 500ms.")
    ] = "30s",
    startup_timeout: Annotated[
        str, typer.Option(help="How long the upstream may take to start and initialize.")
    ] = "60s",
    interval: Annotated[str, typer.Option(help="Re-verification interval: 1s, 200ms.")] = "1s",
    hide_denied: Annotated[
        bool,
        typer.Option(
            "--hide-denied",
            help="List only the tools the capability and policy could allow (probed with empty"
            " arguments, not recorded).",
        ),
    ] = False,
    max_answer_bytes: Annotated[
        int,
        typer.Option(
            "--max-answer-bytes",
            min=1024,
            help="The largest answer (one JSON-RPC message) read from a stdio upstream; a"
            " larger one ends its call with JSON-RPC error -32004 (default 4 MiB).",
        ),
    ] = 4 * 1024 * 1024,
    home: HomeOpt = None,
) -> None:
    """Serve MCP to an agent's client; govern every tools/call, resources/read and prompts/get.

    Each request is decided and recorded before it reaches the upstream server.

    Nothing is printed on stdout: in stdio mode it is the MCP channel.

    Exit: 0 the session ended; 1 session denied or upstream failed; 2 usage error.
    """
    from rich.markup import escape

    from interlock.adapters.mcp_proxy import (
        ListenToken,
        ProxyOptions,
        Upstream,
        UpstreamError,
        run_proxy,
    )
    from interlock.errors import Denied, UsageError

    if not principal:
        _fail("no principal: give --principal or set INTERLOCK_PRINCIPAL")
    if not capability:
        _fail("no capability: give --capability or set INTERLOCK_CAPABILITY")
    if capability.strip() == "-":
        _fail("--capability - is not available: stdin is the MCP channel (use @file)")
    if token_file is not None and listen is None:
        _fail("--token-file is for --listen")
    if bool(command) == (upstream_url is not None):
        _fail("give the upstream as -- UPSTREAM_CMD ARGS... or as --upstream-url (exactly one)")
    try:
        addr = parse_listen(listen) if listen is not None else None
        upstream = Upstream(command=tuple(command or ()), url=upstream_url)
        options = ProxyOptions(
            principal=principal,
            capability=_read_token(capability),
            name=name,
            parent=parent or None,
            timeout=parse_seconds(timeout),
            startup_timeout=parse_seconds(startup_timeout),
            interval=parse_seconds(interval),
            hide_denied=hide_denied,
            listen=listen,
            max_answer_bytes=max_answer_bytes,
        )
    except typer.BadParameter as exc:
        _fail(str(exc))
    except UsageError as exc:
        _fail(exc.diagnostics())

    def ready(proxy: Any, url: str | None) -> None:
        where = f"listening on {url}" if url else "serving MCP on stdio"
        if url and token_path is not None:
            where += f" (bearer token in {token_path})"
        server = f'McpServer::"{proxy.server_name}"'
        err.print(
            f"[bold green]interlock mcp-proxy:[/] session {proxy.session_id} for"
            f" {escape(str(principal))} on {escape(server)}, {escape(where)}",
            soft_wrap=True,
        )

    token: ListenToken | None = None
    token_path: Path | None = None
    with _gate(home) as gate:
        if addr is not None:
            # a new token every start; only its file's path is ever printed
            token = ListenToken.generate()
            token_path = token_file or gate.home.path / "run" / f"mcp-proxy-{os.getpid()}.token"
            try:
                token.write(token_path)
            except OSError as exc:
                _fail(f"cannot write the token file {token_path}: {exc.strerror or exc}")
        try:
            run_proxy(gate, upstream, options, listen=addr, token=token, on_ready=ready)
        except Denied as exc:
            d = exc.decision
            err.print(
                f"[bold red]interlock mcp-proxy: session denied[/] {escape(exc.message)}"
                f" [dim](decision {d.decision_hash}, request {d.request_id})[/]",
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_DENY) from None
        except UpstreamError as exc:
            err.print(
                f"[bold red]interlock mcp-proxy: upstream failed[/] {escape(exc.diagnostics())}",
                soft_wrap=True,
            )
            raise typer.Exit(EXIT_DENY) from None
        except UsageError as exc:
            _fail(exc.diagnostics())
        except OSError as exc:
            _fail(f"cannot listen on {listen}: {exc.strerror or exc}", EXIT_DENY)
        except Error as exc:
            err.print(
                f"[bold red]interlock mcp-proxy:[/] {escape(exc.diagnostics())}", soft_wrap=True
            )
            raise typer.Exit(EXIT_DENY) from None
        finally:
            if token is not None and token_path is not None:
                token.remove(token_path)


# -- end mcp-proxy ---------------------------------------------------------------------------------

# -- serve (issue 4 §4) ----------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[
        str, typer.Option(help="Address to bind. Anything but loopback exposes the API.")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=0, max=65535)] = 8750,
    log_level: Annotated[
        str, typer.Option(help="critical, error, warning, info or debug.")
    ] = "info",
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            "--allowed-host",
            help="Also accept this name in the Host header (repeatable; '*.example.com' for "
            "subdomains, '*' for any). Always accepted: localhost, 127.0.0.1, [::1] and --host.",
        ),
    ] = None,
    execution_lease: Annotated[
        float | None,
        typer.Option(
            help="Terminate an HTTP-started execution whose runner has not reported (GET with "
            "its capability, or the PATCH end) for this many seconds. Default: no lease.",
            min=0.1,
        ),
    ] = None,
    console_public: Annotated[
        bool,
        typer.Option(
            "--console-public",
            help="Publish the Governance Console, Health Dashboard and Lineage Explorer "
            "read-only without a credential (acting still needs an admin session).",
        ),
    ] = False,
    console_redact: Annotated[
        str,
        typer.Option(
            help="With --console-public: comma-separated fields to redact for anonymous "
            "readers: principal, resource, args.",
        ),
    ] = "",
    ext_authz: Annotated[
        str | None,
        typer.Option(
            "--ext-authz",
            help="Also serve Envoy external authorization (gRPC, v3) on HOST:PORT "
            "(plaintext: keep it beside Envoy). docs/enforcement.md.",
        ),
    ] = None,
    ext_authz_principal: Annotated[
        str,
        typer.Option(
            help="Where ext_authz takes the principal: 'spiffe' (the mTLS peer's URI SAN) or "
            "'header:NAME' (a header a trusted component sets).",
        ),
    ] = "spiffe",
    ext_authz_capability_header: Annotated[
        str, typer.Option(help="The request header holding the agent's capability.")
    ] = "x-interlock-capability",
    ext_authz_header: Annotated[
        list[str] | None,
        typer.Option(
            "--ext-authz-header",
            help="A request header to pass to policies as args.headers (repeatable).",
        ),
    ] = None,
    admission: Annotated[
        str | None,
        typer.Option(
            "--admission",
            help="Also serve the Kubernetes validating admission webhook over HTTPS on HOST:PORT"
            " (POST /v1/admission, AdmissionReview v1). docs/enforcement.md.",
        ),
    ] = None,
    admission_cert: Annotated[
        Path | None,
        typer.Option(
            help="The webhook's PEM certificate (chain). Without it and --admission-key: a CA"
            " and certificate generated in HOME/tls/admission/.",
        ),
    ] = None,
    admission_key: Annotated[
        Path | None, typer.Option(help="The PEM private key of --admission-cert.")
    ] = None,
    admission_dns: Annotated[
        list[str] | None,
        typer.Option(
            "--admission-dns",
            help="A DNS name of the generated certificate (repeatable; default"
            " interlock.interlock-system.svc; 127.0.0.1 is always in it).",
        ),
    ] = None,
    admission_trust_domain: Annotated[
        str,
        typer.Option(help="SPIFFE trust domain of the principals Kubernetes users map to."),
    ] = "cluster.local",
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="Worker processes serving the same home and address (SO_REUSEPORT), to use"
            " more than one core. Above 1: no --ext-authz, --admission, --execution-lease,"
            " --console-public; HTTP-started executions, policy uploads and the browser console"
            " are refused (docs/agents.md, 'Worker processes'). A worker that exits stops them"
            " all (exit 1).",
        ),
    ] = 1,
    print_ca_bundle: Annotated[
        bool,
        typer.Option(
            "--print-ca-bundle",
            help="Make (or renew) the generated webhook certificate for --admission-dns, print"
            " the caBundle (the CA's PEM, base64) for the ValidatingWebhookConfiguration, and"
            " exit without serving.",
        ),
    ] = False,
    home: HomeOpt = None,
) -> None:
    """Serve the HTTP API (decisions, executions, ledger, C2SP tiles, admin, /readyz, /metrics)
    and the browser tools under /console until interrupted; with --ext-authz and --admission,
    Envoy's external authorization and the Kubernetes admission webhook too. See
    docs/agents.md, "HTTP API", docs/console.md and docs/enforcement.md."""
    from rich.markup import escape

    from interlock.server import serve as serve_http
    from interlock.server.guards import allowed_hosts, is_loopback

    if log_level not in ("critical", "error", "warning", "info", "debug"):
        _fail(f"--log-level must be critical, error, warning, info or debug, not {log_level!r}")
    if workers < 1:
        _fail(f"--workers must be at least 1 (one process per core is a good start), not {workers}")
    if workers > 1:
        # each keeps state in one process's memory: a second worker would not see it
        single = {
            "--ext-authz": ext_authz is not None,
            "--admission": admission is not None,
            "--execution-lease": execution_lease is not None,
            "--console-public": console_public,
            "--print-ca-bundle": print_ca_bundle,
        }
        given = [name for name, on in single.items() if on]
        if given:
            _fail(
                f"{', '.join(given)} cannot be used with --workers {workers}: serve them with"
                " --workers 1 (docs/agents.md, 'Worker processes')"
            )
    extra = allowed_host or []
    try:
        allowed_hosts(host, extra)
    except ValueError as exc:
        _fail(f"--host/--allowed-host: {escape(str(exc))}")
    from interlock.server.console.session import ConsoleConfig

    redact = frozenset(f.strip() for f in console_redact.split(",") if f.strip())
    if redact and not console_public:
        _fail("--console-redact applies to --console-public: add --console-public or drop it")
    try:
        console = ConsoleConfig(public=console_public, redact=redact)
    except ValueError as exc:
        _fail(f"--console-redact: {escape(str(exc))}")
    authz = None
    if ext_authz is not None:
        from interlock.server.enforce.envoy import ExtAuthzConfig

        authz_host, _, authz_port = ext_authz.rpartition(":")
        if not authz_host or not authz_port.isdigit() or int(authz_port) > 65535:
            _fail("--ext-authz takes HOST:PORT, e.g. 127.0.0.1:9001")
        if not is_loopback(authz_host.strip("[]")):
            err.print(
                f"[bold yellow]warning:[/] ext_authz on {escape(ext_authz)} is plaintext gRPC:"
                " keep it on a private network beside Envoy",
                soft_wrap=True,
            )
        try:
            authz = (
                ext_authz,
                ExtAuthzConfig.parse(
                    ext_authz_principal, ext_authz_capability_header, ext_authz_header
                ),
            )
        except ValueError as exc:
            _fail(f"--ext-authz: {escape(str(exc))}")
    if print_ca_bundle:
        _print_ca_bundle(home, admission, admission_dns)
        return
    webhook = None
    if admission is not None:
        webhook = _admission_listener(
            home, admission, admission_cert, admission_key, admission_dns, admission_trust_domain
        )
    elif admission_cert or admission_key or admission_dns:
        _fail("--admission-cert, --admission-key and --admission-dns apply to --admission")
    if not is_loopback(host):
        err.print(
            f"[bold yellow]warning:[/] binding {escape(host)}: the API is plain HTTP with no TLS;"
            " put it behind a TLS-terminating proxy and keep admin tokens off untrusted networks"
            + (
                ""
                if extra
                else "; clients must send a Host header this server accepts (--allowed-host)"
            ),
            soft_wrap=True,
        )
    if workers > 1:
        _serve_workers(home, workers, host, port, log_level, extra)
        return
    with _gate(home) as gate:
        serve_http(
            gate,
            host=host,
            port=port,
            log_level=log_level,
            allowed_hosts=extra,
            execution_lease=execution_lease,
            console=console,
            ext_authz=authz,
            admission=webhook,
        )


def _serve_workers(
    home: Path | None, workers: int, host: str, port: int, log_level: str, extra: list[str]
) -> None:
    from rich.markup import escape

    from interlock.home import default_home
    from interlock.server.workers import WorkerError, run_workers

    where = default_home(home)
    if not (where / "interlock.toml").is_file():
        _fail(f"no Interlock home at {where}: run `interlock init` first")

    def started(bound: int, pids: list[int]) -> None:
        where_url = f"http://{host}:{bound}" if ":" not in host else f"http://[{host}]:{bound}"
        err.print(
            f"interlock serve: {workers} workers (pids {', '.join(map(str, pids))}) on"
            f" {escape(where_url)}",
            soft_wrap=True,
        )

    try:
        status = run_workers(
            where,
            workers=workers,
            host=host,
            port=port,
            log_level=log_level,
            allowed_hosts=extra,
            on_start=started,
        )
    except WorkerError as exc:
        _fail(escape(str(exc)), EXIT_DENY)
    if status != 0:
        raise typer.Exit(status)


def _admission_ips(host: str) -> list[str]:
    import ipaddress

    ips = ["127.0.0.1"]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return ips
    if not ip.is_unspecified and str(ip) not in ips:
        ips.append(str(ip))
    return ips


def _print_ca_bundle(home: Path | None, admission: str | None, dns: list[str] | None) -> None:
    from interlock.home import default_home
    from interlock.server.enforce.certs import DEFAULT_DNS, TlsError, ca_bundle
    from interlock.server.enforce.certs import ensure_admission_tls as ensure

    where = default_home(home)
    if not (where / "interlock.toml").is_file():
        _fail(f"no Interlock home at {where}: run `interlock init` first")
    ips = ["127.0.0.1"]
    if admission is not None:
        try:
            ips = _admission_ips(parse_listen(admission)[0])
        except typer.BadParameter as exc:
            _fail(f"--admission: {exc}")
    try:
        tls = ensure(where, dns or list(DEFAULT_DNS), ips)
        bundle = ca_bundle(tls.ca or tls.folder / "ca.pem")
    except TlsError as exc:
        _fail(str(exc))
    out.print(bundle, soft_wrap=True, highlight=False)


def _admission_listener(
    home: Path | None,
    address: str,
    cert: Path | None,
    key: Path | None,
    dns: list[str] | None,
    trust_domain: str,
) -> Any:
    import ssl

    from rich.markup import escape

    from interlock.home import default_home
    from interlock.server.enforce.admission import AdmissionConfig, AdmissionListener
    from interlock.server.enforce.certs import DEFAULT_DNS, TlsError, ensure_admission_tls

    try:
        host, port = parse_listen(address)
        config = AdmissionConfig(trust_domain=trust_domain.strip())
    except (typer.BadParameter, ValueError) as exc:
        _fail(f"--admission: {escape(str(exc))}")
    if (cert is None) != (key is None):
        _fail("give both --admission-cert and --admission-key, or neither (to generate them)")
    if cert is not None and dns:
        _fail("--admission-dns names the generated certificate: drop it with --admission-cert")
    if cert is None or key is None:
        where = default_home(home)
        if not (where / "interlock.toml").is_file():
            _fail(f"no Interlock home at {where}: run `interlock init` first")
        try:
            tls = ensure_admission_tls(where, dns or list(DEFAULT_DNS), _admission_ips(host))
        except TlsError as exc:
            _fail(f"--admission: {escape(str(exc))}")
        cert, key = tls.cert, tls.key
        err.print(
            f"interlock serve: admission webhook certificate {escape(str(cert))}, CA"
            f" {escape(str(tls.ca))} (its caBundle: interlock serve --print-ca-bundle)",
            soft_wrap=True,
        )
    try:  # refuse a pair that cannot serve now, not after the HTTP API has started
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        _fail(f"--admission: cannot load {cert} and {key}: {escape(str(exc))}")
    return AdmissionListener(host=host, port=port, cert=cert, key=key, config=config)


# -- end serve -------------------------------------------------------------------------------------

# -- demo and bench --------------------------------------------------------------------------------


@app.command()
def demo(json_: JsonOpt = False) -> None:
    """Run the scripted scenario in a fresh home: allows, denials, a verified ledger."""
    from interlock.demo import run_demo

    result = run_demo(console=None if json_ else out)
    if json_:
        _emit_json(result.to_json())
    raise typer.Exit(EXIT_OK if result.ok else EXIT_DENY)


@app.command()
def bench(
    json_: JsonOpt = False,
    quick: Annotated[bool, typer.Option(help="Smaller sizes (for smoke tests).")] = False,
) -> None:
    """Measure DESIGN §10 figures, each beside a baseline measured in the same run."""
    from interlock.bench import run_benchmarks

    results = run_benchmarks(quick=quick, console=None if json_ else err)
    if json_:
        _emit_json(results)
        return
    from interlock.bench import results_table

    out.print(results_table(results))
