"use strict";
// The videojob page: start renders and transcodes, upload clips, follow every job live over ONE
// event stream (GET /api/events; polling when it cannot be had), filter and page through jobs,
// open a job's details, cancel and download. A waiting job's place in line is derived when it
// is read and moves without a new version, which the stream sends: the page re-reads waiting
// jobs every QUEUE_REFRESH_MS. No build step, no dependencies.

const TOKEN_KEY = "videojob.apiToken";
const TERMINAL = new Set(["completed", "failed", "cancelled"]);
// The page sizes, as the gateway wrote them into the page (gateway.app.PAGE_SIZES).
const LIST_LIMIT = Number(document.documentElement.dataset.listLimit);
const QUEUE_LIMIT = Number(document.documentElement.dataset.queueLimit);
const POLL_MS = 1000;
const QUEUE_REFRESH_MS = 5000;
const STREAM_RETRY_MS = 5000;
const HEALTH_MS = 10000;
// The export service's render health check runs every 2 s: asked again after this, the badge
// has caught up with a job that started or stopped waiting for a render service.
const HEALTH_RECHECK_MS = 3000;
// The stage a job shows while its render service does not answer (the export service's own).
const RENDER_WAIT_STAGE = "Waiting for a render service";
const UPLOADING_STAGE = "Uploading";
// What the banner says while the gateway cannot be reached at all (the browser's own words,
// "Failed to fetch", say nothing to a user); it goes once any request gets an answer again.
const UNREACHABLE = "Can't reach the videojob gateway; retrying…";

const jobs = new Map();  // id -> newest job JSON of every job shown
const cards = new Map(); // id -> its <li>
const state = {
  filter: "",
  nextCursor: null,
  loaded: false,      // the list loaded at least once since the last reset
  source: null,       // the EventSource
  streamUrl: "",
  pollTimer: null,
  retryTimer: null,
  detailId: null,
  detailJob: null,     // the newest state of the job in the detail view
  confirmingCancel: false, // the detail view asks before it cancels
  history: null,       // the open job's history: {id, entries, loading, wanted}
  codecs: {},         // container -> video codecs, from the OpenAPI document
  listGeneration: 0,  // bumps on every reset, so that a late answer of an older list is dropped
  healthRecheck: null, // the badge's second look after a job started or stopped waiting
  mediaNames: new Map(), // input path -> the upload's original name (media list, jobs' inputNames)
};

const $ = (selector) => document.querySelector(selector);

class AuthError extends Error {}
class UnreachableError extends Error {}

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
  let response;
  try {
    response = await fetch(path, { ...options, headers });
  } catch {
    throw new UnreachableError(UNREACHABLE);
  }
  gatewayAnswered();
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

// --- The banner: one problem at a time, gone once things work again --------------------------

const problems = new Map(); // what failed -> its message

function reportProblem(what, message) {
  problems.set(what, message);
  showBanner();
}

function clearProblem(what) {
  if (problems.delete(what)) showBanner();
}

// What to say of a failed request: ``doing`` and the gateway's reason, or that the gateway cannot
// be reached at all.
function problemText(doing, error) {
  return error instanceof UnreachableError ? error.message : doing + ": " + error.message;
}

// The gateway answered: every problem that was only that it could not be reached is over.
function gatewayAnswered() {
  let changed = false;
  for (const [what, message] of problems) {
    if (message === UNREACHABLE) changed = problems.delete(what) || changed;
  }
  if (changed) showBanner();
}

function showBanner() {
  const banner = $("#banner");
  const messages = [...new Set(problems.values())];
  banner.hidden = messages.length === 0;
  banner.textContent = messages.join(" · ");
}

// --- Describing a job -------------------------------------------------------------------------

function formatEta(seconds) {
  if (seconds === null || seconds === undefined || !isFinite(seconds)) return "";
  return "ETA " + formatSeconds(seconds);
}

function formatSeconds(seconds) {
  const s = Math.max(0, Math.round(seconds));
  const m = Math.floor(s / 60);
  return m ? m + " min " + String(s % 60).padStart(2, "0") + " s" : s + " s";
}

function formatBytes(bytes) {
  if (bytes === null || bytes === undefined) return "";
  if (bytes < 1024) return bytes + " B";
  if (bytes < 1024 * 1024) return (bytes / 1024).toFixed(1) + " KiB";
  return (bytes / 1024 / 1024).toFixed(1) + " MiB";
}

function formatTime(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  const today = new Date().toDateString() === when.toDateString();
  return today ? when.toLocaleTimeString() : when.toLocaleString();
}

function baseName(path) {
  return String(path).split("/").pop();
}

// An input as users know it: an upload by the name it was sent with, another file by its name.
function inputName(path) {
  return state.mediaNames.get(path) || baseName(path);
}

