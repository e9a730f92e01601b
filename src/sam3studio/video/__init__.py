"""Video: text-prompted tracking with stable ids (`load_video_segmenter`, `VideoSegmenter.track`) and editable
sessions (`VideoSession`: text, clicks and boxes on any frame, propagation forward, backward or both)."""

from sam3studio.video.frames import FrameReader, open_frames
from sam3studio.video.io import VideoInfo, VideoLimits, iter_frames, probe_video
from sam3studio.video.results import FrameInstance, FrameResult, TrackSummary, summarize_tracks
from sam3studio.video.session import Propagation, SessionObject, VideoSession
from sam3studio.video.tracker import TrackingRun, VideoSegmenter, load_video_model, load_video_segmenter
from sam3studio.video.ytvis import jsonl_to_ytvis, ytvis_from_frames

__all__ = [
    "FrameInstance", "FrameReader", "FrameResult", "Propagation", "SessionObject", "TrackSummary", "TrackingRun",
    "VideoInfo", "VideoLimits", "VideoSegmenter", "VideoSession", "iter_frames", "jsonl_to_ytvis", "load_video_model",
    "load_video_segmenter", "open_frames", "probe_video", "summarize_tracks", "ytvis_from_frames",
]
