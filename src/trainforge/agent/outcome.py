"""How an instance ended, as the exit event says it (docs/INTERNALS.md, CONTRACT.md §3).

Outcomes: ``ok`` (exit 0), ``algorithm`` (the job's own fault — the training code, or a request
or its data that cannot work: Failed, never retried), ``platform`` (ours: staging or upload
infrastructure, the agent itself — retried under RetryStrategy), ``stopped``.
"""

from __future__ import annotations

import os
import re
from typing import Any

MAX_REASON = 1024
_ERROR_PREFIX = re.compile(r"^[A-Za-z]+(Error|Exception|Failure)\b")


class Outcome:
    __slots__ = ("exit_code", "failure_reason", "outcome", "stop_reason")

    def __init__(self, outcome: str, exit_code: int | None = None, failure_reason: str | None = None,
                 stop_reason: str | None = None):
        self.outcome = outcome
        self.exit_code = exit_code
        self.failure_reason = failure_reason
        self.stop_reason = stop_reason

    def __repr__(self) -> str:
        return f"Outcome({self.outcome!r}, {self.exit_code!r}, {self.failure_reason!r}, {self.stop_reason!r})"

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Outcome:
        return cls(str(value["outcome"]), value.get("exit_code"), value.get("failure_reason"),
                   value.get("stop_reason"))

    def event(self, model_artifacts: str | None) -> dict[str, Any]:
        return {"type": "exit", "outcome": self.outcome, "exit_code": self.exit_code,
                "failure_reason": self.failure_reason, "stop_reason": self.stop_reason,
                "model_artifacts": model_artifacts}


def failure_file_reason(failure_file: str) -> str | None:
    """``AlgorithmError: `` + the failure file's first characters, or None without one."""
    try:
        with open(failure_file, encoding="utf-8", errors="replace") as f:
            text = f.read(MAX_REASON)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as exc:
        text = f"(the failure file could not be read: {exc})"
    return ("AlgorithmError: " + text)[:MAX_REASON]


def exit_code_reason(exit_code: int, stderr_tail: list[str]) -> str:
    """``AlgorithmError: ExitCode <n>`` and as many of the last stderr lines as fit in 1024."""
    head = f"AlgorithmError: ExitCode {exit_code}"
    lines = [ln for ln in stderr_tail if ln.strip()]
    if not lines:
        return head
    budget = MAX_REASON - len(head) - len("\nErrorMessage: ")
    kept: list[str] = []
    for line in reversed(lines):
        cost = len(line) + (1 if kept else 0)
        if cost > budget:
            if not kept:
                kept.append("…" + line[-(budget - 1):])
            break
        kept.append(line)
        budget -= cost
    return f"{head}\nErrorMessage: " + "\n".join(reversed(kept))


def algorithm_failure(ml_dir: str, exit_code: int, stderr_tail: list[str]) -> Outcome:
    reason = failure_file_reason(os.path.join(ml_dir, "output", "failure"))
    return Outcome("algorithm", exit_code, reason or exit_code_reason(exit_code, stderr_tail))


def error_reason(exc: BaseException, default_prefix: str, context: str = "") -> str:
    """A FailureReason for an exception: ``<Prefix>: <message>[ <context>]``, ≤ 1024 characters."""
    text = str(exc) or type(exc).__name__
    if not _ERROR_PREFIX.match(text):
        text = f"{default_prefix}: {text}"
    if context:
        text = f"{text} {context}"
    return text[:MAX_REASON]
