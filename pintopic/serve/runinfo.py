"""What a served model's run recorded about it: the results table, the model's own row and its confusion matrix.

A model folder is ``RUN/results/models/<name>``, so its run's ``results.json``, ``confusion/<name>.csv`` and
``predictions/<name>.parquet`` are found relative to it. Anything missing or unreadable becomes a note, never an
error: the model still serves.
"""
from __future__ import annotations

import csv
from pathlib import Path

from pintopic.safeio import open_regular, require_regular

#: The columns of a results row the page and ``GET /v1/models`` show.
ROW_FIELDS = ("backbone", "classifier", "key", "cv_f1_macro", "test_f1_macro", "test_accuracy", "n_train", "n_test")


def row_model_name(row: dict) -> str:
    """The model folder a results row saved: ``ensemble``, or ``<key>__<classifier>`` for a pair."""
    from pintopic.classify.evaluation import pair_name

    return "ensemble" if row.get("classifier") == "ensemble" else pair_name(str(row.get("key")), str(row.get("classifier")))


def run_results(model_dir: str | Path) -> dict:
    """``{rows, row, categories, confusion, chance_f1, notes}`` of the run a model folder belongs to."""
    from pintopic.runio import read_json

    model_dir = Path(model_dir).resolve()
    results_dir, name = model_dir.parent.parent, model_dir.name
    found = {"rows": [], "row": None, "categories": [], "confusion": None, "chance_f1": None, "notes": []}
    try:
        results = read_json(results_dir / "results.json")
    except FileNotFoundError:
        found["notes"].append(f"no results.json in {results_dir} (the model folder is not inside a run)")
        return found
    except (OSError, ValueError) as error:
        found["notes"].append(f"{results_dir / 'results.json'} could not be read ({error})")
        return found
    rows = [row for row in results.get("rows", []) if isinstance(row, dict)]
    found.update(categories=[str(c) for c in results.get("categories", [])], chance_f1=results.get("chance_f1"),
                 rows=[{"model": row_model_name(row), **{key: row.get(key) for key in ROW_FIELDS}} for row in rows])
    own = next((row for row in rows if row_model_name(row) == name), None)
    if own is not None:
        found["row"] = {"model": name, **{key: own.get(key) for key in ROW_FIELDS},
                        "per_category": own.get("per_category")}
    found["confusion"] = _confusion(results_dir, name, found["categories"], found["notes"])
    return found


def _confusion(results_dir: Path, name: str, categories: list[str], notes: list[str]) -> dict | None:
    """``{categories, matrix}`` (rows: true) from ``confusion/<name>.csv``, else counted from the test predictions."""
    csv_path, predictions_path = results_dir / "confusion" / f"{name}.csv", results_dir / "predictions" / f"{name}.parquet"
    try:
        if csv_path.exists():
            with open_regular(csv_path) as handle:  # a pipe planted there must not block the service
                header, *lines = list(csv.reader(handle.read().decode("utf-8").splitlines()))
            return {"categories": header[1:], "matrix": [[int(v) for v in line[1:]] for line in lines]}
        if predictions_path.exists() and categories:
            import pandas as pd

            require_regular(predictions_path)
            frame = pd.read_parquet(predictions_path, columns=["true", "pred"])
            table = pd.crosstab(frame["true"], frame["pred"]).reindex(index=categories, columns=categories, fill_value=0)
            return {"categories": categories, "matrix": table.astype(int).values.tolist()}
    except (OSError, ValueError, KeyError) as error:
        notes.append(f"the confusion matrix of {name} could not be read ({error})")
        return None
    notes.append(f"no confusion matrix recorded for {name}")
    return None
