"""The Gradio 6 web UI. It calls the same `SegmentService` as the REST API; it never calls the API over HTTP."""

from __future__ import annotations

import collections
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from sam3studio.errors import Sam3StudioError
from sam3studio.service import SegmentOptions, SegmentService

EXAMPLE_PHOTOS = {  # scikit-image ships these real photos in its wheel: no download
    "cat": lambda d: d.chelsea(),
    "astronaut": lambda d: d.astronaut(),
    "coffee": lambda d: d.coffee(),
    "rocket": lambda d: d.rocket(),
    "motorcycle": lambda d: d.stereo_motorcycle()[0],
}
PROMPT_CHIPS = ["cat", "person", "cup", "red car", "wooden table", "leftmost person", "white clothes", "eyes"]
TABLE_HEADERS = ["id", "prompt", "score", "area %", "box (x1, y1, x2, y2)"]
_KEEP_RUN_DIRS = 32


def example_paths() -> list[str]:
    """Write the example photos once to a temporary folder Gradio may serve; return their paths."""
    from PIL import Image
    from skimage import data

    folder = Path(tempfile.gettempdir()) / "sam3studio-examples"
    folder.mkdir(exist_ok=True)
    paths = []
    for name, load in EXAMPLE_PHOTOS.items():
        path = folder / f"{name}.png"
        if not path.exists():
            tmp = path.with_suffix(".tmp.png")
            Image.fromarray(load(data)).save(tmp)
            tmp.replace(path)
        paths.append(str(path))
    return paths


class _RunDirs:
    """Per-run download folders; only the newest few are kept on disk."""

    def __init__(self, keep: int = _KEEP_RUN_DIRS) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="sam3studio-ui-"))
        self._dirs: collections.deque[Path] = collections.deque()
        self._keep = keep
        self._lock = threading.Lock()

    def new(self) -> Path:
        with self._lock:
            path = Path(tempfile.mkdtemp(dir=self.root))
            self._dirs.append(path)
            while len(self._dirs) > self._keep:
                shutil.rmtree(self._dirs.popleft(), ignore_errors=True)
            return path


def _suggestion(text: str, presence: float, threshold: float) -> str:
    return (f"no match for **{text}** (presence {presence:.2f}). Try a more concrete noun "
            f"(\"dog\" rather than \"animal\"), fewer words, or a lower threshold than {threshold:.2f}.")


def prompt_summary(seg, threshold: float) -> str:
    lines = []
    for p in seg.prompts:
        if p.count:
            lines.append(f"- **{p.text}**: {p.count} instance{'s' if p.count != 1 else ''} (presence {p.presence_score:.2f})")
        else:
            lines.append(f"- {_suggestion(p.text, p.presence_score, threshold)}")
    return "\n".join(lines)


def status_line(seg, info: dict[str, str]) -> str:
    t = seg.timings
    return (f"image encoding {t.get('image_encoding', 0):.2f} s · prompts {t.get('prompts', 0):.2f} s · "
            f"post-processing {t.get('postprocess', 0):.2f} s · total {t.get('total', 0):.2f} s · "
            f"{info.get('device')} · {info.get('dtype')} · model {info.get('source')}")


def instance_rows(seg) -> list[list[Any]]:
    return [[inst.id, inst.prompt, round(inst.score, 3), round(100 * inst.area_ratio, 2),
             ", ".join(f"{v:.0f}" for v in inst.box)] for inst in seg]


