"""Words in pictures (issue 19): the text test, the words store and its FTS5 index, the schema 4
migration, and (where Tesseract is installed) reading real rendered text at index time and
searching it with `search --ocr`."""
import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from typer.testing import CliRunner

from cli.app import app
from conftest import write_image
from indexer.media.text_gate import screen_image
from indexer.store.library import Library
from indexer.store.words import WordsRow, score_text, tokens, word_similarity

runner = CliRunner()
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _tesseract_ready() -> bool:
    try:
        from indexer.media.ocr import tesseract_problem

        return tesseract_problem("eng") is None
    except Exception:
        return False


NO_TESSERACT = "Tesseract (tesseract-ocr, pytesseract) not installed"
needs_tesseract = pytest.mark.skipif(not _tesseract_ready(), reason=NO_TESSERACT)


def needs_tesseract_here() -> None:
    """The same skip, inside a test of another module."""
    if not _tesseract_ready():
        pytest.skip(NO_TESSERACT)


def _font(size: int):
    try:
        return ImageFont.truetype(FONT, size)
    except OSError:
        pytest.skip("DejaVu fonts (fonts-dejavu-core) not installed")


def text_picture(path, lines, size=(900, 500), background=(250, 250, 250), ink=(20, 20, 20), font_size=34,
                 angle=0.0, blur=0.0):
    """A picture with `lines` of text drawn by Pillow (a slide, a receipt, a sign)."""
    image = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(image)
    font = _font(font_size)
    for index, line in enumerate(lines):
        draw.text((60, 50 + int(font_size * 1.6) * index), line, fill=ink, font=font)
    if angle:
        image = image.rotate(angle, expand=False, fillcolor=background, resample=Image.Resampling.BICUBIC)
    if blur:
        image = image.filter(ImageFilter.GaussianBlur(blur))
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


