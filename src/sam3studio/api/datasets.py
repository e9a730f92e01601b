"""Dataset review routes under ``/api/v1/datasets``: the same actions as the UI's Review tab, for other tools.

A dataset is named by its id (``GET /api/v1/datasets`` lists them): only the folders the server was
started with (``serve --dataset DIR``) are reachable, never a path from the request. Every change
carries the image ``version`` it was made on; a stale one answers 409 ``version_conflict`` with the
current version in the message (reload the image and apply the change again), so two clients never
overwrite each other unseen. 404 ``not_found``: no such dataset, image or instance; 400 ``bad_input``:
an unknown class, a mask of the wrong size, an unknown state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from sam3studio.api.errors import ApiError
from sam3studio.api.schemas import (
    DatasetImage,
    DatasetImagePage,
    DatasetInfo,
    DatasetList,
    DatasetState,
    ErrorResponse,
    InstanceCreate,
    InstanceUpdate,
    StateChange,
    VersionedChange,
)
from sam3studio.dataset.review import DatasetRegistry
from sam3studio.dataset.store import DatasetNotFound, DatasetStore, ImageFilter, StoredImage, VersionConflict
from sam3studio.errors import InputError
from sam3studio.masks import MaskFormat, mask_payload
from sam3studio.results import rle_to_mask

__all__ = ["get_datasets", "router"]

T = TypeVar("T")

router = APIRouter(prefix="/datasets", tags=["datasets"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse, "description": "no such dataset, image or instance"},
    400: {"model": ErrorResponse, "description": "unknown class or state, a mask of the wrong size"}}
_CHANGE_ERRORS: dict[int | str, dict[str, Any]] = {
    **_ERRORS, 409: {"model": ErrorResponse, "description": "the image changed since `version`: reload it"}}


def get_datasets(request: Request) -> DatasetRegistry:
    registry = getattr(request.app.state, "datasets", None)
    return registry if registry is not None else DatasetRegistry()


async def _run(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Store work in the thread pool, its errors as the API's answers."""
    try:
        return await run_in_threadpool(work, *args, **kwargs)
    except DatasetNotFound as exc:
        raise ApiError(404, "not_found", str(exc)) from None
    except VersionConflict as exc:
        raise ApiError(409, "version_conflict", str(exc), {"X-Image-Version": str(exc.current)}) from None
    except ValueError as exc:  # a malformed RLE, and InputError (DatasetError)
        raise ApiError(400, "bad_input", str(exc)) from None


def image_body(image: StoredImage, mask_format: MaskFormat = "rle") -> dict[str, Any]:
    """An image with its instances; masks in ``mask_format`` (stored RLE as it is, or decoded for polygons)."""
    instances = []
    for inst in image.instances:
        body = inst.to_dict()
        if mask_format == "none" or inst.counts is None:
            body["mask"] = None
        elif mask_format != "rle":
            body["mask"] = mask_payload(inst.mask(), mask_format)
        instances.append(body)
    return {"id": image.id, "name": image.name, "width": image.width, "height": image.height, "state": image.state,
            "version": image.version, "proposed": image.proposed, "missing": image.missing, "error": image.error,
            "instances": instances}


def _mask(store: DatasetStore, image_id: int, rle: Any) -> Any:
    if rle is None:
        return None
    image = store.image(image_id)
    if image.width is None:
        raise InputError(f"image {image_id} has not been read yet (its size is unknown)")
    return rle_to_mask(rle.model_dump(), (image.height, image.width))


@router.get("", response_model=DatasetList)
async def list_datasets(registry: DatasetRegistry = Depends(get_datasets)) -> Any:
    """The datasets this server serves, with their classes and review progress."""
    return {"datasets": [await _run(registry.info, i) for i in registry.ids()]}


@router.get("/{dataset_id}", response_model=DatasetInfo, responses=_ERRORS)
async def dataset_info(dataset_id: str, registry: DatasetRegistry = Depends(get_datasets)) -> Any:
    """One dataset: classes and progress ("123 of 500 reviewed")."""
    return await _run(registry.info, dataset_id)


@router.get("/{dataset_id}/images", response_model=DatasetImagePage, responses=_ERRORS)
async def list_images(dataset_id: str, registry: DatasetRegistry = Depends(get_datasets),
                      state: DatasetState | None = Query(None, description="Only images in this review state"),
                      class_name: str | None = Query(None, description="Only images with an instance of this class"),
                      min_score: float | None = Query(None, ge=0, le=1, description="... with a score at least this"),
                      max_score: float | None = Query(None, ge=0, le=1, description="... with a score at most this"),
                      after: int = Query(0, ge=0, description="Image id to start after (paging: `next_after`)"),
                      limit: int = Query(50, ge=1, le=500),
                      with_total: bool | None = Query(None, description="Count the images matching (default: only "
                                                      "without class and score filters: counting those reads every "
                                                      "instance)")) -> Any:
    """A page of images in id order, filtered by review state, class and instance score."""
    store = await _run(registry.get, dataset_id)

    def page() -> dict[str, Any]:
        flt = ImageFilter(state=state, class_id=store.class_id(class_name) if class_name is not None else None,
                          min_score=min_score, max_score=max_score)
        result = store.list_images(flt, after=after, limit=limit, with_total=with_total)
        return {"images": [r.to_dict() for r in result.images], "next_after": result.next_after, "total": result.total}

    return await _run(page)