// The input files a spec names, in its order: a transcode's, or a slideshow's slides, soundtrack
// and subtitles.
function inputPathsOf(spec) {
  const source = (spec && spec.source) || {};
  if (source.transcode) return [source.transcode.inputPath];
  if (!source.slideshow) return [];
  const show = source.slideshow;
  const paths = (show.slides || []).map((slide) => slide.imagePath);
  return paths.concat([show.audioPath, show.subtitlesPath].filter(Boolean));
}

// "holiday.mp4 (uploads/3f…e1.mp4)" for an upload, the path alone for any other file.
function describeInput(path) {
  const name = inputName(path);
  return name === baseName(path) ? path : name + " (" + path + ")";
}

function rememberInputNames(job) {
  for (const [path, name] of Object.entries((job && job.inputNames) || {})) state.mediaNames.set(path, name);
}

function describeSpec(spec) {
  const source = (spec && spec.source) || {};
  if (source.testPattern) {
    return ["Test pattern", source.testPattern.durationSeconds + " s"].join(" · ");
  }
  if (source.transcode) return "Transcode " + inputName(source.transcode.inputPath);
  if (source.slideshow) {
    const slides = (source.slideshow.slides || []).length;
    return "Slideshow (" + slides + (slides === 1 ? " slide)" : " slides)");
  }
  return "Render";
}

function outputOf(spec) {
  const output = (spec && spec.output) || {};
  const container = output.container || "mp4";
  const pattern = spec && spec.source && spec.source.testPattern;
  let size = "";
  if (output.width && output.height) size = output.width + "×" + output.height;
  else if (output.width) size = output.width + " wide, height from source";
  else if (output.height) size = output.height + " high, width from source";
  else if (pattern && pattern.width && pattern.height) size = pattern.width + "×" + pattern.height;
  else size = "source size";
  const codec = output.videoCodec || defaultCodec(container);
  return { container, codec, size };
}

function defaultCodec(container) {
  const codecs = state.codecs[container];
  return codecs && codecs.length ? codecs[0] : "";
}

function describeOutput(spec) {
  const { container, codec, size } = outputOf(spec);
  return [container.toUpperCase(), codec.toUpperCase(), size].filter(Boolean).join(" · ");
}

// What the stage line says: the stage, and while the export service retries the render that
// it does (a resubmitted render also with its attempt and that attempt's own progress). The
// stage is the export service's own while the render service does not answer ("Waiting for a
// render service") or while no export replica drives the job ("Waiting for its export replica").
function stageText(job, attemptWord) {
  const stage = job.stage || "";
  if (!job.retrying) return stage;
  if (job.attempt > 1) {
    const own = Math.floor(job.attemptProgress || 0) + "% of " + attemptWord;
    return ["Retrying", "attempt " + job.attempt, own, stage].join(" · ");
  }
  return "Retrying · " + stage;
}

// The current stage's own measure (0-100), or null where it has none. The stages after the
// render keep the job's percent at 95-99 and move here instead: Uploading is the share of the
// file the object store has acknowledged, none of it (no stageProgress) before the first part.
function stageMeasure(job) {
  if (TERMINAL.has(job.status)) return null;
  if (job.stageProgress !== null && job.stageProgress !== undefined) {
    return Math.max(0, Math.min(100, Number(job.stageProgress) || 0));
  }
  return job.stage === UPLOADING_STAGE ? 0 : null;
}

// "Uploading · 37 % of the file stored": the stage line with the stage's own measure.
function stageWithMeasure(job, attemptWord) {
  const text = stageText(job, attemptWord);
  const measure = stageMeasure(job);
  if (measure === null) return text;
  const share = Math.floor(measure) + " %";
  return text + " · " + share + (job.stage === UPLOADING_STAGE ? " of the file stored" : " of this stage");
}

function waitsForRenders(job) {
  return Boolean(job) && !TERMINAL.has(job.status) && job.stage === RENDER_WAIT_STAGE;
}

// Waiting for a render slot: queued, or a resubmitted render queued again (it has a place).
function waitsForSlot(job) {
  return Boolean(job) && !TERMINAL.has(job.status) && (job.status === "queued" || job.queuePosition != null);
}

function ordinal(n) {
  const tens = n % 100;
  const suffix = tens >= 11 && tens <= 13 ? "th" : { 1: "st", 2: "nd", 3: "rd" }[n % 10] || "th";
  return n + suffix;
}

// "next in line · starts in about 1 min 05 s", "3rd in line" (no estimate: none is known).
function queueText(job) {
  if (TERMINAL.has(job.status) || !job.queuePosition) return "";
  const place = job.queuePosition === 1 ? "next in line" : ordinal(job.queuePosition) + " in line";
  if (!job.estimatedStartAt) return place;
  const seconds = (new Date(job.estimatedStartAt) - Date.now()) / 1000;
  return place + " · " + (seconds < 1 ? "starting any moment" : "starts in about " + formatSeconds(seconds));
}

// --- Cards ------------------------------------------------------------------------------------

