"""Server settings: one typed class, read from ``SAM3STUDIO_*`` environment variables and CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of ``sam3studio serve``. Environment: ``SAM3STUDIO_<NAME>`` (e.g. ``SAM3STUDIO_PORT``)."""

    model_config = SettingsConfigDict(env_prefix="SAM3STUDIO_", extra="ignore", protected_namespaces=())

    model: str = Field("facebook/sam3", description="Hub id, local directory, modelscope:<id> or 'random'")
    device: str = "auto"
    dtype: str = "auto"
    backend: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="Model backend: torch, onnxruntime, or auto (onnxruntime for a folder written by export-onnx)")
    compile: bool = Field(False, description="torch.compile the vision encoder (the first image compiles)")
    translator: str = Field("lexicon", description="Prompt translator: 'lexicon' (zh->en, offline), 'none', or a MarianMT folder")
    host: str = "127.0.0.1"
    port: int = Field(7860, ge=1, le=65535)

    # Input limits (API, UI and URL fetches).
    max_upload_mb: float = Field(20.0, gt=0, description="Largest accepted image upload or download")
    max_pixels: int = Field(40_000_000, gt=0, description="Largest accepted image, width x height")
    max_prompts: int = Field(16, ge=1, le=64)
    max_prompt_chars: int = Field(200, ge=1)
    max_instances: int = Field(100, ge=1, description="Most instances returned per image")
    max_mask_pixels: int = Field(1_000_000_000, ge=1, description="Budget of instances x image pixels per request "
                                 "(the masks' upsampling work); beyond it, 413")
    max_decodes: int = Field(2, ge=1, description="Images decoded at once (decoding comes before the model's queue)")

    # Admission: model work runs `max_concurrent` at a time; `max_queue` more may wait.
    max_concurrent: int = Field(1, ge=1)
    # Vision batching: the images of up to `vision_batch` requests running together share one vision pass
    # (needs max_concurrent >= vision_batch). Pays off on a GPU; on a CPU one image already fills the cores.
    vision_batch: int = Field(1, ge=1, le=32, description="Most images per batched vision-encoder pass (1: off)")
    vision_batch_wait_ms: float = Field(10.0, ge=0, le=1000, description="How long a batch waits for more requests")
    max_queue: int = Field(8, ge=0)
    queue_timeout_s: float = Field(120.0, gt=0, description="Longest a request waits for the model")

    # image_url fetching.
    url_timeout_s: float = Field(10.0, gt=0)
    allow_private_urls: bool = Field(False, description="Allow image_url to reach private addresses (trusted networks only)")

    ui: bool = Field(True, description="Serve the Gradio UI at /")
    mcp: bool = Field(True, description="Serve the MCP server (tools for language models) at /mcp")
    # Access: both off by default (local use); `serve` warns when listening beyond loopback without them.
    api_key: SecretStr | None = Field(None, description="Key the REST API requires (X-API-Key or Authorization: Bearer)")
    ui_auth: SecretStr | None = Field(None, description="'user:password' the web UI requires")

    # Video jobs (POST /api/v1/videos and the UI's Video tab): one worker, a bounded queue, stored on disk.
    data_dir: Path = Field(Path("~/.cache/sam3studio"),
                           description="Where video jobs keep their uploads, outputs and jobs.sqlite3")
    video_model: str | None = Field(None, description="Video model source; defaults to `model`")
    max_video_mb: float = Field(500.0, gt=0, description="Largest accepted video upload or download")
    max_video_frames: int = Field(10_000, ge=1, description="Most frames one video job may process")
    max_video_duration_s: float = Field(600.0, gt=0, description="Longest accepted video")
    max_video_jobs: int = Field(4, ge=1, description="Video jobs queued plus running; beyond, 503")
    video_job_timeout_s: float = Field(3600.0, gt=0, description="A running video job fails after this long")
    video_job_retention_h: float = Field(24.0, gt=0, description="Finished, failed and cancelled video jobs keep "
                                         "their files this long, then are swept (their ids answer 410)")
    min_free_disk_mb: float = Field(1024.0, ge=0, description="New video jobs are refused (507) when the data "
                                    "dir has less free space than this")

    # Data engine (the UI's Review tab and /api/v1/datasets): dataset folders made by `sam3studio dataset label/import`.
    datasets: list[Path] = Field(default_factory=list, description="Dataset folders to serve for review "
                                 "(env: a JSON list)")

    # Video sessions (POST /api/v1/sessions and the Video tab's editor): working state, ended by a restart.
    max_sessions: int = Field(4, ge=1, le=256, description="Video sessions open at once; beyond, 503")
    session_idle_timeout_s: float = Field(900.0, gt=0, description="A video session unused this long ends "
                                                                     "(its memory is freed, its last export kept)")
    session_slice_frames: int = Field(4, ge=1, le=1000, description="Frames a session's propagation runs per turn "
                                                                    "of the admission gate shared with image requests")
    max_session_objects: int = Field(64, ge=1, le=1000, description="Most objects one video session may hold")

    lang: Literal["auto", "en", "zh"] = Field("auto", description="UI language; 'auto' follows the browser's Accept-Language")

    # Observability (docs/operations.md): Prometheus metrics, request ids and logs, result drift.
    metrics: bool = Field(True, description="Serve Prometheus metrics at /metrics (behind the API key when one is set)")
    log_format: Literal["text", "json"] = Field("text", description="Server log lines: readable text or JSON objects")
    log_prompts: bool = Field(False, description="Put the prompt texts in the access log (off: only their count)")
    drift: bool = Field(True, description="Record per-prompt score distributions in data_dir/drift.sqlite3 "
                        "and as metrics")
    drift_top_prompts: int = Field(20, ge=0, le=200, description="Prompts with their own drift series; the rest "
                                   "are counted together as __other__")
    drift_retention_days: float = Field(30.0, gt=0, description="How long hourly drift counts are kept")

    @field_validator("api_key", "ui_auth", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("api_key")
    @classmethod
    def _key_length(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("the API key must be at least 16 characters "
                             "(make one with `python -c 'import secrets; print(secrets.token_urlsafe())'`)")
        return value

    @field_validator("ui_auth")
    @classmethod
    def _user_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            user, sep, password = value.get_secret_value().partition(":")
            if not (user and sep and password):
                raise ValueError("UI credentials must look like 'user:password'")
        return value

    def ui_credentials(self) -> tuple[str, str] | None:
        if self.ui_auth is None:
            return None
        user, _, password = self.ui_auth.get_secret_value().partition(":")
        return user, password

    @field_validator("data_dir", mode="after")
    @classmethod
    def _expand_data_dir(cls, value: Path) -> Path:
        return value.expanduser()

    @property
    def max_video_bytes(self) -> int:
        return int(self.max_video_mb * 1024 * 1024)

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)
