"""A scatter plot drawn as a picture with Pillow, for pages whose Content-Security-Policy forbids ``'unsafe-eval'``.

Gradio's own plots render with Vega, which compiles its expressions with
``new Function`` and so draws nothing under schulki's policy
(web/security_headers.py). A picture needs no script: points, axes with a few
round ticks and a label beside each point, in DejaVu Sans where Debian has it
(fonts-dejavu-core; Pillow's built-in font has no umlauts), else the built-in one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT = 960, 540
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 90, 40, 30, 70
DEJAVU = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
COLOURS = ((30, 80, 200), (220, 90, 20), (20, 150, 80), (160, 40, 160), (120, 120, 120))


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str
    group: str


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """A few round values from ``low`` to ``high`` (1, 2 or 5 times a power of ten apart)."""
    span = (high - low) or abs(high) or 1.0
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _number(value: float, decimal: str) -> str:
    text = f"{value:g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.1e}"
    return text.replace(".", decimal)


def scatter(points: list[Point], x_label: str, y_label: str, decimal: str = ",") -> Image.Image:
    """The points on white, one colour per group, each labelled; axes from a little below the least to above the most."""
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    try:
        font: ImageFont.FreeTypeFont | ImageFont.ImageFont = ImageFont.truetype(DEJAVU, 16)
    except OSError:
        font = ImageFont.load_default(size=16)
    xs, ys = [p.x for p in points], [p.y for p in points]
    pad_x = (max(xs) - min(xs)) * 0.1 or max(abs(xs[0]) * 0.1, 1.0)
    pad_y = (max(ys) - min(ys)) * 0.1 or max(abs(ys[0]) * 0.1, 1.0)
    x0, x1, y0, y1 = min(xs) - pad_x, max(xs) + pad_x, min(ys) - pad_y, max(ys) + pad_y
    left, right, top, bottom = MARGIN_LEFT, WIDTH - MARGIN_RIGHT, MARGIN_TOP, HEIGHT - MARGIN_BOTTOM

    def at(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    draw.rectangle((left, top, right, bottom), outline=(180, 180, 180))
    for tick in _ticks(x0, x1):
        px, _ = at(tick, y0)
        draw.line((px, bottom, px, bottom + 5), fill="black")
        draw.text((px, bottom + 8), _number(tick, decimal), fill="black", font=font, anchor="mt")
    for tick in _ticks(y0, y1):
        _, py = at(x0, tick)
        draw.line((left - 5, py, left, py), fill="black")
        draw.text((left - 8, py), _number(tick, decimal), fill="black", font=font, anchor="rm")
    draw.text(((left + right) / 2, HEIGHT - 10), x_label, fill="black", font=font, anchor="ms")
    draw.text((10, top - 8), y_label, fill="black", font=font, anchor="ls")
    groups = list(dict.fromkeys(p.group for p in points))
    for point in points:
        colour = COLOURS[groups.index(point.group) % len(COLOURS)]
        px, py = at(point.x, point.y)
        draw.ellipse((px - 6, py - 6, px + 6, py + 6), fill=colour)
        if px > (left + right) / 2:  # on the right half the label goes left of its point, so it stays in the picture
            draw.text((px - 10, py), point.label, fill=colour, font=font, anchor="rm")
        else:
            draw.text((px + 10, py), point.label, fill=colour, font=font, anchor="lm")
    return image
