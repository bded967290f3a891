// Shared by the node and coord pages: DOM helpers (text only, never HTML: names come from the
// network), the JSON API under this page's secret path, and polling.
"use strict";

const warren = (() => {
  // The page lives at /SECRET/; state-changing requests repeat the secret in a header.
  const secret = location.pathname.split("/")[1] || "";

  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  }

  // row builds a table row; each cell is a string or a Node.
  function row(cells) {
    const tr = el("tr");
    for (const c of cells) {
      const td = el("td");
      if (c instanceof Node) td.append(c); else td.textContent = c === undefined || c === null ? "" : String(c);
      tr.append(td);
    }
    return tr;
  }

  // fill replaces a table's body with rows and shows its "empty" note when there are none.
  function fill(tableId, rows, emptyId) {
    const table = document.getElementById(tableId);
    table.tBodies[0].replaceChildren(...rows);
    table.hidden = rows.length === 0;
    if (emptyId) document.getElementById(emptyId).hidden = rows.length > 0;
  }

  function set(id, text) { document.getElementById(id).textContent = text; }

  async function api(path, body) {
    const opts = body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Warren-Token": secret },
      body: JSON.stringify(body),
    };
    const resp = await fetch("api/" + path, Object.assign({ cache: "no-store", credentials: "same-origin" }, opts));
    const data = await resp.json().catch(() => ({ error: resp.statusText }));
    if (!resp.ok) throw new Error(data.error || resp.statusText);
    return data;
  }

  // poll fetches path every ms milliseconds and hands the answer to render; errors show in #error.
  function poll(path, render, ms) {
    const tick = async () => {
      try {
        render(await api(path));
        set("error", "");
        set("updated", "updated " + new Date().toLocaleTimeString());
        if (!document.body.dataset.loaded) {
          // When the first data was on screen, in ms since navigation start (tests read it).
          document.body.dataset.firstRenderMs = String(Math.round(performance.now()));
          document.body.dataset.loaded = "1";
        }
      } catch (e) {
        set("error", "cannot reach the server: " + e.message);
      }
      setTimeout(tick, ms);
    };
    tick();
  }

  function ago(ts) {
    const t = Date.parse(ts);
    if (!t || t < 0) return "";
    const s = Math.max(0, Math.round((Date.now() - t) / 1000));
    if (s < 60) return s + " s ago";
    if (s < 3600) return Math.round(s / 60) + " min ago";
    if (s < 86400) return Math.round(s / 3600) + " h ago";
    return Math.round(s / 86400) + " d ago";
  }

  function badge(text, cls) { return el("span", text, "badge " + (cls || "")); }

  return { el, row, fill, set, api, poll, ago, badge };
})();
