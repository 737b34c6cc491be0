"""The models a service serves: each a saved model folder (a pair's or the ensemble's) loaded into a
:class:`~pintopic.predict.predictor.Predictor`, named by its folder, warmed up before it takes requests."""
from __future__ import annotations

import io
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from pintopic.errors import PintopicError


@dataclass
class ServedModel:
    """A loaded model folder: its name (the folder name), predictor, description and run results."""

    name: str
    folder: Path
    predictor: object
    results: dict
    state: str = "loading"  # loading -> ready | failed: <reason>
    warm_seconds: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def ready(self) -> bool:
        return self.state == "ready"

    def backbone_names(self) -> list[str]:
        return [str(backbone.get("spec")) for backbone in self.predictor.backbones.values()]

    def describe(self) -> dict:
        """What ``GET /v1/models`` says about the model."""
        from pintopic.categories import display_name

        info, row = self.predictor.info, self.results.get("row")
        metrics = ({k: v for k, v in row.items() if k != "per_category"} if row  # else what model.json recorded
                   else {k: info[k] for k in ("cv_f1_macro", "test_f1_macro") if k in info})
        return {
            "name": self.name, "classifier": info.get("classifier"), "state": self.state,
            "categories": [{"category": str(c), "display_name": display_name(str(c))} for c in self.predictor.classes],
            "backbones": self.backbone_names(), "metrics": metrics,
        }

    def warm(self, batch_size: int = 1) -> None:
        """Build the backbones (ONNX export on first use) and run a batch of ``batch_size`` copies of an image through
        the whole path, so the first requests find the runtime's buffers for full batches in place; idempotent."""
        with self._lock:
            if self.ready:
                return
            started = time.perf_counter()
            try:
                prepared = self.predictor.prepare(_warm_up_image(), name="warm-up.png")
                self.predictor.scores(self.predictor.embed_prepared([prepared] * max(1, batch_size)))
            except Exception as error:  # any failure: the state carries the reason to /readyz and the log
                self.state = f"failed: {error}"
                raise
            self.warm_seconds = time.perf_counter() - started
            self.state = "ready"


def _warm_up_image() -> io.BytesIO:
    from PIL import Image

    stream = io.BytesIO()
    Image.new("RGB", (64, 48), (128, 96, 64)).save(stream, format="PNG")
    return stream


def load_models(folders) -> dict[str, ServedModel]:
    """``{name: ServedModel}`` for model folders (not warmed); names must be distinct."""
    from pintopic.predict.predictor import Predictor
    from pintopic.serve.runinfo import run_results

    models: dict[str, ServedModel] = {}
    if not folders:
        raise PintopicError("give at least one model folder (RUN/results/models/<name>) to serve")
    for folder in map(Path, folders):
        name = folder.resolve().name
        if name in models:
            raise PintopicError(f"two models are named {name!r} ({models[name].folder} and {folder}); models are "
                                "addressed by their folder name, so serve them from separate processes or rename one")
        models[name] = ServedModel(name, folder, Predictor.load(folder), run_results(folder))
    return models


def config_model_folders(run_folder: str | Path, entries) -> list[Path]:
    """The model folders a config's ``[serve] models`` names: folder names under ``RUN/results/models/`` or paths;
    none named: the run's ensemble if it has one, else its pair with the best CV macro-F1."""
    from pintopic.runio import read_json
    from pintopic.serve.runinfo import row_model_name

    models_dir = Path(run_folder) / "results" / "models"
    if entries:
        return [Path(entry) if Path(entry).is_absolute() else models_dir / entry for entry in entries]  # paths: resolved by load_config
    if (models_dir / "ensemble" / "model.json").exists():
        return [models_dir / "ensemble"]
    results_path = Path(run_folder) / "results" / "results.json"
    if not results_path.exists():
        raise PintopicError(f"{results_path} not found: run the study first (`pintopic run CONFIG`) or name the models "
                            "to serve (serve.models)")
    rows = [row for row in read_json(results_path).get("rows", []) if (models_dir / row_model_name(row)).is_dir()]
    if not rows:
        raise PintopicError(f"no saved model in {models_dir}; rerun `pintopic evaluate`")
    best = max(rows, key=lambda row: (row.get("cv_f1_macro") or 0.0, row.get("test_f1_macro") or 0.0))
    return [models_dir / row_model_name(best)]
