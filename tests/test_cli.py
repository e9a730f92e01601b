"""The command line, through Typer's runner (in-process) and one real subprocess."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from sam3studio.cli import app
from sam3studio.model import hub_login_command
from sam3studio.results import Segmentation

runner = CliRunner()


@pytest.fixture
def images(tmp_path, cat_photo, astronaut_photo):
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    Image.fromarray(cat_photo).save(folder / "cat.jpg")
    Image.fromarray(astronaut_photo[::4, ::4]).save(folder / "sub" / "astronaut.png")
    (folder / "notes.txt").write_text("not an image, ignored by the folder search")
    return folder


def _segment(args, model):
    return runner.invoke(app, ["segment", *args, "--model", str(model), "--device", "cpu", "--dtype", "float32"])


def test_segment_a_folder_writes_every_format(tiny_checkpoint, images, tmp_path):
    out = tmp_path / "out"
    res = _segment([str(images), "-p", "cat, red car", "-t", "0.05", "-o", str(out),
                    "--format", "json,overlay,masks,cutout,labelmap"], tiny_checkpoint)
    assert res.exit_code == 0, res.output
    for stem, shape in [("cat", (300, 451)), ("sub/astronaut", (128, 128))]:
        data = json.loads((out / f"{stem}.json").read_text())
        seg = Segmentation.from_dict(data)
        assert (seg.height, seg.width) == shape
        assert [p["text"] for p in data["prompts"]] == ["cat", "red car"]
        assert data["source"].endswith((".jpg", ".png"))
        assert Image.open(out / f"{stem}.overlay.png").size == shape[::-1]
        assert Image.open(out / f"{stem}.cutout.png").mode == "RGBA"
        assert len(list((out / f"{stem}.masks").glob("*.png"))) == len(seg)
    assert "ok" in res.output


def test_bad_file_is_reported_and_skipped_with_nonzero_exit(tiny_checkpoint, images, tmp_path):
    (images / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "out"
    res = _segment([str(images), str(tmp_path / "missing.png"), "-p", "cat", "-t", "0.05", "-o", str(out)],
                   tiny_checkpoint)
    assert res.exit_code == 1
    assert "broken.jpg" in res.output and "missing.png" in res.output
    assert "2 inputs failed" in res.output
    assert (out / "cat.json").exists() and (out / "sub/astronaut.json").exists()  # good inputs still done
    assert not (out / "broken.json").exists()
    assert "Traceback" not in res.output


@pytest.mark.parametrize("prompt", ["", "  ", ", ,"])
def test_empty_prompt_is_a_one_line_error(tiny_checkpoint, images, tmp_path, prompt):
    res = _segment([str(images), "-p", prompt, "-o", str(tmp_path / "out")], tiny_checkpoint)
    assert res.exit_code == 2
    assert "prompt" in res.output and "empty" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, match", [
    (["--format", "json,gif"], "format"),
    (["--threshold", "1.5"], "--threshold"),
    (["--fill-holes", "2"], "fill_holes"),
])
def test_bad_options_are_one_line_errors(tiny_checkpoint, images, tmp_path, args, match):
    res = _segment([str(images), "-p", "cat", "-o", str(tmp_path / "out"), *args], tiny_checkpoint)
    assert res.exit_code == 2
    assert match in res.output
    assert "Traceback" not in res.output


def test_rerun_resumes_and_overwrite_redoes(tiny_checkpoint, images, tmp_path):
    out = tmp_path / "out"
    first = _segment([str(images), "-p", "cat", "-t", "0.05", "-o", str(out)], tiny_checkpoint)
    assert first.exit_code == 0, first.output
    stamp = os.stat(out / "cat.json").st_mtime_ns

    # Everything is done: nothing to do, so not even the model is loaded (a bad model path is fine).
    again = runner.invoke(app, ["segment", str(images), "-p", "cat", "-o", str(out), "--model", str(tmp_path / "nope")])
    assert again.exit_code == 0, again.output
    assert again.output.count("skipped") == 2
    assert os.stat(out / "cat.json").st_mtime_ns == stamp

    # A lost output is redone; the others stay skipped.
    (out / "cat.overlay.png").unlink()
    partial = _segment([str(images), "-p", "cat", "-t", "0.05", "-o", str(out)], tiny_checkpoint)
    assert partial.exit_code == 0 and partial.output.count("skipped") == 1
    assert (out / "cat.overlay.png").exists()

    forced = _segment([str(images), "-p", "cat", "-t", "0.05", "-o", str(out), "--overwrite"], tiny_checkpoint)
    assert forced.exit_code == 0 and "skipped" not in forced.output
    assert os.stat(out / "cat.json").st_mtime_ns != stamp


def test_same_file_names_in_two_inputs_do_not_collide(tiny_checkpoint, tmp_path, cat_photo):
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        Image.fromarray(cat_photo).save(tmp_path / d / "photo.png")
    out = tmp_path / "out"
    res = _segment([str(tmp_path / "a" / "photo.png"), str(tmp_path / "b" / "photo.png"), "-p", "cat", "-o", str(out)],
                   tiny_checkpoint)
    assert res.exit_code == 0, res.output
    assert (out / "photo.json").exists() and (out / "photo_2.json").exists()


def test_missing_model_directory_is_a_one_line_error(images, tmp_path):
    res = runner.invoke(app, ["segment", str(images), "-p", "cat", "-o", str(tmp_path / "o"),
                              "--model", str(tmp_path / "no" / "such" / "dir")])
    assert res.exit_code == 1
    assert "does not exist" in res.output
    assert "Traceback" not in res.output


def test_info_reports_versions_device_and_dtype(tiny_checkpoint):
    res = runner.invoke(app, ["info", "--json", "--model", str(tiny_checkpoint), "--device", "cpu"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["device"] == "cpu"
    assert data["dtype"] in ("bfloat16", "float32")
    assert data["model_cached"] == "local directory"
    assert data["transformers"].split(".")[0] >= "5"


@pytest.mark.slow
def test_installed_command_explains_a_gated_checkpoint_without_traceback(tmp_path, images):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    exe = os.path.join(os.path.dirname(sys.executable), "sam3studio")
    proc = subprocess.run([exe, "segment", str(images), "-p", "cat", "-o", str(tmp_path / "o"), "--device", "cpu"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 1
    assert hub_login_command() in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert len([line for line in proc.stderr.splitlines() if line.startswith("error:")]) == 1


def _silent_server() -> tuple[socket.socket, list[int], threading.Event]:
    """A TCP server on 127.0.0.1 that accepts connections, counts them, and never answers (a hub that hangs)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[int] = []
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            accepted.append(1)
            held.append(conn)  # keep it open and silent until the test ends
        for conn in held:
            conn.close()
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server, accepted, stop


