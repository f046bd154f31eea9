// Drawing widgets of the studio: mask editor (keyframed boxes + brush), loudness curve editor,
// waveform view with span selection, and a small line chart. Plain canvas, no dependencies.
"use strict";

// Keep receiving a pointer's moves after it leaves the canvas (a finger or pen dragging past the edge).
function capture(canvas, e) {
  try { canvas.setPointerCapture(e.pointerId); } catch (_) { /* synthetic events carry no live pointer */ }
}

// ---------- Mask editor: boxes keyed by time, linearly interpolated (as fourfold.drawaudio.masks) ----------
class MaskEditor {
  constructor(canvas, onChange) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.brush = document.createElement("canvas");
    this.brush.width = canvas.width;
    this.brush.height = canvas.height;
    this.tool = "box";
    this.brushSize = 18;
    this.keyframes = []; // [{t, boxes: [[x0,y0,x1,y1] normalised]}]
    this.t = 0;
    this.frameDt = 0.04;
    this.drag = null;
    this.brushDirty = false;
    this.onChange = onChange || (() => {});
    // Pointer events cover mouse, pen and touch alike; capture keeps a drag alive outside the canvas.
    canvas.addEventListener("pointerdown", (e) => { capture(canvas, e); this.down(e); });
    window.addEventListener("pointermove", (e) => this.move(e));
    window.addEventListener("pointerup", (e) => this.up(e));
    window.addEventListener("pointercancel", (e) => this.up(e));
  }
  pos(e) {
    const r = this.canvas.getBoundingClientRect();
    const x = Math.min(1, Math.max(0, (e.clientX - r.left) / r.width));
    const y = Math.min(1, Math.max(0, (e.clientY - r.top) / r.height));
    return [x, y];
  }
  down(e) {
    if (e.button !== 0) return;
    const p = this.pos(e);
    this.drag = { start: p, end: p };
    if (this.tool !== "box") this.paint(p, p);
    e.preventDefault();
  }
  move(e) {
    if (!this.drag) return;
    const p = this.pos(e);
    if (this.tool !== "box") this.paint(this.drag.end, p);
    this.drag.end = p;
    this.draw();
  }
  up(e) {
    if (!this.drag) return;
    const d = this.drag;
    this.drag = null;
    if (this.tool === "box") {
      const box = [Math.min(d.start[0], d.end[0]), Math.min(d.start[1], d.end[1]),
                   Math.max(d.start[0], d.end[0]), Math.max(d.start[1], d.end[1])];
      if (box[2] - box[0] > 0.01 && box[3] - box[1] > 0.01) this.addBox(box);
    }
    this.draw();
    this.onChange();
  }
  paint(a, b) {
    const c = this.brush.getContext("2d");
    c.globalCompositeOperation = this.tool === "erase" ? "destination-out" : "source-over";
    c.strokeStyle = "rgba(255,255,255,1)";
    c.lineCap = "round";
    c.lineWidth = this.brushSize;
    c.beginPath();
    c.moveTo(a[0] * this.brush.width, a[1] * this.brush.height);
    c.lineTo(b[0] * this.brush.width, b[1] * this.brush.height);
    c.stroke();
    this.brushDirty = true;
  }
  addBox(box) {
    let k = this.keyframes.find((f) => Math.abs(f.t - this.t) < this.frameDt / 2);
    if (!k) {
      k = { t: this.t, boxes: [] };
      this.keyframes.push(k);
      this.keyframes.sort((a, b) => a.t - b.t);
    }
    k.boxes.push(box.map((v) => Math.round(v * 10000) / 10000));
  }
  boxesAt(t) {
    const k = this.keyframes;
    if (!k.length) return [];
    if (t <= k[0].t) return k[0].boxes;
    if (t >= k[k.length - 1].t) return k[k.length - 1].boxes;
    let j = 1;
    while (k[j].t < t) j++;
    const a = k[j - 1], b = k[j];
    if (a.boxes.length !== b.boxes.length) return a.boxes;
    const w = (t - a.t) / Math.max(b.t - a.t, 1e-9);
    return a.boxes.map((box, i) => box.map((v, m) => (1 - w) * v + w * b.boxes[i][m]));
  }
  setTime(t) { this.t = t; this.draw(); }
  // match the video's aspect ratio (the brush layer restarts empty: its pixels are the video's)
  resize(w, h) {
    if (this.canvas.width === w && this.canvas.height === h) return;
    this.canvas.width = this.brush.width = w;
    this.canvas.height = this.brush.height = h;
    this.brushDirty = false;
    this.draw();
  }
  deleteKeyframe(t) {
    const n = this.keyframes.length;
    this.keyframes = this.keyframes.filter((f) => Math.abs(f.t - t) >= this.frameDt / 2);
    if (this.keyframes.length !== n) { this.draw(); this.onChange(); }
  }
  isKeyframe(t) { return this.keyframes.some((f) => Math.abs(f.t - t) < this.frameDt / 2); }
  clear() {
    this.keyframes = [];
    this.brush.getContext("2d").clearRect(0, 0, this.brush.width, this.brush.height);
    this.brushDirty = false;
    this.draw();
    this.onChange();
  }
  hasBrush() {
    if (!this.brushDirty) return false;
    const d = this.brush.getContext("2d").getImageData(0, 0, this.brush.width, this.brush.height).data;
    for (let i = 3; i < d.length; i += 4) if (d[i] > 0) return true;
    return false;
  }
  // what the server takes: {"frames": [...]} (mask.json form) and the brush layer as a PNG data URL
  maskJson() { return this.keyframes.length ? { frames: this.keyframes.map((f) => ({ t: f.t, boxes: f.boxes })) } : null; }
  brushPng() { return this.hasBrush() ? this.brush.toDataURL("image/png") : null; }
  draw() {
    const c = this.ctx, W = this.canvas.width, H = this.canvas.height;
    c.clearRect(0, 0, W, H);
    c.globalAlpha = 0.45;
    c.drawImage(this.brush, 0, 0);
    c.globalCompositeOperation = "source-in";
    c.fillStyle = "#ff3d7f";
    c.fillRect(0, 0, W, H);
    c.globalCompositeOperation = "source-over";
    c.globalAlpha = 1;
    const key = this.isKeyframe(this.t);
    c.lineWidth = 2;
    c.setLineDash(key ? [] : [6, 4]);
    c.strokeStyle = key ? "#ffe033" : "#33d6ff";
    for (const b of this.boxesAt(this.t)) c.strokeRect(b[0] * W, b[1] * H, (b[2] - b[0]) * W, (b[3] - b[1]) * H);
    c.setLineDash([]);
    if (this.drag && this.tool === "box") {
      const d = this.drag;
      c.strokeStyle = "#ffffff";
      c.strokeRect(d.start[0] * W, d.start[1] * H, (d.end[0] - d.start[0]) * W, (d.end[1] - d.start[1]) * H);
    }
  }
  // state to keep per stage
  snapshot() {
    return { keyframes: JSON.parse(JSON.stringify(this.keyframes)), brush: this.brushDirty ? this.brush.toDataURL() : null };
  }
  restore(s) {
    this.keyframes = s ? JSON.parse(JSON.stringify(s.keyframes)) : [];
    const c = this.brush.getContext("2d");
    c.clearRect(0, 0, this.brush.width, this.brush.height);
    this.brushDirty = false;
    if (s && s.brush) {
      const img = new Image();
      img.onload = () => { c.drawImage(img, 0, 0); this.brushDirty = true; this.draw(); };
      img.src = s.brush;
    }
    this.draw();
  }
}

