"""tools/icons/make_pairs: Iconify sets -> fine-tuning pairs split by concept (no held-out concept trained on)."""
import csv
import json

import pytest
from PIL import Image

from tools.icons.make_pairs import IconDataError, IconsConfig, caption_of, concept_of, family_of, make_pairs

BODY = '<path fill="none" stroke="currentColor" stroke-width="2" d="M4 4h{n}v{n}H4z"/>'
NAMES = ["arrow-left", "arrow-left-2", "arrow-right", "bell", "bell-filled", "bell-off", "cloud", "cloud-rain",
         "heart", "heart-filled", "home", "home-2", "mail", "mail-open", "star", "sun", "moon", "user"]


@pytest.fixture()
def npm_dir(tmp_path):
    """A fake installed @iconify-json/tabler: icons.json, info.json, package.json."""
    folder = tmp_path / "npm" / "node_modules" / "@iconify-json" / "tabler"
    folder.mkdir(parents=True)
    icons = {name: {"body": BODY.format(n=4 + i % 12)} for i, name in enumerate(NAMES)}
    icons["old-thing"] = {"body": BODY.format(n=3), "hidden": True}
    (folder / "icons.json").write_text(json.dumps({"prefix": "tabler", "icons": icons, "width": 24, "height": 24}))
    (folder / "info.json").write_text(json.dumps({"name": "Tabler Icons", "license": {"spdx": "MIT"}}))
    (folder / "package.json").write_text(json.dumps({"name": "@iconify-json/tabler", "version": "1.2.41"}))
    return tmp_path / "npm"


def read(path):
    with path.open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_names_become_concepts_and_captions():
    assert concept_of("arrow-left-2", "tabler") == "arrow-left" and caption_of("arrow-left-2", "tabler") == "arrow left"
    assert concept_of("heart-filled", "tabler") == "heart" and caption_of("heart-filled", "tabler") == "heart filled"
    assert concept_of("acorn-bold", "ph") == "acorn" and concept_of("bell-off", "tabler") == "bell-off"
    assert family_of("cloud-rain", "tabler") == "cloud"


@pytest.mark.parametrize("split", ["concept", "family"])
def test_no_held_out_concept_is_trained_on(npm_dir, tmp_path, split):
    out = tmp_path / split
    summary = make_pairs(IconsConfig(out=out, train=6, held_out=4, size=32, split=split, npm_dir=npm_dir))
    train, held = read(out / "train.csv"), read(out / "heldout.csv")
    assert len(train) == 6 and len(held) == 4 and summary["set"]["license"] == "MIT"
    key = concept_of if split == "concept" else family_of
    train_keys = {key(row["image"].rsplit("/", 1)[1][:-4], "tabler") for row in train}
    held_keys = {key(row["image"].rsplit("/", 1)[1][:-4], "tabler") for row in held}
    assert not train_keys & held_keys
    assert not any("filled" in row["caption"] or "old thing" in row["caption"] for row in train + held)
    image = Image.open(out / held[0]["image"])
    assert image.size == (32, 32) and image.mode == "RGBA" and image.getextrema()[3][1] == 255  # drawn, not blank
    again = make_pairs(IconsConfig(out=tmp_path / "again", train=6, held_out=4, size=32, split=split, npm_dir=npm_dir))
    assert again["train_concepts"] == summary["train_concepts"]  # same seed, same split


def test_too_few_concepts_is_an_error(npm_dir, tmp_path):
    with pytest.raises(IconDataError, match="not enough"):
        make_pairs(IconsConfig(out=tmp_path / "x", train=100, held_out=4, npm_dir=npm_dir))
