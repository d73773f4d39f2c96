// The audit console's behaviour: the live tail (Server-Sent Events read with
// fetch), pause and resume, the CESQL filter checked as you type, the event
// list and detail, the counts-by-type chart, and the bearer token asked for
// when the service answers 401.
//
// Events are attacker-controlled: anything that reaches the page from the
// service is written with textContent or as an SVG attribute value, never
// parsed as HTML.
'use strict';

/** How many stored events a fresh stream replays (the newest, before filtering). */
const TAIL = 500;
/** The most events the page keeps; older ones leave the list and the chart. */
const MAX_EVENTS = 1000;
/** Waits between reconnection attempts, doubling up to the last. */
const BACKOFF_MS = [500, 1000, 2000, 5000, 10000];
const VALIDATE_DELAY_MS = 250;
const TOKEN_KEY = 'audit-console-token';
const SVG_NS = 'http://www.w3.org/2000/svg';
/** Colour classes for the busiest types (console.css gives each a colour of at least 3:1 against the page, in both schemes); the rest share `c-other`. */
const PALETTE = ['c0', 'c1', 'c2', 'c3', 'c4', 'c5', 'c6'];
const OTHER_COLOUR = 'c-other';
/** Attributes shown first in the detail, in this order; the rest follow by name. */
const ATTRIBUTE_ORDER = ['specversion', 'id', 'source', 'type', 'subject', 'time',
  'datacontenttype', 'dataschema', 'schemaurl', 'datacontentencoding'];

const $ = (id) => document.getElementById(id);

const state = {
  /** The filter the stream runs with (the text as applied). */
  filter: '',
  /** seq -> item ({seq, received_at, transport, event}), at most MAX_EVENTS. */
  events: new Map(),
  /** seq -> the list row showing it. */
  rows: new Map(),
  /** The highest seq received, to resume after it (null: none yet). */
  lastSeq: null,
  selected: null,
  paused: false,
  /** Events received while paused, shown on resume (the newest MAX_EVENTS). */
  pending: [],
  missed: 0,
  /** Events waiting for the next animation frame to be drawn. */
  incoming: [],
  frameRequested: false,
  /** Bumped on every (re)start, so an old stream loop knows to stop. */
  generation: 0,
  abort: null,
  token: sessionStorage.getItem(TOKEN_KEY) || '',
  tokenPrompt: null,
  validation: { text: null, ok: true, timer: null },
};

// ---------------------------------------------------------------- requests

function withAuth(headers) {
  const all = new Headers(headers || {});
  if (state.token) all.set('Authorization', `Bearer ${state.token}`);
  return all;
}

/** fetch with the token; on 401 asks for one and tries again. */
async function api(url, options = {}) {
  for (;;) {
    const response = await fetch(url, { ...options, headers: withAuth(options.headers), cache: 'no-store' });
    if (response.status !== 401) return response;
    await askForToken();
  }
}

/** The problem+json of an error answer, or a stand-in with its status. */
async function problemOf(response) {
  try {
    const problem = await response.json();
    if (problem && typeof problem === 'object') return problem;
  } catch (_) { /* not JSON: fall through */ }
  return { status: response.status, detail: `the service answered ${response.status}` };
}

/** One token prompt at a time, however many requests got a 401. */
function askForToken() {
  if (state.tokenPrompt) return state.tokenPrompt;
  const dialog = $('token-dialog');
  const input = $('token');
  setStatus('Token required', 'error');
  state.tokenPrompt = new Promise((resolve) => {
    const done = (token) => {
      $('token-form').removeEventListener('submit', onSubmit);
      $('token-cancel').removeEventListener('click', onCancel);
      dialog.removeEventListener('cancel', onCancel);
      if (dialog.open) dialog.close();
      state.tokenPrompt = null;
      resolve(token);
    };
    const onSubmit = (e) => {
      e.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      state.token = token;
      sessionStorage.setItem(TOKEN_KEY, token);
      input.value = '';
      done(token);
    };
    // Cancelling leaves the page waiting; reloading it asks again.
    const onCancel = (e) => {
      e.preventDefault();
      if (dialog.open) dialog.close();
      setStatus('Stopped: a token is required (reload the page to enter one)', 'error');
    };
    $('token-form').addEventListener('submit', onSubmit);
    $('token-cancel').addEventListener('click', onCancel);
    dialog.addEventListener('cancel', onCancel);
    dialog.showModal();
    input.focus();
  });
  return state.tokenPrompt;
}