// ---------- Loudness curve: values in [0, 1] over the clip, drawn with the mouse ----------
class CurveEditor {
  constructor(canvas, n, onChange) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.n = n;
    this.values = null; // null = no curve (TLM off)
    this.playhead = null;
    this.duration = 1;
    this.onChange = onChange || (() => {});
    this.last = null;
    canvas.addEventListener("pointerdown", (e) => { capture(canvas, e); this.last = null; this.drawing = true; this.at(e); e.preventDefault(); });
    window.addEventListener("pointermove", (e) => { if (this.drawing) this.at(e); });
    const end = () => { if (this.drawing) { this.drawing = false; this.onChange(); } };
    window.addEventListener("pointerup", end);
    window.addEventListener("pointercancel", end);
    this.draw();
  }
  at(e) {
    const r = this.canvas.getBoundingClientRect();
    const x = Math.min(1, Math.max(0, (e.clientX - r.left) / r.width));
    const y = Math.min(1, Math.max(0, 1 - (e.clientY - r.top) / r.height));
    if (!this.values) this.values = new Array(this.n).fill(0.5);
    const i = Math.min(this.n - 1, Math.floor(x * this.n));
    if (this.last) { // fill the points between two mouse events
      const [i0, y0] = this.last, lo = Math.min(i0, i), hi = Math.max(i0, i);
      for (let k = lo; k <= hi; k++) this.values[k] = hi === lo ? y : y0 + (y - y0) * (k - i0) / (i - i0);
    } else this.values[i] = y;
    this.last = [i, y];
    this.draw();
  }
  set(values) { this.values = values ? values.slice() : null; if (values) this.n = values.length; this.draw(); this.onChange(); }
  clear() { this.set(null); }
  draw() {
    const c = this.ctx, W = this.canvas.width, H = this.canvas.height;
    c.clearRect(0, 0, W, H);
    c.fillStyle = "#10141c";
    c.fillRect(0, 0, W, H);
    c.strokeStyle = "#2a3242";
    c.lineWidth = 1;
    for (let k = 1; k < 4; k++) { c.beginPath(); c.moveTo(0, H * k / 4); c.lineTo(W, H * k / 4); c.stroke(); }
    c.fillStyle = "#7d8799";
    c.font = "11px sans-serif";
    c.fillText("0 dB", 4, 12);
    c.fillText("-80 dB", 4, H - 4);
    if (!this.values) {
      c.fillText("no curve: drag here to draw loudness over time", W / 2 - 120, H / 2);
    } else {
      c.strokeStyle = "#ffb020";
      c.lineWidth = 2.5;
      c.beginPath();
      this.values.forEach((v, i) => {
        const x = (i + 0.5) / this.values.length * W, y = (1 - v) * H;
        if (i === 0) c.moveTo(x, y); else c.lineTo(x, y);
      });
      c.stroke();
    }
    if (this.playhead !== null) {
      c.strokeStyle = "#33d6ff";
      c.beginPath(); c.moveTo(this.playhead * W, 0); c.lineTo(this.playhead * W, H); c.stroke();
    }
  }
}

