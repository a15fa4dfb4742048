"""A video result in real headless Chromium: its card shows the moment's frame and time, and the
detail view plays the video from that moment (the browser seeks with HTTP Range requests).

The same setup as test_web_ui (Debian's /usr/bin/chromium driven by Playwright; skips when either is
missing); the clip is test_video's, H.264 in MP4 as phones write it.
"""
import socket
import threading
import time

import pytest
from test_server import build_index, open_engine
from test_video import make_clip, still
from test_web_ui import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, TOKEN, _playwright, drop_file

from conftest import write_image
from retrieval.server import ServerConfig, create_app

pytest.importorskip("av")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    import uvicorn

    root = tmp_path_factory.mktemp("webui-video")
    media = root / "media"
    media.mkdir()
    make_clip(media / "holiday.mp4", [10, 11, 12, 13])  # shots of 3 s: shot 12 from 6 s on
    write_image(media / "photo.png", seed=1)
    build_index(media, root / "db", tiny_model)
    engine = open_engine(root / "db", tiny_model)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    app = create_app(ServerConfig(db=root / "db", port=port, token=TOKEN), engine=engine)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}", root
    server.should_exit = True
    thread.join(timeout=10)
    engine.close()


@pytest.fixture(scope="module")
def page(served):
    sync_playwright = _playwright()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1200, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        yield context.new_page()
        context.close()
        browser.close()


def test_a_video_result_shows_its_frame_and_plays_from_its_moment(served, page, tmp_path):
    base, _ = served
    video_responses = []
    page.on("response", lambda response: "/video" in response.url and video_responses.append(response.status))
    page.goto(f"{base}/?token={TOKEN}")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('2 items')")

    page.check("#show-weaker")  # a random model's relevance would hide the picture's card by default
    drop_file(page, still(tmp_path / "still12.png", 12))
    page.wait_for_selector("#results .card.video")
    card = page.locator("#results .card.video").first
    moment = float(card.get_attribute("data-time"))
    assert abs(moment - 6.0) <= 1.0
    assert card.locator(".moment").inner_text() == f"▶ 00:{int(moment):02d}"
    page.wait_for_function("() => { const img = document.querySelector('#results .card.video img');"
                           " return img.src.includes('t=') && img.complete && img.naturalWidth > 0; }")

    card.click()
    page.wait_for_selector("#detail[open]")
    # playing, from the moment on: at or past it, and moving
    page.wait_for_function(
        "start => { const v = document.getElementById('detail-video');"
        " return !v.hidden && !v.paused && v.readyState >= 2 && v.currentTime >= start - 0.05"
        " && v.currentTime < start + 2.5; }", arg=moment)
    first = page.evaluate("() => document.getElementById('detail-video').currentTime")
    page.wait_for_function("seen => document.getElementById('detail-video').currentTime > seen + 0.3", arg=first)
    assert page.locator("#detail-link").is_hidden()
    assert page.locator("#detail-open").inner_text() == "Open video"
    page.wait_for_function("() => document.getElementById('detail-meta').textContent.includes('Moment')")
    assert f"00:{int(moment):02d}" in page.inner_text("#detail-meta")
    page.screenshot(path=str(tmp_path / "video-detail.png"))
    assert 206 in video_responses and set(video_responses) <= {200, 206}  # the player asks for ranges
    assert not page.evaluate("() => document.getElementById('detail-image').src.endsWith('/image')")  # not fetched
    assert page.evaluate("() => { const v = document.getElementById('detail-video');"
                         " return v.src.includes('/video#t=') && document.getElementById('detail-open').href === v.src; }")

    # closing stops it; a picture's detail shows the picture again
    page.click("#detail-close")  # the dialog's close event comes as a task of its own: wait for it
    page.wait_for_function("() => { const v = document.getElementById('detail-video');"
                           " return v.paused && !v.getAttribute('src'); }")
    page.locator("#results .card:not(.video)").first.click()
    page.wait_for_selector("#detail[open]")
    page.wait_for_function("() => document.getElementById('detail-image').src.endsWith('/image')")
    assert page.locator("#detail-video").is_hidden() and page.locator("#detail-link").is_visible()
