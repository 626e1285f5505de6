// What the operator page (console.js) and the client page (client.js) share: DOM helpers, the key
// in sessionStorage, tier badges, and an item's row and provenance (SPEC §10). Plain browser
// JavaScript, no build step, no third-party code.
"use strict";

window.Tierline = (function () {
  const SVG = "http://www.w3.org/2000/svg";
  const TIER_COLORS = ["var(--t0)", "var(--t1)", "var(--t2)", "var(--t3)", "var(--t4)"];
  const number = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") el.className = value;
      else if (name === "style") el.style.cssText = value;
      else el.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
  }

  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs || {})) el.setAttribute(name, String(value));
    for (const child of children.flat()) if (child) el.append(child);
    return el;
  }

  const $ = (id) => document.getElementById(id);
  const fmt = (n) => number.format(Number(n));

  function ago(iso) {
    if (!iso) return "never";
    const seconds = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (seconds < 60) return `${seconds}s ago`;
    if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
    return new Date(iso).toISOString().replace("T", " ").slice(0, 16) + " UTC";
  }

  // A timestamp as the pages show it: UTC, to the minute.
  const when = (iso) => (iso ? iso.replace("T", " ").replace(/(:\d\d)(\.\d+)?Z$/, "$1").slice(0, 16) + " UTC" : "—");

  // `?key=…` (and any other of `names`) moves into sessionStorage and out of the address bar,
  // so the key stays out of history and screenshots.
  function takeFromUrl(names) {
    const url = new URL(window.location.href);
    let changed = false;
    for (const [param, storage] of Object.entries(names)) {
      const value = url.searchParams.get(param);
      if (value) sessionStorage.setItem(storage, value);
      if (url.searchParams.has(param)) {
        url.searchParams.delete(param);
        changed = true;
      }
    }
    if (changed) window.history.replaceState(null, "", url.pathname + url.search + url.hash);
  }

  async function getJson(path, key) {
    const response = await fetch(path, { headers: { Authorization: `Bearer ${key}` }, cache: "no-store" });
    let data = null;
    try {
      data = await response.json();
    } catch (error) {
      data = null;
    }
    return { status: response.status, ok: response.ok, data };
  }

  // What an error answer says: `{"detail": "..."}` or FastAPI's list of problems.
  function detailOf(data) {
    if (!data || data.detail === undefined) return "";
    if (typeof data.detail === "string") return data.detail;
    return data.detail.map((problem) => problem.msg).join("; ");
  }

  function badge(tier, index, extraClass) {
    if (!tier) return h("span", { class: "badge none " + (extraClass || "") }, "no tier");
    return h("span", { class: "badge " + (extraClass || ""), style: `background:${TIER_COLORS[index % TIER_COLORS.length]}` },
      tier.name, h("span", { class: "why" }, ` · ${tier.reason}`));
  }

  // Where a weighted-unit figure sits on the tier ladder: each tier gets an equal share of the
  // width, and the figure is placed linearly inside the tier it falls in.
  function ladderPosition(tiers, w, top) {
    const n = tiers.length;
    let lower = 0;
    for (let i = 0; i < n; i++) {
      const upper = tiers[i].up_to === null ? top : Number(tiers[i].up_to);
      if (w <= upper || i === n - 1) {
        const inside = upper > lower ? Math.min(1, (w - lower) / (upper - lower)) : 1;
        return (i + Math.max(0, inside)) / n;
      }
      lower = upper;
    }
    return 1;
  }

  // An invoice (SPEC §7) with its lines and total.
  function invoiceCard(inv) {
    return h("div", { class: "invoice", "data-invoice": inv.invoice_id },
      h("div", { class: "invoice-head" },
        h("span", { class: "iid mono" }, inv.invoice_id),
        h("span", { class: "badge", style: "background:#475569" }, inv.tier.name, h("span", { class: "why" }, ` · ${inv.tier.reason}`)),
        h("span", { class: "subtle" }, `${fmt(inv.usage.items)} items · ${fmt(inv.usage.weighted_units)} wu · v${inv.agreement_version}`),
        h("span", { class: "total", "data-field": "total" }, `${inv.total} ${inv.currency}`)),
      h("table", { class: "table" },
        h("tbody", {}, inv.lines.map((line) =>
          h("tr", { class: "line", "data-kind": line.kind },
            h("td", { class: "kind" }, line.kind.replaceAll("_", " ")),
            h("td", {}, line.description ?? ""),
            h("td", { class: "num" }, `${line.quantity} × ${line.unit_price}`),
            h("td", { class: "num", "data-field": "amount" }, line.amount))))),
      inv.service_levels ? serviceLevelsReport(inv.service_levels) : null);
  }

  // An invoice's `service_levels` (SPEC §11): each level's attainment against its target.
  function serviceLevelsReport(levels) {
    return h("div", { class: "levels-report subtle", "data-field": "service-levels" }, "service levels: ",
      levels.map((level, i) => h("span", { class: "level-result" + (level.missed ? " missed" : ""), "data-level": level.id },
        i ? " · " : "", `${level.id} `,
        level.attainment_percent === null ? "nothing measured" : `${level.attainment_percent} % of ${level.target_percent} %`,
        level.missed ? " missed" : "")));
  }

  const classText = (value) => (value ? `${value.service_line} / ${value.complexity}` : "unclassified");
  const itemClass = (item) => (item.status === "unclassified" ? null : { service_line: item.service_line, complexity: item.complexity });

  // A page of items as a table; clicking a row calls `open(item)`.
  function itemsTable(items, open, options) {
    const withClient = options && options.withClient;
    return h("table", { class: "table items-table" },
      h("thead", {}, h("tr", {},
        withClient ? h("th", {}, "client") : null,
        h("th", {}, "item"), h("th", {}, "completed"), h("th", {}, "class"), h("th", {}, "rule"),
        h("th", { class: "num" }, "units"), h("th", { class: "num" }, "weighted"))),
      h("tbody", {}, items.map((item) => {
        const row = h("tr", { class: "item-row" + (item.status === "unclassified" ? " unclassified" : ""), "data-item": item.id, tabindex: 0, title: "show its provenance" },
          withClient ? h("td", { class: "mono" }, item.client_id) : null,
          h("td", { class: "mono" }, item.id),
          h("td", { class: "subtle" }, when(item.completed_at)),
          h("td", { "data-field": "class" }, classText(itemClass(item)), item.late ? h("span", { class: "tag late" }, "late") : null),
          h("td", { class: "mono", "data-field": "rule" }, item.rule_id ?? "—"),
          h("td", { class: "num" }, fmt(item.units)),
          h("td", { class: "num" }, item.weighted_units));
        row.addEventListener("click", () => open(item));
        row.addEventListener("keydown", (event) => { if (event.key === "Enter") open(item); });
        return row;
      })));
  }

  // An item's provenance: what was metered, the class it has now and the rule (or correction)
  // that placed it, and every change of its class, oldest first.
  function provenance(item) {
    const facts = [
      ["client", item.client_id], ["period", item.period + (item.late ? " (late)" : "")],
      ["class now", classText(itemClass(item))], ["placed by", item.rule_id ?? "no rule: review queue"],
      ["agreement", item.agreement_version === null ? "none" : `v${item.agreement_version}`],
      ["units", fmt(item.units)], ["weighted units", item.weighted_units],
      ["handling", item.handling_seconds === null ? "—" : `${fmt(item.handling_seconds)} s`],
      ["source", item.source ?? "—"], ["opened", when(item.opened_at)],
      ["completed", when(item.completed_at)], ["received", when(item.received_at)],
    ];
    const history = item.history.length
      ? h("ol", { class: "history" }, item.history.map((change) =>
          h("li", { class: "change", "data-reclassification": change.reclassification },
            h("div", {}, h("b", {}, classText(change.from)), " → ", h("b", {}, classText(change.to)),
              h("span", { class: "subtle" }, ` · ${when(change.at)}`)),
            h("div", { class: "subtle" }, h("span", { class: "mono" }, change.reclassification), `: ${change.reason}`))))
      : h("div", { class: "empty" }, "Never reclassified: its class is the one it was first given.");
    return h("div", { class: "provenance-body", "data-item": item.id },
      h("div", { class: "card-head" }, h("h3", { class: "mono" }, item.id), h("span", { class: "subtle" }, item.status)),
      h("dl", { class: "facts" }, facts.flatMap(([k, v]) => [h("dt", {}, k), h("dd", { "data-field": k.replaceAll(" ", "-") }, v)])),
      h("h4", {}, "History"),
      history);
  }

  return {
    SVG, TIER_COLORS, h, s, $, fmt, ago, when, takeFromUrl, getJson, detailOf, badge, ladderPosition,
    invoiceCard, classText, itemsTable, provenance,
  };
})();
