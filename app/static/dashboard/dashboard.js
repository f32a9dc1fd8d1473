// Mini-S3 dashboard: fills the server-rendered pages from the public API.
// The API key lives in sessionStorage and travels only in the X-API-Key header.
"use strict";

const KEY_STORAGE = "minis3.apiKey";
const POLL_MS = 1000; // ingest status: one call a second, so that the rate limit lasts

// --- the API, as any client uses it -------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE);
}

function authHeaders() {
  const key = apiKey();
  return key ? { "X-API-Key": key } : {};
}

async function errorFrom(response) {
  let code = "error";
  let message = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    if (body && body.error) {
      code = body.error.code;
      message = body.error.message;
    }
  } catch (_) { /* not JSON */ }
  return new ApiError(response.status, code, message, Number(response.headers.get("Retry-After")) || 0);
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options, headers: { ...authHeaders(), ...(options.headers || {}) }, credentials: "omit", cache: "no-store",
  });
  if (!response.ok) {
    const error = await errorFrom(response);
    if (error.status === 401) {
      toSignIn();
    }
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

function toSignIn() {
  if (document.body.dataset.page !== "signin") {
    sessionStorage.removeItem(KEY_STORAGE);
    location.assign("/signin");
  }
}

// --- small helpers ------------------------------------------------------------------------------

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

function formatBytes(n) {
  if (n === null || n === undefined) return "–";
  let i = 0;
  let v = n;
  while (v >= 1024 && i < UNITS.length - 1) {
    v /= 1024;
    i += 1;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(v >= 100 ? 0 : 1)} ${UNITS[i]}`;
}

function formatRatio(r) {
  return r === null || r === undefined ? "–" : `${Number(r).toFixed(2)}×`;
}

function formatTime(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { dateStyle: "short", timeStyle: "medium" });
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function $(selector) {
  return document.querySelector(selector);
}

function notice(message, kind = "error") {
  const box = $("#notice");
  box.textContent = message;
  box.className = `notice ${kind}`;
  box.hidden = !message;
}

function explain(error) {
  if (error instanceof ApiError && error.status === 429) {
    return `Rate limited: try again in ${error.retryAfter || "a few"} seconds.`;
  }
  return error.message || String(error);
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function confirmDelete(text) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.returnValue = "";
    dialog.showModal();
  });
}

function fileLink(file) {
  return el("a", { href: `/files/${file.fileId}`, text: file.name || "(no name)" });
}

function statusBadge(status) {
  return el("span", { class: `badge ${status}`, text: status });
}

// Fetches the file with the key in a header, then hands the bytes to the browser as a download.
async function downloadFile(file, stateEl) {
  const response = await fetch(`/api/files/${file.fileId}`, { headers: authHeaders(), credentials: "omit" });
  if (!response.ok) throw await errorFrom(response);
  const total = Number(response.headers.get("Content-Length")) || file.size || 0;
  const reader = response.body.getReader();
  const parts = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    received += value.length;
    if (stateEl) {
      stateEl.hidden = false;
      stateEl.textContent = `Downloading ${formatBytes(received)} of ${formatBytes(total)}`;
    }
  }
  const url = URL.createObjectURL(new Blob(parts, { type: "application/octet-stream" }));
  const link = el("a", { href: url, download: file.name || file.fileId });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  if (stateEl) stateEl.textContent = `Downloaded ${formatBytes(received)}`;
}

// --- who is signed in ---------------------------------------------------------------------------

async function whoAmI() {
  const stats = await api("/api/stats");
  const admin = stats.scope === "store";
  const who = $("#who");
  const mode = apiKey() ? "" : " (open mode: no key needed)";
  who.textContent = `${stats.tenant || "default"}${admin ? " · admin" : ""}${mode}`;
  $("#signout").hidden = !apiKey();
  return { stats, admin };
}

function initSignOut() {
  $("#signout").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_STORAGE);
    location.assign("/signin");
  });
}

async function signInPage() {
  const form = $("#signin-form");
  const error = $("#signin-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("#api-key").value.trim();
    error.hidden = true;
    const response = await fetch("/api/stats", { headers: { "X-API-Key": key }, credentials: "omit" });
    if (response.ok) {
      sessionStorage.setItem(KEY_STORAGE, key);
      location.assign("/");
    } else {
      const e = await errorFrom(response);
      error.textContent = e.status === 401 ? "That key is unknown or revoked." : explain(e);
      error.hidden = false;
    }
  });
}

// --- files --------------------------------------------------------------------------------------

async function filesPage() {
  const body = $("#files tbody");
  const params = new URLSearchParams(location.search);
  const q = params.get("q") || "";
  const cursor = params.get("cursor") || "";
  $("#q").value = q;
  $("#clear-search").hidden = !q;
  $("#clear-search").addEventListener("click", () => location.assign("/"));
  $("#search-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("#q").value.trim();
    location.assign(value ? `/?q=${encodeURIComponent(value)}` : "/");
  });
  const query = new URLSearchParams({ limit: "25" });
  if (q) query.set("q", q);
  if (cursor) query.set("cursor", cursor);
  const page = await api(`/api/files?${query}`);
  body.replaceChildren();
  for (const file of page.files) {
    const row = el("tr", { dataset: { fileId: file.fileId } },
      el("td", {}, fileLink(file)),
      el("td", { text: file.bucket ? `${file.bucket}/${file.key}` : "" }),
      el("td", { class: "num", text: formatBytes(file.size) }),
      el("td", {}, statusBadge(file.status)),
      el("td", { class: "hash", title: file.sha256 || "", text: file.sha256 ? file.sha256.slice(0, 12) : "–" }),
      el("td", { text: formatTime(file.created) }),
      el("td", { class: "actions" },
        el("button", { type: "button", class: "download", text: "Download",
                       onclick: () => downloadFile(file).catch((e) => notice(explain(e))) }),
        el("button", { type: "button", class: "delete danger", text: "Delete",
                       onclick: () => deleteFile(file, () => row.remove()) })));
    body.append(row);
  }
  $("#files-empty").hidden = page.files.length > 0;
  $("#files-empty").textContent = q ? `No file matches “${q}”.` : "No files yet: upload one.";
  const next = $("#next-page");
  next.hidden = !page.nextCursor;
  next.addEventListener("click", () => {
    const p = new URLSearchParams(q ? { q } : {});
    p.set("cursor", page.nextCursor);
    location.assign(`/?${p}`);
  });
  const first = $("#first-page");
  first.hidden = !cursor;
  first.addEventListener("click", () => location.assign(q ? `/?q=${encodeURIComponent(q)}` : "/"));
}

async function deleteFile(file, done) {
  if (!(await confirmDelete(`Delete “${file.name}” (${formatBytes(file.size)})? This cannot be undone.`))) {
    return false;
  }
  try {
    await api(`/api/files/${file.fileId}`, { method: "DELETE" });
    notice(`Deleted “${file.name}”.`, "ok");
    done();
    return true;
  } catch (e) {
    notice(explain(e));
    return false;
  }
}

// --- upload -------------------------------------------------------------------------------------

function uploadPage() {
  const picker = $("#picker");
  const drop = $("#drop");
  picker.addEventListener("change", () => {
    for (const file of picker.files) startUpload(file);
    picker.value = "";
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    for (const file of event.dataTransfer.files) startUpload(file);
  });
}

function startUpload(file) {
  const row = $("#upload-row").content.firstElementChild.cloneNode(true);
  row.querySelector(".name").textContent = file.name;
  row.querySelector(".size").textContent = formatBytes(file.size);
  const sent = row.querySelector(".sent");
  const ingest = row.querySelector(".ingest");
  const state = row.querySelector(".state");
  const setState = (text, status) => {
    state.textContent = text;
    row.dataset.status = status;
  };
  $("#uploads").prepend(row);
  setState("sending…", "sending");

  const form = new FormData();
  form.append("file", file, file.name);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/upload");
  for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
  xhr.upload.addEventListener("progress", (event) => {
    if (!event.lengthComputable) return;
    sent.max = event.total;
    sent.value = event.loaded;
    setState(`sending ${Math.floor((100 * event.loaded) / event.total)}% (${formatBytes(event.loaded)})`, "sending");
  });
  xhr.addEventListener("load", () => {
    let body = null;
    try {
      body = JSON.parse(xhr.responseText);
    } catch (_) { /* not JSON */ }
    if (xhr.status !== 202 && xhr.status !== 201) {
      const message = body && body.error ? body.error.message : `HTTP ${xhr.status}`;
      setState(`upload refused: ${message}`, "failed");
      if (xhr.status === 401) toSignIn();
      return;
    }
    sent.max = 1;
    sent.value = 1;
    const link = row.querySelector(".name");
    link.href = `/files/${body.fileId}`;
    row.dataset.fileId = body.fileId;
    followIngest(body.fileId, ingest, setState);
  });
  xhr.addEventListener("error", () => setState("upload failed: connection lost", "failed"));
  xhr.send(form);
}

async function followIngest(fileId, bar, setState) {
  for (;;) {
    let status;
    try {
      status = await api(`/api/files/${fileId}/status`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 429) {
        setState(explain(e), "waiting");
        await sleep(1000 * (e.retryAfter || 5));
        continue;
      }
      setState(`status unavailable: ${explain(e)}`, "failed");
      return;
    }
    const { chunksDone, chunksTotal } = status.progress;
    bar.max = Math.max(chunksTotal, 1);
    bar.value = status.status === "stored" ? bar.max : chunksDone;
    if (status.status === "stored") {
      setState(`stored: ${chunksTotal} chunks`, "stored");
      return;
    }
    if (status.status === "failed" || status.status === "deleted") {
      setState(`${status.status}${status.error ? `: ${status.error}` : ""}`, status.status);
      return;
    }
    setState(`${status.status}: ${chunksDone} of ${chunksTotal} chunks`, status.status);
    await sleep(POLL_MS);
  }
}

// --- one file -----------------------------------------------------------------------------------

async function filePage() {
  const fileId = document.body.dataset.fileId;
  const rows = $("#chunks tbody");
  let shown = 0;
  let shared = 0;
  let file = null;
  let scope = "tenant";

  async function loadChunks(cursor) {
    const query = new URLSearchParams({ limit: "100" });
    if (cursor) query.set("cursor", cursor);
    const page = await api(`/api/files/${fileId}/chunks?${query}`);
    file = page.file;
    scope = page.scope;
    for (const chunk of page.chunks) {
      const nodes = chunk.fragments.length
        ? chunk.fragments.map((f) => (chunk.fragments.length > 1 ? `${f.node} (#${f.index}${f.parity ? " parity" : ""})` : f.node)).join(", ")
        : "spool (not placed yet)";
      const sharing = el("td", { class: "shared" });
      if (chunk.sharedWith > 0) {
        shared += 1;
        sharing.append(`${chunk.sharedWith}${chunk.sharedCountCapped ? "+" : ""} file${chunk.sharedWith === 1 ? "" : "s"}`);
        for (const other of chunk.sharedFiles) {
          sharing.append(" ", el("a", { href: `/files/${other.fileId}`, text: other.name || other.fileId }));
        }
      } else {
        sharing.append(el("span", { class: "muted", text: "none" }));
      }
      rows.append(el("tr", { dataset: { index: chunk.index } },
        el("td", { class: "num", text: chunk.index }),
        el("td", { class: "num", text: formatBytes(chunk.offset) }),
        el("td", { class: "num", text: formatBytes(chunk.size) }),
        el("td", { class: "hash", title: chunk.sha256, text: chunk.sha256.slice(0, 16) }),
        el("td", {}, el("span", { class: `badge ${chunk.state}`, text: chunk.state })),
        el("td", { text: chunk.layout || "–" }),
        el("td", { class: "nodes", text: nodes }),
        sharing));
      shown += 1;
    }
    const more = $("#more-chunks");
    more.hidden = !page.nextCursor;
    more.onclick = () => loadChunks(page.nextCursor).catch((e) => notice(explain(e)));
    const where = scope === "store" ? "any tenant's files" : "your other files";
    $("#chunk-summary").textContent =
      `${file.chunkCount} chunks · ${shown} shown · ${shared} of them shared with ${where}`;
  }

  try {
    await loadChunks(null);
  } catch (e) {
    notice(e instanceof ApiError && e.status === 404 ? "No such file." : explain(e));
    $("#download").disabled = true;
    $("#delete").disabled = true;
    return;
  }
  $("#file-name").textContent = file.name || "(no name)";
  document.title = `${file.name} · Mini-S3`;
  const facts = $("#file-facts");
  const add = (term, value, cls) => facts.append(el("dt", { text: term }), el("dd", { text: value, class: cls }));
  add("Size", `${formatBytes(file.size)} (${file.size.toLocaleString("en")} bytes)`, "size");
  add("Status", file.status, "status");
  add("SHA-256", file.sha256 || "–", "hash");
  if (file.bucket) add("Bucket / key", `${file.bucket}/${file.key}`);
  add("Content type", file.contentType);
  add("Created", formatTime(file.created));
  add("File id", file.fileId, "hash");
  $("#download").addEventListener("click", () =>
    downloadFile(file, $("#download-state")).catch((e) => notice(explain(e))));
  $("#delete").addEventListener("click", () =>
    deleteFile(file, () => {
      $("#delete").disabled = true;
      $("#download").disabled = true;
      setTimeout(() => location.assign("/"), 800);
    }));
}

