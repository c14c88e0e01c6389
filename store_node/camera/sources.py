"""Where a camera's frames come from: a camera index, a stream URL, a video file or a folder.

Video is decoded by OpenCV's headless wheel (``opencv-python-headless``): one well-kept
package that reads camera indices, RTSP and HTTP streams and video files through its bundled
FFmpeg, with no system libraries to install and no GUI toolkit. Frames leave this module as
RGB uint8 arrays and are never written anywhere.

A source is *live* (a camera index or a stream: frames come at the camera's pace, and a frame
not looked at in time is stale) or *recorded* (a file or a folder: frames come as fast as they
are read, and none is dropped). Each frame carries its media time in seconds from the start of
the source; the service turns it into wall-clock time.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image, UnidentifiedImageError

from loyalnet.errors import LoyalnetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".pgm", ".ppm", ".webp"})
FOLDER_FPS = 25.0
"""Media frame rate of a folder of images: the n-th image is at n / 25 seconds."""
_STREAM = re.compile(r"^(rtsp|rtsps|http|https)://", re.IGNORECASE)
MAX_FRAME_PIXELS = 3840 * 2160


class SourceError(LoyalnetError):
    """A camera source that cannot be opened or read (the message says which and why)."""


class CorruptFrame(Exception):
    """One frame that could not be decoded; the source goes on with the next."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame: (H, W, 3) uint8 RGB pixels and its media time in seconds."""

    pixels: NDArray[np.uint8]
    media_seconds: float


class FrameSource(Protocol):
    """An open source of frames."""

    live: bool
    """Frames come at the camera's pace (a stale frame may be dropped)."""

    def read(self) -> Frame | None:
        """The next frame, or None when the source has ended (a file at its end, a stream
        that closed).

        Raises:
            CorruptFrame: this frame could not be decoded; the next read goes on.
        """
        ...

    def close(self) -> None: ...


def describe(source: str) -> str:
    """The source as logs and health show it: a stream URL without its credentials."""
    if _STREAM.match(source):
        scheme, _, rest = source.partition("://")
        host = rest.rsplit("@", 1)[-1]
        return f"{scheme}://{host}"
    return source


def open_source(source: str, after: str = "") -> FrameSource:
    """Open ``source``: a camera index ("0"), a stream URL, a video file or an image folder.

    ``after``: for a folder, only images named after it (the ``last_name`` read before), so
    that reopening a folder an uploader feeds goes on where it stopped.

    Raises:
        SourceError: it does not exist, is not a video or a folder of images, or the camera or
            stream does not answer.
    """
    if source.isdigit():
        return _VideoSource(int(source), describe(source), live=True)
    if _STREAM.match(source):
        return _VideoSource(source, describe(source), live=True)
    path = Path(source).expanduser()
    if path.is_dir():
        return FolderSource(path, after)
    if path.is_file():
        return _VideoSource(str(path), source, live=False)
    raise SourceError(
        f"camera source {source} is neither a camera index, an rtsp:// or http(s):// stream, "
        "a video file nor a folder of images; check the path."
    )


def sampled(
    source: FrameSource,
    fps: float,
    on_corrupt: Callable[[CorruptFrame], None] | None = None,
) -> Iterator[Frame]:
    """The frames of ``source`` at most ``fps`` per second of media time (skipped ones are
    read and dropped, never decoded twice).

    A corrupt frame is handed to ``on_corrupt`` and the sampling goes on on its schedule; with
    no ``on_corrupt`` it propagates as ``CorruptFrame`` (and ends the iteration).
    """
    period = 1.0 / fps
    due = -1.0
    while True:
        try:
            frame = source.read()
        except CorruptFrame as err:
            if on_corrupt is None:
                raise
            on_corrupt(err)
            continue
        if frame is None:
            return
        # A small tolerance keeps a 30 fps source at 15 fps from alternating 1 and 2 skips.
        if frame.media_seconds + 1e-3 >= due:
            due = max(due + period, frame.media_seconds + period / 2) if due >= 0 else period
            yield frame


class _VideoSource:
    """A camera, stream or video file, read with OpenCV."""

    def __init__(self, target: int | str, shown: str, *, live: bool) -> None:
        import cv2  # imported here: a store without cameras never loads it

        self._cv2 = cv2
        self.live = live
        self._shown = shown
        self._capture = cv2.VideoCapture(target)
        if not self._capture.isOpened():
            self._capture.release()
            what = "camera or stream" if live else "video file"
            raise SourceError(
                f"the {what} {shown} cannot be opened; check that it exists and is a format "
                "FFmpeg reads (for a camera: that it is connected and not in use)."
            )
        self._started = time.monotonic()
        self._fps = float(self._capture.get(cv2.CAP_PROP_FPS)) or 0.0
        self._index = 0

    def read(self) -> Frame | None:
        grabbed = self._capture.grab()
        if not grabbed:
            return None
        self._index += 1
        ok, bgr = self._capture.retrieve()
        if not ok or bgr is None or bgr.ndim != 3 or bgr.shape[2] != 3:
            raise CorruptFrame(f"frame {self._index} of {self._shown} could not be decoded")
        if self.live:
            seconds = time.monotonic() - self._started
        else:
            position = float(self._capture.get(self._cv2.CAP_PROP_POS_MSEC)) / 1000.0
            fallback = (self._index - 1) / self._fps if self._fps > 0 else position
            seconds = position if position > 0 or self._index == 1 else fallback
        return Frame(np.ascontiguousarray(bgr[:, :, ::-1]), seconds)

    def close(self) -> None:
        self._capture.release()


class FolderSource:
    """A folder of images, read in name order at ``FOLDER_FPS`` of media time.

    Images added later with names after the last one read are found by the next ``read``
    after the folder ran dry and was reopened, so an uploader that drops frames into the
    folder can feed a camera.
    """

    live = False

    def __init__(self, folder: Path, after: str = "") -> None:
        self._folder = folder
        try:
            names = sorted(
                entry.name
                for entry in os.scandir(folder)
                if entry.is_file() and Path(entry.name).suffix.lower() in IMAGE_SUFFIXES
            )
        except OSError as err:
            raise SourceError(f"cannot list the image folder {folder} ({err}).") from err
        self._after = after
        self._names = [name for name in names if name > after]
        self._next = 0

    @property
    def waiting(self) -> int:
        """Images not read yet."""
        return len(self._names) - self._next

    def read(self) -> Frame | None:
        if self._next >= len(self._names):
            return None
        name = self._names[self._next]
        seconds = self._next / FOLDER_FPS
        self._next += 1
        try:
            with Image.open(self._folder / name) as image:
                if image.width * image.height > MAX_FRAME_PIXELS:
                    raise CorruptFrame(f"{name} is larger than a 4K frame")
                pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
        except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as err:
            raise CorruptFrame(f"{name} could not be decoded ({err})") from err
        return Frame(pixels, seconds)

    @property
    def last_name(self) -> str:
        """The name of the last image read (``after`` before the first)."""
        return self._names[self._next - 1] if self._next else self._after

    def close(self) -> None:
        self._names = []
