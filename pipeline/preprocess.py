"""Decoded frames -> the CNN's input, exactly as AlexNet_Weights.IMAGENET1K_V1.transforms() does it:
RGB, short side resized to 256 (bilinear, antialiased), centre crop 224. (Scaling to [0, 1] and the
ImageNet mean and std are applied by features.FeatureExtractor, on the batch.)

It runs in torch on whichever device is given: in the decode worker on a CPU box, on the GPU on a
GPU box, where decoding bounds the run and each worker then only decodes. YUV frames are turned
into RGB here as FFmpeg's swscale turns them (the frame's matrix and range, chroma repeated over the
pixels it covers), so both paths give the RGB frames FFmpeg would, and resizing full RGB, never the
half-resolution chroma planes alone, keeps sharp colour edges as torchvision sees them.
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch
import torch.nn.functional as F

RESIZE_SHORT_SIDE = 256
CROP_SIZE = 224

# (Kr, Kb) of each YUV -> RGB matrix, by FFmpeg's colorspace name; untagged video is BT.601 in swscale.
MATRICES = {
    "bt709": (0.2126, 0.0722), "fcc": (0.30, 0.11), "bt470bg": (0.299, 0.114), "smpte170m": (0.299, 0.114),
    "smpte240m": (0.212, 0.087), "bt2020nc": (0.2627, 0.0593), "bt2020c": (0.2627, 0.0593),
}


def resized_size(width: int, height: int, short_side: int = RESIZE_SHORT_SIDE) -> tuple[int, int]:
    """(width, height) after scaling the short side to `short_side`, rounded as torchvision's Resize does."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


def center_crop_box(width: int, height: int, crop: int = CROP_SIZE) -> tuple[int, int]:
    """(top, left) of a centred crop, rounded as torchvision's center_crop does."""
    return int(round((height - crop) / 2.0)), int(round((width - crop) / 2.0))


def filter_reach(size: int, new_size: int) -> int:
    """Source pixels beyond an output pixel's centre that a resize from `size` to `new_size` may
    read, with a margin: antialiased bilinear reads up to size / new_size pixels each side."""
    return math.ceil(max(size / new_size, 1.0)) + 2