@pytest.mark.slow
def test_an_unreachable_hub_costs_one_short_attempt(tmp_path, images):
    """No retries with back-off: one connection to the hub, one bounded wait, one line naming the way out."""
    server, accepted, stop = _silent_server()
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_ENDPOINT=f"http://127.0.0.1:{server.getsockname()[1]}",
               SAM3STUDIO_HUB_TIMEOUT_S="0.5")
    exe = os.path.join(os.path.dirname(sys.executable), "sam3studio")
    try:
        proc = subprocess.run([exe, "segment", str(images), "-p", "cat", "-o", str(tmp_path / "o"), "--device", "cpu"],
                              capture_output=True, text=True, env=env, timeout=300)
    finally:
        stop.set()
    assert proc.returncode == 1
    assert len(accepted) == 1, f"{len(accepted)} connections to the hub"
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    for hint in (hub_login_command(), "--model random", "cannot be reached"):
        assert hint in lines[0]


def test_overlay_differs_from_the_photo_where_masks_are(tiny_checkpoint, images, tmp_path):
    out = tmp_path / "out"
    res = _segment([str(images / "cat.jpg"), "-p", "cat", "-t", "0.05", "-o", str(out)], tiny_checkpoint)
    assert res.exit_code == 0, res.output
    seg = Segmentation.from_dict(json.loads((out / "cat.json").read_text()))
    overlay = np.asarray(Image.open(out / "cat.overlay.png").convert("RGB"))
    photo = np.asarray(Image.open(images / "cat.jpg").convert("RGB"))
    assert len(seg) > 0
    union = seg.masks.any(axis=0)
    assert np.abs(overlay[union].astype(int) - photo[union]).mean() > 5


def test_segment_with_a_chinese_prompt_shows_and_records_the_translation(tiny_checkpoint, images, tmp_path):
    out = tmp_path / "out"
    res = _segment([str(images / "cat.jpg"), "-p", "紅色的汽車", "-t", "0.05", "-o", str(out)], tiny_checkpoint)
    assert res.exit_code == 0, res.output
    assert "→ red car" in res.output
    data = json.loads((out / "cat.json").read_text())
    assert (data["prompts"][0]["text"], data["prompts"][0]["query"]) == ("紅色的汽車", "red car")


def test_pixel_and_byte_limits_refuse_one_image_and_keep_going(tiny_checkpoint, images, tmp_path):
    """cat.jpg is 451x300 = 135300 pixels, the astronaut 128x128 = 16384: a limit between them refuses only the cat."""
    out = tmp_path / "out"
    res = _segment([str(images), "-p", "cat", "-o", str(out), "--max-pixels", "135299"], tiny_checkpoint)
    assert res.exit_code == 1 and "1 input failed" in res.output
    assert "135300" in res.output or "pixels" in res.output
    assert (out / "sub/astronaut.json").exists() and not (out / "cat.json").exists()
    assert _segment([str(images), "-p", "cat", "-o", str(tmp_path / "ok"), "--max-pixels", "135300"],
                    tiny_checkpoint).exit_code == 0
    size_mb = (images / "cat.jpg").stat().st_size / 2**20
    res = _segment([str(images), "-p", "cat", "-o", str(tmp_path / "b"), "--max-mb", f"{size_mb * 0.99:.6f}"], tiny_checkpoint)
    assert res.exit_code == 1 and "cat.jpg" in res.output


def test_version():
    from sam3studio import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"sam3studio {__version__}"


@pytest.mark.parametrize("command, expected", [
    ("serve", ["[default: (7860)]", "SAM3STUDIO_PORT", "[default: (127.0.0.1)]", "SAM3STUDIO_MODEL",
               "[default: (facebook/sam3)]", "SAM3STUDIO_API_KEY"]),
    ("bench", ["[default: (3, 1 with --quick)]", "[default: random]"]),
    ("batch", ["[default: (RAY_ADDRESS, else a new local Ray)]"]),
])
def test_help_shows_defaults_and_environment_variables(command, expected):
    res = runner.invoke(app, [command, "--help"], env={"COLUMNS": "200", "NO_COLOR": "1"}, terminal_width=200)
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    for needle in expected:
        assert needle in text, needle
    assert not re.search(r"\w \.(\s|$)", text)  # a default swallowed by markup used to leave "Port ."


@pytest.mark.parametrize("n, word, expected", [(0, "frame", "0 frames"), (1, "frame", "1 frame"),
                                               (2, "input", "2 inputs"), (1, "instance", "1 instance")])
def test_plural(n, word, expected):
    from sam3studio.cli.common import plural

    assert plural(n, word) == expected
