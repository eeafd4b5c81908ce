// nbqueue dashboard view (anywidget). The kernel sends one JSON snapshot per refresh
// ("data"), the drill-down ("detail") and its state ("kernel"); clicks go back as
// {id, action, queue, job, state, confirmed} custom messages and are acknowledged with
// {ack: id, ok, message}.

const STATES = ["waiting", "active", "delayed", "completed", "failed"];
const LABELS = { waiting: "waiting", active: "active", delayed: "delayed",
                 completed: "done", failed: "failed" };
const ICONS = {
  pause: '<rect x="4" y="3" width="3" height="10"/><rect x="9" y="3" width="3" height="10"/>',
  resume: '<path d="M5 3l8 5-8 5z"/>',
  retry: '<path d="M8 3a5 5 0 1 0 5 5h-2a3 3 0 1 1-3-3v2l3-3-3-3z"/>',
  drain: '<path d="M3 4h10v1.5H3zM6 2.5h4V4H6zM4.5 6h7l-.7 7.5H5.2z"/>',
  clean: '<path d="M9.5 2l4.5 4.5-5.5 5.5H4.5L2 9.5zM4 13.5h9V15H4z"/>',
  details: '<path d="M3 4h10v1.6H3zM3 7.2h10v1.6H3zM3 10.4h10V12H3z"/>',
  more: '<circle cx="3.5" cy="8" r="1.4"/><circle cx="8" cy="8" r="1.4"/><circle cx="12.5" cy="8" r="1.4"/>',
  close: '<path d="M4 3l4 4 4-4 1 1-4 4 4 4-1 1-4-4-4 4-1-1 4-4-4-4z"/>',
};
const CONFIRM = {
  drain: (q, c) => `Drain removes the ${c.waiting} waiting job(s) of ${q}.`,
  clean: (q, c) => `Clean removes the ${c.completed} completed and ${c.failed} failed job(s) of ${q}.`,
  obliterate: (q) => `Obliterate deletes queue ${q} entirely: every job, its history and settings.`,
  job_remove: (q, c, job) => `Remove job ${job} of ${q}?`,
};
const VERBS = { pause: "Pause", resume: "Resume", retry: "Retry failed", drain: "Drain",
  clean: "Clean", obliterate: "Obliterate", job_retry: "Retry", job_remove: "Remove",
  job_cancel: "Cancel", job_promote: "Promote", list: "Open list", job: "Open job" };

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function icon(name) {
  const span = document.createElement("span");
  span.className = "nbq-icon";
  span.innerHTML = `<svg viewBox="0 0 16 16" width="14" height="14" aria-hidden="true">${ICONS[name]}</svg>`;
  return span;
}

function compact(n) {
  if (n < 1000) return String(n);
  if (n < 10000) return (n / 1000).toFixed(1) + "k";
  if (n < 1000000) return Math.floor(n / 1000) + "k";
  return (n / 1000000).toFixed(1) + "M";
}

function spark(series) {
  // completed (green) and failed (red) per minute, stacked bars, oldest left.
  const w = 90, hgt = 22, n = series.length || 1;
  const max = Math.max(1, ...series.map(([c, f]) => c + f));
  const bw = w / n;
  let bars = "";
  series.forEach(([c, f], i) => {
    const hc = (c / max) * hgt, hf = (f / max) * hgt;
    const x = (i * bw).toFixed(2), bwid = Math.max(1, bw - 0.6).toFixed(2);
    if (c) bars += `<rect x="${x}" y="${(hgt - hc - hf).toFixed(2)}" width="${bwid}" height="${hc.toFixed(2)}" fill="#2e8b46"/>`;
    if (f) bars += `<rect x="${x}" y="${(hgt - hf).toFixed(2)}" width="${bwid}" height="${hf.toFixed(2)}" fill="#c62828"/>`;
  });
  const total = series.reduce((a, [c, f]) => [a[0] + c, a[1] + f], [0, 0]);
  const span = document.createElement("span");
  span.className = "nbq-spark";
  span.title = `last ${series.length} min: ${total[0]} completed, ${total[1]} failed (per minute, oldest left)`;
  span.innerHTML = `<svg viewBox="0 0 ${w} ${hgt}" width="${w}" height="${hgt}" role="img"><rect x="0" y="${hgt - 0.5}" width="${w}" height="0.5" fill="#bbb"/>${bars}</svg>`;
  return span;
}

