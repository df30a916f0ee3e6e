"""Interlock's exception hierarchy.

Two channels (see STYLE.md): an expected refusal is a value — a deny ``Decision`` — and never
raises. An exception means "could not decide"; ``gate.py`` is the one place that turns any
exception into a deny with ``INTERNAL_ERROR`` (or the code the exception carries).

    >>> from interlock.errors import VerificationError
    >>> try:
    ...     raise VerificationError("bad signature", index=3)
    ... except VerificationError as exc:
    ...     exc.diagnostics()
    'bad signature (index=3)'

This module imports nothing from ``interlock``.
"""

from __future__ import annotations

from typing import Any


class Error(Exception):
    """Base of every Interlock error. ``diagnostics()`` is for operators and logs."""

    #: the DESIGN §3 reason code a gate reports when this error stops a decision
    reason_code: str = "INTERNAL_ERROR"

    def __init__(self, message: str, **evidence: Any) -> None:
        super().__init__(message)
        self.message = message
        self.evidence = evidence

    def diagnostics(self) -> str:
        """A human-readable description including the evidence carried."""
        if not self.evidence:
            return self.message
        detail = ", ".join(f"{k}={v}" for k, v in sorted(self.evidence.items()))
        return f"{self.message} ({detail})"


def reason_code_of(exc: BaseException) -> str:
    """The one mapping from an exception to the DESIGN §3 reason code it denies with: an
    Interlock error names its own (``reason_code``); anything else is ``INTERNAL_ERROR``.
    :meth:`interlock.core.model.ReasonCode.of` gives it as the enum."""
    return exc.reason_code if isinstance(exc, Error) else "INTERNAL_ERROR"


def error_detail(exc: BaseException, doing: str = "deciding") -> str:
    """Operator-facing text for an error that stopped ``doing``: an Interlock error carries its
    diagnostics; a foreign exception is named by type only (its message may hold inputs)."""
    if isinstance(exc, Error):
        return exc.diagnostics()[:500]
    return f"{type(exc).__name__} while {doing}: could not establish authorization"


class UsageError(Error):
    """The caller asked for something malformed (bad flag value, missing file)."""


class ConfigError(Error):
    """``interlock.toml`` or a home directory is missing, unreadable or invalid."""

    reason_code = "INTERNAL_ERROR"


class HomeExists(ConfigError):
    """``interlock init`` refuses to overwrite an existing home."""


class MalformedRequest(Error):
    """An ActionRequest failed intake (schema, size, encoding)."""

    reason_code = "MALFORMED_REQUEST"


class VerificationError(Error):
    """A signature, proof, checkpoint or ledger failed verification."""


class KeyFileError(Error):
    """A key file is missing, has unsafe permissions, or cannot be parsed."""


class CapabilityError(Error):
    """A capability token could not be created, parsed or verified.

    Agents only ever learn ``CAPABILITY_INVALID``; the message is for the ledger and operator.
    """

    reason_code = "CAPABILITY_INVALID"


class PolicyError(Error):
    """A policy bundle is invalid, unsigned, or failed schema validation."""

    reason_code = "POLICY_UNAVAILABLE"


class LedgerError(Error):
    """The ledger could not be read or written."""

    reason_code = "LEDGER_UNAVAILABLE"


class LedgerUnavailable(LedgerError):
    """An append did not become durable (I/O error, lock held past the deadline)."""

    reason_code = "LEDGER_UNAVAILABLE"


class LedgerCorrupt(LedgerError):
    """The stored ledger does not match its own hashes or signed checkpoints."""

    reason_code = "LEDGER_CORRUPT"


class Denied(Error):
    """An action was refused before it started; ``decision`` is the deny ``Decision``.

    Raised by APIs whose contract is "run this, or raise" (``gate.execution``): ``gate.decide``
    never raises it, it returns the decision.
    """

    def __init__(self, decision: Any) -> None:
        reasons = list(getattr(decision, "reasons", ()))
        first = reasons[0] if reasons else None
        code = str(getattr(getattr(first, "code", None), "value", "INTERNAL_ERROR"))
        detail = str(getattr(first, "detail", "denied"))
        super().__init__(f"{code}: {detail}", request_id=getattr(decision, "request_id", None))
        self.decision = decision
        self.reason_code = code
        self.detail = detail


class Revoked(Error):
    """A running execution's authorization no longer holds (DESIGN I6): its capability expired
    or was revoked, the policy now denies it, its parent was terminated, ...

    ``reason_code`` is the DESIGN §3 code of the re-decision that denied it.
    """

    def __init__(self, code: str, detail: str, *, execution_id: str | None = None) -> None:
        super().__init__(f"{code}: {detail}", execution_id=execution_id)
        self.reason_code = code
        self.detail = detail
        self.execution_id = execution_id


class UntrustedHomeFile(ConfigError):
    """A file or folder of the governance home cannot be trusted: a special file (a FIFO would
    block the gate forever), a symbolic link, owned by another user, writable by group or
    others, too large, or not text where text is expected.

    The governed agent is the attacker (issue 9): whatever it could have swapped or edited is
    refused, and the message names the file and the command that makes it safe again.
    """

    reason_code = "ENVIRONMENT_UNTRUSTED"


class UntrustedKeyFile(UntrustedHomeFile, KeyFileError):
    """A key file that cannot be trusted (see :class:`UntrustedHomeFile`); also a
    :class:`KeyFileError`, so callers of ``load_private_key`` keep their contract."""

    reason_code = "ENVIRONMENT_UNTRUSTED"


class UntrustedPolicyFile(UntrustedHomeFile, PolicyError):
    """A policy bundle file or folder that cannot be trusted (see :class:`UntrustedHomeFile`);
    also a :class:`PolicyError`, so a gate that cannot load its bundle still opens and denies
    (POLICY_UNAVAILABLE) instead of failing."""

    reason_code = "ENVIRONMENT_UNTRUSTED"


class ClockBehind(Error):
    """The node's clock is behind the last timestamp on the log (DESIGN I8): nothing is
    decided or recorded with it — a clock set back could revive expired tokens and would make
    the log's timestamps go backwards."""

    reason_code = "ENVIRONMENT_UNTRUSTED"


class ContainmentUnavailable(Error):
    """No enforceable boundary for a governed execution (DESIGN I9): no writable cgroup v2, no
    key isolation (Landlock or ``--run-as``), or a sandbox the kernel refused — and no weaker
    ``[exec] containment`` mode chosen."""

    reason_code = "CONTAINMENT_UNAVAILABLE"


class HomeMissing(ConfigError):
    """There is no governance home where one was named (no ``interlock.toml``): a usage
    error (exit 2), not a denial of a home that exists."""