function cardFor(job) {
  let card = cards.get(job.id);
  if (!card) {
    card = $("#job-template").content.firstElementChild.cloneNode(true);
    card.id = "job-" + job.id;
    card.dataset.jobId = job.id;
    card.querySelector(".cancel").addEventListener("click", (event) => cancelJob(job.id, event.target));
    card.querySelector(".job-title").addEventListener("click", () => openDetail(job.id));
    cards.set(job.id, card);
  }
  return card;
}

function render(job) {
  rememberInputNames(job);
  const card = cardFor(job);
  const percent = Math.max(0, Math.min(100, Number(job.progress) || 0));
  const shown = job.status === "completed" ? 100 : Math.floor(percent);
  card.dataset.status = job.status;
  card.dataset.createdAt = job.createdAt || "";
  const title = card.querySelector(".job-title");
  title.textContent = describeSpec(job.spec);
  title.title = "Details of job " + job.id;
  const status = card.querySelector(".status");
  status.textContent = job.status;
  status.dataset.status = job.status;
  card.querySelector(".format").textContent = describeOutput(job.spec);
  const created = card.querySelector(".created");
  created.textContent = formatTime(job.createdAt);
  created.dateTime = job.createdAt || "";
  const bar = card.querySelector(".bar");
  bar.setAttribute("aria-valuenow", String(shown));
  bar.querySelector(".bar-fill").style.width = percent + "%";
  card.querySelector(".percent").textContent = shown + "%";
  const measure = stageMeasure(job);
  const stageBar = card.querySelector(".stage-bar");
  stageBar.hidden = measure === null;
  stageBar.setAttribute("aria-valuenow", String(Math.floor(measure || 0)));
  stageBar.setAttribute("aria-label", measure === null ? "" : job.stage);
  stageBar.querySelector(".stage-bar-fill").style.width = (measure || 0) + "%";
  renderParts(card.querySelector(".parts"), job);
  // A retried render: say so (a resubmitted one with its own progress; the bar keeps the job's).
  card.querySelector(".stage").textContent = stageWithMeasure(job, "it");
  card.querySelector(".eta").textContent = job.status === "running" ? formatEta(job.etaSeconds) : "";
  card.querySelector(".queue").textContent = queueText(job);
  const error = card.querySelector(".job-error");
  error.hidden = !job.error;
  error.textContent = job.error ? firstLine(job.error.message) : "";
  card.querySelector(".cancel").hidden = TERMINAL.has(job.status);
  const download = card.querySelector(".download");
  setDownload(download, job);
  card.querySelector(".job-actions").hidden = TERMINAL.has(job.status) && download.hidden;
  return card;
}

// A split job's parts as segments of one bar (the join is the job's own bar's Joining stage):
// each as wide as its share of the frames, filled with the frames it finished.
function renderParts(container, job) {
  const parts = (job.parts || []).filter((part) => !part.join && !part.audio);
  container.hidden = parts.length === 0 || TERMINAL.has(job.status);
  if (container.hidden) return;
  while (container.children.length > parts.length) container.lastElementChild.remove();
  while (container.children.length < parts.length) {
    const segment = document.createElement("div");
    segment.className = "part";
    segment.setAttribute("role", "progressbar");
    segment.setAttribute("aria-valuemin", "0");
    segment.setAttribute("aria-valuemax", "100");
    const fill = document.createElement("div");
    fill.className = "part-fill";
    segment.append(fill);
    container.append(segment);
  }
  parts.forEach((part, position) => {
    const segment = container.children[position];
    const total = Number(part.frameCount) || 0;
    const done = Math.min(Number(part.framesDone) || 0, total);
    const percent = total > 0 ? (100 * done) / total : 0;
    segment.style.flexGrow = String(Math.max(total, 1));
    segment.dataset.state = part.state;
    segment.dataset.attemptsOver = part.attempts > 1 && part.state !== "done" ? "1" : "0";
    segment.setAttribute("aria-valuenow", String(Math.floor(percent)));
    const again = part.state === "retrying" || segment.dataset.attemptsOver === "1";
    segment.setAttribute("aria-label", "Part " + (part.index + 1) + (again ? " (retrying)" : ""));
    segment.title = "Part " + (part.index + 1) + ": " + done + " of " + total + " frames" +
      (again ? " · retrying" : "");
    segment.querySelector(".part-fill").style.width = percent + "%";
  });
}

// "part 1 done on render-a · part 2 40/75 frames on render-b, attempt 2 · join pending".
function partsText(job) {
  return (job.parts || []).map((part) => {
    const name = part.join ? "join" : part.audio ? "audio" : "part " + (part.index + 1);
    const service = part.renderService ? part.renderService.instanceId || part.renderService.address : "";
    let text = name + " " + (part.state === "rendering" && !part.join && !part.audio ? part.framesDone + "/" + part.frameCount + " frames" : part.state);
    if (service) text += " on " + service;
    if (part.attempts > 1) text += ", attempt " + part.attempts;
    return text;
  }).join(" · ");
}

function firstLine(text) {
  return String(text || "").split("\n")[0];
}