// ---------------------------------------------------------------- the live tail

function setStatus(text, kind) {
  const status = $('status');
  status.textContent = text;
  status.dataset.state = kind || '';
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Stops the running stream, if any, and starts one with the applied filter. */
function restartStream() {
  if (state.abort) state.abort.abort();
  state.generation += 1;
  state.abort = new AbortController();
  runStream(state.generation, state.abort.signal);
}

/**
 * Reads the stream until it is replaced, reconnecting with Last-Event-ID
 * after the last event received (or replaying the newest TAIL again when
 * none was), with a growing wait between attempts.
 */
async function runStream(generation, signal) {
  let attempt = 0;
  while (generation === state.generation) {
    const params = new URLSearchParams();
    if (state.filter) params.set('filter', state.filter);
    const headers = { Accept: 'text/event-stream' };
    if (state.lastSeq !== null) headers['Last-Event-ID'] = String(state.lastSeq);
    else params.set('tail', String(TAIL));
    try {
      const response = await api(`/v1/events/stream?${params}`, { headers, signal });
      if (generation !== state.generation) return;
      if (response.status === 400) {
        const problem = await problemOf(response);
        showFilterError(state.filter, problem);
        setStatus('Stopped: the filter was refused', 'error');
        return;
      }
      if (!response.ok || !response.body) {
        const problem = await problemOf(response);
        throw new Error(problem.detail || `status ${response.status}`);
      }
      attempt = 0;
      showLiveStatus();
      await readEvents(response.body, generation);
      if (generation !== state.generation) return;
      setStatus('The stream ended; reconnecting…');
    } catch (error) {
      if (signal.aborted || generation !== state.generation) return;
      setStatus(`Disconnected (${error.message}); reconnecting…`, 'error');
    }
    await sleep(BACKOFF_MS[Math.min(attempt, BACKOFF_MS.length - 1)]);
    attempt += 1;
  }
}

/**
 * Parses text/event-stream as the HTML standard defines it (fields `event`,
 * `data`, `id`; comments and `retry` ignored) and hands each message on.
 */
async function readEvents(body, generation) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = '';
  let message = { event: '', data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done || generation !== state.generation) {
      reader.cancel().catch(() => {});
      return;
    }
    buffer += value;
    let newline;
    while ((newline = buffer.search(/\r\n|\r|\n/)) !== -1) {
      // A lone \r at the end may be the first half of \r\n: wait for more.
      if (buffer[newline] === '\r' && newline === buffer.length - 1) break;
      const line = buffer.slice(0, newline);
      buffer = buffer.slice(newline + (buffer.startsWith('\r\n', newline) ? 2 : 1));
      if (line === '') {
        if (message.data.length) onMessage(message.event || 'message', message.data.join('\n'));
        message = { event: '', data: [] };
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon === -1 ? line : line.slice(0, colon);
      let text = colon === -1 ? '' : line.slice(colon + 1);
      if (text.startsWith(' ')) text = text.slice(1);
      if (field === 'event') message.event = text;
      else if (field === 'data') message.data.push(text);
    }
  }
}

function onMessage(type, data) {
  if (type === 'error') {
    setStatus(`The service reported: ${data}`, 'error');
    return;
  }
  if (type !== 'audit') return;
  let item;
  try {
    item = JSON.parse(data);
  } catch (_) {
    return;
  }
  if (!item || typeof item.seq !== 'number' || !item.event || typeof item.event !== 'object') return;
  if (state.lastSeq === null || item.seq > state.lastSeq) state.lastSeq = item.seq;
  if (state.events.has(item.seq)) return;
  if (state.paused) {
    state.pending.push(item);
    if (state.pending.length > MAX_EVENTS) state.pending.shift();
    state.missed += 1;
    showMissed();
    return;
  }
  state.incoming.push(item);
  scheduleDraw();
}

function showLiveStatus() {
  if (state.paused) setStatus('Paused (still receiving)');
  else setStatus(state.filter ? 'Live, filtered' : 'Live', 'live');
}

function showMissed() {
  $('missed').textContent = state.paused
    ? `${state.missed} new ${state.missed === 1 ? 'event' : 'events'} while paused`
    : '';
}

function togglePause() {
  state.paused = !state.paused;
  const button = $('pause');
  button.setAttribute('aria-pressed', String(state.paused));
  button.textContent = state.paused ? 'Resume' : 'Pause';
  if (!state.paused) {
    state.incoming.push(...state.pending);
    state.pending = [];
    state.missed = 0;
    scheduleDraw();
  }
  showMissed();
  showLiveStatus();
}

