// The node page: this node, join requests (approve/deny), peers with an RTT history.
"use strict";

const { el, row, fill, set, api, poll, ago, badge } = warren;
const HISTORY = 60; // RTT samples kept per peer (one a poll)
const rtts = new Map(); // peer name -> recent RTTs in ms (0 = no link)

function sparkline(samples) {
  const w = 120, h = 22, ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("width", w);
  svg.setAttribute("height", h);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const max = Math.max(1, ...samples);
  // Spread the samples over the width until there are enough to fill it, then scroll.
  const step = (w - 2) / (Math.max(samples.length, 12) - 1);
  const pts = samples.map((v, i) => `${(1 + i * step).toFixed(1)},${(h - 2 - (v / max) * (h - 4)).toFixed(1)}`);
  const base = document.createElementNS(ns, "line");
  base.setAttribute("class", "base");
  base.setAttribute("x1", 0);
  base.setAttribute("x2", w);
  base.setAttribute("y1", h - 1);
  base.setAttribute("y2", h - 1);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pts.join(" "));
  const title = document.createElementNS(ns, "title");
  title.textContent = `last ${samples.length} samples, max ${max.toFixed(1)} ms`;
  svg.append(title, base, line);
  return svg;
}

async function decide(op, jr, buttons) {
  buttons.forEach((b) => (b.disabled = true));
  try {
    await api("join", { op, network: jr.network, key: jr.key });
    set("error", "");
  } catch (e) {
    set("error", `${op} ${jr.name}: ${e.message}`);
    buttons.forEach((b) => (b.disabled = false));
  }
}

function render(st) {
  const self = st.self;
  set("self-name", self.name);
  document.title = `warren ${self.name}`;
  const others = (st.coord.servers || []).length > 1 ? ` (of ${st.coord.servers.join(", ")})` : "";
  set("coord", `coord ${st.coord.addr}${others}: ` + (st.coord.connected ? "connected" : "disconnected (tunnels stay up)"));
  set("self-ips", (self.ips || []).join("  "));
  set("self-networks", (self.networks || []).join(", ") || "none");
  set("self-key", self.key);
  set("self-endpoint", self.endpoint || "");
  set("self-socks", self.socks || "off");
  const nat = self.nat;
  set("self-nat", nat && nat.udp ? `public ${nat.public}, ${nat.mapping} mapping${nat.relay ? ", relay " + nat.relay : ""}` : "not measured");
  set("self-exposed", (self.exposed || []).join(", ") || "none");
  const s = st.stats;
  set("self-stats", `${s.packets_sent} sent; dropped ${s.dropped_queue_full} queue full, ${s.dropped_no_route} no route, ${s.dropped_spoofed} spoofed, ${s.dropped_rate_limited} rate limited, ${s.dropped_acl} by rules`);

  const joins = (st.join_requests || []).map((jr) => {
    const yes = el("button", "Approve", "approve"), no = el("button", "Deny", "deny");
    yes.dataset.node = jr.name;
    no.dataset.node = jr.name;
    const both = [yes, no];
    yes.addEventListener("click", () => decide("approve", jr, both));
    no.addEventListener("click", () => decide("deny", jr, both));
    const actions = el("span");
    actions.append(yes, no);
    return row([jr.network, jr.name, el("span", jr.key, "mono"), ago(jr.requested_at), actions]);
  });
  fill("joins", joins, "joins-empty");

  const seen = new Set();
  const peers = (st.peers || []).map((p) => {
    seen.add(p.name);
    const hist = rtts.get(p.name) || [];
    hist.push(p.path === "none" ? 0 : p.rtt_ms);
    if (hist.length > HISTORY) hist.shift();
    rtts.set(p.name, hist);
    const tr = row([
      el("strong", p.name),
      el("span", (p.ips || []).join("  "), "mono"),
      el("span", p.state, p.online ? "on" : "off"),
      badge(p.path, p.path === "direct" ? "" : p.path),
      el("span", p.endpoint || "", "mono"),
      p.path === "none" ? "" : p.rtt_ms.toFixed(1) + " ms",
      sparkline(hist),
      (p.networks || []).join(", "),
    ]);
    tr.dataset.peer = p.name;
    return tr;
  });
  for (const name of rtts.keys()) if (!seen.has(name)) rtts.delete(name);
  fill("peers", peers, "peers-empty");
}

poll("status", render, 1000);
