"""The SAM 3 agent: a language model in a loop that calls SAM 3, for queries a noun phrase cannot express.

"The person second from the left holding an umbrella" is not a SAM 3 prompt, but a language model can
break it down: segment "person" and "umbrella", compare the boxes, look at close-ups, and pick the
instances that answer. `run_agent` runs that loop against any OpenAI-compatible chat endpoint (vLLM,
Ollama, llama.cpp's server, a hosted API) through the official ``openai`` client, with non-streaming
chat completions and standard function calling. The model is offered four tools:

- ``segment_phrase(text)``: SAM 3 on one noun phrase; answers a JSON text with the prompt's presence
  score, count and ``no_match``, and ``instances`` (``id``, ``prompt``, ``score``, ``box``,
  ``box_normalized``, ``area_fraction``). Ids are integers unique within the run, across calls.
- ``examine_masks(ids)``: close-ups of those instances (image parts, for vision models);
- ``select_masks(ids)``: the final answer;
- ``report_no_mask()``: the final answer when nothing matches.

With ``vision`` (the default), the image and the marked results go to the model as image parts (a
user message after the tool results, since tool messages carry text only).

Limits and errors: at most ``max_turns`` model calls and ``time_budget_s`` in all; an unreachable
endpoint, an HTTP error, or a second set of tool arguments that is not valid JSON (the first is told
back to the model) ends the run with `AgentError` (one sentence). `sam3studio agent` maps it to exit 1.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import openai
from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from sam3studio.errors import InputError, Sam3StudioError
from sam3studio.export import write_outputs
from sam3studio.io.files import atomic_write_json
from sam3studio.io.images import load_image
from sam3studio.llm.marks import close_up, encode_jpeg, marked_image
from sam3studio.llm.tools import instance_body
from sam3studio.results import PromptResult, Segmentation

__all__ = ["AgentError", "AgentResult", "run_agent"]

MAX_PER_PHRASE = 20  # instances one segment_phrase call returns
MAX_EXAMINE = 6  # close-ups per examine_masks call
IMAGE_SIDE = 1024  # longer side of the pictures sent to the model


class AgentError(Sam3StudioError):
    """The agent could not finish (LLM unreachable, HTTP error, malformed tool calls, limits): one sentence."""


class _Phrase(BaseModel):
    text: str = Field(min_length=1, max_length=200, description="A short noun phrase, e.g. 'person' or 'red mug'")


class _Ids(BaseModel):
    ids: list[int] = Field(min_length=1, max_length=100, description="Instance ids from segment_phrase")


class _Reason(BaseModel):
    reason: str | None = Field(None, max_length=500, description="Why nothing matches (optional)")


_TOOL_ARGS: dict[str, type[BaseModel]] = {"segment_phrase": _Phrase, "examine_masks": _Ids, "select_masks": _Ids,
                                          "report_no_mask": _Reason}
_TOOL_DOCS = {
    "segment_phrase": "Segment every instance of one short noun phrase in the image with SAM 3. Returns the phrase's "
                      "presence score, count, no_match, and instances with ids, scores and boxes [x1, y1, x2, y2] "
                      "in pixels (origin top-left).",
    "examine_masks": "Look at close-ups of instances (by id) to check attributes before deciding.",
    "select_masks": "Final answer: the ids of the instances that answer the query.",
    "report_no_mask": "Final answer: nothing in the image answers the query.",
}


def _tool_specs(vision: bool) -> list[dict[str, Any]]:
    names = [n for n in _TOOL_ARGS if vision or n != "examine_masks"]
    specs = []
    for name in names:
        schema = _TOOL_ARGS[name].model_json_schema()
        schema.pop("title", None)
        specs.append({"type": "function", "function": {"name": name, "description": _TOOL_DOCS[name],
                                                       "parameters": schema}})
    return specs


def _system_prompt(vision: bool) -> str:
    look = ("You see the image, and after each segment_phrase call an image with each instance's id drawn on its "
            "mask; examine_masks shows close-ups. " if vision else "You cannot see the image: reason over the numbers. ")
    return (
        "You find the objects in an image that answer a user's query, using SAM 3, a model that segments every "
        "instance of a short noun phrase. " + look +
        "Work in steps: call segment_phrase with the simplest noun phrase for the kind of object the query is "
        "about (not the whole query); if nothing is found, try a synonym or a broader category. Use the boxes "
        "(x1, y1, x2, y2 in pixels, origin top-left, x to the right, y down), scores and areas to check every "
        "condition of the query: position, order, size, attributes, relations to other objects (segment those "
        "too when needed). Finish with exactly one call: select_masks with the ids that answer the query, or "
        "report_no_mask when nothing does. Ids are unique across the whole conversation; use only ids a tool "
        "returned."
    )


@dataclass
class _Mask:
    id: int
    phrase: int  # index into the run's phrases
    score: float
    box: np.ndarray
    mask: np.ndarray


@dataclass
class AgentResult:
    """What a run ended with. ``segmentation`` holds the selected instances (empty after report_no_mask);
    ``selected_ids[i]`` is the run id of its instance ``i``."""

    outcome: Literal["selected", "no_mask"]
    query: str
    selected_ids: list[int]
    segmentation: Segmentation
    turns: int
    elapsed_s: float
    reason: str | None = None
    trace: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def to_dict(self, source: str | None = None, model: str | None = None) -> dict[str, Any]:
        """`Segmentation.to_dict()` of the selection (the schema of `sam3studio segment`'s JSON) plus the run."""
        data = self.segmentation.to_dict()
        if source is not None:
            data["source"] = source
        data["query"] = self.query
        data["agent"] = {"outcome": self.outcome, "selected_ids": self.selected_ids, "reason": self.reason,
                         "turns": self.turns, "elapsed_s": round(self.elapsed_s, 3), "llm_model": model}
        return data


def _data_url(rgb: np.ndarray) -> str:
    h, w = rgb.shape[:2]
    if max(h, w) > IMAGE_SIDE:
        scale = IMAGE_SIDE / max(h, w)
        rgb = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                     Image.Resampling.LANCZOS))
    return "data:image/jpeg;base64," + encode_jpeg(rgb)


