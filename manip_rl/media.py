"""Videos of rollouts, written atomically as MP4 (H.264 through imageio-ffmpeg) or GIF."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from manip_rl.fileio import atomic_path

VIDEO_FORMATS = (".mp4", ".gif")


def write_video(path: str | os.PathLike, frames: Sequence[np.ndarray], fps: int) -> str:
    """Write RGB frames to ``path`` (.mp4 or .gif); returns the path."""
    import imageio.v2 as imageio

    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in VIDEO_FORMATS:
        raise ValueError(f"video path {path!r}: use a name ending in {' or '.join(VIDEO_FORMATS)}")
    if not frames:
        raise ValueError("no frames to write")
    with atomic_path(path) as tmp:
        if ext == ".gif":
            imageio.mimsave(tmp, [np.asarray(f) for f in frames], duration=1000 / fps, loop=0)
        else:
            with imageio.get_writer(
                tmp, fps=fps, codec="libx264", quality=7, macro_block_size=8
            ) as w:
                for f in frames:
                    w.append_data(np.asarray(f))
    return path
