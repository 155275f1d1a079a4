// Read-only status page: lists recent runs with their agents, refreshing itself. No build step, no framework.
"use strict";

const refreshMs = 5000;

// Text only: values come from the API and are never inserted as HTML.
function cell(row, text, className) {
  const td = document.createElement("td");
  if (className) {
    const span = document.createElement("span");
    span.className = className;
    span.textContent = text;
    td.appendChild(span);
  } else {
    td.textContent = text;
  }
  row.appendChild(td);
  return td;
}

function link(td, href, text) {
  // Only http(s) links are rendered as links.
  if (!/^https?:\/\//i.test(href)) { td.textContent = text; return; }
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  a.rel = "noopener noreferrer";
  a.target = "_blank";
  td.appendChild(a);
}

// Every row is made before any replaces those shown: an answer that is not a list of runs (or has a run that cannot be
// read) fails as a whole, as a failed request does, and leaves the rows that were there.
function render(runs) {
  if (!Array.isArray(runs)) { throw new Error("the answer is not a list of runs"); }
  const rows = [];
  for (const run of runs) {
    const agents = run.coding_agents || {};
    const launches = run.launches || [];
    const refused = run.refused || [];
    if (launches.length === 0 && refused.length === 0) {
      const row = document.createElement("tr");
      cell(row, String(run.run_id)); cell(row, String(run.group_id ?? "")); cell(row, "—"); cell(row, "—"); cell(row, "no handoff"); cell(row, "");
      rows.push(row);
      continue;
    }
    for (const launch of launches) {
      // Its own entry only: an id such as "constructor" must not find what every object inherits.
      const agent = launch.agent_id && Object.hasOwn(agents, launch.agent_id) ? agents[launch.agent_id] : null;
      const row = document.createElement("tr");
      cell(row, String(run.run_id));
      cell(row, String(run.group_id ?? ""));
      // A repository launched again (its agent failed) has a row per launch; say which one this is.
      cell(row, launch.generation > 1 ? `${launch.repository} (launch ${launch.generation})` : launch.repository);
      const agentCell = cell(row, "");
      if (agent && agent.agent_url) { link(agentCell, agent.agent_url, agent.id); } else { agentCell.textContent = launch.agent_id || "—"; }
      const status = agent ? agent.status : launch.phase.replace("_", " ");
      // Without an agent the launch's phase is the state, so a launch the provider refused is marked failed as a
      // failed agent is (the other phases have no style).
      const statusCell = cell(row, status, "status " + (agent ? agent.status : launch.phase));
      if (launch.failure_type) {
        const detail = document.createElement("div");
        detail.className = "phase";
        detail.textContent = launch.failure_type;
        statusCell.appendChild(detail);
      }
      const prCell = cell(row, "");
      const pr = agent && agent.results && agent.results.find(r => r.pr_url);
      if (pr) { link(prCell, pr.pr_url, pr.pr_url.replace(/^https?:\/\/(www\.)?github\.com\//, "")); }
      rows.push(row);
    }
    // Repositories no handoff launches (a name, host or branch refused, or none named), with why: a row each.
    for (const refusal of refused) {
      const row = document.createElement("tr");
      cell(row, String(run.run_id)); cell(row, String(run.group_id ?? "")); cell(row, refusal.repository ?? "—"); cell(row, "—");
      const statusCell = cell(row, "not launched", "status failed");
      const detail = document.createElement("div");
      detail.className = "phase";
      detail.textContent = refusal.failure_type;
      statusCell.appendChild(detail);
      cell(row, "");
      rows.push(row);
    }
  }
  document.getElementById("runs").replaceChildren(...rows);
}

// The API token (Handoff:ApiToken), when the service asks for one: typed into the form, or passed once in the
// address as #token=... (a fragment never reaches a server). Kept for this tab only, and removed from the address; the
// browser has already written that address, token included, into its history on disk, which no page can undo.
const tokenKey = "handoff-api-token";
if (location.hash.startsWith("#token=")) {
  const given = location.hash.slice("#token=".length);
  // Out of the address (and history) first, whatever the token holds.
  history.replaceState(null, "", location.pathname + location.search);
  let token = given;
  try { token = decodeURIComponent(given); } catch { /* a bare % is not an escape: the token is taken as written */ }
  sessionStorage.setItem(tokenKey, token);
}

// When the runs on the page were read (empty until a list is shown).
let lastUpdated = "";

// Set while the form waits for a token, cleared when one is sent (whatever the service then answers).
let waitingForToken = false;

function askForToken(refused) {
  waitingForToken = true;
  document.getElementById("token-form").hidden = false;
  document.getElementById("token-message").textContent = refused
    ? "The token was refused. Enter the service's API token (Handoff:ApiToken)."
    : "This service needs its API token (Handoff:ApiToken) to list runs.";
}

// Dapr mode with APP_API_TOKEN: only daprd can send its dapr-api-token header, so no token typed here would do.
function explainSidecarOnly() {
  document.getElementById("token-form").hidden = true;
  document.getElementById("error").textContent =
    "This service accepts only its Dapr sidecar (APP_API_TOKEN), which a browser cannot stand in for. "
    + "Read the runs through daprd's service invocation: GET /v1.0/invoke/handoff/method/runs.";
}

document.getElementById("token-form").addEventListener("submit", event => {
  event.preventDefault();
  const input = document.getElementById("token");
  sessionStorage.setItem(tokenKey, input.value);
  input.value = "";
  waitingForToken = false;
  refresh(true);
});

// The detail of a problem answer (RFC 9457), as text: it says what to do, e.g. a 403 for a caller not on loopback names
// the setting that lets it in. Nothing for any other body.
async function problemDetail(response) {
  if (!(response.headers.get("Content-Type") || "").toLowerCase().startsWith("application/problem+json")) { return ""; }
  try {
    const problem = await response.json();
    return typeof problem.detail === "string" && problem.detail ? ": " + problem.detail.replace(/\.$/, "") : "";
  } catch {
    return "";
  }
}

// The runs on the page, shown no longer: a refused token (revoked, rotated, or the sidecar's alone) takes away what it had
// let the page read, since whoever now sits at the screen may not read it.
function clearRuns() {
  document.getElementById("runs").replaceChildren();
  document.getElementById("updated").textContent = "";
  lastUpdated = "";
}

// One request at a time: an answer slower than the refresh period would otherwise have the next one sent behind it (piling
// up on a slow service), and the answers could land out of order, an older list replacing a newer one.
// A token sent from the form while one is under way is not dropped (it would never be tried): its refresh follows once
// that one ends. The timer's are dropped, so a slow service is not asked back to back.
let refreshing = false;
let refreshAgain = false;

async function refresh(newToken = false) {
  if (refreshing) { refreshAgain ||= newToken; return; }
  refreshing = true;
  try {
    do {
      refreshAgain = false;
      await load();
    } while (refreshAgain);
  } finally {
    refreshing = false;
  }
}

async function load() {
  const token = sessionStorage.getItem(tokenKey);
  const headers = { "Accept": "application/json" };
  if (token) { headers["Authorization"] = "Bearer " + token; }
  try {
    const response = await fetch("/runs?limit=50", { headers });
    if (response.status === 401) {
      // A refusal of a token since replaced from the form says nothing of the new one, which the next refresh sends:
      // removing it, or asking again, would throw away what the person just typed.
      if (sessionStorage.getItem(tokenKey) !== token) { return; }
      sessionStorage.removeItem(tokenKey);
      clearRuns();
      if ((response.headers.get("WWW-Authenticate") || "").toLowerCase().startsWith("dapr-api-token")) {
        explainSidecarOnly();
        return;
      }
      askForToken(Boolean(token));
      document.getElementById("error").textContent = "";
      return;
    }
    if (!response.ok) { throw new Error("HTTP " + response.status + await problemDetail(response)); }
    document.getElementById("token-form").hidden = true;
    render(await response.json());
    document.getElementById("error").textContent = "";
    lastUpdated = new Date().toLocaleTimeString();
    document.getElementById("updated").textContent = "Updated " + lastUpdated;
  } catch (e) {
    document.getElementById("error").textContent = "Could not load runs (" + e.message + ").";
    // The rows stay (a passing failure should not blank the page), but they no longer read as current.
    // Nothing read yet: no "Loading…" beside the failure (the next refresh tries again).
    document.getElementById("updated").textContent = lastUpdated ? "Runs as of " + lastUpdated + ", not current" : "";
  }
}

refresh();
// Not while the form waits for a token: asked again without one, the service can only refuse again, and the page would
// replace "the token was refused" with "needs its API token" before the user has read it. Sending the form refreshes,
// and refreshing goes on from there even if that first answer is an error (a 503): the token is not asked for twice.
setInterval(() => { if (!waitingForToken) { refresh(); } }, refreshMs);