// ---------------------------------------------------------------- the list

function scheduleDraw() {
  if (state.frameRequested) return;
  state.frameRequested = true;
  requestAnimationFrame(() => {
    state.frameRequested = false;
    drawIncoming();
  });
}

/** Adds the events received since the last frame, newest at the top. */
function drawIncoming() {
  const list = $('events');
  const fresh = state.incoming.filter((item) => !state.events.has(item.seq));
  state.incoming = [];
  if (!fresh.length) return;
  fresh.sort((a, b) => a.seq - b.seq);
  const newestFirst = document.createDocumentFragment();
  for (let i = fresh.length - 1; i >= 0; i -= 1) {
    const item = fresh[i];
    state.events.set(item.seq, item);
    const row = makeRow(item);
    state.rows.set(item.seq, row);
    newestFirst.appendChild(row);
  }
  // Events arrive in seq order, so the new ones all go on top; a row that
  // arrived late (a reconnect) is put in its place.
  const top = list.firstElementChild;
  const topSeq = top ? Number(top.dataset.seq) : -Infinity;
  if (fresh[0].seq > topSeq) {
    list.insertBefore(newestFirst, top);
  } else {
    for (const item of fresh) placeRow(list, state.rows.get(item.seq), item.seq);
  }
  trimOldest();
  if (!list.querySelector('button[tabindex="0"]')) {
    const first = list.querySelector('button');
    if (first) first.tabIndex = 0;
  }
  updateCounts();
  drawChart();
}

function placeRow(list, row, seq) {
  for (const other of list.children) {
    if (other !== row && Number(other.dataset.seq) < seq) {
      list.insertBefore(row, other);
      return;
    }
  }
  list.appendChild(row);
}

function trimOldest() {
  if (state.events.size <= MAX_EVENTS) return;
  const seqs = [...state.events.keys()].sort((a, b) => a - b);
  for (const seq of seqs.slice(0, state.events.size - MAX_EVENTS)) {
    state.events.delete(seq);
    const row = state.rows.get(seq);
    if (row) {
      const focused = row.contains(document.activeElement);
      row.remove();
      if (focused) $('events').focus();
    }
    state.rows.delete(seq);
  }
}

function text(value) {
  if (value === undefined || value === null) return '';
  return typeof value === 'string' ? value : JSON.stringify(value);
}

/** The time shown for an event: its `time`, or when it was received. */
function eventTime(item) {
  const when = new Date(item.event.time || item.received_at);
  return Number.isNaN(when.getTime()) ? null : when;
}

function span(className, content) {
  const element = document.createElement('span');
  element.className = className;
  element.textContent = content;
  return element;
}

/** Longest summary of an event's data shown in the list. */
const SUMMARY_CHARS = 80;

/**
 * What an event is about, from its data, for the list: a `name` member (a
 * user event's), else the first few plain members as `key: value` (not
 * `id`, which the subject usually repeats), else a string's start. Shown as
 * text, like everything from an event.
 */
function summarize(data) {
  let summary = '';
  if (typeof data === 'string') {
    summary = data;
  } else if (data !== null && typeof data === 'object' && !Array.isArray(data)) {
    if (typeof data.name === 'string') {
      summary = data.name;
    } else {
      summary = Object.entries(data)
        .filter(([key, value]) => key !== 'id' && value !== null && typeof value !== 'object')
        .slice(0, 3)
        .map(([key, value]) => `${key}: ${value}`)
        .join(', ');
    }
  }
  summary = summary.replace(/\s+/g, ' ').trim();
  return summary.length > SUMMARY_CHARS ? `${summary.slice(0, SUMMARY_CHARS - 1)}…` : summary;
}

function makeRow(item) {
  const li = document.createElement('li');
  li.dataset.seq = String(item.seq);
  li.className = 'new';
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'row';
  button.tabIndex = -1;
  button.setAttribute('aria-controls', 'detail');
  const when = eventTime(item);
  const time = document.createElement('time');
  time.className = 'cell time';
  if (when) {
    time.dateTime = when.toISOString();
    time.textContent = when.toLocaleTimeString([], { hour12: false });
    time.title = when.toISOString();
  }
  button.append(
    time,
    span('cell type', text(item.event.type)),
    span('cell subject', text(item.event.subject)),
    span('cell summary', summarize(item.event.data)),
    span('cell transport', text(item.transport)),
  );
  button.addEventListener('click', () => select(item.seq));
  li.appendChild(button);
  return li;
}

