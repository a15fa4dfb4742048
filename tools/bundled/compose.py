"""Compose one training image from an emoji render: style-breaking changes, a background, degradation.

`compose_sample` takes an RGBA render in any drawing style, changes how it is drawn (colour jitter,
grayscale, posterised or flat colour, line art, a two-tone stamp, the silhouette's outline, a
sticker border), scales, rotates and places it on a random background (plain, gradient, photo-like,
shapes, patterns) with distractors, then blurs, pixelates, adds noise or JPEG artefacts. Strong
enough that a model cannot lean on one set's look; MILD_AUGMENT only moves and lightly varies it
(the held-out sets and data/sample). Every random choice comes from the `rng` passed in, and an
option whose probability is 0 draws nothing, so adding options leaves older configs' output as it was.
Pure: PIL and numpy only.
"""
from __future__ import annotations

import functools
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageOps

from tools.bundled.emoji_data import EmojiDataError


@dataclass(frozen=True)
class AugmentConfig:
    """Probabilities and ranges for `compose_sample`. Probabilities are per image."""

    scale_range: tuple[float, float] = (0.35, 0.95)  # emoji's longer side / output side
    max_rotation: float = 30.0  # degrees, either way
    max_offscreen: float = 0.15  # fraction of the emoji allowed past the frame
    jitter: float = 0.35  # brightness/contrast/saturation factors drawn from 1 +/- jitter
    hue_shift_p: float = 0.12
    grayscale_p: float = 0.08
    outline_p: float = 0.15  # draw a dark or white outline round the emoji (a sticker / line-art look)
    posterize_p: float = 0.1
    blur_p: float = 0.25
    noise_p: float = 0.2
    pixelate_p: float = 0.1
    distractor_p: float = 0.4
    max_distractors: int = 4
    background_weights: tuple[float, ...] = (0.25, 0.2, 0.2, 0.25, 0.1)  # solid, gradient, blobs, shapes, pattern[, photo]
    # Style-breaking redraws (0 unless a config asks; at most one of line art / stamp / silhouette per image)
    flat_p: float = 0.0  # flat colour: the emoji's colours reduced to a few, shading gone
    line_art_p: float = 0.0  # edges only: dark (or coloured) lines, the inside left empty or white
    stamp_p: float = 0.0  # two-tone: dark shapes on light (monotone / high-contrast sets)
    silhouette_p: float = 0.0  # the silhouette only: an outline or a flat fill of the shape
    jpeg_p: float = 0.0  # recompress the whole image at a low JPEG quality


CLASSIC_AUGMENT = AugmentConfig()  # the two-style recipe's heavy augmentation, kept for comparisons
TRAIN_AUGMENT = AugmentConfig(
    grayscale_p=0.12,
    posterize_p=0.08,
    flat_p=0.12,
    line_art_p=0.1,
    stamp_p=0.08,
    silhouette_p=0.03,
    jpeg_p=0.15,
    background_weights=(0.22, 0.16, 0.14, 0.2, 0.08, 0.2),
)
MILD_AUGMENT = AugmentConfig(
    scale_range=(0.6, 0.85),
    max_rotation=8.0,
    max_offscreen=0.0,
    jitter=0.1,
    hue_shift_p=0.0,
    grayscale_p=0.0,
    outline_p=0.0,
    posterize_p=0.0,
    blur_p=0.0,
    noise_p=0.05,
    pixelate_p=0.0,
    distractor_p=0.25,
    max_distractors=2,
    background_weights=(0.35, 0.3, 0.15, 0.15, 0.05),
)


def colour_safe(config: AugmentConfig) -> AugmentConfig:
    """The same augmentation without the changes that lose colour, for concepts whose name states one."""
    return replace(config, hue_shift_p=0.0, grayscale_p=0.0, line_art_p=0.0, stamp_p=0.0, silhouette_p=0.0)