def smooth_photo(path, seed: int, size=(800, 600)):
    """A photo-like picture without text: smooth colour fields plus grain."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (5, 7, 3)).astype(np.uint8)
    image = np.asarray(Image.fromarray(small).resize(size, Image.Resampling.BICUBIC), dtype=np.float32)
    image = np.clip(image + rng.normal(0, 6, image.shape), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, quality=90)
    return path


# --- the text test --------------------------------------------------------------------------------

def test_text_test_passes_text_and_skips_plain_pictures(tmp_path):
    page = text_picture(tmp_path / "page.png", ["Invoice 2041", "coffee 3.50", "total 12.00"])
    turned = text_picture(tmp_path / "turned.png", ["HARBOR CLOSED", "NO ENTRY"], angle=6, blur=0.8, font_size=60)
    assert screen_image(Image.open(page)).has_text()
    assert screen_image(Image.open(turned)).has_text()
    for seed in range(4):
        assert not screen_image(Image.open(smooth_photo(tmp_path / f"photo{seed}.jpg", seed))).has_text()
    assert not screen_image(Image.new("RGB", (640, 480), (128, 128, 128))).has_text()


def test_the_text_test_asks_for_one_line_of_eight_marks(tmp_path):
    # textured photos passed on many short chains; now one line must hold 8 marks (spaces bridged)
    short = text_picture(tmp_path / "short.png", ["TAX", "", "FIG", "", "OWL"], font_size=40)
    assert not screen_image(Image.open(short)).has_text()  # 9 marks in lines of 3: passed before
    line = screen_image(Image.open(text_picture(tmp_path / "line.png", ["TAX FIG OWL"], font_size=40)))
    assert line.has_text() and line.longest >= 8 and line.lines


def _chains_by_a_plain_loop(marks):
    """The text test's chains as first written: a Python loop over each mark's candidate
    neighbours and a union-find (the reference the vectorised `_chains` is checked against)."""
    from indexer.media.text_gate import MIN_CHAIN

    order = np.argsort(marks[:, 0], kind="stable")
    marks = marks[order]
    x0, y0, x1, y1 = (marks[:, index].astype(np.float32) for index in range(4))
    heights, centres = y1 - y0, (y0 + y1) / 2
    parent = list(range(len(marks)))

    def find(node):
        while parent[node] != node:
            node = parent[node]
        return node

    low = np.searchsorted(x0, x1 - 0.3 * heights, side="left")
    high = np.searchsorted(x0, x1 + 1.2 * heights, side="right")
    for i in range(len(marks)):
        for j in range(int(low[i]), int(high[i])):
            hi, hj = heights[i], heights[j]
            if j == i or hj > 1.6 * hi or hi > 1.6 * hj or abs(centres[j] - centres[i]) > 0.35 * max(hi, hj):
                continue
            parent[find(i)] = find(j)
    roots = np.array([find(i) for i in range(len(marks))])
    return [order[np.flatnonzero(roots == root)] for root in np.unique(roots)
            if np.count_nonzero(roots == root) >= MIN_CHAIN]


def test_the_vectorised_chains_are_the_plain_loops(tmp_path):
    from indexer.media.text_gate import _chains, _marks

    def as_sets(groups):
        return sorted(sorted(int(i) for i in group) for group in groups)

    rng = np.random.default_rng(5)
    for trial in range(40):  # random marks, lines of letters among them
        count = int(rng.integers(0, 400))
        x0 = rng.integers(0, 600, count)
        y0 = rng.integers(0, 400, count)
        size = rng.integers(4, 30, count)
        lines = [np.column_stack([np.arange(start, start + 9 * step, step), np.full(9, row) + rng.integers(-1, 2, 9),
                                  np.arange(start, start + 9 * step, step) + step - 2, np.full(9, row + height)])
                 for start, row, step, height in zip(rng.integers(0, 300, 3), rng.integers(0, 350, 3),
                                                     rng.integers(6, 14, 3), rng.integers(8, 16, 3))]
        marks = np.concatenate([np.column_stack([x0, y0, x0 + size // 2 + 1, y0 + size]).astype(np.int32),
                                *[line.astype(np.int32) for line in lines]])
        marks = marks[rng.permutation(len(marks))]
        expected, found = as_sets(_chains_by_a_plain_loop(marks)), as_sets(_chains(marks))
        assert found == expected, trial
        assert len(found) >= 1  # the drawn lines chain
    # and on the marks of a real picture with text
    picture = np.asarray(Image.open(text_picture(tmp_path / "slide.png", ["Quarterly review", "- harbor 4821"]))
                         .convert("L"), dtype=np.float32)
    from indexer.media.text_gate import CONTRAST, _local_mean

    marks = _marks(picture < _local_mean(picture, 12) - CONTRAST, 160)
    assert len(as_sets(_chains(marks))) >= 2 and as_sets(_chains(marks)) == as_sets(_chains_by_a_plain_loop(marks))


def test_the_text_test_on_opencv_is_the_test_on_scipy(tmp_path, monkeypatch):
    """OpenCV's box filter and connected components (the `ocr` extra) give the marks, the lines and
    the answer scipy.ndimage gives, on pictures with text (dark on light, light on dark, turned,
    small) and without (smooth photos, grain, a checkerboard of specks)."""
    import importlib.util

    if importlib.util.find_spec("cv2") is None:  # installed but broken fails below, not skips
        pytest.skip("OpenCV is not installed (the ocr extra installs opencv-python-headless)")
    import indexer.media.text_gate as gate

    rng = np.random.default_rng(3)
    pictures = [text_picture(tmp_path / "page.png", ["Invoice 2041", "coffee 3.50", "total 12.00"]),
                text_picture(tmp_path / "sign.png", ["HARBOR CLOSED", "NO ENTRY"], background=(20, 60, 30),
                             ink=(240, 240, 240), angle=6, blur=0.8, font_size=60),
                text_picture(tmp_path / "small.png", ["a screenshot line of small words 123"] * 8, size=(640, 400),
                             font_size=13),
                *[smooth_photo(tmp_path / f"photo{seed}.jpg", seed) for seed in range(3)]]
    grays = [np.asarray(Image.open(path).convert("L"), dtype=np.float32) for path in pictures]
    grays.append(rng.integers(0, 256, (480, 640)).astype(np.float32))  # grain: thousands of specks
    grays.append(np.kron(rng.integers(0, 2, (60, 80)), np.ones((8, 8))).astype(np.float32) * 200)
    with_cv = [(gate._local_mean(gray, 13), gate.screen_gray(gray)) for gray in grays]
    assert gate._cv2() is not None
    masks = [gray < mean - gate.CONTRAST for gray, (mean, _) in zip(grays, with_cv)]
    marks_cv = [gate._marks(mask, 160) for mask in masks]
    monkeypatch.setattr(gate, "_cv2", lambda: None)
    for gray, mask, marks, (mean, screen) in zip(grays, masks, marks_cv, with_cv):
        np.testing.assert_allclose(mean, gate._local_mean(gray, 13), atol=1e-3)
        np.testing.assert_array_equal(marks, gate._marks(mask, 160))  # the same marks in the same order
        assert screen == gate.screen_gray(gray)
    assert [screen.has_text() for _, screen in with_cv[:6]] == [True, True, True, False, False, False]
    assert sum(len(marks) for marks in marks_cv) > 100


def test_the_tests_resize_on_opencv_is_pillows_lanczos(tmp_path, monkeypatch):
    """With OpenCV the text test's reduction (Pillow's LANCZOS kernel as a separable filter, then
    bicubic sampling) gives nearly Pillow's pixels and the same answer, on a large picture with small
    words, a turned sign and photos (OpenCV's INTER_AREA or bicubic alone fail the bounds), and within
    wider bounds at a reduction of 1.2 (a JPEG drafted at decode), where the sampling is furthest from
    Pillow's exact kernel; a picture already small enough is not resampled at all, and one more than
    CV_MAX_REDUCTION larger is Pillow's."""
    import importlib.util

    if importlib.util.find_spec("cv2") is None:
        pytest.skip("OpenCV is not installed (the ocr extra installs opencv-python-headless)")
    import indexer.media.text_gate as gate

    pictures = [text_picture(tmp_path / "page.png", ["Invoice 2041 coffee 3.50 total 12.00"] * 6, size=(1280, 800),
                             font_size=30),
                text_picture(tmp_path / "sign.png", ["HARBOR CLOSED", "NO ENTRY"], size=(1900, 1000),
                             background=(20, 60, 30), ink=(240, 240, 240), angle=5, blur=1.0, font_size=90),
                *[smooth_photo(tmp_path / f"photo{seed}.jpg", seed, size=(1600, 1067)) for seed in range(2)]]
    near = [text_picture(tmp_path / "near.png", ["Invoice 2041 coffee 3.50 total 12.00"] * 6, size=(768, 460),
                         font_size=17), smooth_photo(tmp_path / "near.jpg", 3, size=(768, 512))]
    images = [Image.open(path) for path in pictures + near]
    with_cv = [gate.gate_gray(image) for image in images]
    small = Image.open(text_picture(tmp_path / "small.png", ["fits already"], size=(640, 300)))
    huge = Image.open(smooth_photo(tmp_path / "huge.jpg", 4, size=(int(640 * gate.CV_MAX_REDUCTION) + 64, 2000)))
    huge_gray = gate.gate_gray(huge)
    assert gate._cv2() is not None
    np.testing.assert_array_equal(gate.gate_gray(small), np.asarray(small.convert("L")))
    monkeypatch.setattr(gate, "_cv2", lambda: None)
    np.testing.assert_array_equal(huge_gray, gate.gate_gray(huge))
    bounds = [(0.25, 16)] * len(pictures) + [(0.5, 40)] * len(near)  # measured: <= 0.15 / 11, and 0.21-0.39 / 33
    for image, gray, (mean_bound, max_bound) in zip(images, with_cv, bounds):
        pillow = gate.gate_gray(image)
        assert gray.shape == pillow.shape == (*reversed(gate.gate_size(*image.size)),) and gray.dtype == np.uint8
        difference = np.abs(gray.astype(np.int16) - pillow)
        assert difference.mean() < mean_bound and difference.max() <= max_bound, (difference.mean(), difference.max())
        assert difference.max() > 0  # OpenCV's, not Pillow's by a fallback
        assert gate.screen_gray(gray).has_text() == gate.screen_gray(pillow).has_text()
    assert [gate.screen_gray(gray).has_text() for gray in with_cv] == [True, True, False, False, True, False]


def test_decoding_for_the_vector_also_tests_for_text_at_the_tests_size(tmp_path):
    from indexer.media.image import decode_image
    from indexer.media.preprocess import PreprocessConfig

    big = text_picture(tmp_path / "big.jpg", ["Invoice 2041 coffee 3.50"], size=(2400, 1600), font_size=44)
    data = big.read_bytes()
    small_model = PreprocessConfig(image_size=32)  # alone it would draft-decode this JPEG at 1/8 (300 px)
    decoded = decode_image(data, small_model, screen_text=True)
    assert decoded.pixels.shape == (3, 32, 32) and decoded.text_screen.has_text()
    assert decode_image(data, small_model).text_screen is None  # --ocr off: no test
    photo = decode_image(smooth_photo(tmp_path / "photo.jpg", 1).read_bytes(), small_model, screen_text=True)
    assert not photo.text_screen.has_text()


def test_ocr_reads_a_picture_upright_at_its_size_and_mode(tmp_path):
    """The words pass's decode (no copies of an upright RGB picture) turns a JPEG by its EXIF
    orientation as the text test's decode does, shrinks it to `side`, and gives RGB whatever the mode."""
    import io

    from indexer.media.image import decode_image
    from indexer.media.ocr import _small
    from indexer.media.preprocess import PreprocessConfig

    upright = Image.open(text_picture(tmp_path / "page.png", ["Invoice 2041"], size=(900, 500))).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned: shown after a quarter turn clockwise
    buffer = io.BytesIO()
    upright.transpose(Image.Transpose.ROTATE_90).save(buffer, "JPEG", quality=95, exif=exif)
    turned = _small(buffer.getvalue(), 2000)
    assert turned.size == (900, 500) and turned.mode == "RGB"
    assert np.abs(np.asarray(turned, np.int16) - np.asarray(upright)).mean() < 0.5  # measured 0.02
    upside_down = np.asarray(upright.transpose(Image.Transpose.ROTATE_180), np.int16)
    assert np.abs(np.asarray(turned, np.int16) - upside_down).mean() > 1.0  # ~1.5: the bound tells them apart
    assert decode_image(buffer.getvalue(), PreprocessConfig(image_size=32), screen_text=True).text_screen.has_text()
    shrunk = _small(buffer.getvalue(), 450)
    assert shrunk.size == (450, 250)
    grey = io.BytesIO()
    upright.convert("L").save(grey, "PNG")
    assert _small(grey.getvalue(), 2000).mode == "RGB"
    deep = io.BytesIO()  # a 16-bit scan: scaled to 8 bits, not clipped to white
    Image.fromarray(np.linspace(0, 65535, 300 * 200).reshape(200, 300).astype(np.uint16)).save(deep, "PNG")
    assert Image.open(deep).mode.startswith("I") and 120 < np.asarray(_small(deep.getvalue(), 2000)).mean() < 135


def test_a_failing_text_test_costs_only_its_answer(tmp_path, monkeypatch):
    import indexer.media.text_gate as gate
    from indexer.media.image import decode_image
    from indexer.media.preprocess import PreprocessConfig

    def broken(image):
        raise ValueError("a bug in the text test")

    monkeypatch.setattr(gate, "screen_image", broken)
    page = text_picture(tmp_path / "page.png", ["Invoice 2041", "coffee 3.50"])
    decoded = decode_image(page.read_bytes(), PreprocessConfig(image_size=32), screen_text=True)
    assert decoded.text_screen is None and decoded.pixels.shape == (3, 32, 32)


# --- scoring ----------------------------------------------------------------------------------------

def test_word_scores_forgive_a_misread_letter_but_not_another_word():
    assert word_similarity("invoice", "invoice") == 1.0
    assert word_similarity("invoice", "inv0ice") >= 0.5
    assert word_similarity("invoice", "harbor") < 0.2
    score, snippet, matched = score_text(tokens("invoice 2041"), "ACME LTD\nInvoice 2041\ntotal 12.00")
    assert score == 1.0 and snippet == "Invoice 2041" and matched == ("invoice", "2041")
    misread, _, _ = score_text(tokens("invoice 2041"), "ACME LTD\nlnvoice 2O41\ntotal")
    other, _, _ = score_text(tokens("invoice 2041"), "harbor 7781\nmeadow")
    assert misread > 0.5 > other


# --- the store: FTS5, triggers, cascade, migration -------------------------------------------------

def _pictures(tmp_path, count: int):
    """`count` noisy pictures img0.png ... in tmp_path/pics, each its own seed."""
    pics = tmp_path / "pics"
    for index in range(count):
        write_image(pics / f"img{index}.png", seed=index)
    return pics


def _indexed(tmp_path, tiny_model_config, pics, *extra):
    db = tmp_path / "db"
    result = runner.invoke(app, ["index", str(pics), "--db", str(db), "--model", str(tiny_model_config), "--json",
                                 *extra])
    assert result.exit_code == 0, result.output
    return db, json.loads(result.stdout.strip().splitlines()[-1]), result


def test_words_store_finds_by_trigrams_and_follows_deleted_items(tmp_path, tiny_model_config):
    pics = _pictures(tmp_path, 3)
    db, _, _ = _indexed(tmp_path, tiny_model_config, pics, "--ocr", "off")
    with Library(db) as library:
        pending = library.words.pending("eng")
        assert len(pending) == 3
        texts = ["CORNER CAFE\ncoffee 3.50\nTOTAL 9.10", "Quarterly review\n- harbor 4821", "nothing here"]
        library.words.write([WordsRow(p.item_id, p.content_hash, "eng", "read", text)
                             for p, text in zip(pending, texts)])
        assert library.words.pending("eng") == []
        assert len(library.words.pending("deu")) == 3  # another language: read again
        found = library.words.search("harbr 4821", 5)  # a letter lost by OCR (or by the person typing)
        assert [match.item_id for match in found] == [pending[1].item_id]
        assert found[0].snippet == "- harbor 4821"
        assert library.words.search("coffee", 5)[0].item_id == pending[0].item_id
        assert library.words.search("zebra", 5) == []
    (pics / "img0.png").unlink()
    _indexed(tmp_path, tiny_model_config, pics, "--ocr", "off")
    with Library(db) as library:
        assert library.words.search("coffee", 5) == []  # the item went, its words and their index entry too
        assert library.words.counts() == {"read": 2}
        fts_rows = library.words._rows("SELECT COUNT(*) FROM item_words_fts WHERE item_words_fts MATCH '\"cof\"'", ())
        assert fts_rows == [(0,)]


def test_copies_are_looked_up_by_the_hashes_about_to_be_read_as_the_whole_table_would(tmp_path, tiny_model_config):
    """known_by_hash(settings, hashes) is the whole table's answer for those hashes (a read copy
    winning over a skipped one), except a row kept from before its picture changed."""
    pics = _pictures(tmp_path, 4)
    shutil.copy(pics / "img0.png", pics / "img0-copy.png")
    db, _, _ = _indexed(tmp_path, tiny_model_config, pics, "--ocr", "off")
    with Library(db) as library:
        pending = {Path(p.path).name: p for p in library.words.pending("eng")}
        rows = [("img0.png", "read", "harbor 4821"), ("img0-copy.png", "skipped", ""), ("img1.png", "skipped", ""),
                ("img2.png", "read", "corner cafe")]
        library.words.write([WordsRow(pending[name].item_id, pending[name].content_hash, "eng", status, text)
                             for name, status, text in rows])
        library.words.write([WordsRow(pending["img3.png"].item_id, pending["img3.png"].content_hash, "deu", "read",
                                      "andere sprache")])
    write_image(pics / "img2.png", seed=9)  # changed since read: its row is stale
    _indexed(tmp_path, tiny_model_config, pics, "--ocr", "off")
    hashes = [p.content_hash for p in pending.values()] + ["0" * 64]
    with Library(db) as library:
        whole = library.words.known_by_hash("eng")
        looked_up = library.words.known_by_hash("eng", hashes)
        stale = pending["img2.png"].content_hash
        assert whole[stale] == ("read", "corner cafe")  # the whole table still holds the stale row ...
        assert looked_up == {h: whole[h] for h in hashes if h in whole and h != stale}  # ... the lookup does not
        assert looked_up[pending["img0.png"].content_hash] == ("read", "harbor 4821")
        assert pending["img3.png"].content_hash not in looked_up  # read in another language only
        assert library.words.known_by_hash("eng", []) == {}
        import indexer.store.words as words

        for chunk, most in ((1, 20_000), (2, 2)):  # one hash a query, and past the most: the whole table
            with pytest.MonkeyPatch.context() as patch:
                patch.setattr(words, "KNOWN_LOOKUP_CHUNK", chunk)
                patch.setattr(words, "KNOWN_LOOKUP_MAX", most)
                expected = looked_up if most > len(hashes) else {h: whole[h] for h in hashes if h in whole}
                assert library.words.known_by_hash("eng", hashes) == expected


def test_a_copy_added_in_a_later_run_gets_the_words_read_before_without_a_read(tmp_path, tiny_model_config):
    from indexer.media.ocr import OcrOptions
    from indexer.pipeline.words import read_pictures

    pics = _pictures(tmp_path, 3)
    db, _, _ = _indexed(tmp_path, tiny_model_config, pics, "--ocr", "off")
    with Library(db) as library:
        library.words.write([WordsRow(p.item_id, p.content_hash, "eng", "read" if Path(p.path).name == "img0.png"
                                      else "skipped", "harbor 4821" if Path(p.path).name == "img0.png" else "")
                             for p in library.words.pending("eng")])
    shutil.copy(pics / "img0.png", pics / "img0-later.png")
    _indexed(tmp_path, tiny_model_config, pics, "--ocr", "off")
    with Library(db) as library:
        assert [Path(p.path).name for p in library.words.pending("eng")] == ["img0-later.png"]
        report = read_pictures(library, OcrOptions(mode="auto"))  # no Tesseract needed: nothing is read
        assert (report.copied, report.read, report.skipped, report.failed) == (1, 0, 0, 0)
        assert library.words.pending("eng") == []
        assert len(library.words.search("harbor 4821", 5)) == 2  # the picture and its later copy


def test_of_copies_the_words_read_are_the_ones_copied_in_either_order():
    from indexer.store.words import _read_copies_first

    rows = [("h", "skipped", ""), ("h", "read", "harbor 4821"), ("h", "failed", ""), ("h", "read", "harbr 4821"),
            ("g", "failed", ""), ("g", "skipped", "")]
    for ordered in (rows, rows[::-1]):
        known = _read_copies_first(ordered)
        assert known["h"][0] == "read" and known["g"] == ("skipped", "")
    assert _read_copies_first(rows)["h"] == ("read", "harbor 4821")  # among equals, the first (lowest item id)


def test_schema_3_database_migrates_to_words_table(tmp_path, tiny_model_config):
    pics = tmp_path / "pics"
    write_image(pics / "a.png", seed=1)
    db, _, _ = _indexed(tmp_path, tiny_model_config, pics, "--ocr", "off")
    with Library(db) as library:
        path = library.db_path
    connection = sqlite3.connect(path)
    connection.executescript("DROP TABLE item_words_fts; DROP TABLE item_words; "
                             "UPDATE schema_info SET value = '3' WHERE key = 'schema_version';")
    connection.close()
    with Library(db) as library:
        assert library.db.schema_version == 4
        pending = library.words.pending("eng")
        library.words.write([WordsRow(pending[0].item_id, pending[0].content_hash, "eng", "read", "granite 5521")])
        assert library.words.search("granite", 3)[0].item_id == pending[0].item_id


# --- the confirmation under auto, and the two ways of calling Tesseract ---------------------------

def lined_texture(seed: int, size=(900, 600)) -> Image.Image:
    """Rows of random letter-sized polygons over the whole picture: marks lined up like text, which
    the text test passes (as it passes wood grain or gravel), without a word in them."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, (200, 190, 170))
    draw = ImageDraw.Draw(image)
    for y in range(20, size[1] - 30, 34):
        x = 15
        while x < size[0] - 30:
            width, height = int(rng.integers(8, 18)), int(rng.integers(14, 22))
            corners = [(int(x + rng.integers(0, width)), int(y + rng.integers(0, height))) for _ in range(5)]
            draw.polygon(corners, fill=tuple(int(value) for value in rng.integers(40, 90, 3)))
            x += width + int(rng.integers(2, 8))
    return image


def test_a_picture_is_confirmed_by_a_sure_word_of_three_letters():
    from indexer.media.ocr import confirms_words

    assert confirms_words([("NES", 44.0), ("harbor", 96.0)], 70)
    assert confirms_words([("4821", 90.0)], 70)  # digits count
    assert not confirms_words([("harbor", 69.9), ("WAV", 0.0)], 70)  # not sure enough
    assert not confirms_words([("ok", 99.0), ("a.b", 95.0), ("--", 99.0)], 70)  # too short
    assert not confirms_words([], 70)


def test_the_lines_read_to_confirm_are_those_of_most_marks():
    from indexer.media.text_gate import TextScreen

    lines = ((0, 0, 1, 0.5), (0, 0.5, 0.5, 0.6), (0, 0.7, 0.3, 0.75), (0, 0.8, 0.2, 0.82))
    screen = TextScreen(40, lines, line_marks=(3, 20, 4, 13))  # the largest box holds few marks
    assert screen.longest_lines(2) == (lines[1], lines[3])  # kept in the order of `lines`
    assert screen.longest_lines(9) == lines


def test_the_confirmation_decides_a_whole_read_under_auto_only(monkeypatch):
    import indexer.media.tesseract as tesseract
    from indexer.media.ocr import READ, SKIPPED, OcrOptions, read_words

    probes, answer = [], []
    monkeypatch.setattr(tesseract, "read_line_words", lambda crops, lang, timeout: probes.append(len(crops)) or answer)
    monkeypatch.setattr(tesseract, "read_page", lambda image, lang, psm, timeout: "the page's words")
    data = _png(lined_texture(0))  # passed by the text test, lines over a third of it: read whole, once confirmed
    answer[:] = [("NE", 95.0), ("harbor", 69.0)]  # sure but short; long but unsure
    assert read_words(data, OcrOptions(mode="auto")).status == SKIPPED and probes == [3]
    answer[:] = [("harbor", 71.0)]
    assert read_words(data, OcrOptions(mode="auto")).text == "the page's words" and probes == [3, 3]
    answer[:] = []
    for options in (OcrOptions(mode="on"), OcrOptions(mode="auto", confirm_lines=0),
                    OcrOptions(mode="auto", confirm_above=0.9), OcrOptions(mode="auto", lang="jpn"),
                    OcrOptions(mode="auto", lang="eng+chi_sim_vert")):
        outcome = read_words(data, options)
        assert outcome.status == READ and outcome.text == "the page's words", options
    assert probes == [3, 3]  # none of those asked the lines first


@needs_tesseract
def test_auto_skips_a_texture_its_lines_do_not_confirm_and_reads_a_page_they_do(tmp_path):
    from indexer.media.ocr import READ, SKIPPED, OcrOptions, read_words

    options = OcrOptions(mode="auto")
    for seed in range(2):
        texture = lined_texture(seed)
        screen = screen_image(texture)
        assert screen.has_text() and screen.coverage >= options.confirm_above and len(screen.lines) > 20
        data = _png(texture)
        skipped = read_words(data, options)
        assert skipped.status == SKIPPED and skipped.seconds > 0 and skipped.text == ""  # Tesseract ran, briefly
        read = read_words(data, OcrOptions(mode="on"))  # on reads what auto skips
        assert read.status == READ and read.text
        unconfirmed = read_words(data, OcrOptions(mode="auto", confirm_lines=0))
        assert unconfirmed.status == READ  # without the confirmation, auto reads it whole
    page = text_picture(tmp_path / "page.png", ["Quarterly harbor review", "granite 4821 shipped", "copper lantern orders",
                                                "meadow supplies listed", "violet falcon routes", "walnut pebble totals"],
                        font_size=44)
    assert screen_image(Image.open(page)).coverage >= options.confirm_above  # dense text: confirmed first
    words = read_words(page.read_bytes(), options)
    assert words.status == READ and "granite 4821" in words.text


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _engine_or_skip(name: str, monkeypatch) -> None:
    from indexer.media import tesseract

    monkeypatch.setenv(tesseract.ENGINE_ENV, name)
    problem = tesseract.problem("eng")
    if problem is not None:
        pytest.skip(problem)


@pytest.mark.parametrize("engine", ["tesserocr", "pytesseract"])
def test_both_engines_read_pages_lines_and_words_with_confidence(tmp_path, monkeypatch, engine):
    from indexer.media import tesseract
    from indexer.media.ocr import line_crops

    _engine_or_skip(engine, monkeypatch)
    assert tesseract.engine() == engine
    receipt = Image.open(text_picture(tmp_path / "receipt.png", ["CORNER CAFE", "coffee 3.50", "TOTAL 5.60"]))
    assert "CORNER CAFE" in tesseract.read_page(receipt, "eng", 3, 30)
    crops = line_crops(receipt, screen_image(receipt).lines)
    assert "coffee 3.50" in tesseract.read_lines(crops, "eng", 30).splitlines()
    words = dict(tesseract.read_line_words(crops, "eng", 30))
    assert words["CORNER"] > 80 and words["3.50"] > 80  # dark on light, clean: Tesseract is sure
    texture = lined_texture(0)
    sure = [conf for _, conf in tesseract.read_line_words(line_crops(texture, screen_image(texture).lines[:3]), "eng", 30)]
    assert sure and max(sure) < 70
    with pytest.raises(tesseract.OcrTimeout):
        tesseract.read_page(receipt, "eng", 3, 0.0005)
    assert tesseract.read_lines([], "eng", 30) == "" and tesseract.read_line_words([], "eng", 30) == []


def test_tesserocr_without_the_languages_data_names_the_package(tmp_path, monkeypatch):
    pytest.importorskip("tesserocr")
    from indexer.media import tesseract

    monkeypatch.setenv(tesseract.ENGINE_ENV, "tesserocr")
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))  # a folder without any *.traineddata
    assert tesseract.problem("eng") == "Tesseract has no eng language data (apt install tesseract-ocr-eng)"
    monkeypatch.delenv(tesseract.ENGINE_ENV)
    assert tesseract.engine() == "tesserocr"  # installed and told where data lies: chosen


# --- end to end with Tesseract ----------------------------------------------------------------------

@pytest.fixture()
def text_folder(tmp_path):
    pics = tmp_path / "pics"
    text_picture(pics / "slide.png", ["Quarterly review", "- harbor 4821", "- next steps"])
    text_picture(pics / "receipt.png", ["CORNER CAFE", "coffee 3.50", "bread 2.10", "TOTAL 5.60"], size=(700, 600),
                 background=(246, 244, 236), font_size=30)
    text_picture(pics / "sign.png", ["MEADOW 7319"], size=(1000, 500), background=(30, 60, 160),
                 ink=(255, 255, 255), font_size=80, angle=4, blur=0.7)
    for seed in range(3):
        smooth_photo(pics / f"photo{seed}.jpg", seed)
    return pics


@needs_tesseract
def test_index_reads_words_and_search_ranks_by_them(tmp_path, tiny_model_config, text_folder):
    db, summary, _ = _indexed(tmp_path, tiny_model_config, text_folder, "--ocr", "auto")
    words = summary["words"]
    assert words["read"] == 3 and words["skipped"] == 3 and words["failed"] == 0, words

    def search(*args):
        result = runner.invoke(app, ["search", *args, "--db", str(db), "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    for query, name in (("harbor 4821", "slide.png"), ("coffee", "receipt.png"), ("meadow 7319", "sign.png"),
                        ("harb0r 4821", "slide.png")):
        hits = search("--ocr", query)
        assert hits and hits[0]["path"].endswith(name), (query, hits)
        assert hits[0]["ocr_snippet"] and hits[0]["ocr_score"] > 0.6
    assert "4821" in search("--ocr", "harbor 4821")[0]["ocr_snippet"]
    assert search("--ocr", "zebra crossing") == []
    combined = search("a picture", "--ocr", "coffee")  # ranked by the description among pictures saying coffee
    assert [hit["path"].rsplit("/", 1)[1] for hit in combined] == ["receipt.png"]
    assert "score" in combined[0] and combined[0]["ocr_matched"] == ["coffee"]
    plain = runner.invoke(app, ["search", "--ocr", "coffee", "--db", str(db)])
    assert plain.exit_code == 0 and "receipt.png\t" in plain.stdout and "coffee" in plain.stdout.split("\t")[-1]

    # a second run reads nothing again; a changed picture is read again
    _, again, _ = _indexed(tmp_path, tiny_model_config, text_folder, "--ocr", "auto")
    assert again["words"] == {**again["words"], "read": 0, "skipped": 0, "failed": 0}
    text_picture(text_folder / "slide.png", ["Quarterly review", "- granite 9904"])
    _, changed, _ = _indexed(tmp_path, tiny_model_config, text_folder, "--ocr", "auto")
    assert changed["words"]["read"] == 1
    assert search("--ocr", "granite 9904")[0]["path"].endswith("slide.png")
    assert search("--ocr", "harbor 4821") == [] or not search("--ocr", "harbor 4821")[0]["path"].endswith("slide.png")



def test_an_index_run_without_ocr_takes_the_indexs_mode_else_auto_for_a_new_index():
    from indexer.errors import MmsearchError
    from indexer.media.ocr import chosen_mode

    assert chosen_mode(None, None, new_index=True, has_words=False) == "auto"
    assert chosen_mode(None, "off", new_index=False, has_words=True) == "off"  # remembered wins
    assert chosen_mode(None, "on", new_index=False, has_words=False) == "on"
    assert chosen_mode("OFF", "auto", new_index=False, has_words=True) == "off"  # the run's own wins
    # an index made before auto was the default: not read through after an upgrade, unless it holds words
    assert chosen_mode(None, None, new_index=False, has_words=False) == "off"
    assert chosen_mode(None, None, new_index=False, has_words=True) == "auto"
    with pytest.raises(MmsearchError):
        chosen_mode("sometimes", None, new_index=True, has_words=False)


@needs_tesseract
def test_words_are_read_by_default_and_an_indexs_mode_is_remembered(tmp_path, tiny_model_config, text_folder):
    from indexer.media.ocr import CHOICE_KEY

    db, summary, _ = _indexed(tmp_path, tiny_model_config, text_folder)  # no --ocr: auto for a new index
    assert summary["words"]["read"] == 3 and summary["words"]["skipped"] == 3, summary["words"]
    with Library(db) as library:
        assert library.get_info(CHOICE_KEY) == "auto"
    text_picture(text_folder / "menu.png", ["Lunch menu today", "soup 4.20"])
    _, off, _ = _indexed(tmp_path, tiny_model_config, text_folder, "--ocr", "off")
    assert "words" not in off and off["embedded"] == 1
    text_picture(text_folder / "note.png", ["Parcel waiting at desk", "locker 5512"])
    _, later, _ = _indexed(tmp_path, tiny_model_config, text_folder)  # off, remembered
    assert "words" not in later and later["embedded"] == 1
    _, back, _ = _indexed(tmp_path, tiny_model_config, text_folder, "--ocr", "auto")  # reads what it missed
    assert back["words"]["read"] == 2, back["words"]

    # an index made before auto was the default (no mode recorded, no words): stays off until asked
    old = tmp_path / "old"
    db, _, _ = _indexed(old, tiny_model_config, text_folder, "--ocr", "off")
    with Library(db) as library:
        library.db.delete_info(CHOICE_KEY)
    _, rerun, _ = _indexed(old, tiny_model_config, text_folder)
    assert "words" not in rerun
    with Library(db) as library:
        assert library.get_info(CHOICE_KEY) == "off" and library.words.counts() == {}


@needs_tesseract
def test_auto_skips_pictures_tested_where_decoded_without_reading_them_again(tmp_path, tiny_model_config,
                                                                              text_folder, monkeypatch):
    import indexer.pipeline.words as words_pass
    from indexer.media.ocr import OcrOptions
    from indexer.media.text_gate import NO_TEXT

    opened = []
    read_file = words_pass.read_file
    monkeypatch.setattr(words_pass, "read_file", lambda path: opened.append(path.rsplit("/", 1)[1]) or read_file(path))
    db, summary, _ = _indexed(tmp_path, tiny_model_config, text_folder, "--ocr", "auto")
    assert summary["words"]["read"] == 3 and summary["words"]["skipped"] == 3, summary["words"]
    assert sorted(opened) == ["receipt.png", "sign.png", "slide.png"]  # the photos were not read again
    status = runner.invoke(app, ["status", "--db", str(db), "--json"])
    assert json.loads(status.stdout)["words"] == {"with_words": 3, "read": 3, "skipped": 3, "failed": 0}
    assert json.loads(status.stdout)["ocr_mode"] == "auto"
    status = runner.invoke(app, ["status", "--db", str(db)])
    assert "--ocr auto: 3 pictures with words (read 3, no text found 3, failed 0)" in " ".join(status.stdout.split())
    # pictures the decode threads did not test (an --ocr off run before) are read and tested here
    opened.clear()
    db, _, _ = _indexed(tmp_path / "off", tiny_model_config, text_folder, "--ocr", "off")
    with Library(db) as library:
        pending = library.words.pending("eng")
        slide = next(picture for picture in pending if picture.path.endswith("slide.png"))
        ahead = words_pass.WordsAhead(OcrOptions(mode="auto"), workers=1)
        ahead.screens[slide.item_id] = NO_TEXT  # told: no text in the slide
        report = words_pass.read_pictures(library, OcrOptions(mode="auto"), workers=1, ahead=ahead)
        ahead.close()
        assert report.read == 2 and report.skipped == 4
        assert len(opened) == 5 and "slide.png" not in opened
        assert library.words.search("harbor", 3) == []


@needs_tesseract
def test_tesseract_starts_as_soon_as_a_picture_the_test_passed_is_written(tmp_path):
    from indexer.media.ocr import READ, OcrOptions
    from indexer.media.text_gate import NO_TEXT
    from indexer.pipeline.words import WordsAhead
    from indexer.store.records import NewItem, WriteResult

    slide = text_picture(tmp_path / "slide.png", ["Quarterly review", "- harbor 4821"])
    rows = [NewItem(str(slide), 1, 0.0, "h1", text_screen=screen_image(Image.open(slide))),
            NewItem(str(tmp_path / "photo.jpg"), 1, 0.0, "h2", text_screen=NO_TEXT),
            NewItem(str(tmp_path / "untested.jpg"), 1, 0.0, "h3")]  # not tested where decoded (Ray, a GPU JPEG)
    ahead = WordsAhead(OcrOptions(mode="auto"), workers=1)
    try:
        ahead.written(rows, WriteResult(hashes={7: "h1", 8: "h2", 9: "h3"}))
        assert set(ahead.reading) == {7} and set(ahead.screens) == {7, 8}
        outcome = ahead.reading[7].result(timeout=120)
    finally:
        ahead.close()
    assert outcome.status == READ and "4821" in outcome.text


@needs_tesseract
def test_ocr_on_reads_what_the_text_test_skipped_and_copies_are_not_read_twice(tmp_path, tiny_model_config,
                                                                                text_folder):
    shutil.copy(text_folder / "slide.png", text_folder / "slide-copy.png")
    _, summary, _ = _indexed(tmp_path, tiny_model_config, text_folder, "--ocr", "on")
    words = summary["words"]
    assert words["read"] + words["copied"] == 7 and words["skipped"] == 0
    assert words["copied"] == 1 and words["read"] == 6


@needs_tesseract
def test_ocr_failure_costs_the_words_never_the_vector(tmp_path, tiny_model_config, text_folder):
    from indexer.media.ocr import OcrOptions
    from indexer.pipeline.words import read_pictures

    db, _, _ = _indexed(tmp_path, tiny_model_config, text_folder, "--ocr", "off")
    with Library(db) as library:
        report = read_pictures(library, OcrOptions(mode="on", timeout_s=0.001), workers=2)
        assert report.failed == 6 and report.read == 0
        assert library.reads.counts()["items"] == 6  # every picture keeps its vector
        assert library.words.counts() == {"failed": 6}
    result = runner.invoke(app, ["search", "a picture", "--db", str(db), "--json", "--top", "6"])
    assert result.exit_code == 0 and len(json.loads(result.stdout)) == 6


def test_missing_tesseract_is_one_note_and_on_is_one_error(tmp_path, tiny_model_config, monkeypatch):
    from indexer.media.tesseract import ENGINE_ENV

    pytesseract = pytest.importorskip("pytesseract")
    monkeypatch.setenv(ENGINE_ENV, "pytesseract")  # the engine that calls the tesseract program
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", str(tmp_path / "no-tesseract-here"))
    pics = tmp_path / "pics"
    write_image(pics / "a.png", seed=1)
    db, summary, result = _indexed(tmp_path, tiny_model_config, pics)  # the default for a new index: auto
    assert "words" not in summary
    notes = [line for line in result.stderr.splitlines() if "Tesseract" in line]
    assert len(notes) == 1 and "apt install tesseract-ocr" in notes[0], result.stderr
    failed = runner.invoke(app, ["index", str(pics), "--db", str(db), "--ocr", "on"])
    assert failed.exit_code != 0 and "Tesseract is not installed" in failed.stderr
    assert "Traceback" not in failed.output
    again = runner.invoke(app, ["index", str(pics), "--db", str(db)])  # a failed "on" is not remembered
    assert again.exit_code == 0 and len([line for line in again.stderr.splitlines() if "Tesseract" in line]) == 1
    silent = runner.invoke(app, ["index", str(pics), "--db", str(db), "--ocr", "off"])
    assert silent.exit_code == 0 and "Tesseract" not in silent.stderr
    remembered = runner.invoke(app, ["index", str(pics), "--db", str(db)])  # off is remembered: no note
    assert remembered.exit_code == 0 and "Tesseract" not in remembered.stderr
    nothing = runner.invoke(app, ["search", "--ocr", "coffee", "--db", str(db)])
    assert nothing.exit_code == 0 and "no words have been read" in nothing.stderr


# --- the HTTP API (words stored through the store: no Tesseract needed) -----------------------------

def test_api_searches_by_words_alone_and_among_a_description(tmp_path, tiny_model):
    from fastapi.testclient import TestClient

    from indexer.pipeline.sync import IndexConfig, index_folders
    from retrieval.media import media_for
    from retrieval.server import ServerConfig, create_app
    from retrieval.server.engine import SearchEngine, WarmLibrary

    pics = _pictures(tmp_path, 4)
    db = tmp_path / "db"
    with Library(db) as library, library.lock():
        index_folders(library, media_for(tiny_model), IndexConfig(roots=(str(pics),)))
        pending = library.words.pending("eng")
        texts = {"img1.png": "GROCERY MART\ncoffee 4.20\nTOTAL 4.20", "img2.png": "Re: invoice 2041 confirmed",
                 "img3.png": "coffee beans\nroastery"}
        library.words.write([WordsRow(p.item_id, p.content_hash, "eng", "read", texts.get(p.path.rsplit("/", 1)[1], ""))
                             for p in pending])
    config = ServerConfig(db=db)
    engine = SearchEngine(WarmLibrary(db), tiny_model, config)
    try:
        with TestClient(create_app(config, engine=engine), base_url="http://127.0.0.1:8000") as client:
            results = client.get("/api/search", params={"words": "invoice 2O41"}).json()["results"]
            assert [hit["name"] for hit in results] == ["img2.png"]
            assert results[0]["ocr_snippet"] == "Re: invoice 2041 confirmed"
            assert results[0]["ocr_matched"] == ["invoice", "2041"]
            among = client.get("/api/search", params={"words": "coffee", "q": "a picture"}).json()["results"]
            assert sorted(hit["name"] for hit in among) == ["img1.png", "img3.png"]
            assert all("coffee" in hit["ocr_snippet"] for hit in among)
            plain = client.get("/api/search", params={"q": "a picture"}).json()["results"]
            assert len(plain) == 4 and plain[0]["ocr_snippet"] is None
            page = client.get("/").text
            assert 'id="words"' in page
    finally:
        engine.close()
