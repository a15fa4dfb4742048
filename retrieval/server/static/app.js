// mmsearch web UI: plain JS, no build step. Talks to the JSON API of the same server.
"use strict";

const PAGE_SIZE = 48;
// results below this relevance (estimated probability of a match) wait behind "show weaker matches"
const MIN_RELEVANCE = 0.3;
const $ = (id) => document.getElementById(id);

const state = {
  // {q: words, like: item id | null, upload: upload id | null, file: File | null, label}: words, an item
  // ("more like this") and an uploaded picture combine; a file is sent once, then named by its upload id
  query: null,
  offset: 0,
  hasMore: false,
  loading: false,
  generation: 0,    // bumped per new query, so late answers of an old one are dropped
  shown: new Map(), // item id -> hit, for the detail view
};

// ---------- API ---------------------------------------------------------------------------
function filterParams() {
  const form = new FormData($("filters"));
  const params = new URLSearchParams();
  for (const name of ["path", "after", "before", "ext", "modality"]) {
    const value = String(form.get(name) || "").trim();
    if (value) params.set(name, value);
  }
  const words = $("words").value.trim();  // words in the picture (OCR): they narrow every kind of query
  if (words) params.set("words", words);
  return params;
}

async function api(url, options = {}) {
  const response = await fetch(url, { credentials: "same-origin", ...options });
  if (response.status === 401) {
    location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
    throw new Error("sign in first");
  }
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const message = body && body.error ? body.error.message : `HTTP ${response.status}`;
    throw new Error(message);
  }
  return body;
}

async function fetchPage(query, offset) {
  const params = filterParams();
  params.set("offset", offset);
  params.set("limit", PAGE_SIZE);
  if (!$("show-weaker").checked) params.set("min_relevance", MIN_RELEVANCE);
  if (query.like) params.set("like", query.like);
  if (query.like) params.set("exclude", query.like);  // "more like this" never lists the item itself
  if (query.file && !query.upload) {
    const body = new FormData();
    body.append("image", query.file, query.file.name || "query-image");
    if (query.q) body.append("q", query.q);  // the words typed beside the picture join it
    const page = await api("/api/search?" + params, { method: "POST", body });
    if (page.upload_ids && page.upload_ids[0]) uploaded(query, page.upload_ids[0]);
    return page;
  }
  if (query.q) params.set("q", query.q);
  if (query.upload) params.set("upload", query.upload);
  return api("/api/search?" + params);
}

// the server keeps an upload's vector by its id: later pages, reloads and "back" name it in the URL
function uploaded(query, uploadId) {
  query.upload = uploadId;
  try {
    sessionStorage.setItem("upload-name:" + uploadId, query.file.name || "");
  } catch (error) { /* storage full or off: the chip then shows no name */ }
  if (state.query === query) rememberInUrl(query);
}

// ---------- searching ---------------------------------------------------------------------
function startSearch(query, { fromUrl = false } = {}) {
  state.query = query;
  state.offset = 0;
  state.hasMore = false;
  state.generation += 1;
  state.shown.clear();
  $("results").replaceChildren();
  $("empty").hidden = true;
  showChip(query);
  // a picture not sent yet enters the history once the server has named it (`uploaded`)
  if (!fromUrl && !(query.file && !query.upload)) rememberInUrl(query);
  loadMore();
}

async function loadMore() {
  if (!state.query || state.loading) return;
  const generation = state.generation;
  state.loading = true;
  document.body.classList.add("busy");
  showError(null);
  try {
    const page = await fetchPage(state.query, state.offset);
    if (generation !== state.generation) return;
    appendHits(page.results);
    state.offset = page.offset + page.results.length;
    state.hasMore = page.has_more;
    $("load-more").hidden = !state.hasMore;
    if (state.offset === 0) {
      $("empty").textContent = page.weaker_hidden
        ? `No strong match. ${page.weaker_hidden} weaker match${page.weaker_hidden === 1 ? "" : "es"} hidden: tick "show weaker matches".`
        : "Nothing found.";
      $("empty").hidden = false;
    }
    setStatusNote(`${state.offset} shown · ${page.took_ms} ms`);
  } catch (error) {
    if (generation === state.generation) showError(error.message);
  } finally {
    if (generation === state.generation) {
      state.loading = false;
      document.body.classList.remove("busy");
      // keep filling while the sentinel is still on screen (short pages, tall windows)
      if (state.hasMore && sentinelVisible()) loadMore();
    }
  }
}