function render({ model, el }) {
  let nextId = 1;
  const pending = new Map(); // id -> {label, queue, held, timer, slow}
  let confirm = null; // {action, queue, job, text}
  let openQueue = null; // queue whose drill-down is open
  const root = h("div", { class: "nbq-root" });
  el.append(root);
  // Hide this panel's static snapshot (shown only when no live view exists).
  el.classList.add("nbq-live");
  const pid = model.get("panel_id");
  const hide = document.createElement("style");
  hide.textContent = `.nbqueue-snapshot[data-nbq-panel="${pid}"]{display:none !important}`;
  if (pid) document.head.append(hide);

  function kernelNote() {
    const k = model.get("kernel");
    if (k === "busy") return "a cell is running: clicks wait until it ends (you can cancel them)";
    if (k === "waiting") return "a cell waits on nbqueue: clicks run within a second";
    if (k === "concurrent") return "clicks run at once, even while cells run";
    return "";
  }

  function send(action, queue, extra) {
    const id = nextId++;
    const entry = { id, action, queue, label: `${VERBS[action] || action}${queue ? " " + queue : ""}`,
      content: { id, action, queue, ...(extra || {}) }, held: false, slow: false };
    pending.set(id, entry);
    if (model.get("kernel") === "busy") {
      entry.held = true; // sent when the kernel is free, unless cancelled
    } else {
      dispatch(entry);
    }
    draw();
  }

  function dispatch(entry) {
    entry.held = false;
    model.send(entry.content);
    entry.timer = setTimeout(() => { entry.slow = true; draw(); }, 1500);
  }

  function flushHeld() {
    if (model.get("kernel") === "busy") return;
    for (const entry of pending.values()) if (entry.held) dispatch(entry);
  }

  model.on("msg:custom", (msg) => {
    if (msg && msg.ack !== undefined) {
      const entry = pending.get(msg.ack);
      if (entry) { clearTimeout(entry.timer); pending.delete(msg.ack); }
      draw();
    }
  });
  let data = {};
  function readData() {
    try { data = JSON.parse(model.get("state_json") || "{}"); } catch (e) { data = {}; }
  }
  readData();
  model.on("change:state_json", () => { readData(); draw(); });
  model.on("change:detail", draw);
  model.on("change:live", draw);
  model.on("change:kernel", () => { flushHeld(); draw(); });

  function ask(action, queue, counts, job) {
    confirm = { action, queue, job, text: CONFIRM[action](queue, counts || {}, job) };
    draw();
  }

  function iconButton(name, label, onclick, opts = {}) {
    return h("button", { class: "nbq-btn" + (opts.danger ? " nbq-danger" : ""), title: label,
      "aria-label": label, disabled: opts.disabled, "data-action": opts.action || name,
      onclick }, icon(name));
  }

  function textButton(label, onclick, opts = {}) {
    return h("button", { class: "nbq-tbtn" + (opts.danger ? " nbq-danger" : ""), title: opts.title || label,
      "data-action": opts.action, disabled: opts.disabled, onclick }, label);
  }

  function pendingLine(queue) {
    const items = [...pending.values()].filter((p) => p.queue === queue);
    if (!items.length) return null;
    return h("div", { class: "nbq-pending", role: "status" }, items.map((p) => h("span", { class: "nbq-pend" },
      p.held ? `${p.label}: waits for the running cell to end ` :
        p.slow ? `${p.label}: sent, the kernel has not answered yet ` : `${p.label}… `,
      p.held ? textButton("cancel", () => { pending.delete(p.id); draw(); }, { action: "cancel-pending" }) : null)));
  }

  function row(q) {
    const c = q.counts, name = q.name, live = model.get("live");
    const cells = STATES.map((s) => h("td", { class: `nbq-num nbq-${s}`, title: `${c[s]} ${s}` },
      h("span", { class: "nbq-count" }, compact(c[s])),
      s === "waiting" && q.held ? h("span", { class: "nbq-held",
        title: `${q.held} more waiting for their dependencies (waiting-children)` }, ` +${compact(q.held)}`) : null));
    const pct = q.progress;
    const bar = h("td", { class: "nbq-prog", title: c.active ? `${c.active} active, mean progress ${pct ?? 0}%` : "no active job" },
      h("span", { class: "nbq-bar" }, h("span", { class: "nbq-fill", style: `width:${c.active ? (pct ?? 0) : 0}%` })),
      h("span", { class: "nbq-pct" }, c.active ? `${Math.round(pct ?? 0)}%` : "-"));
    const rate = h("td", { class: "nbq-num nbq-rate", title: `finished jobs per second over the last ${data.rate_window} s` },
      q.rate === null ? "-" : q.rate.toFixed(q.rate < 10 ? 2 : 1));
    const dis = !live;
    const actions = h("td", { class: "nbq-actions" },
      q.paused ? iconButton("resume", `Resume ${name}`, () => send("resume", name), { disabled: dis })
               : iconButton("pause", `Pause ${name} (workers stop taking jobs)`, () => send("pause", name), { disabled: dis }),
      iconButton("retry", `Retry the ${c.failed} failed job(s) of ${name}`, () => send("retry", name), { disabled: dis || !c.failed }),
      iconButton("drain", `Drain: remove the ${c.waiting} waiting job(s) of ${name} (asks first)`, () => ask("drain", name, c), { disabled: dis || !c.waiting, danger: true }),
      iconButton("clean", `Clean: remove completed and failed jobs of ${name} (asks first)`, () => ask("clean", name, c), { disabled: dis || !(c.completed + c.failed), danger: true }),
      iconButton("details", `Jobs of ${name}: lists by state, each job's data, result, traceback, logs`,
        () => { if (openQueue === name) { openQueue = null; draw(); } else { openQueue = name; send("list", name, { state: c.failed ? "failed" : "waiting" }); } },
        { disabled: dis, action: "details" }));
    const title = h("td", { class: "nbq-name", title: name },
      h("span", { class: "nbq-qname" }, name), q.paused ? h("span", { class: "nbq-badge" }, "paused") : null);
    const tr = h("tr", { class: "nbq-row", "data-queue": name }, title, cells, bar, rate, h("td", { class: "nbq-sparkcell" }, spark(q.spark)), actions);
    const out = [tr];
    const extra = [];
    if (confirm && confirm.queue === name) {
      extra.push(h("div", { class: "nbq-confirm", role: "alertdialog" }, h("span", {}, confirm.text + " "),
        textButton(VERBS[confirm.action], () => { const a = confirm; confirm = null;
          send(a.action, a.queue, { confirmed: true, job: a.job }); }, { danger: true, action: "confirm" }),
        textButton("Cancel", () => { confirm = null; draw(); }, { action: "cancel-confirm" })));
    }
    const pl = pendingLine(name);
    if (pl) extra.push(pl);
    if (openQueue === name) extra.push(drill(name, c));
    if (extra.length) out.push(h("tr", { class: "nbq-extra" }, h("td", { colspan: 10 }, extra)));
    return out;
  }

  function drill(name, counts) {
    const d = model.get("detail") || {};
    const row = (data.queues || []).find((q) => q.name === name) || {};
    const states = row.held ? ["waiting-children", ...STATES, "dead_letter"] : [...STATES, "dead_letter"];
    const tabCounts = { ...counts, "waiting-children": row.held };
    const tabs = states.map((s) => h("button", {
      class: "nbq-tab" + (d.queue === name && d.state === s ? " nbq-tab-on" : ""), "data-state": s,
      title: s === "dead_letter" ? `jobs of ${name} recorded in the dead-letter queue` : `latest ${s} jobs of ${name}`,
      onclick: () => send("list", name, { state: s }) },
      s === "dead_letter" ? "dead letter" : `${s} ${tabCounts[s] ?? ""}`));
    const box = h("div", { class: "nbq-drill" }, h("div", { class: "nbq-tabs" }, tabs,
      iconButton("retry", "Reload this list", () => send("list", name, { state: d.state || "waiting" }), { action: "reload" }),
      iconButton("close", "Close the job list", () => { openQueue = null; model.send({ action: "close_detail", id: 0 }); draw(); }, { action: "close-drill" }),
      textButton("Obliterate…", () => ask("obliterate", name, counts), { danger: false, action: "obliterate",
        title: `delete queue ${name} entirely: every job, its history and settings (asks first)` })));
    if (d.queue !== name) { box.append(h("div", { class: "nbq-muted" }, "loading…")); return box; }
    const jobs = d.jobs || [];
    if (!jobs.length) box.append(h("div", { class: "nbq-muted" }, `no ${d.state === "dead_letter" ? "dead-letter" : d.state} jobs`));
    else {
      const head = h("tr", {}, ["job", "type", "state", "progress", "attempts", "created", "ran", "result / error"].map((t) => h("th", {}, t)));
      const body = jobs.map((j) => h("tr", { class: "nbq-jobrow" + (d.job && d.job.id === j.id ? " nbq-sel" : ""), "data-job": j.id,
        onclick: () => send("job", name, { job: j.id }), title: "show this job" },
        h("td", { class: "nbq-mono" }, j.id), h("td", {}, j.name), h("td", {}, j.state),
        h("td", {}, j.progress === null ? "-" : `${j.progress}%`), h("td", {}, j.attempts),
        h("td", {}, j.created), h("td", {}, j.duration), h("td", { class: "nbq-summary" }, j.summary)));
      box.append(h("table", { class: "nbq-jobs" }, h("thead", {}, head), h("tbody", {}, body)));
    }
    if (d.job) box.append(jobDetail(name, d.job));
    return box;
  }

  function jobDetail(name, j) {
    if (j.missing) return h("div", { class: "nbq-muted" }, `job ${j.id} no longer exists`);
    const can = j.can || {};
    const buttons = h("div", { class: "nbq-jobbtns" },
      can.retry ? textButton("Retry", () => send("job_retry", name, { job: j.id }), { action: "job_retry" }) : null,
      can.promote ? textButton("Promote", () => send("job_promote", name, { job: j.id }), { action: "job_promote", title: "run this delayed job now" }) : null,
      can.cancel ? textButton("Cancel", () => send("job_cancel", name, { job: j.id }), { action: "job_cancel" }) : null,
      can.remove ? textButton("Remove", () => ask("job_remove", name, {}, j.id), { danger: true, action: "job_remove" }) : null);
    const showPct = j.progress !== null && (j.state === "active" || j.progress > 0);
    const kv = [["state", `${j.state}${showPct ? `, ${j.progress}%` : ""}`], ["attempts", j.attempts],
      ["priority", j.priority], ["created", j.created], ["started", `${j.started} (waited ${j.waited})`],
      ["finished", `${j.finished} (ran ${j.ran})`]];
    const grid = h("div", { class: "nbq-kv" }, kv.map(([k, v]) => [h("span", { class: "nbq-k" }, k), h("span", {}, String(v))]));
    const parts = [h("div", { class: "nbq-jobhead" }, h("b", {}, `${name}:${j.id}`), ` ${j.name} `, buttons), grid];
    if (j.error) parts.push(h("div", { class: "nbq-error" }, h("b", {}, `error${j.error_type ? ` (${j.error_type})` : ""}: `), j.error));
    if (j.tracebacks && j.tracebacks.length) parts.push(h("details", { open: true, class: "nbq-tb" },
      h("summary", {}, "traceback of the last failed attempt"), h("pre", {}, j.tracebacks[j.tracebacks.length - 1])));
    if (j.result !== null && j.result !== undefined) parts.push(h("details", { open: true }, h("summary", {}, "result"), h("pre", {}, j.result)));
    parts.push(h("details", {}, h("summary", {}, "data"), h("pre", {}, j.data)));
    if (j.logs) parts.push(h("details", { open: j.logs.length > 0 }, h("summary", {}, `logs (${j.logs.length})`), h("pre", {}, j.logs.join("\n"))));
    return h("div", { class: "nbq-jobdetail" }, parts);
  }

  function draw() {
    const queues = data.queues || [];
    const live = model.get("live");
    const head = h("div", { class: "nbq-head" },
      h("b", {}, "nbqueue"),
      h("span", { class: "nbq-muted" }, ` ${queues.length} queue(s) · ${live ? "live" : "stopped"} · ${data.refreshed || ""}`),
      kernelNote() ? h("span", { class: "nbq-kernel nbq-k-" + model.get("kernel") }, kernelNote()) : null);
    const table = h("table", { class: "nbq-table" + (live ? "" : " nbq-stale"),
      title: live ? null : "refresh stopped: these are the last values read" },
      h("thead", {}, h("tr", {}, h("th", { class: "nbq-name" }, "queue"),
        STATES.map((s) => h("th", { class: `nbq-num nbq-${s}`, title: s }, LABELS[s])),
        h("th", { title: "mean progress of the active jobs" }, "progress"),
        h("th", { class: "nbq-num", title: `finished jobs/s over the last ${data.rate_window || 10} s` }, "jobs/s"),
        h("th", { title: `completed (green) and failed (red) per minute, last ${data.spark_minutes || 30} min` }, `last ${data.spark_minutes || 30} min`),
        h("th", {}, ""))),
      h("tbody", {}, queues.map(row)));
    const workers = data.workers || [];
    const wline = h("div", { class: "nbq-workers" }, h("span", { class: "nbq-k" }, "workers "),
      workers.length ? workers.map((w) => h("span", { class: "nbq-worker nbq-w-" + w.state,
        title: `${w.queue}: ${w.mode} x${w.concurrency} on ${w.host}`
          + (w.active !== null && w.active !== undefined ? `, ${w.active} active at its last heartbeat` : "") },
        `${w.queue} ${w.mode}×${w.concurrency} ${w.state}`
        + (w.host && w.host !== "this kernel" ? ` @ ${w.host}` : "")))
        : h("span", { class: "nbq-muted" }, "none started here"));
    const msg = data.message ? h("div", { class: "nbq-msg" + (data.message_ok === false ? " nbq-bad" : ""), role: "status" }, data.message) : null;
    const nq = queues.length ? table : h("div", { class: "nbq-muted" }, "no queues yet: pass queues=[...] or create them first");
    root.replaceChildren(head, nq, wline, msg || "");
  }

  draw();
  return () => {
    for (const p of pending.values()) clearTimeout(p.timer);
    el.classList.remove("nbq-live");
    hide.remove();
  };
}

export default { render };
