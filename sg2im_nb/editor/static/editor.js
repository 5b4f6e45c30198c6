// The scene-graph editor's browser side: one ES module that anywidget runs in JupyterLab, Voila and sg2im-app.
// It imports nothing and fetches nothing. The kernel (SceneGraphEditor) sends one `view` to show; this module
// sends batches of actions that carry the values the user saw. Sections, in the order the lessons show them
// (31c_editor_js, 31d_editor_view): helpers, seeds, queue, boxes, painting, dragging, keys, zoom, toolbar,
// controls, box and seed, panels, history, update, lists, refresh, render.

// ---- helpers ----
const h = (tag, props = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : v);
  }
  e.append(...kids);
  return e;
};
const btn = (text, title, cls, onclick) => h('button', {class: `sg2im-btn ${cls}`, title, type: 'button', onclick}, text);
function setOptions(sel, opts, fallback) {  // opts: [[value, label], ...]
  const key = JSON.stringify(opts);
  if (sel._key === key) return false;
  const keep = sel.value, has = (v) => opts.some(([x]) => String(x) === String(v));
  sel.replaceChildren(...opts.map(([v, t]) => h('option', {value: String(v)}, t)));
  sel._key = key;
  if (has(keep)) sel.value = keep; else if (fallback != null && has(fallback)) sel.value = String(fallback);
  return true;  // the options changed
}
function download(name, href) {
  const a = h('a', {href, download: name, style: 'display:none'});
  document.body.append(a); a.click(); a.remove();
}
const clamp = (x, lo, hi) => Math.min(hi, Math.max(lo, x));
const r4 = (x) => Math.round(x * 1e4) / 1e4;
const short = (s, n = 40) => (s.length > n ? `${s.slice(0, n)}…` : s);

// ---- seeds ----
// Seeds go up to 2**63-1, as in the JSON files; JavaScript numbers are exact only to 2**53, so a seed travels as
// a string of digits and is computed on with BigInt.
const SEED_MAX = (1n << 63n) - 1n;
function parseSeed(text) {
  const t = String(text).trim();
  if (t === '') return {error: `type a seed: a whole number from 0 to ${SEED_MAX}`};
  if (!/^\d+$/.test(t)) return {error: `the seed must be a whole number from 0 to ${SEED_MAX}, not ${short(t, 24)}`};
  if (BigInt(t) > SEED_MAX) return {error: `the seed must be at most ${SEED_MAX}`};
  return {seed: BigInt(t).toString()};
}
const nextSeed = (s) => (BigInt(s) >= SEED_MAX ? 0n : BigInt(s) + 1n).toString();
function randomSeed() {
  const a = new BigUint64Array(1);
  crypto.getRandomValues(a);
  return (a[0] & SEED_MAX).toString();
}

// ---- queue ----
function makeQueue(send, onchange) {
  const view = Math.random().toString(36).slice(2);
  let queue = [], inflight = null, seq = 0;
  const waiters = [], times = [];
  const merges = (a, b) => a.op === b.op && ((a.op === 'set_box' && a.id === b.id) || a.op === 'set_seed');
  const flush = () => {
    if (q.dead || inflight !== null || !queue.length) return;
    seq += 1; inflight = {seq, n: queue.length, t: performance.now()};
    const actions = queue; queue = [];
    try { send({type: 'actions', view, seq, actions}); }
    catch (e) { q.kill(String((e && e.message) || e)); }
  };
  const q = {
    view, times, dead: null,
    push(a) {
      if (q.dead) return;
      const last = queue[queue.length - 1];
      if (last && merges(last, a)) queue[queue.length - 1] = a; else queue.push(a);
      flush(); onchange();
    },
    ack(acks) {
      if (inflight && acks && acks[view] >= inflight.seq) {
        times.push(Math.round(performance.now() - inflight.t)); inflight = null; flush();
      }
      if (!q.pending()) while (waiters.length) waiters.shift()();
      onchange();
    },
    kill(reason) {  // the kernel is gone: nothing will be answered, so nothing waits
      if (q.dead) return;
      q.dead = reason || 'the kernel is gone'; queue = []; inflight = null; waiters.length = 0; onchange();
    },
    pending: () => (q.dead ? 0 : queue.length + (inflight ? inflight.n : 0)),
    waitingMs: () => (inflight ? performance.now() - inflight.t : 0),
    whenIdle(f) { if (q.dead) return; if (!q.pending()) f(); else waiters.push(f); },
  };
  return q;
}

