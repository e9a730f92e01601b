"""The agent loop against a scripted OpenAI-compatible server (real HTTP on 127.0.0.1, the real `openai` client),
through `run_agent` and through `sam3studio agent`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from _scripted_llm import ScriptedLLM, Step, call, last_tool_result
from sam3studio.cli import app
from sam3studio.llm.agent import AgentError, run_agent
from sam3studio.results import rle_to_mask
from sam3studio.schemas import SegmentationOut

runner = CliRunner()
LOW = 0.01  # the tiny model's scores are low: find something


@pytest.fixture(scope="module")
def cat_file(tmp_path_factory, cat_photo):
    path = tmp_path_factory.mktemp("agent") / "cat.png"
    Image.fromarray(cat_photo).save(path)
    return path


def _select_first(body):
    return call("select_masks", {"ids": [last_tool_result(body)["instances"][0]["id"]]})


def _agent_args(image, llm, tiny_checkpoint, out, *extra):
    return ["agent", str(image), "the cat on the left", "--llm-base-url", llm.url, "--llm-model", "scripted",
            "--model", str(tiny_checkpoint), "--device", "cpu", "--out", str(out), "--threshold", str(LOW), *extra]


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def test_selection_writes_result_overlay_and_trace(tmp_path, segmenter, cat_file, cat_photo):
    with ScriptedLLM([call("segment_phrase", {"text": "cat"}), _select_first]) as llm:
        result = run_agent(cat_file, "the cat on the left", segmenter=segmenter, llm_base_url=llm.url,
                           llm_model="scripted", out_dir=tmp_path, threshold=LOW, source=str(cat_file))
    assert result.outcome == "selected" and result.selected_ids == [0] and result.turns == 2
    data = json.loads((tmp_path / "result.json").read_text())
    SegmentationOut.model_validate(data)  # the schema of `sam3studio segment`'s JSON
    assert len(data["instances"]) == 1 and data["prompts"][0]["text"] == "cat" and data["prompts"][0]["count"] == 1
    assert rle_to_mask(data["instances"][0]["mask"]).shape == cat_photo.shape[:2]
    assert data["query"] == "the cat on the left" and data["agent"]["selected_ids"] == [0]
    assert Image.open(tmp_path / "result.overlay.png").size == (cat_photo.shape[1], cat_photo.shape[0])
    trace = json.loads((tmp_path / "trace.json").read_text())["turns"]
    assert [t["tools"][0]["name"] for t in trace] == ["segment_phrase", "select_masks"]
    assert trace[0]["tools"][0]["result"]["instances"][0]["id"] == 0 and "llm_s" in trace[0]

    first, second = llm.requests
    offered = {t["function"]["name"] for t in first["tools"]}
    assert offered == {"segment_phrase", "examine_masks", "select_masks", "report_no_mask"}
    assert any(part["type"] == "image_url" for part in first["messages"][1]["content"])  # the image, for vision models
    tool_answer = json.loads(next(m for m in second["messages"] if m["role"] == "tool")["content"])
    assert {"presence_score", "count", "no_match", "instances"} <= tool_answer.keys()
    assert {"id", "prompt", "score", "box", "box_normalized"} <= tool_answer["instances"][0].keys()
    marked = second["messages"][-1]  # the marked result follows the tool message as an image part
    assert marked["role"] == "user" and any(p["type"] == "image_url" for p in marked["content"])


def test_ids_are_unique_across_calls_and_examine_sends_close_ups(tmp_path, segmenter, cat_file):
    def examine(body):
        return call("examine_masks", {"ids": [0, last_tool_result(body)["instances"][-1]["id"]]})

    def select_both(body):
        return call("select_masks", {"ids": [0, last_tool_result(body)["examined"][-1]]})

    script = [call("segment_phrase", {"text": "cat"}), call("segment_phrase", {"text": "dog"}), examine, select_both]
    with ScriptedLLM(script) as llm:
        result = run_agent(cat_file, "both animals", segmenter=segmenter, llm_base_url=llm.url, llm_model="scripted",
                           out_dir=tmp_path, threshold=LOW)
    trace = result.trace
    cat_ids = [i["id"] for i in trace[0]["tools"][0]["result"]["instances"]]
    dog_ids = [i["id"] for i in trace[1]["tools"][0]["result"]["instances"]]
    assert cat_ids and dog_ids and not set(cat_ids) & set(dog_ids) and min(dog_ids) == max(cat_ids) + 1
    assert trace[2]["tools"][0]["images"] == 2
    assert result.selected_ids == [0, dog_ids[-1]]
    assert [p.text for p in result.segmentation.prompts] == ["cat", "dog"]
    assert [p.count for p in result.segmentation.prompts] == [1, 1]


def test_no_match_reports_no_mask_and_exits_0(tmp_path, tiny_checkpoint, cat_file):
    def no_mask_if_nothing(body):
        answer = last_tool_result(body)
        assert answer["no_match"] is True and answer["instances"] == []
        return call("report_no_mask", {"reason": "no cat"})

    with ScriptedLLM([call("segment_phrase", {"text": "cat"}), no_mask_if_nothing]) as llm:
        out = tmp_path / "out"
        res = runner.invoke(app, [*_agent_args(cat_file, llm, tiny_checkpoint, out)[:-2], "--threshold", "1.0"])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "result.json").read_text())
    assert data["instances"] == [] and data["agent"]["outcome"] == "no_mask" and data["prompts"][0]["count"] == 0
    assert "No object answers the query" in res.output


def test_malformed_arguments_are_told_once_then_end_the_run(tmp_path, tiny_checkpoint, cat_file):
    with ScriptedLLM([call("segment_phrase", "{text: cat"), call("select_masks", "[0, 1")]) as llm:
        res = runner.invoke(app, _agent_args(cat_file, llm, tiny_checkpoint, tmp_path / "out"))
    assert res.exit_code == 1
    lines = _error_lines(res.output)
    assert len(lines) == 1 and "not valid JSON a second time" in lines[0], res.output
    assert len(llm.requests) == 2  # no loop: the second malformed call ends it
    told = json.loads(next(m for m in llm.requests[1]["messages"] if m["role"] == "tool")["content"])
    assert "not valid JSON" in told["error"]
    assert (tmp_path / "out" / "trace.json").is_file() and not (tmp_path / "out" / "result.json").exists()


def test_bad_ids_and_plain_text_are_told_back(tmp_path, segmenter, cat_file):
    script = [Step(content="I think it is a cat."), call("select_masks", {"ids": [7]}),
              call("segment_phrase", {"text": ""}), call("report_no_mask")]
    with ScriptedLLM(script) as llm:
        result = run_agent(cat_file, "a cat", segmenter=segmenter, llm_base_url=llm.url, llm_model="scripted")
    assert result.outcome == "no_mask" and result.turns == 4
    answers = [m for m in llm.requests[-1]["messages"] if m["role"] == "tool"]
    assert "unknown id(s) [7]" in json.loads(answers[0]["content"])["error"]
    assert "invalid arguments for segment_phrase" in json.loads(answers[1]["content"])["error"]
    assert llm.requests[1]["messages"][-1]["role"] == "user"  # the nudge after a turn without a tool call


def test_turn_limit(tmp_path, tiny_checkpoint, cat_file):
    with ScriptedLLM([call("segment_phrase", {"text": "cat"})]) as llm:
        res = runner.invoke(app, [*_agent_args(cat_file, llm, tiny_checkpoint, tmp_path), "--max-turns", "3"])
    assert res.exit_code == 1 and len(llm.requests) == 3
    assert "within 3 turns" in _error_lines(res.output)[0]


def test_llm_down_and_http_errors(segmenter, cat_file):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(AgentError, match="cannot reach the LLM"):
        run_agent(cat_file, "a cat", segmenter=segmenter, llm_base_url=f"http://127.0.0.1:{port}/v1", llm_model="m",
                  max_retries=0)
    with ScriptedLLM([Step(status=401, error="bad key")]) as llm, pytest.raises(AgentError, match="HTTP 401.*llm-api-key"):
        run_agent(cat_file, "a cat", segmenter=segmenter, llm_base_url=llm.url, llm_model="m")
    with ScriptedLLM([call("report_no_mask")]) as llm, pytest.raises(AgentError, match="HTTP 404.*llm-base-url"):
        run_agent(cat_file, "a cat", segmenter=segmenter, llm_base_url=llm.url.removesuffix("/v1"), llm_model="m")


def test_text_only_offers_no_examine_and_sends_no_images(segmenter, cat_file):
    with ScriptedLLM([call("segment_phrase", {"text": "cat"}), _select_first]) as llm:
        result = run_agent(cat_file, "a cat", segmenter=segmenter, llm_base_url=llm.url, llm_model="m", vision=False,
                           threshold=LOW)
    assert result.outcome == "selected"
    assert "examine_masks" not in {t["function"]["name"] for t in llm.requests[0]["tools"]}
    assert "image_url" not in json.dumps(llm.requests[1]["messages"])


def test_the_command_in_a_subprocess(tmp_path, tiny_checkpoint, cat_file):
    """As the independent check runs it: the console script, a scripted LLM, DIR/result.json, no --threshold (the
    tiny checkpoint is marked untrained, so the agent starts at the untrained threshold, where it finds masks)."""
    with ScriptedLLM([call("segment_phrase", {"text": "cat"}), _select_first]) as llm:
        script = Path(sys.executable).with_name("sam3studio")
        args = _agent_args(cat_file, llm, tiny_checkpoint, tmp_path / "run")
        args = args[:args.index("--threshold")]
        proc = subprocess.run([str(script), *args],
                              capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert "untrained weights: detection threshold 0.25" in " ".join(proc.stderr.split())
    assert json.loads((tmp_path / "run" / "result.json").read_text())["agent"]["selected_ids"] == [0]
