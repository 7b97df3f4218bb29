// The ratelimitd console: a client of the admin API, nothing more. Every value from the service is put in
// the page as text (textContent, text nodes), never as HTML. The token lives in this tab's sessionStorage and
// travels only in the Authorization header: never in a URL, never in a cookie, so a cross-site request
// cannot carry it.

const TOKEN_KEY = "ratelimitd-admin-token";
const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error) || `HTTP ${status}`);
    this.status = status;
    this.body = body || {};
  }
}

async function api(method, path, { body, headers = {}, raw = false } = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const init = { method, headers: { Authorization: `Bearer ${token}`, ...headers }, cache: "no-store" };
  if (body !== undefined) init.body = typeof body === "string" ? body : JSON.stringify(body);
  const resp = await fetch(`/v1/admin${path}`, init);
  const type = resp.headers.get("Content-Type") || "";
  const data = type.startsWith("application/json") ? await resp.json() : await resp.text();
  if (resp.status === 401) {
    logout("The token was refused.");
    throw new ApiError(401, data);
  }
  if (!resp.ok) throw new ApiError(resp.status, typeof data === "object" ? data : { error: data });
  return raw ? { data, etag: resp.headers.get("ETag"), source: resp.headers.get("X-Ratelimitd-Source") } : data;
}

// ---- login and tabs ----

function showTab(name) {
  for (const button of document.querySelectorAll("#tabs button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const id of ["overview", "top", "explain", "edit"]) $(id).hidden = id !== name;
  if (name === "edit") loadDomainList();
  if (name === "explain") fillDomains($("explain-domain"));
}

function loggedIn() {
  $("login").hidden = true;
  $("tabs").hidden = false;
  $("logout").hidden = false;
  showTab("overview");
  refresh();
}

function logout(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  $("login").hidden = false;
  $("tabs").hidden = true;
  $("logout").hidden = true;
  for (const id of ["overview", "top", "explain", "edit"]) $(id).hidden = true;
  $("login-error").textContent = message;
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("token").value);
  $("token").value = "";
  try {
    await api("GET", "/domains");
    $("login-error").textContent = "";
    loggedIn();
  } catch (err) {
    if (err.status !== 401) logout(`Cannot reach the admin API: ${err.message}`);
  }
});
$("logout").addEventListener("click", () => logout());
for (const button of document.querySelectorAll("#tabs button")) {
  button.addEventListener("click", () => showTab(button.dataset.tab));
}

// ---- overview and top keys (refreshed every second) ----

let domains = [];

function perSecond(series, index) {
  // the last two buckets: the current one (partial) and the one before, over the time they cover
  if (!series.length) return 0;
  const [latest, previous] = [series[series.length - 1], series[series.length - 2]];
  const span = stats.bucket_seconds + (stats.now - latest[0]);
  return ((latest[index] || 0) + (previous ? previous[index] : 0)) / Math.max(span, 1);
}

function sparkline(series) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 180 28");
  const start = stats.now - 900;
  const top = Math.max(1, ...series.map((p) => p[1] + p[2] + p[4]));
  for (const [index, cls] of [[1, "allowed"], [2, "over"]]) {
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("class", cls);
    const points = series.map((p) => `${(((p[0] - start) / 900) * 180).toFixed(1)},${(27 - (p[index] / top) * 26).toFixed(1)}`);
    if (points.length === 1) points.push(points[0].replace(/^[\d.]+/, (x) => String(Number(x) + 3)));
    line.setAttribute("points", points.join(" "));
    svg.append(line);
  }
  return svg;
}

let stats = { bucket_seconds: 10, now: 0, rules: [] };