// ---------- Waveform view with a draggable span ----------
class WaveformView {
  constructor(canvas, onSpan) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.peaks = null;
    this.span = null; // [start s, end s]
    this.onSpan = onSpan || (() => {});
    canvas.addEventListener("pointerdown", (e) => { if (!this.peaks) return; capture(canvas, e); this.drag = this.time(e); this.span = [this.drag, this.drag]; this.draw(); e.preventDefault(); });
    window.addEventListener("pointermove", (e) => { if (this.drag === undefined || this.drag === null) return; const t = this.time(e); this.span = [Math.min(this.drag, t), Math.max(this.drag, t)]; this.draw(); });
    const end = () => {
      if (this.drag === undefined || this.drag === null) return;
      this.drag = null;
      if (this.span && this.span[1] - this.span[0] < 0.02) this.span = null;
      this.draw(); this.onSpan(this.span);
    };
    window.addEventListener("pointerup", end);
    window.addEventListener("pointercancel", end);
    this.draw();
  }
  time(e) {
    const r = this.canvas.getBoundingClientRect();
    return Math.min(1, Math.max(0, (e.clientX - r.left) / r.width)) * this.peaks.duration;
  }
  setPeaks(p) { this.peaks = p; this.span = null; this.draw(); this.onSpan(null); }
  draw() {
    const c = this.ctx, W = this.canvas.width, H = this.canvas.height;
    c.fillStyle = "#10141c"; c.fillRect(0, 0, W, H);
    if (!this.peaks) { c.fillStyle = "#7d8799"; c.font = "12px sans-serif"; c.fillText("no audio", 8, H / 2); return; }
    const n = this.peaks.min.length;
    if (this.span) {
      c.fillStyle = "rgba(255,176,32,0.25)";
      const x0 = this.span[0] / this.peaks.duration * W, x1 = this.span[1] / this.peaks.duration * W;
      c.fillRect(x0, 0, x1 - x0, H);
    }
    c.strokeStyle = "#5fd38d";
    for (let i = 0; i < n; i++) {
      const x = (i + 0.5) / n * W;
      c.beginPath(); c.moveTo(x, H / 2 - this.peaks.max[i] * H / 2); c.lineTo(x, H / 2 - this.peaks.min[i] * H / 2); c.stroke();
    }
  }
}

// ---------- Line chart (loss curves, drawn vs achieved loudness) ----------
function drawLines(canvas, series, opts) {
  opts = opts || {};
  const c = canvas.getContext("2d"), W = canvas.width, H = canvas.height, pad = 28;
  c.fillStyle = "#10141c"; c.fillRect(0, 0, W, H);
  const all = series.flatMap((s) => s.values || []).filter((v) => Number.isFinite(v));
  if (!all.length) { c.fillStyle = "#7d8799"; c.font = "12px sans-serif"; c.fillText(opts.empty || "no data yet", 8, H / 2); return; }
  let lo = opts.min !== undefined ? opts.min : Math.min(...all), hi = opts.max !== undefined ? opts.max : Math.max(...all);
  if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
  c.strokeStyle = "#2a3242"; c.strokeRect(pad, 4, W - pad - 4, H - pad);
  c.fillStyle = "#7d8799"; c.font = "10px sans-serif";
  c.fillText(hi.toPrecision(3), 2, 12); c.fillText(lo.toPrecision(3), 2, H - pad);
  if (opts.xlabel) c.fillText(opts.xlabel, W / 2 - 20, H - 6);
  series.forEach((s, si) => {
    const v = s.values || [];
    if (!v.length) return;
    c.strokeStyle = s.color; c.lineWidth = 2; c.beginPath();
    v.forEach((y, i) => {
      const x = pad + (v.length === 1 ? 0.5 : i / (v.length - 1)) * (W - pad - 4);
      const yy = 4 + (1 - (y - lo) / (hi - lo)) * (H - pad - 4);
      if (i === 0) c.moveTo(x, yy); else c.lineTo(x, yy);
    });
    c.stroke();
    c.fillStyle = s.color; c.fillText(s.label, W - 150, 16 + 13 * si);
  });
}

window.Widgets = { MaskEditor, CurveEditor, WaveformView, drawLines };
