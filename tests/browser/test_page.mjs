// test_page.mjs - the demo page (static/) in a real headless Chromium against the real fmnist-serve.
//
// Starts fmnist-serve on a loopback port (--port 0, the port read from its start-up line) with the
// repository's static/ directory, drives Debian's /usr/bin/chromium with playwright-core and checks
// what a visitor sees: the gallery (30 captioned test images, blue exactly where the API's own
// prediction equals the true label), model switching, uploading a PNG, drawing on the canvas, the
// models and data sections, the phone-width layout, the page under a path prefix, and readable
// messages for 415, 413 and a server that is down.  Full-page screenshots go to tests/artifacts/.
//
// Environment: FMNIST_SERVE (the binary), FMNIST_WEIGHTS_DIR (default weights/), FMNIST_CHROMIUM
// (default /usr/bin/chromium), FMNIST_DATA (passed to the server).  Prints "N passed, M failed";
// exits 1 when anything failed or a prerequisite is missing (never skips silently).
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import zlib from 'node:zlib';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const ART = path.join(ROOT, 'tests', 'artifacts');
const CHROMIUM = process.env.FMNIST_CHROMIUM || '/usr/bin/chromium';
const WEIGHTS = process.env.FMNIST_WEIGHTS_DIR || path.join(ROOT, 'weights');
const STATIC = path.join(ROOT, 'static');
const CLASSES = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag',
  'Ankle boot'];
const T = 30000; // ms: the machine may be busy (training runs beside the tests)

function die(msg) {
  console.error(`browser test: ${msg}`);
  console.log('0 passed, 1 failed');
  process.exit(1);
}

function findServe() {
  if (process.env.FMNIST_SERVE) return process.env.FMNIST_SERVE;
  if (process.argv[2]) return process.argv[2];
  for (const c of ['build/server/fmnist-serve', 'build-page/server/fmnist-serve']) {
    const p = path.join(ROOT, c);
    if (fs.existsSync(p)) return p;
  }
  return die('cannot find fmnist-serve: set FMNIST_SERVE');
}

// ------------------------------------------------------------------ PNG (8-bit grey), no dependencies

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
function pngGray(w, h, px) {
  const raw = Buffer.alloc(h * (w + 1));
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) raw[y * (w + 1) + 1 + x] = px[y * w + x];
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(td));
    return Buffer.concat([len, td, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr[8] = 8; // bit depth; colour type 0 (grey), no interlace
  return Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(raw)), chunk('IEND', Buffer.alloc(0))]);
}
// Nearest-neighbour upscale of a 28x28 image by k (the server has to scale it back down).
function upscale(px, k) {
  const out = new Uint8Array(28 * k * 28 * k);
  for (let y = 0; y < 28 * k; y++) for (let x = 0; x < 28 * k; x++) out[y * 28 * k + x] = px[(y / k | 0) * 28 + (x / k | 0)];
  return out;
}

// ------------------------------------------------------------------ the server

function startServer(bin) {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('FMNIST_') || k === 'FMNIST_DATA') env[k] = v;
  const proc = spawn(bin, ['--port', '0', '--host', '127.0.0.1', '--weights', WEIGHTS, '--static', STATIC],
    { env, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines = [];
  return new Promise((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => finish(new Error('no start-up line within 30 s')), 30000);
    function finish(err, port) {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) {
        proc.kill('SIGKILL');
        reject(new Error(`fmnist-serve did not start: ${err.message}\n${lines.slice(-20).join('\n')}`));
      } else {
        resolve({ proc, port, lines, base: `http://127.0.0.1:${port}/` });
      }
    }
    let buf = '';
    const onData = (d) => {
      buf += d.toString('utf8');
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        lines.push(line);
        const m = /listening on http:\/\/[^ ]*:(\d+)\//.exec(line);
        if (m) finish(null, Number(m[1]));
      }
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
    proc.on('exit', (code, sig) => finish(new Error(`exited (${code ?? sig})`)));
  });
}

function stopServer(s) {
  return new Promise((resolve) => {
    if (s.proc.exitCode !== null || s.proc.signalCode !== null) return resolve();
    const t = setTimeout(() => s.proc.kill('SIGKILL'), 20000);
    s.proc.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    s.proc.kill('SIGTERM');
  });
}

// ------------------------------------------------------------------ checks