@router.get("/{dataset_id}/images/{image_id}", response_model=DatasetImage, responses=_ERRORS)
async def get_image(dataset_id: str, image_id: int, registry: DatasetRegistry = Depends(get_datasets),
                    mask_format: MaskFormat = Query("rle", description="rle, polygon, png_base64 or none")) -> Any:
    """An image with its instances, review state and version (send the version back with changes)."""
    store = await _run(registry.get, dataset_id)
    return image_body(await _run(store.image, image_id), mask_format)


@router.get("/{dataset_id}/images/{image_id}/file", response_class=FileResponse,
            responses={200: {"content": {"image/*": {}}}, **_ERRORS})
async def image_file(dataset_id: str, image_id: int, registry: DatasetRegistry = Depends(get_datasets)) -> Any:
    """The image file itself (404 when it is missing from disk)."""
    store = await _run(registry.get, dataset_id)
    image = await _run(store.image, image_id)
    if image.missing:
        raise ApiError(404, "not_found", f"image {image_id}'s file is missing (moved or deleted): {image.name}")
    return FileResponse(image.path, filename=image.name.rsplit("/", 1)[-1])


@router.post("/{dataset_id}/images/{image_id}/instances", status_code=201, response_model=DatasetImage,
             responses=_CHANGE_ERRORS)
async def add_instance(dataset_id: str, image_id: int, body: InstanceCreate,
                       registry: DatasetRegistry = Depends(get_datasets)) -> Any:
    """Add an instance (a COCO RLE mask or a box) of one of the dataset's classes; the image becomes `corrected`."""
    store = await _run(registry.get, dataset_id)

    def work() -> StoredImage:
        return store.add_instance(image_id, body.version, body.class_name, mask=_mask(store, image_id, body.mask),
                                  box=body.box, origin="api")

    return JSONResponse(status_code=201, content=image_body(await _run(work)))


@router.patch("/{dataset_id}/images/{image_id}/instances/{instance_id}", response_model=DatasetImage,
              responses=_CHANGE_ERRORS)
async def update_instance(dataset_id: str, image_id: int, instance_id: int, body: InstanceUpdate,
                          registry: DatasetRegistry = Depends(get_datasets)) -> Any:
    """Change an instance's class, mask or box; the image becomes `corrected`."""
    store = await _run(registry.get, dataset_id)

    def work() -> StoredImage:
        return store.update_instance(image_id, instance_id, body.version, class_id=body.class_name,
                                     mask=_mask(store, image_id, body.mask), box=body.box, origin="api")

    return image_body(await _run(work))


@router.delete("/{dataset_id}/images/{image_id}/instances/{instance_id}", response_model=DatasetImage,
               responses=_CHANGE_ERRORS)
async def delete_instance(dataset_id: str, image_id: int, instance_id: int,
                          version: int = Query(ge=0, description="The image version this change was made on"),
                          registry: DatasetRegistry = Depends(get_datasets)) -> Any:
    """Delete an instance; the image becomes `corrected`. Answers the image as it is now."""
    store = await _run(registry.get, dataset_id)
    return image_body(await _run(store.delete_instance, image_id, instance_id, version))


@router.post("/{dataset_id}/images/{image_id}/accept", response_model=DatasetImage, responses=_CHANGE_ERRORS)
async def accept_image(dataset_id: str, image_id: int, body: VersionedChange,
                       registry: DatasetRegistry = Depends(get_datasets)) -> Any:
    """Accept the image as it is: `accepted` (or stays `corrected` when it was changed)."""
    store = await _run(registry.get, dataset_id)
    return image_body(await _run(store.accept, image_id, body.version))


@router.post("/{dataset_id}/images/{image_id}/state", response_model=DatasetImage, responses=_CHANGE_ERRORS)
async def set_state(dataset_id: str, image_id: int, body: StateChange,
                    registry: DatasetRegistry = Depends(get_datasets)) -> Any:
    """Set the review state (`skipped` to leave an image out of exports, `unreviewed` to undo a review)."""
    store = await _run(registry.get, dataset_id)
    return image_body(await _run(store.set_state, image_id, body.version, body.state))