def compose_sample(
    rgba_emoji: Image.Image,
    rng: np.random.Generator,
    out_size: int,
    config: AugmentConfig = TRAIN_AUGMENT,
) -> Image.Image:
    """One training image: the emoji, transformed, on a random background with distractor shapes.

    Raises EmojiDataError when the emoji has no visible pixel.
    """
    emoji_image = crop_to_content(rgba_emoji)
    emoji_image = restyle_emoji(emoji_image, rng, config)
    emoji_image = scale_and_rotate(emoji_image, rng, out_size, config)
    canvas = random_background(rng, out_size, config.background_weights)
    distractors_on_top = rng.random() < 0.25
    if rng.random() < config.distractor_p and not distractors_on_top:
        draw_distractors(canvas, rng, config.max_distractors)
    canvas.paste(emoji_image, random_position(emoji_image.size, out_size, rng, config.max_offscreen), emoji_image)
    if rng.random() < config.distractor_p and distractors_on_top:
        draw_distractors(canvas, rng, max(1, config.max_distractors // 2), max_fraction=0.22)
    return degrade(canvas, rng, config)


def crop_to_content(rgba: Image.Image) -> Image.Image:
    rgba = rgba.convert("RGBA")
    bbox = rgba.getchannel("A").getbbox()
    if bbox is None:
        raise EmojiDataError("the emoji render has no visible pixel")
    return rgba.crop(bbox)


def restyle_emoji(rgba: Image.Image, rng: np.random.Generator, config: AugmentConfig) -> Image.Image:
    """Colour jitter, hue shift, grayscale, posterize, flat colour, a redraw and an outline on the emoji alone."""
    rgb, alpha = rgba.convert("RGB"), rgba.getchannel("A")
    for enhancer in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        if rng.random() < 0.5:
            rgb = enhancer(rgb).enhance(1.0 + rng.uniform(-config.jitter, config.jitter))
    if rng.random() < config.hue_shift_p:
        rgb = shift_hue(rgb, int(rng.integers(20, 236)))
    if rng.random() < config.grayscale_p:
        rgb = ImageOps.grayscale(rgb).convert("RGB")
    if rng.random() < config.posterize_p:
        rgb = ImageOps.posterize(rgb, int(rng.integers(2, 4)))
    if _happens(rng, config.flat_p):
        rgb = flat_colours(rgb, int(rng.integers(3, 9)))
    result = rgb.convert("RGBA")
    result.putalpha(alpha)
    redraw = pick_redraw(rng, config)
    if redraw is not None:
        result = redraw(result, rng)
    if rng.random() < config.outline_p:
        result = add_outline(result, rng)
    return result


def _happens(rng: np.random.Generator, probability: float) -> bool:
    """A draw only for a probability above 0, so configs without the option keep their random stream."""
    return probability > 0 and rng.random() < probability


def pick_redraw(rng: np.random.Generator, config: AugmentConfig):
    """At most one of line art, stamp and silhouette (None: keep the drawing)."""
    choices = ((config.line_art_p, line_art), (config.stamp_p, stamp), (config.silhouette_p, silhouette))
    total = sum(p for p, _ in choices)
    if total <= 0:
        return None
    draw = rng.random()
    for probability, redraw in choices:
        if draw < probability:
            return redraw
        draw -= probability
    return None


def flat_colours(rgb: Image.Image, colours: int) -> Image.Image:
    """The image in `colours` flat colours (median cut): gradients and shading become areas."""
    return rgb.quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).convert("RGB")


def _ink(rng: np.random.Generator) -> tuple[int, int, int]:
    """Mostly near-black, sometimes a dark colour."""
    if rng.random() < 0.7:
        return tuple(int(v) for v in rng.integers(0, 40, size=3))
    return tuple(int(v) for v in rng.integers(0, 256, size=3) // 2)


def _edges(rgba: Image.Image) -> np.ndarray:
    """Boolean edge map of the drawing: colour edges inside plus the silhouette's border."""
    pixels = np.asarray(rgba, dtype=np.float32)
    alpha = pixels[..., 3:] / 255.0
    on_white = pixels[..., :3] * alpha + 255.0 * (1.0 - alpha)
    luma = on_white @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    gy, gx = np.gradient(luma)
    magnitude = np.hypot(gx, gy)
    colour = np.abs(np.diff(on_white, axis=0, prepend=on_white[:1])).sum(-1) + \
        np.abs(np.diff(on_white, axis=1, prepend=on_white[:, :1])).sum(-1)
    strong = (magnitude > 18.0) | (colour > 60.0)
    border = _border(rgba.getchannel("A"))
    return strong | border


def _border(alpha: Image.Image, width: int = 1) -> np.ndarray:
    solid = alpha.point(lambda a: 255 if a > 96 else 0)
    grown = solid.filter(ImageFilter.MaxFilter(2 * width + 1))
    shrunk = solid.filter(ImageFilter.MinFilter(2 * width + 1))
    return np.asarray(grown, dtype=np.int16) - np.asarray(shrunk, dtype=np.int16) > 0


def _lines_image(mask: np.ndarray, ink: tuple[int, int, int], fill: Image.Image | None, thick: int) -> Image.Image:
    lines = Image.fromarray((mask * 255).astype(np.uint8), "L")
    if thick > 1:
        lines = lines.filter(ImageFilter.MaxFilter(thick if thick % 2 else thick + 1))
    out = Image.new("RGBA", lines.size, (0, 0, 0, 0)) if fill is None else fill
    ink_layer = Image.new("RGBA", lines.size, (*ink, 255))
    out.paste(ink_layer, mask=lines)
    return out


def line_art(rgba: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Edges only, as a pen would draw them; the inside transparent (half the time white paper)."""
    mask = _edges(rgba)
    thick = 1 if max(rgba.size) < 72 or rng.random() < 0.5 else 3
    fill = None
    if rng.random() < 0.5:
        fill = Image.new("RGBA", rgba.size, (0, 0, 0, 0))
        fill.paste((255, 255, 255, 255), mask=rgba.getchannel("A").point(lambda a: 255 if a > 96 else 0))
    return _lines_image(mask, _ink(rng), fill, thick)


def stamp(rgba: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Two tones, like monotone and high-contrast sets: dark areas in ink, light areas paper or see-through."""
    pixels = np.asarray(rgba, dtype=np.float32)
    luma = pixels[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    solid = pixels[..., 3] > 96
    if not solid.any():
        return rgba
    threshold = np.quantile(luma[solid], rng.uniform(0.1, 0.4))
    dark = solid & (luma <= threshold)
    light = solid & ~dark
    ink = _ink(rng)
    out = np.zeros(pixels.shape, dtype=np.uint8)
    out[dark] = (*ink, 255)
    if rng.random() < 0.75:
        out[light] = (255, 255, 255, 255)
    if rng.random() < 0.5:  # keep the shape readable: its border in ink
        out[_border(rgba.getchannel("A")) & solid] = (*ink, 255)
    return Image.fromarray(out, "RGBA")


def silhouette(rgba: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The shape alone: its outline in ink, or filled with one flat colour."""
    alpha = rgba.getchannel("A")
    if rng.random() < 0.5:
        thick = 1 if max(rgba.size) < 72 else int(rng.integers(1, 4))
        return _lines_image(_border(alpha), _ink(rng), None, thick)
    out = Image.new("RGBA", rgba.size, (0, 0, 0, 0))
    out.paste((*random_colour(rng), 255), mask=alpha.point(lambda a: 255 if a > 96 else 0))
    return out


def shift_hue(rgb: Image.Image, amount: int) -> Image.Image:
    hue, saturation, value = rgb.convert("HSV").split()
    hue = hue.point(lambda h: (h + amount) % 256)
    return Image.merge("HSV", (hue, saturation, value)).convert("RGB")


def add_outline(rgba: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A dark line-art edge or a white sticker border round the emoji's silhouette."""
    width = max(1, round(max(rgba.size) * rng.uniform(0.02, 0.06)))
    padded = ImageOps.expand(rgba, border=width, fill=(0, 0, 0, 0))
    alpha = padded.getchannel("A").point(lambda a: 255 if a > 64 else 0)
    grown = alpha.filter(ImageFilter.MaxFilter(2 * width + 1))
    colour = (255, 255, 255, 255) if rng.random() < 0.5 else (20, 20, 20, 255)
    outlined = Image.new("RGBA", padded.size, (0, 0, 0, 0))
    outlined.paste(colour, mask=grown)
    outlined.alpha_composite(padded)
    return outlined


def scale_and_rotate(
    rgba: Image.Image, rng: np.random.Generator, out_size: int, config: AugmentConfig
) -> Image.Image:
    longest = max(2, round(out_size * rng.uniform(*config.scale_range)))
    factor = longest / max(rgba.size)
    size = (max(1, round(rgba.width * factor)), max(1, round(rgba.height * factor)))
    scaled = rgba.resize(size, Image.Resampling.BILINEAR)
    angle = rng.uniform(-config.max_rotation, config.max_rotation)
    if abs(angle) < 1.0:
        return scaled
    return scaled.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)


def random_position(
    emoji_size: tuple[int, int], out_size: int, rng: np.random.Generator, max_offscreen: float
) -> tuple[int, int]:
    """Top-left corner: anywhere the emoji fits, letting up to `max_offscreen` of it leave the frame."""
    corner = []
    for extent in emoji_size:
        slack = round(extent * max_offscreen)
        low, high = -slack, out_size - extent + slack
        corner.append(int(rng.integers(min(low, high), max(low, high) + 1)))
    return corner[0], corner[1]


def random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def random_background(
    rng: np.random.Generator, out_size: int, weights: Sequence[float] = TRAIN_AUGMENT.background_weights
) -> Image.Image:
    """Solid colour, linear gradient, smooth photo-like blobs, random shapes, or stripes/checks."""
    kind = int(rng.choice(len(weights), p=np.asarray(weights) / np.sum(weights)))
    makers = (solid_background, gradient_background, blob_background, shapes_background, pattern_background,
              photo_background)
    background = makers[kind](rng, out_size)
    if kind != 0 and rng.random() < 0.2:
        background = background.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 2.0)))
    return background


def solid_background(rng: np.random.Generator, out_size: int) -> Image.Image:
    if rng.random() < 0.3:  # emoji are most often seen on white or near-white
        colour = tuple(int(v) for v in 255 - rng.integers(0, 20, size=3))
    else:
        colour = random_colour(rng)
    return Image.new("RGB", (out_size, out_size), colour)


@functools.lru_cache(maxsize=8)
def _unit_grid(out_size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = np.linspace(-0.5, 0.5, out_size, dtype=np.float32)
    return np.meshgrid(axis, axis)


def gradient_background(rng: np.random.Generator, out_size: int) -> Image.Image:
    xs, ys = _unit_grid(out_size)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = np.clip(math.cos(angle) * xs + math.sin(angle) * ys + 0.5, 0.0, 1.0)[..., None]
    start, end = (np.array(random_colour(rng), np.float32) for _ in range(2))
    return Image.fromarray((start * (1 - ramp) + end * ramp).astype(np.uint8), "RGB")


def blob_background(rng: np.random.Generator, out_size: int) -> Image.Image:
    """Low-resolution noise upscaled smoothly: soft colour fields like an out-of-focus photo."""
    cells = int(rng.integers(2, 9))
    base = rng.integers(0, 256, size=(cells, cells, 3), dtype=np.uint8)
    image = Image.fromarray(base, "RGB").resize((out_size, out_size), Image.Resampling.BICUBIC)
    if rng.random() < 0.4:
        grain = rng.normal(0, rng.uniform(4, 18), size=(out_size, out_size, 1))
        image = Image.fromarray(np.clip(np.asarray(image, np.float32) + grain, 0, 255).astype(np.uint8), "RGB")
    return image


def photo_background(rng: np.random.Generator, out_size: int) -> Image.Image:
    """Photo-like texture: several octaves of smooth noise (foliage, walls, skin, sky), a light falloff, grain."""
    field = np.zeros((out_size, out_size), dtype=np.float32)
    amplitude, total = 1.0, 0.0
    for octave in range(int(rng.integers(3, 6))):
        cells = 2 ** (octave + 1)
        noise = rng.random((cells, cells), dtype=np.float32)
        layer = Image.fromarray((noise * 255).astype(np.uint8), "L").resize((out_size, out_size),
                                                                               Image.Resampling.BICUBIC)
        field += amplitude * np.asarray(layer, dtype=np.float32) / 255.0
        total += amplitude
        amplitude *= rng.uniform(0.4, 0.7)
    field /= total
    field = (field - field.min()) / max(1e-6, float(field.max() - field.min()))
    palette = np.stack([np.array(random_colour(rng), np.float32) for _ in range(3)])
    low = np.clip(1.0 - 2.0 * field, 0.0, 1.0)[..., None]
    high = np.clip(2.0 * field - 1.0, 0.0, 1.0)[..., None]
    image = palette[0] * low + palette[1] * (1.0 - low - high) + palette[2] * high
    if rng.random() < 0.5:  # vignette / light from one side
        xs, ys = _unit_grid(out_size)
        cx, cy = rng.uniform(-0.4, 0.4, size=2)
        falloff = 1.0 - rng.uniform(0.2, 0.6) * np.clip(np.hypot(xs - cx, ys - cy) / 0.8, 0.0, 1.0)
        image = image * falloff[..., None]
    image = image + rng.normal(0, rng.uniform(2, 10), size=(out_size, out_size, 1))
    return Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), "RGB")