def _image_part(rgb: np.ndarray) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": _data_url(rgb)}}


def _one_line(text: Any, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Run:
    """One agent run: the conversation, the masks found so far, the trace."""

    def __init__(self, rgb: np.ndarray, query: str, segmenter: Any, client: openai.OpenAI, model: str, *, threshold: float,
                 vision: bool, max_turns: int, time_budget_s: float, request_timeout_s: float, base_url: str) -> None:
        self.rgb, self.query, self.segmenter, self.client, self.model = rgb, query, segmenter, client, model
        self.threshold, self.vision, self.max_turns = threshold, vision, max_turns
        self.request_timeout_s, self.base_url = request_timeout_s, base_url
        self.t0 = time.monotonic()
        self.deadline = self.t0 + time_budget_s
        self.time_budget_s = time_budget_s
        self.phrases: list[PromptResult] = []
        self.masks: dict[int, _Mask] = {}
        self.trace: list[dict[str, Any]] = []
        self.malformed = 0
        self.tools = _tool_specs(vision)
        h, w = rgb.shape[:2]
        intro = (f"Query: {query}\nThe image is {w}x{h} pixels; boxes use the pixels of this original size.")
        content: Any = [{"type": "text", "text": intro}, _image_part(rgb)] if vision else intro
        self.messages: list[dict[str, Any]] = [{"role": "system", "content": _system_prompt(vision)},
                                               {"role": "user", "content": content}]

    # ------------------------------------------------------------------ the model
    def _complete(self) -> Any:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise AgentError(f"the agent ran out of its time budget of {self.time_budget_s:g} s after "
                             f"{len(self.trace)} turn(s) (--time-budget)")
        timeout = min(self.request_timeout_s, left)
        try:
            response = self.client.chat.completions.create(model=self.model, messages=self.messages, tools=self.tools,
                                                           tool_choice="auto", timeout=timeout)
        except openai.APITimeoutError:
            raise AgentError(f"the LLM at {self.base_url} did not answer within {timeout:.0f} s") from None
        except openai.APIConnectionError as exc:
            cause = _one_line(exc.__cause__ or exc, 100)
            raise AgentError(f"cannot reach the LLM at {self.base_url} ({cause}); is it running, and is "
                             "--llm-base-url the API root (e.g. http://localhost:8000/v1)?") from None
        except openai.APIStatusError as exc:
            hint = {401: "; check --llm-api-key", 403: "; check --llm-api-key",
                    404: "; check --llm-base-url (the API root, e.g. http://localhost:8000/v1) and --llm-model",
                    400: "; the model may not support tools or images (try --text-only)"}.get(exc.status_code, "")
            raise AgentError(f"the LLM at {self.base_url} answered HTTP {exc.status_code}: "
                             f"{_one_line(exc.message, 160)}{hint}") from None
        except openai.APIError as exc:  # e.g. a body that is not a chat completion
            raise AgentError(f"the LLM's answer could not be read: {_one_line(exc, 160)}") from None
        if not getattr(response, "choices", None):
            raise AgentError(f"the LLM at {self.base_url} answered without a message")
        return response.choices[0]

    # ------------------------------------------------------------------ tools
    def _segment_phrase(self, args: _Phrase) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        seg = self.segmenter.segment(self.rgb, [args.text], score_threshold=self.threshold, max_instances=MAX_PER_PHRASE)
        prompt = seg.prompts[0]
        self.phrases.append(prompt)
        ids = []
        instances = []
        for inst in seg:
            mid = len(self.masks)
            self.masks[mid] = _Mask(mid, len(self.phrases) - 1, inst.score, seg.boxes[inst.id], inst.mask)
            ids.append(mid)
            body = instance_body(inst.to_dict(include_mask=False), seg.width, seg.height)
            instances.append({"id": mid, "prompt": body["prompt"], "score": body["score"], "box": body["box"],
                              "box_normalized": body["box_normalized"], "area_fraction": body["area_fraction"]})
        result = {"text": prompt.text, "query": prompt.query, "presence_score": round(float(prompt.presence_score), 4),
                  "count": len(instances), "no_match": not instances, "instances": instances}
        images = []
        if self.vision and instances:
            images = [{"type": "text", "text": f"segment_phrase('{prompt.text}'): ids {ids} drawn on their masks"},
                      _image_part(marked_image(self.rgb, seg, ids, IMAGE_SIDE))]
        return result, images

    def _known(self, ids: list[int]) -> list[int]:
        unknown = [i for i in ids if i not in self.masks]
        if unknown:
            known = sorted(self.masks) or "none yet: call segment_phrase first"
            raise ValueError(f"unknown id(s) {unknown}; the ids found so far are {known}")
        return list(dict.fromkeys(ids))

    def _examine(self, args: _Ids) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        ids = self._known(args.ids)[:MAX_EXAMINE]
        seg = self._segmentation(ids)
        parts: list[dict[str, Any]] = [{"type": "text", "text": f"examine_masks: close-ups of ids {ids}"}]
        parts += [_image_part(close_up(self.rgb, seg, i, str(mid))) for i, mid in enumerate(ids)]
        return {"examined": ids, "note": "the close-ups follow as images"
                + (f"; at most {MAX_EXAMINE} per call" if len(args.ids) > MAX_EXAMINE else "")}, parts

    def _segmentation(self, ids: list[int]) -> Segmentation:
        """The instances ``ids`` (in that order) as one `Segmentation`; every phrase of the run is listed."""
        chosen = [self.masks[i] for i in ids]
        counts = np.bincount([m.phrase for m in chosen], minlength=len(self.phrases)) if chosen else [0] * len(self.phrases)
        prompts, index = [], {}
        for p, prompt in enumerate(self.phrases):  # one entry per distinct phrase, the first call's presence
            key = prompt.text
            if key not in index:
                index[key] = len(prompts)
                prompts.append(PromptResult(prompt.text, prompt.presence_score, 0, prompt.query, prompt.unknown_words))
            k = index[key]
            prompts[k] = PromptResult(prompts[k].text, prompts[k].presence_score, prompts[k].count + int(counts[p]),
                                      prompts[k].query, prompts[k].unknown_words)
        h, w = self.rgb.shape[:2]
        if not chosen:
            return Segmentation.empty(w, h, prompts)
        return Segmentation(width=w, height=h, prompts=prompts, masks=np.stack([m.mask for m in chosen]),
                            boxes=np.stack([m.box for m in chosen]), scores=np.array([m.score for m in chosen]),
                            prompt_ids=np.array([index[self.phrases[m.phrase].text] for m in chosen]))

    def _call_tool(self, name: str, raw: str | None) -> tuple[dict[str, Any] | None, Any, list[dict[str, Any]]]:
        """(the final answer if this call ends the run, what the tool answers, image parts for the model)."""
        try:
            parsed = json.loads(raw) if raw and raw.strip() else {}
        except ValueError as exc:
            self.malformed += 1
            if self.malformed >= 2:
                raise AgentError(f"the LLM sent tool arguments that are not valid JSON a second time ({name}: "
                                 f"{_one_line(raw, 60)!r}); stopping") from None
            return None, {"error": f"the arguments are not valid JSON ({exc}); send a JSON object, e.g. "
                                   + ('{"text": "person"}' if name == "segment_phrase" else '{"ids": [0, 2]}')}, []
        if name not in _TOOL_ARGS or (name == "examine_masks" and not self.vision):
            return None, {"error": f"unknown tool {name!r}; the tools are {[t['function']['name'] for t in self.tools]}"}, []
        try:
            args = _TOOL_ARGS[name].model_validate(parsed)
            if name == "segment_phrase":
                result, images = self._segment_phrase(args)
                return None, result, images
            if name == "examine_masks":
                result, images = self._examine(args)
                return None, result, images
            if name == "select_masks":
                ids = self._known(args.ids)
                return {"outcome": "selected", "ids": ids}, {"selected": ids}, []
            return {"outcome": "no_mask", "ids": [], "reason": args.reason}, {"reported": "no mask"}, []
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'arguments'}: {e['msg']}" for e in exc.errors())
            return None, {"error": f"invalid arguments for {name}: {problems}"}, []
        except (ValueError, Sam3StudioError) as exc:
            return None, {"error": str(exc)}, []

    # ------------------------------------------------------------------ the loop
    def _turn(self, number: int) -> dict[str, Any] | None:
        t0 = time.monotonic()
        choice = self._complete()
        message = choice.message
        calls = list(message.tool_calls or [])
        entry: dict[str, Any] = {"turn": number, "llm_s": round(time.monotonic() - t0, 3),
                                 "finish_reason": choice.finish_reason,
                                 "message": {"content": message.content,
                                             "tool_calls": [{"id": c.id, "name": c.function.name,
                                                             "arguments": c.function.arguments} for c in calls]},
                                 "tools": []}
        self.trace.append(entry)
        if not calls:
            self.messages.append({"role": "assistant", "content": message.content or ""})
            self.messages.append({"role": "user", "content": "Answer by calling a tool: segment_phrase to look, then "
                                  "select_masks with the ids, or report_no_mask."})
            return None
        self.messages.append({"role": "assistant", "content": message.content,
                              "tool_calls": [{"id": c.id, "type": "function",
                                              "function": {"name": c.function.name, "arguments": c.function.arguments}}
                                             for c in calls]})
        images: list[dict[str, Any]] = []
        for call in calls:
            t1 = time.monotonic()
            try:
                final, result, parts = self._call_tool(call.function.name, call.function.arguments)
            except AgentError as exc:
                entry["tools"].append({"name": call.function.name, "arguments": call.function.arguments,
                                       "error": str(exc)})
                raise
            entry["tools"].append({"name": call.function.name, "arguments": call.function.arguments, "result": result,
                                   "images": sum(p["type"] == "image_url" for p in parts),
                                   "tool_s": round(time.monotonic() - t1, 3)})
            if final is not None:
                return final
            self.messages.append({"role": "tool", "tool_call_id": call.id,
                                  "content": json.dumps(result, ensure_ascii=False)})
            images += parts
        if images:
            self.messages.append({"role": "user", "content": images})
        return None

    def run(self) -> dict[str, Any]:
        for number in range(1, self.max_turns + 1):
            final = self._turn(number)
            if final is not None:
                return final
        raise AgentError(f"the LLM gave no final answer (select_masks or report_no_mask) within {self.max_turns} "
                         "turns (--max-turns)")