function appendHits(hits) {
  const fragment = document.createDocumentFragment();
  for (const hit of hits) {
    state.shown.set(hit.id, hit);
    const card = document.createElement("li");
    card.className = "card";
    card.dataset.id = hit.id;
    card.tabIndex = 0;
    card.title = hit.path;
    const image = document.createElement("img");
    image.src = hit.thumb_url;
    image.alt = hit.name;
    image.loading = "lazy";
    image.decoding = "async";
    image.width = 256;
    image.height = 256;
    image.addEventListener("error", () => card.classList.add("broken"), { once: true });
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = hit.score.toFixed(3);
    if (hit.relevance !== null && hit.relevance !== undefined) {
      score.title = `relevance ${Math.round(hit.relevance * 100)}%`;
      if (hit.relevance < MIN_RELEVANCE) card.classList.add("weak");
    }
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = hit.name;
    card.append(image, score, name);
    if (hit.ocr_snippet) card.append(highlighted(hit.ocr_snippet, hit.ocr_matched || [], "snippet"));
    markVideoCard(card, hit);  // video.js
    markAudioCard(card, hit);  // audio.js
    fragment.append(card);
  }
  $("results").append(fragment);
}

// The picture's matched line, its matched words in <mark> (built as nodes: the text is never HTML).
function highlighted(text, words, className) {
  const span = document.createElement("span");
  span.className = className;
  const wanted = new Set(words.map((word) => word.toLowerCase()));
  for (const part of text.split(/([\p{L}\p{N}_]+)/u)) {
    if (wanted.has(part.toLowerCase())) {
      const mark = document.createElement("mark");
      mark.textContent = part;
      span.append(mark);
    } else if (part) {
      span.append(document.createTextNode(part));
    }
  }
  return span;
}

// ---------- the query chip and the URL ------------------------------------------------------
// The address holds the whole query: q, like (an item id), upload (an uploaded picture's id on the
// server) and the filters (path, after, before, ext, modality). Each new search is a history entry: reload and
// back/forward run it again. An upload id lasts while the server keeps the picture (the last 256,
// until it restarts); after that the page asks for the picture again.
function showChip(query) {
  const chip = $("query-chip");
  const image = $("query-chip-image");
  if (!query.like && !query.upload && !query.file) {
    chip.hidden = true;
    return;
  }
  chip.hidden = false;
  if (image.src.startsWith("blob:")) URL.revokeObjectURL(image.src);
  const words = query.q ? ` + “${query.q}”` : "";
  if (query.like) {
    image.hidden = false;
    image.src = `/api/items/${query.like}/thumb?size=128`;
    $("query-chip-text").textContent = `More like ${query.label || "#" + query.like}${words}`;
  } else {
    image.hidden = !query.file;
    if (query.file) image.src = URL.createObjectURL(query.file);
    $("query-chip-text").textContent = `Like the image ${query.label || ""}${words}`;
  }
}

function queryParams(query) {
  const params = new URLSearchParams();
  if (query && query.q) params.set("q", query.q);
  if (query && query.like) params.set("like", query.like);
  if (query && query.upload) params.set("upload", query.upload);
  for (const [name, value] of filterParams()) params.set(name, value);
  return params;
}

function rememberInUrl(query, { replace = false } = {}) {
  const params = queryParams(query);
  const url = params.toString() ? "/?" + params : "/";
  if (url === location.pathname + location.search) return;
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
}

