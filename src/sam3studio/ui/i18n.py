"""The web UI's words in English and Chinese, and how a page picks its language.

Every label, button, hint and message the UI shows comes from `TEXTS`; `text(lang, key, **fields)`
formats one. `pick_language` turns ``--lang`` / ``SAM3STUDIO_LANG`` ("auto", "en", "zh") and the
browser's ``Accept-Language`` header into the language a page opens in.
"""

from __future__ import annotations

from typing import Any

LANGUAGES: dict[str, str] = {"en": "English", "zh": "中文"}
DEFAULT_LANGUAGE = "en"

TEXTS: dict[str, dict[str, Any]] = {
    "en": {
        "intro": "# sam3studio\nType what to find — *cat*, *red car*, *leftmost person* — and get every "
                 "matching object as a mask. Chinese prompts work too (*红色的汽车*).",
        "language": "Language",
        "banner_ready": "Model **{source}** ready on {device} ({dtype}).",
        "banner_error": "⚠️ The model could not be loaded: {error}",
        "banner_loading": "⏳ The model is loading; the first run may wait for it.",
        "image": "Image (JPG, PNG, WebP)",
        "examples": "Example photos",
        "prompts": "Prompts",
        "prompts_placeholder": "cat, red car",
        "prompts_info": "One or more, separated by commas. English or Chinese.",
        "try": "Try",
        "threshold": "Detection threshold",
        "threshold_info": "Lower finds more, with more false matches.",
        "mask_precision": "Mask precision",
        "mask_precision_info": "Higher: tighter masks.",
        "cleanup": "Mask clean-up",
        "fill_holes": "Fill holes smaller than (fraction of mask)",
        "min_island": "Drop islands smaller than (fraction of mask)",
        "smooth": "Smooth edges (pixels)",
        "run": "Segment",
        "result": "Result",
        "details_hint": "Click a mask to see its details.",
        "instances": "Instances",
        "headers": ["id", "prompt", "score", "area %", "box (x1, y1, x2, y2)"],
        "downloads": "Downloads (JSON, overlay, cutout, masks zip)",
        "no_image": "Upload an image or pick an example first.",
        "error": "{detail}",
        "match": "- **{text}**{query}: {count} instance{plural} (presence {presence:.2f})",
        "no_match": "- no match for **{text}**{query} (presence {presence:.2f}). Try a more concrete noun "
                    "(\"dog\" rather than \"animal\"), fewer words, or a lower threshold than {threshold:.2f}.",
        "query": " → *{query}*",
        "unknown": "  ⚠️ not understood: {words} (left out of the query; try another word)",
        "status": "image encoding {encode:.2f} s · prompts {prompts:.2f} s · post-processing {post:.2f} s · "
                  "total {total:.2f} s · {device} · {dtype} · model {source}",
        "details": "**#{id} {prompt}** · score {score:.3f} · area {area} px ({ratio:.2f}% of the image) · "
                   "box ({x1:.0f}, {y1:.0f}) – ({x2:.0f}, {y2:.0f})",
        "tab_image": "Image",
        "tab_video": "Video",
        "video": "Video (MP4, MOV, MKV, WebM, AVI, GIF)",
        "stride": "Process every n-th frame",
        "stride_info": "Higher is faster; track ids stay the same across skipped frames.",
        "video_run": "Track",
        "video_result": "Overlay video",
        "tracks": "Tracks",
        "track_headers": ["track id", "prompt", "first frame", "last frame", "frames", "mean score"],
        "video_downloads": "Downloads (summary JSON, frames JSONL, overlay MP4)",
        "no_video": "Upload a video first.",
        "video_queued": "Waiting for the video worker…",
        "video_progress": "Tracking: frame {done} of {total}",
        "video_failed": "The video job failed: {detail}",
        "video_cancelled": "The video job was cancelled.",
        "video_status": "{frames} frame(s) processed · {tracks} track(s) · {seconds:.1f} s",
        "mode": "Prompt mode",
        "mode_info": "Text; or draw example boxes; or click on one object to fix its mask.",
        "mode_text": "Text",
        "mode_box": "Example boxes",
        "mode_click": "Click to refine",
        "canvas": "Click on the image",
        "polarity": "Next box or click is",
        "positive": "positive (+)",
        "negative": "negative (−)",
        "target": "Object to refine",
        "new_object": "a new object",
        "object": "object",
        "undo": "Undo",
        "clear": "Clear",
        "box_hint": "Click two opposite corners to draw a box around an example object, then press Segment "
                    "(a prompt is optional). Negative boxes mean \"not like this\".",
        "corner_pending": " · first corner at ({x:.0f}, {y:.0f}): click the opposite corner",
        "boxes_drawn": "{n} box(es): {boxes}",
        "click_hint": "Pick the object to refine (or a new object), then click on it (+) or next to it (−); "
                      "the mask updates after each click.",
        "clicks_made": "{n} click(s): {points}",
        "refine_status": "refined with {n} click(s) in {seconds:.2f} s · predicted IoU {score:.2f}",
        "refine_cleared": "no clicks: showing the result before refinement",
        "no_boxes": "Draw at least one box (two clicks on the image) or type a prompt.",
        "editor_title": "### Editor: correct the video\nOpen the video above in the editor; on any frame, find objects "
                        "by text or click on the frame (+ on an object, − next to it) to add an object or fix the one "
                        "picked; remove what is wrong; then propagate forward, backward or both. A fix re-tracks only "
                        "the objects you changed.",
        "editor_open": "Open in the editor",
        "editor_view": "Frame (click to add or fix an object)",
        "editor_frame": "Frame",
        "editor_target": "Object to fix",
        "editor_polarity": "Next click is",
        "editor_remove": "Remove this object",
        "editor_prompt": "Find on this frame",
        "editor_find": "Find",
        "editor_direction": "Propagate",
        "editor_forward": "forward",
        "editor_backward": "backward",
        "editor_both": "both ways",
        "editor_propagate": "Propagate",
        "editor_download": "Download the results",
        "editor_objects": "Objects",
        "editor_headers": ["object id", "label", "made by", "frames with input", "frames present"],
        "editor_files": "Results (frames JSONL, summary JSON, YouTube-VIS JSON, overlay MP4)",
        "editor_opened": "Session open: {frames} frames, {width}x{height}. Click on the frame or find objects by text.",
        "editor_no_session": "Open a video in the editor first.",
        "editor_pick_object": "Pick the object to remove first.",
        "editor_clicked": "Object #{id} on frame {frame}: {area} px. Propagate to carry the change through the video.",
        "editor_found": "{n} new object(s) on frame {frame}.",
        "editor_removed": "Object #{id} removed from {frames} frame(s).",
        "editor_progress": "Propagating: frame {done} of {total}",
        "editor_propagated": "Propagated {done} frame(s) in {seconds:.1f} s.",
        "editor_downloads": "{n} file(s) ready to download.",
    },
    "zh": {
        "intro": "# sam3studio\n输入要找的东西——*猫*、*红色的汽车*、*最左边的人*——即可得到图中每个匹配物体的掩码。"
                 "也可以用英文提示词（*cat*、*red car*）。",
        "language": "语言",
        "banner_ready": "模型 **{source}** 已就绪，运行于 {device}（{dtype}）。",
        "banner_error": "⚠️ 模型加载失败：{error}",
        "banner_loading": "⏳ 模型加载中；第一次运行可能需要等待。",
        "image": "图片（JPG、PNG、WebP）",
        "examples": "示例照片",
        "prompts": "提示词",
        "prompts_placeholder": "猫, 红色的汽车",
        "prompts_info": "一个或多个，用逗号分隔。中文或英文均可。",
        "try": "试试",
        "threshold": "检测阈值",
        "threshold_info": "调低可找到更多物体，但误检也更多。",
        "mask_precision": "掩码精度",
        "mask_precision_info": "越高，掩码越紧。",
        "cleanup": "掩码清理",
        "fill_holes": "填充小于此比例的孔洞（占掩码面积）",
        "min_island": "去除小于此比例的碎块（占掩码面积）",
        "smooth": "平滑边缘（像素）",
        "run": "分割",
        "result": "结果",
        "details_hint": "点击掩码查看详情。",
        "instances": "实例",
        "headers": ["编号", "提示词", "得分", "面积 %", "框 (x1, y1, x2, y2)"],
        "downloads": "下载（JSON、叠加图、抠图、掩码 zip）",
        "no_image": "请先上传图片或选择一张示例照片。",
        "error": "无法处理：{detail}",
        "match": "- **{text}**{query}：{count} 个实例（存在分数 {presence:.2f}）",
        "no_match": "- **{text}**{query} 没有匹配（存在分数 {presence:.2f}）。请换一个更具体的名词"
                    "（用“狗”而不是“动物”）、减少字数，或把阈值调到 {threshold:.2f} 以下。",
        "query": " → *{query}*",
        "unknown": "  ⚠️ 无法理解：{words}（未发送给模型；请换个说法）",
        "status": "图像编码 {encode:.2f} 秒 · 提示词 {prompts:.2f} 秒 · 后处理 {post:.2f} 秒 · "
                  "共 {total:.2f} 秒 · {device} · {dtype} · 模型 {source}",
        "details": "**#{id} {prompt}** · 得分 {score:.3f} · 面积 {area} 像素（占图像 {ratio:.2f}%）· "
                   "框 ({x1:.0f}, {y1:.0f}) – ({x2:.0f}, {y2:.0f})",
        "tab_image": "图片",
        "tab_video": "视频",
        "video": "视频（MP4、MOV、MKV、WebM、AVI、GIF）",
        "stride": "每隔 n 帧处理一帧",
        "stride_info": "越大越快；跳过的帧不影响轨迹编号。",
        "video_run": "跟踪",
        "video_result": "叠加视频",
        "tracks": "轨迹",
        "track_headers": ["轨迹编号", "提示词", "首帧", "末帧", "帧数", "平均得分"],
        "video_downloads": "下载（摘要 JSON、逐帧 JSONL、叠加 MP4）",
        "no_video": "请先上传视频。",
        "video_queued": "正在等待视频处理……",
        "video_progress": "跟踪中：第 {done} 帧，共 {total} 帧",
        "video_failed": "视频任务失败：{detail}",
        "video_cancelled": "视频任务已取消。",
        "video_status": "已处理 {frames} 帧 · {tracks} 条轨迹 · 用时 {seconds:.1f} 秒",
        "mode": "提示方式",
        "mode_info": "文字；或画示例框；或在一个物体上点击来修正它的掩码。",
        "mode_text": "文字",
        "mode_box": "示例框",
        "mode_click": "点击修正",
        "canvas": "在图上点击",
        "polarity": "下一个框或点击为",
        "positive": "正例 (+)",
        "negative": "反例 (−)",
        "target": "要修正的物体",
        "new_object": "新物体",
        "object": "物体",
        "undo": "撤销",
        "clear": "清除",
        "box_hint": "在示例物体的两个对角各点击一次来画框，然后按“分割”（提示词可不填）。反例框表示“不要这种”。",
        "corner_pending": " · 第一个角在 ({x:.0f}, {y:.0f})：请点击对角",
        "boxes_drawn": "{n} 个框：{boxes}",
        "click_hint": "先选择要修正的物体（或新物体），再在物体上点击 (+) 或在旁边点击 (−)；每次点击后掩码都会更新。",
        "clicks_made": "{n} 次点击：{points}",
        "refine_status": "用 {n} 次点击修正，用时 {seconds:.2f} 秒 · 预测 IoU {score:.2f}",
        "refine_cleared": "没有点击：显示修正前的结果",
        "no_boxes": "请至少画一个框（在图上点击两次）或输入提示词。",
        "editor_title": "### 编辑器：修正视频\n把上面的视频在编辑器中打开；在任意一帧上用文字查找物体，或在画面上点击"
                        "（物体上为 +，旁边为 −）来新增物体或修正所选物体；删除错误的物体；然后向前、向后或双向传播。"
                        "修正只会重新跟踪你改动过的物体。",
        "editor_open": "在编辑器中打开",
        "editor_view": "当前帧（点击以新增或修正物体）",
        "editor_frame": "帧",
        "editor_target": "要修正的物体",
        "editor_polarity": "下一次点击为",
        "editor_remove": "删除此物体",
        "editor_prompt": "在此帧中查找",
        "editor_find": "查找",
        "editor_direction": "传播方向",
        "editor_forward": "正向（到后面的帧）",
        "editor_backward": "反向（到前面的帧）",
        "editor_both": "双向",
        "editor_propagate": "传播",
        "editor_download": "下载结果",
        "editor_objects": "物体",
        "editor_headers": ["物体编号", "标签", "来源", "有输入的帧", "出现的帧数"],
        "editor_files": "结果（逐帧 JSONL、摘要 JSON、YouTube-VIS JSON、叠加 MP4）",
        "editor_opened": "会话已打开：共 {frames} 帧，{width}x{height}。请在画面上点击或用文字查找物体。",
        "editor_no_session": "请先在编辑器中打开视频。",
        "editor_pick_object": "请先选择要删除的物体。",
        "editor_clicked": "第 {frame} 帧上的物体 #{id}：{area} 像素。传播后修改会作用到整个视频。",
        "editor_found": "在第 {frame} 帧找到 {n} 个新物体。",
        "editor_removed": "物体 #{id} 已从 {frames} 帧中删除。",
        "editor_progress": "传播中：第 {done} 帧，共 {total} 帧",
        "editor_propagated": "已传播 {done} 帧，用时 {seconds:.1f} 秒。",
        "editor_downloads": "{n} 个文件可供下载。",
    },
}


