// The coord's operator page (read only): relays and their load, networks, nodes.
"use strict";

const { el, row, fill, set, poll, ago, badge } = warren;

function render(st) {
  const more = st.nodes.length < st.nodes_total || st.networks.length < st.networks_total ? " (the first 1000 of each listed)" : "";
  set("summary", `${st.nodes_total} nodes (${st.nodes_online} online), ${st.networks_total} networks${more}`);
  fill("relays", (st.relays || []).map((r) =>
    row([badge(r.kind), el("span", r.addr, "mono"), el("span", r.key || "", "mono"), r.nodes === null || r.nodes === undefined ? "not known here" : String(r.nodes)])), "relays-empty");
  fill("networks", st.networks.map((n) => {
    const tr = row([el("strong", n.name), n.owner_name || n.owner, String(n.members), n.online === null ? "" : String(n.online), n.password ? "yes" : "no", ago(n.created_at)]);
    tr.dataset.network = n.name;
    return tr;
  }), "networks-empty");
  fill("nodes", st.nodes.map((n) => {
    const tr = row([el("strong", n.name), el("span", n.key, "mono"), el("span", (n.ips || []).join("  "), "mono"),
      n.online === null ? "" : el("span", n.online ? "online" : "offline", n.online ? "on" : "off"),
      el("span", n.observed || "", "mono"), n.online ? "now" : ago(n.last_seen), (n.networks || []).join(", ")]);
    tr.dataset.node = n.name;
    return tr;
  }), "nodes-empty");
}

poll("status", render, 2000);
