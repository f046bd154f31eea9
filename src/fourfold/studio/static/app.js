// fourfold studio: page logic. Talks to the JSON API of fourfold.studio.server.
"use strict";
const $ = (id) => document.getElementById(id);

async function api(path, opts) {
  opts = opts || {};
  const init = { method: opts.method || (opts.json !== undefined || opts.form ? "POST" : "GET") };
  if (opts.json !== undefined) { init.headers = { "Content-Type": "application/json" }; init.body = JSON.stringify(opts.json); }
  if (opts.form) init.body = opts.form;
  let res;
  try { res = await fetch(path, init); } catch (err) { throw new Error("the studio server is not reachable: " + err.message); }
  let body = null;
  try { body = await res.json(); } catch (err) { body = null; }
  if (!res.ok) {
    let detail = body && body.detail !== undefined ? body.detail : res.statusText;
    if (Array.isArray(detail)) detail = detail.map((d) => (d.loc ? d.loc.slice(1).join(".") + ": " : "") + d.msg).join("; ");
    throw new Error(String(detail));
  }
  return body;
}
function showError(page, msg) { $(page + "-error").textContent = msg ? String(msg) : ""; }
async function guarded(page, fn) {
  showError(page, "");
  try { return await fn(); } catch (err) { showError(page, err.message || err); return null; }
}
async function upload(file, kind) {
  const form = new FormData();
  form.append("file", file);
  form.append("kind", kind);
  return api("/api/upload", { form });
}
// Poll a job until it ends; onUpdate(job) after each poll. Resolves with the final job.
async function pollJob(job, onUpdate, every) {
  while (true) {
    onUpdate(job);
    if (job.status !== "running") return job;
    await new Promise((r) => setTimeout(r, every || 250));
    job = await api("/api/jobs/" + job.id);
  }
}
function jobUi(prefix) {
  return (job) => {
    $(prefix + "-progress").value = job.progress;
    $(prefix + "-status").textContent = job.status === "running" ? job.message : job.status + (job.error ? "" : ` (${job.seconds} s)`);
  };
}
async function modelBadge(system) {
  try {
    const info = await api("/api/info/" + system);
    const el = $(system + "-model");
    el.textContent = "model: " + info.source + (info.trained ? "" : " — UNTRAINED: " + info.label);
    el.classList.toggle("untrained", !info.trained);
  } catch (err) { showError(system, err.message); }
}

// ---------------- navigation ----------------
const loaded = {};
function showPage() {
  const page = (location.hash || "#drawaudio").slice(1);
  document.querySelectorAll(".page").forEach((s) => { s.hidden = s.id !== "page-" + page; });
  document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
  if (!loaded[page] && pages[page]) { loaded[page] = true; pages[page](); }
}
window.addEventListener("hashchange", showPage);

