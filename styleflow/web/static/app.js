// The page of `styleflow serve`: posts a job, follows it through its event stream (one
// state per change: status, iteration, loss curve, preview), cancels it, lists all jobs.
// Plain script, no build step and nothing loaded from elsewhere; the API is in docs/web.md.
"use strict";

const el = (id) => document.querySelector(`[data-testid="${id}"]`);
const FINAL = new Set(["done", "cancelled", "failed"]);
let stream = null;
let watched = null;
let shownPreview = null;

function jobFromPath() {
  const m = location.pathname.match(/^\/jobs\/([0-9a-f]{12})$/);
  return m ? m[1] : null;
}

function showError(text) {
  el("error").textContent = text || "";
}

function connected(ok) {
  // While the server cannot be reached the page says so (and keeps trying), rather than
  // showing the last state it heard as if it were current.
  el("connection").hidden = ok;
}

async function answer(response) {
  // The API answers JSON, errors as {"error": "one line"}; anything else says the status.
  try {
    return await response.json();
  } catch (e) {
    return { error: `the server answered ${response.status} ${response.statusText}` };
  }
}

async function loadConfig() {
  const res = await fetch("/api/config");
  if (!res.ok) return;
  const config = await res.json();
  const form = document.getElementById("job");
  const width = el("width");
  width.max = config.max_width;
  el("iterations").max = config.max_iterations;
  // Each method's own default number of iterations (Adam takes steps, L-BFGS iterations
  // of 20 evaluations), unless the box holds a number the person typed: one other than the
  // last the page put there (which also holds when they typed before this ran).
  const iterations = el("iterations");
  let ours = iterations.defaultValue;
  const placeholders = () => {
    const method = config.methods[el("method").value];
    for (const [name, value] of Object.entries(method.weights)) {
      form.elements[name].placeholder = `default ${value}`;
    }
    if (iterations.value === ours) {
      iterations.value = ours = String(Math.min(method.iterations, config.max_iterations));
    }
  };
  el("method").addEventListener("change", placeholders);
  placeholders();
}

function photoFields() {
  document.getElementById("job").classList.toggle("photo", el("method").value === "photo");
}

async function start(event) {
  event.preventDefault();
  showError("");
  const form = event.target;
  const data = new FormData(form);
  if (el("method").value !== "photo") {
    for (const name of ["content_mask", "style_mask", "photorealism"]) data.delete(name);
  }
  el("start").disabled = true;
  try {
    const res = await fetch("/api/jobs", { method: "POST", body: data });
    const body = await answer(res);
    if (!res.ok) {
      showError(body.error || `the server answered ${res.status}`);
      return;
    }
    history.pushState({ id: body.id }, "", body.url);
    watch(body.id, body);
    refreshList();
  } catch (e) {
    showError("cannot reach the server");
  } finally {
    el("start").disabled = false;
  }
}

function watch(id, first) {
  if (stream) stream.close();
  stream = null;
  watched = id;
  shownPreview = null;
  el("preview").hidden = true;
  el("preview").removeAttribute("src");
  if (first) show(first);
  stream = new EventSource(`/api/jobs/${id}/events`);
  stream.addEventListener("state", (e) => {
    connected(true);
    show(JSON.parse(e.data));
  });
  stream.onerror = async () => {
    // The browser retries a dropped stream by itself (CONNECTING); it ends after a final
    // state, and an unknown job is answered 404.
    if (stream && stream.readyState === EventSource.CONNECTING) connected(false);
    if (stream && stream.readyState === EventSource.CLOSED) {
      try {
        const res = await fetch(`/api/jobs/${id}`);
        connected(true);
        if (res.status === 404) statusLine("no such job");
      } catch (e) {
        connected(false);
      }
    }
  };
}

function statusLine(text) {
  el("status").textContent = text;
}

function describe(job) {
  const of = `${job.iteration} of ${job.iterations}`;
  switch (job.status) {
    case "queued":
      return job.queue_position ? `queued (${job.queue_position} ahead)` : "queued (next)";
    case "running":
      return job.iteration ? `running: iteration ${of}` : "running: preparing";
    case "done":
      return `done: iteration ${of}`;
    case "cancelled":  // with what could not be kept, when something could not
      return `cancelled at iteration ${of}${job.error ? `: ${job.error}` : ""}`;
    default:
      return `failed at iteration ${of}: ${job.error || "unknown error"}`;
  }
}

