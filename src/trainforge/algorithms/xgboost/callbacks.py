"""The XGBoost algorithm's training callbacks: the per-round log lines and the checkpoints (saved,
pruned, and the latest found to resume from).

Imported only when the algorithm trains (it imports xgboost): a script-mode run of the image does not.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any

from xgboost import collective
from xgboost.callback import TrainingCallback

CHECKPOINT_PREFIX = "xgboost-checkpoint."
KEEP_CHECKPOINTS = 5
_CHECKPOINT = re.compile(rf"^{re.escape(CHECKPOINT_PREFIX)}(\d+)$")


class RoundLog(TrainingCallback):  # type: ignore[misc]
    """Prints each round's evaluation in the container's format; stops training on SIGTERM. With
    early stopping, says which metric it watches and, when it stops early, the best round (the
    messages xgboost's own verbose training prints)."""

    def __init__(self, stop: threading.Event, done: int = 0, early_stopping_rounds: int | None = None) -> None:
        super().__init__()
        self.stop = stop
        self.done = done  # rounds before this run (a resumed one): xgboost counts this run's from 0
        self.early = early_stopping_rounds
        self.lines: dict[int, str] = {}  # round -> its line, for the early-stopping summary

    def after_iteration(self, model: Any, epoch: int, evals_log: dict[str, dict[str, list[Any]]]) -> bool:
        parts = [f"[{self.done + epoch}]"]
        for data_name, metrics in evals_log.items():
            for metric, values in metrics.items():
                value = values[-1][0] if isinstance(values[-1], tuple) else values[-1]
                parts.append(f"{data_name}-{metric}:{float(value):.5f}")
        if self.early and not self.lines and "validation" in evals_log:
            watched = list(evals_log["validation"])[-1]
            self._print(f"Will train until validation-{watched} hasn't improved in {self.early} rounds.")
        self.lines[self.done + epoch] = "\t".join(parts)
        self._print(self.lines[self.done + epoch])
        return self.stop.is_set()

    def report_early_stop(self, booster: Any, num_round: int) -> None:
        """After training: when early stopping ended it before ``num_round``, the best round."""
        if not self.early or self.stop.is_set() or booster.num_boosted_rounds() >= num_round:
            return
        best = int(booster.attr("best_iteration") or booster.num_boosted_rounds() - 1)
        self._print(f"Stopping. Best iteration:\n{self.lines.get(best, f'[{best}]')}")

    @staticmethod
    def _print(text: str) -> None:
        if collective.get_rank() == 0:
            print(text, flush=True)


class Checkpointer(TrainingCallback):  # type: ignore[misc]
    """Saves the booster after every round (atomically) and keeps the last few."""

    def __init__(self, directory: str, done: int = 0) -> None:
        super().__init__()
        self.directory = directory
        self.done = done
        os.makedirs(directory, exist_ok=True)

    def after_iteration(self, model: Any, epoch: int, evals_log: Any) -> bool:
        epoch += self.done
        path = os.path.join(self.directory, f"{CHECKPOINT_PREFIX}{epoch}")
        partial = os.path.join(self.directory, f".{CHECKPOINT_PREFIX}{epoch}.partial.json")
        model.save_model(partial)
        os.replace(partial, path)
        for old in range(epoch - KEEP_CHECKPOINTS, -1, -1):
            try:
                os.unlink(os.path.join(self.directory, f"{CHECKPOINT_PREFIX}{old}"))
            except FileNotFoundError:
                break
        return False


def latest_checkpoint(directory: str) -> str | None:
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return None
    found = sorted((int(m.group(1)), n) for n in names if (m := _CHECKPOINT.match(n)))
    return os.path.join(directory, found[-1][1]) if found else None