// ---------------- Draw an Audio ----------------
const da = { video: null, stages: [], current: 0, job: null, refs: [] };
const CURVE_POINTS = 64;
function daNewStage() { return { prompt: "", gain_db: 0, mask: null, curve: null }; }
function daSaveStage() {
  const s = da.stages[da.current];
  s.prompt = $("da-prompt").value; s.gain_db = parseFloat($("da-gain").value) || 0;
  s.mask = da.mask.snapshot(); s.curve = da.curve.values ? da.curve.values.slice() : null;
}
function daLoadStage(i) {
  da.current = i;
  const s = da.stages[i];
  $("da-prompt").value = s.prompt; $("da-gain").value = s.gain_db;
  da.mask.restore(s.mask); da.curve.values = s.curve ? s.curve.slice() : null; da.curve.draw();
  daTabs(); daKeyframes();
}
function daTabs() {
  const box = $("da-stage-tabs");
  box.innerHTML = "";
  da.stages.forEach((s, i) => {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = "Stage " + (i + 1); b.className = i === da.current ? "active" : "";
    b.onclick = () => { daSaveStage(); daLoadStage(i); };
    box.appendChild(b);
  });
  $("da-remove-stage").disabled = da.stages.length < 2;
}
function daKeyframes() {
  const k = da.mask.keyframes;
  $("da-keyframes").textContent = k.length ? "keyframes: " + k.map((f) => `${f.t.toFixed(2)} s (${f.boxes.length} box${f.boxes.length > 1 ? "es" : ""})`).join(", ") : "keyframes: none";
}
async function daSetVideo(file) {
  da.video = file;
  const s = $("da-scrub");
  s.max = Math.max(0, file.frames - 1); s.value = 0;
  da.mask.frameDt = 1 / file.fps;
  // the frame view keeps the video's aspect ratio inside 320 x 320
  const scale = 320 / Math.max(file.width, file.height);
  const w = Math.round(file.width * scale), h = Math.round(file.height * scale);
  const wrap = document.querySelector(".frame-wrap");
  wrap.style.width = w + "px"; wrap.style.height = h + "px";
  [$("da-frame"), $("da-mask")].forEach((el) => { el.style.width = w + "px"; el.style.height = h + "px"; });
  da.mask.resize(w, h);
  da.curve.duration = file.duration;
  await daFrame(0);
}
async function daFrame(i) {
  if (!da.video) return;
  const t = i / da.video.fps;
  $("da-time").textContent = t.toFixed(2) + " s";
  $("da-frame").src = `/api/drawaudio/frame/${da.video.id}?i=${i}`;
  da.mask.setTime(t);
  da.curve.playhead = da.video.frames > 1 ? i / (da.video.frames - 1) : 0;
  da.curve.draw();
}
function daResults(res) {
  $("da-results").hidden = false;
  $("da-audio").src = res.audio.url; $("da-video").src = res.video.url;
  $("da-dl-wav").href = res.audio.url + "?download=true"; $("da-dl-mp4").href = res.video.url + "?download=true";
  $("da-mel").src = res.mel.url;
  const series = [{ label: "achieved", color: "#5fd38d", values: res.loudness.achieved || [] }];
  const colors = ["#ffb020", "#ff5fa2", "#8fa2ff", "#33d6ff"];
  res.loudness.drawn.forEach((d, i) => { if (d) series.push({ label: "drawn (stage " + (i + 1) + ")", color: colors[i % 4], values: d }); });
  Widgets.drawLines($("da-loudness"), series, { min: 0, max: 1, xlabel: "time →" });
  const stems = $("da-stems");
  stems.innerHTML = "";
  res.stems.forEach((s, i) => {
    const row = document.createElement("div");
    row.className = "output-row";
    row.innerHTML = `stage ${i + 1}: <audio controls src="${s.url}"></audio> <a href="${s.url}?download=true" download>.wav</a>`;
    stems.appendChild(row);
  });
}
pages_da = async function () {
  da.mask = new Widgets.MaskEditor($("da-mask"), daKeyframes);
  da.curve = new Widgets.CurveEditor($("da-curve"), CURVE_POINTS);
  da.stages = [daNewStage()];
  daTabs(); daKeyframes();
  document.querySelectorAll("input[name=da-tool]").forEach((r) => r.addEventListener("change", () => { da.mask.tool = r.value; }));
  $("da-brush-size").oninput = (e) => { da.mask.brushSize = +e.target.value; };
  $("da-clear-mask").onclick = () => da.mask.clear();
  $("da-del-key").onclick = () => da.mask.deleteKeyframe(da.mask.t);
  $("da-clear-curve").onclick = () => da.curve.clear();
  $("da-scrub").oninput = (e) => daFrame(+e.target.value);
  $("da-add-stage").onclick = () => { daSaveStage(); da.stages.push(daNewStage()); daLoadStage(da.stages.length - 1); };
  $("da-remove-stage").onclick = () => { if (da.stages.length < 2) return; da.stages.splice(da.current, 1); daLoadStage(Math.max(0, da.current - 1)); };
  modelBadge("drawaudio");
  await guarded("drawaudio", async () => {
    const clips = await api("/api/drawaudio/bundled");
    const sel = $("da-bundled");
    clips.forEach((c, i) => { const o = new Option(c.name, i); sel.add(o); da.refs.push(c.reference_audio); });
    const refSel = $("da-ref");
    clips.forEach((c, i) => refSel.add(new Option(c.reference_audio.name, i)));
    sel.onchange = () => daSetVideo(clips[+sel.value]);
    da.clips = clips;
    if (clips.length) await daSetVideo(clips[0]);
  });
  $("da-upload").onchange = (e) => guarded("drawaudio", async () => {
    const f = e.target.files[0];
    if (!f) return;
    const stored = await upload(f, "video");
    const o = new Option("uploaded: " + stored.name, "u" + stored.id);
    $("da-bundled").add(o); $("da-bundled").value = o.value;
    await daSetVideo(stored);
  });
  $("da-ref-upload").onchange = (e) => guarded("drawaudio", async () => {
    const f = e.target.files[0];
    if (!f) return;
    const stored = await upload(f, "audio");
    da.refs.push(stored);
    const o = new Option("uploaded: " + stored.name, da.refs.length - 1);
    $("da-ref").add(o); $("da-ref").value = o.value;
  });
  $("da-extract").onclick = () => guarded("drawaudio", async () => {
    const ref = da.refs[+$("da-ref").value];
    if (!ref) throw new Error("pick or upload a reference audio first");
    const res = await api("/api/drawaudio/curve_from_audio", { json: { audio: ref.id, points: CURVE_POINTS } });
    da.curve.set(res.values);
  });
  $("da-generate").onclick = () => guarded("drawaudio", async () => {
    if (!da.video) throw new Error("pick or upload a video first");
    daSaveStage();
    const stages = da.stages.map((s, i) => {
      if (i === da.current) return { prompt: s.prompt, gain_db: s.gain_db, mask: da.mask.maskJson(), brush: da.mask.brushPng(), curve: s.curve };
      const m = s.mask && s.mask.keyframes.length ? { frames: s.mask.keyframes } : null;
      return { prompt: s.prompt, gain_db: s.gain_db, mask: m, brush: s.mask ? s.mask.brush : null, curve: s.curve };
    });
    const num = (id) => ($(id).value === "" ? null : +$(id).value);
    const body = { video: da.video.id, stages, steps: +$("da-steps").value, seed: +$("da-seed").value, cfg: $("da-cfg").value,
                   negative_prompt: $("da-negative").value || null, guidance_video: num("da-gv"), guidance_text: num("da-gt") };
    $("da-generate").disabled = true; $("da-cancel").disabled = false;
    $("da-results").hidden = true; $("da-stems").innerHTML = "";
    try {
      let job = await api("/api/drawaudio/generate", { json: body });
      da.job = job.id;
      job = await pollJob(job, jobUi("da"));
      if (job.status === "error") throw new Error(job.error);
      if (job.status === "done") daResults(job.result);
    } finally { $("da-generate").disabled = false; $("da-cancel").disabled = true; }
  });
  $("da-cancel").onclick = () => da.job && api(`/api/jobs/${da.job}/cancel`, { method: "POST" });
};

