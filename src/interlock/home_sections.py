"""The sections of ``interlock.toml`` that :meth:`interlock.home.Config.from_toml` validates
apart: the ``[log] store`` URL, ``[witness]``, ``[exec]`` and the ``keys = [...]`` lists of
``[approvals]`` and ``[break_glass]``. Each raises :class:`~interlock.errors.ConfigError` on a
value out of range.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from interlock.containment import FULL, MODES
from interlock.containment import Settings as ExecSettings
from interlock.containment.cgroup import Limits
from interlock.errors import ConfigError, KeyFileError
from interlock.trust import keys

__all__ = ["exec_settings", "is_store_url", "key_list", "witness_settings"]


def is_store_url(value: object) -> bool:
    """Whether ``value`` can be ``[log] store``: a ``postgresql://`` (or ``postgres://``) URL on
    one line."""
    return (
        isinstance(value, str)
        and value.startswith(("postgresql://", "postgres://"))
        and len(value) <= 2048
        and value.isprintable()
    )


def witness_settings(body: Any, source: str) -> tuple[tuple[str, ...], tuple[str, ...], int, int]:
    """``[witness]``: ``urls``, ``keys`` (one cosignature vkey per URL), ``quorum`` (required
    with witnesses: 1 .. len(urls)), ``timeout_ms``."""
    from urllib.parse import urlsplit

    from interlock.errors import UsageError, VerificationError
    from interlock.ledger.cosign import CosignatureVerifier, check_quorum

    urls, vkeys = body.get("urls", []), body.get("keys", [])
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise ConfigError(f"{source}: [witness] urls must be a list of http(s) URLs")
    if not isinstance(vkeys, list) or not all(isinstance(k, str) for k in vkeys):
        raise ConfigError(f"{source}: [witness] keys must be a list of witness keys")
    if len(urls) != len(vkeys):
        raise ConfigError(f"{source}: [witness] needs one key per URL, in the same order")
    for u in urls:
        parts = urlsplit(u)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query:
            raise ConfigError(f"{source}: [witness] {u!r} is not an http(s) URL")
    try:
        verifiers = [CosignatureVerifier.from_vkey(k) for k in vkeys]
    except VerificationError as exc:
        raise ConfigError(f"{source}: [witness] keys: {exc.diagnostics()}") from exc
    quorum = body.get("quorum", 0)
    timeout = body.get("timeout_ms", 2000)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or not 1 <= timeout <= 60_000:
        raise ConfigError(f"{source}: [witness] timeout_ms must be an integer in 1..60000")
    if not urls:
        if quorum:
            raise ConfigError(f"{source}: [witness] quorum is set but no witness is")
        return (), (), 0, timeout
    try:
        # a quorum of 0 would confirm any head: with witnesses configured it is required
        check_quorum(quorum, verifiers)
    except UsageError as exc:
        raise ConfigError(f"{source}: [witness] {exc.diagnostics()}") from exc
    return tuple(urls), tuple(vkeys), quorum, timeout


def exec_settings(body: Any, source: str) -> ExecSettings:
    """``[exec]``: the containment of ``interlock exec`` (see interlock.containment)."""
    mode = body.get("containment", FULL)
    if mode not in MODES:
        raise ConfigError(
            f"{source}: [exec] containment must be one of {', '.join(MODES)} (got {mode!r})"
        )
    root = body.get("cgroup_root")
    if root is not None and (not isinstance(root, str) or not root.startswith("/")):
        raise ConfigError(f"{source}: [exec] cgroup_root must be an absolute path")
    writable = body.get("writable", [])
    if not isinstance(writable, list) or not all(
        isinstance(p, str) and p.startswith("/") for p in writable
    ):
        raise ConfigError(f"{source}: [exec] writable must be a list of absolute paths")
    run_as = body.get("run_as")
    if run_as is not None and (not isinstance(run_as, str) or not run_as):
        raise ConfigError(f"{source}: [exec] run_as must be a user name or uid")

    def _limit(name: str, lo: int) -> int | None:
        v = body.get(name)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < lo):
            raise ConfigError(f"{source}: [exec] {name} must be an integer >= {lo}")
        return v

    cpu = body.get("cpu_max")
    if cpu is not None and (
        not isinstance(cpu, str) or not re.fullmatch(r"(max|[1-9][0-9]*) [1-9][0-9]*", cpu)
    ):
        raise ConfigError(
            f'{source}: [exec] cpu_max must be "QUOTA PERIOD" in microseconds, e.g. "50000 100000"'
        )
    return ExecSettings(
        mode=mode,
        cgroup_root=Path(root) if root is not None else None,
        writable=tuple(Path(p) for p in writable),
        run_as=run_as,
        limits=Limits(
            pids_max=_limit("pids_max", 1), memory_max=_limit("memory_max", 1 << 20), cpu_max=cpu
        ),
    )


def key_list(doc: Mapping[str, Any], section: str, source: str) -> tuple[str, ...]:
    """A ``keys = [...]`` list of lowercase hex raw Ed25519 public keys."""
    body = doc.get(section, {})
    found = body.get("keys", []) if isinstance(body, dict) else None
    if not isinstance(found, list) or not all(isinstance(k, str) for k in found):
        raise ConfigError(f"{source}: [{section}] keys must be a list of hex keys")
    for k in found:
        try:
            if k != k.lower():
                raise ValueError(k)
            keys.public_from_raw(bytes.fromhex(k))
        except (ValueError, KeyFileError) as exc:
            raise ConfigError(
                f"{source}: [{section}] key {k!r} is not lowercase hex Ed25519"
            ) from exc
    return tuple(found)