// --- the store ----------------------------------------------------------------------------------

function figure(label, value, id, detail) {
  return el("div", { class: "figure", id },
    el("div", { class: "value", text: value }),
    el("div", { class: "label", text: label }),
    detail ? el("div", { class: "detail muted", text: detail }) : null);
}

async function storePage(me) {
  const stats = me.stats;
  const figures = $("#figures");
  const usage = stats.usage;
  if (me.admin) {
    $("#store-title").textContent = "Store";
    $("#store-scope").textContent = "the whole store (admin view)";
    // two separate figures: what dedup saves (logical - unique) and what redundancy costs (physical - unique)
    const redundancy = Math.max(0, stats.physicalBytes - stats.uniqueBytes);
    figures.append(
      figure("logical bytes", formatBytes(stats.logicalBytes), "fig-logical", `${stats.logicalBytes.toLocaleString("en")} bytes stored by users`),
      figure("physical bytes", formatBytes(stats.physicalBytes), "fig-physical", `${stats.physicalBytes.toLocaleString("en")} bytes on the nodes`),
      figure("dedup ratio", formatRatio(stats.dedupRatio), "fig-ratio", `${formatBytes(stats.dedupSavedBytes)} saved by dedup`),
      figure("redundancy", formatBytes(redundancy), "fig-redundancy", `${redundancy.toLocaleString("en")} bytes of coding over ${formatBytes(stats.uniqueBytes)} unique (${stats.layout})`),
      figure("files", String(stats.files.byStatus.stored), "fig-files", `stored (${stats.files.total} in all states)`),
      figure("chunks", String(stats.chunks), "fig-chunks", "distinct, stored"),
      figure("ingest queue", String(stats.queueDepth), "fig-queue", "tasks waiting"));
    renderTenants(stats.tenants || []);
    renderNodes(stats.nodes);
    renderJobs(stats, null);
    loadHistory(stats);
  } else {
    $("#store-title").textContent = "Your usage";
    $("#store-scope").textContent = `tenant ${stats.tenant}: figures of your own files only`;
    figures.append(
      figure("logical bytes", formatBytes(stats.logicalBytes), "fig-logical", `${stats.logicalBytes.toLocaleString("en")} bytes in your stored files`),
      figure("physical bytes", formatBytes(usage ? usage.physicalBytes : null), "fig-physical", "distinct chunks of your files, each once"),
      figure("dedup ratio", formatRatio(usage ? usage.dedupRatio : null), "fig-ratio", "within your own files"),
      figure("files", String(stats.files.byStatus.stored), "fig-files", `stored (${stats.files.total} in all states)`));
  }
  $("#usage-note").textContent = usage
    ? `Your tenant (${usage.tenant}) as of ${formatTime(usage.at)}: ${formatBytes(usage.logicalBytes)} logical, ${formatBytes(usage.physicalBytes)} physical within its own files (ratio ${formatRatio(usage.dedupRatio)}).`
    : "Per-tenant usage appears after the next sample (beat records one every minute).";
}

