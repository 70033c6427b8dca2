// app.js - the fmnist demo page: gallery (the study's Figure 6), try it, models, data.
// Plain ES module, no build step, no third-party code.  Every URL is relative so the page
// works under a path prefix (e.g. /fmnist/ behind a reverse proxy).

const CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
  'Ankle boot'];
const PAGE = 30;
const SVGNS = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ DOM helpers

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'text') e.textContent = v;
    else if (k === 'style') e.style.cssText = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

const pct = (p, digits = 1) => (100 * p).toFixed(digits) + '%';
const fmtInt = (n) => Number(n).toLocaleString('en-US');

// ------------------------------------------------------------------ messages and API

const STATUS_TEXT = {
  400: 'bad request', 403: 'forbidden', 404: 'not found', 405: 'method not allowed',
  413: 'too large', 415: 'unsupported format', 422: 'invalid input', 429: 'too many requests',
  431: 'headers too large', 500: 'internal server error', 502: 'bad gateway', 503: 'service unavailable',
  504: 'gateway timeout',
};

class ApiError extends Error {
  constructor(message, status) {
    super(message);
    this.status = status;
  }
}

// Shows a readable message in the page's live region (errors by default).
function showMessage(text, kind = 'error') {
  const box = $('messages');
  const msg = el('div', { class: 'msg ' + kind },
    el('span', { class: 'msg-icon', 'aria-hidden': 'true', text: kind === 'error' ? '⚠' : 'ℹ' }),
    el('span', { class: 'msg-text', text }),
    el('button', { type: 'button', class: 'msg-close', 'aria-label': 'Dismiss message',
      onclick: () => msg.remove() }, '×'));
  box.append(msg);
  while (box.children.length > 4) box.firstElementChild.remove();
  return msg;
}

function reportError(what, err) {
  const text = err instanceof ApiError ? err.message : `${err && err.message ? err.message : err}`;
  showMessage(`${what}: ${text}`);
}

// fetch() that turns every failure into an ApiError with a readable message.
async function api(url, opts = {}) {
  let r;
  try {
    r = await fetch(url, opts);
  } catch (e) {
    throw new ApiError(`cannot reach the server (network error: ${e.message}). Is fmnist-serve running?`, 0);
  }
  if (!r.ok) {
    let detail = '';
    try {
      const t = await r.text();
      try { detail = JSON.parse(t).error || t; } catch { detail = t; }
    } catch { /* body unreadable: the status says enough */ }
    const name = STATUS_TEXT[r.status] || r.statusText || 'error';
    let hint = '';
    if (r.status === 413) hint = ' The file or request is larger than the server accepts.';
    if (r.status === 415) hint = ' Use a PNG, JPEG, BMP, GIF or PNM image.';
    throw new ApiError(`the server answered ${r.status} (${name}): ${String(detail).trim().slice(0, 400)}.${hint}`,
      r.status);
  }
  return r;
}

async function apiJSON(url, opts) {
  const r = await api(url, opts);
  try {
    return await r.json();
  } catch (e) {
    throw new ApiError(`the server's answer to ${url.split('?')[0]} is not valid JSON (${e.message})`, r.status);
  }
}