function setDownload(link, job) {
  link.hidden = job.status !== "completed";
  if (job.status === "completed") {
    const { container } = outputOf(job.spec);
    link.href = withToken("/api/jobs/" + encodeURIComponent(job.id) + "/download");
    link.setAttribute("download", job.id + "." + container);
  }
}

function matchesFilter(job) {
  return !state.filter || job.status === state.filter;
}

// Shows a job's newest state; a job that no longer matches the filter leaves the list.
function update(job) {
  const known = jobs.get(job.id);
  if (known && known.version > job.version) return; // never step back to an older state
  // The badge says whether render services answer: it agrees with the cards (see recheckHealth).
  if (waitsForRenders(job) !== waitsForRenders(known)) recheckHealth();
  if (job.id === state.detailId) renderDetail(job);
  if (!matchesFilter(job)) {
    if (known) removeJob(job.id);
    return;
  }
  jobs.set(job.id, job);
  const card = render(job);
  if (!card.isConnected) place(card, job);
  showListState();
}

function removeJob(id) {
  jobs.delete(id);
  const card = cards.get(id);
  if (card) card.remove();
  cards.delete(id);
  showListState();
  followChanges();
}

// Newest first: before the first card created earlier than this job.
function place(card, job) {
  const list = $("#jobs");
  const created = job.createdAt || "";
  for (const other of list.children) {
    if ((other.dataset.createdAt || "") < created) {
      list.insertBefore(card, other);
      followChanges();
      return;
    }
  }
  list.appendChild(card);
  followChanges();
}

function showListState() {
  const note = $("#jobs-state");
  if (!state.loaded) return;
  const empty = jobs.size === 0;
  note.hidden = !empty;
  note.dataset.state = empty ? "empty" : "shown";
  note.textContent = state.filter ? "No " + state.filter + " jobs." : "No jobs yet.";
}

// --- Loading the list -------------------------------------------------------------------------

function listUrl(cursor) {
  const params = new URLSearchParams({ limit: String(LIST_LIMIT) });
  if (state.filter) params.set("status", state.filter);
  if (cursor) params.set("cursor", cursor);
  return "/api/jobs?" + params;
}

// The first page again, from scratch (Refresh, a new filter, a new token).
async function reloadJobs() {
  const generation = ++state.listGeneration;
  const button = $("#refresh-button");
  button.disabled = true;
  try {
    const page = await api(listUrl(null));
    if (generation !== state.listGeneration) return;
    for (const card of cards.values()) card.remove();
    jobs.clear();
    cards.clear();
    state.loaded = true;
    state.nextCursor = page.nextCursor;
    for (const job of page.jobs) update(job);
    showListState();
    $("#load-more").hidden = !state.nextCursor;
    clearProblem("list");
    followChanges();
  } catch (error) {
    if (generation !== state.listGeneration) return;
    if (!state.loaded) {
      const note = $("#jobs-state");
      note.hidden = false;
      note.dataset.state = "error";
      note.textContent = "The jobs could not be loaded.";
    }
    if (!(error instanceof AuthError)) reportProblem("list", problemText("Could not load jobs", error));
  } finally {
    if (generation === state.listGeneration) button.disabled = false;
  }
}

async function loadMore() {
  if (!state.nextCursor) return;
  const generation = state.listGeneration;
  const button = $("#load-more");
  button.disabled = true;
  try {
    const page = await api(listUrl(state.nextCursor));
    if (generation !== state.listGeneration) return;
    state.nextCursor = page.nextCursor;
    for (const job of page.jobs) update(job);
    button.hidden = !state.nextCursor;
    clearProblem("list");
  } catch (error) {
    if (!(error instanceof AuthError)) reportProblem("list", problemText("Could not load more jobs", error));
  } finally {
    button.disabled = false;
  }
}

// --- Following changes: one event stream for the whole page ----------------------------------

// Jobs beyond the newest page that can still change (and the one in the detail view): the
// stream follows them by id, on top of the newest LIST_LIMIT jobs of the filter.
function extraIds() {
  const shown = [...$("#jobs").children].map((card) => card.dataset.jobId);
  const newest = new Set(shown.slice(0, LIST_LIMIT));
  const ids = shown.filter((id) => !newest.has(id) && !TERMINAL.has(jobs.get(id).status));
  const detail = state.detailId && jobs.get(state.detailId);
  if (state.detailId && !newest.has(state.detailId) && !(detail && TERMINAL.has(detail.status))) {
    ids.push(state.detailId);
  }
  return [...new Set(ids)].sort();
}

function eventsUrl() {
  const params = new URLSearchParams({ limit: String(LIST_LIMIT) });
  if (state.filter) params.set("status", state.filter);
  const ids = extraIds();
  if (ids.length) params.set("ids", ids.join(","));
  return "/api/events?" + params;
}

