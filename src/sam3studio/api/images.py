"""Image routes: ``POST /api/v1/segment`` (text prompts and exemplar boxes) and ``POST /api/v1/refine``
(clicks and a box on one object, SAM 3's tracker head). Both read JSON or multipart (`bodies`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from sam3studio.api.bodies import REFINE_BODY, REFINE_FIELDS, SEGMENT_BODY, SEGMENT_FIELDS, read_image_request
from sam3studio.api.deps import get_service, get_settings, run_unless_gone
from sam3studio.api.errors import ApiError
from sam3studio.api.schemas import (
    ErrorResponse,
    MaskFormat,
    RefineJSONRequest,
    RefineParams,
    RefineResponse,
    SegmentJSONRequest,
    SegmentParams,
    SegmentResponse,
)
from sam3studio.masks import segmentation_dict, set_mask
from sam3studio.results import Segmentation, rle_to_mask
from sam3studio.service import SegmentService
from sam3studio.settings import Settings

__all__ = ["MAX_RLE_CHARS", "router", "segmentation_response"]

MAX_RLE_CHARS = 2_000_000  # a mask to refine; real masks of 40 MP images take a few hundred KB

router = APIRouter(tags=["segment"])


def segmentation_response(seg: Segmentation, fmt: MaskFormat, model: dict[str, Any]) -> dict[str, Any]:
    """The response body: `Segmentation.to_dict()` with masks in the asked format, plus model info."""
    return {**segmentation_dict(seg, fmt), "model": model}


@router.post("/segment", response_model=SegmentResponse, openapi_extra=SEGMENT_BODY,
             responses={400: {"model": ErrorResponse}, 415: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
async def segment(request: Request, service: SegmentService = Depends(get_service),
                  settings: Settings = Depends(get_settings)) -> Any:
    """Segment one image by text prompts.

    Send either `multipart/form-data` with an `image` file and the option fields, or JSON with
    `image_url` or `image_base64`. Masks come as COCO RLE unless `mask_format` says otherwise.
    """
    params, image = await read_image_request(request, settings, service, SegmentParams, SegmentJSONRequest,
                                             SEGMENT_FIELDS)
    seg = await run_unless_gone(request, service.segment, image, params.prompt_value(), params.options())
    return JSONResponse(segmentation_response(seg, params.mask_format, service.info()["model"]))


async def _mask_to_refine(params: RefineParams, image: np.ndarray) -> np.ndarray | None:
    if params.mask is None:
        return None
    if len(params.mask.counts) > MAX_RLE_CHARS:
        raise ApiError(400, "bad_input", f"mask: the RLE counts string is over {MAX_RLE_CHARS} characters")
    try:  # off the event loop: a long hostile string costs up to one step per pixel
        return await run_in_threadpool(rle_to_mask, params.mask.model_dump(), image.shape[:2])
    except ValueError as exc:
        raise ApiError(400, "bad_input", f"mask: {exc}") from None


@router.post("/refine", response_model=RefineResponse, openapi_extra=REFINE_BODY,
             responses={400: {"model": ErrorResponse}, 409: {"model": ErrorResponse, "description":
                                                              "the loaded checkpoint has no SAM 3 tracker"},
                        415: {"model": ErrorResponse}, 422: {"model": ErrorResponse}})
async def refine(request: Request, service: SegmentService = Depends(get_service),
                 settings: Settings = Depends(get_settings)) -> Any:
    """One object from clicks and/or a box, as in SAM 1 and 2 (SAM 3's tracker head).

    Give `points` with `point_labels` (1 on the object, 0 off it), a `box`, or both, and
    optionally the object's current `mask` (COCO RLE, as /segment returns it) to correct it.
    One click alone returns the best of three candidate masks. The image is sent as in /segment;
    an image just segmented is not encoded again.
    """
    params, image = await read_image_request(request, settings, service, RefineParams, RefineJSONRequest,
                                             REFINE_FIELDS)
    mask = await _mask_to_refine(params, image)
    inst = await run_unless_gone(request, service.refine, image, params.points, params.point_labels, params.box, mask,
                                 params.mask_threshold)
    inst = dataclasses.replace(inst, prompt=params.label)
    body = inst.to_dict(include_mask=params.mask_format == "rle")
    set_mask(body, inst.mask, params.mask_format)
    return JSONResponse({"width": int(image.shape[1]), "height": int(image.shape[0]), "instance": body,
                         "model": service.info()["model"]})
