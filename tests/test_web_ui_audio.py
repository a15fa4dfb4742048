"""A sound result in real headless Chromium: its card shows the waveform and the best window's time,
the Kind filter narrows to sounds, and the detail view plays the sound from that time (the browser
seeks with HTTP Range requests).

The same setup as test_web_ui (Debian's /usr/bin/chromium driven by Playwright; skips when either is
missing); the index is test_server_audio's (the tiny image model, the bundled audio tower).
"""
import socket
import threading
import time

import pytest
from test_audio import varied, write_wav
from test_server import open_engine
from test_server_audio import build_audio_index
from test_web_ui import CHROMIUM, CHROMIUM_ARGS, TIMEOUT_MS, TOKEN, _playwright

from conftest import write_image
from retrieval.server import ServerConfig, create_app
from retrieval.server.engine import SearchRequest

pytest.importorskip("av")


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model):
    import uvicorn

    root = tmp_path_factory.mktemp("webui-audio")
    media = root / "media"
    media.mkdir()
    write_wav(media / "walk.wav", varied(30, seed=7))  # windows at 0, 5, 10, 15, 20 s
    write_image(media / "photo.png", seed=1)
    build_audio_index(media, root / "db", tiny_model)
    engine = open_engine(root / "db", tiny_model)
    engine.search(SearchRequest(text="warm up"))  # opens the sounds' space (the bundled text tower) before the clock runs
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
    yield f"http://127.0.0.1:{port}"
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


PLAYING_FROM = ("start => { const a = document.getElementById('detail-audio');"
                " return !a.hidden && !a.paused && a.readyState >= 2 && a.currentTime >= start - 0.05"
                " && a.currentTime < start + 2.5; }")


def test_a_sound_result_shows_its_waveform_and_plays_from_its_time(served, page, tmp_path):
    audio_responses = []
    page.on("response", lambda response: "/audio" in response.url and audio_responses.append(response.status))
    page.goto(f"{served}/?token={TOKEN}")
    page.wait_for_function("() => document.getElementById('status').textContent.includes('2 items')")
    page.check("#show-weaker")  # a random model's relevance would hide results by default
    page.fill("#q", "footsteps on gravel")
    page.click("#search-button")
    page.wait_for_function("() => document.querySelector('#results .card.audio')"
                           " || !document.getElementById('error').hidden")
    assert page.locator("#error").is_hidden(), page.inner_text("#error")
    assert page.locator("#results .card").count() == 2  # the sound beside the picture

    page.click("#filters-button")
    page.select_option("#filters select[name=modality]", "audio")
    page.click("#filters button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('#results .card').length === 1"
                           " && document.querySelector('#results .card.audio')")
    assert "modality=audio" in page.url
    card = page.locator("#results .card.audio").first
    moment = float(card.get_attribute("data-time"))
    assert moment in (0.0, 5.0, 10.0, 15.0, 20.0)
    assert card.locator(".moment").inner_text() == f"♪ 00:{int(moment):02d}"
    page.wait_for_function("() => { const img = document.querySelector('#results .card.audio img');"
                           " return img.src.includes('/thumb') && img.complete && img.naturalWidth === 256; }")

    card.click()
    page.wait_for_selector("#detail[open]")
    page.wait_for_function(PLAYING_FROM, arg=moment)
    first = page.evaluate("() => document.getElementById('detail-audio').currentTime")
    page.wait_for_function("seen => document.getElementById('detail-audio').currentTime > seen + 0.3", arg=first)
    assert page.locator("#detail-video").is_hidden() and page.locator("#detail-link").is_visible()
    assert page.evaluate("() => document.getElementById('detail-image').src.includes('/thumb?size=512')")
    assert page.locator("#detail-open").inner_text() == "Open sound"
    page.wait_for_function("() => document.getElementById('detail-meta').textContent.includes('Moment')")
    page.screenshot(path=str(tmp_path / "audio-detail.png"))
    page.click("#detail-close")
    page.wait_for_function("() => { const a = document.getElementById('detail-audio');"
                           " return a.paused && !a.getAttribute('src') && a.hidden; }")

    # a later window (whatever the random tower ranked first): the player seeks there (Range requests)
    item_id = int(card.get_attribute("data-id"))
    page.evaluate("id => { state.shown.get(id).time = 20; }", item_id)
    card.click()
    page.wait_for_selector("#detail[open]")
    page.wait_for_function(PLAYING_FROM, arg=20.0)
    assert page.evaluate("() => document.getElementById('detail-audio').src.includes('/audio#t=20')")
    assert 206 in audio_responses and set(audio_responses) <= {200, 206}
    page.click("#detail-close")