// (Re)connects the stream when what the page shows needs a different one.
function followChanges() {
  if (!state.loaded) return;
  const url = eventsUrl();
  if (!("EventSource" in window)) {
    startPolling();
    return;
  }
  const open = state.source && state.source.readyState !== EventSource.CLOSED;
  if (open && url === state.streamUrl) return;
  if (state.source) state.source.close();
  clearTimeout(state.retryTimer);
  state.streamUrl = url;
  const source = new EventSource(withToken(url));
  state.source = source;
  source.addEventListener("job", (event) => update(JSON.parse(event.data)));
  source.onopen = () => {
    stopPolling();
    clearProblem("stream");
  };
  source.onerror = () => {
    if (source !== state.source) return;
    if (source.readyState === EventSource.CLOSED) {
      // Refused (not an event stream): poll, and try the stream again in a while.
      startPolling();
      state.retryTimer = setTimeout(() => {
        state.streamUrl = "";
        followChanges();
      }, STREAM_RETRY_MS);
    } else {
      // The browser reconnects by itself; the stream then starts with the current state.
      startPolling();
    }
  };
}

function startPolling() {
  if (state.pollTimer) return;
  state.pollTimer = setTimeout(pollOnce, POLL_MS);
}

function stopPolling() {
  clearTimeout(state.pollTimer);
  state.pollTimer = null;
}

async function pollOnce() {
  try {
    const page = await api(listUrl(null));
    for (const job of page.jobs) update(job);
    for (const id of extraIds()) update(await api("/api/jobs/" + encodeURIComponent(id)));
    clearProblem("stream");
  } catch (error) {
    if (!(error instanceof AuthError)) reportProblem("stream", problemText("Live updates paused", error));
  }
  if (state.pollTimer) state.pollTimer = setTimeout(pollOnce, POLL_MS);
}

// Waiting jobs on show (and in the detail view) read again: their place in line and estimated
// start move without a new version, so the stream does not send them.
async function refreshWaiting() {
  const ids = [...jobs.values()].filter(waitsForSlot).map((job) => job.id);
  if (waitsForSlot(state.detailJob) && !ids.includes(state.detailJob.id)) ids.push(state.detailJob.id);
  if (ids.length === 0) return;
  try {
    const page = await api("/api/jobs?" + new URLSearchParams({ status: "queued", limit: String(QUEUE_LIMIT) }));
    const queued = new Map(page.jobs.map((job) => [job.id, job]));
    // One not among them started (or is a resubmitted render queued again): read it alone.
    for (const id of ids) update(queued.get(id) || (await api("/api/jobs/" + encodeURIComponent(id))));
    clearProblem("queue");
  } catch (error) {
    if (!(error instanceof AuthError)) reportProblem("queue", problemText("Could not read the queue", error));
  }
}

// --- Actions ----------------------------------------------------------------------------------

async function cancelJob(id, button) {
  button.disabled = true;
  try {
    update(await api("/api/jobs/" + encodeURIComponent(id) + "/cancel", { method: "POST" }));
    clearProblem("cancel");
  } catch (error) {
    if (!(error instanceof AuthError)) reportProblem("cancel", problemText("Could not cancel", error));
  } finally {
    button.disabled = false;
  }
}

function setMessage(selector, text, isError = false) {
  const message = $(selector);
  message.textContent = text;
  message.classList.toggle("error", isError);
}

async function createJob(spec, button, messageSelector) {
  button.disabled = true;
  setMessage(messageSelector, "Starting…");
  try {
    const job = await api("/api/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": crypto.randomUUID() },
      body: JSON.stringify(spec),
    });
    update(job);
    setMessage(messageSelector, "Started.");
  } catch (error) {
    if (error instanceof AuthError) setMessage(messageSelector, "Enter the API token, then start again.", true);
    else setMessage(messageSelector, error.message, true);
  } finally {
    button.disabled = false;
  }
}

function startRender(event) {
  event.preventDefault();
  const data = new FormData(event.target);
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
  createJob(spec, $("#start-button"), "#form-message");
}

function startTranscode(event) {
  event.preventDefault();
  const data = new FormData(event.target);
  const output = { container: data.get("container"), videoCodec: data.get("videoCodec"), preset: "veryfast" };
  // Either alone keeps the aspect ratio; both fit the video into that box.
  const width = Number(data.get("width"));
  const height = Number(data.get("height"));
  if (width) output.width = width;
  if (height) output.height = height;
  const spec = { source: { transcode: { inputPath: data.get("inputPath") } }, output };
  createJob(spec, $("#transcode-button"), "#transcode-message");
}

// --- Uploads and the media list ---------------------------------------------------------------

