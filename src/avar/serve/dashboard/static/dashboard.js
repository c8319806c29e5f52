// avar dashboard: live event list, score timeline with a playback cursor, uploads. Plain JS, no build step.
"use strict";

const PALETTE = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45",
                 "#fabed4", "#469990", "#dcbeff", "#9a6324", "#800000", "#aaffc3", "#808000", "#000075"];

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function utc(seconds) {
  return new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19);
}

function eventRow(e) {
  const thumb = el("td", {class: "thumb"});
  if (e.has_thumbnail) thumb.append(el("img", {loading: "lazy", src: `/thumbnails/${e.id}`, alt: ""}));
  const row = el("tr", {"data-id": e.id, class: "new"}, thumb,
    el("td", {}, el("a", {href: `/events/${e.id}`}, e.label)),
    el("td", {}, e.peak_score.toFixed(2)),
    el("td", {}, el("a", {href: `/sources/${e.source_id}`, title: e.source},
                    e.source.includes("://") ? e.source : e.source.split("/").pop())),
    el("td", {}, `${e.start.toFixed(1)}–${e.end.toFixed(1)} s`),
    el("td", {}, utc(e.created)));
  return row;
}

// The events list: new events matching the page's filters appear at the top of page 1;
// on later pages a banner counts them.
function liveEvents(table) {
  const body = table.tBodies[0];
  const page = Number(table.dataset.page);
  const pageSize = Math.max(Number(table.dataset.size), 50);
  let fresh = 0;
  const source = new EventSource(`${table.dataset.live}${table.dataset.live.endsWith("?") ? "" : "&"}after=${table.dataset.lastId}`);
  source.addEventListener("events", (message) => {
    const total = document.getElementById("total");
    for (const e of JSON.parse(message.data)) {
      if (body.querySelector(`tr[data-id="${e.id}"]`)) continue;
      total.textContent = Number(total.textContent) + 1;
      if (page === 1) {
        body.prepend(eventRow(e));
        while (body.rows.length > pageSize) body.deleteRow(-1);
        const empty = document.getElementById("empty");
        if (empty) empty.remove();
      } else {
        fresh += 1;
        document.getElementById("new-count").textContent = fresh;
        document.getElementById("new-banner").hidden = false;
      }
    }
  });
}

// A source's timeline: anomaly score (with events and gaps shaded) and class probabilities,
// drawn under the video, with a cursor at the video's current time.
class Timeline {
  constructor(data) {
    this.data = data;
    this.steps = data.steps;
    this.events = data.events;
    this.curve = document.getElementById("curve");
    this.probs = document.getElementById("probs");
    this.video = document.getElementById("player");
    this.cursor = null;
    this.classes = [];
    for (const s of this.steps) this.addClasses(s);
    this.legend();
    if (this.video) {
      if (data.focus) {
        this.video.addEventListener("loadedmetadata", () => {
          this.video.currentTime = Math.max(0, data.focus.start - 1);
        }, {once: true});
      }
      const follow = () => {
        this.setCursor(this.video.currentTime);
        requestAnimationFrame(follow);
      };
      requestAnimationFrame(follow);
      this.curve.addEventListener("click", (ev) => { this.video.currentTime = this.timeAt(ev); });
      this.probs.addEventListener("click", (ev) => { this.video.currentTime = this.timeAt(ev); });
    }
    document.querySelectorAll("[data-seek]").forEach((a) => a.addEventListener("click", (ev) => {
      ev.preventDefault();
      if (this.video) { this.video.currentTime = Number(a.dataset.seek); this.video.play(); }
    }));
    window.addEventListener("resize", () => this.draw());
    this.draw();
    if (data.live) this.follow();
  }

  addClasses(step) {
    for (const name of Object.keys(step.probabilities)) if (!this.classes.includes(name)) this.classes.push(name);
  }

  legend() {
    const box = document.getElementById("legend");
    box.replaceChildren(...this.classes.map((name, i) =>
      el("span", {}, el("i", {style: `background:${PALETTE[i % PALETTE.length]}`}), name)));
  }

  range() {
    const f = this.data.focus;
    if (f) {
      const pad = Math.max(10, f.end - f.start);
      return [Math.max(0, f.start - pad), f.end + pad];
    }
    if (!this.steps.length) return [0, 10];
    return [this.steps[0].time, Math.max(this.steps[this.steps.length - 1].end, this.steps[0].time + 1)];
  }

  timeAt(ev) {
    const [lo, hi] = this.range();
    const box = ev.target.getBoundingClientRect();
    return lo + (hi - lo) * (ev.clientX - box.left) / box.width;
  }

  setCursor(t) {
    if (t === this.cursor) return;
    this.cursor = t;
    this.curve.dataset.cursor = t.toFixed(3);
    this.draw();
  }

  prepare(canvas) {
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth, height = canvas.clientHeight;
    if (canvas.width !== Math.round(width * ratio)) canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const [lo, hi] = this.range();
    const left = 36, right = width - 8, top = 8, bottom = height - 20;
    return {ctx, lo, hi, top, bottom, left, right,
            x: (t) => left + (right - left) * (t - lo) / (hi - lo),
            y: (v) => bottom - (bottom - top) * v};
  }