// Optional report: null when the server has none (404), errors otherwise.
async function optionalReport(name, as = 'json') {
  try {
    const r = await api('v1/reports/' + encodeURIComponent(name));
    return as === 'json' ? await r.json() : await r.text();
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

function classify(model, body, top = 10) {
  const q = new URLSearchParams({ model, top: String(top) });
  return apiJSON('v1/classify?' + q, body);
}

function jsonBody(instances, scale) {
  const o = { instances };
  if (scale) o.scale = scale;
  return { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(o) };
}

// ------------------------------------------------------------------ models

const state = { models: [], model: null, gallery: { offset: 0, random: false, seed: 0, samples: null }, seq: 0 };

function archSummary(arch) {
  if (!arch || !Array.isArray(arch.layers)) return '?';
  const parts = [];
  let dropout = 0;
  for (const L of arch.layers) {
    if (L.type === 'conv2d') parts.push(`conv${L.out} ${L.kernel}×${L.kernel}`);
    else if (L.type === 'maxpool2d') parts.push('pool');
    else if (L.type === 'linear') parts.push(L.out === 10 ? '10' : `dense${L.out}`);
    else if (L.type === 'dropout') dropout = L.p;
  }
  const input = Array.isArray(arch.input) ? arch.input.reduce((a, b) => a * b, 1) : 784;
  const first = arch.layers[0] && arch.layers[0].type === 'conv2d' ? '28×28' : String(input);
  return [first, ...parts].join(' → ') + (dropout ? `, dropout ${dropout}` : '');
}

async function loadModels() {
  const d = await apiJSON('v1/models');
  state.models = d.models || [];
  const sel = $('model-select');
  sel.replaceChildren(...state.models.map((m) =>
    el('option', { value: m.name, text: m.name + (m.default ? ' (default)' : '') })));
  state.model = d.default || (state.models[0] && state.models[0].name);
  sel.value = state.model;
  sel.disabled = state.models.length === 0;
  const cm = $('cm-select');
  cm.replaceChildren(...state.models.map((m) =>
    el('option', { value: m.name, text: m.name + (m.default ? ' (default)' : '') })));
  cm.value = state.model;
  renderModelTable();
}

function renderModelTable() {
  const body = $('models-table').tBodies[0];
  body.replaceChildren(...state.models.map((m) => {
    const t = m.training || {};
    const opt = t.optimizer ? `${t.optimizer === 'adam' ? 'Adam' : 'SGD'} lr ${t.learning_rate}, batch ${t.batch_size}` : '—';
    const ep = t.epochs_run ? `${t.epochs_run}${t.best_epoch ? ` (best ${t.best_epoch})` : ''}` : '—';
    return el('tr', {},
      el('th', { scope: 'row' }, m.name, m.default ? el('span', { class: 'badge', text: 'default' }) : null),
      el('td', { text: archSummary(m.architecture) }),
      el('td', { class: 'num', text: fmtInt(m.parameters) }),
      el('td', { class: 'num', text: typeof m.test_accuracy === 'number' ? pct(m.test_accuracy, 2) : '—' }),
      el('td', { text: opt }),
      el('td', { class: 'num', text: ep }));
  }));
}

// ------------------------------------------------------------------ gallery

function setGalleryBusy(busy) {
  for (const id of ['gallery-prev', 'gallery-next', 'gallery-random', 'model-select']) $(id).disabled = busy;
  if (!busy) $('gallery-prev').disabled = state.gallery.random || state.gallery.offset === 0;
  $('gallery-grid').setAttribute('aria-busy', busy ? 'true' : 'false');
}

async function loadGallery(refetch = true) {
  const g = state.gallery;
  const seq = ++state.seq;
  setGalleryBusy(true);
  $('gallery-counter').textContent = 'Classifying…';
  try {
    if (refetch || !g.samples) {
      const q = g.random ? `random=1&seed=${g.seed}&count=${PAGE}` : `offset=${g.offset}&count=${PAGE}`;
      const d = await apiJSON('v1/samples?' + q);
      if (seq !== state.seq) return;
      g.samples = d.samples || [];
      g.total = d.total;
    }
    const model = state.model;
    const res = await classify(model, jsonBody(g.samples.map((s) => s.pixels), 255), 1);
    if (seq !== state.seq) return;
    renderGallery(g.samples, res.predictions || [], res.model || model);
  } catch (e) {
    if (seq !== state.seq) return;
    $('gallery-counter').textContent = 'The gallery could not be loaded.';
    reportError('Gallery', e);
  } finally {
    if (seq === state.seq) setGalleryBusy(false);
  }
}

function renderGallery(samples, preds, model) {
  let right = 0;
  const tiles = samples.map((s, i) => {
    const p = preds[i] || {};
    const ok = p.class_id === s.class_id;
    if (ok) right++;
    return el('figure', { class: 'tile ' + (ok ? 'right' : 'wrong'), 'data-index': s.index,
      'data-true': s.class_id, 'data-pred': p.class_id, 'data-correct': ok ? 'true' : 'false' },
    el('img', { src: s.png, width: 56, height: 56, alt: `Test image ${s.index}: ${s.label}` }),
    el('figcaption', {},
      el('span', { class: 'mark', 'aria-hidden': 'true', text: ok ? '✓' : '✗' }),
      el('span', { class: 'caption-text', text: `${p.label} (${s.label})` }),
      el('span', { class: 'sr-only', text: ok ? ' — correct' : ' — wrong' })));
  });
  $('gallery-grid').replaceChildren(...tiles);
  const g = state.gallery;
  const where = g.random ? `random test images (seed ${g.seed})`
    : `test images ${g.offset}–${g.offset + samples.length - 1} of ${fmtInt(g.total || 10000)}`;
  $('gallery-counter').replaceChildren(
    el('strong', { text: `${right} of ${samples.length} correct` }), ` — ${model}, ${where}`);
}

function initGallery() {
  $('model-select').addEventListener('change', (e) => {
    state.model = e.target.value;
    loadGallery(false);
  });
  $('gallery-next').addEventListener('click', () => {
    const g = state.gallery;
    g.offset = g.random ? 0 : (g.offset + PAGE >= (g.total || 10000) ? 0 : g.offset + PAGE);
    g.random = false;
    loadGallery();
  });
  $('gallery-prev').addEventListener('click', () => {
    const g = state.gallery;
    g.offset = Math.max(0, g.offset - PAGE);
    g.random = false;
    loadGallery();
  });
  $('gallery-random').addEventListener('click', () => {
    const g = state.gallery;
    g.random = true;
    g.seed = Math.floor(Math.random() * 1e9);
    loadGallery();
  });
}

// ------------------------------------------------------------------ try it: results

function renderResult(pred, source, seenSrc, prepText) {
  $('result-empty').hidden = true;
  $('result-body').hidden = false;
  $('result-label').textContent = pred.label;
  $('result-conf').textContent = pct(pred.confidence);
  $('result-source').textContent = source;
  const img = $('result-input');
  if (seenSrc) {
    img.src = seenSrc;
    img.hidden = false;
  } else {
    img.hidden = true;
  }
  $('result-prep').textContent = prepText || '';
  const probs = pred.probabilities || {};
  const rows = CLASSES.map((name) => {
    const p = Number(probs[name] || 0);
    return el('div', { class: 'bar-row' + (name === pred.label ? ' top' : ''), role: 'listitem',
      'aria-label': `${name}: ${pct(p)}` },
    el('span', { class: 'bar-name', text: name }),
    el('span', { class: 'bar-track' }, el('span', { class: 'bar', style: `width:${(100 * p).toFixed(2)}%` })),
    el('span', { class: 'bar-value', text: pct(p) }));
  });
  $('result-bars').replaceChildren(...rows);
}

function prepDescription(pp) {
  if (!pp) return '';
  const did = [];
  if (pp.trimmed) did.push('border trimmed');
  if (pp.resized) did.push('scaled to 28 px');
  if (pp.inverted) did.push('inverted (light background)');
  return `${String(pp.format).toUpperCase()} ${pp.width}×${pp.height}, ${pp.channels} channel${pp.channels === 1 ? '' : 's'}` +
    `${pp.has_alpha ? ' + alpha' : ''}; ${did.length ? did.join(', ') : 'used as is'}. Above: the 28×28 input the model saw.`;
}

async function classifyFile(file) {
  if (!file) return;
  const model = state.model;
  $('result').setAttribute('aria-busy', 'true');
  try {
    const res = await classify(model, { method: 'POST', body: file,
      headers: { 'Content-Type': file.type || 'application/octet-stream' } });
    const pred = res.predictions[0];
    const pp = pred.preprocessing;
    renderResult(pred, `${file.name} (${fmtInt(file.size)} bytes), model ${res.model}`, pp && pp.input_png,
      prepDescription(pp));
  } catch (e) {
    reportError(`Classifying ${file.name}`, e);
  } finally {
    $('result').setAttribute('aria-busy', 'false');
  }
}

function initUpload() {
  const input = $('file-input');
  const zone = $('drop-zone');
  input.addEventListener('change', () => {
    classifyFile(input.files[0]);
    input.value = '';
  });
  zone.addEventListener('dragover', (e) => {
    e.preventDefault();
    zone.classList.add('over');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('over');
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) classifyFile(f);
    else showMessage('Nothing to classify: drop an image file.');
  });
  // Dropping outside the zone must not navigate away from the page.
  window.addEventListener('dragover', (e) => e.preventDefault());
  window.addEventListener('drop', (e) => e.preventDefault());
}

// ------------------------------------------------------------------ try it: drawing

const draw = { buf: new Float32Array(784), tool: 'pen', down: false, last: null, cursor: [14, 14], dirty: false };

function paintAt(x, y) {
  const r = draw.tool === 'pen' ? 1.6 : 2.2;
  for (let j = Math.max(0, Math.floor(y - r - 1)); j <= Math.min(27, Math.ceil(y + r + 1)); j++) {
    for (let i = Math.max(0, Math.floor(x - r - 1)); i <= Math.min(27, Math.ceil(x + r + 1)); i++) {
      const d = Math.hypot(i + 0.5 - x, j + 0.5 - y);
      const v = Math.max(0, Math.min(1, (r + 0.5 - d)));
      if (v <= 0) continue;
      const k = j * 28 + i;
      draw.buf[k] = draw.tool === 'pen' ? Math.max(draw.buf[k], v) : Math.min(draw.buf[k], 1 - v);
    }
  }
  draw.dirty = true;
}

function strokeTo(x, y) {
  const [px, py] = draw.last || [x, y];
  const steps = Math.max(1, Math.ceil(Math.hypot(x - px, y - py) / 0.5));
  for (let s = 1; s <= steps; s++) paintAt(px + (x - px) * s / steps, py + (y - py) * s / steps);
  draw.last = [x, y];
  renderCanvas();
}

function renderCanvas() {
  const c = $('draw-canvas');
  const ctx = c.getContext('2d');
  const img = ctx.createImageData(28, 28);
  for (let k = 0; k < 784; k++) {
    const v = Math.round(255 * draw.buf[k]);
    img.data[4 * k] = img.data[4 * k + 1] = img.data[4 * k + 2] = v;
    img.data[4 * k + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function canvasPoint(e) {
  const c = $('draw-canvas');
  const r = c.getBoundingClientRect();
  return [(e.clientX - r.left) / r.width * 28, (e.clientY - r.top) / r.height * 28];
}

async function classifyDrawing() {
  if (!draw.buf.some((v) => v > 0)) {
    showMessage('The canvas is empty: draw something first.', 'info');
    return;
  }
  const model = state.model;
  const values = Array.from(draw.buf, (v) => Math.round(v * 1000) / 1000);
  try {
    const res = await classify(model, jsonBody([values]));
    renderResult(res.predictions[0], `your drawing (784 values sent as JSON), model ${res.model}`,
      $('draw-canvas').toDataURL('image/png'), 'Above: the 28×28 input the model saw (your drawing, unchanged).');
  } catch (e) {
    reportError('Classifying the drawing', e);
  }
}

function setTool(tool) {
  draw.tool = tool;
  $('tool-pen').setAttribute('aria-pressed', String(tool === 'pen'));
  $('tool-eraser').setAttribute('aria-pressed', String(tool === 'eraser'));
  $('draw-canvas').dataset.tool = tool;
}

function initDrawing() {
  const c = $('draw-canvas');
  c.tabIndex = 0;
  c.setAttribute('aria-label', '28 by 28 drawing canvas, white on black. With the keyboard: arrow keys draw ' +
    'with the current tool, Enter classifies.');
  renderCanvas();
  c.addEventListener('pointerdown', (e) => {
    e.preventDefault();
    c.setPointerCapture(e.pointerId);
    draw.down = true;
    draw.last = null;
    strokeTo(...canvasPoint(e));
  });
  c.addEventListener('pointermove', (e) => {
    if (draw.down) strokeTo(...canvasPoint(e));
  });
  const end = () => {
    if (!draw.down) return;
    draw.down = false;
    draw.last = null;
    classifyDrawing();
  };
  c.addEventListener('pointerup', end);
  c.addEventListener('pointercancel', end);
  c.addEventListener('keydown', (e) => {
    const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };
    if (moves[e.key]) {
      e.preventDefault();
      const [dx, dy] = moves[e.key];
      draw.last = [draw.cursor[0] + 0.5, draw.cursor[1] + 0.5];
      draw.cursor = [Math.min(27, Math.max(0, draw.cursor[0] + dx)), Math.min(27, Math.max(0, draw.cursor[1] + dy))];
      strokeTo(draw.cursor[0] + 0.5, draw.cursor[1] + 0.5);
      draw.last = null;
    } else if (e.key === 'Enter') {
      e.preventDefault();
      classifyDrawing();
    }
  });
  $('tool-pen').addEventListener('click', () => setTool('pen'));
  $('tool-eraser').addEventListener('click', () => setTool('eraser'));
  $('draw-clear').addEventListener('click', () => {
    draw.buf.fill(0);
    renderCanvas();
  });
  $('draw-classify').addEventListener('click', classifyDrawing);
  setTool('pen');
}

// ------------------------------------------------------------------ charts (plain SVG)

function niceTicks(lo, hi, n = 5) {
  if (!(hi > lo)) hi = lo + 1;
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
  return { ticks: out, lo: Math.floor(lo / step) * step, hi: Math.ceil(hi / step) * step };
}

// series: [{name, values: [y per x], cls}]; xs: x values; marker: x of a vertical line.
function lineChart({ title, xs, series, yFormat = (v) => String(v), marker, markerLabel }) {
  const W = 360, H = 220, L = 46, R = 10, T = 26, B = 34;
  const all = series.flatMap((s) => s.values).filter((v) => Number.isFinite(v));
  const yt = niceTicks(Math.min(...all), Math.max(...all));
  const x0 = xs[0], x1 = xs[xs.length - 1] === x0 ? x0 + 1 : xs[xs.length - 1];
  const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
  const sy = (y) => T + (1 - (y - yt.lo) / (yt.hi - yt.lo)) * (H - T - B);
  const s = svg('svg', { viewBox: `0 0 ${W} ${H}`, class: 'chart', role: 'img',
    'aria-label': `${title}: ${series.map((se) => `${se.name} from ${yFormat(se.values[0])} to ` +
      `${yFormat(se.values[se.values.length - 1])}`).join('; ')} over ${xs.length} epochs` });
  s.append(svg('text', { x: L, y: 16, class: 'chart-title' }, title));
  for (const v of yt.ticks) {
    s.append(svg('line', { x1: L, x2: W - R, y1: sy(v), y2: sy(v), class: 'grid' }));
    s.append(svg('text', { x: L - 5, y: sy(v) + 4, class: 'tick', 'text-anchor': 'end' }, yFormat(v)));
  }
  const xt = niceTicks(x0, x1, 6);
  for (const v of xt.ticks) {
    if (v < x0 || v > x1) continue;
    s.append(svg('text', { x: sx(v), y: H - B + 15, class: 'tick', 'text-anchor': 'middle' }, String(v)));
  }
  s.append(svg('text', { x: (L + W - R) / 2, y: H - 4, class: 'axis-label', 'text-anchor': 'middle' }, 'epoch'));
  s.append(svg('line', { x1: L, x2: L, y1: T, y2: H - B, class: 'axis' }));
  s.append(svg('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, class: 'axis' }));
  if (marker !== undefined && marker >= x0 && marker <= x1) {
    s.append(svg('line', { x1: sx(marker), x2: sx(marker), y1: T, y2: H - B, class: 'marker' }));
    if (markerLabel) s.append(svg('text', { x: sx(marker) + 3, y: T + 10, class: 'tick' }, markerLabel));
  }
  series.forEach((se) => {
    const d = se.values.map((v, i) => `${i ? 'L' : 'M'}${sx(xs[i]).toFixed(1)},${sy(v).toFixed(1)}`).join('');
    s.append(svg('path', { d, class: 'line ' + se.cls }));
  });
  // Legend, top right.
  let lx = W - R - 150;
  series.forEach((se) => {
    s.append(svg('line', { x1: lx, x2: lx + 18, y1: 12, y2: 12, class: 'line ' + se.cls }));
    s.append(svg('text', { x: lx + 22, y: 16, class: 'tick' }, se.name));
    lx += 75;
  });
  return s;
}

// ------------------------------------------------------------------ models: curves, confusion, grids

async function loadCurves() {
  const box = $('curves');
  box.replaceChildren();
  for (const m of state.models) {
    const card = el('figure', { class: 'curve-card' });
    box.append(card);
    try {
      const h = await optionalReport(`${m.name}.history.json`);
      if (!h || !Array.isArray(h.history) || h.history.length === 0) {
        card.append(el('figcaption', { text: `${m.name}: no training history on the server.` }));
        continue;
      }
      const xs = h.history.map((e) => e.epoch);
      const best = h.best_epoch;
      card.append(
        el('figcaption', {}, el('strong', { text: m.name }),
          ` — ${xs.length} epochs${best ? `, best weights from epoch ${best}` : ''}`),
        el('div', { class: 'chart-pair' },
          lineChart({ title: `${m.name} loss`, xs, marker: best, markerLabel: best ? 'best' : '',
            yFormat: (v) => v.toFixed(2),
            series: [{ name: 'train', values: h.history.map((e) => e.loss), cls: 'train' },
              { name: 'validation', values: h.history.map((e) => e.val_loss), cls: 'val' }] }),
          lineChart({ title: `${m.name} accuracy`, xs, marker: best, markerLabel: best ? 'best' : '',
            yFormat: (v) => pct(v, 0),
            series: [{ name: 'train', values: h.history.map((e) => e.accuracy), cls: 'train' },
              { name: 'validation', values: h.history.map((e) => e.val_accuracy), cls: 'val' }] })));
    } catch (e) {
      card.append(el('figcaption', { text: `${m.name}: the training history could not be loaded.` }));
      reportError(`Training curves of ${m.name}`, e);
    }
  }
}

async function loadConfusion() {
  const name = $('cm-select').value;
  const box = $('confusion');
  if (!name) return;
  try {
    const ev = await optionalReport(`${name}.eval.json`);
    if (!ev || !Array.isArray(ev.confusion)) {
      box.replaceChildren(el('p', { text: `No evaluation report for ${name} on the server.` }));
      return;
    }
    const names = ev.classes || CLASSES;
    const max = Math.max(...ev.confusion.flat());
    const head = el('tr', {}, el('th', { scope: 'col', text: 'true ↓ / predicted →' }),
      names.map((n) => el('th', { scope: 'col', text: n })), el('th', { scope: 'col', text: 'recall' }));
    const rows = ev.confusion.map((row, i) => {
      const total = row.reduce((a, b) => a + b, 0);
      return el('tr', {}, el('th', { scope: 'row', text: names[i] }),
        row.map((v, j) => {
          const a = v / max;
          return el('td', { class: 'num cm' + (i === j ? ' diag' : ''),
            style: `background: rgba(31, 95, 191, ${(a ** 0.5 * 0.9).toFixed(3)}); color: ${a > 0.3 ? '#fff' : 'inherit'}`,
            text: String(v) });
        }),
        el('td', { class: 'num', text: total ? pct(row[i] / total) : '—' }));
    });
    box.replaceChildren(el('table', { class: 'confusion' },
      el('caption', { text: `${name}: ${fmtInt(ev.correct)} of ${fmtInt(ev.examples)} test images right ` +
        `(accuracy ${pct(ev.accuracy, 2)}, loss ${Number(ev.loss).toFixed(4)})` }),
      el('thead', {}, head), el('tbody', {}, rows)));
  } catch (e) {
    box.replaceChildren(el('p', { text: `The confusion matrix of ${name} could not be loaded.` }));
    reportError(`Confusion matrix of ${name}`, e);
  }
}

function parseCSV(text) {
  return text.trim().split(/\r?\n/).map((line) => line.split(',').map((c) => c.trim()));
}

// A grid-search Markdown report: paragraphs as text, the pipe table as a table.
function renderGridMarkdown(md) {
  const out = [];
  const lines = md.split(/\r?\n/);
  let table = null;
  for (const line of lines) {
    if (/^\s*\|/.test(line)) {
      const cells = line.trim().replace(/^\||\|$/g, '').split('|').map((c) => c.trim());
      if (cells.every((c) => /^:?-+:?$/.test(c))) continue;
      if (!table) table = [];
      table.push(cells);
      continue;
    }
    if (table) {
      out.push(gridTable(table));
      table = null;
    }
    const t = line.trim();
    if (!t || t.startsWith('#')) continue;
    out.push(el('p', { class: 'sub', text: t.replace(/\*\*|`/g, '') }));
  }
  if (table) out.push(gridTable(table));
  return out;
}

function gridTable(rows) {
  const [head, ...body] = rows;
  return el('div', { class: 'table-wrap' }, el('table', { class: 'grid-table' },
    el('thead', {}, el('tr', {}, head.map((h) => el('th', { scope: 'col', text: h.replace(/_/g, ' ') })))),
    el('tbody', {}, body.map((r) => el('tr', { class: /selected/i.test(r[0]) ? 'selected' : null },
      r.map((c, i) => el(i === 0 ? 'th' : 'td', i === 0 ? { scope: 'row', text: c } : { class: 'num', text: c })))))));
}

async function loadGrids() {
  const box = $('grids');
  box.replaceChildren();
  // `fmnist-train grid` searches the study's MLPs only (grid-mlp2.*, grid-mlp3.*)
  const names = ['mlp2', 'mlp3'];
  let found = 0;
  for (const n of names) {
    try {
      const md = await optionalReport(`grid-${n}.md`, 'text');
      const csv = md === null ? await optionalReport(`grid-${n}.csv`, 'text') : null;
      if (md === null && csv === null) continue;
      found++;
      box.append(el('h4', { text: `Grid search: ${n}` }),
        ...(md !== null ? renderGridMarkdown(md) : [gridTable(parseCSV(csv))]));
    } catch (e) {
      reportError(`Grid search of ${n}`, e);
    }
  }
  if (!found) box.append(el('p', { text: 'No grid-search report on the server.' }));
}

// ------------------------------------------------------------------ data

async function loadData() {
  const box = $('class-dist');
  let d;
  try {
    d = await apiJSON('v1/reports/eda.json');
  } catch (e) {
    box.replaceChildren(el('p', { text: 'The data overview could not be loaded.' }));
    reportError('Data overview', e);
    return;
  }
  const names = d.classes || CLASSES;
  const maxTrain = Math.max(...names.map((n) => d.train.classes[n] || 0));
  const maxTest = Math.max(...names.map((n) => d.test.classes[n] || 0));
  const cell = (v, max, cls) => el('td', { class: 'dist' },
    el('span', { class: 'dist-bar ' + cls, style: `width:${(100 * v / max).toFixed(1)}%` }),
    el('span', { class: 'dist-num', text: fmtInt(v) }));
  box.replaceChildren(el('div', { class: 'table-wrap' }, el('table', { class: 'dist-table' },
    el('caption', { text: `Class distribution: ${fmtInt(d.train.count)} training and ${fmtInt(d.test.count)} test ` +
      `images of ${d.train.shape.join('×')} pixels; ${d.balanced ? 'every class equally often' : 'unbalanced'}.` }),
    el('thead', {}, el('tr', {}, el('th', { scope: 'col', text: 'Class' }), el('th', { scope: 'col', text: 'Train' }),
      el('th', { scope: 'col', text: 'Test' }))),
    el('tbody', {}, names.map((n, i) => el('tr', {}, el('th', { scope: 'row', text: `${i} ${n}` }),
      cell(d.train.classes[n] || 0, maxTrain, 'train'), cell(d.test.classes[n] || 0, maxTest, 'test')))))),
  el('p', { class: 'sub', text: `Pixels 0–255: train mean ${d.train.pixel.mean.toFixed(1)}, std ` +
    `${d.train.pixel.std.toFixed(1)}; test mean ${d.test.pixel.mean.toFixed(1)}, std ${d.test.pixel.std.toFixed(1)}.` }));
}

// ------------------------------------------------------------------ start

async function main() {
  initGallery();
  initUpload();
  initDrawing();
  $('cm-select').addEventListener('change', loadConfusion);
  $('eda-img').addEventListener('error', () => showMessage('The sample grid image (v1/reports/eda-samples.png) could not be loaded.'));
  loadData();
  try {
    await loadModels();
  } catch (e) {
    $('gallery-counter').textContent = 'No models: the gallery needs the server.';
    reportError('Loading the models', e);
    return;
  }
  await loadGallery();
  await Promise.all([loadCurves(), loadConfusion(), loadGrids()]);
  document.body.dataset.ready = 'true';
}

main();