function restoreFromUrl() {
  const params = new URLSearchParams(location.search);
  const filters = $("filters");
  for (const name of ["path", "after", "before", "ext", "modality"]) filters.elements[name].value = params.get(name) || "";
  $("words").value = params.get("words") || "";  // words in the picture (OCR)
  const words = $("words").value.trim();
  const filtered = ["path", "after", "before", "ext", "modality"].some((name) => params.get(name));
  if (filtered) showFilters(true);
  const q = (params.get("q") || "").trim();
  const like = /^\d+$/.test(params.get("like") || "") ? Number(params.get("like")) : null;
  const upload = /^[0-9a-f]{32}$/.test(params.get("upload") || "") ? params.get("upload") : null;
  $("q").value = q;
  if (!q && !like && !upload && !words) {
    clearResults();
    return;
  }
  let label;
  try {
    if (upload) label = sessionStorage.getItem("upload-name:" + upload) || undefined;
  } catch (error) { /* no storage */ }
  startSearch({ q, like, upload, file: null, label }, { fromUrl: true });
  if (like) {
    api(`/api/items/${like}`).then((item) => {
      if (state.query && state.query.like === like) {
        state.query.label = item.name;
        showChip(state.query);
      }
    }).catch(() => {});
  }
}

function showFilters(open) {
  $("filters").hidden = !open;
  $("filters-button").setAttribute("aria-expanded", String(open));
}

function clearResults() {
  state.query = null;
  state.generation += 1;
  $("results").replaceChildren();
  $("query-chip").hidden = true;
  $("load-more").hidden = true;
  $("empty").textContent = "Type words, pick an image, or drop one on the page.";
  $("empty").hidden = false;
}

// ---------- detail view ------------------------------------------------------------------
async function openDetail(id) {
  const dialog = $("detail");
  const hit = state.shown.get(id);
  $("detail-image").src = hit ? hit.thumb_url.replace(/size=\d+/, "size=512") : "";
  $("detail-title").textContent = hit ? hit.name : `#${id}`;
  $("detail-meta").replaceChildren();
  dialog.dataset.id = id;
  let moment = showMedia(hit, hit);  // video.js: a video plays from the hit's moment
  if (!dialog.open) dialog.showModal();
  try {
    const item = await api(`/api/items/${id}`);
    if (dialog.dataset.id !== String(id)) return;
    if (!item.video_url && !item.audio_url) {  // a video plays in #detail-video, a sound in #detail-audio
      $("detail-image").src = item.image_url;
      $("detail-open").href = item.image_url;
    }
    $("detail-link").href = item.image_url;
    $("detail-title").textContent = item.name;
    if (!hit && (item.video_url || item.audio_url)) moment = showMedia(item, null);
    const rows = [
      ["Path", item.path],
      ["Score", hit ? hit.score.toFixed(4) : "—"],
      ["Relevance", hit && hit.relevance != null ? `${Math.round(hit.relevance * 100)}%` : "—"],
      ["Size", item.width && item.height ? `${item.width} × ${item.height}` : "—"],
      ["Format", item.format || "—"],
      ["File", formatBytes(item.size)],
      ["Modified", new Date(item.mtime * 1000).toLocaleString()],
      ["Item id", String(item.id)],
    ];
    if (moment) rows.splice(2, 0, ["Moment", moment]);
    const list = $("detail-meta");
    for (const [label, value] of rows) {
      const term = document.createElement("dt");
      term.textContent = label;
      const description = document.createElement("dd");
      description.textContent = value;
      list.append(term, description);
    }
    if (hit && hit.ocr_snippet) {
      const term = document.createElement("dt");
      term.textContent = "Words";
      const description = document.createElement("dd");
      description.append(highlighted(hit.ocr_snippet, hit.ocr_matched || [], "snippet-line"));
      list.append(term, description);
    }
  } catch (error) {
    showError(error.message);
  }
}

function formatBytes(bytes) {
  if (bytes >= 1e6) return (bytes / 1e6).toFixed(1) + " MB";
  if (bytes >= 1e3) return (bytes / 1e3).toFixed(0) + " kB";
  return bytes + " B";
}

// ---------- small helpers ------------------------------------------------------------------
function showError(message) {
  const box = $("error");
  box.hidden = !message;
  box.textContent = message || "";
}

let statusBase = "";
function setStatusNote(note) {
  $("status").textContent = [statusBase, note].filter(Boolean).join(" · ");
}

async function loadStatus() {
  try {
    const info = await api("/api/status");
    statusBase = `${info.items.toLocaleString()} items`;
    setStatusNote("");
  } catch (error) {
    showError(error.message);
  }
}

