// The flipmoe console: incidents with live state and progress, their reports, and an upload form.
// It only calls the service's JSON API (GET/POST /v1/incidents, .../report.html, .../report.md) with the
// bearer token the user typed, kept in this tab's sessionStorage. Text from jobs and reports is set with
// textContent, never as markup; a report is shown in a sandboxed frame that runs no script.
"use strict";

const TOKEN_KEY = "flipmoe-token";
const POLL_MS = 1500;
const LIST_LIMIT = 50;

const $ = (id) => document.getElementById(id);
let pollTimer = null;
let openJob = null;

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

class Unauthorized extends Error {}

// fetch with the bearer token; a 401 sends the user to the token form.
async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", "Bearer " + token());
  const response = await fetch(path, { ...options, headers, cache: "no-store" });
  if (response.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken("The service needs a bearer token" + (headers.has("Authorization") ? "; that one was refused." : "."));
    throw new Unauthorized();
  }
  return response;
}

// Every error of the service has one shape: {"error": {"message", "status"}}.
async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) return body.error.message;
  } catch (_) { /* not JSON: fall back to the status line */ }
  return `HTTP ${response.status} ${response.statusText}`;
}

function askForToken(message) {
  stopPolling();
  $("console").hidden = true;
  $("forget-token").hidden = true;
  $("token-form").hidden = false;
  $("token-error").textContent = message || "";
  $("connection").textContent = "token needed";
  $("token").focus();
}

function showConsole() {
  $("token-form").hidden = true;
  $("console").hidden = false;
  $("forget-token").hidden = !token();
}

// -- incidents ----------------------------------------------------------------------------------------

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "";
}

function progressText(job) {
  if (job.state === "failed") return job.error || "failed";
  if (job.state === "running" && job.started_at) {
    const elapsed = Math.max(0, Math.round(Date.now() / 1000 - job.started_at));
    return `${job.progress || "running"} · ${elapsed} s`;
  }
  if (job.state === "done" && job.started_at && job.finished_at) {
    return `done in ${(job.finished_at - job.started_at).toFixed(1)} s`;
  }
  return job.progress || job.state;
}

function topCause(job) {
  const causes = (job.summary && job.summary.root_causes) || [];
  if (!causes.length) return "";
  const top = causes[0];
  return [top.service, top.pod].filter(Boolean).join(" / ") + (top.fault_type ? ` (${top.fault_type})` : "");
}

function renderJobs(jobs) {
  const body = $("jobs").tBodies[0];
  body.replaceChildren();
  $("jobs-empty").hidden = jobs.length > 0;
  for (const job of jobs) {
    const row = body.insertRow();
    row.dataset.jobId = job.id;
    row.dataset.state = job.state;
    cell(row, when(job.submitted_at));
    cell(row, job.id.slice(0, 12), "job-id").title = job.id;
    cell(row, (job.summary && job.summary.incident) || "");
    const state = document.createElement("span");
    state.className = `state state-${job.state}`;
    state.textContent = job.state;
    row.insertCell().append(state);
    cell(row, progressText(job), "progress");
    cell(row, topCause(job), "cause");
    const actions = row.insertCell();
    if (job.state === "done") {
      const open = document.createElement("button");
      open.type = "button";
      open.className = "open-report";
      open.textContent = "Report";
      open.addEventListener("click", () => { location.hash = "#report=" + job.id; });
      actions.append(open);
    }
  }
}

async function refresh() {
  try {
    const response = await api(`/v1/incidents?limit=${LIST_LIMIT}`);
    if (!response.ok) {
      $("connection").textContent = await errorMessage(response);
      return;
    }
    const body = await response.json();
    showConsole();
    $("connection").textContent = `connected · updated ${new Date().toLocaleTimeString()}`;
    renderJobs(body.jobs);
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("connection").textContent = "cannot reach the service";
    throw err;
  }
}

function startPolling() {
  stopPolling();
  const tick = async () => {
    try {
      await refresh();
    } catch (err) {
      if (err instanceof Unauthorized) return; // the token form is shown; polling resumes from there
    }
    pollTimer = setTimeout(tick, POLL_MS);
  };
  tick();
}

function stopPolling() {
  if (pollTimer !== null) clearTimeout(pollTimer);
  pollTimer = null;
}

// -- reports ------------------------------------------------------------------------------------------

async function showReport(jobId) {
  openJob = jobId;
  $("report").hidden = false;
  $("report-title").textContent = "Report " + jobId.slice(0, 12);
  $("report-error").textContent = "";
  $("report-frame").srcdoc = "";
  try {
    const response = await api(`/v1/incidents/${encodeURIComponent(jobId)}/report.html`);
    if (!response.ok) {
      $("report-error").textContent = await errorMessage(response);
      return;
    }
    if (openJob === jobId) $("report-frame").srcdoc = await response.text();
    $("report").scrollIntoView();
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("report-error").textContent = "cannot reach the service";
  }
}

async function downloadMarkdown() {
  if (!openJob) return;
  const response = await api(`/v1/incidents/${encodeURIComponent(openJob)}/report.md`);
  if (!response.ok) {
    $("report-error").textContent = await errorMessage(response);
    return;
  }
  const link = document.createElement("a");
  link.href = URL.createObjectURL(await response.blob());
  link.download = `report-${openJob.slice(0, 12)}.md`;
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 1000);
}

function followHash() {
  const match = /^#report=([A-Za-z0-9]+)$/.exec(location.hash);
  if (match) {
    showReport(match[1]);
  } else {
    openJob = null;
    $("report").hidden = true;
  }
}

// -- upload -------------------------------------------------------------------------------------------

function contentType(file) {
  const name = file.name.toLowerCase();
  if (name.endsWith(".json")) return "application/json";
  if (name.endsWith(".zip")) return "application/zip";
  if (name.endsWith(".tar")) return "application/x-tar";
  return "application/gzip"; // the service reads .tar.gz, .tar.bz2 and .tar.xz by their content
}

async function upload(event) {
  event.preventDefault();
  const file = $("upload-file").files[0];
  if (!file) return;
  const status = $("upload-status");
  status.className = "";
  status.textContent = `uploading ${file.name}…`;
  try {
    const response = await api("/v1/incidents", {
      method: "POST", body: file, headers: { "Content-Type": contentType(file) },
    });
    if (!response.ok) {
      status.className = "error";
      status.textContent = await errorMessage(response);
      return;
    }
    const job = await response.json();
    status.textContent = `accepted as job ${job.id.slice(0, 12)} (${job.state})`;
    $("upload-form").reset();
    await refresh();
  } catch (err) {
    if (!(err instanceof Unauthorized)) {
      status.className = "error";
      status.textContent = "cannot reach the service";
    }
  }
}

// -- start --------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    startPolling();
    followHash();
  });
  $("forget-token").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    askForToken("");
  });
  $("upload-form").addEventListener("submit", upload);
  $("report-md").addEventListener("click", downloadMarkdown);
  $("report-close").addEventListener("click", () => { location.hash = ""; });
  window.addEventListener("hashchange", followHash);
  startPolling();
  followHash();
});
