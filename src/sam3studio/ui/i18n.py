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
        "banner_untrained": "⚠️ **Untrained demo model** ({source}, {device}, {dtype}): random weights, so the masks "
                            "mean nothing; it is here to try the interface. For real results: `--model facebook/sam3`. "
                            "Its scores sit near 0.25, so the detection threshold starts at {threshold:.2f}.",
        "not_ready_title": "Model not loaded",
        "not_ready_failed": "Nothing was run: the model could not be loaded (the line at the top of the page says why "
                            "and how to get it).",
        "not_ready_loading": "Nothing was run: the model is still loading. Try again in a moment.",
        "out_of_range_title": "Value out of range",
        "out_of_range": "{label}: {value:g} is outside {low:g} – {high:g}; {used:g} was used.",
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
        "details_hint": "Hover a mask for its label and score; click it for its details.",
        "instances": "Instances",
        "headers": ["id", "prompt", "score", "predicted IoU", "area %", "box (x1, y1, x2, y2)"],
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
        "details": "**#{id} {prompt}** · {scores} · area {area} px ({ratio:.2f}% of the image) · "
                   "box ({x1:.0f}, {y1:.0f}) – ({x2:.0f}, {y2:.0f})",
        "score_value": "score {score:.3f}",
        "iou_value": "predicted IoU {iou:.3f}",
        "iou_short": "IoU {iou:.2f}",
        "no_score": "added by clicks (no detection score)",
        "clicked": "- **{text}**: {count} object{plural} added by clicks (no presence score: no prompt found it)",
        "tab_image": "Image",
        "tab_video": "Video",
        "video": "Video (MP4, MOV, MKV, WebM, AVI, GIF)",
        "stride": "Process every n-th frame",
        "stride_info": "Higher is faster; track ids stay the same across skipped frames.",
        "video_start": "From second (optional)",
        "video_end": "To second (optional)",
        "video_max_frames": "At most this many frames (optional)",
        "video_bad_range": "The end ({end:g} s) must come after the start ({start:g} s).",
        "video_bad_max_frames": "At most this many frames: give 1 or more, or leave it empty.",
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
        "tab_review": "Review",
        "review_dataset": "Dataset",
        "review_state": "Review state",
        "review_all": "all",
        "state_unreviewed": "unreviewed",
        "state_accepted": "accepted",
        "state_corrected": "corrected",
        "state_skipped": "skipped",
        "review_class": "Class",
        "review_min_score": "Score at least",
        "review_max_score": "Score at most",
        "review_hint": "Open this tab to start reviewing.",
        "review_prev": "◀ Previous",
        "review_next": "Next ▶",
        "review_next_unreviewed": "Next unreviewed »",
        "review_skip": "Skip",
        "review_accept": "✓ Accept",
        "review_canvas": "Image and its instances (click: see the mode)",
        "review_keys": "Keys: **a** accept · **n** / **→** next · **p** / **←** previous · **u** next unreviewed · "
                       "**s** skip · **.** / **,** next / previous instance · **d** / **Delete** delete it · "
                       "**r** give it the class picked",
        "review_headers": ["id", "class", "score", "origin", "area"],
        "review_selected": "Selected instance",
        "review_class_pick": "Class (for a change or a new instance)",
        "review_relabel": "Change class",
        "review_delete": "Delete instance",
        "review_mode": "A click on the image",
        "review_mode_select": "selects an instance",
        "review_mode_add_clicks": "adds an instance by clicks",
        "review_mode_fix_clicks": "fixes the selected mask by clicks",
        "review_mode_add_box": "adds by example box (two corners)",
        "review_prompt": "Add by text prompt",
        "review_prompt_placeholder": "empty: the class picked",
        "review_add_text": "Find and add",
        "review_progress": "**{reviewed} of {total} reviewed** (accepted {accepted} · corrected {corrected} · "
                           "skipped {skipped} · unreviewed {unreviewed})",
        "review_nothing": "no image matches the filter",
        "review_missing": "⚠️ the image file is missing (moved or deleted): {path}",
        "review_position": "image {position} of {matching} shown · {name} · {state}",
        "review_position_outside": "{name} · {state} (outside the filter)",
        "review_position_filtered": "image #{id} (filtered by class or score) · {name} · {state}",
        "review_end": "no further image matches the filter",
        "review_no_image": "No image is shown: open the tab or change the filter.",
        "review_conflict": "This image was changed in another tab or by another client; it has been reloaded. "
                           "Apply your change again.",
        "review_all_done": "every image is reviewed 🎉",
        "review_saved_state": "saved: {name} is {state}",
        "review_select_first": "Select an instance first (click it in 'selects an instance' mode, or pick it in the list).",
        "review_deleted": "saved: instance #{id} deleted",
        "review_pick_class": "Pick a class first.",
        "review_relabelled": "saved: instance #{id} is now {cls}",
        "review_empty_mask": "The clicks gave an empty mask; click inside the object.",
        "review_clicked": "saved: instance #{id} from {n} click(s) ({seconds:.2f} s)",
        "review_corner": "first corner set: click the opposite corner",
        "review_box_small": "the box is too small; draw it again",
        "review_box_none": "nothing like the box was found; try clicks",
        "review_added": "saved: {n} new {cls} instance(s)",
        "review_text_none": "nothing new found ({found} match(es), all covered by existing instances)",
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
        "banner_untrained": "⚠️ **未训练的演示模型**（{source}，{device}，{dtype}）：权重是随机的，掩码没有意义，"
                            "仅供试用界面。要得到真实结果：`--model facebook/sam3`。它的得分在 0.25 左右，"
                            "所以检测阈值从 {threshold:.2f} 开始。",
        "not_ready_title": "模型未加载",
        "not_ready_failed": "未运行：模型加载失败（页面顶部的提示说明了原因和获取方法）。",
        "not_ready_loading": "未运行：模型仍在加载，请稍后再试。",
        "out_of_range_title": "数值超出范围",
        "out_of_range": "{label}：{value:g} 超出 {low:g} – {high:g} 的范围，已改用 {used:g}。",
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
        "details_hint": "把鼠标移到掩码上可看标签和得分；点击掩码查看详情。",
        "instances": "实例",
        "headers": ["编号", "提示词", "得分", "预测 IoU", "面积 %", "框 (x1, y1, x2, y2)"],
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
        "details": "**#{id} {prompt}** · {scores} · 面积 {area} 像素（占图像 {ratio:.2f}%）· "
                   "框 ({x1:.0f}, {y1:.0f}) – ({x2:.0f}, {y2:.0f})",
        "score_value": "得分 {score:.3f}",
        "iou_value": "预测 IoU {iou:.3f}",
        "iou_short": "预测 IoU {iou:.2f}",
        "no_score": "由点击添加（无检测得分）",
        "clicked": "- **{text}**：点击添加了 {count} 个物体（无存在分数：没有提示词找到它）",
        "tab_image": "图片",
        "tab_video": "视频",
        "video": "视频（MP4、MOV、MKV、WebM、AVI、GIF）",
        "stride": "每隔 n 帧处理一帧",
        "stride_info": "越大越快；跳过的帧不影响轨迹编号。",
        "video_start": "起始秒数（可选）",
        "video_end": "结束秒数（可选）",
        "video_max_frames": "最多处理帧数（可选）",
        "video_bad_range": "结束时间（{end:g} 秒）必须晚于起始时间（{start:g} 秒）。",
        "video_bad_max_frames": "最多处理帧数须为 1 或更大，或留空。",
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
        "tab_review": "审核",
        "review_dataset": "数据集",
        "review_state": "审核状态",
        "review_all": "全部",
        "state_unreviewed": "未审核",
        "state_accepted": "已通过",
        "state_corrected": "已修正",
        "state_skipped": "已跳过",
        "review_class": "类别",
        "review_min_score": "得分不低于",
        "review_max_score": "得分不高于",
        "review_hint": "打开此标签页开始审核。",
        "review_prev": "◀ 上一张",
        "review_next": "下一张 ▶",
        "review_next_unreviewed": "下一张未审核 »",
        "review_skip": "跳过",
        "review_accept": "✓ 通过",
        "review_canvas": "图片及其实例（点击的作用见下方模式）",
        "review_keys": "快捷键：**a** 通过 · **n** / **→** 下一张 · **p** / **←** 上一张 · **u** 下一张未审核 · "
                       "**s** 跳过 · **.** / **,** 下一个 / 上一个实例 · **d** / **Delete** 删除该实例 · "
                       "**r** 改为所选类别",
        "review_headers": ["编号", "类别", "得分", "来源", "面积"],
        "review_selected": "选中的实例",
        "review_class_pick": "类别（用于修改或新增实例）",
        "review_relabel": "修改类别",
        "review_delete": "删除实例",
        "review_mode": "在图上点击",
        "review_mode_select": "选中实例",
        "review_mode_add_clicks": "用点击新增实例",
        "review_mode_fix_clicks": "用点击修正选中的掩码",
        "review_mode_add_box": "用示例框新增（点两个对角）",
        "review_prompt": "用文字提示新增",
        "review_prompt_placeholder": "留空：使用所选类别",
        "review_add_text": "查找并新增",
        "review_progress": "**已审核 {reviewed} / {total}**（通过 {accepted} · 修正 {corrected} · 跳过 {skipped} · "
                           "未审核 {unreviewed}）",
        "review_nothing": "没有符合筛选条件的图片",
        "review_missing": "⚠️ 图片文件不存在（已移动或删除）：{path}",
        "review_position": "当前第 {position} / {matching} 张 · {name} · {state}",
        "review_position_outside": "{name} · {state}（不在筛选范围内）",
        "review_position_filtered": "图片 #{id}（按类别或得分筛选）· {name} · {state}",
        "review_end": "后面没有符合筛选条件的图片了",
        "review_no_image": "没有显示图片：请打开标签页或修改筛选条件。",
        "review_conflict": "这张图片已在另一个标签页或由其他客户端修改，已重新加载。请再次进行你的修改。",
        "review_all_done": "所有图片都已审核 🎉",
        "review_saved_state": "已保存：{name} 为{state}",
        "review_select_first": "请先选中一个实例（在“选中实例”模式下点击它，或在列表中选择）。",
        "review_deleted": "已保存：实例 #{id} 已删除",
        "review_pick_class": "请先选择类别。",
        "review_relabelled": "已保存：实例 #{id} 现在是{cls}",
        "review_empty_mask": "点击得到的掩码为空；请在物体内部点击。",
        "review_clicked": "已保存：实例 #{id}，共 {n} 次点击（{seconds:.2f} 秒）",
        "review_corner": "已设第一个角：请点击对角",
        "review_box_small": "框太小，请重新画",
        "review_box_none": "没有找到与框相似的物体；请改用点击",
        "review_added": "已保存：新增 {n} 个{cls}实例",
        "review_text_none": "没有新发现（{found} 个匹配，均已被现有实例覆盖）",
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