async function refresh() {
  if ($("login").hidden === false) return;
  try {
    const [listing, fresh, top] = await Promise.all([api("GET", "/domains"), api("GET", "/stats"), api("GET", "/top-keys")]);
    domains = listing.domains;
    stats = fresh;
    const banner = $("banner");
    banner.hidden = !listing.lost;
    banner.textContent = listing.lost
      ? "The store has lost the stored limits. Every instance keeps enforcing the last version it applied; restore them with POST /v1/admin/restore-domains."
      : "";
    renderOverview(listing);
    renderTop(top);
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (err) {
    $("updated").textContent = `not updated: ${err.message}`;
  }
}

function renderOverview(listing) {
  const sources = Object.fromEntries(listing.domains.map((d) => [d.domain, d.source]));
  const tbody = $("rules").querySelector("tbody");
  tbody.replaceChildren();
  for (const rule of stats.rules) {
    const over = perSecond(rule.series, 2);
    tbody.append(
      el("tr", { "data-rule": `${rule.domain}.${rule.rule}` },
        el("td", {}, rule.domain),
        el("td", {}, rule.name ? `${rule.rule} (${rule.name})` : rule.rule),
        el("td", {}, rule.limit),
        el("td", {}, sources[rule.domain] || ""),
        el("td", { class: "num allowed" }, perSecond(rule.series, 1).toFixed(1)),
        el("td", { class: over > 0 ? "num over" : "num" }, over.toFixed(1)),
        el("td", { class: "num" }, perSecond(rule.series, 3).toFixed(1)),
        el("td", { class: "num" }, perSecond(rule.series, 4).toFixed(1)),
        el("td", {}, sparkline(rule.series)),
      ),
    );
  }
}

function renderTop(top) {
  const box = $("top-list");
  box.replaceChildren();
  if (!top.rules.length) box.append(el("p", { class: "muted" }, "Nothing denied in the last 15 minutes."));
  for (const rule of top.rules) {
    const rows = rule.top.map(([value, count]) => el("tr", {}, el("td", { class: "value" }, value), el("td", { class: "num" }, count)));
    box.append(
      el("div", { class: "card", "data-rule": `${rule.domain}.${rule.rule}` },
        el("h3", {}, `${rule.domain}.${rule.rule}`),
        el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "descriptor values"), el("th", {}, "denied"))), el("tbody", {}, ...rows)),
      ),
    );
  }
}

setInterval(refresh, 500);

// ---- explain ----

function fillDomains(select) {
  const current = select.value;
  select.replaceChildren(...domains.map((d) => el("option", { value: d.domain }, d.domain)));
  if (current) select.value = current;
}

function entries() {
  return $("explain-entries").value.split("\n").map((line) => line.trim()).filter(Boolean).map((line) => {
    const at = line.indexOf("=");
    return at < 0 ? { key: line, value: "" } : { key: line.slice(0, at), value: line.slice(at + 1) };
  });
}

async function explain() {
  const result = $("explain-result");
  result.replaceChildren();
  $("explain-actions").hidden = true;
  $("explain-message").textContent = "";
  try {
    const answer = await api("POST", "/usage", { body: { domain: $("explain-domain").value, entries: entries() } });
    const s = answer.state;
    const rows = [
      ["rule", answer.description || ""],
      ["algorithm", s.algorithm || ""],
      ["Redis key", answer.redis_key],
      ["code", s.code],
      ["limit", s.limit ?? ""],
      ["remaining", s.remaining ?? ""],
      ["resets in", s.reset_after_ms !== undefined ? `${(s.reset_after_ms / 1000).toFixed(1)} s` : ""],
    ];
    result.append(el("dl", {}, ...rows.flatMap(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k }, v)])));
    $("explain-actions").hidden = false;
  } catch (err) {
    result.append(el("p", { class: "error" }, err.message));
  }
}

$("explain-form").addEventListener("submit", (event) => {
  event.preventDefault();
  explain();
});
$("reset").addEventListener("click", async () => {
  try {
    const r = await api("POST", "/reset", { body: { domain: $("explain-domain").value, entries: entries() } });
    await explain();
    $("explain-message").textContent = r.existed ? "Reset." : "Nothing to reset.";
  } catch (err) {
    $("explain-message").textContent = err.message;
  }
});
$("topup").addEventListener("click", async () => {
  const delta = Number($("topup-amount").value);
  try {
    await api("POST", "/adjust-quota", { body: { domain: $("explain-domain").value, entries: entries(), delta } });
    await explain();
    $("explain-message").textContent = `Added ${delta}.`;
  } catch (err) {
    $("explain-message").textContent = err.message;
  }
});

// ---- edit ----

let live = { domain: "", yaml: "", etag: null, source: "" };

async function loadDomainList() {
  const listing = await api("GET", "/domains");
  domains = listing.domains;
  const select = $("edit-domain");
  const current = select.value;
  select.replaceChildren(...domains.map((d) => el("option", { value: d.domain }, `${d.domain} (${d.source})`)));
  if (current && domains.some((d) => d.domain === current)) select.value = current;
  if (select.value && select.value !== live.domain) await openDomain(select.value);
}

async function openDomain(name) {
  const got = await api("GET", `/domains/${encodeURIComponent(name)}`, { raw: true });
  live = { domain: name, yaml: got.data, etag: got.etag, source: got.source };
  $("editor").value = got.data;
  $("editor").readOnly = got.source === "file";
  $("apply").disabled = got.source === "file";
  $("edit-source").textContent = got.source === "file" ? "from the config files: read-only here" : `version ${got.etag.replaceAll('"', "")}`;
  $("edit-status").textContent = "";
  await validate();
  await loadHistory();
}