function renderTenants(tenants) {
  if (!tenants.length) return;
  $("#tenants-card").hidden = false;
  const body = $("#tenants tbody");
  for (const t of tenants) {
    body.append(el("tr", { dataset: { tenant: t.tenant } },
      el("td", { text: t.tenant }), el("td", { class: "num", text: t.files }),
      el("td", { class: "num", text: formatBytes(t.logicalBytes) }),
      el("td", { class: "num", text: formatBytes(t.physicalBytes) }),
      el("td", { class: "num", text: formatRatio(t.dedupRatio) }), el("td", { text: formatTime(t.at) })));
  }
}

function renderNodes(nodes) {
  $("#nodes-card").hidden = false;
  const withState = nodes.some((n) => n.state !== undefined);
  for (const cell of document.querySelectorAll(".state-col")) cell.hidden = !withState;
  const total = nodes.reduce((sum, n) => sum + n.bytes, 0);
  const body = $("#nodes tbody");
  for (const n of nodes) {
    const share = total ? n.bytes / total : 0;
    body.append(el("tr", { dataset: { node: n.node } },
      el("td", { text: n.node }),
      withState ? el("td", {}, el("span", { class: `badge ${n.state}`, text: n.state || "–" })) : null,
      el("td", { class: "num", text: n.chunks }),
      el("td", { class: "num", text: formatBytes(n.bytes) }),
      el("td", {}, el("meter", { min: "0", max: "1", value: share.toFixed(4), title: `${(100 * share).toFixed(1)}%` }),
        ` ${(100 * share).toFixed(1)}%`)));
  }
  if (window.MiniS3Charts) window.MiniS3Charts.nodes($("#chart-nodes"), nodes);
}

