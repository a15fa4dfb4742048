"use strict";
(() => {
  const params = new URLSearchParams(location.search);
  const next = params.get("next");
  if (next && next.startsWith("/") && !next.startsWith("//")) document.getElementById("next").value = next;
  const error = params.get("error");
  if (error) document.getElementById(error === "wait" ? "login-wait" : "login-error").hidden = false;
})();
