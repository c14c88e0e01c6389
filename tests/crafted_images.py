"""Image files made for tests: decompression bombs and upscaled real photos."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

from PIL import Image


def png_claiming(width: int, height: int) -> bytes:
    """A valid 1x1 grey PNG (under 70 bytes), its IHDR patched to claim ``width`` x ``height``."""
    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    # 8-byte signature, then the IHDR chunk: length (4), type (4), width (4), height (4), ...
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def upscaled_jpeg(path: Path, source: Path, side: int) -> Path:
    """``source`` resized to ``side`` x ``side`` (bicubic) and saved as a JPEG at ``path``."""
    with Image.open(source) as img:
        img.convert("RGB").resize((side, side), Image.Resampling.BICUBIC).save(path, quality=90)
    return path