async function upload(event) {
  event.preventDefault();
  const file = $("#upload-file").files[0];
  if (!file) return;
  const button = $("#upload-button");
  button.disabled = true;
  setMessage("#upload-message", "Uploading " + file.name + "…");
  try {
    const stored = await api("/api/media?filename=" + encodeURIComponent(file.name), {
      method: "POST",
      headers: { "Content-Type": file.type || "application/octet-stream" },
      body: file,
    });
    const facts = [
      stored.width && stored.height ? stored.width + "×" + stored.height : "",
      stored.durationSeconds ? stored.durationSeconds.toFixed(1) + " s" : "",
      stored.videoCodec || stored.audioCodec || "",
      formatBytes(stored.sizeBytes),
    ].filter(Boolean);
    const name = stored.originalName || file.name;
    const use = stored.transcodable ? "" : " It is not a video: use it in a slideshow, it cannot be transcoded.";
    setMessage("#upload-message", "Uploaded " + name + " (" + facts.join(", ") + ")." + use);
    await loadMedia(stored.transcodable ? stored.path : undefined);
    event.target.reset();
  } catch (error) {
    if (error instanceof AuthError) setMessage("#upload-message", "Enter the API token, then upload again.", true);
    else setMessage("#upload-message", error.message, true);
  } finally {
    button.disabled = false;
  }
}

async function loadMedia(select) {
  try {
    const listing = await api("/api/media");
    let named = false;
    for (const file of listing.files) {
      if (file.originalName && state.mediaNames.get(file.path) !== file.originalName) {
        state.mediaNames.set(file.path, file.originalName);
        named = true;
      }
    }
    // Only what a transcode takes: videos, not images or audio alone.
    const videos = listing.files.filter((file) => file.transcodable);
    const choice = $("#transcode-input");
    const previous = select || choice.value;
    const options = videos.map((file) => {
      const option = document.createElement("option");
      option.value = file.path;
      option.textContent = (file.originalName || file.path) + " (" + formatBytes(file.sizeBytes) + ")";
      option.title = file.path;
      return option;
    });
    if (options.length === 0) options.push(new Option("no videos yet: upload a clip", ""));
    choice.replaceChildren(...options);
    if (previous && videos.some((file) => file.path === previous)) choice.value = previous;
    $("#transcode-button").disabled = videos.length === 0;
    clearProblem("media");
    if (named) for (const job of jobs.values()) render(job);
  } catch (error) {
    if (!(error instanceof AuthError)) reportProblem("media", problemText("Could not list the media files", error));
  }
}

// Containers and their video codecs, from the one place the OpenAPI document lists them.
async function loadOutputChoices() {
  const response = await fetch("/openapi.json");
  const document_ = await response.json();
  const output = document_.components.schemas.OutputSpec;
  for (const [container, choices] of Object.entries(output["x-codecs-by-container"])) {
    state.codecs[container] = choices.videoCodecs;
  }
  const containers = $("#transcode-container");
  containers.replaceChildren(
    ...Object.keys(state.codecs).map((name) => new Option(name, name))
  );
  containers.value = output.properties.container.default || containers.value;
  showCodecs();
  for (const job of jobs.values()) render(job);
}

function showCodecs() {
  const codecs = state.codecs[$("#transcode-container").value] || [];
  $("#transcode-codec").replaceChildren(...codecs.map((name) => new Option(name, name)));
}

// --- The detail view --------------------------------------------------------------------------

async function openDetail(id) {
  state.detailId = id;
  state.detailJob = null;
  state.confirmingCancel = false;
  state.history = { id, entries: [], loading: false, wanted: 0 };
  renderHistory([]);
  const known = jobs.get(id);
  if (known) renderDetail(known);
  const dialog = $("#job-detail");
  if (!dialog.open) dialog.showModal();
  try {
    renderDetail(await api("/api/jobs/" + encodeURIComponent(id)));
  } catch (error) {
    if (!(error instanceof AuthError)) reportProblem("detail", problemText("Could not load the job", error));
  }
  followChanges();
}

function closeDetail() {
  state.detailId = null;
  state.detailJob = null;
  state.confirmingCancel = false;
  state.history = null;
  clearProblem("detail");
  clearProblem("history");
  $("#job-detail").close();
  followChanges();
}

function timing(from, to, label = "") {
  if (!from || !to) return "";
  return " (" + label + formatSeconds((new Date(to) - new Date(from)) / 1000) + ")";
}

