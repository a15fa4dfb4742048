"""Generated pictures with words in them, each holding one unique phrase, for the OCR benchmarks.

Four kinds, drawn with Pillow and the DejaVu fonts (Debian fonts-dejavu-core): receipts (a paper
slip, turned a little, photographed on a table: a crop of a real photo), screenshots (a window
with a sidebar and 13-15 px text), slides (a title and bullets) and signs (a board turned up to
10 degrees on a real photo, slightly blurred, JPEG). The backgrounds are crops of photos from
Debian's wallpaper packages (plasma-workspace-wallpapers, mate-backgrounds; `photo_sources`),
so the sets can be rebuilt on any Debian machine; without them a generated texture is used.

    python bench/ocr_set.py OUT [--per-kind 25] [--photos 200]

writes OUT/text/*.{png,jpg} with OUT/text/phrases.csv (file, kind, phrase) and, with --photos,
OUT/photos/*.jpg: crops of the real photos without any text, for the gate's skip share.
"""
from __future__ import annotations

import argparse
import csv
import glob
import os
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONT_DIR = "/usr/share/fonts/truetype/dejavu"
WORDS = ("apple", "harbor", "violet", "granite", "meadow", "copper", "lantern", "saffron", "willow", "falcon",
         "juniper", "marble", "orchid", "pepper", "quartz", "raven", "sierra", "tundra", "velvet", "walnut",
         "amber", "birch", "cobalt", "dahlia", "ember", "fennel", "garnet", "hazel", "indigo", "jasper",
         "kestrel", "lilac", "maple", "nutmeg", "olive", "pebble", "quill", "russet", "spruce", "thistle")
FILLER = ("total", "subtotal", "tax", "cash", "card", "change", "thank you", "coffee", "bread", "milk", "tea",
          "settings", "profile", "messages", "search", "help", "report", "agenda", "summary", "next steps")


def font(size: int, bold: bool = False, mono: bool = False) -> ImageFont.FreeTypeFont:
    name = ("DejaVuSansMono" if mono else "DejaVuSans") + ("-Bold" if bold else "") + ".ttf"
    return ImageFont.truetype(os.path.join(FONT_DIR, name), size)


def photo_sources() -> list[str]:
    """The largest picture of each photo wallpaper Debian ships (where installed)."""
    folders = sorted({os.path.dirname(path) for path in glob.glob("/usr/share/wallpapers/*/contents/images/*.jpg")})
    photos = [max(glob.glob(folder + "/*.jpg"), key=os.path.getsize) for folder in folders]
    return photos + sorted(glob.glob("/usr/share/backgrounds/mate/nature/*.jpg"))


def photo_crop(rng: random.Random, sources: list[str], size: tuple[int, int]) -> Image.Image:
    if not sources:  # a generated texture: smooth colour fields plus grain
        noise = np.random.default_rng(rng.randrange(1 << 30))
        small = noise.integers(0, 256, (6, 8, 3)).astype(np.uint8)
        image = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        grain = noise.normal(0, 12, (size[1], size[0], 3))
        return Image.fromarray(np.clip(np.asarray(image) + grain, 0, 255).astype(np.uint8))
    source = Image.open(rng.choice(sources))
    source.draft("RGB", (size[0], size[1]))
    source = source.convert("RGB")
    scale = max(size[0] / source.width, size[1] / source.height) * rng.uniform(1.0, 1.6)
    source = source.resize((max(size[0], int(source.width * scale)), max(size[1], int(source.height * scale))))
    x = rng.randint(0, source.width - size[0])
    y = rng.randint(0, source.height - size[1])
    return source.crop((x, y, x + size[0], y + size[1]))


def phrase(rng: random.Random, used: set[str]) -> str:
    while True:
        value = f"{rng.choice(WORDS)} {rng.randint(1000, 9999)}"
        if value not in used:
            used.add(value)
            return value


def receipt(rng: random.Random, unique: str, sources: list[str]) -> Image.Image:
    paper = Image.new("RGBA", (420, 760), (246, 244, 236, 255))
    draw = ImageDraw.Draw(paper)
    small, big = font(20, mono=True), font(26, bold=True, mono=True)
    draw.text((40, 30), rng.choice(("CORNER CAFE", "GROCERY MART", "BOOK NOOK", "CITY BAKERY")), fill=(20, 20, 20), font=big)
    y = 90
    lines = [f"{rng.choice(FILLER):<14}{rng.randint(1, 40)}.{rng.randint(0, 99):02d}" for _ in range(rng.randint(5, 8))]
    lines.insert(rng.randint(1, len(lines)), unique)
    for line in lines + ["", f"TOTAL         {rng.randint(20, 200)}.{rng.randint(0, 99):02d}"]:
        draw.text((40, y), line, fill=(30, 30, 30), font=small)
        y += 34
    paper = paper.rotate(rng.uniform(-6, 6), expand=True, resample=Image.Resampling.BICUBIC)
    mask = paper.getchannel("A")
    table = photo_crop(rng, sources, (900, 1200))
    table.paste(paper, (rng.randint(80, 380), rng.randint(60, 360)), mask)
    return table.filter(ImageFilter.GaussianBlur(0.6))


