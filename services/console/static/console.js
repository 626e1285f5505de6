// Tierline operator console: polls /api/overview with the admin key and draws the page.
// Plain browser JavaScript, no build step, no third-party code; charts are inline SVG.
"use strict";

(function () {
  const { h, s, $, fmt, ago, badge, ladderPosition, invoiceCard, TIER_COLORS } = window.Tierline;
  const KEY_STORAGE = "tierline-admin-key";
  const GROUP_COLORS = ["#2f6fdb", "#c2410c", "#8253d6", "#1f9d62"];
  const INVOICES_SHOWN = 6;
  const USAGE_SHOWN = 10;
  const QUEUE_SHOWN = 12;
  const QUEUE_ITEMS = 50;

  let pollSeconds = 2;
  let timer = null;
  let lastOk = null;

  // --- the key ----------------------------------------------------------------------------

  function askForKey(message) {
    if (timer) clearTimeout(timer);
    $("dashboard").hidden = true;
    $("change-key").hidden = true;
    $("key-gate").hidden = false;
    $("key-error").textContent = message || "";
    setStatus("", "admin key needed");
    $("key-input").focus();
  }

  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("key-input").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    $("key-input").value = "";
    $("key-gate").hidden = true;
    poll();
  });

  $("change-key").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    askForKey("");
  });

  // --- polling ----------------------------------------------------------------------------

  function setStatus(kind, text) {
    $("status-dot").className = "dot " + kind;
    $("status-text").textContent = text;
  }

  async function poll() {
    if (timer) clearTimeout(timer);
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (!key) return askForKey("");
    let response;
    try {
      response = await fetch("/api/overview", {
        headers: { Authorization: `Bearer ${key}` },
        cache: "no-store",
      });
    } catch (error) {
      setStatus("bad", `console unreachable (last update ${ago(lastOk)})`);
      timer = setTimeout(poll, pollSeconds * 1000);
      return;
    }
    if (response.status === 401 || response.status === 403) {
      sessionStorage.removeItem(KEY_STORAGE);
      return askForKey(response.status === 401 ? "That key is not known." : "That key is not the admin key.");
    }
    if (!response.ok) {
      setStatus("bad", `console answered ${response.status}`);
      timer = setTimeout(poll, pollSeconds * 1000);
      return;
    }
    const data = await response.json();
    pollSeconds = data.poll_seconds || pollSeconds;
    lastOk = data.generated_at;
    render(data);
    timer = setTimeout(poll, pollSeconds * 1000);
  }

  function render(data) {
    $("key-gate").hidden = true;
    $("dashboard").hidden = false;
    $("change-key").hidden = false;
    $("poll-seconds").textContent = String(pollSeconds);
    const kafka = data.kafka;
    if (kafka.error) setStatus("warn", kafka.error);
    else setStatus("ok", `live · Kafka sampled ${ago(kafka.sampled_at)}`);
    document.body.dataset.updated = data.generated_at;
    lastData = data;
    renderKpis(data);
    renderTopics(kafka);
    renderLag(kafka);
    renderUsage(data);
    renderInvoices(data.invoices);
    renderDeadLetters(kafka.dead_letters);
    renderReviewQueue(data.review_queue);
  }

  // --- charts -----------------------------------------------------------------------------

  function sparkline(points, color) {
    const width = 160, height = 28;
    const svg = s("svg", { class: "spark", viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none" });
    if (points.length < 2) {
      svg.append(s("line", { x1: 0, y1: height - 1, x2: width, y2: height - 1, stroke: "#d5dbe4", "stroke-width": 1 }));
      return svg;
    }
    const t0 = points[0][0], t1 = points[points.length - 1][0];
    const max = Math.max(1, ...points.map((p) => p[1]));
    const xy = points.map(([t, v]) => [((t - t0) / Math.max(1, t1 - t0)) * width, height - 1 - (v / max) * (height - 3)]);
    const line = xy.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" ");
    svg.append(
      s("polygon", { points: `0,${height} ${line} ${width},${height}`, fill: color, "fill-opacity": 0.12 }),
      s("polyline", { points: line, fill: "none", stroke: color, "stroke-width": 1.5, "vector-effect": "non-scaling-stroke" })
    );
    return svg;
  }

  function lineChart(container, series) {
    container.replaceChildren();
    const width = 600, height = 150;
    const all = series.flatMap((one) => one.points);
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none", role: "img" });
    for (let i = 1; i <= 3; i++) {
      const y = (height * i) / 4;
      svg.append(s("line", { x1: 0, y1: y, x2: width, y2: y, stroke: "#eef1f5", "stroke-width": 1, "vector-effect": "non-scaling-stroke" }));
    }
    const max = Math.max(1, ...all.map((p) => p[1]));
    if (all.length) {
      const t0 = Math.min(...all.map((p) => p[0])), t1 = Math.max(...all.map((p) => p[0]));
      for (const one of series) {
        if (!one.points.length) continue;
        const xy = one.points.map(([t, v]) => `${(((t - t0) / Math.max(1, t1 - t0)) * width).toFixed(1)},${(height - 2 - (v / max) * (height - 12)).toFixed(1)}`);
        svg.append(s("polyline", { points: xy.join(" "), fill: "none", stroke: one.color, "stroke-width": 2, "vector-effect": "non-scaling-stroke", "stroke-linejoin": "round" }));
      }
      const minutes = Math.max(1, Math.round((t1 - t0) / 60));
      container.append(h("span", { class: "xlabel left" }, `${minutes} min ago`), h("span", { class: "xlabel right" }, "now"));
    }
    container.prepend(svg);
    container.append(h("span", { class: "ymax" }, `max ${fmt(max)}`));
  }

  // --- sections ---------------------------------------------------------------------------

  function kpi(label, value, hint, bad) {
    return h("div", { class: "kpi" }, h("div", { class: "label" }, label), h("div", { class: "value" + (bad ? " bad" : "") }, value), h("div", { class: "hint" }, hint));
  }

  function renderKpis(data) {
    const kafka = data.kafka;
    const topic = (name) => kafka.topics.find((t) => t.topic === name) || { rate: 0, messages: 0 };
    const lag = kafka.groups.reduce((sum, g) => sum + g.lag, 0);
    const dead = kafka.dead_letters.reduce((sum, d) => sum + d.messages, 0);
    const invoiced = data.invoices.length;
    $("kpis").replaceChildren(
      // Records, not items: a record carries one item or a batch of one client's items.
      kpi("Item records in", `${fmt(topic("workitems.completed").rate)}/s`, `${fmt(topic("workitems.completed").messages)} since start`),
      kpi("Classified records", `${fmt(topic("workitems.classified").rate)}/s`, `${fmt(topic("workitems.unclassified").messages)} unclassified items`),
      kpi("Consumer lag", fmt(lag), kafka.groups.map((g) => `${g.group.replace("tierline-", "")} ${fmt(g.lag)}`).join(" · "), lag > 10000),
      kpi("Dead letters", fmt(dead), kafka.dead_letters.filter((d) => d.messages).map((d) => d.topic).join(", ") || "none", dead > 0),
      kpi("Clients", fmt(data.clients), `${invoiced} recent invoice${invoiced === 1 ? "" : "s"}`)
    );
  }

  function renderTopics(kafka) {
    const body = $("topics-table").tBodies[0];
    body.replaceChildren(
      ...kafka.topics.map((t) =>
        h("tr", { "data-topic": t.topic },
          h("td", { class: "mono" }, t.topic),
          h("td", { class: "num" }, t.partitions),
          h("td", { class: "num", "data-field": "messages" }, fmt(t.messages)),
          h("td", { class: "num", "data-field": "rate" }, fmt(t.rate)),
          h("td", {}, sparkline(t.rate_history, "#2f6fdb"))
        )
      )
    );
  }

  function renderLag(kafka) {
    const series = kafka.groups.map((g, i) => ({ name: g.group, color: GROUP_COLORS[i % GROUP_COLORS.length], points: g.lag_history }));
    lineChart($("lag-chart"), series);
    const legend = h("div", { class: "legend" }, series.map((one) => h("span", {}, h("i", { style: `background:${one.color}` }), one.name)));
    const groups = kafka.groups.map((g) => {
      const topics = g.topics.map((topic) =>
        h("div", { class: "topic-row" },
          h("span", { class: "tname mono" }, topic),
          h("div", { class: "cells" },
            g.partitions.filter((p) => p.topic === topic).map((p) =>
              h("span", {
                class: "cell" + (p.lag > 1000 ? " far" : p.lag > 0 ? " lagging" : ""),
                "data-partition": `${p.topic}:${p.partition}`,
                "data-lag": p.lag,
                title: `committed ${p.committed === null ? "none" : p.committed} of ${p.end}`,
              }, h("span", { class: "p" }, `p${p.partition}`), fmt(p.lag))
            )
          )
        )
      );
      return h("div", { class: "group", "data-group": g.group },
        h("div", { class: "group-head" }, h("span", { class: "name mono" }, g.group), h("span", { class: "subtle" }, "lag per partition"),
          h("span", { class: "total", "data-field": "lag" }, `total ${fmt(g.lag)}`)),
        topics);
    });
    $("lag-groups").replaceChildren(legend, ...groups);
  }

  function ladder(card) {
    const tiers = card.tiers;
    const w = Number(card.weighted_units), projected = Number(card.projected.weighted_units);
    const lastBound = tiers.length ? Number(tiers[tiers.length - 1].up_to ?? tiers[Math.max(0, tiers.length - 2)].up_to ?? 1) : 1;
    const top = Math.max(lastBound * 2, projected * 1.1, w * 1.1);
    const width = 1000, height = 26;
    const svg = s("svg", { viewBox: `0 0 ${width} ${height}`, preserveAspectRatio: "none" });
    tiers.forEach((tier, i) => {
      const x = (i / tiers.length) * width;
      svg.append(s("rect", { x: x + 1, y: 4, width: width / tiers.length - 2, height: 18, rx: 4, fill: TIER_COLORS[i % TIER_COLORS.length], "fill-opacity": 0.13 }));
    });
    const now = ladderPosition(tiers, w, top) * width;
    const ahead = ladderPosition(tiers, projected, top) * width;
    if (ahead > now) {
      svg.append(s("rect", { x: now, y: 8, width: ahead - now, height: 10, fill: "#94a3b8", "fill-opacity": 0.35 }));
      svg.append(s("line", { x1: ahead, y1: 1, x2: ahead, y2: 25, stroke: "#475569", "stroke-width": 2, "stroke-dasharray": "3 2", "vector-effect": "non-scaling-stroke" }));
    }
    const index = tiers.findIndex((t) => card.tier && t.name === card.tier.name);
    svg.append(s("rect", { x: 0, y: 8, width: Math.max(2, now), height: 10, rx: 3, fill: TIER_COLORS[Math.max(0, index) % TIER_COLORS.length] }));
    const labels = h("div", { class: "ladder-labels" },
      tiers.map((t) => h("span", { title: `${t.name}: fee ${t.fee}` }, `${t.name} ≤ ${t.up_to === null ? "∞" : fmt(t.up_to)}`)));
    return h("div", { class: "ladder" }, svg, labels);
  }

  // A card's SPEC §11 terms in one line: each service level against its target (a miss with the
  // credit it puts at stake) and the contract year's committed spend against the annual minimum.
  function termsLine(card) {
    const parts = [];
    const levels = card.service_levels;
    if (levels) {
      parts.push(h("span", { class: "k" }, "service levels"),
        ...levels.levels.map((level) => h("span", {
          class: "chip" + (level.missed ? " missed" : level.attainment_percent === null ? "" : " met"),
          "data-level": level.id,
          title: `${level.met} of ${level.measured} within ${level.within_hours} h (${level.clock}); a miss credits ${level.credit_at_stake} ${card.currency}`,
        }, `${level.id} ${level.attainment_percent === null ? "—" : level.attainment_percent + " %"} / ${level.target_percent} %`,
          level.missed ? h("b", { "data-field": "credit" }, ` ${level.credit_at_stake}`) : null)));
    }
    const year = card.commitment;
    if (year) {
      parts.push(h("span", { class: "k" }, "commitment"),
        h("span", { "data-field": "commitment", title: `contract year ${year.contract_year}: ${year.periods_closed} of 12 periods closed` },
          `${year.first_period} … ${year.last_period}: ${year.committed_spend} of ${year.annual_minimum} ${card.currency} committed · `,
          h("b", { "data-field": "remaining" }, year.remaining), " to go"));
    }
    return parts.length ? h("div", { class: "terms", "data-field": "terms" }, parts) : null;
  }

  function renderUsage(data) {
    const filter = $("client-filter").value.trim().toLowerCase();
    const matching = data.usage.filter((c) => !filter || c.client_id.includes(filter) || (c.name || "").toLowerCase().includes(filter));
    const cards = matching.slice(0, USAGE_SHOWN);
    $("usage-note").textContent = data.usage.length
      ? `busiest first · bar: weighted units against each tier's up_to, solid now, dashed projected at period end`
      : "";
    if (!cards.length) {
      $("usage").replaceChildren(h("div", { class: "empty" }, filter ? `No client matches “${filter}”.` : "No client has an agreement or usage yet."));
      return;
    }
    const more = data.clients - cards.length;
    $("usage").replaceChildren(
      ...cards.map((c) => {
        const tierIndex = (tier) => Math.max(0, c.tiers.findIndex((t) => tier && t.name === tier.name));
        return h("div", { class: "usage-row", "data-client": c.client_id },
          h("div", { class: "client" },
            h("div", { class: "id mono" }, c.client_id),
            h("div", { class: "meta" }, [c.name, `${c.period} · ${c.status} · ${Math.round(c.elapsed * 100)}% elapsed`].filter(Boolean).join(" — ")),
            h("div", { class: "meta" }, `${fmt(c.items)} items` + (c.unclassified_items ? ` · ${fmt(c.unclassified_items)} unclassified` : "") + (c.agreement_version ? ` · agreement v${c.agreement_version}` : " · no agreement"))),
          c.tiers.length ? ladder(c) : h("div", { class: "empty" }, "no agreement: nothing is rated"),
          h("div", { class: "tiers" },
            h("div", { class: "row" }, h("span", { class: "k" }, "now"), badge(c.tier, tierIndex(c.tier), "tier-now"),
              h("span", { class: "wu", "data-field": "weighted-units" }, `${fmt(c.weighted_units)} wu`)),
            h("div", { class: "row" }, h("span", { class: "k" }, "projected"), badge(c.projected.tier, tierIndex(c.projected.tier), "tier-projected"),
              h("span", { class: "wu" }, `${fmt(c.projected.weighted_units)} wu`))),
          termsLine(c)
        );
      }),
      ...(more > 0 ? [h("div", { class: "subtle more" }, `${more} more client${more === 1 ? "" : "s"}: type in the filter to find one`)] : [])
    );
  }

  function renderInvoices(invoices) {
    if (!invoices.length) {
      $("invoices").replaceChildren(h("div", { class: "empty" }, "No invoice issued yet."));
      return;
    }
    const shown = invoices.slice(0, INVOICES_SHOWN);
    $("invoices").replaceChildren(
      ...shown.map(invoiceCard),
      ...(invoices.length > shown.length
        ? [h("div", { class: "subtle" }, `and ${invoices.length - shown.length} more (GET /v1/invoices on billing)`)]
        : [])
    );
  }

  function renderDeadLetters(topics) {
    const pills = h("div", { class: "dlq-topics" },
      topics.map((d) => h("span", { class: "pill" + (d.messages ? " has" : ""), "data-dlq": d.topic }, `${d.topic} `, h("b", {}, fmt(d.messages)))));
    const entries = topics.flatMap((d) => d.entries).sort((a, b) => (a.time < b.time ? 1 : -1)).slice(0, 8);
    const table = entries.length
      ? h("table", { class: "table" },
          h("thead", {}, h("tr", {}, h("th", {}, "when"), h("th", {}, "from"), h("th", {}, "key"), h("th", {}, "error"))),
          h("tbody", {}, entries.map((e) =>
            h("tr", { class: "dlq-entry", "data-topic": e.topic, "data-offset": e.offset },
              h("td", { class: "subtle" }, ago(e.time)),
              h("td", { class: "mono" }, `${e.original_topic ?? "?"} [${e.original_partition ?? "?"}] @${e.original_offset ?? "?"}${e.original_item == null ? "" : ` item ${e.original_item}`}`),
              h("td", { class: "mono" }, e.key ?? ""),
              h("td", { class: "dlq-error", title: e.value_preview }, e.error_type ? h("b", {}, `${e.error_type}: `) : null, e.error ?? "(no error header)")))))
      : h("div", { class: "empty" }, "Nothing has been dead-lettered.");
    $("dead-letters").replaceChildren(pills, table);
  }

  // --- the review queue and an item's provenance (SPEC §10, through the console's metering relay) ---

  function renderReviewQueue(all) {
    const filter = $("client-filter").value.trim().toLowerCase();
    const queues = all.filter((q) => !filter || q.client_id.includes(filter));
    const total = queues.reduce((sum, q) => sum + q.unclassified_items + q.closed_unclassified_items, 0);
    $("queue-note").textContent = queues.length
      ? `${fmt(total)} unclassified item${total === 1 ? "" : "s"} across ${queues.length} client${queues.length === 1 ? "" : "s"} · never billed until a reclassification places them`
      : "unclassified items, never billed until a reclassification places them";
    if (!queues.length) {
      $("review-queue").replaceChildren(h("div", { class: "empty" }, filter && all.length
        ? `No client matching “${filter}” has unclassified items.`
        : "Nothing to review: every item of the open and last closed periods is placed."));
      return;
    }
    const count = (client, period, n, field) =>
      n && period
        ? h("button", { class: "count", type: "button", "data-field": field, "data-period": period, title: `list ${client}'s unclassified items of ${period}` }, fmt(n))
        : h("span", { class: "subtle", "data-field": field }, "0");
    const table = h("table", { class: "table" },
      h("thead", {}, h("tr", {}, h("th", {}, "client"), h("th", {}, "open period"), h("th", { class: "num" }, "unclassified"),
        h("th", {}, "last closed"), h("th", { class: "num" }, "unclassified"))),
      h("tbody", {}, queues.slice(0, QUEUE_SHOWN).map((q) =>
        h("tr", { "data-queue": q.client_id },
          h("td", { class: "mono" }, q.client_id),
          h("td", {}, q.period),
          h("td", { class: "num" }, count(q.client_id, q.period, q.unclassified_items, "unclassified")),
          h("td", {}, q.closed_period ?? "—"),
          h("td", { class: "num" }, count(q.client_id, q.closed_period, q.closed_unclassified_items, "closed-unclassified"))))));
    for (const button of table.querySelectorAll("button.count")) {
      button.addEventListener("click", () => showQueueItems(button.closest("tr").dataset.queue, button.dataset.period));
    }
    const more = queues.length - QUEUE_SHOWN;
    $("review-queue").replaceChildren(table, ...(more > 0 ? [h("div", { class: "subtle more" }, `${more} more client${more === 1 ? "" : "s"} with unclassified items`)] : []));
  }

  function relayProblem(answer, what) {
    if (answer.status === 404) return `No ${what}.`;
    if (answer.status === 503) return `Metering is unavailable: ${window.Tierline.detailOf(answer.data)}`;
    return `${answer.status}: ${window.Tierline.detailOf(answer.data)}`;
  }

  async function showQueueItems(client, period) {
    const key = sessionStorage.getItem(KEY_STORAGE);
    const query = new URLSearchParams({ client_id: client, period, status: "unclassified", limit: String(QUEUE_ITEMS) });
    const answer = await window.Tierline.getJson(`/api/items?${query}`, key);
    const head = h("div", { class: "subtle queue-head" }, `${client} · ${period} · unclassified`);
    if (!answer.ok) {
      $("queue-items").replaceChildren(head, h("div", { class: "error" }, relayProblem(answer, "items")));
      return;
    }
    const items = answer.data.items;
    const shown = items.length ? window.Tierline.itemsTable(items, (item) => showItem(item.client_id, item.id)) : h("div", { class: "empty" }, "None left.");
    $("queue-items").replaceChildren(head, shown,
      ...(answer.data.next_cursor ? [h("div", { class: "subtle" }, `the first ${items.length}; GET /v1/items?status=unclassified on metering lists them all`)] : []));
  }

  async function showItem(client, id) {
    const key = sessionStorage.getItem(KEY_STORAGE);
    const answer = await window.Tierline.getJson(`/api/items/${encodeURIComponent(client)}/${encodeURIComponent(id)}`, key);
    $("provenance").replaceChildren(answer.ok
      ? window.Tierline.provenance(answer.data)
      : h("div", { class: "error" }, relayProblem(answer, `item ${id} of ${client}`)));
  }

  $("lookup-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const client = $("lookup-client").value.trim(), id = $("lookup-item").value.trim();
    if (client && id) showItem(client, id);
  });

  let lastData = null;
  $("client-filter").addEventListener("input", () => {
    if (!lastData) return;
    renderUsage(lastData);
    renderReviewQueue(lastData.review_queue);
  });

  window.Tierline.takeFromUrl({ key: KEY_STORAGE });
  poll();
})();
