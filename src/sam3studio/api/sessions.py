"""Video session routes under ``/api/v1/sessions``: open a video, prompt and click on any frame, propagate, read, close.

The sessions live in `sam3studio.sessions.SessionManager` (bounded, idle timeout, admission gate shared
with image requests), the same manager the UI's video editor uses. Every instance carries ``object_id``
(the library's ``track_id``), stable across frames and across text and click objects.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from sam3studio.api.bodies import SESSION_BODY, read_session_request
from sam3studio.api.deps import get_sessions, get_settings, run_unless_gone
from sam3studio.api.errors import ApiError
from sam3studio.api.schemas import (
    ErrorResponse,
    SessionBoxRequest,
    SessionClicksRequest,
    SessionCreated,
    SessionFrame,
    SessionObjectRemoved,
    SessionObjectResult,
    SessionPromptsRequest,
    SessionPromptsResult,
    SessionPropagateRequest,
    SessionState,
)
from sam3studio.results import mask_to_rle
from sam3studio.sessions import SessionManager
from sam3studio.settings import Settings

__all__ = ["router"]

router = APIRouter(prefix="/sessions", tags=["sessions"])


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    what = {400: "bad input (frame out of range: code frame_out_of_range)", 404: "no such session or object",
            409: "the session is propagating (busy) or not propagated yet (not_ready); an image-only checkpoint "
                 "(not_available)",
            410: "the session ended (idle timeout or a server restart)", 413: "too large",
            415: "neither multipart/form-data nor application/json", 422: "missing, unknown or out-of-range fields",
            503: "too many sessions, or the model is busy"}
    return {c: {"model": ErrorResponse, "description": what[c]} for c in codes}


def _instance(inst: Any) -> dict[str, Any]:
    """A library `FrameInstance` as the API's instance."""
    return {"object_id": int(inst.track_id), "label": inst.prompt, "score": round(float(inst.score), 6),
            "box_xyxy": [round(float(v), 2) for v in inst.box], "area": inst.area, "mask": mask_to_rle(inst.mask)}


def _object_result(frame: int, inst: Any) -> dict[str, Any]:
    """An input's answer: its object's id and mask on that frame (null when the tracker found nothing there)."""
    body = _instance(inst) if inst.area else None
    return {"object_id": int(inst.track_id), "frame": frame, "mask": body["mask"] if body else None, "instance": body}


def _frame_body(manager: SessionManager, sid: str, index: int) -> dict[str, Any]:
    session = manager.get(sid).session
    stored = session.stored(index)
    return {"frame": index, "timestamp": round(session.frames.timestamps[index], 6), "width": session.width,
            "height": session.height,
            "instances": [{"object_id": s.object_id, "label": session.label_of(s.object_id), "score": round(s.score, 6),
                           "box_xyxy": list(s.box), "area": s.area, "mask": s.rle} for s in stored]}


@router.post("", status_code=201, response_model=SessionCreated, openapi_extra=SESSION_BODY,
             responses=_errors(400, 404, 409, 413, 415, 422, 503))
async def create_session(request: Request, manager: SessionManager = Depends(get_sessions),
                         settings: Settings = Depends(get_settings)) -> Any:
    """Open a session on a video: multipart `video` upload, or JSON `video_url` or `job_id` (a done video job,
    whose tracks become the session's objects). Answers 201 with the id and the video's frames, fps and size.

    The video must be within the video jobs' limits (bytes, duration, frames, pixels); at most
    `max_sessions` sessions are open at once (beyond: 503).
    """
    write_input, suffix, job_id = await read_session_request(request, settings, manager.check_capacity)
    handle = await run_in_threadpool(lambda: manager.create(write_input, suffix, job_id=job_id))
    s = handle.session
    return JSONResponse(status_code=201, headers={"Location": f"/api/v1/sessions/{handle.id}"},
                        content={"id": handle.id, "frames": s.frame_count, "fps": round(s.fps, 4), "width": s.width,
                                 "height": s.height})


@router.get("/{sid}", response_model=SessionState, responses=_errors(404, 410))
async def session_state(sid: str, manager: SessionManager = Depends(get_sessions)) -> Any:
    """The session's state (`idle`, `propagating`, `failed`), propagation progress, objects and video facts."""
    return await run_in_threadpool(manager.status, sid)


@router.post("/{sid}/prompts", response_model=SessionPromptsResult, responses=_errors(400, 404, 409, 410, 413, 503))
async def add_prompts(sid: str, body: SessionPromptsRequest, request: Request,
                      manager: SessionManager = Depends(get_sessions)) -> Any:
    """Find every instance of `prompts` on `frame`; each becomes a new object (answered with its mask there)."""
    found = await run_unless_gone(request, lambda cancelled: manager.add_text(sid, body.frame, body.prompts,
                                                                              body.threshold, cancelled))
    return {"frame": body.frame, "objects": [_instance(i) for i in found if i.area]}


