// The cmab console: polls ./state, draws every campaign with DOM calls only (text is set
// as text, never parsed as HTML: names and segment values are data), and calls the
// campaign routes with the management token for pause/resume and add/retire arm.
"use strict";
(() => {
  const POLL_MS = 2000;
  const HISTORY = 150; // polls kept per campaign for the allocation over time (5 minutes)
  const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                   "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const SVG = "http://www.w3.org/2000/svg";
  const history = new Map(); // campaign -> [{t, decisions, served: {slot: {arm: n}}}]
  const sections = new Map(); // campaign -> its section's parts
  let token = sessionStorage.getItem("cmab-token") || "";
  let timer = null;
  let polling = false;

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children) {
      if (child !== null && child !== undefined && child !== false) {
        node.append(child instanceof Node ? child : String(child));
      }
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    return node;
  }

  const pct = (x) => (x === null || x === undefined ? "n/a" : `${(100 * x).toFixed(1)}%`);
  const rate = (i) => (i ? `${(100 * i.estimate).toFixed(2)}% [${(100 * i.low).toFixed(2)}, ${(100 * i.high).toFixed(2)}]` : "n/a");
  const signed = (x, digits) => (x >= 0 ? "+" : "") + x.toFixed(digits);
  const points = (i) => (i ? `${signed(100 * i.estimate, 2)} [${signed(100 * i.low, 2)}, ${signed(100 * i.high, 2)}]` : "n/a");
  const number = (i) => (i ? `${signed(i.estimate, 4)} [${signed(i.low, 4)}, ${signed(i.high, 4)}]` : "n/a");
  const color = (k) => PALETTE[k % PALETTE.length];

  function table(header, rows, cls) {
    const head = el("tr", {}, ...header.map((h) => el("th", { scope: "col" }, h)));
    const body = rows.map((row) => (row instanceof Node ? row : el("tr", {}, ...row.map((c) => (c instanceof Node ? c : el("td", {}, c))))));
    return el("div", { class: "scroll" }, el("table", cls ? { class: cls } : {}, el("thead", {}, head), el("tbody", {}, ...body)));
  }

  function say(text, isError) {
    const box = $("message");
    box.hidden = false;
    box.className = isError ? "error" : "";
    box.textContent = text;
  }

  async function manage(method, path, body) {
    const headers = { "content-type": "application/json" };
    if (token) headers.authorization = `Bearer ${token}`;
    const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
    if (!response.ok) {
      let reason = `${response.status}`;
      try {
        const error = (await response.json()).error;
        reason = `${response.status} ${error.code}: ${error.message}`;
      } catch (ignored) { /* not our error shape: the status says it */ }
      if (response.status === 401 || response.status === 403) reason += " (enter the management token above)";
      throw new Error(reason);
    }
    return response.json();
  }

  async function act(what, method, path, body) {
    try {
      await manage(method, path, body);
      say(`${what}: done`, false);
    } catch (error) {
      say(`${what}: ${error.message}`, true);
    }
    refresh();
  }

  const campaignPath = (name) => `../v1/campaigns/${encodeURIComponent(name)}`;

  // -- one campaign: a skeleton made once (its forms keep what is typed), parts redrawn --

  function skeleton(campaign, index) {
    const name = campaign.name;
    const badge = el("span", { class: "badge" });
    const pause = el("button", { type: "button", class: "secondary", "data-action": "pause" });
    pause.addEventListener("click", () => {
      const paused = pause.dataset.paused === "true";
      act(`${paused ? "resume" : "pause"} ${name}`, "POST", `${campaignPath(name)}/pause`, { paused: !paused });
    });
    const slotSelect = el("select", { name: "slot", "aria-label": "slot" },
      ...campaign.report.slots.map((s) => el("option", { value: s.slot }, s.slot)));
    const armInput = el("input", { name: "arm", placeholder: "new arm id", "aria-label": "new arm id", required: "" });
    const features = el("input", { name: "features", class: "features", "aria-label": "arm features (JSON)" });
    const hint = () => {
      const needed = campaign.arm_features[slotSelect.value] || [];
      features.placeholder = needed.length ? `features JSON: ${needed.join(", ")}` : "features JSON (optional)";
    };
    slotSelect.addEventListener("change", hint);
    hint();
    const form = el("form", { "data-action": "add-arm" }, slotSelect, armInput, features,
      el("button", { type: "submit" }, "Add arm"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const arm = { id: armInput.value.trim() };
      if (features.value.trim()) {
        try {
          arm.features = JSON.parse(features.value);
        } catch (error) {
          say(`add arm: the features are not JSON: ${error.message}`, true);
          return;
        }
      }
      act(`add arm ${arm.id} to ${name}/${slotSelect.value}`, "POST", `${campaignPath(name)}/arms`, { slot: slotSelect.value, arm });
    });
    const stats = el("div", { class: "stats" });
    const body = el("div");
    const section = el("section", { class: "campaign", id: `campaign-${index}`, "data-campaign": name },
      el("div", { class: "title" }, el("h2", {}, name), badge),
      stats, el("div", { class: "controls" }, pause, form), body);
    $("campaigns").append(section);
    $("nav").append(el("a", { href: `#campaign-${index}` }, name));
    return { section, badge, pause, stats, body };
  }

  function stat(label, value, key) {
    return el("div", { class: "stat" }, el("b", { "data-stat": key }, value), el("span", {}, label));
  }

  function remember(campaign, now) {
    const samples = history.get(campaign.name) || [];
    samples.push({ t: now, decisions: campaign.decisions, served: campaign.served });
    if (samples.length > HISTORY) samples.shift();
    history.set(campaign.name, samples);
    return samples;
  }

  function rateOf(samples) {
    if (samples.length < 2) return "n/a";
    const [a, b] = samples.slice(-2);
    return ((b.decisions - a.decisions) / ((b.t - a.t) / 1000)).toFixed(1);
  }

  function draw(parts, campaign, state, samples) {
    const report = campaign.report;
    const guarded = report.paused_by !== null && report.paused_by !== undefined;
    parts.badge.textContent = report.paused ? (guarded ? "paused by guardrail" : "paused") : "running";
    parts.badge.className = `badge ${report.paused ? "paused" : "running"}`;
    parts.pause.textContent = report.paused ? "Resume" : "Pause";
    parts.pause.dataset.paused = String(report.paused);
    const age = state.mode === "stream"
      ? (state.state_age_s === null ? "no state yet" : `${state.state_age_s.toFixed(1)} s`)
      : "live (in process)";
    parts.stats.replaceChildren(
      stat("decisions / s (this replica)", rateOf(samples), "rate"),
      stat("decisions served (this replica)", campaign.decisions.toLocaleString("en"), "decisions"),
      stat("decisions learned", report.impressions.toLocaleString("en"), "learned"),
      stat("model version", report.model_version, "model"),
      stat("state age", age, "age"));
    const blocks = [];
    if (guarded) {
      const p = report.paused_by;
      blocks.push(el("p", { class: "alert" },
        `Paused by the ${p.outcome} guardrail: its lift left ${p.bound} ${signed(100 * p.limit, 2)} pts, always-valid interval ${points(p.interval)} pts. Resume to restart its test.`));
    }
    blocks.push(el("h3", {}, "Outcomes (every slot)"), outcomes(report, state.outcome_types),
      el("h3", {}, "Guardrails"), guardrails(report.guardrails));
    report.slots.forEach((slot, k) => blocks.push(slotBlock(campaign, slot, campaign.heatmaps[k], samples)));
    parts.body.replaceChildren(...blocks);
  }

  function outcomes(report, types) {
    const groups = report.groups || {};
    const p = groups.personalized || {};
    const h = groups.holdout || {};
    const rows = [["reward / decision", number(p.mean_reward), number(h.mean_reward), number(report.lift), number(report.lift_always_valid)]];
    for (const kind of types) {
      const lift = (report.outcome_lift || {})[kind];
      const of = (g) => rate(((g.outcomes || {})[kind] || {}).interval);
      rows.push([kind, of(p), of(h), lift ? points(lift.lift) : "no events", lift ? points(lift.always_valid) : "no events"]);
    }
    return el("div", {},
      table(["outcome", "personalized [95%]", "holdout [95%]", "lift, pts [fixed-horizon]", "lift, pts [always-valid]"], rows),
      el("p", { class: "note" }, "Rates: share of decisions with a learned event of the type. Lift: personalized minus holdout."));
  }

  function guardrails(list) {
    if (!list || !list.length) return el("p", { class: "note" }, "No guardrails in this campaign's spec.");
    return table(["outcome", "state", "bounds, pts", "personalized", "holdout", "lift, pts [always-valid]"],
      list.map((g) => [g.outcome, el("td", {}, el("span", { class: `badge ${g.state}` }, g.state)),
        [g.min_lift === null ? null : `≥ ${signed(100 * g.min_lift, 2)}`, g.max_lift === null ? null : `≤ ${signed(100 * g.max_lift, 2)}`].filter(Boolean).join(", "),
        g.personalized.toLocaleString("en"), g.holdout.toLocaleString("en"), points(g.interval)]));
  }

  function slotBlock(campaign, slot, heatmap, samples) {
    const name = campaign.name;
    const served = (campaign.served || {})[slot.slot] || {};
    const arms = slot.arms.map((a, k) => {
      const retire = a.active
        ? el("button", { type: "button", class: "danger", "data-retire": a.arm }, "retire")
        : el("span", { class: "badge retired" }, "retired");
      if (a.active) {
        retire.addEventListener("click", () => {
          if (window.confirm(`Retire arm ${a.arm} of ${name}/${slot.slot}? It is never chosen again.`)) {
            act(`retire ${a.arm} of ${name}/${slot.slot}`, "DELETE", `${campaignPath(name)}/slots/${encodeURIComponent(slot.slot)}/arms/${encodeURIComponent(a.arm)}`);
          }
        });
      }
      return el("tr", { "data-arm": a.arm },
        el("td", {}, el("i", { class: "swatch", style: `background:${color(k)}` }), a.arm),
        el("td", {}, (served[a.arm] || 0).toLocaleString("en")),
        el("td", {}, a.impressions.toLocaleString("en")), el("td", {}, pct(a.share)),
        el("td", {}, number(a.ctr)), el("td", {}, retire));
    });
    return el("div", { class: "slot" },
      el("h3", {}, `Slot ${slot.slot} `, el("span", { class: "note" }, `(${slot.policy})`)),
      el("div", { class: "panels" },
        el("div", {}, el("h4", {}, "Allocation over time"), allocationChart(slot, samples),
          el("h4", {}, "Arms"),
          table(["arm", "served", "learned", "share", "reward / decision [95%]", ""], arms)),
        el("div", {}, el("h4", {}, "Bias audit: allocation by segment"), heatmapTable(heatmap))));
  }

  // Per poll interval, each arm's share of the decisions served in it, stacked (a row of
  // rectangles per interval); intervals without a decision are left blank. The x axis runs
  // from the oldest poll the page keeps to the newest.
  function allocationChart(slot, samples) {
    const arms = slot.arms.map((a) => a.arm);
    const intervals = [];
    for (let i = 1; i < samples.length; i += 1) {
      const before = samples[i - 1].served[slot.slot] || {};
      const after = samples[i].served[slot.slot] || {};
      const delta = arms.map((a) => (after[a] || 0) - (before[a] || 0));
      const total = delta.reduce((x, y) => x + y, 0);
      if (total > 0) intervals.push({ from: samples[i - 1].t, to: samples[i].t, shares: delta.map((d) => d / total), total });
    }
    const legend = el("div", { class: "legend" }, ...arms.map((a, k) => el("span", {}, el("i", { style: `background:${color(k)}` }), a)));
    if (!intervals.length) {
      return el("div", { class: "chart" }, el("p", { class: "note" }, "Waiting for decisions: the history starts when this page opens."), legend);
    }
    const W = 600;
    const H = 140;
    const start = samples[0].t;
    const end = samples[samples.length - 1].t;
    const x = (t) => ((t - start) / (end - start)) * W;
    const chart = svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img",
      "aria-label": `share of each arm of slot ${slot.slot} per poll interval` });
    for (const interval of intervals) {
      let top = 0;
      interval.shares.forEach((share, k) => {
        if (share > 0) {
          const rect = svg("rect", { x: x(interval.from).toFixed(2), width: (x(interval.to) - x(interval.from)).toFixed(2),
            y: (H * top).toFixed(2), height: (H * share).toFixed(2), fill: color(k) });
          const title = svg("title", {});
          title.textContent = `${arms[k]}: ${pct(share)} of ${interval.total}`;
          rect.append(title);
          chart.append(rect);
        }
        top += share;
      });
    }
    for (const y of [0.25, 0.5, 0.75]) {
      chart.append(svg("line", { x1: 0, x2: W, y1: H * y, y2: H * y, stroke: "#fff", "stroke-opacity": "0.6", "vector-effect": "non-scaling-stroke" }));
    }
    const last = intervals[intervals.length - 1];
    const seconds = Math.round((end - start) / 1000);
    return el("div", { class: "chart" }, chart, legend,
      el("p", { class: "note" }, `Share (0–100%, top to bottom) of the decisions served in each ${POLL_MS / 1000} s over the last ${seconds} s, newest right. Latest: ${last.total} decisions, ${arms.map((a, k) => `${a} ${pct(last.shares[k])}`).join(", ")}.`));
  }

  function heatmapTable(heatmap) {
    if (!heatmap.rows.length) {
      return el("p", { class: "note" }, "No learned decision with a segment yet: the audit needs the segments the decisions carry.");
    }
    const cell = (share, overall, title) => {
      const light = 97 - 55 * share;
      return el("td", { class: "cell", title, style: `background:hsl(212,70%,${light.toFixed(0)}%);color:${share > 0.55 ? "#fff" : "inherit"}` }, pct(share));
    };
    const header = ["segment = value", "learned", ...heatmap.arms.map((a, k) => (heatmap.active[k] ? a : `${a} (retired)`))];
    const rows = [el("tr", { class: "overall" }, el("td", {}, "every decision"), el("td", {}, ""),
      ...heatmap.overall.map((s, k) => cell(s, s, `${heatmap.arms[k]}: ${pct(s)} of the slot's decisions`)))];
    for (const row of heatmap.rows) {
      const label = `${row.flagged ? "⚑ " : ""}${row.segment} = ${row.value}`;
      rows.push(el("tr", { class: row.flagged ? "flagged" : "", "data-segment": row.segment, "data-value": row.value },
        el("td", {}, label), el("td", {}, row.impressions.toLocaleString("en")),
        ...row.shares.map((s, k) => cell(s, heatmap.overall[k],
          `${row.segment} = ${row.value} → ${heatmap.arms[k]}: ${pct(s)} (every decision: ${pct(heatmap.overall[k])})`))));
      if (row.flagged) {
        rows.push(el("tr", { class: "reason" }, el("td", { colspan: String(heatmap.arms.length + 2) }, `⚑ ${row.reason}`)));
      }
    }
    return el("div", {}, table(header, rows, "heatmap"),
      el("p", { class: "note" }, "Each cell: the share of the value's learned decisions that got the arm (a row sums to 100%). ⚑ flagged by the audit: allocation far from every decision's, or a reward rate unlike the segment's other values."));
  }

  // -- polling --

  function render(state) {
    const now = Date.now();
    $("token-form").hidden = !state.token_required;
    state.campaigns.forEach((campaign) => {
      let parts = sections.get(campaign.name);
      if (!parts) {
        parts = skeleton(campaign, sections.size);
        sections.set(campaign.name, parts);
      }
      draw(parts, campaign, state, remember(campaign, now));
    });
    $("empty").hidden = state.campaigns.length > 0;
  }

  async function poll() {
    if (polling) return;
    polling = true;
    clearTimeout(timer);
    try {
      const response = await fetch("state", { cache: "no-store" });
      if (!response.ok) throw new Error(`state answered ${response.status}`);
      render(await response.json());
      $("status").className = "";
      $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      $("status").className = "error";
      $("status").textContent = `not updated: ${error.message}; retrying`;
    } finally {
      polling = false;
      timer = setTimeout(poll, POLL_MS);
    }
  }

  function refresh() {
    clearTimeout(timer);
    timer = setTimeout(poll, 0);
  }

  $("token").value = token;
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    token = $("token").value;
    sessionStorage.setItem("cmab-token", token); // this tab only, gone when it closes
    say(token ? "token set for this tab" : "token cleared", false);
  });
  poll();
})();
