// The audit console's behaviour: the live tail (Server-Sent Events read with
// fetch), pause and resume, the CESQL filter checked as you type, the event
// list and detail, the counts-by-type chart, the bearer token asked for
// when the service answers 401, and the replays panel (a list of replays and
// a dry run of the applied filter, with an admin token).
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
const ADMIN_TOKEN_KEY = 'audit-console-admin-token';
/** How often the replays panel reads the replays, while it has a token. */
const REPLAYS_REFRESH_MS = 2000;
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
  adminToken: sessionStorage.getItem(ADMIN_TOKEN_KEY) || '',
  replaysTimer: null,
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
  checkInclusion(item.seq);
}

// ---------------------------------------------------------------- the proof

/**
 * Checks, in this browser, that the event is in the transparency log: the
 * latest checkpoint's Ed25519 signature against the key at /log/key, the
 * event's entry rebuilt from the item the API serves (the README's recipe),
 * its data against its commitment, and its inclusion proof up to the signed
 * root (RFC 9162). WebCrypto does the SHA-256 and the Ed25519; nothing here
 * trusts a verdict of the server's.
 */
async function checkInclusion(seq) {
  const out = $('proof');
  const show = (message, kind) => {
    if (state.selected !== seq) return;
    out.textContent = message;
    out.dataset.kind = kind;
  };
  show('Checking…', 'pending');
  try {
    const verdict = await proveInclusion(seq);
    show(verdict.message, verdict.kind);
  } catch (error) {
    show(`Could not check: ${error.message}`, 'error');
  }
}

async function proveInclusion(seq) {
  const keyResponse = await api('/log/key');
  if (keyResponse.status === 404) return { message: 'The transparency log is off.', kind: 'off' };
  if (!keyResponse.ok) throw new Error(`/log/key answered ${keyResponse.status}`);
  const checkpointResponse = await api('/log/checkpoint');
  if (!checkpointResponse.ok) throw new Error(`/log/checkpoint answered ${checkpointResponse.status}`);
  const checkpoint = await openCheckpoint(await checkpointResponse.text(), (await keyResponse.text()).trim());
  const signed = Date.parse(checkpointResponse.headers.get('Last-Modified') || '');
  const age = Number.isNaN(signed) ? '' : `, signed ${ageText(Date.now() - signed)} ago`;
  const where = `the checkpoint of ${checkpoint.size} events${age}`;

  const pageResponse = await api(`/v1/events?after=${seq - 1}&limit=1`);
  if (!pageResponse.ok) throw new Error(`/v1/events answered ${pageResponse.status}`);
  const pageText = await pageResponse.text();
  const item = JSON.parse(pageText).events[0];
  if (!item || item.seq !== seq) throw new Error('the event was not served');
  if (!item.log || item.log.index >= checkpoint.size) {
    return { message: `Not in ${where} yet: events join the log within a second or so; open it again.`, kind: 'pending' };
  }
  const commitment = item.log.commitment ? base64Bytes(item.log.commitment) : null;
  let dataNote = 'no data';
  const data = rawMember(pageText, ['events', 0, 'event', 'data'])
    ?? rawMember(pageText, ['events', 0, 'event', 'data_base64']);
  if (data !== null) {
    if (!commitment || !item.log.salt) return { message: 'FAILED: the event has data its leaf does not commit to.', kind: 'bad' };
    const digest = await sha256(concat(base64Bytes(item.log.salt), utf8(data)));
    if (!equal(digest, commitment)) return { message: 'FAILED: the data does not match its commitment.', kind: 'bad' };
    dataNote = 'its data matches its commitment';
  } else if (item.erased) {
    dataNote = 'its data was erased';
  }
  const proofResponse = await api(`/v1/events/${seq}/proof?size=${checkpoint.size}`);
  if (!proofResponse.ok) throw new Error(`the proof answered ${proofResponse.status}`);
  const proof = (await proofResponse.json()).proof.map(base64Bytes);
  const leaf = await sha256(concat(new Uint8Array([0]), entryOf(item, commitment)));
  const root = await rootFromProof(item.log.index, checkpoint.size, leaf, proof);
  if (!root || !equal(root, checkpoint.root)) {
    return { message: `FAILED: the inclusion proof does not lead to the root of ${where}.`, kind: 'bad' };
  }
  return {
    message: `Verified in this browser: leaf ${item.log.index} of ${where} (${checkpoint.origin}); ${dataNote}.`,
    kind: 'ok',
  };
}

function ageText(ms) {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  return `${Math.round(s / 3600)} h`;
}

const encoder = new TextEncoder();
function utf8(value) { return encoder.encode(value); }
function base64Bytes(value) { return Uint8Array.from(atob(value), (c) => c.charCodeAt(0)); }
async function sha256(bytes) { return new Uint8Array(await crypto.subtle.digest('SHA-256', bytes)); }
function equal(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }
function concat(...parts) {
  const all = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) { all.set(part, at); at += part.length; }
  return all;
}