// ---------------- INTRA ----------------
const it = { image: null, result: null };
function itSetImage(file) { it.image = file; $("intra-image").src = file.url; }
pages_intra = async function () {
  modelBadge("intra");
  await guarded("intra", async () => {
    const imgs = await api("/api/intra/bundled");
    imgs.forEach((f, i) => $("intra-bundled").add(new Option(f.name, i)));
    $("intra-bundled").onchange = () => itSetImage(imgs[+$("intra-bundled").value]);
    if (imgs.length) itSetImage(imgs[0]);
  });
  $("intra-upload").onchange = (e) => guarded("intra", async () => {
    const f = e.target.files[0];
    if (!f) return;
    itSetImage(await upload(f, "image"));
  });
  $("intra-ground").onclick = () => guarded("intra", async () => {
    if (!it.image) throw new Error("pick or upload an image first");
    const actions = $("intra-actions").value.split(/[\n,]/).map((s) => s.trim()).filter(Boolean);
    if (!actions.length) throw new Error("type at least one action");
    $("intra-ground").disabled = true;
    try {
      const res = await api("/api/intra/ground", { json: { image: it.image.id, actions } });
      it.result = res.result;
      const grid = $("intra-overlays");
      grid.innerHTML = "";
      res.overlays.forEach((o) => {
        const fig = document.createElement("figure");
        fig.innerHTML = `<img class="intra-overlay" src="${o.url}" alt="${o.action}"><figcaption>${o.action}</figcaption>`;
        fig.querySelector("img").addEventListener("click", (e) => intraClick(e));
        grid.appendChild(fig);
      });
    } finally { $("intra-ground").disabled = false; }
  });
};
function intraClick(e) {
  const r = e.target.getBoundingClientRect();
  const x = (e.clientX - r.left) / r.width, y = (e.clientY - r.top) / r.height;
  guarded("intra", async () => {
    const res = await api(`/api/intra/score/${it.result}?x=${x.toFixed(4)}&y=${y.toFixed(4)}`);
    $("intra-pixel").textContent = `scores at pixel x=${res.col}, y=${res.row}`;
    const body = $("intra-scores").querySelector("tbody");
    body.innerHTML = "";
    res.scores.forEach((s) => { const tr = document.createElement("tr"); tr.innerHTML = `<td>${s.action}</td><td>${s.score.toFixed(3)}</td>`; body.appendChild(tr); });
    document.querySelectorAll("#intra-overlays figure").forEach((fig) => {
      let m = fig.querySelector(".marker");
      if (!m) { m = document.createElement("div"); m.className = "marker"; fig.appendChild(m); }
      m.style.left = (x * 224) + "px"; m.style.top = (y * 224) + "px";
    });
  });
}

