// Tierline client page: what a BPO's client sees with its own client key (an operator: the admin
// key and a client id). Reads /api/client/overview (usage, tier ladder, service levels and
// commitment, invoices, notes) and the items relayed to metering (/api/items), each with the key;
// draws the page. No build step.
"use strict";

(function () {
  const { h, s, $, fmt, when, badge, ladderPosition, invoiceCard, itemsTable, provenance, getJson, detailOf, TIER_COLORS } = window.Tierline;
  const KEY_STORAGE = "tierline-client-key";
  const VIEW_STORAGE = "tierline-client-view"; // the client an admin key looks at
  const SERVICE_LINES = ["data_entry", "accounting", "hr", "customer_support", "it_support", "procurement"];
  const COMPLEXITIES = ["basic", "standard", "complex"];
  const PAGE_SIZE = 25;
  const RETRY_SECONDS = 10;

  let shown = null; // the overview on the page
  let period = null; // the period chosen (null: the open one)
  let cursors = [null]; // the cursor of each items page so far; the last is the page shown
  let retry = null;

  // --- the key (and, for an admin key, the client) -----------------------------------------

  function setStatus(kind, text) {
    $("status-dot").className = "dot " + kind;
    $("status-text").textContent = text;
  }

  function ask(message, options) {
    const needClient = Boolean(options && options.client);
    $("view").hidden = true;
    $("change-key").hidden = true;
    $("change-client").hidden = true;
    $("key-gate").hidden = false;
    $("client-label").hidden = !needClient;
    $("key-input").placeholder = needClient ? "(the admin key given already)" : "client key";
    $("key-error").textContent = message || "";
    setStatus("", needClient ? "client id needed" : "key needed");
    (needClient ? $("client-input") : $("key-input")).focus();
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    const client = $("client-input").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    if (!$("client-label").hidden && client) sessionStorage.setItem(VIEW_STORAGE, client);
    if (!sessionStorage.getItem(KEY_STORAGE)) return;
    $("key-input").value = "";
    $("client-input").value = "";
    $("key-gate").hidden = true;
    period = null;
    load();
  });

  $("change-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    sessionStorage.removeItem(VIEW_STORAGE);
    ask("");
  });

  $("change-client").addEventListener("click", () => {
    sessionStorage.removeItem(VIEW_STORAGE);
    ask("", { client: true });
  });

  const namesClientId = (data) =>
    data && Array.isArray(data.detail) && data.detail.some((p) => (p.loc || []).includes("client_id"));

  // --- the overview ------------------------------------------------------------------------

  async function load() {
    if (retry) clearTimeout(retry);
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (!key) return ask("");
    const viewing = sessionStorage.getItem(VIEW_STORAGE);
    const query = new URLSearchParams();
    if (viewing) query.set("client_id", viewing);
    if (period) query.set("period", period);
    let answer;
    try {
      answer = await getJson(`/api/client/overview?${query}`, key);
    } catch (error) {
      setStatus("bad", "console unreachable; retrying");
      retry = setTimeout(load, RETRY_SECONDS * 1000);
      return;
    }
    if (answer.status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      return ask("That key is not known.");
    }
    if (answer.status === 422 && !viewing && namesClientId(answer.data)) {
      return ask("This is an admin key: name the client whose view to open.", { client: true });
    }
    if (answer.status === 403) {
      if (viewing) {
        sessionStorage.removeItem(VIEW_STORAGE);
        return ask(`That key may not read ${viewing}.`, { client: true });
      }
      sessionStorage.removeItem(KEY_STORAGE);
      return ask("That key is not a client key.");
    }
    if (!answer.ok) {
      setStatus("bad", `console answered ${answer.status}: ${detailOf(answer.data)}; retrying`);
      retry = setTimeout(load, RETRY_SECONDS * 1000);
      return;
    }
    render(answer.data, Boolean(viewing));
    cursors = [null];
    loadItems();
  }

  function render(data, asOperator) {
    shown = data;
    period = data.period;
    $("key-gate").hidden = true;
    $("view").hidden = false;
    $("change-key").hidden = false;
    $("change-client").hidden = !asOperator;
    document.body.dataset.client = data.client_id;
    document.body.dataset.period = data.period;
    setStatus("ok", `${data.period} · ${data.usage.status}${asOperator ? " · operator view" : ""}`);
    renderHead(data, asOperator);
    renderKpis(data);
    renderLadder(data);
    renderByClass(data);
    renderTerms(data);
    renderInvoices(data);
    renderNotes(data);
  }

  function renderHead(data, asOperator) {
    $("client-name").replaceChildren(data.name || data.client_id, ...(asOperator ? [h("span", { class: "tag" }, "operator view")] : []));
    $("client-meta").textContent = [
      data.client_id,
      data.agreement_version ? `agreement v${data.agreement_version}` : "no agreement yet",
      data.currency,
      data.timezone,
    ].filter(Boolean).join(" · ");
    $("period-select").replaceChildren(...data.periods.map((key) =>
      h("option", { value: key, selected: key === data.period },
        `${key} · ${key === data.open_period ? "open" : key === data.period ? data.usage.status : "closed"}`)));
  }

  function kpi(label, value, hint, field) {
    return h("div", { class: "kpi", "data-kpi": field },
      h("div", { class: "label" }, label), h("div", { class: "value", "data-field": field }, value), h("div", { class: "hint" }, hint));
  }

  function tierIndex(data) {
    const steps = data.ladder ? data.ladder.steps : [];
    return Math.max(0, steps.findIndex((step) => step.current));
  }

  function renderKpis(data) {
    const usage = data.usage;
    $("kpis").replaceChildren(
      kpi("Items", fmt(usage.items), `${fmt(usage.units)} units · ${usage.period}`, "items"),
      kpi("Weighted units", fmt(usage.weighted_units), "W: what the tiers' up_to limits count", "weighted-units"),
      h("div", { class: "kpi", "data-kpi": "tier" }, h("div", { class: "label" }, usage.status === "closed" ? "Tier billed" : "Tier now"),
        h("div", { class: "value" }, badge(usage.tier, tierIndex(data), "tier-now")),
        h("div", { class: "hint" }, usage.tier ? `by ${usage.tier.reason}` : "no agreement in force")),
      kpi("Unclassified", fmt(usage.unclassified_items), "in review: never billed until placed", "unclassified"),
      kpi("Late items", fmt(usage.late_items), "metered after the period closed", "late"));
  }

  // --- the tier ladder: every tier, where W stands, and why the period lands where it does ---

  function ladderBar(ladder) {
    const steps = ladder.steps;
    const w = Number(ladder.weighted_units);
    const bounded = steps.filter((step) => step.up_to !== null).map((step) => Number(step.up_to));
    const top = Math.max((bounded.length ? bounded[bounded.length - 1] : 1) * 2, w * 1.1);
    const width = 1000, height = 26;
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none" });
    steps.forEach((step, i) => {
      svg.append(s("rect", { x: (i / steps.length) * width + 1, y: 4, width: width / steps.length - 2, height: 18, rx: 4,
        fill: TIER_COLORS[i % TIER_COLORS.length], "fill-opacity": step.current ? 0.3 : 0.12 }));
    });
    const at = ladderPosition(steps, w, top) * width;
    const current = Math.max(0, steps.findIndex((step) => step.current));
    svg.append(s("rect", { x: 0, y: 8, width: Math.max(2, at), height: 10, rx: 3, fill: TIER_COLORS[current % TIER_COLORS.length] }));
    svg.append(s("line", { x1: at, y1: 1, x2: at, y2: 25, stroke: "#17202e", "stroke-width": 2, "vector-effect": "non-scaling-stroke" }));
    return h("div", { class: "ladder" }, svg,
      h("div", { class: "ladder-labels" }, steps.map((step) => h("span", {}, `${step.name} ≤ ${step.up_to === null ? "∞" : fmt(step.up_to)}`))));
  }

  const classes = (list) => list.map((c) => `${c.service_line}/${c.complexity} (${fmt(c.items)} items)`).join(", ");

  function why(data) {
    const ladder = data.ladder, usage = data.usage, tier = usage.tier;
    const w = `W = ${fmt(ladder.weighted_units)} weighted units`;
    if (!tier) return `${w}. The period was closed without an agreement in force: it was not billed.`;
    const volume = ladder.steps.find((step) => step.volume);
    const lines = [];
    if (usage.status === "closed") lines.push(`Billed at ${tier.name} (${tier.reason}).`);
    const limit = volume.up_to === null ? "which has no limit" : `whose limit is ${fmt(volume.up_to)}`;
    lines.push(`${w}: by volume ${volume.name}, ${limit}.`);
    if (ladder.beyond_volume.length) {
      const scope = ladder.steps.find((step) => step.scope);
      lines.push(`${classes(ladder.beyond_volume)} ${ladder.beyond_volume.length === 1 ? "has" : "have"} at least ${fmt(ladder.min_items)} items, which ${volume.name}'s scope does not cover; the first tier covering every such class is ${scope.name}` +
        (ladder.mode === "upgrade" ? "." : " (surcharge mode: the tier stays the volume tier)."));
    }
    if (usage.status === "open") lines.push(`Now: ${tier.name}, by ${tier.reason}.`);
    if (ladder.out_of_scope.length) lines.push(`Outside ${tier.name}'s scope, charged per weighted unit: ${classes(ladder.out_of_scope)}.`);
    return lines.join(" ");
  }

  function renderLadder(data) {
    const ladder = data.ladder;
    $("ladder-note").textContent = ladder ? `min_items ${fmt(ladder.min_items)} · ${ladder.mode}` : "";
    if (!ladder) {
      $("ladder").replaceChildren(h("div", { class: "empty" }, "No agreement in force for this period: nothing is rated."));
      return;
    }
    const mark = (on, text, cls) => (on ? h("span", { class: "mark " + cls }, text) : null);
    const table = h("table", { class: "table ladder-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "tier"), h("th", { class: "num" }, "up to (W)"), h("th", { class: "num" }, "fee"),
        h("th", {}, "scope"), h("th", {}, ""))),
      h("tbody", {}, ladder.steps.map((step, i) =>
        h("tr", { class: "step" + (step.current ? " current" : ""), "data-tier": step.name, "data-current": step.current ? "true" : "false" },
          h("td", {}, h("i", { class: "swatch", style: `background:${TIER_COLORS[i % TIER_COLORS.length]}` }), step.name),
          h("td", { class: "num", "data-field": "up-to" }, step.up_to === null ? "no limit" : fmt(step.up_to)),
          h("td", { class: "num", "data-field": "fee" }, `${step.fee} ${data.currency}`),
          h("td", { class: "subtle" }, step.covers ? "covers your classes" : "not all your classes"),
          h("td", { class: "marks" }, mark(step.volume, "volume", "volume"), mark(step.scope, "scope", "scope"),
            mark(step.current, data.usage.status === "closed" ? "billed" : "you are here", "here"))))));
    $("ladder").replaceChildren(ladderBar(ladder), table, h("p", { class: "why", "data-testid": "ladder-why" }, why(data)));
  }

  function renderByClass(data) {
    const rows = data.usage.by_class.filter((c) => c.items > 0); // a class emptied by a correction
    const body = rows.map((c) =>
      h("tr", { "data-class": `${c.service_line}/${c.complexity}` },
        h("td", {}, c.service_line), h("td", {}, c.complexity), h("td", { class: "num" }, fmt(c.items)),
        h("td", { class: "num" }, fmt(c.units)), h("td", { class: "num" }, c.weighted_units)));
    if (data.usage.unclassified_items) {
      body.push(h("tr", { class: "unclassified" }, h("td", { colspan: 2 }, "unclassified (review queue)"),
        h("td", { class: "num" }, fmt(data.usage.unclassified_items)), h("td", {}, ""), h("td", { class: "num" }, "0")));
    }
    $("by-class").replaceChildren(body.length
      ? h("table", { class: "table" },
          h("thead", {}, h("tr", {}, h("th", {}, "service line"), h("th", {}, "complexity"), h("th", { class: "num" }, "items"),
            h("th", { class: "num" }, "units"), h("th", { class: "num" }, "weighted"))),
          h("tbody", {}, body))
      : h("div", { class: "empty" }, "No items in this period yet."));
  }

  // --- the agreement's SPEC §11 terms: service levels and the annual commitment ---------------

  const isZero = (money) => Number(money) === 0;

  function levelStatus(level) {
    if (level.attainment_percent === null) return "nothing measured";
    return level.missed ? "missed" : "met";
  }

  function renderServiceLevels(data) {
    const standing = data.service_levels, currency = data.currency;
    if (!standing) {
      $("levels-note").textContent = "";
      $("service-levels").replaceChildren(h("div", { class: "empty" }, "Your agreement has no service levels."));
      return;
    }
    $("levels-note").textContent = `${standing.at_risk_percent} % of the ${standing.tier} fee (${standing.tier_fee} ${currency}) is at risk`;
    const table = h("table", { class: "table levels-table" },
      h("thead", {}, h("tr", {}, h("th", {}, "level"), h("th", { class: "num" }, "met / measured"),
        h("th", { class: "num" }, "attainment"), h("th", { class: "num" }, "target"), h("th", {}, ""),
        h("th", { class: "num" }, "credit at stake"))),
      h("tbody", {}, standing.levels.map((level) =>
        h("tr", { class: "level" + (level.missed ? " missed" : ""), "data-level": level.id },
          h("td", {}, h("div", { class: "mono" }, level.id),
            h("div", { class: "subtle" }, `${level.service_line}${level.complexity ? ` (${level.complexity.join(", ")})` : ""} within ${fmt(level.within_hours)} h ${level.clock === "business" ? "of business time" : "elapsed"}`)),
          h("td", { class: "num", "data-field": "met" }, `${fmt(level.met)} / ${fmt(level.measured)}`),
          h("td", { class: "num", "data-field": "attainment" }, level.attainment_percent === null ? "—" : `${level.attainment_percent} %`),
          h("td", { class: "num" }, `${level.target_percent} %`),
          h("td", {}, h("span", { class: "mark " + levelStatus(level).replace(" ", "-"), "data-field": "status" }, levelStatus(level))),
          h("td", { class: "num", "data-field": "credit" }, `${level.credit_at_stake} ${currency}`)))));
    const share = `each missed level credits its pool share of ${standing.at_risk_percent} % of the ${standing.tier} fee`;
    const open = data.usage.status === "open";
    let summary;
    if (isZero(standing.credits)) summary = h("p", { class: "why" }, `No level is missed${open ? " so far" : ""}: nothing to credit (${share}).`);
    else summary = h("p", { class: "why" }, open ? "So far the period's invoice would credit " : "Measured now, the missed levels credit ",
      h("b", { "data-field": "credits" }, `${standing.credits} ${currency}`), ` (${share}).`);
    $("service-levels").replaceChildren(table, summary);
  }

  function renderCommitment(data) {
    const progress = data.commitment, currency = data.currency;
    if (!progress) {
      $("commitment-note").textContent = "";
      $("commitment").replaceChildren(h("div", { class: "empty" }, "Your agreement has no annual commitment."));
      return;
    }
    $("commitment-note").textContent = `contract year ${progress.contract_year} · ${progress.first_period} … ${progress.last_period}`;
    const minimum = Number(progress.annual_minimum), spent = Number(progress.committed_spend);
    const share = minimum > 0 ? Math.min(1, spent / minimum) : 1;
    const bar = h("div", { class: "progress", title: `${Math.round(share * 100)} % of the annual minimum` },
      h("span", { style: `width:${(share * 100).toFixed(1)}%` }));
    const facts = [
      ["annual minimum", `${progress.annual_minimum} ${currency}`, "annual-minimum"],
      ["committed so far", `${progress.committed_spend} ${currency}`, "committed"],
      ["periods closed", `${progress.periods_closed} of 12`, "periods-closed"],
      ["remaining", `${progress.remaining} ${currency}`, "remaining"],
    ];
    let text;
    if (progress.year_closed) text = isZero(progress.remaining) ? "The year is closed: its minimum was reached, no true-up." : `The year is closed: ${progress.last_period}'s invoice billed the true-up for what was missing.`;
    else if (isZero(progress.remaining)) text = "The year's minimum is reached: no true-up.";
    else text = `If nothing else were billed this year, ${progress.last_period}'s invoice would true up ${progress.remaining} ${currency}.`;
    $("commitment").replaceChildren(bar,
      h("dl", { class: "facts" }, facts.flatMap(([k, v, field]) => [h("dt", {}, k), h("dd", { "data-field": field }, v)])),
      h("p", { class: "why", "data-field": "true-up" }, text),
      h("p", { class: "subtle" }, "Committed spend: what was billed for each closed period of the year, its service credits left out" +
        (progress.year_closed ? "." : "; each period still to close adds at least its tier fee.")));
  }

  function renderTerms(data) {
    $("terms").hidden = !data.service_levels && !data.commitment;
    if ($("terms").hidden) return;
    renderServiceLevels(data);
    renderCommitment(data);
  }

  function renderInvoices(data) {
    $("invoices").replaceChildren(...(data.invoices.length ? data.invoices.map(invoiceCard) : [h("div", { class: "empty" }, "No invoice issued yet.")]));
  }

  function renderNotes(data) {
    if (!data.notes.length) {
      $("notes").replaceChildren(h("div", { class: "empty" }, "No notes: no closed period was corrected."));
      return;
    }
    $("notes").replaceChildren(...data.notes.map((note) =>
      h("div", { class: "note", "data-note": note.note_id },
        h("div", { class: "invoice-head" },
          h("span", { class: "iid mono" }, note.note_id),
          h("span", { class: "subtle" }, `on ${note.invoice_id} · ${note.period} · ${when(note.issued_at)}`),
          h("span", { class: "total", "data-field": "total" }, `${note.total} ${note.currency}`)),
        h("div", { class: "reason", "data-field": "reason" }, note.reason),
        h("table", { class: "table" }, h("tbody", {}, note.lines.map((line) =>
          h("tr", { class: "line", "data-kind": line.kind },
            h("td", { class: "kind" }, line.kind), h("td", {}, "the period re-rated now minus everything billed for it"),
            h("td", { class: "num" }, `${line.quantity} × ${line.unit_price}`),
            h("td", { class: "num", "data-field": "amount" }, line.amount))))))));
  }

  // --- the items of the period, in pages, and an item's provenance --------------------------

  function filters() {
    const chosen = {};
    for (const [name, id] of [["service_line", "filter-line"], ["complexity", "filter-complexity"], ["status", "filter-status"], ["rule_id", "filter-rule"]]) {
      const value = $(id).value.trim();
      if (value) chosen[name] = value;
    }
    return chosen;
  }

  async function loadItems() {
    if (!shown) return;
    const key = sessionStorage.getItem(KEY_STORAGE);
    const query = new URLSearchParams({ period: shown.period, limit: String(PAGE_SIZE), ...filters() });
    if (sessionStorage.getItem(VIEW_STORAGE)) query.set("client_id", shown.client_id);
    const cursor = cursors[cursors.length - 1];
    if (cursor) query.set("cursor", cursor);
    const answer = await getJson(`/api/items?${query}`, key);
    $("items-first").disabled = cursors.length === 1;
    $("items-page").textContent = `page ${cursors.length}`;
    if (!answer.ok) {
      $("items-next").disabled = true;
      const problem = answer.status === 503 ? `Items are unavailable right now (${detailOf(answer.data)}).` : `${answer.status}: ${detailOf(answer.data)}`;
      $("items").replaceChildren(h("div", { class: "error" }, problem));
      return;
    }
    const page = answer.data;
    $("items").replaceChildren(page.items.length
      ? itemsTable(page.items, (item) => showItem(item.client_id, item.id))
      : h("div", { class: "empty" }, "No item matches."));
    $("items-next").disabled = !page.next_cursor;
    $("items-next").dataset.cursor = page.next_cursor || "";
  }

  async function showItem(client, id) {
    const key = sessionStorage.getItem(KEY_STORAGE);
    const answer = await getJson(`/api/items/${encodeURIComponent(client)}/${encodeURIComponent(id)}`, key);
    for (const row of document.querySelectorAll(".item-row.chosen")) row.classList.remove("chosen");
    const row = [...document.querySelectorAll(".item-row")].find((r) => r.dataset.item === id);
    if (row) row.classList.add("chosen");
    $("provenance").replaceChildren(answer.ok
      ? provenance(answer.data)
      : h("div", { class: "error" }, answer.status === 404 ? `No item ${id}.` : `${answer.status}: ${detailOf(answer.data)}`));
  }

  $("items-next").addEventListener("click", () => {
    const next = $("items-next").dataset.cursor;
    if (!next) return;
    cursors.push(next);
    loadItems();
  });
  $("items-first").addEventListener("click", () => {
    cursors = [null];
    loadItems();
  });
  for (const id of ["filter-line", "filter-complexity", "filter-status"]) {
    $(id).addEventListener("change", () => { cursors = [null]; loadItems(); });
  }
  $("filter-rule").addEventListener("change", () => { cursors = [null]; loadItems(); });
  $("item-filters").addEventListener("submit", (event) => { event.preventDefault(); cursors = [null]; loadItems(); });
  $("period-select").addEventListener("change", () => {
    period = $("period-select").value;
    $("provenance").replaceChildren(h("div", { class: "empty" }, "Click an item to see how it was classified."));
    load();
  });

  $("filter-line").append(...SERVICE_LINES.map((line) => h("option", { value: line }, line)));
  $("filter-complexity").append(...COMPLEXITIES.map((level) => h("option", { value: level }, level)));

  // A key given in the address opens that key's view: an operator's earlier client choice goes.
  if (new URL(window.location.href).searchParams.has("key")) sessionStorage.removeItem(VIEW_STORAGE);
  window.Tierline.takeFromUrl({ key: KEY_STORAGE, client_id: VIEW_STORAGE });
  load();
})();