@router.post("/{sid}/clicks", response_model=SessionObjectResult, responses=_errors(400, 404, 409, 410, 413, 503))
async def add_clicks(sid: str, body: SessionClicksRequest, request: Request,
                     manager: SessionManager = Depends(get_sessions)) -> Any:
    """Clicks on `frame`: a new object (no `object_id`) or a correction of one; answers its mask on that frame."""
    inst = await run_unless_gone(request, lambda cancelled: manager.add_clicks(
        sid, body.frame, body.points, body.point_labels, body.object_id, body.label, cancelled))
    return _object_result(body.frame, inst)


@router.post("/{sid}/boxes", response_model=SessionObjectResult, responses=_errors(400, 404, 409, 410, 413, 503))
async def add_box(sid: str, body: SessionBoxRequest, request: Request,
                  manager: SessionManager = Depends(get_sessions)) -> Any:
    """A box on `frame`: a new object (no `object_id`) or that object redrawn there; answers its mask on that frame."""
    inst = await run_unless_gone(request, lambda cancelled: manager.add_box(
        sid, body.frame, body.box, body.object_id, body.label, cancelled))
    return _object_result(body.frame, inst)


@router.delete("/{sid}/objects/{object_id}", response_model=SessionObjectRemoved, responses=_errors(404, 409, 410))
async def remove_object(sid: str, object_id: int, manager: SessionManager = Depends(get_sessions)) -> Any:
    """Remove an object from the session and from every stored frame at once."""
    removed = await run_in_threadpool(manager.remove_object, sid, object_id)
    return {"object_id": object_id, "removed_frames": removed}


@router.post("/{sid}/propagate", status_code=202, responses=_errors(400, 404, 409, 410))
async def propagate(sid: str, body: SessionPropagateRequest, manager: SessionManager = Depends(get_sessions)) -> Any:
    """Start propagating (`forward`, `backward` or `both` from `start_frame`); 202 at once, progress on GET /{id}."""
    handle = await run_in_threadpool(manager.propagate, sid, body.direction, body.start_frame, body.object_ids)
    return JSONResponse(status_code=202, headers={"Location": f"/api/v1/sessions/{sid}"},
                        content={"state": "propagating", "progress": {"done": handle.done, "total": handle.total}})


@router.get("/{sid}/frames/{index}", response_model=SessionFrame, responses=_errors(400, 404, 410))
async def frame(sid: str, index: int, manager: SessionManager = Depends(get_sessions)) -> Any:
    """Every object on frame `index` (masks as COCO RLE), as stored now (also during a propagation)."""
    return await run_in_threadpool(_frame_body, manager, sid, index)


@router.get("/{sid}/result", responses={200: {"description": "summary + frames, or YouTube-VIS JSON"},
                                        **_errors(404, 409, 410)})
async def result(sid: str, manager: SessionManager = Depends(get_sessions),
                 format: str = Query("json", pattern="^(json|ytvis)$",
                                     description="json: summary + frames; ytvis: YouTube-VIS JSON")) -> Any:
    """The propagated result: `summary` and every frame (masks as COCO RLE, each instance with `object_id`), or
    `?format=ytvis` for YouTube-VIS. An ended session serves its last export."""
    folder = await run_in_threadpool(manager.result_folder, sid)
    if format == "ytvis":
        return FileResponse(folder / "ytvis.json", media_type="application/json", filename=f"{sid}.ytvis.json")
    return JSONResponse(await run_in_threadpool(_result_body, sid, folder))


def _result_body(sid: str, folder: Any) -> dict[str, Any]:
    import json

    summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    if isinstance(summary.get("video"), dict) and summary["video"].get("path"):
        summary["video"]["path"] = str(summary["video"]["path"]).rsplit("/", 1)[-1]  # never leak server paths
    frames = []
    with (folder / "frames.jsonl").open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                data = json.loads(line)
                for inst in data["instances"]:
                    inst["object_id"] = inst["track_id"]
                frames.append(data)
    return {"id": sid, "summary": summary, "frames": frames}


@router.get("/{sid}/overlay.mp4", response_class=FileResponse,
            responses={200: {"content": {"video/mp4": {}}}, **_errors(404, 409, 410)})
async def overlay(sid: str, manager: SessionManager = Depends(get_sessions)) -> Any:
    """The overlay video (H.264 MP4) of the propagated result: frames with coloured masks and object labels."""
    folder = await run_in_threadpool(lambda: manager.result_folder(sid, overlay=True))
    path = folder / "overlay.mp4"
    if not path.is_file():
        raise ApiError(404, "not_found", "this session has no overlay video")
    return FileResponse(path, media_type="video/mp4", filename=f"{sid}.overlay.mp4")


@router.delete("/{sid}", status_code=204, responses=_errors(404))
async def close_session(sid: str, manager: SessionManager = Depends(get_sessions)) -> Response:
    """Close the session and delete everything it had (a running propagation stops first); then 404."""
    await run_in_threadpool(manager.delete, sid)
    return Response(status_code=204)