// ---------------- SongCreator ----------------
const sc = { tasks: [], files: {}, span: null, job: null };
function scShowInputs() {
  const t = sc.tasks.find((x) => x.name === $("sc-task").value);
  if (!t) return;
  const wanted = new Set([...t.required, ...t.optional]);
  document.querySelectorAll(".sc-input").forEach((d) => { d.hidden = !wanted.has(d.dataset.input); });
  const opt = t.optional.length ? "; optional: " + t.optional.join(", ") : "";
  $("sc-needs").textContent = "needs: " + t.required.join(", ") + opt + " → outputs: " + t.outputs.join(", ");
}
pages_sc = async function () {
  modelBadge("songcreator");
  sc.wave = {
    vocals: new Widgets.WaveformView($("sc-wave-vocals"), (span) => scSpan(span)),
    accompaniment: new Widgets.WaveformView($("sc-wave-accompaniment"), (span) => scSpan(span)),
  };
  await guarded("songcreator", async () => {
    sc.tasks = await api("/api/songcreator/tasks");
    sc.tasks.forEach((t) => $("sc-task").add(new Option(t.name.replace(/_/g, " "), t.name)));
    $("sc-task").onchange = scShowInputs;
    scShowInputs();
  });
  ["vocals", "accompaniment", "vocal_prompt", "accompaniment_prompt"].forEach((name) => {
    $("sc-" + name).onchange = (e) => guarded("songcreator", async () => {
      const f = e.target.files[0];
      if (!f) return;
      sc.files[name] = null;
      const stored = await upload(f, "audio");
      sc.files[name] = stored;
      if (sc.wave[name]) sc.wave[name].setPeaks(await api(`/api/waveform/${stored.id}?n=560`));
    });
  });
  $("sc-generate").onclick = () => guarded("songcreator", async () => {
    const body = { task: $("sc-task").value, lyrics: $("sc-lyrics").value, seed: +$("sc-seed").value,
                   max_seconds: +$("sc-seconds").value, temperature: +$("sc-temp").value, span: sc.span };
    for (const [k, v] of Object.entries(sc.files)) if (v) body[k] = v.id;
    $("sc-generate").disabled = true; $("sc-cancel").disabled = false;
    $("sc-results").hidden = true; $("sc-outputs").innerHTML = "";
    try {
      let job = await api("/api/songcreator/generate", { json: body });
      sc.job = job.id;
      job = await pollJob(job, jobUi("sc"));
      if (job.status === "error") throw new Error(job.error);
      if (job.status === "done") scResults(job.result);
    } finally { $("sc-generate").disabled = false; $("sc-cancel").disabled = true; }
  });
  $("sc-cancel").onclick = () => sc.job && api(`/api/jobs/${sc.job}/cancel`, { method: "POST" });
};
function scSpan(span) {
  sc.span = span;
  $("sc-span").textContent = span ? `span: ${span[0].toFixed(2)}–${span[1].toFixed(2)} s` : "span: none (drag over a waveform to select the part to edit)";
}
function scResults(res) {
  $("sc-results").hidden = false;
  const box = $("sc-outputs");
  box.innerHTML = "";
  ["song", "vocals", "accompaniment"].forEach((k) => {
    if (!res[k]) return;
    const row = document.createElement("div");
    row.className = "output-row";
    row.innerHTML = `<b>${k}</b> (${res[k].duration.toFixed(2)} s) <audio id="sc-out-${k}" controls src="${res[k].url}"></audio> <a href="${res[k].url}?download=true" download>download ${k}.wav</a>`;
    if (sc.wave[k]) { // feed a generated stem back in, e.g. to edit a span of it
      const b = document.createElement("button");
      b.type = "button"; b.id = "sc-use-" + k; b.textContent = `use as ${k} input`;
      b.onclick = () => guarded("songcreator", async () => {
        sc.files[k] = res[k];
        $("sc-" + k).value = "";
        sc.wave[k].setPeaks(await api(`/api/waveform/${res[k].id}?n=560`));
      });
      row.appendChild(b);
    }
    box.appendChild(row);
  });
}

