"""Crawl-wide prediction on the local engine: one row per file with pintopic predict's answer, failures with their
status, a resumed run that computes only the missing shards, no-op reruns and clear errors."""
from __future__ import annotations

import pyarrow.parquet as pq
import pytest
from conftest import make_image

from pintopic.cli import main
from pintopic.errors import PintopicError
from pintopic.predict import crawl, predict

SETTINGS = {"top_k": 2, "batch_size": 4, "shard_rows": 8, "progress": False, "workers": 1}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A k-NN fitted by ``pintopic run`` on the three-colour folders (timm:test_efficientnet, random weights)."""
    from conftest import TINY_STUDY

    from pintopic.run import run_study

    root = tmp_path_factory.mktemp("study")
    colors = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}
    for c_index, (name, color) in enumerate(colors.items()):
        for i in range(12):
            make_image(root / "folders" / name / f"img_{i:02d}.png", color=color, seed=c_index * 100 + i)
    config = root / "tiny.toml"
    config.write_text(TINY_STUDY.format(source=root / "folders").replace('["knn", "lsvm", "nn"]', '["knn"]'))
    run_study(config, progress=False)
    (folder,) = (root / "run" / "results" / "models").iterdir()
    return folder


@pytest.fixture
def source(tmp_path):
    """A folders source: 14 images, an empty file and a text file named like an image."""
    for i in range(14):
        make_image(tmp_path / "src" / ("warm" if i % 2 else "cold") / f"{i:02d}.png", color=(15 * i, 90, 220 - 12 * i), seed=i)
    (tmp_path / "src" / "cold" / "empty.png").write_bytes(b"")
    (tmp_path / "src" / "warm" / "notes.jpg").write_text("not an image")
    return tmp_path / "src"


@pytest.mark.timeout(600)
def test_every_file_gets_a_row_with_pintopic_predicts_answer(model, source, tmp_path):
    record = crawl.predict_crawl(model, source, tmp_path / "out.parquet", **SETTINGS)
    assert record["images"] == 16 and record["by_status"] == {"empty": 1, "not_an_image": 1, "ok": 14}
    assert record["shards"] == 2 and not (tmp_path / "out.parquet.parts").exists()
    table = pq.read_table(tmp_path / "out.parquet").to_pandas()
    assert list(table["image_id"]) == sorted(table["image_id"])
    failed = table[table["status"] != "ok"].set_index("path")
    assert set(failed.index) == {"cold/empty.png", "warm/notes.jpg"} and failed["category"].isna().all()
    assert failed["reason"].str.len().gt(0).all()
    ok = table[table["status"] == "ok"]
    expected = predict(model, [str(source / path) for path in ok["path"]], top_k=2)
    for (_, row), single in zip(ok.iterrows(), expected):
        assert list(row["top_categories"]) == [entry["category"] for entry in single["top"]]
        assert row["top_scores"] == pytest.approx([entry["score"] for entry in single["top"]], abs=1e-5)
        assert row["category"] == row["top_categories"][0] and row["reason"] == ""


@pytest.mark.timeout(600)
def test_an_interrupted_run_resumes_with_the_shards_it_finished(model, source, tmp_path, monkeypatch, capsys):
    clean = crawl.predict_crawl(model, source, tmp_path / "clean.parquet", **SETTINGS)
    real_write = crawl.write_parquet

    def dies_on_the_second_part(path, table):
        if path.name == "part-00001.parquet":
            raise KeyboardInterrupt
        real_write(path, table)

    monkeypatch.setattr(crawl, "write_parquet", dies_on_the_second_part)
    with pytest.raises(KeyboardInterrupt):
        crawl.predict_crawl(model, source, tmp_path / "out.parquet", **SETTINGS)
    parts = tmp_path / "out.parquet.parts"
    assert (parts / "part-00000.parquet").exists() and not (tmp_path / "out.parquet").exists() and not (parts / "part-00001.parquet").exists()
    monkeypatch.setattr(crawl, "write_parquet", real_write)

    resumed = crawl.predict_crawl(model, source, tmp_path / "out.parquet", **SETTINGS)
    assert clean["images_computed"] == 16 and resumed["images_computed"] == 8  # the second shard only
    assert pq.read_table(tmp_path / "out.parquet").equals(pq.read_table(tmp_path / "clean.parquet"))
    capsys.readouterr()
    assert crawl.predict_crawl(model, source, tmp_path / "out.parquet", **SETTINGS) == resumed
    assert "up to date" in capsys.readouterr().out
    other = crawl.predict_crawl(model, source, tmp_path / "out.parquet", **{**SETTINGS, "top_k": 1})
    assert other["plan"]["top_k"] == 1 and other["images_computed"] == 16


def test_bad_arguments_are_clear_errors(model, source, tmp_path, capsys):
    with pytest.raises(PintopicError, match="give a .parquet file name"):
        crawl.predict_crawl(model, source, tmp_path / "out.csv", **SETTINGS)
    with pytest.raises(PintopicError, match="does not exist"):
        crawl.predict_crawl(model, tmp_path / "nowhere", tmp_path / "out.parquet", **SETTINGS)
    assert main(["predict", str(model), str(source), str(source), "--out", str(tmp_path / "o.parquet")]) == 2
    assert "give a model folder and one crawl" in capsys.readouterr().err
    assert main(["predict", str(model), str(source / "cold" / "00.png"), "--engine", "ray"]) == 2
    assert "--engine ray runs crawl-wide prediction" in capsys.readouterr().err