/** A C2SP signed note's checkpoint, once its Ed25519 signature verifies. */
async function openCheckpoint(note, verifierKey) {
  // name+id+key: the key's base64 may hold a '+' too, so only the first
  // two separate fields.
  const [name, id, ...rest] = verifierKey.split('+');
  const key64 = rest.join('+');
  const keyBytes = base64Bytes(key64 || '');
  if (!name || keyBytes.length !== 33 || keyBytes[0] !== 1) throw new Error('the verifier key is not Ed25519');
  const keyId = (await sha256(concat(utf8(`${name}\n`), keyBytes))).slice(0, 4);
  if (!equal(keyId, hexBytes(id))) throw new Error('the verifier key id does not match the key');
  const split = note.lastIndexOf('\n\n');
  if (split < 0) throw new Error('the checkpoint is not a signed note');
  const text = note.slice(0, split + 1);
  const publicKey = await crypto.subtle.importKey('raw', keyBytes.slice(1), { name: 'Ed25519' }, false, ['verify']);
  let verified = false;
  for (const line of note.slice(split + 2).split('\n')) {
    const match = /^\u2014 (\S+) (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const signature = base64Bytes(match[2]);
    if (!equal(signature.slice(0, 4), keyId)) continue;
    verified = await crypto.subtle.verify({ name: 'Ed25519' }, publicKey, signature.slice(4), utf8(text));
    if (verified) break;
  }
  if (!verified) throw new Error('the checkpoint is not signed by the log\'s key');
  const [origin, size, root] = text.split('\n');
  if (origin !== name) throw new Error('the checkpoint is of another log');
  return { origin, size: Number(size), root: base64Bytes(root) };
}

function hexBytes(hex) { return Uint8Array.from((hex || '').match(/../g) || [], (h) => parseInt(h, 16)); }

/** The event's log entry, rebuilt as the README says. */
function entryOf(item, commitment) {
  const parts = [new Uint8Array([1])];
  const field = (name, value) => {
    const n = utf8(name);
    const head = new DataView(new ArrayBuffer(2));
    head.setUint16(0, n.length);
    const size = new DataView(new ArrayBuffer(4));
    size.setUint32(0, value.length);
    parts.push(new Uint8Array(head.buffer), n, new Uint8Array(size.buffer), value);
  };
  field(':received_at', utf8(item.received_at));
  field(':transport', utf8(item.transport));
  const names = Object.keys(item.event).filter((n) => n !== 'data' && n !== 'data_base64');
  // Byte order of the UTF-8 names: attribute names are ASCII, where it is
  // the order of the code units.
  names.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  for (const name of names) {
    const value = item.event[name];
    field(name, utf8(typeof value === 'string' ? value : JSON.stringify(value)));
  }
  if (commitment) field(':data', commitment);
  const entry = concat(...parts);
  if (entry.length > 65535) throw new Error('entries over 64 KiB are checked by audit-service verify');
  return entry;
}

/** RFC 9162 2.1.3.2: the root an inclusion proof leads to, or null. */
async function rootFromProof(index, size, leaf, proof) {
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  const node = (left, right) => sha256(concat(new Uint8Array([1]), left, right));
  for (const p of proof) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await node(p, r);
      if (fn % 2 === 0) {
        while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
      }
    } else {
      r = await node(r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

/**
 * The exact text of the JSON value at `path` in `text`, or null: the data's
 * commitment covers its bytes as served, which JSON.parse does not keep.
 */
function rawMember(text, path) {
  let at = 0;
  const space = () => { while (/\s/.test(text[at] || '')) at++; };
  const skipString = () => {
    at++;
    while (text[at] !== '"') at += text[at] === '\\' ? 2 : 1;
    at++;
  };
  const skipValue = () => {
    space();
    const start = at;
    if (text[at] === '"') skipString();
    else if (text[at] === '{' || text[at] === '[') {
      let depth = 0;
      do {
        if (text[at] === '"') { skipString(); continue; }
        if (text[at] === '{' || text[at] === '[') depth++;
        if (text[at] === '}' || text[at] === ']') depth--;
        at++;
      } while (depth > 0 && at < text.length);
    } else while (at < text.length && !/[,}\]\s]/.test(text[at])) at++;
    return text.slice(start, at);
  };
  for (const step of path) {
    space();
    if (typeof step === 'number') {
      if (text[at] !== '[') return null;
      at++;
      for (let i = 0; i < step; i++) { skipValue(); space(); if (text[at] !== ',') return null; at++; }
    } else {
      if (text[at] !== '{') return null;
      at++;
      for (;;) {
        space();
        if (text[at] !== '"') return null;
        const keyStart = at;
        skipString();
        const key = JSON.parse(text.slice(keyStart, at));
        space();
        at++; // the colon
        if (key === step) break;
        skipValue();
        space();
        if (text[at] !== ',') return null;
        at++;
      }
    }
  }
  space();
  return skipValue();
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

/** The texts of a response's `Warning` headers (`199 agent "text"`, several joined by commas). */
function warningsOf(response) {
  const header = response.headers.get('Warning') || '';
  return Array.from(header.matchAll(/"((?:[^"\\]|\\.)*)"/g), (match) => match[1]);
}

/**
 * A valid filter that names an attribute no stored event has (a typo such as
 * `subjekt`) matches nothing: the service says so, and this shows it under the box.
 */
function showFilterHint(warnings) {
  const hint = $('filter-hint');
  hint.textContent = warnings
    .map((text) => `${text.charAt(0).toUpperCase()}${text.slice(1)}${/[.?!]$/.test(text) ? '' : '.'}`)
    .join(' ');
  hint.hidden = warnings.length === 0;
}

/** Asks the service whether `value` is a filter it accepts; true or false. */
async function validate(value) {
  if (state.validation.text === value) return state.validation.ok;
  if (value.trim() === '') {
    state.validation = { ...state.validation, text: value, ok: true };
    showFilterOk('');
    showFilterHint([]);
    return true;
  }
  const response = await api(`/v1/filters/validate?${new URLSearchParams({ filter: value })}`);
  // The box changed while the answer was on its way: that answer is stale.
  if ($('filter').value !== value) return false;
  const ok = response.status === 204;
  state.validation = { ...state.validation, text: value, ok };
  showFilterHint(ok ? warningsOf(response) : []);
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

// ---------------------------------------------------------------- replays

/** A request of the replays API, with the admin token. */
function adminApi(url, options = {}) {
  const headers = new Headers(options.headers || {});
  if (state.adminToken) headers.set('Authorization', `Bearer ${state.adminToken}`);
  return fetch(url, { ...options, headers, cache: 'no-store' });
}

function setReplayMessage(message, kind) {
  const element = $('replay-message');
  element.textContent = message;
  if (kind) element.dataset.state = kind;
  else delete element.dataset.state;
}

/** Reads the replays and shows them, newest first; again every few seconds. */
async function refreshReplays() {
  clearTimeout(state.replaysTimer);
  if (!state.adminToken) return;
  try {
    const response = await adminApi('/v1/replays');
    if (!response.ok) {
      const problem = await problemOf(response);
      setReplayMessage(`Replays: ${problem.detail || response.status}`, 'error');
      return;
    }
    showReplays((await response.json()).replays);
  } catch (error) {
    setReplayMessage(`Replays: ${error.message}`, 'error');
  }
  state.replaysTimer = setTimeout(refreshReplays, REPLAYS_REFRESH_MS);
}

function showReplays(replays) {
  const rows = replays.map((replay) => {
    const row = document.createElement('tr');
    row.dataset.id = replay.id;
    const total = Math.max(replay.to_seq - replay.from_seq + 1, 0);
    const done = Math.min(Math.max(replay.position - replay.from_seq + 1, 0), total);
    const progress = document.createElement('progress');
    progress.max = total || 1;
    progress.value = total ? done : 1;
    progress.setAttribute('aria-label', `seq ${done} of ${total}`);
    const target = replay.request.target;
    const cells = [
      text(replay.created_at),
      text(replay.state) + (replay.request.dry_run ? ' (dry run)' : ''),
      text(replay.request.filter || 'every event'),
      target ? text(target.url || target.topic || target.subject || target.kind) : '-',
    ];
    for (const value of cells) {
      const cell = document.createElement('td');
      cell.textContent = value;
      row.append(cell);
    }
    const progressCell = document.createElement('td');
    progressCell.append(progress, ` ${done}/${total}`);
    row.append(progressCell);
    for (const value of [replay.sent, replay.failed, replay.dead_lettered]) {
      const cell = document.createElement('td');
      cell.className = 'number';
      cell.textContent = String(value);
      row.append(cell);
    }
    return row;
  });
  $('replay-rows').replaceChildren(...rows);
  $('replays').hidden = replays.length === 0;
}

/** Starts a dry run of the applied filter, then follows it in the list. */
async function onDryRun(event) {
  event.preventDefault();
  const token = $('admin-token').value.trim();
  if (token) {
    state.adminToken = token;
    sessionStorage.setItem(ADMIN_TOKEN_KEY, token);
  }
  if (!state.adminToken) {
    setReplayMessage('Enter an admin token first.', 'error');
    $('admin-token').focus();
    return;
  }
  const body = { dry_run: true };
  if (state.filter) body.filter = state.filter;
  try {
    const response = await adminApi('/v1/replays', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (response.status !== 202) {
      const problem = await problemOf(response);
      setReplayMessage(`Not started: ${problem.detail || response.status}`, 'error');
      return;
    }
    const replay = await response.json();
    setReplayMessage(`Dry run ${replay.id} started.`, 'ok');
    refreshReplays();
  } catch (error) {
    setReplayMessage(`Not started: ${error.message}`, 'error');
  }
}

// ---------------------------------------------------------------- start

function start() {
  $('filter-form').addEventListener('submit', onFilterSubmit);
  $('filter').addEventListener('input', onFilterInput);
  $('pause').addEventListener('click', togglePause);
  $('replay-form').addEventListener('submit', onDryRun);
  if (state.adminToken) refreshReplays();
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
