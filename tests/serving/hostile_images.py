"""Generators of hostile and odd image files for the serving tests."""

import io
import struct
import zlib

import numpy as np
from PIL import Image


def _chunk(kind: bytes, data: bytes) -> bytes:
  return (struct.pack(">I", len(data)) + kind + data +
          struct.pack(">I", zlib.crc32(kind + data) & 0xffffffff))


def png_bomb(width: int, height: int) -> bytes:
  """A valid RGB PNG of zeros declaring width x height (a few MB at most).

  The deflate stream repeats one fully flushed compressed block of zero
  rows, so nothing of the declared size is ever held here.
  """
  row = 1 + 3 * width  # filter byte + samples
  rows_per_block = max(1, min(height, (8 << 20) // row))
  blocks, rest = divmod(height, rows_per_block)
  compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
  zeros = bytes(row * rows_per_block)
  block = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
  again = compressor.compress(zeros) + compressor.flush(zlib.Z_FULL_FLUSH)
  assert block == again  # A flushed block does not depend on the past.
  tail = compressor.compress(bytes(row * rest)) + compressor.flush()
  total = row * height
  adler = ((total % 65521) << 16) | 1  # Adler-32 of `total` zero bytes.
  stream = b"\x78\xda" + block * blocks + tail + struct.pack(">I", adler)
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) +
          _chunk(b"IDAT", stream) + _chunk(b"IEND", b""))


def png_header_only(width: int, height: int) -> bytes:
  """A PNG that declares a size and ends after its header."""
  ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
  return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)


def encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, fmt, **kwargs)
  return buffer.getvalue()


def jpeg_declaring(width: int, height: int) -> bytes:
  """A small JPEG whose frame header (SOF0) is patched to width x height."""
  data = bytearray(encode(Image.new("RGB", (8, 8), (10, 20, 30)), "JPEG"))
  sof = data.index(b"\xff\xc0")
  data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
  return bytes(data)


def gif_declaring(width: int, height: int) -> bytes:
  data = bytearray(encode(Image.new("P", (4, 4)), "GIF"))
  data[6:10] = struct.pack("<HH", width, height)
  return bytes(data)


def bmp_declaring(width: int, height: int) -> bytes:
  data = bytearray(encode(Image.new("RGB", (4, 4)), "BMP"))
  data[18:26] = struct.pack("<ii", width, -height)  # top-down rows
  return bytes(data)


def exif_rotated_jpeg(image: np.ndarray, orientation: int) -> bytes:
  exif = Image.Exif()
  exif[0x0112] = orientation
  return encode(Image.fromarray(image), "JPEG", quality=100, subsampling=0,
                exif=exif.tobytes())
