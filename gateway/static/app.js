"use strict";
// The videojob page: start renders, follow them live (EventSource, falling back to polling),
// cancel them and download the results. No build step, no dependencies.

const TOKEN_KEY = "videojob.apiToken";
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
const POLL_MS = 1000;
const LIST_REFRESH_MS = 10000;
const LIST_LIMIT = 20;

const jobs = new Map();      // id -> latest job JSON
const followers = new Map(); // id -> { source: EventSource|null, timer: number|null }
const cards = new Map();     // id -> its <li>, attached or not yet

const $ = (selector) => document.querySelector(selector);

class AuthError extends Error {}

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function withToken(url) {
  const t = token();
  if (!t) return url;
  return url + (url.includes("?") ? "&" : "?") + "access_token=" + encodeURIComponent(t);
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  if (token()) headers.set("Authorization", "Bearer " + token());
  const response = await fetch(path, { ...options, headers });
  if (response.status === 401) {
    askForToken();
    throw new AuthError("an API token is required");
  }
  const body = response.status === 204 ? null : await response.json().catch(() => null);
  if (!response.ok) {
    const message = (body && body.message) || response.statusText || "request failed";
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

function askForToken() {
  sessionStorage.removeItem(TOKEN_KEY);
  $("#token-panel").hidden = false;
  $("#token-form input").focus();
}

function formatEta(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return "ETA " + (m ? m + " min " + String(s % 60).padStart(2, "0") + " s" : s + " s");
}

function describeSpec(spec) {
  const pattern = spec && spec.source && spec.source.testPattern;
  if (pattern) {
    const size = pattern.width && pattern.height ? pattern.width + "×" + pattern.height : "";
    return ["Test pattern", pattern.durationSeconds + " s", size].filter(Boolean).join(" · ");
  }
  if (spec && spec.source && spec.source.transcode) return "Transcode " + spec.source.transcode.inputPath;
  if (spec && spec.source && spec.source.slideshow) return "Slideshow";
  return "Render";
}

function cardFor(job) {
  let card = cards.get(job.id);
  if (!card) {
    card = $("#job-template").content.firstElementChild.cloneNode(true);
    card.id = "job-" + job.id;
    card.dataset.jobId = job.id;
    card.querySelector(".cancel").addEventListener("click", () => cancelJob(job.id, card));
    cards.set(job.id, card);
  }
  return card;
}

function render(job) {
  const card = cardFor(job);
  const percent = Math.max(0, Math.min(100, Number(job.progress) || 0));
  const shown = job.status === "completed" ? 100 : Math.floor(percent);
  card.dataset.status = job.status;
  card.querySelector(".job-title").textContent = describeSpec(job.spec);
  card.querySelector(".job-title").title = job.id;
  const status = card.querySelector(".status");
  status.textContent = job.status;
  status.dataset.status = job.status;
  const bar = card.querySelector(".bar");
  bar.setAttribute("aria-valuenow", String(shown));
  bar.querySelector(".bar-fill").style.width = percent + "%";
  card.querySelector(".percent").textContent = shown + "%";
  card.querySelector(".stage").textContent = job.stage || "";
  card.querySelector(".eta").textContent = job.status === "running" ? formatEta(job.etaSeconds) : "";
  const error = card.querySelector(".job-error");
  error.hidden = !job.error;
  error.textContent = job.error ? job.error.message : "";
  card.querySelector(".cancel").hidden = TERMINAL.has(job.status);
  const download = card.querySelector(".download");
  download.hidden = job.status !== "completed";
  card.querySelector(".job-actions").hidden = TERMINAL.has(job.status) && download.hidden;
  if (job.status === "completed") {
    const container = (job.spec && job.spec.output && job.spec.output.container) || "mp4";
    download.href = withToken("/api/jobs/" + encodeURIComponent(job.id) + "/download");
    download.setAttribute("download", job.id + "." + container);
  }
  return card;
}

function update(job) {
  const known = jobs.get(job.id);
  if (known && known.version > job.version) return; // never step back to an older state
  jobs.set(job.id, job);
  render(job);
  if (TERMINAL.has(job.status)) stopFollowing(job.id);
  else follow(job.id);
}

function showList(list) {
  for (const job of list) update(job);
  const newestFirst = (a, b) => (b.createdAt || "").localeCompare(a.createdAt || "");
  const shown = [...jobs.values()].sort(newestFirst).map((job) => cardFor(job));
  $("#jobs").replaceChildren(...shown);
  $("#jobs-empty").hidden = shown.length > 0;
}

async function loadJobs() {
  try {
    const page = await api("/api/jobs?limit=" + LIST_LIMIT);
    showList(page.jobs);
  } catch (error) {
    if (!(error instanceof AuthError)) setMessage("Could not load jobs: " + error.message, true);
  }
}

function stopFollowing(id) {
  const follower = followers.get(id);
  if (!follower) return;
  if (follower.source) follower.source.close();
  if (follower.timer) clearTimeout(follower.timer);
  followers.delete(id);
}

function follow(id) {
  if (followers.has(id)) return;
  const follower = { source: null, timer: null };
  followers.set(id, follower);
  if (!("EventSource" in window)) {
    poll(id, follower);
    return;
  }
  const known = jobs.get(id);
  let url = "/api/jobs/" + encodeURIComponent(id) + "/events";
  if (known) url += "?lastEventId=" + known.version;
  const source = new EventSource(withToken(url));
  follower.source = source;
  const onEvent = (event) => update(JSON.parse(event.data));
  for (const name of ["progress", "completed", "failed", "cancelled"]) {
    source.addEventListener(name, onEvent);
  }
  source.onerror = () => {
    // The stream failed (or was refused): poll the job instead.
    source.close();
    follower.source = null;
    if (followers.get(id) === follower) poll(id, follower);
  };
}

function poll(id, follower) {
  follower.timer = setTimeout(async () => {
    if (followers.get(id) !== follower) return;
    try {
      update(await api("/api/jobs/" + encodeURIComponent(id)));
    } catch (error) {
      if (error instanceof AuthError || error.status === 404) {
        followers.delete(id);
        return;
      }
    }
    if (followers.get(id) === follower) poll(id, follower);
  }, POLL_MS);
}

async function cancelJob(id, card) {
  const button = card.querySelector(".cancel");
  button.disabled = true;
  try {
    update(await api("/api/jobs/" + encodeURIComponent(id) + "/cancel", { method: "POST" }));
  } catch (error) {
    if (!(error instanceof AuthError)) setMessage("Could not cancel: " + error.message, true);
  } finally {
    button.disabled = false;
  }
}

function setMessage(text, isError = false) {
  const message = $("#form-message");
  message.textContent = text;
  message.classList.toggle("error", isError);
}

async function startRender(event) {
  event.preventDefault();
  const form = event.target;
  const data = new FormData(form);
  const spec = {
    source: {
      testPattern: {
        durationSeconds: Number(data.get("durationSeconds")),
        width: Number(data.get("width")),
        height: Number(data.get("height")),
        fps: Number(data.get("fps")),
      },
    },
    output: { container: "mp4", preset: "ultrafast" },
  };
  const button = $("#start-button");
  button.disabled = true;
  setMessage("Starting…");
  try {
    const job = await api("/api/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID() },
      body: JSON.stringify(spec),
    });
    update(job);
    showList([...jobs.values()]);
    setMessage("Started.");
  } catch (error) {
    if (error instanceof AuthError) setMessage("Enter the API token, then start again.", true);
    else setMessage(error.message, true);
  } finally {
    button.disabled = false;
  }
}

async function checkHealth() {
  const badge = $("#health");
  try {
    const response = await fetch("/healthz");
    const ok = response.ok;
    badge.dataset.state = ok ? "ok" : "down";
    badge.textContent = ok ? "service up" : "service unavailable";
  } catch {
    badge.dataset.state = "down";
    badge.textContent = "gateway unreachable";
  }
}

function saveToken(event) {
  event.preventDefault();
  const value = new FormData(event.target).get("token").trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  event.target.reset();
  $("#token-panel").hidden = true;
  setMessage("");
  loadJobs();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#render-form").addEventListener("submit", startRender);
  $("#token-form").addEventListener("submit", saveToken);
  $("#refresh-button").addEventListener("click", loadJobs);
  loadJobs();
  checkHealth();
  setInterval(loadJobs, LIST_REFRESH_MS);
  setInterval(checkHealth, LIST_REFRESH_MS);
});