function renderDetail(job) {
  if (job.id !== state.detailId) return;
  if (state.detailJob && state.detailJob.id === job.id && state.detailJob.version > job.version) return;
  state.detailJob = job;
  clearProblem("detail");
  rememberInputNames(job);
  $("#detail-title").textContent = describeSpec(job.spec);
  const inputs = inputPathsOf(job.spec);
  $("#detail-input-row").hidden = inputs.length === 0;
  $("#detail-input").textContent = inputs.map(describeInput).join(", ");
  $("#detail-id").textContent = job.id;
  const status = $("#detail-status");
  status.textContent = job.status;
  status.dataset.status = job.status;
  $("#detail-stage").textContent = job.retrying && job.attempt > 1
    ? stageWithMeasure(job, "this attempt")
    : stageWithMeasure(job, "") + (TERMINAL.has(job.status) ? "" : " · " + Math.floor(job.progress) + "%");
  // The render service of each attempt, for the timeline.
  state.attemptServices = new Map(
    (job.attempts || []).map((attempt) => [attempt.attempt, attempt.renderService ? attempt.renderService.instanceId || attempt.renderService.address : ""])
  );
  const output = [describeOutput(job.spec)];
  if (job.outputSizeBytes) output.push(formatBytes(job.outputSizeBytes));
  if (job.outputDurationSeconds) output.push(job.outputDurationSeconds.toFixed(1) + " s");
  $("#detail-output").textContent = output.join(" · ");
  const place = queueText(job);
  $("#detail-queue").textContent = place;
  $("#detail-queue").hidden = $("#detail-queue-term").hidden = !place;
  $("#detail-attempt").textContent = String(job.attempt);
  const parts = partsText(job);
  $("#detail-parts").textContent = parts;
  $("#detail-parts").hidden = $("#detail-parts-term").hidden = !parts;
  const whole = job.splitReason || "";
  $("#detail-split-reason").textContent = whole;
  $("#detail-split-reason").hidden = $("#detail-split-reason-term").hidden = !whole;
  $("#detail-created").textContent = formatTime(job.createdAt);
  $("#detail-started").textContent = job.startedAt ? formatTime(job.startedAt) + timing(job.createdAt, job.startedAt, "queued ") : "not yet";
  $("#detail-finished").textContent = job.finishedAt ? formatTime(job.finishedAt) + timing(job.startedAt || job.createdAt, job.finishedAt) : "not yet";
  const error = job.error;
  $("#detail-error").hidden = !error;
  if (error) {
    const lines = String(error.message || "").split("\n");
    $("#detail-error-code").textContent = error.code;
    $("#detail-error-field").textContent = error.field ? "in " + error.field : "";
    $("#detail-error-message").textContent = lines[0];
    const log = [...lines.slice(1), ...(error.logLines || [])].filter((line) => line.trim());
    $("#detail-error-log").hidden = log.length === 0;
    $("#detail-error-log").textContent = log.join("\n");
  }
  followHistory(job);
  $("#detail-spec").textContent = JSON.stringify(job.spec, null, 2);
  showCancelConfirmation(job);
  setDownload($("#detail-download"), job);
}

// The dialog's "Cancel job…" asks before it cancels; "Close" beside it only closes the dialog.
function showCancelConfirmation(job) {
  const active = Boolean(job) && !TERMINAL.has(job.status);
  $("#detail-cancel").hidden = !active || state.confirmingCancel;
  $("#detail-cancel-confirm").hidden = !active || !state.confirmingCancel;
}

function askToCancel(asking) {
  state.confirmingCancel = asking;
  showCancelConfirmation(state.detailJob);
  (asking ? $("#detail-cancel-keep") : $("#detail-cancel")).focus();
}

async function confirmCancel(event) {
  const id = state.detailId;
  state.confirmingCancel = false;
  showCancelConfirmation(state.detailJob);
  if (id) await cancelJob(id, event.target);
}

// --- The detail view's history: a timeline -----------------------------------------------------

const HISTORY_PAGE = Number(document.documentElement.dataset.historyLimit);

function lastHistoryVersion(history) {
  const { entries } = history;
  return entries.length ? entries[entries.length - 1].version : 0;
}

// Fetches the open job's history entries it does not have yet, once a newer version is known.
function followHistory(job) {
  const history = state.history;
  if (!history || history.id !== job.id) return;
  history.wanted = Math.max(history.wanted, job.version);
  if (!history.loading && lastHistoryVersion(history) < history.wanted) loadHistory(history);
}

async function loadHistory(history) {
  history.loading = true;
  let after = lastHistoryVersion(history);
  try {
    do {
      const page = await api(
        "/api/jobs/" + encodeURIComponent(history.id) + "/history?limit=" + HISTORY_PAGE + "&afterVersion=" + after
      );
      if (state.history !== history) return; // closed, or another job opened meanwhile
      history.entries.push(...page.entries.filter((entry) => entry.version > after));
      after = page.nextAfterVersion;
    } while (after);
    renderHistory(history.entries);
    clearProblem("history");
  } catch (error) {
    if (!(error instanceof AuthError)) reportProblem("history", problemText("Could not load the job's history", error));
    return;
  } finally {
    history.loading = false;
  }
  // A change that arrived while this page was on its way.
  if (state.history === history && lastHistoryVersion(history) < history.wanted) loadHistory(history);
}

function percentText(progress) {
  return Math.floor(Number(progress) || 0) + " %";
}

// The render service that ran an attempt, once the history records it.
function onRenderService(entry) {
  const service = entry.renderService || (state.attemptServices && state.attemptServices.get(entry.attempt));
  return service ? " on " + service : "";
}