let passed = 0;
let failed = 0;
let page = null;

function assert(cond, msg) {
  if (!cond) throw new Error(msg);
}

async function check(name, fn) {
  try {
    await fn();
    passed++;
    console.log(`ok   ${name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: ${e && e.stack ? e.stack.split('\n').slice(0, 3).join(' | ') : e}`);
    if (page) await page.screenshot({ path: path.join(ART, `fail-${name.replace(/[^a-z0-9]+/gi, '-')}.png`), fullPage: true }).catch(() => {});
  }
}

// Blue / red as the page paints them: judged from the rendered colour, not from class names.
function colourOf(rgb) {
  const m = /rgba?\((\d+),\s*(\d+),\s*(\d+)/.exec(rgb);
  if (!m) return 'unknown';
  const [r, , b] = [Number(m[1]), Number(m[2]), Number(m[3])];
  if (b > r + 60) return 'blue';
  if (r > b + 60) return 'red';
  return 'other';
}

async function apiJSON(base, p, opts) {
  const r = await fetch(base + p, opts);
  const text = await r.text();
  if (!r.ok) throw new Error(`${p}: ${r.status} ${text.slice(0, 200)}`);
  return JSON.parse(text);
}

// What the gallery shows: one record per tile.
async function galleryTiles() {
  return page.$$eval('#gallery-grid figure.tile', (tiles) => tiles.map((t) => {
    const img = t.querySelector('img');
    const cap = t.querySelector('figcaption');
    return { index: Number(t.dataset.index), pred: Number(t.dataset.pred), alt: img.alt, loaded: img.complete && img.naturalWidth,
      caption: cap.textContent, visible: cap.querySelector('.caption-text').textContent,
      mark: cap.querySelector('.mark').textContent, colour: getComputedStyle(cap).color };
  }));
}

// Checks the shown gallery against the API's own predictions (same model, same images).
async function verifyGallery(base, model, offset) {
  const s = await apiJSON(base, `v1/samples?offset=${offset}&count=30`);
  const res = await apiJSON(base, `v1/classify?model=${encodeURIComponent(model)}&top=1`, {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ instances: s.samples.map((x) => x.pixels), scale: 255 }) });
  assert(res.model === model, `API answered for ${res.model}, asked ${model}`);
  const tiles = await galleryTiles();
  assert(tiles.length === 30, `${tiles.length} tiles, want 30`);
  let right = 0;
  tiles.forEach((t, i) => {
    const sample = s.samples[i];
    const p = res.predictions[i];
    const ok = p.class_id === sample.class_id;
    if (ok) right++;
    assert(t.index === sample.index, `tile ${i} shows test image ${t.index}, want ${sample.index}`);
    assert(t.visible === `${p.label} (${sample.label})`,
      `tile ${i} caption "${t.visible}", API says "${p.label} (${sample.label})"`);
    const c = colourOf(t.colour);
    assert(c === (ok ? 'blue' : 'red'), `tile ${i} (${t.visible}) is ${c} (${t.colour}), want ${ok ? 'blue' : 'red'}`);
    assert(t.mark === (ok ? '✓' : '✗'), `tile ${i}: mark ${t.mark}`);
  });
  const counter = await page.textContent('#gallery-counter');
  assert(counter.includes(`${right} of 30 correct`), `counter "${counter}", want "${right} of 30 correct"`);
  return { right, samples: s.samples, predictions: res.predictions };
}

async function waitGallery(first) {
  await page.waitForFunction((idx) => {
    const t = document.querySelectorAll('#gallery-grid figure.tile');
    return t.length === 30 && Number(t[0].dataset.index) === idx &&
      document.getElementById('gallery-grid').getAttribute('aria-busy') === 'false';
  }, first, { timeout: T });
}

async function lastMessage() {
  return page.$$eval('#messages .msg-text', (m) => m.map((x) => x.textContent).join(' || '));
}

async function waitMessage(re, what) {
  try {
    await page.waitForFunction((src) => [...document.querySelectorAll('#messages .msg.error .msg-text')]
      .some((m) => new RegExp(src).test(m.textContent) && m.offsetParent !== null), re.source, { timeout: T });
  } catch {
    throw new Error(`${what}: no visible message matching ${re}; messages: "${await lastMessage()}"`);
  }
}