  axes(g, label) {
    const {ctx, lo, hi, top, bottom, left, right} = g;
    ctx.strokeStyle = "#555"; ctx.fillStyle = "#aaa"; ctx.font = "11px sans-serif"; ctx.lineWidth = 1;
    ctx.strokeRect(left, top, right - left, bottom - top);
    const span = hi - lo, tick = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600].find((s) => span / s <= 10) || 7200;
    for (let t = Math.ceil(lo / tick) * tick; t <= hi; t += tick) {
      ctx.fillText(`${t.toFixed(0)} s`, g.x(t) - 10, bottom + 14);
      ctx.beginPath(); ctx.moveTo(g.x(t), bottom); ctx.lineTo(g.x(t), bottom + 4); ctx.stroke();
    }
    ctx.fillText("1", 22, top + 8); ctx.fillText("0", 22, bottom);
    ctx.save(); ctx.translate(10, (top + bottom) / 2 + 30); ctx.rotate(-Math.PI / 2); ctx.fillText(label, 0, 0); ctx.restore();
  }

  shade(g, spans, colour) {
    g.ctx.fillStyle = colour;
    for (const s of spans) {
      const a = Math.max(g.left, g.x(s.start)), b = Math.min(g.right, g.x(s.end));
      if (b > a) g.ctx.fillRect(a, g.top, b - a, g.bottom - g.top);
    }
  }

  line(g, value, colour, width) {
    const {ctx} = g;
    ctx.strokeStyle = colour; ctx.lineWidth = width; ctx.beginPath();
    let first = true;
    for (const s of this.steps) {
      const v = value(s);
      if (v === undefined) continue;
      const mid = (s.time + s.end) / 2;
      if (first) { ctx.moveTo(g.x(mid), g.y(v)); first = false; } else ctx.lineTo(g.x(mid), g.y(v));
    }
    ctx.stroke();
  }

  drawCursor(g) {
    if (this.cursor === null || this.cursor < g.lo || this.cursor > g.hi) return;
    const {ctx} = g;
    ctx.strokeStyle = "#fff"; ctx.lineWidth = 2; ctx.beginPath();
    ctx.moveTo(g.x(this.cursor), g.top); ctx.lineTo(g.x(this.cursor), g.bottom); ctx.stroke();
  }

  draw() {
    const g = this.prepare(this.curve);
    this.shade(g, this.data.gaps, "rgba(128,128,128,0.35)");
    this.shade(g, this.events, "rgba(230,25,75,0.22)");
    this.axes(g, "anomaly");
    this.line(g, (s) => s.anomaly_score, "#ffb000", 2);
    this.drawCursor(g);
    const p = this.prepare(this.probs);
    this.axes(p, "P(class)");
    this.classes.forEach((name, i) => this.line(p, (s) => s.probabilities[name], PALETTE[i % PALETTE.length], 1.5));
    this.drawCursor(p);
  }

  follow() {
    const last = this.steps.length ? this.steps[this.steps.length - 1].time : "";
    const url = `/api/live?source=${this.data.source}&after=${this.data.last_id}&steps_after=${last}`;
    const source = new EventSource(url);
    source.addEventListener("steps", (message) => {
      const known = new Set(this.steps.map((s) => s.time));
      for (const s of JSON.parse(message.data)) {
        if (known.has(s.time)) continue;
        this.steps.push(s);
        this.addClasses(s);
      }
      this.legend();
      this.draw();
    });
    source.addEventListener("events", (message) => {
      const body = document.getElementById("source-events").tBodies[0];
      for (const e of JSON.parse(message.data)) {
        if (this.events.some((x) => x.id === e.id)) continue;
        this.events.push(e);
        body.prepend(el("tr", {"data-id": e.id, class: "new"},
          el("td", {}, el("a", {href: `/events/${e.id}`}, e.label)), el("td", {}, e.peak_score.toFixed(2)),
          el("td", {}, `${e.start.toFixed(1)}–${e.end.toFixed(1)} s`), el("td", {}, utc(e.created))));
      }
      this.draw();
    });
  }
}

// 'Analyse a file': upload with progress, then follow the job until its view is ready.
function uploads(form) {
  const status = document.getElementById("status");
  const bar = document.getElementById("progress");
  const say = (text, error) => { status.textContent = text; status.classList.toggle("error", Boolean(error)); };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = document.getElementById("file").files[0];
    if (!file) return say("Pick a file first.", true);
    if (file.size > Number(form.dataset.maxBytes)) {
      return say(`${file.name} is larger than this dashboard's upload limit.`, true);
    }
    const run = document.getElementById("run").value;
    const request = new XMLHttpRequest();
    request.open("POST", `/api/uploads?name=${encodeURIComponent(file.name)}&run=${encodeURIComponent(run)}`);
    bar.hidden = false; bar.value = 0;
    request.upload.onprogress = (e) => { if (e.lengthComputable) { bar.value = e.loaded / e.total; say(`Uploading ${file.name}…`); } };
    request.onerror = () => say("The upload failed: the server could not be reached.", true);
    request.onload = () => {
      let body = {};
      try { body = JSON.parse(request.responseText); } catch (e) { body = {error: request.responseText}; }
      if (request.status !== 201) { bar.hidden = true; return say(body.error || `Upload refused (${request.status}).`, true); }
      poll(body.id);
    };
    request.send(file);
  });
  function poll(id) {
    fetch(`/api/jobs/${id}`).then((r) => r.json()).then((job) => {
      if (job.state === "failed") { bar.hidden = true; return say(job.error, true); }
      bar.value = job.progress;
      if (job.state === "done") {
        say(`Done: ${job.events} events. Opening the view…`);
        window.location.href = `/sources/${job.source_id}`;
        return;
      }
      say(`Analysing ${job.name} with ${job.run}: ${(100 * job.progress).toFixed(0)}%`);
      setTimeout(() => poll(id), 500);
    }).catch(() => setTimeout(() => poll(id), 1000));
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const table = document.getElementById("events");
  if (table) liveEvents(table);
  const data = document.getElementById("timeline-data");
  if (data) window.timeline = new Timeline(JSON.parse(data.textContent));
  const form = document.getElementById("upload-form");
  if (form) uploads(form);
});
