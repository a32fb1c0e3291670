// The stand-in's web console: does what Feldera's console does on load, with stable element
// ids for browser tests (see the stand-in's `console` module doc for the contract).
//
// 1. GET /config/authentication and show which identity provider it names (#auth).
// 2. Take the bearer token from the URL fragment `#token=...` (kept in sessionStorage under
//    `feldera-token`, then removed from the address bar) (#token: "present" / "absent").
// 3. GET /v0/pipelines with `Authorization: Bearer <token>`; list the names in #pipelines, or
//    show "<status> <error_code>" in #error.
// 4. Open a WebSocket to /v0/pipelines/{first}/query with the subprotocols
//    ["feldera-ws-v1", "feldera-bearer.<base64url(token), no padding>"], send one query and
//    show the first message received in #ws ("error: ..." / "closed: <code>" on failure).
// #state moves: loading -> listing -> querying -> done, or failed.
(function () {
  "use strict";

  const TOKEN_KEY = "feldera-token";
  const byId = (id) => document.getElementById(id);
  const setText = (id, text) => { byId(id).textContent = text; };

  function takeToken() {
    const fragment = window.location.hash.replace(/^#/, "");
    const params = new URLSearchParams(fragment);
    const fromUrl = params.get("token");
    if (fromUrl) {
      sessionStorage.setItem(TOKEN_KEY, fromUrl);
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  function base64url(text) {
    const bytes = new TextEncoder().encode(text);
    let binary = "";
    bytes.forEach((b) => { binary += String.fromCharCode(b); });
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function providerName(config) {
    if (!config || typeof config !== "object") return "none";
    const names = Object.keys(config);
    return names.length === 0 ? "none" : names.join(", ");
  }

  async function errorText(response) {
    let code = "";
    try {
      const body = JSON.parse(await response.text());
      if (body && typeof body.error_code === "string") code = " " + body.error_code;
    } catch (_) {
      // Not JSON: the status alone.
    }
    return String(response.status) + code;
  }

  function query(pipeline, token) {
    return new Promise((resolve) => {
      const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
      const url = scheme + "//" + window.location.host + "/v0/pipelines/" +
        encodeURIComponent(pipeline) + "/query";
      const protocols = ["feldera-ws-v1"];
      if (token) protocols.push("feldera-bearer." + base64url(token));
      let done = false;
      const finish = (text) => {
        if (done) return;
        done = true;
        setText("ws", text);
        resolve();
      };
      let socket;
      try {
        socket = new WebSocket(url, protocols);
      } catch (error) {
        finish("error: " + error.message);
        return;
      }
      socket.onopen = () => socket.send(JSON.stringify({ sql: "SELECT 1", format: "json" }));
      socket.onmessage = (event) => {
        finish(String(event.data));
        socket.close(1000);
      };
      socket.onerror = () => finish("error: the WebSocket failed");
      socket.onclose = (event) => finish("closed: " + event.code);
    });
  }

  async function main() {
    try {
      const auth = await fetch("/config/authentication");
      setText("auth", auth.ok ? providerName(await auth.json()) : await errorText(auth));
    } catch (error) {
      setText("auth", "error: " + error.message);
    }
    const token = takeToken();
    setText("token", token ? "present" : "absent");
    setText("state", "listing");
    const headers = token ? { Authorization: "Bearer " + token } : {};
    const response = await fetch("/v0/pipelines?selector=status", { headers });
    if (!response.ok) {
      setText("error", await errorText(response));
      setText("state", "failed");
      return;
    }
    const pipelines = await response.json();
    const list = byId("pipelines");
    pipelines.forEach((pipeline) => {
      const item = document.createElement("li");
      item.textContent = pipeline.name;
      list.appendChild(item);
    });
    if (pipelines.length > 0) {
      setText("state", "querying");
      await query(pipelines[0].name, token);
    }
    setText("state", "done");
  }

  // A new `#token=` on the same page (a fragment change does not reload it) starts over.
  window.addEventListener("hashchange", () => {
    if (new URLSearchParams(window.location.hash.replace(/^#/, "")).get("token")) {
      takeToken();
      window.location.reload();
    }
  });

  main().catch((error) => {
    setText("error", "error: " + error.message);
    setText("state", "failed");
  });
})();