$("edit-domain").addEventListener("change", () => openDomain($("edit-domain").value));
$("new").addEventListener("click", () => {
  const name = $("new-domain").value.trim();
  if (!name) return;
  live = { domain: name, yaml: "", etag: null, source: "store" };
  $("editor").value = `domain: ${name}\ndescriptors:\n  - key: user\n    rate_limit: {unit: minute, requests_per_unit: 10}\n`;
  $("editor").readOnly = false;
  $("apply").disabled = false;
  $("edit-source").textContent = "new domain";
  $("history").querySelector("tbody").replaceChildren();
  validate();
});

function lineDiff(a, b) {
  // longest common subsequence of lines; fine for config-sized texts
  const x = a ? a.split("\n") : [];
  const y = b.split("\n");
  const n = x.length, m = y.length;
  const table = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--) {
    for (let j = m - 1; j >= 0; j--) {
      table[i][j] = x[i] === y[j] ? table[i + 1][j + 1] + 1 : Math.max(table[i + 1][j], table[i][j + 1]);
    }
  }
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { i++; j++; }
    else if (i < n && (j === m || table[i + 1][j] >= table[i][j + 1])) out.push(["del", `- ${x[i++]}`]);
    else out.push(["add", `+ ${y[j++]}`]);
  }
  return out;
}

let validating = 0;
async function validate() {
  const text = $("editor").value;
  const mine = ++validating;
  const diff = $("diff");
  diff.replaceChildren(...lineDiff(live.yaml, text).map(([cls, line]) => el("span", { class: cls }, `${line}\n`)));
  if (!diff.childNodes.length) diff.append(el("span", { class: "muted" }, "no changes"));
  if (!live.domain) return;
  try {
    const answer = await api("POST", `/domains/${encodeURIComponent(live.domain)}/validate`, { body: text, headers: { "Content-Type": "application/yaml" } });
    if (mine !== validating) return;
    const list = $("problems");
    list.replaceChildren(...answer.problems.map((p) => el("li", { class: "error" }, p.line ? `line ${p.line}: ${p.message}` : p.message)));
    if (!answer.problems.length) list.append(el("li", { class: "ok" }, "valid"));
    $("editor").classList.toggle("invalid", answer.problems.length > 0);
  } catch (err) {
    $("problems").replaceChildren(el("li", { class: "error" }, err.message));
  }
}

let typing = null;
$("editor").addEventListener("input", () => {
  clearTimeout(typing);
  typing = setTimeout(validate, 250);
});

$("apply").addEventListener("click", async () => {
  const status = $("edit-status");
  const headers = { "Content-Type": "application/yaml", ...(live.etag ? { "If-Match": live.etag } : { "If-None-Match": "*" }) };
  try {
    const r = await api("PUT", `/domains/${encodeURIComponent(live.domain)}`, { body: $("editor").value, headers });
    status.className = "ok";
    status.textContent = `Applied as version ${r.version}.`;
    live.etag = `"${r.version}"`;
    live.yaml = $("editor").value;
    $("edit-source").textContent = `version ${r.version}`;
    await validate();
    await loadHistory();
    await loadDomainList();
  } catch (err) {
    status.className = "error";
    if (err.status === 412) status.textContent = `Refused: ${err.message}. Someone else changed it; reload the domain to see their version.`;
    else if (err.status === 400) status.textContent = `Refused, nothing changed: ${err.body.problems.join("; ")}`;
    else status.textContent = `Refused: ${err.message}`;
  }
});

async function loadHistory() {
  const tbody = $("history").querySelector("tbody");
  tbody.replaceChildren();
  if (live.source !== "store" || !live.etag) return;
  const { entries: list } = await api("GET", `/domains/${encodeURIComponent(live.domain)}/history`);
  for (const e of list) {
    const button = el("button", { type: "button", "data-version": String(e.version) }, "Roll back to this");
    button.disabled = e.action === "delete" || `"${e.version}"` === live.etag;
    button.addEventListener("click", () => rollback(e.version));
    tbody.append(el("tr", {}, el("td", {}, e.version), el("td", {}, new Date(e.time_ms).toLocaleString()), el("td", {}, e.who), el("td", {}, e.action), el("td", {}, e.summary), el("td", {}, button)));
  }
}

async function rollback(version) {
  const status = $("edit-status");
  try {
    const r = await api("POST", `/domains/${encodeURIComponent(live.domain)}/rollback`, { body: { version }, headers: { "If-Match": live.etag } });
    await openDomain(live.domain);
    status.className = "ok";
    status.textContent = `Rolled back to ${version} as version ${r.version}.`;
  } catch (err) {
    status.className = "error";
    status.textContent = `Refused: ${err.message}`;
  }
}

if (sessionStorage.getItem(TOKEN_KEY)) loggedIn();