// ---------------- SaRA ----------------
const sa = { session: null, job: null };
function saLive(live) {
  if (!live || !live.session) return;
  Widgets.drawLines($("sara-loss"), [{ label: "training loss", color: "#ffb020", values: live.losses }], { xlabel: "step" });
  $("sara-step").textContent = `${live.step} / ${live.total_steps}`;
  const pct = (100 * live.trainable / live.unet_params).toFixed(2);
  $("sara-trainable").textContent = `${live.trainable.toLocaleString()} of ${live.unet_params.toLocaleString()} UNet weights (${pct}%)`;
  $("sara-memory").textContent = `${live.memory.rss_mb.toFixed(0)} MB / ${live.memory.optimizer_state_mb.toFixed(3)} MB` + (live.memory.cuda_peak_mb ? ` (GPU peak ${live.memory.cuda_peak_mb.toFixed(0)} MB)` : "");
}
async function saRun(startPromise) {
  $("sara-start").disabled = true; $("sara-stop").disabled = false; $("sara-resume").disabled = true;
  $("sara-compare").disabled = true; $("sara-delta").disabled = true;
  try {
    const res = await startPromise;
    sa.session = res.session; sa.job = res.job.id;
    const job = await pollJob(res.job, (j) => {
      jobUi("sara")(j); saLive(j.live);
      if (j.status === "cancelled") $("sara-status").textContent = `stopped at step ${j.live.step}: Resume continues from there`;
    }, 300);
    if (job.status === "error") throw new Error(job.error);
    const live = await api("/api/sara/session/" + sa.session);
    saLive(live);
    $("sara-resume").disabled = live.step >= live.total_steps;
  } finally {
    $("sara-start").disabled = false; $("sara-stop").disabled = true;
    $("sara-compare").disabled = !sa.session; $("sara-delta").disabled = !sa.session;
    saSaved();
  }
}
// Sessions saved on disk (this run's and earlier runs' with the same --work): open one to resume it.
async function saSaved() {
  const res = await api("/api/sara/sessions");
  const sel = $("sara-saved");
  sel.innerHTML = "";
  res.sessions.forEach((m) => sel.add(new Option(
    `${m.session}: ${m.base} on ${m.folder}, step ${m.step}/${m.total_steps}, ${new Date(m.saved * 1000).toLocaleString()}`, m.session)));
  $("sara-saved-row").hidden = res.sessions.length === 0;
}
async function saOpen(sid) {
  $("sara-status").textContent = "loading session " + sid + "…";
  const live = await api("/api/sara/session/" + sid);
  sa.session = sid; sa.job = null;
  saLive(live);
  $("sara-status").textContent = `session ${sid} at step ${live.step}` + (live.step < live.total_steps ? ": Resume continues from there" : " (finished)");
  $("sara-resume").disabled = live.step >= live.total_steps;
  $("sara-compare").disabled = false; $("sara-delta").disabled = false;
}
pages_sara = async function () {
  Widgets.drawLines($("sara-loss"), [], { empty: "the loss curve appears here while fine-tuning" });
  await guarded("sara", async () => {
    const o = await api("/api/sara/options");
    o.bases.forEach((b) => $("sara-base").add(new Option(b.name + (b.trained ? "" : " (untrained, random)"), b.name)));
    o.folders.forEach((f) => $("sara-folder").add(new Option(`${f.name} (${f.images} images)`, f.name)));
    const untrained = o.bases.every((b) => !b.trained);
    $("sara-model").textContent = untrained ? "base models: only the tiny random Stable Diffusion built at start-up — UNTRAINED: samples are noise-like; pass --models DIR with sara/<model> for a real one" : "base models from " + o.bases.map((b) => b.name).join(", ");
    $("sara-model").classList.toggle("untrained", untrained);
    await saSaved();
  });
  $("sara-open").onclick = () => guarded("sara", () => saOpen($("sara-saved").value));
  $("sara-start").onclick = () => guarded("sara", () => saRun(api("/api/sara/start", { json: {
    base: $("sara-base").value, folder: $("sara-folder").value, steps: +$("sara-steps").value,
    fraction: +$("sara-fraction").value, batch_size: +$("sara-batch").value,
    lr: $("sara-lr").value === "" ? null : +$("sara-lr").value, prefix: $("sara-prefix").value } })));
  $("sara-stop").onclick = () => sa.job && api(`/api/jobs/${sa.job}/cancel`, { method: "POST" });
  $("sara-resume").onclick = () => guarded("sara", () => saRun(api("/api/sara/resume/" + sa.session, { method: "POST" })));
  $("sara-compare").onclick = () => guarded("sara", async () => {
    const alphas = $("sara-alphas").value.split(",").map((s) => parseFloat(s)).filter((v) => Number.isFinite(v));
    $("sara-compare").disabled = true;
    try {
      const res = await api("/api/sara/compare", { json: { session: sa.session, prompt: $("sara-prompt").value, alphas, guidance: +$("sara-guidance").value } });
      const grid = $("sara-samples");
      grid.innerHTML = "";
      res.samples.forEach((s) => {
        const fig = document.createElement("figure");
        const label = s.alpha === 0 ? "α = 0 (before)" : `α = ${s.alpha}` + (s.alpha === 1 ? " (after)" : "");
        fig.innerHTML = `<img class="sara-sample" src="${s.url}" alt="${label}"><figcaption>${label}, step ${res.step}</figcaption>`;
        grid.appendChild(fig);
      });
    } finally { $("sara-compare").disabled = false; }
  });
  $("sara-delta").onclick = () => guarded("sara", async () => {
    const f = await api("/api/sara/delta/" + sa.session, { method: "POST" });
    const a = $("sara-dl-delta");
    a.href = f.url + "?download=true"; a.hidden = false; a.textContent = `download delta (.zip, ${(f.bytes / 1024).toFixed(1)} KiB, step ${f.step})`;
  });
};

var pages_da, pages_intra, pages_sc, pages_sara;
const pages = { drawaudio: () => pages_da(), intra: () => pages_intra(), songcreator: () => pages_sc(), sara: () => pages_sara() };
document.addEventListener("DOMContentLoaded", showPage);