// ---- boxes ----
const MIN = 0.02;
// The model may predict a box a little outside the picture (sky: x1 = 1.047); a box the user takes hold of is
// first clipped to the picture, so moving it never makes a box that the kernel refuses.
function clipBox(b) {
  const x0 = clamp(b[0], 0, 1 - MIN), y0 = clamp(b[1], 0, 1 - MIN);
  return [x0, y0, clamp(b[2], x0 + MIN, 1), clamp(b[3], y0 + MIN, 1)];
}
function moveBox(b, mode, dx, dy) {
  let [x0, y0, x1, y1] = clipBox(b);
  if (mode === 'move') {
    const w = x1 - x0, hh = y1 - y0, nx = clamp(x0 + dx, 0, 1 - w), ny = clamp(y0 + dy, 0, 1 - hh);
    return [nx, ny, nx + w, ny + hh].map(r4);
  }
  if (mode.includes('w')) x0 = clamp(x0 + dx, 0, x1 - MIN); else x1 = clamp(x1 + dx, x0 + MIN, 1);
  if (mode.includes('n')) y0 = clamp(y0 + dy, 0, y1 - MIN); else y1 = clamp(y1 + dy, y0 + MIN, 1);
  return [x0, y0, x1, y1].map(r4);
}
// The selected box's corners resize it; anywhere else the smallest box under the pointer is taken (the circle
// on the sky, even with the sky selected), the one drawn last among equals.
function hitTest(items, boxOf, selected, x, y, tol) {
  const inside = (b) => x >= b[0] - tol && x <= b[2] + tol && y >= b[1] - tol && y <= b[3] + tol;
  const sel = items.find((it) => it.id === selected && boxOf(it));
  if (sel) {
    const b = clipBox(boxOf(sel));
    for (const [mode, cx, cy] of [['nw', b[0], b[1]], ['ne', b[2], b[1]], ['sw', b[0], b[3]], ['se', b[2], b[3]]])
      if (Math.abs(x - cx) <= tol && Math.abs(y - cy) <= tol) return {id: sel.id, mode};
  }
  let best = null, area = Infinity;
  for (const it of items) {
    if (!boxOf(it)) continue;
    const b = clipBox(boxOf(it)), a = (b[2] - b[0]) * (b[3] - b[1]);
    if (inside(b) && a <= area) { best = it; area = a; }
  }
  return best && {id: best.id, mode: 'move'};
}
const CURSOR = {move: 'move', nw: 'nwse-resize', se: 'nwse-resize', ne: 'nesw-resize', sw: 'nesw-resize'};

// ---- painting ----
function maskCanvas(it) {
  if (!it.mask) return null;
  const key = it.mask + it.color;
  if (it._mc && it._mk === key) return it._mc;
  const bytes = Uint8Array.from(atob(it.mask), (c) => c.charCodeAt(0)), M = Math.round(Math.sqrt(bytes.length));
  const c = document.createElement('canvas'); c.width = c.height = M;
  const ctx = c.getContext('2d'), img = ctx.createImageData(M, M);
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(it.color.slice(i, i + 2), 16));
  bytes.forEach((v, i) => { img.data.set(v > 127 ? [r, g, b, 255] : [0, 0, 0, 0], 4 * i); });
  ctx.putImageData(img, 0, 0); it._mc = c; it._mk = key;
  return c;
}
function paintBoxes(E, canvas, withMasks) {
  const ctx = canvas.getContext('2d'), S = canvas.width;
  ctx.clearRect(0, 0, S, S);
  if (withMasks) { ctx.fillStyle = '#fff'; ctx.fillRect(0, 0, S, S); }
  ctx.imageSmoothingEnabled = false; ctx.font = '12px sans-serif'; ctx.textBaseline = 'top';
  for (const it of E.items) {
    if (!E.boxOf(it)) continue;
    const [x0, y0, x1, y1] = clipBox(E.boxOf(it)).map((v) => v * S), sel = it.id === E.selected, mc = maskCanvas(it);
    if (withMasks && mc) ctx.drawImage(mc, x0, y0, x1 - x0, y1 - y0);
    else if (withMasks) { ctx.globalAlpha = 0.35; ctx.fillStyle = it.color; ctx.fillRect(x0, y0, x1 - x0, y1 - y0); ctx.globalAlpha = 1; }
    ctx.lineWidth = sel ? 3 : 1.5; ctx.strokeStyle = sel ? '#111' : it.color;
    ctx.strokeRect(x0 + 0.5, y0 + 0.5, x1 - x0 - 1, y1 - y0 - 1);
    if (withMasks || sel) {
      const w = ctx.measureText(it.label).width + 6;
      ctx.fillStyle = 'rgba(255,255,255,0.85)'; ctx.fillRect(x0 + 1, y0 + 1, w, 15);
      ctx.fillStyle = '#111'; ctx.fillText(it.label, x0 + 4, y0 + 2);
    }
    if (sel) for (const [cx, cy] of [[x0, y0], [x1, y0], [x0, y1], [x1, y1]]) {
      ctx.fillStyle = '#fff'; ctx.fillRect(cx - 5, cy - 5, 10, 10); ctx.strokeStyle = '#111'; ctx.lineWidth = 1.5;
      ctx.strokeRect(cx - 5, cy - 5, 10, 10);
    }
  }
}