async function main() {
  if (!fs.existsSync(CHROMIUM)) die(`${CHROMIUM} is missing: install Debian's chromium (tools/install-deps.sh test)`);
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch (e) {
    die(`playwright-core is not installed (${e.message.split('\n')[0]}): run "npm ci" in ${ROOT}`);
  }
  fs.mkdirSync(ART, { recursive: true });
  for (const f of fs.readdirSync(ART)) if (f.startsWith('fail-')) fs.rmSync(path.join(ART, f)); // from an earlier run
  const bin = findServe();
  let server;
  try {
    server = await startServer(bin);
  } catch (e) {
    die(e.message);
  }
  const base = server.base;
  console.log(`# fmnist-serve on ${base}, chromium ${CHROMIUM}`);
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true,
    args: ['--no-sandbox', '--disable-background-networking'] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  page.setDefaultTimeout(T);
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  const classifyRequests = [];
  page.on('request', (r) => {
    if (r.url().includes('/v1/classify')) classifyRequests.push(r);
  });
  const models = await apiJSON(base, 'v1/models');
  const defaultModel = models.default;
  let first = null;

  try {
    await check('page loads and the gallery shows 30 captioned test images', async () => {
      await page.goto(base, { waitUntil: 'load' });
      await waitGallery(0);
      const tiles = await galleryTiles();
      assert(tiles.length === 30, `${tiles.length} tiles`);
      tiles.forEach((t, i) => {
        assert(t.index === i, `tile ${i} is test image ${t.index}`);
        assert(/^Test image \d+: \S/.test(t.alt), `tile ${i} alt "${t.alt}"`);
        assert(t.loaded === 28, `tile ${i} image not loaded (naturalWidth ${t.loaded})`);
        assert(/^[✓✗] ?\S.* \(\S.*\)/.test(t.caption), `tile ${i} caption "${t.caption}"`);
      });
      const gallerySection = await page.$('#gallery');
      await gallerySection.screenshot({ path: path.join(ART, 'gallery.png') });
    });

    await check('the gallery makes one batch classify request with the default model', async () => {
      const reqs = classifyRequests.filter((r) => r.method() === 'POST');
      assert(reqs.length === 1, `${reqs.length} classify requests for 30 images, want 1`);
      const u = new URL(reqs[0].url());
      assert(u.searchParams.get('model') === defaultModel, `model=${u.searchParams.get('model')}, want ${defaultModel}`);
      assert(JSON.parse(reqs[0].postData()).instances.length === 30, 'the request does not carry 30 instances');
    });

    await check('caption colours are blue exactly where the API prediction equals the true label', async () => {
      first = await verifyGallery(base, defaultModel, 0);
      console.log(`#   ${defaultModel}: ${first.right} of 30 correct`);
    });

    await check('the model selector lists every loaded model and marks the default', async () => {
      const opts = await page.$$eval('#model-select option', (o) => o.map((x) => ({ v: x.value, t: x.textContent })));
      assert(opts.length === models.models.length, `${opts.length} options, ${models.models.length} models`);
      for (const m of models.models) {
        const o = opts.find((x) => x.v === m.name);
        assert(o, `model ${m.name} missing`);
        assert(/default/.test(o.t) === Boolean(m.default), `option "${o.t}" default marker wrong`);
      }
      assert(await page.inputValue('#model-select') === defaultModel, 'the default model is not selected');
      const rows = await page.$$eval('#models-table tbody tr', (r) => r.length);
      assert(rows === models.models.length, `models table has ${rows} rows`);
    });

    await check('Models and Data sections show curves, confusion matrix, grid search and class counts', async () => {
      await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: T });
      const charts = await page.$$eval('#curves svg.chart', (c) => c.length);
      const withHistory = models.models.filter((m) => fs.existsSync(path.join(WEIGHTS, `${m.name}.history.json`))).length;
      assert(charts === 2 * withHistory, `${charts} curve charts, want ${2 * withHistory}`);
      const paths = await page.$$eval('#curves svg.chart path.line', (p) => p.filter((x) => x.getAttribute('d').length > 20).length);
      assert(paths === 4 * withHistory, `${paths} drawn curves, want ${4 * withHistory}`);
      if (fs.existsSync(path.join(WEIGHTS, `${defaultModel}.eval.json`))) {
        const ev = JSON.parse(fs.readFileSync(path.join(WEIGHTS, `${defaultModel}.eval.json`), 'utf8'));
        const cells = await page.$$eval('#confusion td.cm', (c) => c.map((x) => Number(x.textContent)));
        assert(cells.length === 100, `${cells.length} confusion cells`);
        assert(cells.join() === ev.confusion.flat().join(), 'confusion matrix differs from the eval report');
      }
      const grids = fs.readdirSync(WEIGHTS).filter((f) => /^grid-.*\.md$/.test(f)).length;
      const tables = await page.$$eval('#grids table', (t) => t.length);
      assert(tables >= Math.min(grids, 1), `${tables} grid tables, ${grids} reports`);
      const dist = await page.$$eval('#class-dist tbody tr', (r) => r.map((x) => x.textContent));
      assert(dist.length === 10, `${dist.length} class rows`);
      const eda = await page.$eval('#eda-img', (i) => i.naturalWidth);
      assert(eda > 0, 'sample grid image not loaded');
      await page.screenshot({ path: path.join(ART, 'page-desktop.png'), fullPage: true });
    });

    await check('uploading a PNG of a test image shows its label, ten bars and the input the model saw', async () => {
      // A test image the default model gets right, upscaled 4x so the server has to resize it.
      if (!first) { // the gallery check failed: ask the API directly
        const s = await apiJSON(base, 'v1/samples?offset=0&count=30');
        const res = await apiJSON(base, `v1/classify?model=${defaultModel}&top=1`, { method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ instances: s.samples.map((x) => x.pixels), scale: 255 }) });
        first = { samples: s.samples, predictions: res.predictions };
      }
      const i = first.predictions.findIndex((p, k) => p.class_id === first.samples[k].class_id && p.confidence > 0.9);
      assert(i >= 0, 'no confidently right image among the first 30');
      const sample = first.samples[i];
      const png = pngGray(112, 112, upscale(sample.pixels, 4));
      const api = await apiJSON(base, `v1/classify?model=${defaultModel}`, { method: 'POST', body: png,
        headers: { 'Content-Type': 'image/png' } });
      assert(api.predictions[0].label === sample.label, `the API itself says ${api.predictions[0].label} for a ${sample.label}`);
      const resp = page.waitForResponse((r) => r.url().includes('/v1/classify') && r.request().method() === 'POST');
      await page.setInputFiles('#file-input', { name: `test-${sample.index}.png`, mimeType: 'image/png', buffer: png });
      const r = await resp;
      assert(r.status() === 200, `status ${r.status()}`);
      assert(/^image\/png/.test(await r.request().headerValue('content-type') || ''), 'not sent as image/png');
      const pp = (await r.json()).predictions[0].preprocessing;
      assert(pp && pp.format === 'png' && pp.width === 112 && pp.resized, `the server saw ${JSON.stringify(pp)}`);
      await page.waitForFunction((l) => document.getElementById('result-label').textContent === l, sample.label, { timeout: T });
      const bars = await page.$$eval('#result-bars .bar-row', (b) => b.map((x) => x.getAttribute('aria-label')));
      assert(bars.length === 10, `${bars.length} bars`);
      CLASSES.forEach((c, k) => assert(bars[k].startsWith(c + ':'), `bar ${k} is "${bars[k]}"`));
      const top = await page.$eval('#result-bars .bar-row.top .bar-name', (x) => x.textContent);
      assert(top === sample.label, `highlighted bar ${top}`);
      const seen = await page.$eval('#result-input', (x) => ({ src: x.src, w: x.naturalWidth, hidden: x.hidden }));
      assert(seen.src.startsWith('data:image/png') && seen.w === 28 && !seen.hidden, 'the 28x28 model input is not shown');
      assert(/resized|scaled/.test(await page.textContent('#result-prep')), 'preprocessing not described');
      await page.$('#try').then((s) => s.screenshot({ path: path.join(ART, 'try-upload.png') }));
    });

    await check('drawing on the canvas (mouse) sends 784 values and shows a prediction', async () => {
      await page.click('#draw-clear');
      const box = await page.$eval('#draw-canvas', (c) => { const r = c.getBoundingClientRect(); return { x: r.left, y: r.top, w: r.width }; });
      await page.$eval('#draw-canvas', (c) => c.scrollIntoView());
      const b = await (await page.$('#draw-canvas')).boundingBox();
      assert(b && b.width > 100, `canvas box ${JSON.stringify(box)}`);
      const at = (fx, fy) => [b.x + fx * b.width, b.y + fy * b.height];
      const req = page.waitForRequest((r) => r.url().includes('/v1/classify') && r.method() === 'POST');
      // A trouser: two legs from a waistband.
      await page.mouse.move(...at(0.3, 0.15));
      await page.mouse.down();
      await page.mouse.move(...at(0.7, 0.15), { steps: 8 });
      await page.mouse.move(...at(0.65, 0.9), { steps: 12 });
      await page.mouse.up();
      const r1 = await req;
      await r1.response();
      const req2 = page.waitForRequest((r) => r.url().includes('/v1/classify') && r.method() === 'POST');
      await page.mouse.move(...at(0.3, 0.15));
      await page.mouse.down();
      await page.mouse.move(...at(0.35, 0.9), { steps: 12 });
      await page.mouse.up();
      const r = await req2;
      const body = JSON.parse(r.postData());
      assert(body.instances.length === 1 && body.instances[0].length === 784, 'not one instance of 784 values');
      const v = body.instances[0];
      assert(v.every((x) => x >= 0 && x <= 1), 'values outside [0, 1]');
      const lit = v.filter((x) => x > 0.5).length;
      assert(lit > 30 && lit < 400, `${lit} bright pixels from two strokes`);
      const res = await (await r.response()).json();
      await page.waitForFunction((l) => document.getElementById('result-label').textContent === l &&
        /drawing/.test(document.getElementById('result-source').textContent), res.predictions[0].label, { timeout: T });
      assert(await page.$$eval('#result-bars .bar-row', (x) => x.length) === 10, 'not ten bars');
      console.log(`#   drawing classified as ${res.predictions[0].label} (${(100 * res.predictions[0].confidence).toFixed(1)}%)`);
      await page.$('#try').then((s) => s.screenshot({ path: path.join(ART, 'try-drawing.png') }));
      // The eraser removes ink, Clear removes all of it.
      await page.click('#tool-eraser');
      const e = await (await page.$('#draw-canvas')).boundingBox(); // clicking may have scrolled
      const at2 = (fx, fy) => [e.x + fx * e.width, e.y + fy * e.height];
      const before = await page.$eval('#draw-canvas', (c) => c.getContext('2d').getImageData(0, 0, 28, 28).data.filter((x, k) => k % 4 === 0 && x > 127).length);
      await page.mouse.move(...at2(0.1, 0.15));
      await page.mouse.down();
      await page.mouse.move(...at2(0.9, 0.15), { steps: 10 });
      await page.mouse.up();
      const after = await page.$eval('#draw-canvas', (c) => c.getContext('2d').getImageData(0, 0, 28, 28).data.filter((x, k) => k % 4 === 0 && x > 127).length);
      assert(after < before, `eraser: ${before} lit pixels before, ${after} after`);
      await page.click('#tool-pen');
      await page.click('#draw-clear');
      const cleared = await page.$eval('#draw-canvas', (c) => c.getContext('2d').getImageData(0, 0, 28, 28).data.filter((x, k) => k % 4 === 0 && x > 127).length);
      assert(cleared === 0, `${cleared} lit pixels after Clear`);
    });

    await check('the canvas can be drawn on and classified with the keyboard', async () => {
      await page.focus('#draw-canvas');
      for (let k = 0; k < 10; k++) await page.keyboard.press('ArrowDown');
      const req = page.waitForRequest((r) => r.url().includes('/v1/classify') && r.method() === 'POST');
      await page.keyboard.press('Enter');
      const r = await req;
      assert(JSON.parse(r.postData()).instances[0].some((x) => x > 0.5), 'keyboard strokes left no ink');
      await r.response();
      await page.click('#draw-clear');
    });

    await check('switching the model re-runs the gallery with that model', async () => {
      const other = models.models.find((m) => m.name !== defaultModel);
      assert(other, 'only one model is loaded');
      const req = page.waitForRequest((r) => r.url().includes('/v1/classify') && r.method() === 'POST');
      await page.selectOption('#model-select', other.name);
      const r = await req;
      const u = new URL(r.url());
      assert(u.searchParams.get('model') === other.name, `request model=${u.searchParams.get('model')}, want ${other.name}`);
      assert(JSON.parse(r.postData()).instances.length === 30, 'not a batch of 30');
      await page.waitForFunction((m) => document.getElementById('gallery-counter').textContent.includes(m) &&
        document.getElementById('gallery-grid').getAttribute('aria-busy') === 'false', other.name, { timeout: T });
      const v = await verifyGallery(base, other.name, 0);
      console.log(`#   ${other.name}: ${v.right} of 30 correct`);
      await page.screenshot({ path: path.join(ART, `gallery-${other.name}.png`), fullPage: false });
      await page.selectOption('#model-select', defaultModel);
      await page.waitForFunction((m) => document.getElementById('gallery-counter').textContent.includes(m), defaultModel, { timeout: T });
    });

    await check('next 30 and previous page through the test set', async () => {
      const req = page.waitForRequest((r) => r.url().includes('/v1/samples'));
      await page.click('#gallery-next');
      assert(new URL((await req).url()).searchParams.get('offset') === '30', 'next did not ask for offset 30');
      await waitGallery(30);
      await verifyGallery(base, defaultModel, 30);
      await page.click('#gallery-prev');
      await waitGallery(0);
      await page.click('#gallery-random');
      await page.waitForFunction(() => /random/.test(document.getElementById('gallery-counter').textContent) &&
        document.querySelectorAll('#gallery-grid figure.tile').length === 30, null, { timeout: T });
    });

    await check('no script errors so far', async () => {
      assert(pageErrors.length === 0, pageErrors.join(' | '));
    });

    await check('an unsupported file (415) shows a readable message', async () => {
      await page.setInputFiles('#file-input', { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('this is not an image\n') });
      await waitMessage(/415.*unsupported/i, '415');
      await page.screenshot({ path: path.join(ART, 'error-415.png') });
    });

    await check('a file over the body limit (413) shows a readable message', async () => {
      const big = Buffer.alloc(5 << 20, 7); // the server's default limit is 4 MiB
      big.set(pngGray(1, 1, [0]).subarray(0, 8)); // a PNG signature: it is "an image", only too big
      await page.setInputFiles('#file-input', { name: 'huge.png', mimeType: 'image/png', buffer: big });
      await waitMessage(/413|too large/i, '413');
    });

    await check('phone width (375 px): no horizontal scrolling, gallery readable', async () => {
      const phone = await context.newPage();
      await phone.setViewportSize({ width: 375, height: 800 });
      await phone.goto(base);
      await phone.waitForFunction(() => document.querySelectorAll('#gallery-grid figure.tile').length === 30, null, { timeout: T });
      await phone.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: T });
      const w = await phone.evaluate(() => document.documentElement.scrollWidth);
      assert(w <= 375, `page is ${w} px wide at 375`);
      await phone.screenshot({ path: path.join(ART, 'page-phone.png'), fullPage: true });
      await phone.close();
    });

    await check('the page works under a path prefix (every URL relative)', async () => {
      // /fmnist/X is answered by the server's /X; anything outside /fmnist/ is refused and recorded.
      const ctx = await browser.newContext();
      const outside = [];
      await ctx.route('**/*', async (route) => {
        const u = new URL(route.request().url());
        if (!u.pathname.startsWith('/fmnist/')) {
          outside.push(u.pathname);
          return route.abort();
        }
        u.pathname = u.pathname.slice('/fmnist'.length);
        return route.fulfill({ response: await route.fetch({ url: u.toString() }) });
      });
      const p = await ctx.newPage();
      await p.goto(base + 'fmnist/');
      await p.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: T });
      const n = await p.$$eval('#gallery-grid figure.tile', (t) => t.length);
      await ctx.close();
      assert(outside.length === 0, `absolute URLs requested: ${outside.join(', ')}`);
      assert(n === 30, `${n} tiles under the prefix`);
    });

    await check('a server that is down shows a readable message', async () => {
      await stopServer(server);
      await page.click('#gallery-next');
      await waitMessage(/cannot reach the server/i, 'server down');
      await page.screenshot({ path: path.join(ART, 'error-server-down.png') });
    });
  } finally {
    await browser.close().catch(() => {});
    await stopServer(server);
  }
  console.log(`${passed} passed, ${failed} failed`);
  if (failed) {
    console.log('# server log (last lines):\n' + server.lines.slice(-15).join('\n'));
    process.exit(1);
  }
}

main().catch((e) => die(e && e.stack ? e.stack : String(e)));
