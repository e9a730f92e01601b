"""Video job routes under ``/api/v1/videos``: submit (202), state and progress, result, overlay, cancel.

The jobs themselves run in `sam3studio.jobs.JobRunner` (one worker, a bounded queue, SQLite store),
the same runner the UI's Video tab submits to.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from sam3studio.api.bodies import VIDEO_BODY, read_video_request
from sam3studio.api.deps import get_runner, get_settings
from sam3studio.api.encoding import json_response
from sam3studio.api.errors import ApiError
from sam3studio.api.schemas import ErrorResponse, VideoJob, VideoJobAccepted, VideoProgress, VideoResult
from sam3studio.jobs import JobRunner
from sam3studio.settings import Settings

__all__ = ["router"]

router = APIRouter(prefix="/videos", tags=["video"])

_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "no such job"},
    410: {"model": ErrorResponse, "description": "the job was deleted, or swept after its retention period"}}


def _job_body(job: dict[str, Any]) -> dict[str, Any]:
    params = {k: v for k, v in job["params"].items() if k != "video"}
    return VideoJob(id=job["id"], state=job["state"], progress=VideoProgress(done=job["progress_done"],
                    total=job["progress_total"]), error=job["error"], created=job["created"], updated=job["updated"],
                    params=params).model_dump()


def _done(runner: JobRunner, job_id: str) -> dict[str, Any]:
    job = runner.get(job_id)
    if job["state"] == "failed":
        raise ApiError(409, "job_failed", f"the job failed: {job['error']}")
    if job["state"] == "cancelled":
        raise ApiError(409, "job_cancelled", "the job was cancelled; it has no result")
    if job["state"] != "done":
        raise ApiError(409, "not_ready", f"the job is {job['state']}; poll GET /api/v1/videos/{job_id} until done",
                       {"Retry-After": "2"})
    return job


@router.post("", status_code=202, response_model=VideoJobAccepted, openapi_extra=VIDEO_BODY,
             responses={400: {"model": ErrorResponse}, 413: {"model": ErrorResponse}, 415: {"model": ErrorResponse},
                        422: {"model": ErrorResponse}, 503: {"model": ErrorResponse},
                        507: {"model": ErrorResponse, "description": "too little free disk for a new job"}})
async def submit_video(request: Request, runner: JobRunner = Depends(get_runner),
                       settings: Settings = Depends(get_settings)) -> Any:
    """Start a video tracking job; answers 202 with the job id at once (poll `GET /api/v1/videos/{id}`).

    Send `multipart/form-data` with a `video` file and the option fields, or JSON with `video_url`.
    The video is saved and probed before the job is accepted: an unreadable video is a 400 and one
    over the limits (size, duration, frames, pixels) a 413, at once. At most `max_video_jobs` jobs
    may be queued or running; beyond that, 503. Below `min_free_disk_mb` of free disk, 507.
    """
    params, write_input, suffix = await read_video_request(request, settings, runner)
    job = await run_in_threadpool(runner.submit, write_input, suffix, params.job_params())
    return JSONResponse(status_code=202, content={"id": job["id"], "state": job["state"]},
                        headers={"Location": f"/api/v1/videos/{job['id']}"})


@router.get("/{job_id}", response_model=VideoJob, responses=_NOT_FOUND)
async def video_job(job_id: str, runner: JobRunner = Depends(get_runner)) -> Any:
    """A job's state (queued, running, done, failed, cancelled), progress in frames, and error if it failed.

    A job is kept `video_job_retention_h` after it ends; then (or once deleted) its id answers 410."""
    return _job_body(await run_in_threadpool(runner.get, job_id))


@router.get("/{job_id}/result", response_model=VideoResult,
            responses={409: {"model": ErrorResponse, "description": "not done yet, or failed"}, **_NOT_FOUND})
async def video_result(job_id: str, runner: JobRunner = Depends(get_runner),
                       format: str = Query("json", pattern="^(json|ytvis)$",
                                           description="json: summary + frames; ytvis: the tracks as YouTube-VIS JSON"),
                       ) -> Any:
    """The tracking result of a done job: summary.json plus every frame of frames.jsonl (masks as COCO RLE),
    or with `?format=ytvis` its tracks in YouTube-VIS layout (for `sam3studio eval` and other tools)."""
    await run_in_threadpool(_done, runner, job_id)
    if format == "ytvis":
        from sam3studio.video.ytvis import jsonl_to_ytvis

        return await json_response(lambda: jsonl_to_ytvis(runner.job_dir(job_id), job_id))

    def body() -> dict[str, Any]:
        summary, frames = runner.result(job_id)
        return {"id": job_id, "summary": summary, "frames": frames}

    return await json_response(body)  # read, built and encoded off the event loop


@router.get("/{job_id}/overlay.mp4", response_class=FileResponse,
            responses={200: {"content": {"video/mp4": {}}}, 409: {"model": ErrorResponse}, **_NOT_FOUND})
async def video_overlay(job_id: str, runner: JobRunner = Depends(get_runner)) -> Any:
    """The overlay video (H.264 MP4) of a done job: frames with coloured masks and track labels."""
    await run_in_threadpool(_done, runner, job_id)
    path = runner.output_path(job_id, "overlay.mp4")
    if not path.is_file():
        raise ApiError(404, "not_found", "this job has no overlay video (no frame was processed)")
    return FileResponse(path, media_type="video/mp4", filename=f"{job_id}.overlay.mp4")


@router.delete("/{job_id}", status_code=204, responses=_NOT_FOUND)
async def delete_video(job_id: str, runner: JobRunner = Depends(get_runner)) -> Response:
    """Cancel a queued or running job (it stops before its next frame; its files are removed and it shows as
    `cancelled`), or delete a finished one with its files (its id answers 410 from then on)."""
    await run_in_threadpool(runner.cancel, job_id)
    return Response(status_code=204)