function updateCounts() {
  const n = state.events.size;
  $('count').textContent = `(${n}${n >= MAX_EVENTS ? ', the newest' : ''})`;
  $('empty').hidden = n > 0;
}

/** Clears what the page shows, for a new filter. */
function resetEvents() {
  state.events.clear();
  state.rows.clear();
  state.incoming = [];
  state.pending = [];
  state.missed = 0;
  state.lastSeq = null;
  state.selected = null;
  $('events').replaceChildren();
  showDetail(null);
  showMissed();
  updateCounts();
  drawChart();
}

/** Arrow keys, Home and End move between rows; the list is one tab stop. */
function onListKey(event) {
  const buttons = [...$('events').querySelectorAll('button')];
  const current = buttons.indexOf(document.activeElement);
  if (current === -1) return;
  let next = null;
  if (event.key === 'ArrowDown') next = Math.min(current + 1, buttons.length - 1);
  else if (event.key === 'ArrowUp') next = Math.max(current - 1, 0);
  else if (event.key === 'Home') next = 0;
  else if (event.key === 'End') next = buttons.length - 1;
  if (next === null) return;
  event.preventDefault();
  focusRow(buttons[next]);
}

function focusRow(button) {
  for (const other of $('events').querySelectorAll('button[tabindex="0"]')) other.tabIndex = -1;
  button.tabIndex = 0;
  button.focus();
}

// ---------------------------------------------------------------- the detail

function select(seq) {
  const item = state.events.get(seq);
  if (!item) return;
  if (state.selected !== null) state.rows.get(state.selected)?.querySelector('button')?.removeAttribute('aria-current');
  state.selected = seq;
  const button = state.rows.get(seq)?.querySelector('button');
  if (button) {
    button.setAttribute('aria-current', 'true');
    focusRow(button);
  }
  showDetail(item);
  // One column (a phone): the detail is below the list, so take the reader there.
  if (window.matchMedia('(max-width: 760px)').matches) $('detail').focus();
}

function showDetail(item) {
  $('detail-empty').hidden = item !== null;
  $('detail-body').hidden = item === null;
  $('detail-title').textContent = item ? `Event ${item.seq}` : 'Event';
  if (!item) return;
  const event = item.event;
  const names = Object.keys(event).filter((name) => name !== 'data' && name !== 'data_base64');
  names.sort((a, b) => {
    const ia = ATTRIBUTE_ORDER.indexOf(a);
    const ib = ATTRIBUTE_ORDER.indexOf(b);
    if (ia !== -1 || ib !== -1) return (ia === -1 ? 99 : ia) - (ib === -1 ? 99 : ib);
    return a < b ? -1 : a > b ? 1 : 0;
  });
  const list = document.createDocumentFragment();
  const add = (name, value) => {
    const dt = document.createElement('dt');
    dt.textContent = name;
    const dd = document.createElement('dd');
    dd.textContent = text(value);
    list.append(dt, dd);
  };
  for (const name of names) add(name, event[name]);
  add('seq (audit)', item.seq);
  add('received_at (audit)', item.received_at);
  add('transport (audit)', item.transport);
  $('attributes').replaceChildren(list);
  const data = $('data');
  if ('data' in event) {
    data.textContent = typeof event.data === 'string' ? event.data : JSON.stringify(event.data, null, 2);
  } else if ('data_base64' in event) {
    data.textContent = `(binary, base64)\n${text(event.data_base64)}`;
  } else {
    data.textContent = '(no data)';
  }
}

// ---------------------------------------------------------------- the chart

/** Bucket widths to choose from, so that the chart has at most 30 bars. */
const BUCKETS_MS = [1, 5, 10, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 86400]
  .map((s) => s * 1000);
const MAX_BARS = 30;