// ---- dragging ----
function attachDrag(E, canvas) {
  let d = null;
  const pos = (ev) => { const r = canvas.getBoundingClientRect(); return [(ev.clientX - r.left) / r.width, (ev.clientY - r.top) / r.height]; };
  const hit = (x, y) => hitTest(E.items, E.boxOf, E.selected, x, y, 7 / canvas.getBoundingClientRect().width);
  canvas.addEventListener('pointerdown', (ev) => {
    E.root.focus({preventScroll: true});  // the arrow keys now nudge the box
    const [x, y] = pos(ev), t = hit(x, y);
    ev.preventDefault();
    if (!t || E.q.dead) return;
    E.select(t.id);
    d = {id: t.id, mode: t.mode, x, y, box0: clipBox(E.boxOf(E.items.find((it) => it.id === t.id))), moved: false};
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener('pointermove', (ev) => {
    const [x, y] = pos(ev);
    if (!d) { const t = hit(x, y); canvas.style.cursor = t ? CURSOR[t.mode] : 'default'; return; }
    if (Math.abs(x - d.x) + Math.abs(y - d.y) > 0.004) d.moved = true;
    if (d.moved) { E.override[d.id] = moveBox(d.box0, d.mode, x - d.x, y - d.y); E.paint(); }
  });
  const end = () => {
    if (!d) return;
    const {id, moved} = d; d = null;
    if (moved) E.push({op: 'set_box', id, box: E.override[id]});
    E.paint();
  };
  canvas.addEventListener('pointerup', end); canvas.addEventListener('pointercancel', end);
}

// ---- keys ----
// Ctrl/Cmd+Z undoes, Shift+Ctrl/Cmd+Z (or Ctrl+Y) redoes, Delete or Backspace removes the selected relationship
// or object, the arrow keys nudge the selected box (1% of the picture; 5% with Shift). Keys typed into a field
// or a list keep their usual meaning.
const NUDGE = {ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1]};
function onKey(E, ev) {
  const t = ev.target, k = ev.key, mod = ev.ctrlKey || ev.metaKey;
  if (E.q.dead || (t.matches && t.matches('input, select, textarea'))) return;
  if (mod && (k === 'z' || k === 'Z' || k === 'y')) {
    const redo = ev.shiftKey || k === 'y';
    if (redo ? E.v.can_redo : (E.v.can_undo || E.q.pending())) E.push({op: redo ? 'redo' : 'undo'});
  } else if (!mod && (k === 'Delete' || k === 'Backspace')) {
    if (E.selRel != null) E.push({op: 'remove_relationship', id: E.selRel});
    else if (E.selected != null) E.push({op: 'remove_object', id: E.selected});
  } else if (!mod && NUDGE[k] && E.selected != null) {
    const it = E.items.find((o) => o.id === E.selected), step = ev.shiftKey ? 0.05 : 0.01;
    if (!it || !E.boxOf(it)) return;
    const b = moveBox(E.boxOf(it), 'move', NUDGE[k][0] * step, NUDGE[k][1] * step);
    E.override[it.id] = b; E.paint(); E.push({op: 'set_box', id: it.id, box: b});
  } else return;
  ev.preventDefault();
}

// ---- zoom ----
// The graph panel zooms (the buttons, or Ctrl/Cmd + wheel: a trackpad pinch) around the pointer and pans by
// dragging, so a graph of a hundred objects can be read. A press without a move still selects an object.
function attachZoom(E, frame, graph) {
  const z = E.zoom = {k: 1, x: 0, y: 0};
  const show = () => { graph.style.transform = `translate(${z.x}px, ${z.y}px) scale(${z.k})`; E.root.dataset.zoom = z.k; };
  E.zoomBy = (f, cx = frame.clientWidth / 2, cy = frame.clientHeight / 2) => {
    const k = clamp(z.k * f, 1, 40); f = k / z.k;
    z.x = cx - (cx - z.x) * f; z.y = cy - (cy - z.y) * f; z.k = k;
    if (k === 1) z.x = z.y = 0;
    show();
  };
  E.zoomFit = () => { z.k = 1; z.x = z.y = 0; show(); };
  frame.addEventListener('wheel', (ev) => {
    if (!(ev.ctrlKey || ev.metaKey)) return;  // a plain wheel scrolls the page
    ev.preventDefault();
    const r = frame.getBoundingClientRect();
    E.zoomBy(ev.deltaY < 0 ? 1.25 : 0.8, ev.clientX - r.left, ev.clientY - r.top);
  }, {passive: false});
  let p = null;
  graph.addEventListener('pointerdown', (ev) => {
    E.root.focus({preventScroll: true});
    p = {x: ev.clientX, y: ev.clientY, zx: z.x, zy: z.y, moved: false};
    graph.setPointerCapture(ev.pointerId); ev.preventDefault();
  });
  graph.addEventListener('pointermove', (ev) => {
    if (!p) return;
    const dx = ev.clientX - p.x, dy = ev.clientY - p.y;
    if (Math.abs(dx) + Math.abs(dy) > 3) p.moved = true;
    if (p.moved && z.k > 1) { z.x = p.zx + dx; z.y = p.zy + dy; show(); }
  });
  graph.addEventListener('pointerup', (ev) => {
    const moved = p && p.moved; p = null;
    if (moved) return;
    const at = document.elementFromPoint(ev.clientX, ev.clientY), g = at && at.closest('[data-obj], [data-rel]');
    if (g && g.dataset.obj) E.select(+g.dataset.obj);
    else if (g) E.selectRel(+g.dataset.rel);
  });
  show();
}

// ---- toolbar ----
async function scaledPng(src, f) {  // nearest neighbour: each pixel becomes an f x f block, no smoothing
  const img = new Image(); img.src = src; await img.decode();
  const c = h('canvas', {width: img.naturalWidth * f, height: img.naturalHeight * f}), ctx = c.getContext('2d');
  ctx.imageSmoothingEnabled = false; ctx.drawImage(img, 0, 0, c.width, c.height);
  return c.toDataURL('image/png');
}
function buildToolbar(E) {
  const c = E.c;
  c.undo = btn('↶ undo', 'undo the last change (Ctrl+Z)', 'sg2im-undo', () => E.push({op: 'undo'}));
  c.redo = btn('↷ redo', 'redo the change just undone (Shift+Ctrl+Z)', 'sg2im-redo', () => E.push({op: 'redo'}));
  c.clear = btn('new', 'start an empty scene graph (undo brings this one back)', 'sg2im-clear', () => E.push({op: 'clear'}));
  c.examples = h('select', {class: 'sg2im-examples', title: 'load an example scene graph',
    onchange: () => { if (c.examples.value) E.push({op: 'example', key: c.examples.value}); }});
  c.file = h('input', {type: 'file', accept: '.json,application/json', class: 'sg2im-load-file', style: 'display:none',
    onchange: async () => {
      const f = c.file.files[0]; if (!f) return;
      E.push({op: 'load_json', text: await f.text(), name: f.name}); c.file.value = '';
    }});
  c.load = btn('load JSON', 'load a scene graph saved as JSON (the sg2im-run-model format)', 'sg2im-load', () => c.file.click());
  c.save = btn('save JSON', 'download this scene graph, boxes and seed as JSON for sg2im-run-model', 'sg2im-save',
    () => E.q.whenIdle(() => { E.saved = E.v.scene_graph_json; E.refresh();
      download('scene_graph.json', URL.createObjectURL(new Blob([E.v.scene_graph_json], {type: 'application/json'})));
    }));
  c.png = btn('save PNG', 'download the generated image as PNG, at the model\'s size', 'sg2im-png',
    () => E.q.whenIdle(() => E.v.image && download(`sg2im_seed${E.v.seed}.png`, E.v.image)));
  c.png4 = btn('PNG 4×', 'download the image 4 times larger; each pixel becomes a 4 x 4 block (nearest neighbour: ' +
    'no smoothing invents detail the model did not draw)', 'sg2im-png4',
    () => E.q.whenIdle(async () => E.v.image && download(`sg2im_seed${E.v.seed}_4x.png`, await scaledPng(E.v.image, 4))));
  c.checkpoint = h('select', {class: 'sg2im-checkpoint', title: 'the model that draws the image',
    onchange: () => E.push({op: 'checkpoint', key: c.checkpoint.value})});
  c.gallery = h('div', {class: 'sg2im-gallery'});
  return [h('div', {class: 'sg2im-toolbar'}, c.undo, c.redo, c.clear, c.examples, c.load, c.file, c.save, c.png, c.png4,
            h('label', {title: 'the model that draws the image'}, 'model ', c.checkpoint)), c.gallery];
}

// ---- controls ----
function buildControls(E) {
  const c = E.c, sel = (cls, title) => h('select', {class: cls, title});
  c.name = sel('sg2im-new-object', 'the kind of object to add');
  c.addObj = btn('add object', 'add an object of the kind chosen in "new object"', 'sg2im-add-object',
    () => E.push({op: 'add_object', name: c.name.value}));
  c.objects = h('ul', {class: 'sg2im-objects sg2im-list'});
  c.rename = sel('sg2im-rename', 'change what the selected object is; it keeps its id, box and relationships');
  c.rename.addEventListener('change', () => E.selected != null && E.push({op: 'rename_object', id: E.selected, name: c.rename.value}));
  c.subj = sel('sg2im-subject', 'the subject: "subject predicate object", e.g. "star above grass"');
  c.pred = sel('sg2im-predicate', 'how the subject relates to the object');
  c.obj = sel('sg2im-object', 'the object of the relationship');
  for (const s of [c.subj, c.pred, c.obj]) s.addEventListener('change', () => E.refresh());
  const rel = () => ({s: +c.subj.value, p: c.pred.value, o: +c.obj.value});
  c.addRel = btn('add relationship', '', 'sg2im-add-relationship', () => E.push({op: 'add_relationship', ...rel()}));
  c.setRel = btn('change selected', '', 'sg2im-set-relationship', () => E.push({op: 'set_relationship', id: E.selRel, ...rel()}));
  c.rels = h('ul', {class: 'sg2im-relationships sg2im-list'});
  const row = (label, ...kids) => h('label', {class: 'sg2im-row'}, h('span', {class: 'sg2im-key'}, label), ...kids);
  return [h('fieldset', {class: 'sg2im-group'}, h('legend', {}, 'Objects'),
            row('new object', c.name), c.addObj, c.objects, row('make it a', c.rename)),
          h('fieldset', {class: 'sg2im-group'}, h('legend', {}, 'Relationships'),
            row('subject', c.subj), row('predicate', c.pred), row('object', c.obj),
            h('div', {class: 'sg2im-buttons'}, c.addRel, c.setRel), c.rels)];
}

// ---- box and seed ----
function buildBoxSeed(E) {
  const c = E.c;
  c.boxLegend = h('legend', {}, 'Box');
  c.sliders = ['x', 'y', 'w', 'h'].map((k) => {
    const s = h('input', {type: 'range', min: k === 'x' || k === 'y' ? 0 : MIN, max: 1, step: 0.01, class: `sg2im-box-${k}`});
    const out = h('span', {class: 'sg2im-readout'});
    const box = () => { const [x, y, w, hh] = c.sliders.map((t) => +t.s.value), X = Math.min(x, 1 - MIN), Y = Math.min(y, 1 - MIN);
                        return [X, Y, Math.min(1, X + w), Math.min(1, Y + hh)].map(r4); };
    s.addEventListener('input', () => { E.override[E.selected] = box(); E.paint(); });
    s.addEventListener('change', () => E.push({op: 'set_box', id: E.selected, box: box()}));
    return {k, s, out, row: h('label', {class: 'sg2im-row'}, h('span', {class: 'sg2im-key'}, k), s, out)};
  });
  c.unpin = btn('unpin', 'let the model place this object again', 'sg2im-unpin', () => E.push({op: 'set_box', id: E.selected, box: null}));
  const setSeed = (s) => { E.pendingSeed = s; c.seed.value = s; c.seedError.textContent = ''; c.seed.classList.remove('sg2im-invalid');
                           E.push({op: 'set_seed', seed: s}); };
  c.seed = h('input', {type: 'text', inputmode: 'numeric', class: 'sg2im-seed', title: `the noise seed: a whole number from 0 to ${SEED_MAX}`,
    onchange: () => { const r = parseSeed(c.seed.value);
      if (r.error) { c.seedError.textContent = r.error; c.seed.classList.add('sg2im-invalid'); c.seed.setAttribute('aria-invalid', 'true'); }
      else { c.seed.removeAttribute('aria-invalid'); setSeed(r.seed); } }});
  c.seedError = h('div', {class: 'sg2im-seed-error', role: 'alert'});
  c.resample = btn('resample', 'draw new noise: the next seed', 'sg2im-resample', () => setSeed(nextSeed(E.pendingSeed ?? E.v.seed)));
  c.random = btn('random', 'draw new noise: a random seed', 'sg2im-random-seed', () => setSeed(randomSeed()));
  c.showSeeds = h('input', {type: 'checkbox', class: 'sg2im-show-seeds',
    onchange: () => E.push({op: 'show_seeds', on: c.showSeeds.checked})});
  return h('fieldset', {class: 'sg2im-group'}, c.boxLegend, ...c.sliders.map((t) => t.row), c.unpin,
           h('div', {class: 'sg2im-seedrow'}, h('span', {class: 'sg2im-key'}, 'seed'), c.seed, c.resample, c.random), c.seedError,
           h('label', {title: 'show the image for several seeds side by side'}, c.showSeeds, ' compare seeds'));
}

// ---- panels ----
function buildPanels(E) {
  const c = E.c, fig = (caption, w, hh, ...kids) => h('figure', {class: 'sg2im-panel', style: `width:${w + 2}px`},
    h('div', {class: 'sg2im-frame', style: `aspect-ratio:${w}/${hh}`}, ...kids), h('figcaption', {}, caption));
  c.graph = h('div', {class: 'sg2im-graph'});
  c.zoom = h('div', {class: 'sg2im-zoom'}, btn('+', 'zoom in (or Ctrl + wheel)', 'sg2im-zoom-in', () => E.zoomBy(1.5)),
    btn('−', 'zoom out', 'sg2im-zoom-out', () => E.zoomBy(1 / 1.5)), btn('fit', 'show the whole graph', 'sg2im-zoom-fit', () => E.zoomFit()));
  c.layout = h('canvas', {class: 'sg2im-layout', width: E.L, height: E.L});
  c.image = h('img', {class: 'sg2im-image', alt: 'generated image', width: E.P, height: E.P});
  c.overlay = h('canvas', {class: 'sg2im-image-overlay', width: E.P, height: E.P});
  c.empty = [0, 1, 2].map(() => h('div', {class: 'sg2im-empty'}, 'no objects yet'));
  const graphFig = fig('scene graph · click an object · drag to pan', E.G, E.P, c.graph, c.zoom, c.empty[0]);
  attachZoom(E, graphFig.firstChild, c.graph); attachDrag(E, c.layout); attachDrag(E, c.overlay);
  c.busy = h('span', {class: 'sg2im-busy'});
  c.status = h('div', {class: 'sg2im-status', role: 'status'});
  c.seeds = h('div', {class: 'sg2im-seeds'});
  return [h('div', {class: 'sg2im-panels'}, graphFig,
            fig('layout · drag a box or its corners', E.L, E.L, c.layout, c.empty[1]),
            fig('generated image · drag boxes here too', E.P, E.P, c.image, c.overlay, c.empty[2])),
          h('div', {class: 'sg2im-statusbar'}, c.busy, c.status), c.seeds];
}

// ---- history ----
// The last images with the edit that made each; a click goes back to that graph (an edit itself: undo returns).
// Before and after: the image before the last edit beside the image now. The view names the entries only; their
// images are those of earlier views, kept here (a view that missed some, opened later, asks the kernel once).
function buildHistory(E) {
  E.c.strip = h('div', {class: 'sg2im-strip'});
  E.c.beforeAfter = h('div', {class: 'sg2im-before-after'});
  E.stripImg = {};
  return h('div', {class: 'sg2im-history'}, E.c.beforeAfter, E.c.strip);
}
function refreshHistory(E) {
  const c = E.c, v = E.v, strip = v.strip || [], cur = strip.find((s) => s.current), img = E.stripImg;
  if (cur && v.image) img[cur.id] = v.image;
  const missing = strip.filter((s) => !img[s.id]).map((s) => s.id).filter((id) => !E.asked[id]);
  if (missing.length && !E.q.dead) {
    missing.forEach((id) => { E.asked[id] = true; });
    try { E.model.send({type: 'strip_images', ids: missing}); } catch (e) { E.q.kill(String(e.message || e)); }
  }
  const ba = v.before_after, key = JSON.stringify([strip.map((s) => [s.id, s.current, !!img[s.id]]), ba]);
  if (c.strip._key === key) return;
  c.strip._key = key;
  const thumb = (src, cap, cls, attrs = {}) => h('figure', {class: cls, ...attrs},
    src ? h('img', {src, width: 64, height: 64, alt: cap}) : h('div', {class: 'sg2im-noimg'}), h('figcaption', {}, cap));
  const shown = strip.length > 1 ? strip : [];
  c.strip.replaceChildren(...(shown.length ? [h('span', {class: 'sg2im-key'}, 'history')] : []), ...shown.map((s) =>
    thumb(img[s.id], s.label, `sg2im-step${s.current ? ' sg2im-current' : ''}`, {'data-id': s.id, title: s.current ? 'the graph now' :
      `go back to the graph after "${s.label}" (undo returns here)`, onclick: () => !s.current && E.push({op: 'history', id: s.id})})));
  c.beforeAfter.replaceChildren(...(ba && img[ba.before] && v.image ? [thumb(img[ba.before], 'before', 'sg2im-before'),
    h('span', {class: 'sg2im-arrow'}, `→ ${ba.label} →`), thumb(v.image, 'after', 'sg2im-after')] : []));
}

// ---- update ----
function update(E) {
  const t0 = performance.now(), v = E.v = E.model.get('view') || {}, c = E.c;
  E.q.ack(v.acks);
  if (!E.q.pending()) { E.override = {}; E.pendingSeed = null; }
  E.items = v.objects || [];
  const ids = E.items.map((it) => it.id), opts = E.items.map((it) => [it.id, it.label]);
  if (v.focus != null && ids.includes(v.focus)) { E.selected = v.focus; E.selRel = null; }
  if (!ids.includes(E.selected)) E.selected = ids.length ? ids[ids.length - 1] : null;
  const rels = v.relationships || [];
  if (v.focus_rel != null) E.selRel = v.focus_rel;
  if (!rels.some((r) => r.id === E.selRel)) E.selRel = null;
  setOptions(c.name, (v.object_names || []).map((n) => [n, n]));
  setOptions(c.rename, (v.object_names || []).map((n) => [n, n]));
  setOptions(c.pred, (v.predicates || []).map((p) => [p, p]));
  const changed = setOptions(c.subj, opts, ids[0]) | setOptions(c.obj, opts, ids[1]);
  // new objects: the two ends start on two different objects, so "add relationship" is ready
  if (changed && ids.length > 1 && c.subj.value === c.obj.value) c.obj.value = String(ids.find((i) => String(i) !== c.subj.value));
  if (v.focus_rel != null && E.selRel != null) E.showRel(E.selRel);
  const ex = v.example || '';
  setOptions(c.examples, [['', 'examples…'], ...(v.examples || []).map(([k, t]) => [k, k === ex && v.example_edited ? `${t} (edited)` : t])]);
  c.examples.value = ex;
  refreshGallery(E);
  setOptions(c.checkpoint, v.checkpoints || []); c.checkpoint.value = v.checkpoint || '';
  if (c.graph._svg !== v.svg) { c.graph.innerHTML = v.svg || ''; c.graph._svg = v.svg; }
  c.image.src = v.image || ''; c.image.style.visibility = v.image ? 'visible' : 'hidden';
  c.empty.forEach((e) => { e.style.display = E.items.length ? 'none' : 'flex'; });
  if (document.activeElement !== c.seed && !c.seed.classList.contains('sg2im-invalid')) c.seed.value = E.pendingSeed ?? v.seed ?? '';
  c.showSeeds.checked = !!v.show_seeds;
  c.seeds.replaceChildren(...(v.seeds ? [h('div', {class: 'sg2im-seedgrid'}, ...v.seeds.images.map(([s, src]) =>
    h('figure', {}, h('img', {src, width: 128, height: 128, alt: `seed ${s}`}), h('figcaption', {}, `seed ${s}`)))),
    h('p', {class: 'sg2im-seed-note'}, v.seeds.note)] : []));
  refreshHistory(E);
  if (E.first === undefined) E.first = v.scene_graph_json;
  E.root.dataset.sceneGraph = v.scene_graph_json || '';  // what is shown, for scripts and tests
  E.root.dataset.boxes = JSON.stringify(Object.fromEntries(E.items.map((it) => [it.id, it.box])));
  E.refresh();
  E.root.dataset.drawMs = Math.round(performance.now() - t0);  // time to show this view, and the kernel's
  E.root.dataset.kernelMs = Math.round((v.ms || {}).total || 0);
}
function refreshGallery(E) {
  const c = E.c, v = E.v, th = E.model.get('thumbs') || {}, key = JSON.stringify([Object.keys(th), v.example]);
  if (c.gallery._key === key) return;
  c.gallery._key = key;
  c.gallery.replaceChildren(...Object.entries(th).map(([k, src]) => h('button', {type: 'button', title: `load the example "${k}"`,
    class: `sg2im-thumb${k === v.example ? ' sg2im-current' : ''}`, 'data-key': k, onclick: () => E.push({op: 'example', key: k})},
    h('img', {src, width: 48, height: 48, alt: k}), h('span', {}, k))));
}

// ---- lists ----
function refreshLists(E) {
  const c = E.c, v = E.v, label = {};
  E.items.forEach((o) => { label[o.id] = o.label; });
  const okey = JSON.stringify(E.items.map((o) => [o.id, o.label, o.color, o.pinned]));
  if (c.objects._key !== okey) {
    c.objects._key = okey;
    c.objects.replaceChildren(...E.items.map((o) => h('li', {'data-id': o.id, title: `${o.label}: click to select`,
        onclick: () => E.select(o.id)},
      h('span', {class: 'sg2im-swatch', style: `background:${o.color}`}), h('span', {class: 'sg2im-text'}, `${o.label}${o.pinned ? ' (pinned)' : ''}`),
      btn('×', `remove ${o.label} and its relationships (Delete)`, 'sg2im-remove-object',
          (ev) => { ev.stopPropagation(); E.push({op: 'remove_object', id: o.id}); }))));
  }
  const rels = v.relationships || [], rkey = okey + JSON.stringify(rels);
  if (c.rels._key !== rkey) {
    c.rels._key = rkey;
    c.rels.replaceChildren(...rels.map((r) => h('li', {'data-id': r.id, title: 'click to select; change it with the fields above',
        onclick: () => E.selectRel(r.id)}, h('span', {class: 'sg2im-text'}, `${label[r.s]} ${r.p} ${label[r.o]}`),
      btn('×', 'remove this relationship', 'sg2im-remove-relationship',
          (ev) => { ev.stopPropagation(); E.push({op: 'remove_relationship', id: r.id}); }))));
  }
  for (const li of c.objects.children) li.classList.toggle('sg2im-selected', E.selRel == null && +li.dataset.id === E.selected);
  for (const li of c.rels.children) li.classList.toggle('sg2im-selected', +li.dataset.id === E.selRel);
  for (const g of c.graph.querySelectorAll('[data-obj]')) g.classList.toggle('sg2im-selected', +g.dataset.obj === E.selected);
}

// ---- refresh ----
const TIP = 'Tip: click an object in any panel to select it; drag its box on the layout or the image, or a corner to resize it; ' +
            'arrow keys nudge it, Delete removes it, Ctrl+Z undoes.';
function refresh(E) {
  const c = E.c, v = E.v, n = E.items.length, it = E.items.find((o) => o.id === E.selected), lim = v.limits || {};
  refreshLists(E);
  const same = c.subj.value === c.obj.value, full = n >= (lim.objects ?? Infinity), rfull = (v.relationships || []).length >= (lim.relationships ?? Infinity);
  c.addObj.disabled = full;
  c.addObj.title = full ? `a scene graph holds at most ${lim.objects} objects (the model's limit): remove one first` :
    'add an object of the kind chosen in "new object"';
  c.addRel.disabled = n < 2 || same || rfull;
  c.addRel.title = n < 2 ? 'a relationship needs two objects: add another object first' : same ? 'pick two different objects' :
    rfull ? `a scene graph holds at most ${lim.relationships} relationships` : 'add "subject predicate object" to the graph';
  c.setRel.disabled = E.selRel == null || n < 2 || same;
  c.setRel.title = E.selRel == null ? 'select a relationship in the list first' : 'give the selected relationship these ends and predicate (it keeps its place)';
  c.rename.disabled = !it;
  if (it && document.activeElement !== c.rename) c.rename.value = it.name;
  c.boxLegend.textContent = it ? `Box of ${it.label} (${it.pinned ? 'pinned' : 'placed by the model'})` : 'Box (select an object)';
  const b = it && E.boxOf(it) && clipBox(E.boxOf(it));
  c.sliders.forEach((t, k) => {
    t.s.disabled = !b; if (b) t.s.value = [b[0], b[1], b[2] - b[0], b[3] - b[1]][k];
    t.out.textContent = b ? (+t.s.value).toFixed(2) : '';
    t.s.title = it ? `${t.k} of the box of ${it.label}` : 'select an object first';
  });
  c.unpin.disabled = !(it && it.pinned);
  c.undo.disabled = !(v.can_undo || E.q.pending()); c.redo.disabled = !v.can_redo;
  c.png.disabled = c.png4.disabled = c.showSeeds.disabled = !n; c.examples.disabled = !(v.examples || []).length;
  c.checkpoint.disabled = (v.checkpoints || []).length < 2;
  const p = E.q.pending(), slow = E.q.waitingMs() > 30000;
  c.busy.textContent = p ? `working… ${p} action${p > 1 ? 's' : ''} waiting` : '';
  E.root.classList.toggle('sg2im-busy-now', p > 0); E.root.dataset.pending = p;
  E.root.dataset.mostPending = Math.max(p, +(E.root.dataset.mostPending || 0));
  E.root.dataset.ackMs = JSON.stringify(E.q.times.slice(-100));
  E.root.dataset.unsaved = E.unsaved() ? '1' : '0';  // the sg2im-app page asks before leaving (and Voila's kernel waits)
  const msgs = E.q.dead ? [['error', E.goneText()]] : [...((v.messages || []).length ? v.messages : [['tip', TIP]]),
    ...(slow ? [['warning', 'no answer from the kernel for 30 s: it is busy, or gone (then run the cell again, or reload the page)']] : [])];
  c.status.replaceChildren(...msgs.map(([lv, t]) => h('div', {class: `sg2im-msg sg2im-${lv}`}, t)));
  E.root.classList.toggle('sg2im-dead', !!E.q.dead);
  if (E.q.dead) for (const e of E.root.querySelectorAll('button, select, input')) e.disabled = true;
  E.paint();
}

// ---- render ----
function render({model, el}) {
  const E = {model, c: {}, v: {}, items: [], selected: null, selRel: null, override: {}, pendingSeed: null, P: 384, L: 340, G: 300};
  E.boxOf = (it) => E.override[it.id] || it.box;
  E.paint = () => { paintBoxes(E, E.c.layout, true); paintBoxes(E, E.c.overlay, false); };
  E.refresh = () => refresh(E);
  E.select = (id) => { E.selected = id; E.selRel = null; E.refresh(); };
  E.showRel = (id) => {
    const r = (E.v.relationships || []).find((x) => x.id === id);
    if (r) { E.c.subj.value = r.s; E.c.pred.value = r.p; E.c.obj.value = r.o; }
  };
  E.selectRel = (id) => { E.selRel = id; E.showRel(id); E.refresh(); };
  E.goneText = () => `The kernel behind this editor is gone (${E.q.dead}): nothing you do here reaches it. ` +
    (document.body.dataset.voila ? 'Reload the page for a new editor.' : 'Run the cell again for a new editor.');
  E.q = makeQueue((m) => model.send(m), () => E.v && E.c.busy && E.refresh());
  E.push = (a) => E.q.push(a);
  E.root = h('div', {class: 'sg2im-editor', tabindex: 0});
  const [panels, status, seeds] = buildPanels(E);
  E.root.append(...buildToolbar(E), status, h('div', {class: 'sg2im-controls'}, ...buildControls(E), buildBoxSeed(E)), panels,
                buildHistory(E), seeds);
  E.root.addEventListener('keydown', (ev) => { onKey(E, ev); ev.stopPropagation(); });  // typing here is no notebook shortcut
  const gone = () => E.q.kill('restarted or shut down');
  // Leaving the page with edits that were never saved asks first.
  E.unsaved = () => !E.q.dead && !!E.v.can_undo && E.v.scene_graph_json !== E.first && E.v.scene_graph_json !== E.saved;
  const onLeave = (ev) => { if (E.unsaved()) { ev.preventDefault(); ev.returnValue = ''; } };
  window.addEventListener('beforeunload', onLeave);
  el.append(E.root);
  E.asked = {};
  const onView = () => update(E), onThumbs = () => refreshGallery(E);
  const onMsg = (m) => { if (m && m.type === 'strip_images') { Object.assign(E.stripImg, m.images || {}); refreshHistory(E); } };
  model.on('change:view', onView); model.on('change:thumbs', onThumbs); model.on('msg:custom', onMsg);
  model.on('comm_live_update', gone); update(E);
  const tick = setInterval(() => E.q.waitingMs() > 30000 && E.refresh(), 5000);
  return () => { model.off('change:view', onView); model.off('change:thumbs', onThumbs); model.off('msg:custom', onMsg);
                 model.off('comm_live_update', gone); clearInterval(tick);
                 window.removeEventListener('beforeunload', onLeave); };
}
export default { render };
