// The serve page: draw or drop a digit, see the prediction, the preprocessing,
// feature maps with receptive fields and saliency; and the run's curves,
// confusion matrix, mistakes and config. Plain JS + canvas, no libraries.
'use strict';

const $ = (id) => document.getElementById(id);
const INPUT_SCALE = 8;            // #input shows the 28x28 digit at 8 px per pixel
const page = {run: null, summary: null, maps: null, rfPick: null, inked: false,
              busy: false, queued: null, runViewFor: null,
              latencies: []};   // ms from a stroke's drawing to its bars shown (last 1000)

// ---- utilities --------------------------------------------------------------
function bytes(b64) {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

async function api(path, options) {
  const response = await fetch(path, options);
  let body;
  try { body = await response.json(); } catch (e) { body = {error: `HTTP ${response.status}`}; }
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function showError(text) {
  $('message').textContent = text || '';
  $('message').hidden = !text;
}

const q = (name) => encodeURIComponent(name);

// Gray digit (ink bright, 0..255) as dark ink on white, like the plots.
function paintGray(canvas, pixels, width, height, cssScale) {
  canvas.width = width; canvas.height = height;
  if (cssScale) {
    canvas.style.width = `${width * cssScale}px`;
    canvas.style.height = `${height * cssScale}px`;
  }
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const v = 255 - pixels[i];
    img.data.set([v, v, v, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
}

// Signed values in [-1, 1]: red > 0 > blue (matplotlib's RdBu_r, simplified).
function paintSigned(canvas, values, width, height, offset) {
  canvas.width = width; canvas.height = height;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(width, height);
  for (let i = 0; i < width * height; i++) {
    const v = values[offset + i] / 127;
    const a = Math.round(255 * (1 - Math.abs(v)));
    img.data.set(v >= 0 ? [255, a, a, 255] : [a, a, 255, 255], 4 * i);
  }
  ctx.putImageData(img, 0, 0);
}

function digitFigure(d, caption) {
  const fig = document.createElement('figure');
  const c = document.createElement('canvas');
  c.className = 'pixels';
  paintGray(c, bytes(d.pixels), 28, 28, 2);
  fig.append(c, caption);
  fig.dataset.index = d.index;
  return fig;
}

// ---- drawing pad --------------------------------------------------------------
const pad = $('pad');
const pen = pad.getContext('2d');

function clearPad() {
  pen.fillStyle = '#fff';
  pen.fillRect(0, 0, pad.width, pad.height);
  page.inked = false;
}

function padPoint(e) {
  const r = pad.getBoundingClientRect();
  return [(e.clientX - r.left) * pad.width / r.width, (e.clientY - r.top) * pad.height / r.height];
}

let last = null;
pad.addEventListener('pointerdown', (e) => {
  pad.setPointerCapture(e.pointerId);
  last = padPoint(e);
  pen.fillStyle = '#000';
  pen.beginPath(); pen.arc(last[0], last[1], 9, 0, 2 * Math.PI); pen.fill();
  page.inked = true;
  schedule(false);
});
pad.addEventListener('pointermove', (e) => {
  if (!last) return;
  const p = padPoint(e);
  pen.strokeStyle = '#000'; pen.lineWidth = 18; pen.lineCap = 'round'; pen.lineJoin = 'round';
  pen.beginPath(); pen.moveTo(last[0], last[1]); pen.lineTo(p[0], p[1]); pen.stroke();
  last = p;
  schedule(false);
});
const endStroke = () => { if (last) { last = null; schedule(true); } };
pad.addEventListener('pointerup', endStroke);
pad.addEventListener('pointercancel', endStroke);

$('clear').addEventListener('click', () => { clearPad(); resetDigitView(); showError(''); });

// body[data-settled] is '1' when no prediction is pending (tests and scripts wait on it).
let pending = 0;
function track(promise) {
  pending++;
  document.body.dataset.settled = '0';
  return promise.finally(() => {
    pending--;
    document.body.dataset.settled = pending || page.queued ? '0' : '1';
  });
}

// One request in flight; strokes made meanwhile send the latest drawing after it.
function schedule(inside) {
  if (!page.run) return;
  if (page.busy) {
    page.queued = {inside: inside || Boolean(page.queued && page.queued.inside)};
    document.body.dataset.settled = '0';
    return;
  }
  page.busy = true;
  const start = performance.now();
  track(new Promise((resolve) => pad.toBlob(resolve, 'image/png'))
    .then((blob) => predict(blob, inside, start))
    .finally(() => {
      page.busy = false;
      if (page.queued) { const next = page.queued; page.queued = null; schedule(next.inside); }
    }));
}

async function predict(blob, inside, start) {
  try {
    const r = await api(`/api/predict?run=${q(page.run)}&inside=${inside ? 1 : 0}`, {
      method: 'POST', body: blob,
      headers: {'Content-Type': blob.type || 'application/octet-stream'}});
    showError('');
    showPrediction(r);
    if (start !== undefined) {
      page.latencies.push({inside, ms: performance.now() - start});
      page.latencies.splice(0, page.latencies.length - 1000);
    }
  } catch (e) {
    showError(e.message);
  }
}

function useFile(file) {
  if (!file) return;
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.onload = () => {          // show it on the pad, fitted and centred
    clearPad();
    const s = Math.min(pad.width / img.width, pad.height / img.height);
    pen.drawImage(img, (pad.width - img.width * s) / 2, (pad.height - img.height * s) / 2,
                  img.width * s, img.height * s);
    page.inked = true;
    URL.revokeObjectURL(url);
  };
  img.onerror = () => URL.revokeObjectURL(url);
  img.src = url;
  track(predict(file, true));   // the file itself, not the pad's copy
}

$('file').addEventListener('change', (e) => { useFile(e.target.files[0]); e.target.value = ''; });
pad.addEventListener('dragover', (e) => { e.preventDefault(); pad.classList.add('dragover'); });
pad.addEventListener('dragleave', () => pad.classList.remove('dragover'));
pad.addEventListener('drop', (e) => {
  e.preventDefault();
  pad.classList.remove('dragover');
  useFile(e.dataTransfer.files[0]);
});

// ---- the digit view -------------------------------------------------------------
// The run's class names (summary.classes, recorded with the run); digits 0-9 before one loads.
function classNames() {
  return (page.summary && page.summary.classes) || [...Array(10).keys()].map(String);
}

function makeBars() {
  const bars = $('bars');
  bars.textContent = '';
  const names = classNames();
  for (let k = 0; k < names.length; k++) {
    const row = document.createElement('div');
    row.className = 'bar-row';
    row.dataset.digit = k;
    row.innerHTML = `<span class="digit">${names[k]}</span><div class="bar-track">` +
      '<div class="bar" style="width:0"></div></div><span class="pct"></span>';
    bars.append(row);
  }
  $('spread').textContent = '';
}

// An ensemble's members on each bar: a min–max whisker and one tick per member's p_k.
function showMembers(r) {
  const rows = $('bars').children;
  for (let k = 0; k < rows.length; k++) {
    const track = rows[k].querySelector('.bar-track');
    track.querySelectorAll('.whisker, .tick').forEach((e) => e.remove());
    if (!r.members) continue;
    const ps = r.members.map((m) => m[k]);
    const whisker = document.createElement('div');
    whisker.className = 'whisker';
    whisker.style.left = `${(100 * Math.min(...ps)).toFixed(1)}%`;
    whisker.style.width = `${(100 * (Math.max(...ps) - Math.min(...ps))).toFixed(1)}%`;
    track.append(whisker);
    ps.forEach((p, m) => {
      const tick = document.createElement('div');
      tick.className = 'tick';
      tick.dataset.member = m;
      tick.title = `member ${m}: ${(100 * p).toFixed(1)}%`;
      tick.style.left = `${(100 * p).toFixed(1)}%`;
      track.append(tick);
    });
  }
  $('spread').innerHTML = r.members ?
    `Ensemble of ${r.members.length}: bars are the mean p; ticks are each member's p<sub>k</sub>, ` +
    `the grey line their min–max. Spread std<sub>k</sub> p<sub>k</sub>(ŷ) = ${r.spread.toFixed(3)}, ` +
    `dissent ${(100 * r.dissent).toFixed(0)}% of members.` : '';
}

function resetDigitView() {
  makeBars();
  $('predicted').textContent = '';
  delete $('predicted').dataset.digit;
  $('steps').textContent = '';
  $('rf-box').hidden = true;
  page.maps = null;
}

function showPrediction(r) {
  if ($('bars').children.length !== r.probs.length) makeBars();
  const rows = $('bars').children;
  r.probs.forEach((p, k) => {
    rows[k].classList.toggle('top', k === r.digit_class);
    rows[k].querySelector('.bar').style.width = `${(100 * p).toFixed(1)}%`;
    rows[k].querySelector('.pct').textContent = `${(100 * p).toFixed(1)}%`;
  });
  showMembers(r);
  $('predicted').textContent = classNames()[r.digit_class] ?? r.digit_class;
  $('predicted').dataset.digit = r.digit_class;
  const steps = $('steps');
  steps.textContent = '';
  for (const s of r.steps) {
    const fig = document.createElement('figure');
    const c = document.createElement('canvas');
    c.className = 'pixels';
    const scale = Math.max(1, Math.floor(84 / Math.max(s.width, s.height)));
    paintGray(c, bytes(s.pixels), s.width, s.height, scale);
    fig.append(c, s.title);
    steps.append(fig);
  }
  paintGray($('input'), bytes(r.digit), 28, 28);
  if (r.maps) showInside(r);
}

function layerText(layer) {
  const shape = layer.shape.join('×');
  if (!layer.rf) return `${layer.name} ${shape} · RF: whole input`;
  return `${layer.name} ${shape} · RF ${layer.rf.join('×')} · jump ${layer.jump.join('×')}`;
}

function showInside(r) {
  page.maps = r.maps;
  const sal = bytes(r.saliency.data);
  paintSigned($('saliency'), new Int8Array(sal.buffer), 28, 28, 0);
  const member0 = page.summary.ensemble > 1;
  $('saliency-info').innerHTML = (member0 ? 'Member 0 of the ensemble, for its own predicted class k: ' :
    `For the predicted class k = ${r.digit_class}: `) + 'red pixels raise ' +
    `z<sub>k</sub> when inked, blue ones lower it (max |∂z/∂x| = ${r.saliency.scale.toPrecision(3)}).`;
  const box = $('maps');
  box.textContent = '';
  if (!r.maps.length) {
    box.innerHTML = '<p class="hint">This model has no conv layer, so no feature maps.</p>';
    return;
  }
  r.maps.forEach((m, L) => {
    const layer = page.summary.layers[L];
    const [h, w] = layer.shape;
    const values = new Int8Array(bytes(m.data).buffer);
    const div = document.createElement('div');
    div.className = 'layer';
    div.innerHTML = `<div class="layer-name">${layerText(layer)}</div>`;
    const row = document.createElement('div');
    row.className = 'gallery';
    const scale = Math.max(1, Math.floor(84 / Math.max(h, w)));
    for (let k = 0; k < m.scales.length; k++) {
      const c = document.createElement('canvas');
      c.className = 'map';
      c.dataset.layer = L; c.dataset.map = k;
      paintSigned(c, values, w, h, k * h * w);
      c.style.width = `${w * scale}px`; c.style.height = `${h * scale}px`;
      c.title = `${layer.name} map ${k} (max |v| = ${m.scales[k].toPrecision(3)})`;
      c.addEventListener('click', (e) => {
        const rect = c.getBoundingClientRect();
        const j = Math.min(w - 1, Math.floor((e.clientX - rect.left) * w / rect.width));
        const i = Math.min(h - 1, Math.floor((e.clientY - rect.top) * h / rect.height));
        page.rfPick = {layer: L, map: k, i, j};
        showField();
      });
      row.append(c);
    }
    div.append(row);
    box.append(div);
  });
  showField();
}

// Unit (i, j) of layer L sees input rows [a + i·jump, a + i·jump + RF), columns likewise.
function showField() {
  const pick = page.rfPick;
  document.querySelectorAll('.map.selected').forEach((c) => c.classList.remove('selected'));
  if (!pick || !page.maps || pick.layer >= page.summary.layers.length) return;
  const layer = page.summary.layers[pick.layer];
  const canvas = document.querySelector(`.map[data-layer="${pick.layer}"][data-map="${pick.map}"]`);
  if (canvas) canvas.classList.add('selected');
  const rfBox = $('rf-box');
  if (!layer.rf) {
    rfBox.hidden = true;
    $('rf-info').textContent = `${layer.name} unit (${pick.i}, ${pick.j}) sees the whole input.`;
    return;
  }
  const top = layer.start[0] + pick.i * layer.jump[0];
  const left = layer.start[1] + pick.j * layer.jump[1];
  Object.assign(rfBox.style, {top: `${top * INPUT_SCALE}px`, left: `${left * INPUT_SCALE}px`,
    height: `${layer.rf[0] * INPUT_SCALE}px`, width: `${layer.rf[1] * INPUT_SCALE}px`});
  rfBox.dataset.rf = layer.rf.join('x');
  rfBox.hidden = false;
  $('rf-info').textContent = `${layer.name} map ${pick.map}, unit (${pick.i}, ${pick.j}): ` +
    `RF ${layer.rf.join('×')} px of the input, rows ${top}..${top + layer.rf[0] - 1}, ` +
    `columns ${left}..${left + layer.rf[1] - 1} (outside 0..27: padding).`;
}

// ---- the run view ---------------------------------------------------------------
const COLORS = {train: '#1e88e5', val: '#fb8c00', test: '#43a047'};

function drawCurves(series) {
  const canvas = $('curves');
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const panels = [['loss', true], ['accuracy', false]];
  const pw = canvas.width / 2;
  const pad = {l: 56, r: 16, t: 24, b: 36};
  panels.forEach(([metric, log], p) => {
    const x0 = p * pw + pad.l, x1 = (p + 1) * pw - pad.r, y0 = canvas.height - pad.b, y1 = pad.t;
    const lines = [];
    for (const s of series) {
      for (const split of ['train', 'val', 'test']) {
        const pts = s.history.filter((h) => Number.isFinite(h[`${split}_${metric}`]))
          .map((h) => [h.epoch, h[`${split}_${metric}`]]);
        if (pts.length) lines.push({pts, color: COLORS[split], dash: s.dash});
      }
    }
    const all = lines.flatMap((l) => l.pts);
    ctx.fillStyle = '#222'; ctx.font = '12px system-ui';
    ctx.fillText(`${metric} per epoch${log ? ' (log scale)' : ''}`, x0, 14);
    ctx.strokeStyle = '#999'; ctx.lineWidth = 1; ctx.setLineDash([]);
    ctx.strokeRect(x0, y1, x1 - x0, y0 - y1);
    if (!all.length) return;
    const f = log ? Math.log10 : (v) => v;
    const ex = [Math.min(...all.map((d) => d[0])), Math.max(...all.map((d) => d[0]))];
    const fy = all.map((d) => f(Math.max(d[1], 1e-6)));
    let ey = [Math.min(...fy), Math.max(...fy)];
    if (ey[1] - ey[0] < 1e-9) ey = [ey[0] - 0.5, ey[1] + 0.5];
    const margin = 0.05 * (ey[1] - ey[0]);
    ey = [ey[0] - margin, ey[1] + margin];
    const sx = (e) => x0 + (ex[1] > ex[0] ? (e - ex[0]) / (ex[1] - ex[0]) : 0.5) * (x1 - x0);
    const sy = (v) => y0 - (f(Math.max(v, 1e-6)) - ey[0]) / (ey[1] - ey[0]) * (y0 - y1);
    ctx.fillStyle = '#555';
    for (let t = 0; t <= 4; t++) {     // y ticks
      const fv = ey[0] + (ey[1] - ey[0]) * t / 4;
      const v = log ? 10 ** fv : fv;
      const y = y0 - (y0 - y1) * t / 4;
      ctx.fillText(v.toPrecision(3), p * pw + 4, y + 4);
      ctx.strokeStyle = '#eee'; ctx.beginPath(); ctx.moveTo(x0, y); ctx.lineTo(x1, y); ctx.stroke();
    }
    const step = Math.max(1, Math.ceil((ex[1] - ex[0]) / 10));
    for (let e = ex[0]; e <= ex[1]; e += step) ctx.fillText(String(e), sx(e) - 3, y0 + 14);
    ctx.fillText('epoch', (x0 + x1) / 2 - 15, y0 + 30);
    for (const l of lines) {
      ctx.strokeStyle = l.color; ctx.fillStyle = l.color; ctx.lineWidth = 2; ctx.setLineDash(l.dash);
      ctx.beginPath();
      l.pts.forEach(([e, v], i) => (i ? ctx.lineTo(sx(e), sy(v)) : ctx.moveTo(sx(e), sy(v))));
      ctx.stroke();
      ctx.setLineDash([]);
      for (const [e, v] of l.pts) { ctx.beginPath(); ctx.arc(sx(e), sy(v), 2.5, 0, 2 * Math.PI); ctx.fill(); }
    }
  });
  $('curves-legend').textContent = 'train (blue) = mean over the epoch\'s steps, val (orange) ' +
    'and test (green) after the epoch. ' +
    series.map((s) => `${s.dash.length ? 'dashed' : 'solid'}: ${s.name}`).join('; ');
}

async function showCurves() {
  const series = [{name: page.run, history: page.summary.history, dash: []}];
  const other = $('compare').value;
  try {
    if (other) {
      const h = await api(`/api/history?run=${q(other)}`);
      series.push({name: other, history: h.history, dash: [6, 4]});
    }
  } catch (e) { showError(e.message); }
  drawCurves(series);
}

function showConfusion(c) {
  const table = $('confusion');
  const n = c.matrix.length;
  const max = Math.max(...c.matrix.flat());
  let html = '<tr><th>t\\p</th>' + [...Array(n).keys()].map((j) => `<th>${j}</th>`).join('') + '</tr>';
  for (let i = 0; i < n; i++) {
    html += `<tr><th>${i}</th>`;
    for (let j = 0; j < n; j++) {
      const v = c.matrix[i][j];
      const a = v ? Math.log1p(v) / Math.log1p(max) : 0;
      const bg = i === j ? `rgba(30,136,229,${a})` : `rgba(229,57,53,${Math.min(1, 0.15 + a)})`;
      const style = `background:${v ? bg : '#fff'};color:${a > 0.6 ? '#fff' : '#222'}`;
      html += `<td data-true="${i}" data-pred="${j}" style="${style}">${v || ''}</td>`;
    }
    html += '</tr>';
  }
  table.innerHTML = html;
  $('confusion-title').textContent = `Test confusion matrix: ${c.count} digits, accuracy ${(100 * c.accuracy).toFixed(2)} %`;
  table.querySelectorAll('td').forEach((td) => td.addEventListener('click', () => showCell(td)));
  const box = $('mistakes');
  box.textContent = '';
  for (const d of c.mistakes) box.append(digitFigure(d, `${d.label}→${d.pred} p=${d.p.toFixed(2)}`));
  if (!c.mistakes.length) box.textContent = 'No misclassified test digits.';
}

async function showCell(td) {
  document.querySelectorAll('#confusion td.selected').forEach((t) => t.classList.remove('selected'));
  td.classList.add('selected');
  try {
    const r = await api(`/api/cell?run=${q(page.run)}&true=${td.dataset.true}&pred=${td.dataset.pred}`);
    $('cell-title').textContent = `True ${r.true}, predicted ${r.pred}: ${r.count} test digits` +
      (r.count > r.digits.length ? ` (the first ${r.digits.length})` : '');
    const box = $('cell-digits');
    box.textContent = '';
    for (const d of r.digits) box.append(digitFigure(d, `#${d.index} p=${d.p.toFixed(2)}`));
  } catch (e) { showError(e.message); }
}

async function showRunView() {
  if (!page.summary || page.runViewFor === page.run) return;
  page.runViewFor = page.run;
  $('config').textContent = JSON.stringify(page.summary.config, null, 2);
  await showCurves();
  try {
    showConfusion(await api(`/api/confusion?run=${q(page.run)}`));
  } catch (e) { showError(e.message); }
}

// ---- runs and tabs ----------------------------------------------------------------
async function selectRun(id) {
  page.run = null; page.summary = null; page.runViewFor = null; page.rfPick = null;
  resetDigitView();
  $('maps').innerHTML = '<p class="hint">Draw a digit to see each conv layer\'s output maps.</p>';
  $('run-info').textContent = 'loading…';
  try {
    page.summary = await api(`/api/run?run=${q(id)}`);
    page.run = id;
    const k = page.summary.ensemble;
    $('run-info').textContent = `${page.summary.model}` +
      (k > 1 ? ` ensemble of ${k} (maps, saliency and fields: member 0)` : '') +
      `, ${page.summary.which} checkpoint (epoch ${page.summary.epoch})`;
    showError('');
    const url = new URL(location.href);
    url.searchParams.set('run', id);
    history.replaceState(null, '', url);
    if (page.inked) schedule(true);
    if (!$('view-run').hidden) showRunView();
  } catch (e) {
    $('run-info').textContent = '';
    showError(e.message);
  }
}

function showView(name) {
  for (const v of ['digit', 'run']) {
    $(`view-${v}`).hidden = v !== name;
    $(`tab-${v}`).classList.toggle('active', v === name);
  }
  if (name === 'run') showRunView();
}

async function start() {
  clearPad();
  makeBars();
  document.querySelectorAll('.tab').forEach((b) => b.addEventListener('click', () => showView(b.dataset.view)));
  $('run').addEventListener('change', (e) => selectRun(e.target.value));
  $('compare').addEventListener('change', () => { if (page.summary) showCurves(); });
  let listing;
  try { listing = await api('/api/runs'); } catch (e) { showError(e.message); return; }
  for (const r of listing.runs) {
    const acc = r.test_accuracy != null ? `, test ${(100 * r.test_accuracy).toFixed(1)} %` : '';
    const label = `${r.id} (${r.model || '?'}, ${r.epochs} epochs${acc}${r.checkpoints ? '' : ', no checkpoints'})`;
    $('run').add(new Option(label, r.id));
    $('compare').add(new Option(label, r.id));
  }
  const wanted = new URLSearchParams(location.search).get('run');
  const first = listing.runs.find((r) => r.id === wanted) || listing.runs.find((r) => r.checkpoints) || listing.runs[0];
  if (first) { $('run').value = first.id; await selectRun(first.id); }
  document.body.dataset.ready = '1';
}

start();