function drawChart() {
  const host = $('chart');
  const width = Math.max(host.clientWidth, 240);
  const height = 140;
  const pad = { left: 34, right: 6, top: 8, bottom: 22 };
  const items = [...state.events.values()]
    .map((item) => ({ type: text(item.event.type), at: Date.parse(item.received_at) }))
    .filter((item) => !Number.isNaN(item.at));

  // The busiest types get colours; the others share one.
  const totals = new Map();
  for (const item of items) totals.set(item.type, (totals.get(item.type) || 0) + 1);
  const ranked = [...totals.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
  const colourOf = new Map(ranked.slice(0, PALETTE.length).map(([type], i) => [type, PALETTE[i]]));
  const group = (type) => (colourOf.has(type) ? type : 'other types');

  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('role', 'img');
  let summary = 'No events to chart yet.';

  if (items.length) {
    const newest = Math.max(...items.map((i) => i.at));
    const oldest = Math.min(...items.map((i) => i.at));
    const bucket = BUCKETS_MS.find((ms) => (newest - oldest) / ms < MAX_BARS - 1) || BUCKETS_MS[BUCKETS_MS.length - 1];
    // Always MAX_BARS slots ending with the newest event's, so the axis reads as a time line.
    const last = Math.floor(newest / bucket);
    const first = last - MAX_BARS + 1;
    const bars = MAX_BARS;
    const counts = Array.from({ length: bars }, () => new Map());
    for (const item of items) {
      const index = Math.floor(item.at / bucket) - first;
      if (index < 0) continue;
      const key = group(item.type);
      counts[index].set(key, (counts[index].get(key) || 0) + 1);
    }
    const peak = Math.max(1, ...counts.map((c) => [...c.values()].reduce((s, n) => s + n, 0)));
    const plotW = width - pad.left - pad.right;
    const plotH = height - pad.top - pad.bottom;
    const slot = plotW / bars;
    const barW = Math.max(2, slot * 0.8);
    const order = [...colourOf.keys(), 'other types'];
    counts.forEach((byType, index) => {
      let y = pad.top + plotH;
      const x = pad.left + index * slot + (slot - barW) / 2;
      const start = new Date((first + index) * bucket);
      for (const key of order) {
        const n = byType.get(key);
        if (!n) continue;
        const h = (n / peak) * plotH;
        y -= h;
        const rect = svgElement('rect', {
          x: x.toFixed(1), y: y.toFixed(1), width: barW.toFixed(1), height: Math.max(h, 1).toFixed(1),
          class: colourOf.get(key) || OTHER_COLOUR,
        });
        const title = document.createElementNS(SVG_NS, 'title');
        title.textContent = `${key}: ${n} from ${start.toLocaleTimeString([], { hour12: false })}`;
        rect.appendChild(title);
        svg.appendChild(rect);
      }
    });
    svg.appendChild(svgElement('line', {
      class: 'axis', x1: pad.left, x2: width - pad.right, y1: pad.top + plotH, y2: pad.top + plotH,
    }));
    svg.appendChild(svgText(String(peak), pad.left - 6, pad.top + 10, 'end'));
    svg.appendChild(svgText('0', pad.left - 6, pad.top + plotH, 'end'));
    const label = (ms) => new Date(ms).toLocaleTimeString([], { hour12: false });
    svg.appendChild(svgText(label(first * bucket), pad.left, height - 6, 'start'));
    svg.appendChild(svgText(`${label((last + 1) * bucket)} (${bucket / 1000} s a bar)`, width - pad.right, height - 6, 'end'));
    summary = `${items.length} events by type, in bars of ${bucket / 1000} seconds: `
      + ranked.map(([type, n]) => `${type} ${n}`).join(', ');
  }
  if (!items.length) svg.appendChild(svgText('No events to chart yet.', width / 2, height / 2, 'middle'));
  svg.setAttribute('aria-label', summary);
  host.replaceChildren(svg);

  const legend = document.createDocumentFragment();
  const entries = ranked.slice(0, PALETTE.length).map(([type, n]) => [type, n, colourOf.get(type)]);
  const others = ranked.slice(PALETTE.length).reduce((s, [, n]) => s + n, 0);
  if (others) entries.push(['other types', others, OTHER_COLOUR]);
  for (const [type, n, colour] of entries) {
    const li = document.createElement('li');
    const swatch = document.createElementNS(SVG_NS, 'svg');
    swatch.setAttribute('class', 'swatch');
    swatch.setAttribute('viewBox', '0 0 10 10');
    swatch.setAttribute('aria-hidden', 'true');
    swatch.appendChild(svgElement('rect', { width: 10, height: 10, class: colour }));
    li.append(swatch, document.createTextNode(`${type}: ${n}`));
    legend.appendChild(li);
  }
  $('legend').replaceChildren(legend);
}

function svgElement(name, attributes) {
  const element = document.createElementNS(SVG_NS, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  return element;
}

function svgText(content, x, y, anchor) {
  const element = svgElement('text', { x, y, 'text-anchor': anchor });
  element.textContent = content;
  return element;
}

// ---------------------------------------------------------------- the filter

/** The column (characters from 1) as an index into a JS (UTF-16) string. */
function utf16Index(value, column) {
  return Array.from(value).slice(0, Math.max(column - 1, 0)).join('').length;
}

function showFilterError(value, problem) {
  const input = $('filter');
  input.setAttribute('aria-invalid', 'true');
  const message = $('filter-message');
  message.dataset.state = 'error';
  message.textContent = problem.detail || 'The filter is not valid.';
  const pointer = $('filter-pointer');
  if (typeof problem.column === 'number') {
    // The expression with a caret under the column the service named.
    const caret = ' '.repeat(Math.max(problem.column - 1, 0));
    pointer.textContent = `${value}\n${caret}^`;
    pointer.hidden = false;
  } else {
    pointer.hidden = true;
  }
}

function showFilterOk(message) {
  $('filter').removeAttribute('aria-invalid');
  const element = $('filter-message');
  element.dataset.state = message ? 'ok' : '';
  element.textContent = message;
  $('filter-pointer').hidden = true;
}

/** Asks the service whether `value` is a filter it accepts; true or false. */
async function validate(value) {
  if (state.validation.text === value) return state.validation.ok;
  if (value.trim() === '') {
    state.validation = { ...state.validation, text: value, ok: true };
    showFilterOk('');
    return true;
  }
  const response = await api(`/v1/filters/validate?${new URLSearchParams({ filter: value })}`);
  // The box changed while the answer was on its way: that answer is stale.
  if ($('filter').value !== value) return false;
  const ok = response.status === 204;
  state.validation = { ...state.validation, text: value, ok };
  if (ok) {
    showFilterOk(value === state.filter ? 'Valid; applied.' : 'Valid. Press Enter to apply.');
  } else {
    showFilterError(value, await problemOf(response));
  }
  return ok;
}

function onFilterInput() {
  clearTimeout(state.validation.timer);
  const value = $('filter').value;
  state.validation.timer = setTimeout(() => {
    validate(value).catch((error) => showFilterError(value, { detail: `Could not check the filter: ${error.message}` }));
  }, VALIDATE_DELAY_MS);
}

async function onFilterSubmit(event) {
  event.preventDefault();
  clearTimeout(state.validation.timer);
  const value = $('filter').value.trim();
  let ok;
  try {
    ok = await validate(value);
  } catch (error) {
    showFilterError(value, { detail: `Could not check the filter: ${error.message}` });
    return;
  }
  if (!ok) {
    $('filter').focus();
    return;
  }
  applyFilter(value);
}

function applyFilter(value) {
  state.filter = value;
  // The filter is kept in the address (after #), so a link or a reload shows the same view.
  const hash = value ? `#${new URLSearchParams({ filter: value })}` : '';
  history.replaceState(null, '', `${location.pathname}${hash}`);
  showFilterOk(value ? 'Valid; applied.' : '');
  resetEvents();
  setStatus('Connecting…');
  restartStream();
}

// ---------------------------------------------------------------- start

function start() {
  $('filter-form').addEventListener('submit', onFilterSubmit);
  $('filter').addEventListener('input', onFilterInput);
  $('pause').addEventListener('click', togglePause);
  $('events').addEventListener('keydown', onListKey);
  $('back').addEventListener('click', () => {
    const button = state.rows.get(state.selected)?.querySelector('button');
    if (button) focusRow(button);
  });
  $('detail').addEventListener('keydown', (event) => {
    if (event.key === 'Escape') $('back').click();
  });
  document.addEventListener('keydown', (event) => {
    const typing = event.target instanceof HTMLInputElement || event.target instanceof HTMLTextAreaElement;
    if (event.key === '/' && !typing && !event.ctrlKey && !event.metaKey && !event.altKey) {
      event.preventDefault();
      $('filter').focus();
    }
  });
  new ResizeObserver(() => drawChart()).observe($('chart'));

  const initial = new URLSearchParams(location.hash.slice(1)).get('filter') || '';
  $('filter').value = initial;
  state.filter = initial;
  if (initial) validate(initial).catch(() => {});
  updateCounts();
  drawChart();
  restartStream();
}

document.addEventListener('DOMContentLoaded', start);
