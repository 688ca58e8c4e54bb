"""A search's results: the trials as a table, best first, and the best values as a config override."""

import dataclasses
import shlex

import yaml

from pipeline.storage.files import atomic_write_text
from tuning.space import TUNED_KEYS, override_tree


@dataclasses.dataclass(frozen=True)
class TrialRow:
    """One line of the results table."""

    trial_id: str
    values: dict  # tuned name -> value
    epochs: int  # epochs trained (Hyperband varies them), None when not recorded
    score: float  # the objective, None when the trial did not complete
    status: str
    message: str = ""


def trial_rows(oracle):
    """The oracle's trials, best first (completed by objective, then the rest by id).

    Args:
        oracle: a `keras_tuner.Oracle` (not a worker's client).

    Returns:
        A list of `TrialRow`.
    """
    rows = []
    for trial in oracle.trials.values():
        values = trial.hyperparameters.values
        completed = trial.status == "COMPLETED" and trial.score is not None
        rows.append(
            TrialRow(
                trial_id=trial.trial_id,
                values={name: values[name] for name in TUNED_KEYS if name in values},
                epochs=values.get("tuner/epochs"),
                score=float(trial.score) if completed else None,
                status=trial.status,
                message=(trial.message or "").strip().splitlines()[-1] if trial.message else "",
            )
        )
    done = sorted((r for r in rows if r.score is not None), key=lambda r: (r.score, r.trial_id))
    rest = sorted((r for r in rows if r.score is None), key=lambda r: r.trial_id)
    return done + rest


def format_table(rows, tuned_names, objective):
    """The results table as text, one trial a line.

    Args:
        rows: `TrialRow`s in the order to print.
        tuned_names: the tuned names, one column each.
        objective: the objective's name (its column header).
    """
    show_epochs = any(r.epochs is not None for r in rows)
    header = ["trial"] + list(tuned_names) + (["epochs"] if show_epochs else []) + [objective, "status"]
    lines = []
    for r in rows:
        cells = [r.trial_id] + [f"{r.values[n]:.4g}" if n in r.values else "-" for n in tuned_names]
        if show_epochs:
            cells.append(str(r.epochs) if r.epochs is not None else "-")
        cells += [f"{r.score:.4f}" if r.score is not None else "-", r.status]
        lines.append(cells)
    widths = [max(len(row[i]) for row in [header] + lines) for i in range(len(header))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [header] + lines]
    text += [f"trial {r.trial_id}: {r.message}" for r in rows if r.score is None and r.message]
    return "\n".join(text)


def write_best(path, best, config, command_args, objective):
    """Writes the best trial's values as a YAML config override.

    Args:
        path: where to write (the search directory's best.yaml).
        best: the best `TrialRow`.
        config: the experiment `Config`.
        command_args: the search's --config/--set arguments, for the comment
            that says how to train the winner.
        objective: the objective's name.
    """
    header = (
        f"# Best trial ({best.trial_id}) of the search {config.name}: {objective} {best.score:.4f}.\n"
        f"# Train it:  python -m pipeline.train {' '.join(command_args)} --config {shlex.quote(str(path))}\n"
    )
    atomic_write_text(path, header + yaml.safe_dump(override_tree(best.values), sort_keys=False))


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """What a finished search found (returned by the chief or a single process)."""

    rows: list  # `TrialRow`s, best first
    best: TrialRow  # None when no trial completed
    best_config: object  # the experiment `Config` with the best values, or None
    wall_seconds: float