// One line per change of status, attempt and outcome; each run of progress entries in between
// folds into one line ("progress 3 % → 86 % (14 updates)").
function timeline(entries) {
  const lines = [];
  let run = null;
  let opener = null; // the status change whose progress opened the run, already a line itself
  let previous = null;
  const closeRun = () => {
    if (!run || (run.length === 1 && run[0] === opener)) {
      run = null;
      return;
    }
    const first = run[0];
    const last = run[run.length - 1];
    const span = first.progress === last.progress ? percentText(first.progress) : percentText(first.progress) + " → " + percentText(last.progress);
    const stages = [...new Set(run.map((entry) => entry.stage).filter(Boolean))];
    const count = run.length + (run.length === 1 ? " update" : " updates");
    const waiting = last.status === "queued";
    const text = waiting
      ? "waiting · " + (stages.join(", ") || "queued") + " (" + count + ")"
      : "progress " + span + " (" + count + (stages.length ? ": " + stages.join(", ") : "") + ")";
    lines.push({ kind: waiting ? "waiting" : "progress", time: first.time, until: last.time, text });
    run = null;
  };
  for (const entry of entries) {
    const statusChanged = previous !== null && entry.status !== previous.status;
    if (entry.change === "progress" && !statusChanged) {
      (run = run || []).push(entry);
      previous = entry;
      continue;
    }
    closeRun();
    let text;
    if (entry.change === "create") text = "created · " + entry.status;
    else if (entry.change === "begin_attempt") text = "attempt " + entry.attempt + " started" + onRenderService(entry);
    else if (entry.change === "complete") text = "completed · " + percentText(entry.progress);
    else if (entry.change === "fail") text = "failed" + (entry.errorCode ? " · " + entry.errorCode : "");
    else if (entry.change === "cancel") text = "cancelled";
    else if (entry.change === "migrated") text = "recorded as " + entry.status + " · " + entry.stage;
    else if (entry.status === "running") text = "running · attempt " + entry.attempt + onRenderService(entry) + " · " + entry.stage;
    else text = entry.status + " · " + entry.stage;
    const kind = entry.change === "progress" ? entry.status : entry.change;
    lines.push({ kind, time: entry.time, text });
    if (entry.change === "progress") {
      opener = entry;
      run = [entry]; // its progress opens the run that follows
    }
    previous = entry;
  }
  closeRun();
  return lines;
}

function renderHistory(entries) {
  const section = $("#detail-history");
  section.hidden = entries.length === 0;
  $("#detail-history-list").replaceChildren(
    ...timeline(entries).map((line) => {
      const item = document.createElement("li");
      item.dataset.kind = line.kind;
      const when = document.createElement("time");
      when.dateTime = line.time || "";
      when.textContent = formatTime(line.time);
      if (line.until && line.until !== line.time) when.title = "until " + formatTime(line.until);
      const what = document.createElement("span");
      what.className = "timeline-text";
      what.textContent = line.text;
      item.append(when, what);
      return item;
    })
  );
}

// --- Health and the token ---------------------------------------------------------------------

// A job started or stopped waiting for a render service: the badge, which otherwise looks every
// 10 s, looks now and once more when the export service's own check has caught up, so that it
// does not say "service up" beside a card that waits for renders (or the reverse) for long.
function recheckHealth() {
  clearTimeout(state.healthRecheck);
  checkHealth();
  state.healthRecheck = setTimeout(checkHealth, HEALTH_RECHECK_MS);
}

async function checkHealth() {
  const badge = $("#health");
  try {
    const response = await fetch("/healthz");
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      // Not serving: its database is down, or no export service answers.
      badge.dataset.state = "down";
      badge.textContent = body.export === "UNREACHABLE" ? "service unreachable" : "service unavailable";
    } else if (body.renders && body.renders !== "SERVING") {
      // Jobs are accepted and wait: no render service answers.
      badge.dataset.state = "degraded";
      badge.textContent = "service up, renders unreachable";
    } else {
      badge.dataset.state = "ok";
      badge.textContent = "service up";
    }
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
  setMessage("#form-message", "");
  state.streamUrl = "";
  reloadJobs();
  loadMedia();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#render-form").addEventListener("submit", startRender);
  $("#transcode-form").addEventListener("submit", startTranscode);
  $("#upload-form").addEventListener("submit", upload);
  $("#transcode-container").addEventListener("change", showCodecs);
  $("#token-form").addEventListener("submit", saveToken);
  $("#refresh-button").addEventListener("click", reloadJobs);
  $("#load-more").addEventListener("click", loadMore);
  $("#status-filter").addEventListener("change", (event) => {
    state.filter = event.target.value;
    state.loaded = false;
    reloadJobs();
  });
  $("#detail-close").addEventListener("click", closeDetail);
  $("#job-detail").addEventListener("close", () => {
    if (state.detailId) closeDetail();
  });
  $("#detail-cancel").addEventListener("click", () => askToCancel(true));
  $("#detail-cancel-keep").addEventListener("click", () => askToCancel(false));
  $("#detail-cancel-yes").addEventListener("click", confirmCancel);
  $("#transcode-button").disabled = true;
  loadOutputChoices().catch(() => reportProblem("docs", "Could not read the output choices."));
  reloadJobs();
  loadMedia();
  checkHealth();
  setInterval(checkHealth, HEALTH_MS);
  setInterval(refreshWaiting, QUEUE_REFRESH_MS);
});