function jobTable(kind, runs, columns) {
  const head = el("tr", {}, el("th", { text: "When" }), ...columns.map(([label]) => el("th", { class: "num", text: label })));
  const body = el("tbody");
  for (const run of runs) {
    body.append(el("tr", {}, el("td", { text: formatTime(run.at) }),
      ...columns.map(([, field, fmt]) => el("td", { class: "num", text: fmt ? fmt(run[field]) : (run[field] ?? "–") }))));
  }
  return el("section", { class: "job", id: `job-${kind}` }, el("h3", { text: kind.toUpperCase() === "GC" ? "Garbage collection" : kind[0].toUpperCase() + kind.slice(1) }),
    runs.length ? el("table", { class: "grid" }, el("thead", {}, head), body) : el("p", { class: "muted", text: "No run yet." }));
}

const JOB_COLUMNS = {
  gc: [["Chunks freed", "chunks"], ["Bytes freed", "bytes", formatBytes], ["Seconds", "seconds", (s) => (s === undefined || s === null ? "–" : Number(s).toFixed(2))]],
};

function genericColumns(runs) {
  const fields = new Set();
  for (const run of runs) for (const [k, v] of Object.entries(run)) if (k !== "at" && (typeof v === "number" || typeof v === "string")) fields.add(k);
  return [...fields].slice(0, 6).map((f) => [f, f, (v) => (typeof v === "number" && /bytes/i.test(f) ? formatBytes(v) : v ?? "–")]);
}

