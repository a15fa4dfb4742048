// mmsearch web UI, sounds: a sound's card shows its waveform and the best window's time; the detail
// view shows the waveform large and plays the sound from that window. video.js's showMedia() calls
// showAudio() for a sound; app.js calls markAudioCard() per card. Needs formatClock (video.js).
"use strict";

function markAudioCard(card, hit) {
  if (hit.modality !== "audio") return;
  card.classList.add("audio");
  const time = hit.time != null ? hit.time : 0;
  card.dataset.time = String(time);
  card.title = `${hit.path} @ ${formatClock(time)}`;
  const badge = document.createElement("span");
  badge.className = "moment";
  badge.textContent = `♪ ${formatClock(time)}`;
  card.append(badge);
}

// Plays item.audio_url from the hit's window (#t= starts it there; currentTime once the metadata is
// in, for browsers that ignore fragments); returns the moment as text for the details.
function showAudio(item, hit) {
  const player = document.getElementById("detail-audio");
  const open = document.getElementById("detail-open");
  const start = hit && hit.time != null ? hit.time : 0;
  document.getElementById("detail-image").src = `/api/items/${item.id}/thumb?size=512`;
  player.hidden = false;
  player.dataset.start = String(start);
  player.onloadedmetadata = () => {
    if (Math.abs(player.currentTime - start) > 0.25) player.currentTime = start;
  };
  player.src = `${item.audio_url}#t=${start}`;
  open.href = player.src;
  open.textContent = "Open sound";
  player.play().catch(() => {});  // refused without a user gesture: the controls are there
  return `${formatClock(start)}` + (hit && hit.moments && hit.moments.length > 1
    ? ` (also ${hit.moments.slice(1).map((moment) => formatClock(moment.time)).join(", ")})` : "");
}

function stopAudio() {
  const player = document.getElementById("detail-audio");
  if (!player) return;
  player.hidden = true;
  if (!player.getAttribute("src")) return;
  player.pause();
  player.removeAttribute("src");
  player.load();  // lets go of the connection
}
