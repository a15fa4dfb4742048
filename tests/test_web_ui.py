"""End to end in real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright):
sign in by token link, search by words, by a dropped image and by "more like this"; the query and
filters kept in the address (reload, back, forward); a phone-wide window.

Needs `apt-get install chromium` and `pip install playwright` (never `playwright install`); skips
with the reason when either is missing.
"""
import base64
import os
import shutil
import socket
import threading
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from test_server import build_index, open_engine

from conftest import write_image
from retrieval.server import ServerConfig, create_app

CHROMIUM = os.environ.get("MMSEARCH_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "browser-test-token-42"
TIMEOUT_MS = 20_000


def _playwright():
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("the playwright package is not installed (pip install playwright)")
    return sync_playwright


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    """A real uvicorn server on a free loopback port, in a thread, with a token."""
    import uvicorn

    root = tmp_path_factory.mktemp("webui")
    pics = root / "pics"
    for i in range(8):
        write_image(pics / f"img{i}.png", seed=i)
    db = root / "db"
    build_index(pics, db, tiny_model)
    _write_words(db, {"img3.png": "Quarterly review\n- harbor 4821", "img4.png": "CORNER CAFE\ncoffee 3.50"})
    engine = open_engine(db, tiny_model)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(ServerConfig(db=db, port=port, token=TOKEN), engine=engine)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    ids = {os.path.basename(record.path): record.id for record in engine.library.reads.items(list(range(1, 20))).values()}
    yield f"http://127.0.0.1:{port}", pics, ids
    server.should_exit = True
    thread.join(timeout=10)
    engine.close()


def _write_words(db, texts: dict[str, str]) -> None:
    """Words as an OCR pass stores them (through the store: no Tesseract needed)."""
    from indexer.store.library import Library
    from indexer.store.words import WordsRow

    with Library(db) as library:
        pending = {picture.path.rsplit("/", 1)[1]: picture for picture in library.words.pending("eng")}
        library.words.write([WordsRow(pending[name].item_id, pending[name].content_hash, "eng", "read", text)
                             for name, text in texts.items()])


@pytest.fixture(scope="module")
def browser(served):
    sync_playwright = _playwright()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(browser):
    """One page for the module: it signs in once, by token link, in the first test."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def first_card(page) -> tuple[int, str]:
    card = page.locator("#results .card").first
    return int(card.get_attribute("data-id")), card.locator(".score").inner_text()


def wait_for_first_card(page, item_id: int, score: str | None = None) -> None:
    page.wait_for_function(
        """([id, score]) => { const c = document.querySelector('#results .card');
            return c && c.dataset.id === String(id) && (!score || c.querySelector('.score').textContent === score); }""",
        arg=[item_id, score])


def drop_file(page, path) -> None:
    """Drag-and-drop of a file onto the page, as a person does it: dragenter, dragover, drop."""
    data = base64.b64encode(path.read_bytes()).decode()
    page.evaluate(
        """([name, data]) => {
            const bytes = Uint8Array.from(atob(data), (ch) => ch.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], name, { type: "image/png" }));
            for (const type of ["dragenter", "dragover", "drop"]) {
                document.body.dispatchEvent(new DragEvent(type, { bubbles: true, cancelable: true, dataTransfer: transfer }));
            }
        }""",
        [path.name, data])


def test_search_drop_and_more_like_this_in_chromium(served, page, tmp_path):
    base, pics, ids = served
    # a token link signs in (cookie) and drops the token from the address bar
    page.goto(f"{base}/?token={TOKEN}")
    assert page.url == f"{base}/"
    page.wait_for_function("() => document.getElementById('status').textContent.includes('8 items')")

    # words: a grid of thumbnails with scores, every thumbnail loaded (weaker matches too: a random model's
    # relevance hides some by default)
    page.check("#show-weaker")
    page.fill("#q", "a colourful picture + bright")
    page.press("#q", "Enter")
    page.wait_for_selector("#results .card img")
    assert page.locator("#results .card").count() == 8
    page.wait_for_function("() => Array.from(document.querySelectorAll('#results .card img'))"
                           ".every(img => img.complete && img.naturalWidth > 0)")
    scores = [float(text) for text in page.locator("#results .card .score").all_inner_texts()]
    assert scores == sorted(scores, reverse=True)
    assert "q=" in page.url

    # drag-and-drop an indexed image with words in the box: the two combine (the form's q field), and
    # the address names the upload by the id the server gave it
    drop_file(page, pics / "img5.png")
    page.wait_for_function("() => /[?&]upload=[0-9a-f]{32}/.test(location.search)")
    page.wait_for_selector("#results .card")
    params = parse_qs(urlsplit(page.url).query)
    assert params["q"] == ["a colourful picture + bright"] and page.locator("#query-chip").is_visible()
    assert "a colourful picture + bright" in page.inner_text("#query-chip-text")
    assert first_card(page)[1] != "1.000"  # not the picture alone
    # words cleared, the chip's picture alone: it comes first with score 1.000
    page.fill("#q", "")
    page.press("#q", "Enter")
    wait_for_first_card(page, ids["img5.png"], "1.000")
    assert first_card(page) == (ids["img5.png"], "1.000")
    img5_url = page.url
    assert "upload=" in img5_url and "q=" not in img5_url

    # the file picker does the same
    page.set_input_files("#file-input", str(pics / "img2.png"))
    wait_for_first_card(page, ids["img2.png"])
    assert first_card(page) == (ids["img2.png"], "1.000")
    page.wait_for_function("url => location.href !== url && location.search.includes('upload=')", arg=img5_url)
    img2_url = page.url

    # the address holds the upload: reload, back and forward search by it again (no file sent)
    page.reload()
    wait_for_first_card(page, ids["img2.png"])
    assert first_card(page) == (ids["img2.png"], "1.000") and page.url == img2_url
    assert page.locator("#query-chip").is_visible()
    page.go_back()
    wait_for_first_card(page, ids["img5.png"])
    assert page.url == img5_url and first_card(page) == (ids["img5.png"], "1.000")
    page.go_forward()
    wait_for_first_card(page, ids["img2.png"])

    # click a result: the full image and its metadata; then "more like this"
    target = page.locator(f'#results .card[data-id="{ids["img6.png"]}"]')
    target.click()
    page.wait_for_selector("#detail[open]")
    page.wait_for_function("() => document.getElementById('detail-meta').textContent.includes('img6.png')")
    page.wait_for_function("() => { const img = document.getElementById('detail-image');"
                           " return img.src.endsWith('/image') && img.complete && img.naturalWidth === 96; }")
    page.screenshot(path=str(tmp_path / "detail.png"))
    # a transparent picture shows on a light checkerboard there, not on black
    assert "conic-gradient" in page.eval_on_selector("#detail-image", "img => getComputedStyle(img).backgroundImage")
    # "more like this" lists the 7 others, never the item itself
    page.click("#more-like-this")
    page.wait_for_function("() => location.search.includes('like=')")
    page.wait_for_function("() => document.querySelectorAll('#results .card').length === 7")
    shown = [int(card_id) for card_id in page.locator("#results .card").evaluate_all("cs => cs.map(c => c.dataset.id)")]
    assert ids["img6.png"] not in shown and len(set(shown)) == 7
    assert f"like={ids['img6.png']}" in page.url and not page.locator("#detail").is_visible()
    page.screenshot(path=str(tmp_path / "more-like-this.png"), full_page=True)


def test_the_words_box_finds_pictures_by_their_words_and_marks_the_match(served, page):
    base, _, ids = served
    page.goto(f"{base}/?token={TOKEN}")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('8 items')")
    page.fill("#q", "")
    page.fill("#words", "harb0r 4821")  # a letter OCR mistakes (0 for o) is forgiven
    page.press("#words", "Enter")
    wait_for_first_card(page, ids["img3.png"])
    assert page.locator("#results .card").count() == 1
    snippet = page.locator("#results .card .snippet").first
    assert snippet.inner_text() == "- harbor 4821"  # the line that matched
    assert sorted(mark.lower() for mark in snippet.locator("mark").all_inner_texts()) == ["4821", "harbor"]
    assert parse_qs(urlsplit(page.url).query)["words"] == ["harb0r 4821"]
    # the detail view shows the matched line too
    page.locator(f'#results .card[data-id="{ids["img3.png"]}"]').click()
    page.wait_for_selector("#detail[open]")
    assert "harbor 4821" in page.inner_text("#detail .snippet-line")
    page.keyboard.press("Escape")
    # the words narrow a described query: only the picture saying coffee, ranked by the description
    page.fill("#words", "coffee")
    page.fill("#q", "a colourful picture")
    page.press("#q", "Enter")
    wait_for_first_card(page, ids["img4.png"])
    assert page.locator("#results .card").count() == 1
    assert page.locator("#results .card .snippet mark").all_inner_texts() == ["coffee"]
    # words no picture holds: nothing found
    page.fill("#words", "zebra crossing")
    page.press("#words", "Enter")
    page.wait_for_function("() => document.querySelectorAll('#results .card').length === 0")
    page.fill("#words", "")
    page.fill("#q", "")


def test_filters_and_errors_show_in_the_page(served, page):
    base, _, ids = served
    page.goto(f"{base}/")
    page.check("#show-weaker")  # one filtered result of a random model: likely a weak match
    page.click("#filters-button")
    page.fill("#filters input[name=path]", "*/img3.png")
    page.fill("#q", "anything")
    page.press("#q", "Enter")
    wait_for_first_card(page, ids["img3.png"])
    assert page.locator("#results .card").count() == 1
    assert parse_qs(urlsplit(page.url).query) == {"q": ["anything"], "path": ["*/img3.png"]}
    # the filters are in the address: a reload keeps them (and shows them); back brings them back
    page.reload()
    wait_for_first_card(page, ids["img3.png"])
    assert page.locator("#results .card").count() == 1 and page.locator("#filters").is_visible()
    assert page.input_value("#filters input[name=path]") == "*/img3.png" and page.input_value("#q") == "anything"
    page.click("#filters-clear")
    page.wait_for_function("() => document.querySelectorAll('#results .card').length === 8")
    assert "path=" not in page.url
    page.go_back()
    page.wait_for_function("() => document.querySelectorAll('#results .card').length === 1")
    assert page.input_value("#filters input[name=path]") == "*/img3.png"
    page.click("#filters-clear")
    page.wait_for_function("() => document.querySelectorAll('#results .card').length === 8")
    page.fill("#q", "- only negative")
    page.press("#q", "Enter")
    page.wait_for_selector("#error:not([hidden])")
    assert "no positive term" in page.inner_text("#error")


def test_a_phone_wide_window_keeps_the_header_and_filters_on_screen(served, browser):
    """Issue 13: at 390 px wide the header ran off the screen."""
    base, _, ids = served
    context = browser.new_context(viewport={"width": 390, "height": 844}, device_scale_factor=3, is_mobile=True,
                                  has_touch=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(f"{base}/?token={TOKEN}")
        page.goto(f"{base}/?q=anything")
        page.wait_for_selector("#results .card")
        page.click("#filters-button")
        assert page.locator("#filters").is_visible()
        overflow = page.evaluate("""() => {
            const width = document.documentElement.clientWidth;
            const outside = Array.from(document.querySelectorAll('.bar, .bar *, #filters, #filters *'))
                .filter((el) => el.getClientRects().length && el.getBoundingClientRect().right > width + 0.5)
                .map((el) => el.id || el.name || el.tagName);
            return { width, scroll: document.documentElement.scrollWidth, outside };
        }""")
        assert overflow["width"] == 390 and overflow["outside"] == [] and overflow["scroll"] <= 390, overflow
        for button in ("#search-button", "#image-button", "#filters-button"):
            box = page.locator(button).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, button
    finally:
        context.close()


def test_login_page_in_chromium(served, browser):
    base, _, _ = served
    context = browser.new_context()  # no cookie yet
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(f"{base}/?q=cat")
        assert "/login" in page.url
        page.fill("#token", "wrong-token-value")
        page.click("button[type=submit]")
        page.wait_for_selector("#login-error:not([hidden])")
        page.fill("#token", TOKEN)
        page.click("button[type=submit]")
        page.wait_for_selector("#results .card")
        assert page.url.endswith("/?q=cat")
    finally:
        context.close()
