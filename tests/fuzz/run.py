"""Run a fuzz target under atheris (coverage-guided, libFuzzer).

    python -m tests.fuzz.run intake --seconds 10            # one target, 10 s
    python -m tests.fuzz.run --all --seconds 300            # every target (``make fuzz``)

Interlock's modules are imported with atheris' coverage instrumentation, then libFuzzer mutates
the seed corpus (``tests/fuzz/corpus/<target>/``, read only) and keeps the inputs that reach new
code in ``--work`` (default ``.fuzz/<target>``). A finding — an input that makes the target
raise (see :mod:`tests.fuzz.targets`) — is written to ``--artifacts`` (default
``.fuzz/findings``) as ``crash-<sha1>`` and the run exits non-zero; fix the bug, then copy the
input into the corpus as ``corpus/<target>/crash-<what>`` so it is replayed by every test run.

Each target runs in its own process (libFuzzer runs one target per process).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMES = ("intake", "capability", "policy", "proof", "receipt", "checkpoint")


def _fuzz(name: str, seconds: int, runs: int, work: Path, artifacts: Path) -> None:
    import atheris

    with atheris.instrument_imports(include=["interlock"]):
        from tests.fuzz import targets

    target = targets.TARGETS[name]
    targets.policy()  # set up outside the timed runs
    work.mkdir(parents=True, exist_ok=True)
    artifacts.mkdir(parents=True, exist_ok=True)
    args = [
        sys.argv[0],
        f"-max_total_time={seconds}",
        f"-runs={runs}",
        "-timeout=30",
        "-rss_limit_mb=2048",
        "-max_len=70000",
        "-print_final_stats=1",
        f"-artifact_prefix={artifacts}/",
        str(work),  # the first folder receives new inputs
        str(targets.CORPUS / name),
    ]
    atheris.Setup(args, target)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__)
    parser.add_argument("target", nargs="?", choices=NAMES)
    parser.add_argument("--all", action="store_true", help="run every target in turn")
    parser.add_argument("--seconds", type=int, default=10, help="per target")
    parser.add_argument("--runs", type=int, default=-1, help="per target (-1: no limit)")
    parser.add_argument("--work", type=Path, default=None)
    parser.add_argument("--artifacts", type=Path, default=ROOT / ".fuzz" / "findings")
    args = parser.parse_args(argv)
    if args.all == (args.target is not None):
        parser.error("name one target, or --all")
    if args.target is not None:
        work = args.work or ROOT / ".fuzz" / args.target
        _fuzz(args.target, args.seconds, args.runs, work, args.artifacts)
        return 0  # atheris.Fuzz() exits the process itself
    failed = []
    for name in NAMES:
        print(f"== fuzzing {name} for {args.seconds} s", flush=True)
        work = (args.work or ROOT / ".fuzz") / name
        cmd = [sys.executable, "-m", "tests.fuzz.run", name, "--seconds", str(args.seconds)]
        cmd += ["--runs", str(args.runs), "--work", str(work), "--artifacts", str(args.artifacts)]
        if subprocess.run(cmd, cwd=ROOT, check=False).returncode != 0:
            failed.append(name)
    if failed:
        print(f"findings in: {', '.join(failed)} (inputs in {args.artifacts})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