def build_ui(service: SegmentService) -> gr.Blocks:
    """The Blocks app. Every handler goes through ``service`` (shared admission gate, limits)."""
    from sam3studio.export import write_outputs

    run_dirs = _RunDirs()

    def model_banner() -> str:
        state = service.info()
        if state["ready"]:
            m = state["model"]
            return f"Model **{m['source']}** ready on {m['device']} ({m['dtype']})."
        if state["error"]:
            return f"⚠️ The model could not be loaded: {state['error']}"
        return "⏳ The model is loading; the first run may wait for it."

    def run(image_path, prompt, threshold, mask_threshold, fill_holes, min_island, smooth):
        if not image_path:
            raise gr.Error("Upload an image or pick an example first.")
        try:
            rgb = service.decode_image(Path(image_path))
            options = SegmentOptions(score_threshold=float(threshold), mask_threshold=float(mask_threshold),
                                     fill_holes=float(fill_holes), min_island=float(min_island), smooth=int(smooth))
            seg = service.segment(rgb, prompt, options)
        except Sam3StudioError as exc:
            raise gr.Error(str(exc)) from None
        info = service.segmenter.info()
        annotations = [(seg.masks[i].astype(np.float32), f"{inst.prompt} · {inst.score:.2f} (#{inst.id})")
                       for i, inst in enumerate(seg)]
        out_dir = run_dirs.new()
        paths = write_outputs(seg, rgb, out_dir, "result", ("json", "overlay", "cutout", "masks"))
        zip_path = shutil.make_archive(str(out_dir / "result.masks"), "zip", paths["masks"])
        downloads = [str(paths["json"]), str(paths["overlay"]), str(paths["cutout"]), zip_path]
        details = [inst.to_dict(include_mask=False) for inst in seg]
        return ((rgb, annotations), instance_rows(seg), prompt_summary(seg, float(threshold)),
                downloads, status_line(seg, info), details, "Click a mask to see its details.")

    def rerun(image_path, prompt, *rest):
        """Slider moves re-run post-processing only; before a first run there is nothing to update."""
        if not image_path or not (prompt or "").strip():
            return tuple(gr.skip() for _ in outputs)
        return run(image_path, prompt, *rest)

    def show_details(details: list[dict], evt: gr.SelectData) -> str:
        if not details or evt.index is None or not 0 <= int(evt.index) < len(details):
            return "Click a mask to see its details."
        d = details[int(evt.index)]
        x1, y1, x2, y2 = d["box_xyxy"]
        return (f"**#{d['id']} {d['prompt']}** · score {d['score']:.3f} · area {d['area']} px "
                f"({100 * d['area_ratio']:.2f}% of the image) · box ({x1:.0f}, {y1:.0f}) – ({x2:.0f}, {y2:.0f})")

    with gr.Blocks(title="sam3studio", delete_cache=(3600, 7200)) as demo:
        gr.Markdown("# sam3studio\nType what to find — *cat*, *red car*, *leftmost person* — and get every "
                    "matching object as a mask.")
        banner = gr.Markdown(model_banner(), elem_id="model-banner")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(type="filepath", label="Image (JPG, PNG, WebP)", sources=["upload", "clipboard"],
                                 elem_id="input-image")
                gr.Examples(examples=[[p] for p in example_paths()], inputs=[image], label="Example photos")
                prompt = gr.Textbox(label="Prompts", placeholder="cat, red car", elem_id="prompt",
                                    info="One or more, separated by commas.")
                gr.Examples(examples=[[c] for c in PROMPT_CHIPS], inputs=[prompt], label="Try")
                threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.01, label="Detection threshold",
                                      elem_id="threshold")
                mask_threshold = gr.Slider(0.05, 0.95, value=0.5, step=0.05, label="Mask precision",
                                           info="Higher: tighter masks.", elem_id="mask-threshold")
                with gr.Accordion("Mask clean-up", open=False):
                    fill_holes = gr.Slider(0, 1, value=0, step=0.01, label="Fill holes smaller than (fraction of mask)")
                    min_island = gr.Slider(0, 1, value=0, step=0.01, label="Drop islands smaller than (fraction of mask)")
                    smooth = gr.Slider(0, 10, value=0, step=1, label="Smooth edges (pixels)")
                run_btn = gr.Button("Segment", variant="primary", elem_id="run")
            with gr.Column(scale=2):
                result = gr.AnnotatedImage(label="Result", elem_id="result")
                details_md = gr.Markdown("Click a mask to see its details.", elem_id="details")
                prompts_md = gr.Markdown(elem_id="prompt-summary")
                table = gr.Dataframe(headers=TABLE_HEADERS, label="Instances", interactive=False, elem_id="instances")
                downloads = gr.File(label="Downloads (JSON, overlay, cutout, masks zip)", file_count="multiple",
                                    interactive=False, elem_id="downloads")
                status = gr.Markdown(elem_id="status")
        details_state = gr.State([])

        inputs = [image, prompt, threshold, mask_threshold, fill_holes, min_island, smooth]
        outputs = [result, table, prompts_md, downloads, status, details_state, details_md]
        run_btn.click(run, inputs, outputs, api_name="segment")
        prompt.submit(run, inputs, outputs, api_name=False)
        for slider in (threshold, mask_threshold, fill_holes, min_island, smooth):
            # Only post-processing re-runs: the image and prompt outputs come from the engine's caches.
            slider.release(rerun, inputs, outputs, api_name=False, show_progress="minimal")
        result.select(show_details, [details_state], [details_md], api_name=False)
        demo.load(model_banner, None, banner, api_name=False)
    return demo