def normalize(lang: str | None) -> str:
    """``"zh-CN"``, ``"zh_TW"``, ``"ZH"`` -> ``"zh"``; anything unsupported -> English."""
    code = (lang or "").strip().lower().replace("_", "-").split("-")[0]
    return code if code in TEXTS else DEFAULT_LANGUAGE


def from_accept_language(header: str | None) -> str:
    """The supported language the browser prefers most (RFC 9110 ``q`` weights), else English."""
    best, best_q = DEFAULT_LANGUAGE, -1.0
    for position, part in enumerate((header or "").split(",")):
        tag, _, params = part.strip().partition(";")
        code = tag.strip().lower().split("-")[0]
        if code not in TEXTS:
            continue
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        q -= position * 1e-6  # equal weights: the earlier tag wins
        if q > best_q and q > 0:
            best, best_q = code, q
    return best


def pick_language(setting: str | None, accept_language: str | None = None) -> str:
    """``setting`` "auto" (or empty) follows the browser; "en" or "zh" fixes the language."""
    if not setting or setting == "auto":
        return from_accept_language(accept_language)
    return normalize(setting)


def text(lang: str, key: str, **fields: Any) -> Any:
    """One UI string in ``lang`` (English when the key or language is missing), formatted with ``fields``."""
    value = TEXTS.get(normalize(lang), {}).get(key, TEXTS[DEFAULT_LANGUAGE][key])
    return value.format(**fields) if fields and isinstance(value, str) else value
