// mmsearch duplicates review page: plain JS, read-only.
"use strict";

const $ = (id) => document.getElementById(id);

function formatBytes(bytes) {
  if (bytes >= 1e6) return (bytes / 1e6).toFixed(1) + " MB";
  if (bytes >= 1e3) return (bytes / 1e3).toFixed(0) + " kB";
  return bytes + " B";
}

function showGroups(body) {
  const fragment = document.createDocumentFragment();
  body.groups.forEach((group, index) => {
    const section = document.createElement("section");
    section.className = "dup-group";
    const title = document.createElement("h3");
    title.textContent = `Group ${index + 1}: ${group.items.length} pictures, similarity ≥ ${group.score.toFixed(3)}`;
    const list = document.createElement("ul");
    list.className = "dup-items";
    for (const item of group.items) {
      const entry = document.createElement("li");
      if (item.id === group.keep) entry.className = "keep";
      const link = document.createElement("a");
      link.href = item.image_url;
      link.target = "_blank";
      link.rel = "noopener";
      const image = document.createElement("img");
      image.src = item.thumb_url;
      image.alt = item.name;
      image.loading = "lazy";
      link.append(image);
      const caption = document.createElement("div");
      const size = item.width && item.height ? `${item.width} × ${item.height}` : "?";
      caption.textContent = `${item.id === group.keep ? "keep · " : ""}${size} · ${formatBytes(item.size)} · `
        + new Date(item.mtime * 1000).toLocaleDateString();
      const path = document.createElement("div");
      path.className = "path";
      path.textContent = item.path;
      entry.append(link, caption, path);
      list.append(entry);
    }
    section.append(title, list);
    fragment.append(section);
  });
  $("groups").replaceChildren(fragment);
  const shown = body.groups.length < body.total_groups ? ` (the ${body.groups.length} largest shown)` : "";
  $("status").textContent = `${body.total_groups} groups among ${body.pictures} pictures${shown} · ${body.seconds} s`;
}

async function load() {
  $("error").hidden = true;
  $("status").textContent = "looking…";
  const params = new URLSearchParams({ threshold: $("threshold").value });
  try {
    const response = await fetch("/api/duplicates?" + params, { credentials: "same-origin" });
    if (response.status === 401) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname);
      return;
    }
    const body = await response.json();
    if (!response.ok) throw new Error(body && body.error ? body.error.message : `HTTP ${response.status}`);
    showGroups(body);
  } catch (error) {
    $("error").textContent = error.message;
    $("error").hidden = false;
    $("status").textContent = "";
  }
}

$("dup-form").addEventListener("submit", (event) => {
  event.preventDefault();
  load();
});
load();