def shapes_background(rng: np.random.Generator, out_size: int) -> Image.Image:
    base = solid_background(rng, out_size) if rng.random() < 0.5 else gradient_background(rng, out_size)
    draw_distractors(base, rng, int(rng.integers(4, 14)), max_fraction=0.7)
    return base


def pattern_background(rng: np.random.Generator, out_size: int) -> Image.Image:
    xs, ys = _unit_grid(out_size)
    period = rng.uniform(0.05, 0.3)
    stripes = np.floor((xs + 0.5) / period).astype(np.int32)
    if rng.random() < 0.5:
        stripes += np.floor((ys + 0.5) / period).astype(np.int32)
    mask = (stripes % 2).astype(bool)[..., None]
    first, second = np.array(random_colour(rng), np.uint8), np.array(random_colour(rng), np.uint8)
    image = Image.fromarray(np.where(mask, first, second).astype(np.uint8), "RGB")
    fill = tuple(int(v) for v in first)
    return image.rotate(rng.uniform(0, 180), resample=Image.Resampling.BILINEAR, fillcolor=fill)


def draw_distractors(
    canvas: Image.Image, rng: np.random.Generator, max_count: int, max_fraction: float = 0.35
) -> None:
    """Draw 1..max_count random ellipses, rectangles, polygons or lines onto `canvas` in place."""
    draw = ImageDraw.Draw(canvas)
    side = canvas.width
    for _ in range(int(rng.integers(1, max_count + 1))):
        extent = max(3, int(side * rng.uniform(0.08, max_fraction)))
        x, y = (int(v) for v in rng.integers(-extent // 2, side, size=2))
        box = (x, y, x + extent, y + int(extent * rng.uniform(0.4, 1.6)))
        colour = random_colour(rng)
        kind = int(rng.integers(0, 4))
        if kind == 0:
            draw.ellipse(box, fill=colour)
        elif kind == 1:
            draw.rectangle(box, fill=colour)
        elif kind == 2:
            corners = rng.integers(x, x + extent + 1, size=(int(rng.integers(3, 6)), 2))
            points = [(int(px), int(py)) for px, py in corners]
            draw.polygon(points, fill=colour)
        else:
            draw.line(box, fill=colour, width=max(1, extent // 10))


def degrade(canvas: Image.Image, rng: np.random.Generator, config: AugmentConfig) -> Image.Image:
    """Whole-image blur, pixelation, sensor-like noise and a last brightness/contrast jitter."""
    size = canvas.size
    if rng.random() < config.blur_p:
        canvas = canvas.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.3)))
    if rng.random() < config.pixelate_p:
        small = max(8, int(size[0] * rng.uniform(0.3, 0.6)))
        canvas = canvas.resize((small, small), Image.Resampling.BILINEAR).resize(size, Image.Resampling.NEAREST)
    if rng.random() < config.noise_p:
        noise = rng.normal(0, rng.uniform(3, 14), size=(size[1], size[0], 3))
        canvas = Image.fromarray(np.clip(np.asarray(canvas, np.float32) + noise, 0, 255).astype(np.uint8), "RGB")
    if rng.random() < 0.3:
        canvas = ImageEnhance.Contrast(canvas).enhance(1.0 + rng.uniform(-0.2, 0.2))
    if _happens(rng, config.jpeg_p):
        canvas = jpeg_artefacts(canvas, int(rng.integers(15, 55)))
    return canvas


def jpeg_artefacts(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")
