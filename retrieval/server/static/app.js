// mmsearch web UI: plain JS, no build step. Talks to the JSON API of the same server.
"use strict";

const PAGE_SIZE = 48;
// results below this relevance (estimated probability of a match) wait behind "show weaker matches"
const MIN_RELEVANCE = 0.3;
const $ = (id) => document.getElementById(id);

const state = {
  query: null,      // {kind: "text", q} | {kind: "like", id, label} | {kind: "image", file}
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
  for (const name of ["path", "after", "before", "ext"]) {
    const value = String(form.get(name) || "").trim();
    if (value) params.set(name, value);
  }
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

function fetchPage(query, offset) {
  const params = filterParams();
  params.set("offset", offset);
  params.set("limit", PAGE_SIZE);
  if (!$("show-weaker").checked) params.set("min_relevance", MIN_RELEVANCE);
  if (query.kind === "text") {
    params.set("q", query.q);
    return api("/api/search?" + params);
  }
  if (query.kind === "like") {
    return api(`/api/items/${query.id}/similar?` + params);
  }
  const body = new FormData();
  body.append("image", query.file, query.file.name || "query-image");
  return api("/api/search?" + params, { method: "POST", body });
}

// ---------- searching ---------------------------------------------------------------------
function startSearch(query) {
  state.query = query;
  state.offset = 0;
  state.hasMore = false;
  state.generation += 1;
  state.shown.clear();
  $("results").replaceChildren();
  $("empty").hidden = true;
  showChip(query);
  rememberInUrl(query);
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
    fragment.append(card);
  }
  $("results").append(fragment);
}

// ---------- the query chip and the URL ------------------------------------------------------
function showChip(query) {
  const chip = $("query-chip");
  const image = $("query-chip-image");
  if (query.kind === "text") {
    chip.hidden = true;
    return;
  }
  chip.hidden = false;
  if (image.src.startsWith("blob:")) URL.revokeObjectURL(image.src);
  if (query.kind === "like") {
    image.src = `/api/items/${query.id}/thumb?size=128`;
    $("query-chip-text").textContent = `More like ${query.label || "#" + query.id}`;
  } else {
    image.src = URL.createObjectURL(query.file);
    $("query-chip-text").textContent = `Like the image ${query.file.name || ""}`;
  }
}

function rememberInUrl(query) {
  const params = new URLSearchParams();
  if (query.kind === "text") params.set("q", query.q);
  if (query.kind === "like") params.set("like", query.id);
  history.replaceState(null, "", params.toString() ? "/?" + params : "/");
}

function restoreFromUrl() {
  const params = new URLSearchParams(location.search);
  if (params.get("q")) {
    $("q").value = params.get("q");
    startSearch({ kind: "text", q: params.get("q") });
  } else if (/^\d+$/.test(params.get("like") || "")) {
    startSearch({ kind: "like", id: Number(params.get("like")) });
  }
}

// ---------- detail view ------------------------------------------------------------------
async function openDetail(id) {
  const dialog = $("detail");
  const hit = state.shown.get(id);
  $("detail-image").src = hit ? hit.thumb_url.replace(/size=\d+/, "size=512") : "";
  $("detail-title").textContent = hit ? hit.name : `#${id}`;
  $("detail-meta").replaceChildren();
  dialog.dataset.id = id;
  if (!dialog.open) dialog.showModal();
  try {
    const item = await api(`/api/items/${id}`);
    if (dialog.dataset.id !== String(id)) return;
    $("detail-image").src = item.image_url;
    $("detail-link").href = item.image_url;
    $("detail-open").href = item.image_url;
    $("detail-title").textContent = item.name;
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
    const list = $("detail-meta");
    for (const [label, value] of rows) {
      const term = document.createElement("dt");
      term.textContent = label;
      const description = document.createElement("dd");
      description.textContent = value;
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
  $("q").value = "";
  startSearch({ kind: "image", file });
}

// ---------- wiring ------------------------------------------------------------------------
function wire() {
  $("search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const q = $("q").value.trim();
    if (q) startSearch({ kind: "text", q });
  });
  $("image-button").addEventListener("click", () => $("file-input").click());
  $("file-input").addEventListener("change", (event) => {
    searchByFile(event.target.files[0]);
    event.target.value = "";
  });
  $("filters-button").addEventListener("click", () => {
    const filters = $("filters");
    filters.hidden = !filters.hidden;
    $("filters-button").setAttribute("aria-expanded", String(!filters.hidden));
  });
  $("filters").addEventListener("submit", (event) => {
    event.preventDefault();
    if (state.query) startSearch(state.query);
  });
  $("filters").addEventListener("reset", () => setTimeout(() => state.query && startSearch(state.query)));
  $("query-chip-clear").addEventListener("click", () => {
    state.query = null;
    state.generation += 1;
    $("results").replaceChildren();
    $("query-chip").hidden = true;
    $("load-more").hidden = true;
    $("empty").textContent = "Type words, pick an image, or drop one on the page.";
    $("empty").hidden = false;
    history.replaceState(null, "", "/");
  });
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
    startSearch({ kind: "like", id, label: hit ? hit.name : undefined });
    window.scrollTo({ top: 0 });
  });
  $("detail-close").addEventListener("click", () => $("detail").close());
  $("detail").addEventListener("click", (event) => {
    if (event.target === $("detail")) $("detail").close();  // a click on the backdrop
  });
  $("load-more").addEventListener("click", loadMore);
  $("show-weaker").addEventListener("change", () => state.query && startSearch(state.query));

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
