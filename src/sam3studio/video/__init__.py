"""Video: text-prompted tracking with stable ids (`load_video_segmenter`, `VideoSegmenter.track`)."""

from sam3studio.video.io import VideoInfo, VideoLimits, iter_frames, probe_video
from sam3studio.video.results import FrameInstance, FrameResult, TrackSummary, summarize_tracks
from sam3studio.video.tracker import TrackingRun, VideoSegmenter, load_video_model, load_video_segmenter

__all__ = [
    "FrameInstance", "FrameResult", "TrackSummary", "TrackingRun", "VideoInfo", "VideoLimits", "VideoSegmenter",
    "iter_frames", "load_video_model", "load_video_segmenter", "probe_video", "summarize_tracks",
]
