"""``sam3studio batch``: sources, shards, errors, resume, and local == Ray on the tiny checkpoint."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from sam3studio.batch import BatchInputError, list_inputs, plan_shards
from sam3studio.cli import app
from sam3studio.results import rle_to_mask

THRESHOLD = "0.2"  # the tiny random model scores ~0.17-0.30: this keeps several instances per image


def _app() -> typer.Typer:
    """The real CLI (``batch`` is one of its commands)."""
    return app


def _run(*args: str | Path):
    return CliRunner().invoke(_app(), ["batch", *map(str, args)])


def _model_args(checkpoint: Path) -> list[str]:
    return ["--model", str(checkpoint), "--device", "cpu", "--dtype", "float32", "-t", THRESHOLD]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _all(out: Path, kind: str = "jsonl") -> list[dict]:
    pattern = "shard-*.errors.jsonl" if kind == "errors" else "shard-[0-9][0-9][0-9][0-9][0-9].jsonl"
    return [r for p in sorted(out.glob(pattern)) for r in _records(p)]


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory, cat_photo, astronaut_photo) -> Path:
    """Three small good images (one in a sub-folder) and one corrupt file; small keeps the runs quick."""
    root = tmp_path_factory.mktemp("batch-images")
    Image.fromarray(cat_photo[::2, ::2]).save(root / "cat.jpg", quality=95)
    Image.fromarray(astronaut_photo[::4, ::4]).save(root / "astronaut.png")
    (root / "sub").mkdir()
    Image.fromarray(cat_photo[50:200, 100:300]).save(root / "sub" / "crop.png")
    (root / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    (root / "notes.txt").write_text("not an image: ignored by the folder listing")
    return root


# ------------------------------------------------------------------ sources and shards (fast)
def test_list_inputs_folder_is_sorted_absolute_and_recursive(image_dir):
    items = list_inputs(image_dir)
    assert [Path(i).relative_to(image_dir).as_posix() for i in items] == ["astronaut.png", "broken.jpg", "cat.jpg",
                                                                          "sub/crop.png"]
    assert all(os.path.isabs(i) for i in items)


def test_list_inputs_text_manifest(tmp_path, image_dir):
    manifest = tmp_path / "list.txt"
    manifest.write_text(f"# a comment\n\n{image_dir / 'cat.jpg'}\nhttps://example.com/b.png\n  rel/x.png  \n"
                        f"{image_dir / 'cat.jpg'}\n", encoding="utf-8")
    assert list_inputs(manifest) == sorted([str(image_dir / "cat.jpg"), "https://example.com/b.png",
                                           str(tmp_path / "rel" / "x.png")])


def test_list_inputs_errors(tmp_path):
    with pytest.raises(BatchInputError, match="no such file"):
        list_inputs(tmp_path / "missing")
    with pytest.raises(BatchInputError, match="no images"):
        list_inputs(tmp_path)
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"file": ["a.png"]}), tmp_path / "m.parquet")
    with pytest.raises(BatchInputError, match="no 'path' column"):
        list_inputs(tmp_path / "m.parquet")


def test_plan_shards_is_fixed_size():
    assert plan_shards(5, 2) == [range(0, 2), range(2, 4), range(4, 5)]
    assert plan_shards(4, 4) == [range(0, 4)]
    with pytest.raises(ValueError):
        plan_shards(3, 0)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--shard-size", "0"], "--shard-size must be at least 1"),
        (["--engine", "spark"], "--engine must be one of local, ray"),
        (["--format", "csv"], "--format must be one of jsonl, parquet"),
        (["--num-workers", "2"], "--num-workers only applies to --engine ray"),
        (["--ray-address", "auto"], "--ray-address only applies to --engine ray"),
        (["--engine", "ray", "--gpus-per-worker", "-1"], "--gpus-per-worker must be >= 0"),
        (["--threshold", "2"], "--threshold must be in"),
        (["--engine", "ray", "--runtime-env", "{not json"], "--runtime-env must be JSON"),
    ],
)
def test_bad_options_give_one_line_error(tmp_path, image_dir, extra, match):
    res = _run(image_dir, "-p", "cat", "--out", tmp_path / "out", "--model", "/nonexistent", *extra)
    assert res.exit_code == 2, res.output
    assert match in res.output
    assert len([line for line in res.output.splitlines() if line.strip()]) == 1, res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()  # nothing is created before the options are valid


def test_missing_source_and_empty_prompt(tmp_path):
    res = _run(tmp_path / "nope", "-p", "cat", "--out", tmp_path / "out")
    assert res.exit_code == 2 and "no such file or folder" in res.output
    (tmp_path / "img.png").write_bytes(b"x")
    res = _run(tmp_path, "-p", " , ", "--out", tmp_path / "out")
    assert res.exit_code == 2 and "prompt" in res.output and "Traceback" not in res.output


def test_missing_ray_gives_install_hint(tmp_path, image_dir, monkeypatch, tiny_checkpoint):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError, installed or not
    monkeypatch.setitem(sys.modules, "ray.data", None)
    res = _run(image_dir, "-p", "cat", "--out", tmp_path / "out", "--engine", "ray", *_model_args(tiny_checkpoint))
    assert res.exit_code == 1, res.output
    assert "pip install 'sam3studio[ray]'" in res.output
    error_lines = [line for line in res.output.splitlines() if "error" in line]
    assert len(error_lines) == 1 and "Traceback" not in res.output
    assert not list((tmp_path / "out").glob("shard-*"))


# ------------------------------------------------------------------ local engine (model runs)
@pytest.mark.slow
def test_folder_local_writes_records_and_errors(tmp_path, image_dir, tiny_checkpoint):
    out = tmp_path / "out"
    res = _run(image_dir, "-p", "cat, dog", "--out", out, "--shard-size", "2", *_model_args(tiny_checkpoint))
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in out.glob("shard-*")) == ["shard-00000.errors.jsonl", "shard-00000.jsonl",
                                                           "shard-00001.jsonl"]
    records, errors = _all(out), _all(out, "errors")
    items = list_inputs(image_dir)
    assert [r["index"] for r in records] == [0, 2, 3] and [r["source"] for r in records] == [items[0], *items[2:]]
    assert [(e["index"], e["source"], e["stage"], e["error_type"]) for e in errors] == [
        (1, items[1], "decode", "InputError")]
    assert "corrupt" in errors[0]["error"] or "not a readable image" in errors[0]["error"]
    assert sum(len(r["instances"]) for r in records) > 0  # the comparisons below compare something
    for r in records:
        assert [p["text"] for p in r["prompts"]] == ["cat", "dog"]
        assert "timings" not in r  # records are deterministic
        for inst in r["instances"]:
            mask = rle_to_mask(inst["mask"])
            assert mask.shape == (r["height"], r["width"]) and int(mask.sum()) == inst["area"]
            assert inst["score"] > float(THRESHOLD)
    assert "1 failed" in res.output and "errors.jsonl" in res.output


@pytest.mark.slow
def test_text_manifest_with_refused_url_and_too_large(tmp_path, image_dir, tiny_checkpoint, cat_photo):
    big = tmp_path / "big.png"
    Image.fromarray(np.tile(cat_photo, (2, 2, 1))).save(big)  # 600x902: over --max-pixels below
    manifest = tmp_path / "inputs.txt"
    manifest.write_text(f"{image_dir / 'cat.jpg'}\nhttp://127.0.0.1/x.png\nbig.png\n{image_dir / 'sub' / 'crop.png'}\n",
                        encoding="utf-8")
    out = tmp_path / "out"
    res = _run(manifest, "-p", "cat", "--out", out, "--max-pixels", "300000", *_model_args(tiny_checkpoint))
    assert res.exit_code == 0, res.output
    records, errors = _all(out), _all(out, "errors")
    assert sorted(r["source"] for r in records) == sorted([str(image_dir / "cat.jpg"), str(image_dir / "sub" / "crop.png")])
    by_source = {e["source"]: e for e in errors}
    assert set(by_source) == {"http://127.0.0.1/x.png", str(big)}
    refused = by_source["http://127.0.0.1/x.png"]
    assert refused["stage"] == "read" and refused["error_type"] == "UrlForbiddenError"
    assert "not a public address" in refused["error"]
    assert by_source[str(big)]["error_type"] == "InputTooLargeError"


@pytest.mark.slow
def test_parquet_manifest_and_parquet_output(tmp_path, image_dir, tiny_checkpoint):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    manifest = tmp_path / "inputs.parquet"
    pq.write_table(pa.table({"path": [str(image_dir / "cat.jpg"), "sub/crop.png", None],
                             "label": ["a", "b", "c"]}), manifest)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "crop.png").write_bytes((image_dir / "sub" / "crop.png").read_bytes())
    out = tmp_path / "out"
    res = _run(manifest, "-p", "cat", "--out", out, "--format", "parquet", *_model_args(tiny_checkpoint))
    assert res.exit_code == 0, res.output
    table = pq.read_table(out / "shard-00000.parquet")
    assert table.column_names == ["index", "source", "width", "height", "num_instances", "record"]
    rows = table.to_pylist()
    assert [r["source"] for r in rows] == sorted([str(image_dir / "cat.jpg"), str(tmp_path / "sub" / "crop.png")])
    for row in rows:
        rec = json.loads(row["record"])
        assert (rec["index"], rec["width"], rec["height"], len(rec["instances"])) == (
            row["index"], row["width"], row["height"], row["num_instances"])
    assert not list(out.glob("*.errors.jsonl"))


@pytest.mark.slow
def test_resume_rewrites_only_missing_shards(tmp_path, image_dir, tiny_checkpoint, monkeypatch):
    from sam3studio.batch.work import Worker

    out = tmp_path / "out"
    args = [image_dir, "-p", "cat", "--out", out, "--shard-size", "1", *_model_args(tiny_checkpoint)]
    first = _run(*args)
    assert first.exit_code == 0, first.output
    shards = sorted(out.glob("shard-[0-9]*[0-9].jsonl"))
    assert len(shards) == 4  # one image per shard; shard 1 (the corrupt file) has errors and an empty result file
    assert (out / "shard-00001.jsonl").read_text() == "" and (out / "shard-00001.errors.jsonl").is_file()
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("shard-*")}

    calls: list[str] = []
    original = Worker.process
    monkeypatch.setattr(Worker, "process", lambda self, index, item: calls.append(item) or original(self, index, item))
    lost = out / "shard-00002.jsonl"
    lost.unlink()
    again = _run(*args)
    assert again.exit_code == 0, again.output
    assert "3 already done, 1 to do" in again.output and "1 shard written, 3 skipped" in again.output
    assert calls == [list_inputs(image_dir)[2]]  # only the lost shard's image went through the model
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("shard-*")}
    assert after == {**before, lost.name: (after[lost.name][0], before[lost.name][1])}  # same bytes rewritten
    assert all(after[n][0] == before[n][0] for n in before if n != lost.name)  # the others were not touched

    calls.clear()
    done = _run(*args)
    assert done.exit_code == 0 and "Nothing to do" in done.output and calls == []
    assert "Failed inputs: 1" in done.output  # earlier runs' errors are still reported

    other = _run(*[a if a != "cat" else "dog" for a in args])
    assert other.exit_code == 2 and "other settings or inputs" in other.output and "prompts" in other.output
    redo = _run(*[a if a != "cat" else "dog" for a in args], "--overwrite")
    assert redo.exit_code == 0 and "0 already done, 4 to do" in redo.output, redo.output
    assert len(calls) == 4


# ------------------------------------------------------------------ Ray engine
@pytest.fixture(scope="module")
def ray_local():
    """One small local Ray for the module (2 CPUs, 500 MB object store); the engine reuses it."""
    ray = pytest.importorskip("ray")
    os.environ.pop("RAY_ADDRESS", None)
    ray.init(num_cpus=2, object_store_memory=500 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
             logging_level="WARNING")
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_engine_matches_local(tmp_path, image_dir, tiny_checkpoint, ray_local):
    common = [image_dir, "-p", "cat", "-p", "dog", "--shard-size", "3", *_model_args(tiny_checkpoint)]
    local = _run(*common, "--out", tmp_path / "local")
    assert local.exit_code == 0, local.output
    ray_run = _run(*common, "--out", tmp_path / "ray", "--engine", "ray", "--num-workers", "1", "--batch-size", "2")
    assert ray_run.exit_code == 0, ray_run.output
    assert "Ray: " in ray_run.output and "CPU 2" in ray_run.output  # the Ray engine ran, on the test's Ray
    assert "shard 00000 written" in ray_run.output and "shard 00001 written" in ray_run.output

    def names(out: Path) -> list[str]:
        return sorted(p.name for p in out.iterdir())

    assert names(tmp_path / "local") == names(tmp_path / "ray")
    assert _all(tmp_path / "local", "errors") == _all(tmp_path / "ray", "errors")
    a, b = _all(tmp_path / "local"), _all(tmp_path / "ray")
    assert [r["index"] for r in a] == [r["index"] for r in b] == [0, 2, 3]
    assert sum(len(r["instances"]) for r in a) > 0
    for ra, rb in zip(a, b, strict=True):
        assert {k: v for k, v in ra.items() if k not in ("instances", "prompts")} == \
               {k: v for k, v in rb.items() if k not in ("instances", "prompts")}
        assert len(ra["instances"]) == len(rb["instances"])
        for pa_, pb in zip(ra["prompts"], rb["prompts"], strict=True):
            assert pa_["count"] == pb["count"] and pa_["presence_score"] == pytest.approx(pb["presence_score"], abs=1e-5)
        for ia, ib in zip(ra["instances"], rb["instances"], strict=True):
            assert ia["mask"] == ib["mask"]  # identical COCO RLE
            assert ia["score"] == pytest.approx(ib["score"], abs=1e-5)
            assert ia["box_xyxy"] == pytest.approx(ib["box_xyxy"], abs=0.05)
            assert (ia["prompt"], ia["area"]) == (ib["prompt"], ib["area"])

    # Resume on Ray too: a lost shard is redone, the finished one is skipped.
    (tmp_path / "ray" / "shard-00001.jsonl").unlink()
    again = _run(*common, "--out", tmp_path / "ray", "--engine", "ray")
    assert again.exit_code == 0, again.output
    assert "1 shard written, 1 skipped" in again.output
    assert _all(tmp_path / "ray") == b