def needed_region(width: int, height: int, short_side: int = RESIZE_SHORT_SIDE, crop: int = CROP_SIZE):
    """(top, bottom, left, right): the source pixels the centre crop of the resized frame is made of,
    with the resize filter's reach around them, on even rows and columns (so subsampled chroma planes
    crop with them; rows on multiples of 4, so an interlaced frame's chroma rows, which alternate
    between its two fields, crop with them too). A decode worker hands over only these; the rest
    cannot change the crop."""
    new_width, new_height = resized_size(width, height, short_side)
    top, left = center_crop_box(new_width, new_height, crop)

    def span(start, size, new_size, align):
        scale = size / new_size
        reach = filter_reach(size, new_size)
        first = max(int(math.floor(start * scale)) - reach, 0) // align * align
        last = min(int(math.ceil((start + crop) * scale)) + reach, size)
        return first, min(-(-last // align) * align, size)

    return (*span(top, height, new_height, 4), *span(left, width, new_width, 2))


@functools.lru_cache(maxsize=64)  # asked for every frame
def aligned_window(width: int, height: int, short_side: int = RESIZE_SHORT_SIDE, crop: int = CROP_SIZE):
    """(top, bottom, left, right): a window of the frame that, resized alone at the whole frame's
    scale, gives every pixel of the centre crop that resizing the whole frame gives. None where no
    such window leaves out a quarter of the frame or more (then it would not pay for itself).

    A resize from n to m pixels centres output pixel i on source coordinate (i + 0.5) * n / m, so a
    window that starts where i * n / m is a whole number has the same output grid as the frame: those
    i are the multiples of m / gcd(n, m). The window runs from the last such i whose source pixel
    lies beyond the filter's reach before the crop to the first such beyond its reach after it, on
    even source pixels (subsampled chroma crops with them; only even-sized frames are cut). A 720p frame's window is 768 of its
    1280 columns; 320x240 (341 / gcd(320, 341) = 341) has none."""
    new_width, new_height = resized_size(width, height, short_side)
    crop_top, crop_left = center_crop_box(new_width, new_height, crop)

    def span(start, size, new_size):
        scale = Fraction(size, new_size)
        step = new_size // math.gcd(size, new_size)  # output pixels from one whole source coordinate to the next
        reach = filter_reach(size, new_size)
        first = math.floor((math.floor(start * scale) - reach) / scale / step) * step
        last = math.ceil((math.ceil((start + crop) * scale) + reach) / scale / step) * step
        while first > 0 and (first * scale) % 2:
            first -= step
        while last < new_size and (last * scale) % 2:
            last += step
        return int(max(first, 0) * scale), int(min(last, new_size) * scale)

    (top, bottom), (left, right) = span(crop_top, height, new_height), span(crop_left, width, new_width)
    if (bottom - top) * (right - left) > 0.75 * width * height:
        return None
    return top, bottom, left, right


def yuv_to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, matrix: str = "bt470bg",
               full_range: bool = False, interlaced: bool = False) -> torch.Tensor:
    """8-bit planar YUV (n, H, W), (n, h, w), (n, h, w) -> uint8 RGB (n, 3, H, W), as swscale converts it.

    `interlaced`: the frames are flagged as two interleaved fields. swscale then converts each field
    on its own, so a 4:2:0 frame's chroma row j belongs to field j % 2: luma rows 0, 1, 2, 3 take
    chroma rows 0, 1, 0, 1 (not 0, 0, 1, 1), rows 4-7 take 2, 3, 2, 3, and so on. Converted as one
    progressive picture instead, moving colour edges come out up to 190 levels off FFmpeg's RGB.
    (Where the height is not a multiple of 4, each field has an odd number of rows and swscale
    blends chroma rows: video.py hands such frames over as RGB, as it does odd sizes.)"""
    kr, kb = MATRICES.get(matrix, MATRICES["bt470bg"])
    kg = 1.0 - kr - kb
    if full_range:
        y_offset, y_gain, c_gain = 0.0, 1.0, 1.0
    else:  # video range: Y in 16..235, chroma in 16..240
        y_offset, y_gain, c_gain = 16.0, 255.0 / 219.0, 255.0 / 224.0
    middle = 128.0
    luma = (y.float() - y_offset) * y_gain
    cb = (u.float() - middle) * c_gain
    cr = (v.float() - middle) * c_gain
    # Chroma terms at chroma resolution, then each repeated over the pixels it covers.
    chroma = torch.stack([2 * (1 - kr) * cr,
                          -(2 * kb * (1 - kb) / kg) * cb - (2 * kr * (1 - kr) / kg) * cr,
                          2 * (1 - kb) * cb], dim=1)
    fy, fx = chroma_subsampling(y, u)
    subsampled = (fy, fx) != (1, 1)
    if interlaced and fy == 2:
        rows = torch.arange(y.shape[-2], device=chroma.device)
        chroma = chroma.index_select(2, 2 * (rows // 4) + rows % 2)
    elif fy == 2:
        chroma = chroma.repeat_interleave(2, dim=2)
    if fx == 2:
        chroma = chroma.repeat_interleave(2, dim=3)
    chroma = chroma[..., :y.shape[-2], :y.shape[-1]]
    rgb = chroma.add_(luma[:, None])
    # swscale converts subsampled chroma with fixed-point tables that land lower (floor: within 3
    # levels of it, mean 0.5) and 4:4:4 with its general scaler, which rounds (within 2, mean 0.02)
    rgb = rgb.floor_() if subsampled else rgb.round_()
    return rgb.clamp_(0, 255).to(torch.uint8)


def resize_and_crop(rgb: torch.Tensor, short_side: int = RESIZE_SHORT_SIDE, crop: int = CROP_SIZE,
                    size: tuple[int, int] | None = None, window: tuple[int, int, int, int] | None = None) -> torch.Tensor:
    """uint8 RGB (n, 3, H, W) -> uint8 (n, crop, crop, 3): torchvision's Resize(short_side) with
    antialiasing, then CenterCrop(crop), as its tensor kernels do on the same device (uint8 natively
    on a CPU, in float32 then rounded elsewhere). With `window` (an aligned_window of frames of
    `size` (H, W)), `rgb` is that window alone, and comes out as the whole frame's crop."""
    height, width = size or rgb.shape[-2:]
    top, bottom, left, right = window or (0, height, 0, width)
    new_width, new_height = resized_size(width, height, short_side)
    # the window's share of the resized frame: whole pixels, by aligned_window's choice
    out_top, out_left = top * new_height // height, left * new_width // width
    out_size = ((bottom - top) * new_height // height, (right - left) * new_width // width)
    if out_size != tuple(rgb.shape[-2:]):
        if rgb.device.type == "cpu":
            rgb = F.interpolate(rgb, size=out_size, mode="bilinear", antialias=True, align_corners=False)
        else:
            out = F.interpolate(rgb.float(), size=out_size, mode="bilinear", antialias=True, align_corners=False)
            rgb = out.round_().clamp_(0, 255).to(torch.uint8)
    if new_width < crop or new_height < crop:
        raise ValueError(f"frames of {width}x{height} cannot be resized for a {crop}x{crop} crop")
    crop_top, crop_left = center_crop_box(new_width, new_height, crop)
    top, left = crop_top - out_top, crop_left - out_left
    return rgb[:, :, top:top + crop, left:left + crop].permute(0, 2, 3, 1).contiguous()


def to_crops(frames: dict, device: torch.device | str = "cpu") -> torch.Tensor:
    """A decode worker's frames (video.Frames.to_dict()) -> uint8 (m, 224, 224, 3) on `device`, one
    row per output frame (a frame shown k times is converted once and repeated)."""
    planes = [p.to(device, non_blocking=True) for p in frames["planes"]]
    if frames["kind"] == "crop":  # resized and cropped in the decode worker already
        return _as_shown(planes[0], frames["repeats"])
    if frames.get("region"):  # only the pixels the crop needs came: put them back where they were
        planes = _uncrop(planes, frames["size"], frames["region"])
    if frames["kind"] == "yuv":
        rgb = yuv_to_rgb(*planes, matrix=frames["matrix"], full_range=frames["full_range"],
                         interlaced=frames.get("interlaced", False))
    else:
        rgb = planes[0].permute(0, 3, 1, 2)
    if frames.get("mirror"):
        rgb = rgb.flip(3)
    if frames["rotation"]:
        rgb = torch.rot90(rgb, k=frames["rotation"] // 90, dims=(2, 3))
    if frames.get("window"):  # only an aligned window of each frame came, already RGB (see aligned_window)
        crops = resize_and_crop(rgb, size=frames["size"], window=frames["window"])
    else:
        crops = resize_and_crop(rgb)
    return _as_shown(crops, frames["repeats"])


def _as_shown(crops: torch.Tensor, repeats: torch.Tensor) -> torch.Tensor:
    """One row per output frame: each unique frame's crop repeated as often as it is shown."""
    return crops.repeat_interleave(repeats.to(crops.device), dim=0) if bool((repeats != 1).any()) else crops


def _uncrop(planes: list[torch.Tensor], size: tuple[int, int], region: tuple[int, int]) -> list[torch.Tensor]:
    """Full-size planes holding `planes` at `region` (top, left of the luma plane) and zeros elsewhere:
    resizing them gives the crop exactly, as the zeros lie beyond the filter's reach of the crop."""
    height, width = size
    top, left = region
    luma = planes[0]
    full = []
    for p in planes:
        fy, fx = chroma_subsampling(luma, p)
        canvas = torch.zeros((p.shape[0], -(-height // fy), -(-width // fx)), dtype=p.dtype, device=p.device)
        canvas[:, top // fy:top // fy + p.shape[1], left // fx:left // fx + p.shape[2]] = p
        full.append(canvas)
    return full


def chroma_subsampling(luma, plane) -> tuple[int, int]:
    """(rows, columns) of luma per chroma sample: 1 or 2 for the 4:2:0, 4:2:2 and 4:4:4 handed over
    (an odd size's chroma plane covers its last pixel alone: 333 wide has 167 chroma columns).
    Reads only the shapes: tensors here, the decoder's numpy planes in video.py."""
    return (1 if plane.shape[-2] == luma.shape[-2] else 2), (1 if plane.shape[-1] == luma.shape[-1] else 2)