function renderJobs(stats, events) {
  const jobs = $("#jobs");
  jobs.replaceChildren();
  $("#jobs-card").hidden = false;
  const kinds = new Set(["gc", ...Object.keys(events || {})]);
  for (const key of ["lastScrub", "lastHeal", "scrub", "heal"]) {
    if (stats[key]) kinds.add(key.replace(/^last/, "").toLowerCase());
  }
  for (const kind of kinds) {
    let runs = (events && events[kind]) || [];
    if (!runs.length) {
      const last = stats[`last${kind[0].toUpperCase()}${kind.slice(1)}`] || stats[kind];
      if (last && last.at) runs = [kind === "gc" ? { at: last.at, chunks: last.chunksFreed, bytes: last.bytesFreed, seconds: last.seconds } : last];
    }
    jobs.append(jobTable(kind, runs, JOB_COLUMNS[kind] || genericColumns(runs)));
  }
}

async function loadHistory(stats) {
  let history;
  try {
    history = await api("/api/stats/history?window=3600");
  } catch (e) {
    $("#history-note").textContent = explain(e);
    return;
  }
  $("#history-card").hidden = false;
  const samples = history.samples;
  const last = samples[samples.length - 1];
  const stored = samples.reduce((sum, s) => sum + s.storedBytes, 0);
  const files = samples.reduce((sum, s) => sum + s.storedFiles, 0);
  $("#history-note").textContent = samples.length
    ? `${samples.length} samples, one every ${history.sampleIntervalSeconds} s; stored in the last hour: ${files} files, ${formatBytes(stored)}; last sample ${formatTime(last.at)}: queue ${last.queueDepth}, ${formatBytes(last.throughputBytesPerS)}/s.`
    : `No sample yet: beat records one every ${history.sampleIntervalSeconds} s.`;
  if (window.MiniS3Charts && samples.length) {
    window.MiniS3Charts.queue($("#chart-queue"), samples);
    window.MiniS3Charts.dedup($("#chart-dedup"), samples);
  }
  renderJobs(stats, history.events);
}

// --- start --------------------------------------------------------------------------------------

const PAGES = { files: filesPage, upload: uploadPage, file: filePage, store: storePage };

window.addEventListener("DOMContentLoaded", async () => {
  const page = document.body.dataset.page;
  if (page === "signin") {
    signInPage();
    return;
  }
  initSignOut();
  let me;
  try {
    me = await whoAmI();
  } catch (e) {
    if (!(e instanceof ApiError && e.status === 401)) notice(explain(e));
    return;
  }
  try {
    await PAGES[page](me);
    document.body.dataset.ready = "1";
  } catch (e) {
    notice(explain(e));
  }
});

window.MiniS3 = { formatBytes, formatRatio, formatTime };