function sentinelVisible() {
  const box = $("sentinel").getBoundingClientRect();
  return box.top < window.innerHeight + 800;
}

function searchByFile(file) {
  if (!file) return;
  if (file.type && !file.type.startsWith("image/")) {
    showError(`${file.name} is not an image`);
    return;
  }
  // the words in the box join the picture (an image search with words, as the API combines them)
  startSearch({ q: $("q").value.trim(), like: null, upload: null, file, label: file.name });
}

// ---------- wiring ------------------------------------------------------------------------
function wire() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("q").value.trim();
    const current = state.query;
    // words typed while a picture or an item is the query (its chip shows) join it; × on the chip drops it
    if (current && (current.like || current.upload || current.file)) startSearch({ ...current, q });
    else if (q || $("words").value.trim()) startSearch({ q, like: null, upload: null, file: null });
  });
  $("image-button").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", (event) => {
    searchByFile(event.target.files[0]);
    event.target.value = "";
  });
  $("filters-button").addEventListener("click", () => showFilters($("filters").hidden));
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.query) startSearch(state.query);
  });
  $("filters").addEventListener("reset", () => setTimeout(() => state.query && startSearch(state.query)));
  $("query-chip-clear").addEventListener("click", () => {
    const q = state.query ? state.query.q : "";
    if (q) {
      startSearch({ q, like: null, upload: null, file: null });  // the words stay, the picture goes
      return;
    }
    clearResults();
    rememberInUrl(null);
  });
  window.addEventListener("popstate", restoreFromUrl);  // back and forward run that search again
  $("results").addEventListener("click", (event) => {
    const card = event.target.closest(".card");
    if (card) openDetail(Number(card.dataset.id));
  });
  $("results").addEventListener("keydown", (event) => {
    const card = event.target.closest(".card");
    if (card && (event.key === "Enter" || event.key === " ")) {
      event.preventDefault();
      openDetail(Number(card.dataset.id));
    }
  });
  $("more-like-this").addEventListener("click", () => {
    const id = Number($("detail").dataset.id);
    const hit = state.shown.get(id);
    $("detail").close();
    $("q").value = "";
    startSearch({ q: "", like: id, upload: null, file: null, label: hit ? hit.name : undefined });
    window.scrollTo({ top: 0 });
  });
  $("detail-close").addEventListener("click", () => $("detail").close());
  $("detail").addEventListener("close", stopVideo);  // video.js
  $("detail").addEventListener("close", stopAudio);  // audio.js
  $("detail").addEventListener("click", (event) => {
    if (event.target === $("detail")) $("detail").close();  // a click on the backdrop
  });
  $("load-more").addEventListener("click", loadMore);
  // a viewing preference, not part of the query: kept across reloads and searches in this browser
  try {
    $("show-weaker").checked = localStorage.getItem("show-weaker") === "1";
  } catch (error) { /* no storage */ }
  $("show-weaker").addEventListener("change", () => {
    try {
      localStorage.setItem("show-weaker", $("show-weaker").checked ? "1" : "0");
    } catch (error) { /* no storage */ }
    if (state.query) startSearch(state.query);
  });

  new IntersectionObserver((entries) => {
    if (entries.some((entry) => entry.isIntersecting) && state.hasMore) loadMore();
  }, { rootMargin: "800px" }).observe($("sentinel"));

  // drag and drop an image anywhere on the page
  let depth = 0;
  const overlay = $("drop-overlay");
  const carriesFiles = (event) => Array.from(event.dataTransfer ? event.dataTransfer.types : []).includes("Files");
  window.addEventListener("dragenter", (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    depth += 1;
    overlay.hidden = false;
  });
  window.addEventListener("dragover", (event) => {
    if (carriesFiles(event)) event.preventDefault();
  });
  window.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) overlay.hidden = true;
  });
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    depth = 0;
    overlay.hidden = true;
    const files = event.dataTransfer ? Array.from(event.dataTransfer.files) : [];
    searchByFile(files[0]);
  });
}

wire();
loadStatus();
restoreFromUrl();