def run_agent(image: Any, query: str, *, segmenter: Any, llm_base_url: str, llm_model: str, llm_api_key: str | None = None,
              max_turns: int = 10, time_budget_s: float = 300.0, out_dir: str | Path | None = None,
              threshold: float = 0.5, vision: bool = True, request_timeout_s: float = 120.0, max_retries: int = 2,
              source: str | None = None) -> AgentResult:
    """Answer ``query`` on ``image`` (anything `load_image` reads) with the LLM at ``llm_base_url`` calling SAM 3.

    ``segmenter`` is a loaded `Segmenter` (`load_segmenter`). With ``out_dir``, writes ``result.json``
    (`AgentResult.to_dict`: the schema of `sam3studio segment`'s JSON plus ``query`` and ``agent``),
    ``result.overlay.png`` and ``trace.json`` (every turn: the model's message, each tool call, what the
    tool answered, timings); ``trace.json`` is written even when the run fails.

    Raises:
        AgentError: the LLM is unreachable or answers an HTTP error, sends invalid JSON arguments twice,
            or gives no final answer within ``max_turns`` or ``time_budget_s``.
        InputError: the image cannot be read, or the query is empty.
    """
    if not isinstance(query, str) or not query.strip():
        raise InputError("the query is empty: say what to find, e.g. 'the second mug from the left'")
    if max_turns < 1 or time_budget_s <= 0:
        raise InputError("max_turns must be at least 1 and time_budget_s positive")
    rgb = load_image(image)
    client = openai.OpenAI(base_url=llm_base_url, api_key=llm_api_key or "not-needed", max_retries=max_retries,
                           timeout=request_timeout_s)
    run = _Run(rgb, query.strip(), segmenter, client, llm_model, threshold=threshold, vision=vision, max_turns=max_turns,
               time_budget_s=time_budget_s, request_timeout_s=request_timeout_s, base_url=llm_base_url)
    out = Path(out_dir) if out_dir is not None else None
    try:
        final = run.run()
    finally:
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "trace.json", {"query": query, "llm_model": llm_model, "llm_base_url": llm_base_url,
                                                  "turns": run.trace})
    result = AgentResult(outcome=final["outcome"], query=run.query, selected_ids=final["ids"],
                         segmentation=run._segmentation(final["ids"]), turns=len(run.trace),
                         elapsed_s=time.monotonic() - run.t0, reason=final.get("reason"), trace=run.trace)
    if out is not None:
        paths = write_outputs(result.segmentation, rgb, out, "result", ("overlay",))
        atomic_write_json(out / "result.json", result.to_dict(source=source, model=llm_model))
        result.files = {"result": out / "result.json", "overlay": paths["overlay"], "trace": out / "trace.json"}
    return result