def screenshot(rng: random.Random, unique: str, sources: list[str]) -> Image.Image:
    image = Image.new("RGB", (1280, 800), (250, 250, 252))
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 1280, 36), fill=(52, 58, 70))
    draw.text((16, 9), rng.choice(("Mail", "Files", "Notes", "Orders")), fill=(240, 240, 240), font=font(15, bold=True))
    draw.rectangle((0, 36, 220, 800), fill=(236, 238, 242))
    for index in range(8):
        draw.text((20, 60 + 30 * index), rng.choice(FILLER).title(), fill=(60, 60, 70), font=font(14))
    text_font = font(rng.choice((13, 14, 15)))
    lines = [" ".join(rng.choice(FILLER) for _ in range(rng.randint(3, 7))) for _ in range(14)]
    lines.insert(rng.randint(0, len(lines)), f"Re: {unique} confirmed")
    for index, line in enumerate(lines):
        draw.text((250, 60 + 26 * index), line, fill=(25, 25, 35), font=text_font)
    return image


def slide(rng: random.Random, unique: str, sources: list[str]) -> Image.Image:
    background = rng.choice(((255, 255, 255), (24, 40, 72), (245, 240, 225)))
    ink = (20, 20, 20) if sum(background) > 384 else (245, 245, 245)
    image = Image.new("RGB", (1280, 720), background)
    draw = ImageDraw.Draw(image)
    draw.text((80, 60), rng.choice(("Quarterly review", "Roadmap", "Project update", "Lessons learned")),
              fill=ink, font=font(52, bold=True))
    bullets = [" ".join(rng.choice(FILLER) for _ in range(rng.randint(2, 4))) for _ in range(4)]
    bullets.insert(rng.randint(0, len(bullets)), unique)
    for index, line in enumerate(bullets):
        draw.text((110, 200 + 80 * index), "- " + line, fill=ink, font=font(32))
    return image


def sign(rng: random.Random, unique: str, sources: list[str]) -> Image.Image:
    photo = photo_crop(rng, sources, (1600, 1200))
    text_font = font(rng.randint(48, 90), bold=True)
    left, top, right, bottom = text_font.getbbox(unique.upper())
    pad = 30
    colours = rng.choice((((250, 250, 245), (20, 20, 20)), ((20, 90, 40), (250, 250, 250)), ((200, 30, 30), (255, 255, 255)),
                          ((30, 60, 160), (255, 255, 255))))
    board = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), colours[0] + (255,))
    ImageDraw.Draw(board).text((pad - left, pad - top), unique.upper(), fill=colours[1], font=text_font)
    board = board.rotate(rng.uniform(-10, 10), expand=True, resample=Image.Resampling.BICUBIC)
    x = rng.randint(0, max(0, photo.width - board.width))
    y = rng.randint(0, max(0, photo.height - board.height))
    photo.paste(board, (x, y), board)
    return photo.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.2)))


KINDS = {"receipt": (receipt, "jpg"), "screenshot": (screenshot, "png"), "slide": (slide, "png"), "sign": (sign, "jpg")}


def make_text_set(folder: Path, per_kind: int, seed: int = 0) -> list[tuple[str, str, str]]:
    """per_kind pictures of each kind in `folder`, with phrases.csv; returns (file, kind, phrase)."""
    rng = random.Random(seed)
    sources = photo_sources()
    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    rows = []
    for kind, (draw, extension) in KINDS.items():
        for index in range(per_kind):
            unique = phrase(rng, used)
            name = f"{kind}-{index:03d}.{extension}"
            image = draw(rng, unique, sources)
            image.convert("RGB").save(folder / name, quality=88)
            rows.append((name, kind, unique))
    with open(folder / "phrases.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "kind", "phrase"])
        writer.writerows(rows)
    return rows


def make_photo_set(folder: Path, count: int, seed: int = 1, long_side: int = 2000) -> list[Path]:
    """`count` crops (40-100% of each side) of the real photos, without text, as JPEGs."""
    rng = random.Random(seed)
    sources = photo_sources()
    if not sources:
        raise SystemExit("no photos found: apt-get install plasma-workspace-wallpapers mate-backgrounds")
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for index in range(count):
        source = Image.open(sources[index % len(sources)]).convert("RGB")
        scale = rng.uniform(0.4, 1.0)
        width, height = int(source.width * scale), int(source.height * scale)
        x, y = rng.randint(0, source.width - width), rng.randint(0, source.height - height)
        crop = source.crop((x, y, x + width, y + height))
        crop.thumbnail((long_side, long_side))
        path = folder / f"photo-{index:04d}.jpg"
        crop.save(path, quality=90)
        out.append(path)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-kind", type=int, default=25)
    parser.add_argument("--photos", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rows = make_text_set(args.out / "text", args.per_kind, args.seed)
    print(f"{len(rows)} pictures with words in {args.out / 'text'}")
    if args.photos:
        make_photo_set(args.out / "photos", args.photos, args.seed + 1)
        print(f"{args.photos} photos without words in {args.out / 'photos'}")


if __name__ == "__main__":
    main()