function show(job) {
  if (job.id !== watched) return;
  statusLine(describe(job));
  el("status").dataset.status = job.status;
  if (job.preview && job.preview !== shownPreview) {
    shownPreview = job.preview;
    el("preview").src = job.preview;
    el("preview").hidden = false;
  }
  el("note").textContent = job.note || "";
  el("loss").textContent = job.loss === null ? "" : `loss ${job.loss.toExponential(4)}`;
  el("rate").textContent = job.rate ? `${job.rate.toFixed(2)} iterations/s` : "";
  el("cancel").disabled = FINAL.has(job.status);
  el("continue").hidden = !job.continuable;
  for (const [id, kind] of [["download", "png"], ["download-tiff", "tiff"]]) {
    const link = el(id);
    if (job.downloads && job.downloads[kind]) {
      link.href = job.downloads[kind];
      link.hidden = false;
    } else {
      link.removeAttribute("href");
      link.hidden = true;
    }
  }
  drawCurve(job.curve);
  const tag = document.querySelector(`[data-testid=jobs] a[data-job="${job.id}"] + .tag`);
  if (tag && tag.textContent !== job.status) {
    tag.textContent = job.status;
    tag.className = `tag ${job.status}`;
    refreshList();  // the jobs behind it have moved on too
  }
  if (FINAL.has(job.status)) {
    if (stream) stream.close();
    stream = null;
    refreshList();
  }
}

function drawCurve(points) {
  // The loss after every evaluation (L-BFGS) or step (Adam), on a log scale.
  const canvas = el("curve");
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 48;
  g.clearRect(0, 0, w, h);
  g.strokeStyle = "#999";
  g.strokeRect(pad, 6, w - pad - 6, h - pad);
  const kept = (points || []).filter((p) => p[1] > 0);
  if (kept.length < 2) return;
  const logs = kept.map((p) => Math.log10(p[1]));
  const lo = Math.min(...logs), hi = Math.max(...logs);
  const first = kept[0][0], last = kept[kept.length - 1][0];
  const x = (n) => pad + ((n - first) / Math.max(1, last - first)) * (w - pad - 6);
  const y = (v) => 6 + (hi === lo ? 0.5 : (hi - v) / (hi - lo)) * (h - pad);
  g.strokeStyle = "#c0392b";
  g.lineWidth = 1.5;
  g.beginPath();
  kept.forEach((p, i) => (i ? g.lineTo(x(p[0]), y(logs[i])) : g.moveTo(x(p[0]), y(logs[i]))));
  g.stroke();
  g.fillStyle = "#444";
  g.font = "11px sans-serif";
  g.fillText(`1e${hi.toFixed(1)}`, 2, 14);
  g.fillText(`1e${lo.toFixed(1)}`, 2, h - pad + 6);
  g.fillText(`${first}`, pad, h - pad + 20);
  g.fillText(`${last} evaluations`, w - 100, h - pad + 20);
}

async function cancel() {
  if (!watched) return;
  el("cancel").disabled = true;
  const res = await fetch(`/api/jobs/${watched}`, { method: "DELETE" });
  if (!res.ok) showError((await answer(res)).error);
}

async function goOn() {
  // A new job from where the watched one stopped (its picture, its remaining iterations).
  if (!watched) return;
  el("continue").disabled = true;
  try {
    const res = await fetch(`/api/jobs/${watched}/continue`, { method: "POST" });
    const body = await answer(res);
    if (!res.ok) {
      showError(body.error || `the server answered ${res.status}`);
      return;
    }
    history.pushState({ id: body.id }, "", body.url);
    watch(body.id, body);
    refreshList();
  } catch (e) {
    showError("cannot reach the server");
  } finally {
    el("continue").disabled = false;
  }
}

async function refreshList() {
  let res;
  try {
    res = await fetch("/api/jobs");
  } catch (e) {
    connected(false);
    return;
  }
  connected(true);
  if (!res.ok) return;
  const { jobs } = await res.json();
  const list = el("jobs");
  list.replaceChildren(
    ...jobs.map((job) => {
      const item = document.createElement("li");
      const link = document.createElement("a");
      link.href = job.url;
      link.dataset.job = job.id;
      const inputs = [job.inputs.content, ...(job.inputs.style || [])].join(" + ");
      link.textContent = `${job.method}, ${job.width} px: ${inputs}`;
      link.addEventListener("click", (e) => {
        e.preventDefault();
        history.pushState({ id: job.id }, "", job.url);
        watch(job.id);
      });
      const status = document.createElement("span");
      status.className = `tag ${job.status}`;
      status.textContent = job.status;
      // Jobs with the same inputs told apart by when they were made.
      const made = document.createElement("span");
      made.className = "when";
      made.textContent = new Date(job.created * 1000).toLocaleString();
      item.append(link, " ", status, " ", made);
      return item;
    }),
  );
}

function route() {
  const id = jobFromPath();
  if (id) {
    watch(id);
  } else {
    if (stream) stream.close();
    stream = null;
    watched = null;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("job");
  form.addEventListener("submit", start);
  // An earlier refusal goes once the person changes the form, or the browser itself
  // refuses it (a required file missing, a number out of range): it no longer applies.
  form.addEventListener("input", () => showError(""));
  form.addEventListener("invalid", () => showError(""), true);
  el("method").addEventListener("change", photoFields);
  el("cancel").addEventListener("click", cancel);
  el("continue").addEventListener("click", goOn);
  window.addEventListener("popstate", route);
  photoFields();
  loadConfig();
  refreshList();
  route();
  // Other pages and tabs start jobs too, and jobs queued behind the one watched move on:
  // the list follows them while the page is in view.
  setInterval(() => {
    if (!document.hidden) refreshList();
  }, 3000);
});
