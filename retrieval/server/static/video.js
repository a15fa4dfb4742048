// mmsearch web UI, videos: a video result's card shows its moment's frame and time; the detail view
// plays the video from that moment. app.js calls markVideoCard() per card and showMedia() per detail
// (a sound's goes to audio.js's showAudio).
"use strict";

function formatClock(seconds) {
  const whole = Math.floor(seconds);
  const [h, m, s] = [Math.floor(whole / 3600), Math.floor(whole / 60) % 60, whole % 60];
  const pad = (n) => String(n).padStart(2, "0");
  return h ? `${h}:${pad(m)}:${pad(s)}` : `${pad(m)}:${pad(s)}`;
}

// A video hit's card: its thumbnail is already the frame at hit.time (thumb_url has t=); add the time.
function markVideoCard(card, hit) {
  if (hit.modality !== "video" || hit.time == null) return;
  card.classList.add("video");
  card.dataset.time = String(hit.time);
  card.title = `${hit.path} @ ${formatClock(hit.time)}`;
  const badge = document.createElement("span");
  badge.className = "moment";
  badge.textContent = `▶ ${formatClock(hit.time)}`;
  card.append(badge);
}

// The detail view's picture or player. For a video, plays item.video_url from the hit's moment
// (#t= starts it there; currentTime once the metadata is in, for browsers that ignore fragments)
// and returns the moment as text for the details ("00:42 (also 01:10, 03:05)"); null for a picture.
function showMedia(item, hit) {
  const player = document.getElementById("detail-video");
  const picture = document.getElementById("detail-link");
  const open = document.getElementById("detail-open");
  if (item && item.audio_url) {  // a sound: its waveform, and the player under it (audio.js)
    stopVideo();
    player.hidden = true;
    picture.hidden = false;
    return showAudio(item, hit);
  }
  stopAudio();
  if (!item || !item.video_url) {
    stopVideo();
    player.hidden = true;
    picture.hidden = false;
    open.textContent = "Open full image";
    return null;
  }
  const start = hit && hit.time != null ? hit.time : 0;
  picture.hidden = true;
  player.hidden = false;
  player.poster = hit ? hit.thumb_url.replace(/size=\d+/, "size=512") : "";
  player.dataset.start = String(start);
  player.onloadedmetadata = () => {
    if (Math.abs(player.currentTime - start) > 0.25) player.currentTime = start;
  };
  player.src = `${item.video_url}#t=${start}`;
  open.href = player.src;
  open.textContent = "Open video";
  player.play().catch(() => {});  // refused without a user gesture: the controls are there
  return `${formatClock(start)}` + (hit && hit.moments && hit.moments.length > 1
    ? ` (also ${hit.moments.slice(1).map((moment) => formatClock(moment.time)).join(", ")})` : "");
}

function stopVideo() {
  const player = document.getElementById("detail-video");
  if (!player || !player.getAttribute("src")) return;
  player.pause();
  player.removeAttribute("src");
  player.load();  // lets go of the connection
}
