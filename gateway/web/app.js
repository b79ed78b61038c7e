// QLC web UI: ask a question, watch the steps stream, read the answer.
//
// Plain browser JavaScript, no build step, no dependencies. The contract it
// follows is docs/api.md. A chain run shows its four stages side by side; a
// strategy run (moa, council, vote) announces its steps first (run_planned),
// and the page lays them out in rows: parallel steps (a layer's proposers,
// the members, the rankers, the samples) as columns side by side, the final
// step (aggregator, chairman, answer) full width below. Every event names
// its step (the stage's name for a chain, and for logs from before steps),
// and every step's text is rebuilt from its own deltas: parallel steps'
// deltas interleave in the log. Four rules shape this file:
//
//  1. Events are the truth. Every event has a per-run seq; the view remembers
//     the last seq it applied and ignores anything at or below it, so a
//     reconnect (which resumes with Last-Event-ID) never shows a token twice.
//     A coalesced token_delta covers from_seq..seq; if it overlaps what we
//     already applied, the known prefix is cut off (or, when that cannot be
//     proven, the whole log is replayed from seq 1). A delta too long for one
//     event comes in parts (part.offset..part.end of part.size bytes); its seq
//     counts as applied after its last part, and a reconnect in between
//     resumes inside it (Last-Event-ID "seq:end"). Events do not repeat stage
//     outputs or the answer: the stage's streamed text is its output
//     (stage_completed.output_bytes checks it; on a mismatch the run resource
//     is read), and the answer is the final stage's output.
//  2. Smooth at thousands of tokens/s: deltas go to per-step buffers and are
//     written to the DOM once per animation frame (Text.appendData on one text
//     node per step; nothing is re-rendered per token).
//  3. Model text never reaches innerHTML. Stage output is a text node; the
//     final answer is rendered by a small markdown renderer that builds DOM
//     nodes and sets only textContent (escaping is done by the DOM itself).
//  4. The API key travels only in the Authorization header. It comes from the
//     gateway's local session (GET /ui/session, local mode on loopback) or from
//     the user (kept in localStorage); it is never put in a URL, in the page's
//     text or in the console. That is why the event stream is read with
//     fetch() and SSEParser rather than EventSource, which cannot send headers.
'use strict';

(() => {
  // The chain's stages' names in pipeline order, read at start-up from the
  // table the gateway writes into the page (stagework's stage table; see
  // stageTable()), and every role's title and description (the role table:
  // the chain's stages and the strategies' roles), by name.
  let STAGES = [];
  let ROLES = new Map();
  // How the strategies are named in the profile picker; an unknown one by its own name.
  const STRATEGY_TITLES = { chain: 'Chain', moa: 'Mixture-of-Agents', council: 'Council', vote: 'Vote' };
  const TERMINAL = new Set(['completed', 'failed', 'cancelled']);
  const STORE_KEY = 'qlc.apiKey'; // the API key the user gave (sent as a Bearer token)
  const STORE_RUNS = 'qlc_runs'; // recent runs: [{id, query, profile, created}]
  const STORE_PROFILE = 'qlc_profile';
  const AUTO = 'auto'; // the profile that picks a profile per question (routing)
  const MAX_RECENT = 20;
  const DELTA_MEMORY = 4096; // recent deltas remembered to trim overlapping coalesced deltas
  const CHUNK_CHARS = 2048; // soft size of one output block (see StepView.appendText)
  const RE_KEY = /^[\x21-\x7e]{1,512}$/; // what fits in an Authorization header: visible ASCII

  const $ = (sel, root = document) => root.querySelector(sel);

  // utf8Len is the length of s in UTF-8 bytes (a lone surrogate counts as
  // U+FFFD, as TextEncoder writes it), without encoding it.
  function utf8Len(s) {
    let n = 0;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c < 0x80) n += 1;
      else if (c < 0x800) n += 2;
      else if (c >= 0xd800 && c <= 0xdbff && i + 1 < s.length) {
        const d = s.charCodeAt(i + 1);
        if (d >= 0xdc00 && d <= 0xdfff) {
          n += 4;
          i++;
        } else n += 3;
      } else n += 3;
    }
    return n;
  }

  // store reads key (no value), removes it (value null) or sets it.
  function store(key, value) {
    try {
      if (value === undefined) return localStorage.getItem(key);
      if (value === null) localStorage.removeItem(key);
      else localStorage.setItem(key, value);
    } catch (_) { /* storage disabled: run without it */ }
    return null;
  }

  // ---------------------------------------------------------------- API

  /**
   * APIError carries the API's OpenAI-shaped error code, the HTTP status and,
   * for a 429, the seconds the server asked us to wait (Retry-After).
   */
  class APIError extends Error {
    constructor(status, message, code, retryAfter) {
      super(message);
      this.status = status;
      this.code = code || '';
      this.retryAfter = retryAfter == null ? null : retryAfter;
    }
  }

  // retryAfterSeconds reads a Retry-After header: seconds, or an HTTP date.
  function retryAfterSeconds(v) {
    if (!v) return null;
    if (/^\s*\d+\s*$/.test(v)) return parseInt(v, 10);
    const t = Date.parse(v);
    return isFinite(t) ? Math.max(0, Math.ceil((t - Date.now()) / 1000)) : null;
  }

  /**
   * responseError turns a failed response into an APIError with the server's
   * message; a 429's message says when to retry.
   */
  async function responseError(res) {
    let data = null;
    try { data = JSON.parse(await res.text()); } catch (_) { data = null; }
    const e = data && data.error;
    let msg = (e && e.message) || ('HTTP ' + res.status);
    const wait = res.status === 429 ? retryAfterSeconds(res.headers.get('Retry-After')) : null;
    if (wait != null) msg += ' — retry in ' + wait + ' s';
    return new APIError(res.status, msg, e && e.code, wait);
  }

  /**
   * api calls the QLC HTTP API. Every request goes through here (the event
   * stream through RunView.stream) so that the API key is sent as a Bearer
   * token and a 401 asks the user for a key.
   */
  async function api(method, path, body) {
    const key = await authKey();
    const headers = { Accept: 'application/json' };
    if (key) headers.Authorization = 'Bearer ' + key;
    // GETs must not come from the browser's cache. Not so for the rest: a
    // 'no-store' fetch sends Cache-Control: no-cache, which asks the
    // gateway to skip its response cache (POST /v1/runs), and browsers
    // never cache a POST anyway.
    const init = { method, headers, cache: method === 'GET' ? 'no-store' : 'default' };
    if (body !== undefined) {
      headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (err) {
      throw new APIError(0, 'network error: ' + err.message, 'network');
    }
    if (!res.ok) {
      const err = await responseError(res);
      if (res.status === 401) authFailed(key, err.message);
      throw err;
    }
    const text = await res.text();
    if (!text) return null;
    try { return JSON.parse(text); } catch (_) { return null; }
  }

  /** eventsURL is the SSE address of a run. Where to resume goes in a header, Last-Event-ID. */
  function eventsURL(run) {
    return run.events_url || ('/v1/runs/' + encodeURIComponent(run.id) + '/events');
  }

  // ---------------------------------------------------------------- API key

  /**
   * auth is the API key in use and where it came from: 'session' (the
   * gateway's local mode gave it; never stored), 'stored' (the user typed it;
   * kept in localStorage) or '' (none: requests go without one, and a 401 asks).
   */
  const auth = { key: '', source: '', tenant: '' };
  let authReady = Promise.resolve(); // settles once the key for the next request is known

  /** authKey is the key to send, once the start-up session check is done. */
  async function authKey() {
    await authReady;
    return auth.key;
  }

  function validKey(k) { return typeof k === 'string' && RE_KEY.test(k); }

  /**
   * loadSession asks the gateway for a local session: in local mode, and only
   * to a browser on loopback, GET /ui/session answers with the dev tenant's
   * key, so nobody pastes a key on their own machine. Elsewhere it is a 404
   * and the key the user saved (if any) is used.
   */
  async function loadSession() {
    let s = null;
    try {
      const res = await fetch('/ui/session', { headers: { Accept: 'application/json' }, cache: 'no-store' });
      if (res.ok) s = await res.json();
    } catch (_) { s = null; } // no local session: fall back to a saved key
    if (s && validKey(s.tenant_key)) {
      auth.key = s.tenant_key;
      auth.source = 'session';
      auth.tenant = String(s.tenant || '');
    } else {
      const saved = store(STORE_KEY);
      auth.key = validKey(saved) ? saved : '';
      auth.source = auth.key ? 'stored' : '';
      auth.tenant = '';
    }
    renderAuth();
  }

  // renderAuth shows where the key comes from, and the key field when there is none.
  function renderAuth(msg) {
    const local = auth.source === 'session';
    ui.tenant.textContent = local ? 'local · tenant ' + (auth.tenant || '?') : '';
    ui.tenant.hidden = !local;
    ui.keySaved.hidden = auth.source !== 'stored';
    ui.keyForm.hidden = auth.source !== '';
    ui.keyMsg.textContent = msg || '';
    ui.keyMsg.hidden = !msg;
  }

  // askKey shows the key field with msg saying why, and puts the cursor in it.
  function askKey(msg) {
    renderAuth(msg);
    ui.apiKey.focus();
  }

  function saveKey(e) {
    e.preventDefault();
    const key = ui.apiKey.value.trim();
    if (!validKey(key)) {
      askKey('An API key is 1 to 512 letters, digits and symbols, without spaces.');
      return;
    }
    ui.apiKey.value = ''; // the key lives in localStorage now, not in the page
    auth.key = key;
    auth.source = 'stored';
    store(STORE_KEY, key);
    renderAuth();
    afterAuth();
  }

  function forgetKey() {
    store(STORE_KEY, null);
    auth.key = '';
    auth.source = '';
    askKey('Key forgotten. Enter an API key to use the gateway.');
  }

  /**
   * authFailed handles a 401 to a request sent with usedKey: a saved key is
   * forgotten and the user asked again. A local session's key is fetched once
   * more first (the gateway may have restarted with a new one). A 401 to a
   * key that is no longer in use is stale and changes nothing.
   */
  async function authFailed(usedKey, message) {
    if (usedKey !== auth.key) return;
    if (auth.source === 'session') {
      auth.key = '';
      auth.source = '';
      authReady = loadSession();
      await authReady;
      if (auth.key && auth.key !== usedKey) {
        afterAuth();
        return;
      }
    }
    if (auth.source === 'stored' || store(STORE_KEY) === usedKey) store(STORE_KEY, null);
    auth.key = '';
    auth.source = '';
    askKey(usedKey ?
      'The API key was not accepted (' + message + '). Enter a valid key.' :
      'This gateway needs an API key (' + message + ').');
  }

  // afterAuth loads again what a missing or refused key kept from loading.
  function afterAuth() {
    showError('');
    loadProfiles();
    refreshRecent();
    if (current && current.waitingForKey) {
      current.connect(current.lastSeq + 1);
    } else if (!current) {
      const id = location.hash.slice(1);
      if (id.startsWith('run_')) openRun(id);
    }
  }

  // ---------------------------------------------------------------- event stream

  /**
   * SSEParser reads a text/event-stream as the HTML standard's "event stream
   * interpretation" does, from text chunks cut anywhere (even inside a CRLF):
   * lines end in CRLF, LF or CR; "field: value" loses one space after the
   * colon; data lines are joined with "\n"; a blank line dispatches the event;
   * lines starting with ":" are comments; an event that the stream's end
   * interrupts is dropped (end). It is pure: no DOM, no network, no clock.
   *
   * onEvent(type, data, id) is called once per event: type is "message" when
   * the event had no "event:" line, id the last "id:" seen on this stream.
   * onComment(text), if given, is called once per comment (": ping").
   */
  class SSEParser {
    constructor(onEvent, onComment) {
      this.onEvent = onEvent;
      this.onComment = onComment || null;
      this.eol = /\r\n|\r|\n/g;
      this.buf = ''; // a line begun but not ended; never holds a line end
      this.skipLF = false; // the last chunk ended in CR: an LF first in the next one is its pair
      this.type = '';
      this.data = [];
      this.id = '';
      this.retry = null; // the "retry:" field, in ms (our own backoff decides, but it is parsed)
    }

    /** push parses the next chunk of decoded text. */
    push(chunk) {
      let s = String(chunk);
      if (!s) return; // an empty chunk must not use up skipLF
      if (this.skipLF) {
        this.skipLF = false;
        if (s[0] === '\n') s = s.slice(1);
      }
      const eol = this.eol;
      eol.lastIndex = this.buf.length; // only the new text can hold a line end
      s = this.buf + s;
      let start = 0;
      let m;
      while ((m = eol.exec(s)) !== null) {
        const line = s.slice(start, m.index);
        start = eol.lastIndex;
        if (m[0] === '\r' && start === s.length) this.skipLF = true;
        this.line(line);
      }
      this.buf = start === 0 ? s : s.slice(start);
    }

    /** end is the end of the stream: an event without its blank line is dropped. */
    end() {
      this.buf = '';
      this.skipLF = false;
      this.type = '';
      this.data = [];
    }

    line(l) {
      if (l === '') {
        const type = this.type;
        const data = this.data;
        this.type = '';
        this.data = [];
        if (data.length) this.onEvent(type || 'message', data.join('\n'), this.id);
        return;
      }
      if (l[0] === ':') {
        if (this.onComment) this.onComment(l[1] === ' ' ? l.slice(2) : l.slice(1));
        return;
      }
      const c = l.indexOf(':');
      const field = c < 0 ? l : l.slice(0, c);
      let value = c < 0 ? '' : l.slice(c + 1);
      if (value[0] === ' ') value = value.slice(1);
      switch (field) {
        case 'event': this.type = value; break;
        case 'data': this.data.push(value); break;
        case 'id': if (!value.includes('\0')) this.id = value; break;
        case 'retry': if (/^\d+$/.test(value)) this.retry = Number(value); break;
        default: break; // unknown fields are ignored, as the standard says
      }
    }
  }

  // ---------------------------------------------------------------- markdown

  const MAX_DEPTH = 6;
  const RE_FENCE = /^ {0,3}(`{3,}|~{3,})\s*([\w+#.-]*)[^`]*$/;
  const RE_HEADING = /^ {0,3}(#{1,6})(?:\s+(.*?))?\s*#*\s*$/;
  const RE_HR = /^ {0,3}([-*_])(?:\s*\1){2,}\s*$/;
  const RE_QUOTE = /^ {0,3}>\s?(.*)$/;
  const RE_ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const RE_INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|__(?=\S)([\s\S]*?\S)__|\*(?=[^\s*])([\s\S]*?[^\s*])\*|(?<![\w\\])_(?=[^\s_])([\s\S]*?[^\s_])_(?!\w)|~~(?=\S)([\s\S]*?\S)~~|\[([^\]\n]+)\]\((https?:\/\/[^\s)]+)\)/g;

  function el(tag, cls) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    return n;
  }

  /** appendInline parses emphasis, code spans and http(s) links in s into parent. */
  function appendInline(parent, s, depth) {
    if (depth > MAX_DEPTH) { parent.appendChild(document.createTextNode(s)); return; }
    let last = 0;
    const re = new RegExp(RE_INLINE.source, 'g');
    let m;
    while ((m = re.exec(s)) !== null) {
      if (m.index > last) appendText(parent, s.slice(last, m.index));
      let node;
      if (m[1] !== undefined) {
        node = el('code');
        node.textContent = m[2].replace(/^ (.*) $/, '$1');
      } else if (m[3] !== undefined || m[4] !== undefined) {
        node = el('strong');
        appendInline(node, m[3] !== undefined ? m[3] : m[4], depth + 1);
      } else if (m[5] !== undefined || m[6] !== undefined) {
        node = el('em');
        appendInline(node, m[5] !== undefined ? m[5] : m[6], depth + 1);
      } else if (m[7] !== undefined) {
        node = el('del');
        appendInline(node, m[7], depth + 1);
      } else {
        node = el('a');
        node.href = m[9]; // the pattern admits only http:// and https:// URLs
        node.rel = 'noopener noreferrer nofollow';
        node.target = '_blank';
        appendInline(node, m[8], depth + 1);
      }
      parent.appendChild(node);
      last = re.lastIndex;
    }
    if (last < s.length) appendText(parent, s.slice(last));
  }

  // appendText writes text, turning single newlines (soft breaks) into <br>.
  function appendText(parent, s) {
    const parts = s.split('\n');
    parts.forEach((p, i) => {
      if (i > 0) parent.appendChild(el('br'));
      if (p) parent.appendChild(document.createTextNode(p));
    });
  }

  function isBlockStart(line) {
    return RE_FENCE.test(line) || RE_HEADING.test(line) || RE_HR.test(line) ||
      RE_QUOTE.test(line) || RE_ITEM.test(line);
  }

  function indentOf(line) {
    const m = /^[ \t]*/.exec(line)[0];
    return m.replace(/\t/g, '    ').length;
  }

  /** appendBlocks renders markdown lines as block elements into parent. */
  function appendBlocks(parent, lines, depth) {
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) { i++; continue; }
      let m;
      if (depth > MAX_DEPTH) {
        const p = el('p');
        appendText(p, lines.slice(i).join('\n'));
        parent.appendChild(p);
        return;
      }
      if ((m = RE_FENCE.exec(line))) {
        const fence = m[1];
        const body = [];
        i++;
        while (i < lines.length) {
          const t = lines[i].trim();
          if (t.startsWith(fence) && t.replace(/[`~]/g, '') === '' && t[0] === fence[0]) { i++; break; }
          body.push(lines[i]);
          i++;
        }
        const pre = el('pre');
        const code = el('code');
        if (m[2]) code.className = 'language-' + m[2].replace(/[^\w+#-]/g, '');
        code.textContent = body.join('\n');
        pre.appendChild(code);
        parent.appendChild(pre);
        continue;
      }
      if ((m = RE_HEADING.exec(line))) {
        const h = el('h' + m[1].length);
        appendInline(h, m[2] || '', depth);
        parent.appendChild(h);
        i++;
        continue;
      }
      if (RE_HR.test(line)) {
        parent.appendChild(el('hr'));
        i++;
        continue;
      }
      if (RE_QUOTE.test(line)) {
        const inner = [];
        while (i < lines.length && (m = RE_QUOTE.exec(lines[i]))) { inner.push(m[1]); i++; }
        const q = el('blockquote');
        appendBlocks(q, inner, depth + 1);
        parent.appendChild(q);
        continue;
      }
      if ((m = RE_ITEM.exec(line))) {
        i = appendList(parent, lines, i, depth);
        continue;
      }
      const para = [];
      while (i < lines.length && lines[i].trim() && !(para.length && isBlockStart(lines[i]))) {
        para.push(lines[i].trim());
        i++;
      }
      const p = el('p');
      appendInline(p, para.join('\n'), depth);
      parent.appendChild(p);
    }
  }

  // appendList renders the list starting at lines[i]; it returns the index after it.
  function appendList(parent, lines, i, depth) {
    const first = RE_ITEM.exec(lines[i]);
    const baseIndent = indentOf(first[1]);
    const ordered = /\d/.test(first[2]);
    const list = el(ordered ? 'ol' : 'ul');
    if (ordered) {
      const start = parseInt(first[2], 10);
      if (start !== 1) list.start = start;
    }
    let item = null;
    let loose = false;
    const flush = () => {
      if (!item) return;
      const li = el('li');
      const tmp = document.createDocumentFragment();
      appendBlocks(tmp, item, depth + 1);
      // A tight item's lone paragraph is written inline, as Markdown does.
      if (!loose && tmp.firstChild && tmp.firstChild.nodeName === 'P') {
        const p = tmp.firstChild;
        while (p.firstChild) li.appendChild(p.firstChild);
        tmp.removeChild(p);
      }
      li.appendChild(tmp);
      list.appendChild(li);
      item = null;
    };
    while (i < lines.length) {
      const line = lines[i];
      const m = RE_ITEM.exec(line);
      if (m && indentOf(m[1]) <= baseIndent + 1 && /\d/.test(m[2]) === ordered) {
        flush();
        item = [m[3]];
        i++;
        continue;
      }
      if (m && indentOf(m[1]) <= baseIndent + 1) break; // a list of the other kind
      if (!line.trim()) {
        // A blank line continues the list only if an indented line or an item follows.
        let j = i + 1;
        while (j < lines.length && !lines[j].trim()) j++;
        if (j < lines.length && (indentOf(lines[j]) > baseIndent ||
          (RE_ITEM.test(lines[j]) && indentOf(RE_ITEM.exec(lines[j])[1]) <= baseIndent + 1))) {
          if (item) item.push('');
          loose = true;
          i++;
          continue;
        }
        break;
      }
      if (indentOf(line) > baseIndent) {
        item.push(line.replace(new RegExp('^[ \\t]{1,' + (baseIndent + 4) + '}'), ''));
        i++;
        continue;
      }
      if (isBlockStart(line)) break;
      item.push(line.trim()); // lazy continuation of the item's paragraph
      i++;
    }
    flush();
    parent.appendChild(list);
    return i;
  }

  /**
   * renderMarkdown turns model text into a DocumentFragment: headings, lists,
   * block quotes, fenced code, rules, paragraphs, **bold**, *italic*, `code`,
   * ~~strike~~ and http(s) links. Raw HTML in the text stays text.
   */
  function renderMarkdown(src) {
    const frag = document.createDocumentFragment();
    const lines = String(src == null ? '' : src).replace(/\r\n?/g, '\n').split('\n');
    appendBlocks(frag, lines, 0);
    return frag;
  }

  // ---------------------------------------------------------------- formatting

  const nf = new Intl.NumberFormat();
  function fmtInt(n) { return nf.format(n); }
  function fmtMs(ms) {
    if (ms == null || !isFinite(ms)) return '—';
    if (ms < 1) return ms.toFixed(2) + ' ms';
    if (ms < 1000) return Math.round(ms) + ' ms';
    return (ms / 1000).toFixed(ms < 10000 ? 2 : 1) + ' s';
  }
  function fmtRate(r) {
    if (r == null || !isFinite(r) || r <= 0) return '—';
    return r >= 100 ? fmtInt(Math.round(r)) : r.toFixed(1);
  }
  // parseTime reads an RFC 3339 time (any number of fraction digits) as ms since the epoch.
  function parseTime(s) {
    if (!s) return NaN;
    return Date.parse(String(s).replace(/(\.\d{3})\d+/, '$1'));
  }
  function ago(iso) {
    const t = parseTime(iso);
    if (!isFinite(t)) return '';
    const s = Math.max(0, (Date.now() - t) / 1000);
    if (s < 60) return Math.round(s) + 's ago';
    if (s < 3600) return Math.round(s / 60) + 'm ago';
    if (s < 86400) return Math.round(s / 3600) + 'h ago';
    return new Date(t).toLocaleDateString();
  }

  // ---------------------------------------------------------------- one step's card

  /**
   * StepView is one step's card: a chain's stage, or a strategy's proposer,
   * member, ranker, sample, judge or final step. info is {step, stage, title,
   * role, model, provider, final, inputs, min_inputs}; index numbers a
   * chain's stages (the card shows the step's id otherwise). Text arrives in
   * pending and reaches the DOM in flush.
   */
  let startCount = 0; // stage_started events applied, to know which final step started last

  class StepView {
    constructor(root, info, index) {
      this.order = 0;
      const name = info.step || info.stage;
      this.name = name;
      this.info = info;
      this.root = root;
      root.dataset.stage = info.stage || name;
      root.dataset.step = name;
      if (info.final) root.dataset.final = 'true';
      const badge = $('.step', root);
      if (index >= 0) badge.textContent = String(index + 1);
      else {
        badge.textContent = name;
        badge.classList.add('sid');
      }
      const role = ROLES.get(info.stage) || {};
      $('.title', root).textContent = info.title || role.title || info.stage || name;
      if (info.role || role.role) $('.title', root).title = info.role || role.role;
      this.out = $('.output', root);
      this.statusEl = $('.status', root);
      this.modelEl = $('.model', root);
      this.providerEl = $('.provider', root);
      this.badgesEl = $('.badges', root);
      this.ttftEl = $('.ttft', root);
      this.tokensEl = $('.tokens', root);
      this.tpsEl = $('.tps', root);
      this.noteEl = $('.note', root);
      this.notesEl = $('.notes', root);
      this.rankingEl = $('.ranking', root);
      this.inputsEl = $('.inputs', root);
      this.reset();
      this.setInputs(info.inputs, info.min_inputs);
    }

    reset() {
      this.setText('');
      this.pending = [];
      this.tokens = 0;
      this.streamedTokens = 0;
      this.startedAt = NaN;
      this.firstAt = NaN;
      this.firstTokens = 0;
      this.lastAt = NaN;
      this.ttft = null;
      this.rate = null;
      this.final = false;
      this.dirtyStats = true;
      this.setStatus('pending');
      this.setModel(this.info.model, this.info.provider);
      this.badgesEl.replaceChildren();
      this.note('');
      this.notesEl.replaceChildren();
      this.setRanking(null);
      delete this.root.dataset.resynced;
      delete this.root.dataset.skipped;
      this.restartReason = '';
      this.root.dataset.streamedTokens = '0';
    }

    setStatus(s) {
      this.status = s;
      this.root.dataset.status = s;
      this.statusEl.dataset.status = s;
      this.statusEl.textContent = s;
    }

    setModel(model, provider) {
      this.modelEl.textContent = model || '';
      this.providerEl.textContent = provider ? 'via ' + provider : '';
    }

    // setInputs says which steps this one reads, and how many it needs.
    setInputs(inputs, min) {
      const list = Array.isArray(inputs) ? inputs.filter((x) => typeof x === 'string') : [];
      const need = Number(min) > 0 && Number(min) < list.length ? ' (at least ' + Number(min) + ')' : '';
      this.inputsEl.textContent = list.length ? 'reads ' + list.join(', ') + need : '';
      this.inputsEl.hidden = !list.length;
    }

    // note shows one line about the step: a failure (bad), what was done
    // to its prompt or how a tally chose (info), a restart or a skip.
    note(msg, bad, info) {
      this.noteEl.textContent = msg;
      this.noteEl.hidden = !msg;
      this.noteEl.classList.toggle('bad', !!bad);
      this.noteEl.classList.toggle('info', !!info);
    }

    // addNote shows a step_note: its message, and the raw text it is about (if any) folded away.
    addNote(ev) {
      const div = el('div', 'step-note');
      div.dataset.kind = String(ev.kind || '');
      const p = el('p');
      p.textContent = String(ev.message || ev.kind || 'note');
      div.appendChild(p);
      if (ev.raw) {
        const d = el('details');
        const sum = el('summary');
        sum.textContent = 'raw text';
        const pre = el('pre', 'raw');
        pre.textContent = String(ev.raw);
        d.append(sum, pre);
        div.appendChild(d);
      }
      this.notesEl.appendChild(div);
    }

    // setRanking shows a ranker's order of the answers it saw ("B > A > C"),
    // best first; each label's step is in the tooltip.
    setRanking(ranked) {
      const list = Array.isArray(ranked) ? ranked : [];
      const order = $('.rk-order', this.rankingEl);
      order.textContent = list.map((r) => String(r.label || r.step || '?')).join(' > ');
      this.rankingEl.title = list.map((r) => String(r.label || '?') + ' = ' + String(r.step || '?')).join(', ');
      this.rankingEl.hidden = !list.length;
    }

    badge(text, cls, title) {
      const b = el('span', 'badge ' + cls);
      b.textContent = text;
      if (title) b.title = title;
      this.badgesEl.appendChild(b);
    }

    // clearText discards the current attempt's text (a restart or a new attempt).
    clearText() {
      this.setText('');
      this.pending = [];
      this.tokens = 0;
      this.streamedTokens = 0;
      this.firstAt = NaN;
      this.lastAt = NaN;
      this.ttft = null;
      this.rate = null;
      this.dirtyStats = true;
    }

    started(ev, t) {
      this.order = ++startCount;
      this.clearText();
      this.final = false;
      this.startedAt = t;
      this.setStatus('running');
      this.setModel(ev.model, ev.provider);
      if (ev.final) this.root.dataset.final = 'true';
      this.badgesEl.replaceChildren();
      if (ev.attempt > 1) this.badge('attempt ' + ev.attempt, 'attempt', 'retried after a provider error');
      if (ev.fallback) this.badge('fallback', 'fallback', 'the step fell back to its fallback model');
      if (this.restartReason) this.badge('restarted', 'restarted', this.restartReason);
      // A note says what was done to the prompt, or how a tally chose its answer.
      if (ev.note) this.note((this.restartReason ? 'restarted: ' + this.restartReason + ' · ' : '') + String(ev.note), false, !this.restartReason);
    }

    delta(text, tokens, t) {
      if (!text && !tokens) return;
      if (this.status === 'pending') this.setStatus('running');
      if (text) this.pending.push(text);
      if (!isFinite(this.firstAt)) {
        this.firstAt = t;
        this.firstTokens = tokens;
        if (isFinite(this.startedAt)) this.ttft = t - this.startedAt;
      }
      this.lastAt = t;
      this.tokens += tokens;
      this.streamedTokens += tokens;
      if (this.lastAt > this.firstAt) this.rate = (this.tokens - this.firstTokens) / ((this.lastAt - this.firstAt) / 1000);
      this.dirtyStats = true;
    }

    restarted(reason) {
      this.restartReason = reason || 'restarted';
      this.clearText();
      this.setStatus('running');
      this.note('restarted: ' + this.restartReason);
    }

    // completed closes the step. It returns false when the streamed text
    // does not match the output the run recorded (output_bytes): the caller
    // then shows the run resource's output (resyncOutputs).
    completed(ev) {
      this.flush();
      const streamed = this.out.textContent;
      let ok = true;
      if (typeof ev.output === 'string') { // a server from before outputs left the events
        if (ev.output !== streamed) {
          ok = false;
          this.setText(ev.output);
        }
      } else if (typeof ev.output_bytes === 'number' && utf8Len(streamed) !== ev.output_bytes) {
        ok = false;
      }
      if (!ok) {
        // The log is authoritative; should the stream ever disagree, show the
        // step's recorded output and mark the card so tests and users notice.
        console.warn('qlc: step ' + this.name + ' stream differs from its output; resynced');
        this.root.dataset.resynced = 'true';
      }
      if (ev.model) this.modelEl.textContent = ev.model;
      const usage = ev.usage || {};
      if (usage.completion_tokens != null) this.tokens = usage.completion_tokens;
      if (ev.ttft_ms != null) this.ttft = ev.ttft_ms;
      if (ev.duration_ms != null) {
        const gen = ev.duration_ms - (ev.ttft_ms || 0);
        this.rate = gen > 0 ? this.tokens / (gen / 1000) : null;
      }
      this.final = true;
      this.setStatus('completed');
      this.dirtyStats = true;
      this.flushStats();
      return ok;
    }

    // skipped greys the step out: it failed, ran past its deadline or had
    // too few inputs, and the run goes on without it. Text it streamed stays.
    skipped(ev) {
      this.flush();
      const u = ev.usage || {};
      if (u.completion_tokens != null) {
        this.tokens = u.completion_tokens;
        this.dirtyStats = true;
      }
      this.setStatus('skipped');
      this.root.dataset.skipped = String(ev.code || 'skipped');
      this.note('skipped: ' + String(ev.reason || ev.code || 'left out') + (ev.code ? ' (' + ev.code + ')' : ''));
      this.flushStats();
    }

    failed(reason) {
      this.flush();
      this.setStatus('failed');
      if (reason) this.note(reason, true);
    }

    cancelled() {
      this.flush();
      if (this.status === 'running') this.setStatus('cancelled');
    }

    // fromResource shows a finished (or snapshotted) step from GET /v1/runs/{id}.
    fromResource(s) {
      this.reset();
      this.setModel(s.model, s.provider);
      if (s.attempts > 1) this.badge('attempt ' + s.attempts, 'attempt');
      if (s.restarts > 0) this.badge('restarted', 'restarted', 'redone ' + s.restarts + ' time(s) after a failure');
      this.setText(s.output || '');
      const u = s.usage || {};
      this.tokens = u.completion_tokens != null ? u.completion_tokens : (s.tokens || 0);
      this.ttft = s.ttft_ms != null && s.ttft_ms > 0 ? s.ttft_ms : null;
      const gen = (s.duration_ms || 0) - (s.ttft_ms || 0);
      this.rate = gen > 0 ? this.tokens / (gen / 1000) : null;
      this.setStatus(s.status || 'pending');
      if (s.note) this.note(String(s.note), false, true);
      if (s.status === 'skipped' || s.skipped) {
        const sk = s.skipped || s;
        this.setStatus('skipped');
        this.root.dataset.skipped = String(sk.code || 'skipped');
        this.note('skipped: ' + String(sk.reason || sk.code || 'left out') + (sk.code ? ' (' + sk.code + ')' : ''));
      }
      if (Array.isArray(s.ranking)) this.setRanking(s.ranking);
      for (const n of Array.isArray(s.notes) ? s.notes : []) this.addNote(n);
      this.final = true;
      this.dirtyStats = true;
      this.flushStats();
    }

    // The output is a column of blocks of about CHUNK_CHARS characters, each one
    // text node, split after a newline so that the split does not show. Text is
    // appended to the last block only, so the browser lays out a few KB per
    // frame, not the step's whole text.
    setText(s) {
      this.out.replaceChildren();
      this.newChunk();
      this.out.dataset.empty = 'true';
      if (s) this.appendText(s);
    }

    newChunk() {
      const div = el('div', 'chunk');
      this.text = document.createTextNode('');
      div.appendChild(this.text);
      this.out.appendChild(div);
      this.chunkLen = 0;
    }

    appendText(s) {
      while (s) {
        if (this.chunkLen >= CHUNK_CHARS) {
          const nl = s.indexOf('\n');
          if (nl >= 0) {
            this.text.appendData(s.slice(0, nl + 1));
            s = s.slice(nl + 1);
            this.newChunk();
            continue;
          }
          if (this.chunkLen >= CHUNK_CHARS * 8) this.newChunk(); // no newline for long: split anyway
        }
        this.text.appendData(s);
        this.chunkLen += s.length;
        if (this.out.dataset.empty) delete this.out.dataset.empty;
        return;
      }
    }

    /** flush writes pending text to the DOM: one append per frame per step. */
    flush() {
      if (this.pending.length) {
        const chunk = this.pending.length === 1 ? this.pending[0] : this.pending.join('');
        this.pending = [];
        const o = this.out;
        const stick = o.scrollHeight - o.scrollTop - o.clientHeight < 40;
        this.appendText(chunk);
        if (stick) o.scrollTop = o.scrollHeight;
      }
      this.flushStats();
    }

    flushStats() {
      if (!this.dirtyStats) return;
      this.dirtyStats = false;
      this.tokensEl.dataset.value = String(this.tokens);
      this.tokensEl.textContent = fmtInt(this.tokens);
      this.root.dataset.streamedTokens = String(this.streamedTokens);
      this.ttftEl.dataset.value = this.ttft == null ? '' : String(this.ttft);
      this.ttftEl.textContent = fmtMs(this.ttft);
      this.tpsEl.dataset.value = this.rate == null ? '' : String(this.rate);
      this.tpsEl.textContent = fmtRate(this.rate);
    }
  }

  // ---------------------------------------------------------------- the steps' layout

  /** stepOf is an event's step id: its step, or (a chain's stage, an old log) its stage. */
  function stepOf(step, stage) {
    return typeof step === 'string' && step ? step : (typeof stage === 'string' ? stage : '');
  }

  /**
   * idOf is the step id of an entry of a list of steps: run_planned's
   * (step), the run resource's or a profile's (id), or a list of stages (stage).
   */
  function idOf(s) {
    return stepOf(s.step || s.id, s.stage);
  }

  /** planOf turns a list of steps or stages into run_planned's shape (step ids in step). */
  function planOf(list) {
    return (Array.isArray(list) ? list : []).filter((s) => s && typeof s === 'object')
      .map((s) => Object.assign({}, s, { step: idOf(s), title: undefined }));
  }

  /**
   * Steps is what #stages shows: a chain's four stage cards in one row
   * (kind 'chain'), or a strategy run's steps (kind 'strategy') in rows of
   * parallel steps, the aggregate ranking, then the final step(s) full
   * width. It owns the cards (views, by step id) and their DOM.
   */
  const Steps = {
    host: null,
    tpl: null,
    kind: '',
    views: new Map(), // step id -> StepView
    rows: new Map(), // group key -> {root, cols, title, stage, layer, n}
    finals: null, // the element holding the final rows
    agg: null, // the aggregate ranking panel
    notes: null, // run-level notices (a step_note of no known step)

    get(id) { return this.views.get(id) || null; },
    all() { return this.views.values(); },

    card(info, index) {
      const node = this.tpl.content.firstElementChild.cloneNode(true);
      const v = new StepView(node, info, index);
      this.views.set(v.name, v);
      return v;
    },

    /** chain lays out the chain's stages (kept, and reset, if they are on screen). */
    chain() {
      if (this.kind === 'chain') {
        for (const v of this.all()) v.reset();
        return;
      }
      this.clear('chain');
      STAGES.forEach((name, i) => {
        const info = ROLES.get(name) || { name };
        this.host.appendChild(this.card({ step: name, stage: name, title: info.title, role: info.role }, i).root);
      });
    },

    clear(kind) {
      this.kind = kind;
      this.host.dataset.layout = kind;
      this.host.replaceChildren();
      this.views = new Map();
      this.rows = new Map();
      this.finals = null;
      this.agg = null;
      this.notes = null;
    },

    /**
     * plan lays out a strategy run's steps (run_planned's, or the run
     * resource's): parallel steps grouped by role and layer, in the order
     * the plan names them, then the final steps. strategy may be ''.
     */
    plan(strategy, steps) {
      this.clear('strategy');
      this.host.dataset.strategy = String(strategy || '');
      this.notes = el('div', 'run-notes');
      this.notes.hidden = true;
      this.finals = el('div', 'final-rows');
      this.host.append(this.notes, this.finals);
      for (const s of Array.isArray(steps) ? steps : []) {
        if (s && typeof s === 'object') this.add(s);
      }
    },

    /**
     * add places a step's card: a final step in a full-width row of its own
     * at the end, any other beside the steps of its role and layer. It
     * returns the step's view (the one there already, if any).
     */
    add(s) {
      const id = stepOf(s.step, s.stage);
      if (!id) return null;
      if (this.views.has(id)) return this.views.get(id);
      if (this.kind !== 'strategy') return null;
      const stage = String(s.stage || '');
      const v = this.card({
        step: id, stage, model: s.model, provider: s.provider, final: !!s.final,
        inputs: s.inputs, min_inputs: s.min_inputs, layer: s.layer,
      }, -1);
      if (s.final) {
        const row = this.row('final', stage, 0, id);
        row.cols.appendChild(v.root);
        row.n++;
        this.finals.appendChild(row.root);
      } else {
        const layer = Number(s.layer) || 0;
        let row = this.rows.get(stage + '|' + layer);
        if (!row) {
          row = this.row('parallel', stage, layer, stage + '|' + layer);
          this.host.insertBefore(row.root, this.agg || this.finals);
        }
        row.cols.appendChild(v.root);
        row.n++;
        row.cols.style.setProperty('--cols', String(row.n));
        this.title(row);
      }
      return v;
    },

    row(kind, stage, layer, key) {
      const root = el('section', 'step-row');
      root.dataset.row = kind;
      root.dataset.role = stage;
      if (layer) root.dataset.layer = String(layer);
      const head = el('header', 'row-head');
      const title = el('h3');
      const sub = el('span', 'muted');
      head.append(title, sub);
      const cols = el('div', 'cols');
      root.append(head, cols);
      const row = { root, cols, title, sub, stage, layer, n: 0, kind };
      this.rows.set(kind === 'final' ? 'final|' + key : key, row);
      this.title(row);
      return row;
    },

    // title names a row: "Proposers · layer 1  3 in parallel", "Chairman  final answer".
    title(row) {
      const t = (ROLES.get(row.stage) || {}).title || row.stage || 'Step';
      if (row.kind === 'final') {
        row.title.textContent = t;
        row.sub.textContent = 'final answer';
        return;
      }
      row.title.textContent = (row.n > 1 && !/s$/.test(t) ? t + 's' : t) + (row.layer ? ' · layer ' + row.layer : '');
      row.sub.textContent = row.n > 1 ? row.n + ' in parallel' : '';
    },

    /** ranking shows the council's aggregate ranking, above the final step. */
    ranking(ranked) {
      if (this.kind !== 'strategy') return;
      if (!this.agg) {
        this.agg = el('section', 'ranking-agg card');
        this.host.insertBefore(this.agg, this.finals);
      }
      const h = el('h3');
      h.textContent = 'Aggregate ranking';
      const table = el('table');
      const head = el('tr');
      for (const c of ['Label', 'Step', 'Avg rank', 'Votes']) {
        const th = el('th');
        th.textContent = c;
        head.appendChild(th);
      }
      const thead = el('thead');
      thead.appendChild(head);
      const body = el('tbody');
      for (const r of Array.isArray(ranked) ? ranked : []) {
        const tr = el('tr');
        tr.dataset.step = String(r.step || '');
        const avg = Number(r.average_rank);
        for (const c of [r.label, r.step, isFinite(avg) ? avg.toFixed(2) : '—', r.votes]) {
          const td = el('td');
          td.textContent = c == null ? '' : String(c);
          tr.appendChild(td);
        }
        body.appendChild(tr);
      }
      table.append(thead, body);
      this.agg.replaceChildren(h, table);
    },

    /** notice shows a step_note whose step has no card. */
    notice(ev) {
      if (!this.notes) return;
      const p = el('p', 'step-note');
      p.dataset.kind = String(ev.kind || '');
      p.textContent = (ev.step ? ev.step + ': ' : '') + String(ev.message || ev.kind || 'note');
      this.notes.appendChild(p);
      this.notes.hidden = false;
    },

    /**
     * final is the view whose text is the answer: the final step started
     * last (a council's fallback "answer" follows its failed chairman),
     * else the chain's last stage.
     */
    final() {
      let last = null;
      for (const v of this.all()) {
        if (v.root.dataset.final && v.order > 0 && (!last || v.order > last.order)) last = v;
      }
      return last || this.get(STAGES[STAGES.length - 1]);
    },
  };

  // ---------------------------------------------------------------- the page

  const ui = {
    form: null, query: null, profile: null, seed: null, maxTokens: null,
    runBtn: null, cancelBtn: null, error: null, runStatus: null, runId: null,
    runUsage: null, runEstimate: null, runRouting: null, runCached: null, answer: null, answerCard: null, conn: null, recent: null,
    recentEmpty: null, profileDesc: null,
    tenant: null, keyForm: null, apiKey: null, keySaved: null, keyForget: null, keyMsg: null,
  };
  let profiles = { default: '', data: [] };

  function showError(msg) {
    ui.error.textContent = msg || '';
    ui.error.hidden = !msg;
  }

  // reportError shows what failed and the server's message. A 401 is told by
  // the key field instead (authFailed), not twice.
  function reportError(what, err) {
    if (err.status !== 401) showError(what + err.message);
  }

  function setConn(state, label) {
    ui.conn.dataset.state = state;
    $('.label', ui.conn).textContent = label || state;
  }

  let rafQueued = false;
  function scheduleFlush() {
    if (rafQueued) return;
    rafQueued = true;
    requestAnimationFrame(() => {
      rafQueued = false;
      for (const v of Steps.all()) v.flush();
    });
  }

  // ---------------------------------------------------------------- one run's view

  /**
   * RunView follows one run: it owns the event stream (one fetch at a time,
   * aborted when the view closes), applies events in seq order exactly once,
   * and reconnects after lagged notices, errors and early ends.
   */
  class RunView {
    constructor(run) {
      this.run = run;
      this.id = run.id;
      this.lastSeq = 0;
      this.deltas = []; // recent applied deltas {lo, hi, step, len, tokens}, oldest first
      this.clearPart();
      this.ctl = null; // the AbortController of the stream being read, if any
      this.waitingForKey = false; // the stream was refused with a 401; afterAuth resumes it
      this.errorShown = false; // the stream put a message in #error; clear it once live again
      this.retries = 0;
      this.retryTimer = 0;
      this.connects = 0; // streams opened, for the test and the curious
      this.closed = false;
      this.terminal = false;
      this.status = run.status || 'running';
      this.usage = null;
    }

    // clearPart forgets a split delta begun (seq lastSeq+1, bytes up to partEnd).
    clearPart() {
      this.partEnd = 0;
      this.partLen = 0;
      this.partTokens = 0;
    }

    // resetStages empties the cards: a chain's four stages, or, for a
    // strategy run, none until its run_planned lays its steps out.
    resetStages() {
      if (strategyOfRun(this.run) === 'chain') {
        Steps.chain();
        for (const s of this.run.stages || []) {
          const v = Steps.get(s.stage);
          if (v) v.setModel(s.model, s.provider);
        }
      } else {
        Steps.plan(strategyOfRun(this.run), []);
      }
      clearAnswer();
    }

    start() {
      this.resetStages();
      setRunStatus(this.status, this.id);
      this.connect(1);
    }

    connect(fromSeq) {
      if (this.closed) return;
      this.disconnect();
      this.waitingForKey = false;
      setConn('connecting', 'connecting');
      this.connects++;
      const ctl = new AbortController();
      this.ctl = ctl;
      this.stream(ctl, fromSeq);
    }

    /**
     * stream reads one connection of the run's event stream, from fromSeq,
     * until the run ends (finish aborts it), the connection fails or ends
     * early (retry), or ctl is aborted because the view moved on. Everything
     * it does after an await first checks that ctl is still the view's
     * stream. Network failures are handled here; a bug in applying an event
     * is left to surface as an unhandled rejection, which the page reports.
     */
    async stream(ctl, fromSeq) {
      const live = () => ctl === this.ctl;
      const key = await authKey();
      if (!live()) return;
      const headers = { Accept: 'text/event-stream' };
      if (key) headers.Authorization = 'Bearer ' + key;
      const resume = this.resumeID(fromSeq);
      if (resume) headers['Last-Event-ID'] = resume;
      let res;
      try {
        res = await fetch(eventsURL(this.run), { headers, cache: 'no-store', signal: ctl.signal });
      } catch (_) {
        if (live()) this.retry();
        return;
      }
      if (!live()) return;
      if (!res.ok) {
        const err = await responseError(res);
        if (live()) this.refused(err, key);
        return;
      }
      this.retries = 0;
      if (this.errorShown) {
        this.errorShown = false;
        showError('');
      }
      setConn('open', 'live');
      const parser = new SSEParser((type, data) => {
        if (live()) this.message(type, data);
      });
      const reader = res.body.getReader();
      const text = new TextDecoder();
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (_) {
          break; // aborted by us, or the connection failed: live() tells which
        }
        if (chunk.done || !live()) break;
        parser.push(text.decode(chunk.value, { stream: true }));
      }
      parser.end();
      if (live() && !this.terminal) this.retry(); // the stream ended before the run did
    }

    // resumeID is the Last-Event-ID that resumes at fromSeq, as EventSource
    // would send the last id it saw: "seq:bytes" inside a split delta we hold
    // part of, else the seq before; "" from seq 1.
    resumeID(fromSeq) {
      if (this.partEnd > 0 && fromSeq === this.lastSeq + 1) return fromSeq + ':' + this.partEnd;
      return fromSeq > 1 ? String(fromSeq - 1) : '';
    }

    // message applies one SSE event; type is its "event:" line.
    message(type, data) {
      let ev;
      try { ev = JSON.parse(data); } catch (err) {
        console.warn('qlc: bad event data', err);
        return;
      }
      if (!ev.type) ev.type = type;
      this.handle(ev);
    }

    // refused handles a stream request the gateway answered with an error.
    refused(err, key) {
      this.disconnect();
      switch (err.status) {
        case 401: // wait for a key; afterAuth resumes from here
          this.waitingForKey = true;
          setConn('error', 'API key needed');
          authFailed(key, err.message);
          return;
        case 403:
          setConn('error', 'refused');
          showError('Cannot follow ' + this.id + ': ' + err.message);
          return;
        case 404:
          this.finish('failed', null, 'run not found');
          return;
        case 429: // over a limit: wait as long as the gateway says, at least our backoff
          this.errorShown = true;
          showError('Event stream: ' + err.message);
          this.retry(err.retryAfter == null ? null : err.retryAfter * 1000, 'rate limited');
          return;
        default:
          this.retry();
      }
    }

    // retry reconnects after a failed or early-ended stream: it resumes exactly
    // after the last applied seq, with backoff (at least minDelay ms), and
    // checks the run itself if the stream keeps failing (recover).
    retry(minDelay, label) {
      this.disconnect();
      this.retries++;
      const backoff = Math.min(5000, 100 * 2 ** Math.min(this.retries - 1, 6));
      setConn('error', label || 'reconnecting');
      this.retryTimer = setTimeout(() => this.recover(), Math.max(backoff, minDelay || 0));
    }

    async recover() {
      this.retryTimer = 0;
      if (this.closed || this.terminal) return;
      if (this.retries >= 3) {
        try {
          const run = await api('GET', '/v1/runs/' + encodeURIComponent(this.id));
          if (this.closed || this.terminal) return;
          if (TERMINAL.has(run.status)) {
            // The run is over and its stream keeps failing (the gateway may
            // no longer hold its log): show what the run recorded instead.
            if (run.last_seq > this.lastSeq) this.showResource(run);
            this.finish(run.status, run);
            return;
          }
        } catch (err) {
          if (err.status === 404) {
            this.finish('failed', null, 'run not found');
            return;
          }
        }
      }
      this.connect(this.lastSeq + 1);
    }

    // showResource replaces the steps with a run resource's record of them:
    // its steps (a strategy run's, laid out as run_planned would), else its
    // stages (a chain's).
    showResource(run) {
      clearAnswer();
      if (Array.isArray(run.steps) && strategyOfRun(run) !== 'chain') {
        Steps.plan(strategyOfRun(run), planOf(run.steps));
        for (const s of run.steps) {
          const v = Steps.get(idOf(s));
          if (v) v.fromResource(s);
        }
        if (Array.isArray(run.ranking) && run.ranking.length) Steps.ranking(run.ranking);
      } else {
        this.resetStages();
        for (const s of run.stages || []) {
          const v = Steps.get(s.stage);
          if (v) v.fromResource(s);
        }
      }
      this.lastSeq = run.last_seq || 0;
      this.deltas = [];
      this.clearPart();
    }

    disconnect() {
      if (this.ctl) {
        this.ctl.abort();
        this.ctl = null;
      }
      if (this.retryTimer) {
        clearTimeout(this.retryTimer);
        this.retryTimer = 0;
      }
    }

    close() {
      this.closed = true;
      this.disconnect();
    }

    // resync forgets everything and replays the run's log from seq 1.
    resync(why) {
      console.warn('qlc: replaying run from seq 1:', why);
      this.lastSeq = 0;
      this.deltas = [];
      this.clearPart();
      this.resetStages();
      this.connect(1);
    }

    /** handle applies one event exactly once (seq dedupe, coalesced-delta trimming). */
    handle(ev) {
      if (ev.type === 'lagged') {
        // Not a log entry. Resume where we are (never past it, so nothing is skipped).
        const next = Math.min(Number(ev.next_seq) || this.lastSeq + 1, this.lastSeq + 1);
        setConn('connecting', 'catching up');
        this.connect(next);
        return;
      }
      const hi = Number(ev.seq);
      if (!Number.isFinite(hi)) return;
      if (hi <= this.lastSeq) return; // already applied (replay after a reconnect)
      if (ev.part && ev.type === 'token_delta') return this.handlePart(ev, hi);
      if (this.partEnd > 0) return this.resync('split delta ' + (this.lastSeq + 1) + ' came back whole');
      let lo = ev.from_seq != null ? Number(ev.from_seq) : hi;
      if (lo > this.lastSeq + 1) {
        // A gap: events were skipped. Fetch them rather than show a hole.
        this.disconnect();
        this.connect(this.lastSeq + 1);
        return;
      }
      if (lo <= this.lastSeq) {
        if (ev.type !== 'token_delta') return this.resync('overlapping non-delta event ' + hi);
        const cut = this.appliedSince(lo, stepOf(ev.step, ev.stage));
        if (cut === null) return this.resync('cannot trim coalesced delta ' + lo + '..' + hi);
        ev = Object.assign({}, ev, { text: String(ev.text || '').slice(cut.len), tokens: (ev.tokens || 0) - cut.tokens });
        // What is left covers only the new seqs; remembering it as lo..hi
        // would make the next overlapping delta be cut short.
        lo = this.lastSeq + 1;
      }
      this.lastSeq = hi;
      this.apply(ev, lo, hi);
    }

    /**
     * handlePart applies a part of a delta that was too long for one event:
     * bytes part.offset..part.end of its part.size. Parts come in order; the
     * seq is applied with the last one.
     */
    handlePart(ev, hi) {
      const p = ev.part;
      if (hi > this.lastSeq + 1 || p.offset > this.partEnd) {
        // A gap: fetch what is missing rather than show a hole.
        this.disconnect();
        this.connect(this.lastSeq + 1);
        return;
      }
      if (p.offset < this.partEnd) {
        if (p.end <= this.partEnd) return; // a part we have
        return this.resync('overlapping part of delta ' + hi);
      }
      const id = stepOf(ev.step, ev.stage);
      const st = Steps.get(id);
      const text = String(ev.text || '');
      const tokens = Number(ev.tokens) || 0;
      if (st) {
        st.delta(text, tokens, parseTime(ev.time));
        scheduleFlush();
      }
      this.partEnd = p.end;
      this.partLen += text.length;
      this.partTokens += tokens;
      if (p.end >= p.size) {
        this.lastSeq = hi;
        this.deltas.push({ lo: hi, hi, step: id, len: this.partLen, tokens: this.partTokens });
        this.clearPart();
      }
    }

    // appliedSince sums the applied deltas of one step covering exactly lo..lastSeq,
    // or returns null if they are not all remembered. (A coalesced delta
    // covers consecutive deltas of one step only: no other step's event lies
    // between its from_seq and its seq.)
    appliedSince(lo, step) {
      let want = this.lastSeq;
      let len = 0;
      let tokens = 0;
      for (let k = this.deltas.length - 1; k >= 0 && want >= lo; k--) {
        const d = this.deltas[k];
        if (d.hi !== want || d.step !== step || d.lo < lo) return null;
        len += d.len;
        tokens += d.tokens;
        want = d.lo - 1;
      }
      return want === lo - 1 ? { len, tokens } : null;
    }

    apply(ev, lo, hi) {
      const t = parseTime(ev.time);
      const id = stepOf(ev.step, ev.stage);
      // A step the plan did not name (a council's fallback answer) gets a
      // card when it starts; other events of unknown steps are ignored.
      const st = ev.type === 'stage_started' ? Steps.add(ev) : (id ? Steps.get(id) : null);
      switch (ev.type) {
        case 'run_planned':
          Steps.plan(ev.strategy, ev.steps);
          this.deltas = [];
          break;
        case 'stage_started':
          if (st) st.started(ev, t);
          this.deltas = [];
          break;
        case 'token_delta': {
          if (!st) break;
          const text = String(ev.text || '');
          const tokens = Number(ev.tokens) || 0;
          st.delta(text, tokens, t);
          this.deltas.push({ lo, hi, step: id, len: text.length, tokens });
          // Trim in batches so that remembering stays O(1) per delta.
          if (this.deltas.length > 2 * DELTA_MEMORY) this.deltas.splice(0, this.deltas.length - DELTA_MEMORY);
          scheduleFlush();
          break;
        }
        case 'stage_completed':
          if (st && !st.completed(ev)) this.resyncOutputs();
          this.deltas = [];
          break;
        case 'stage_restarted':
          if (st) st.restarted(ev.reason);
          this.deltas = [];
          break;
        case 'step_skipped':
          if (st) st.skipped(ev);
          this.deltas = [];
          break;
        case 'ranking':
          if (ev.aggregate) Steps.ranking(ev.ranked);
          else if (st) st.setRanking(ev.ranked);
          this.deltas = [];
          break;
        case 'step_note':
          if (st) st.addNote(ev);
          else Steps.notice(ev);
          this.deltas = [];
          break;
        case 'model_chosen': {
          // The cost/quality optimiser's choice for a step (a run with a budget).
          const from = ev.from_model ? ' (was ' + ev.from_model + ')' : '';
          Steps.notice({ kind: 'model_chosen', step: ev.step,
            message: (ev.downgraded ? 'downgraded to ' : 'runs on ') + ev.model + from + ': ' + (ev.reason || '') });
          this.deltas = [];
          break;
        }
        case 'run_completed': {
          this.usage = ev.usage || null;
          const answer = typeof ev.answer === 'string' ? ev.answer : this.streamedAnswer(ev.answer_bytes);
          this.finish('completed', null, null, answer);
          if (answer == null) this.answerFromResource();
          break;
        }
        case 'run_failed': {
          const where = id ? id + ': ' : '';
          if (st) st.failed(ev.reason);
          this.finish('failed', null, where + (ev.reason || 'failed') + (ev.code ? ' (' + ev.code + ')' : ''));
          break;
        }
        case 'run_cancelled':
          this.finish('cancelled', null, ev.reason ? 'cancelled: ' + ev.reason : null);
          break;
        default:
          break; // a newer server's event type: ignore
      }
    }

    // streamedAnswer is the final step's streamed text if it has the
    // answer's length (run_completed.answer_bytes), else null.
    streamedAnswer(bytes) {
      const st = Steps.final();
      if (!st || st.status !== 'completed') return null;
      st.flush();
      const text = st.out.textContent;
      return utf8Len(text) === Number(bytes) ? text : null;
    }

    // answerFromResource shows the answer the run resource holds (the stream
    // did not give it intact).
    async answerFromResource() {
      try {
        const run = await api('GET', '/v1/runs/' + encodeURIComponent(this.id));
        if (current === this && run && typeof run.answer === 'string') showAnswer(run.answer);
      } catch (err) {
        console.warn('qlc: could not read the answer', err);
      }
    }

    // resyncOutputs shows each completed step's output as the run resource
    // records it (a step's stream disagreed with its output_bytes): its
    // steps (by id) if it has them, else its stages (a chain's).
    async resyncOutputs() {
      try {
        const run = await api('GET', '/v1/runs/' + encodeURIComponent(this.id));
        if (current !== this || !run) return;
        const list = Array.isArray(run.steps) ? run.steps : (run.stages || []);
        for (const s of list) {
          const st = Steps.get(idOf(s));
          if (st && s.status === 'completed' && st.root.dataset.resynced) st.setText(s.output || '');
        }
      } catch (err) {
        console.warn('qlc: could not read the run', err);
      }
    }

    // finish ends the view of the run: final status, answer, and no more streaming.
    finish(status, run, reason, answer) {
      this.terminal = true;
      this.status = status;
      this.disconnect();
      for (const s of Steps.all()) {
        if (status === 'cancelled') s.cancelled();
        else s.flush();
      }
      if (run) {
        if (run.usage) this.usage = run.usage;
        if (answer == null) answer = run.answer;
        if (!reason && run.error) reason = run.error.message;
      }
      setConn('idle', 'idle');
      setRunStatus(status, this.id, reason, this.usage);
      if (status === 'completed' && answer != null) showAnswer(answer);
      ui.cancelBtn.disabled = true;
      recentStatus.set(this.id, status);
      renderRecent();
    }
  }

  let current = null; // the RunView on screen

  function setRunStatus(status, id, reason, usage) {
    ui.runStatus.dataset.status = status;
    ui.runStatus.textContent = status;
    ui.runId.textContent = id || '';
    const bits = [];
    if (usage && usage.total_tokens != null) bits.push(fmtInt(usage.total_tokens) + ' tokens');
    if (reason) bits.push(reason);
    ui.runUsage.textContent = bits.join(' · ');
    ui.cancelBtn.disabled = status !== 'running';
  }

  // showEstimate shows the run's estimate, made when it was admitted: when
  // its answer should start and end, and what it should cost; the
  // estimate stays beside the run as it streams and after it ends.
  function showEstimate(est) {
    if (!est) {
      ui.runEstimate.textContent = '';
      ui.runEstimate.dataset.basis = '';
      return;
    }
    const bits = ['estimate: answer in ~' + fmtMs(est.answer_ttft_ms), 'done in ~' + fmtMs(est.duration_ms)];
    if (est.cost_usd > 0) bits.push('~$' + (est.cost_usd < 0.01 ? est.cost_usd.toPrecision(2) : est.cost_usd.toFixed(2)));
    bits.push(est.basis === 'telemetry' ? '(from live model statistics)' : est.basis === 'mixed' ? '(partly from live model statistics)' : '(from the profile file)');
    ui.runEstimate.textContent = bits.join(' · ');
    ui.runEstimate.dataset.basis = est.basis || '';
  }

  // showRouting says how a run asked for with profile "auto" got its
  // profile: the question's tier, the profile, and why.
  function showRouting(r) {
    if (!r || typeof r.profile !== 'string') {
      ui.runRouting.textContent = '';
      ui.runRouting.dataset.tier = '';
      ui.runRouting.dataset.profile = '';
      return;
    }
    const why = Array.isArray(r.reasons) && r.reasons.length ? ' (' + r.reasons.join('; ') + ')' : '';
    ui.runRouting.textContent = 'auto: ' + (r.tier || '?') + ' question → ' + r.profile + why;
    ui.runRouting.dataset.tier = r.tier || '';
    ui.runRouting.dataset.profile = r.profile;
  }

  // showCached marks a run answered from the response cache (or shared
  // with an identical run in flight): no model was called for it.
  function showCached(run) {
    ui.runCached.hidden = !run.cached;
    ui.runCached.dataset.cachedFrom = run.cached_from || '';
    ui.runCached.title = run.cached ? 'answered from the response cache' + (run.cached_from ? ': the log of ' + run.cached_from : '') : '';
  }

  function clearAnswer() {
    ui.answer.replaceChildren();
    ui.answer.dataset.status = 'empty';
    ui.answerCard.hidden = true;
    ui.answer._raw = '';
  }

  function showAnswer(text) {
    ui.answer.replaceChildren(renderMarkdown(text));
    ui.answer._raw = text;
    ui.answer.dataset.status = 'done';
    ui.answerCard.hidden = false;
  }

  // show puts a run on screen: streamed live if running, else from its
  // resource. A finished strategy run is replayed from its log, which alone
  // holds its rankings, notes and skipped steps.
  function show(run) {
    if (current) current.close();
    current = new RunView(run);
    showEstimate(run.estimate);
    showRouting(run.routing);
    showCached(run);
    markRecent(run.id);
    if (location.hash !== '#' + run.id) history.replaceState(null, '', '#' + run.id);
    if (TERMINAL.has(run.status) && strategyOfRun(run) === 'chain') {
      current.showResource(run);
      current.finish(run.status, run);
      return;
    }
    current.start();
  }

  async function openRun(id) {
    showError('');
    try {
      show(await api('GET', '/v1/runs/' + encodeURIComponent(id)));
    } catch (err) {
      reportError('Cannot open ' + id + ': ', err);
    }
  }

  async function submit(e) {
    if (e) e.preventDefault();
    showError('');
    const query = ui.query.value.trim();
    if (!query) {
      showError('Ask a question first.');
      ui.query.focus();
      return;
    }
    const body = { query, profile: ui.profile.value };
    const seed = parseInt(ui.seed.value, 10);
    const maxTokens = parseInt(ui.maxTokens.value, 10);
    if (seed > 0) body.seed = seed;
    if (maxTokens > 0) body.max_tokens = maxTokens;
    ui.runBtn.disabled = true;
    try {
      const run = await api('POST', '/v1/runs', body);
      recentStatus.set(run.id, run.status || 'running');
      addRecent({ id: run.id, query, profile: run.profile || body.profile, created: run.created_at || new Date().toISOString() });
      show(run);
    } catch (err) {
      reportError('Run not started: ', err);
    } finally {
      ui.runBtn.disabled = false;
    }
  }

  async function cancel() {
    if (!current || current.terminal) return;
    ui.cancelBtn.disabled = true;
    const view = current;
    try {
      const run = await api('DELETE', '/v1/runs/' + encodeURIComponent(view.id));
      // The stream delivers run_cancelled; if it is not connected, end here.
      if (!view.ctl && !view.terminal && TERMINAL.has(run.status)) view.finish(run.status, run);
    } catch (err) {
      if (err.status !== 409) { // 409: it had ended already; the stream says how
        reportError('Cancel failed: ', err);
        if (!view.terminal) ui.cancelBtn.disabled = false;
      }
    }
  }

  // ---------------------------------------------------------------- profiles

  // strategyOfStages tells a strategy from the roles of a profile's or a
  // run's stages (for a gateway that does not name it): proposers are a
  // moa's, members a council's, samples a vote's.
  function strategyOfStages(list) {
    const roles = new Set((Array.isArray(list) ? list : []).map((s) => s && s.stage));
    if (roles.has('proposer') || roles.has('aggregator')) return 'moa';
    if (roles.has('member') || roles.has('ranker') || roles.has('chairman')) return 'council';
    if (roles.has('sample') || roles.has('judge') || roles.has('tally')) return 'vote';
    return 'chain';
  }

  /** stepsOfProfile are a profile's steps (a gateway before steps lists only stages). */
  function stepsOfProfile(p) {
    return Array.isArray(p.steps) && p.steps.length ? p.steps : (Array.isArray(p.stages) ? p.stages : []);
  }

  /** strategyOfProfile is a profile's strategy: chain, moa, council, vote (or a newer one). */
  function strategyOfProfile(p) {
    if (!p) return 'chain';
    return typeof p.strategy === 'string' && p.strategy ? p.strategy : strategyOfStages(stepsOfProfile(p));
  }

  /** strategyOfRun is a run's strategy, from the run, its steps or stages, or its profile. */
  function strategyOfRun(run) {
    if (typeof run.strategy === 'string' && run.strategy) return run.strategy;
    if (Array.isArray(run.steps) && run.steps.some((s) => s && idOf(s) !== s.stage)) {
      return strategyOfStages(run.steps) === 'chain' ? 'steps' : strategyOfStages(run.steps);
    }
    const byStages = strategyOfStages(run.stages);
    if (byStages !== 'chain') return byStages;
    const p = (profiles.data || []).find((x) => x.name === run.profile);
    return p ? strategyOfProfile(p) : 'chain';
  }

  async function loadProfiles() {
    try {
      profiles = await api('GET', '/v1/profiles');
    } catch (err) {
      reportError('Cannot load profiles: ', err);
      ui.profile.replaceChildren(new Option('(none)', ''));
      return;
    }
    const want = store(STORE_PROFILE);
    const list = (profiles.data || []).filter((p) => p && typeof p.name === 'string');
    const names = list.map((p) => p.name);
    // Profiles are listed by strategy (a group each) once there is more than a chain.
    const groups = new Map(Object.keys(STRATEGY_TITLES).map((k) => [k, []]));
    for (const p of list) {
      const k = strategyOfProfile(p);
      if (!groups.has(k)) groups.set(k, []);
      // A profile on the model servers found on this machine says so.
      const o = new Option(p.local ? p.name + ' · this machine' : p.name, p.name);
      o.dataset.strategy = k;
      if (p.local) o.dataset.local = '1';
      if (p.description) o.title = p.description;
      groups.get(k).push(o);
    }
    const used = [...groups].filter(([, opts]) => opts.length);
    if (used.length > 1 || (used.length === 1 && used[0][0] !== 'chain')) {
      ui.profile.replaceChildren(...used.map(([k, opts]) => {
        const g = document.createElement('optgroup');
        g.label = STRATEGY_TITLES[k] || k;
        g.dataset.strategy = k;
        g.append(...opts);
        return g;
      }));
    } else {
      ui.profile.replaceChildren(...used.flatMap(([, opts]) => opts));
    }
    // With routing, "auto" picks the profile per question (by its tier).
    if (profiles.routing && Object.keys(profiles.routing).length) {
      const o = new Option('auto · chosen per question', AUTO);
      o.dataset.strategy = 'auto';
      o.title = 'The question\'s complexity picks the profile: ' + routingText(profiles.routing);
      ui.profile.prepend(o);
      names.push(AUTO);
    }
    ui.profile.value = names.includes(want) ? want : (profiles.default || names[0] || '');
    describeProfile();
  }

  // routingText is "simple → fast, standard → balanced, complex → deep".
  function routingText(routing) {
    return Object.entries(routing).map(([tier, p]) => tier + ' → ' + p).join(', ');
  }

  // describeProfile says what the chosen profile does, and, with no run on
  // screen, lays out its steps.
  function describeProfile() {
    if (ui.profile.value === AUTO && profiles.routing) {
      ui.profileDesc.textContent = 'auto — the question\'s complexity picks the profile: ' + routingText(profiles.routing);
      return;
    }
    const p = (profiles.data || []).find((x) => x.name === ui.profile.value);
    if (!p) { ui.profileDesc.textContent = ''; return; }
    const strategy = strategyOfProfile(p);
    const list = stepsOfProfile(p);
    let models;
    if (strategy === 'chain') {
      models = list.map((s) => s.stage + ': ' + s.model).join(' · ');
    } else {
      // "3 proposers: a, b, c · aggregator: d"
      const byRole = new Map();
      for (const s of list) {
        if (!byRole.has(s.stage)) byRole.set(s.stage, []);
        byRole.get(s.stage).push(s.model);
      }
      models = [...byRole].map(([role, ms]) => (ms.length > 1 ? ms.length + ' ' + role + 's' : role) + ': ' + ms.join(', ')).join(' · ');
    }
    const kind = STRATEGY_TITLES[strategy] || strategy;
    ui.profileDesc.textContent = kind + ' — ' + (p.description ? p.description + ' — ' : '') + models;
    if (current) return;
    if (strategy === 'chain') {
      Steps.chain();
      for (const s of list) {
        const v = Steps.get(s.stage);
        if (v) v.setModel(s.model, s.provider);
      }
      return;
    }
    // A preview of the run's layout; the run's run_planned lays out the
    // real one. A gateway before steps gives roles only: ids are made up,
    // and the last step is taken for the final one.
    const named = list.some((s) => s.id || s.step);
    const last = list.length - 1;
    const count = new Map();
    Steps.plan(strategy, named ? planOf(list) : list.map((s, i) => {
      const n = (count.get(s.stage) || 0) + 1;
      count.set(s.stage, n);
      return { step: s.stage + ' ' + n, stage: s.stage, model: s.model, provider: s.provider, final: i === last };
    }));
  }

  // ---------------------------------------------------------------- recent runs

  function recentList() {
    try { return JSON.parse(store(STORE_RUNS) || '[]').filter((r) => r && r.id); } catch (_) { return []; }
  }

  function addRecent(r) {
    const list = recentList().filter((x) => x.id !== r.id);
    list.unshift(r);
    store(STORE_RUNS, JSON.stringify(list.slice(0, MAX_RECENT)));
    renderRecent();
  }

  const recentStatus = new Map(); // id -> status from the server

  function renderRecent() {
    const list = recentList();
    ui.recentEmpty.hidden = list.length > 0;
    ui.recent.replaceChildren(...list.map((r) => {
      const li = el('li');
      li.dataset.run = r.id;
      li.tabIndex = 0;
      const badge = el('span', 'badge');
      const st = recentStatus.get(r.id) || '…';
      badge.dataset.status = st;
      badge.textContent = st;
      const q = el('span', 'q');
      q.textContent = r.query;
      q.title = r.query;
      const prof = el('span', 'muted mono');
      prof.textContent = r.profile || '';
      const when = el('span', 'when muted');
      when.textContent = ago(r.created);
      li.append(badge, q, prof, when);
      if (current && current.id === r.id) li.setAttribute('aria-current', 'true');
      return li;
    }));
  }

  function markRecent(id) {
    for (const li of ui.recent.children) {
      if (li.dataset.run === id) li.setAttribute('aria-current', 'true');
      else li.removeAttribute('aria-current');
    }
  }

  let refreshing = false;
  async function refreshRecent() {
    if (refreshing) return;
    refreshing = true;
    try {
      await Promise.all(recentList().map(async (r) => {
        try {
          const run = await api('GET', '/v1/runs/' + encodeURIComponent(r.id));
          recentStatus.set(r.id, run.status);
        } catch (err) {
          recentStatus.set(r.id, err.status === 404 ? 'gone' : '?');
        }
      }));
    } finally {
      refreshing = false;
    }
    renderRecent();
  }

  // ---------------------------------------------------------------- start-up

  /**
   * stageTable reads a table the gateway wrote into #stages: data-stages
   * (the chain's stages) or data-roles (every role).
   */
  function stageTable(host, attr) {
    try {
      const list = JSON.parse(host.dataset[attr] || '[]');
      if (Array.isArray(list)) return list.filter((s) => s && typeof s.name === 'string' && s.name);
    } catch (e) {
      console.error('qlc: unreadable ' + attr + ' table in the page', e);
    }
    return [];
  }

  function init() {
    for (const k of Object.keys(ui)) {
      ui[k] = document.getElementById(k.replace(/[A-Z]/g, (c) => '-' + c.toLowerCase()));
    }
    ui.form = document.getElementById('ask');
    ui.runBtn = document.getElementById('run');
    ui.cancelBtn = document.getElementById('cancel');
    ui.answerCard = document.getElementById('answer-card');
    Steps.tpl = document.getElementById('stage-template');
    Steps.host = document.getElementById('stages');
    const table = stageTable(Steps.host, 'stages');
    STAGES = table.map((s) => s.name);
    ROLES = new Map([...table, ...stageTable(Steps.host, 'roles')].map((s) => [s.name, s]));
    Steps.chain();

    ui.form.addEventListener('submit', submit);
    ui.keyForm.addEventListener('submit', saveKey);
    ui.keyForget.addEventListener('click', forgetKey);
    ui.query.addEventListener('keydown', (e) => {
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) submit(e);
    });
    ui.cancelBtn.addEventListener('click', cancel);
    ui.profile.addEventListener('change', () => {
      store(STORE_PROFILE, ui.profile.value);
      describeProfile();
    });
    ui.recent.addEventListener('click', (e) => {
      const li = e.target.closest('li[data-run]');
      if (li) openRun(li.dataset.run);
    });
    ui.recent.addEventListener('keydown', (e) => {
      const li = e.target.closest('li[data-run]');
      if (li && (e.key === 'Enter' || e.key === ' ')) { e.preventDefault(); openRun(li.dataset.run); }
    });
    document.getElementById('clear-recent').addEventListener('click', () => {
      store(STORE_RUNS, '[]');
      recentStatus.clear();
      renderRecent();
    });
    document.getElementById('copy').addEventListener('click', async () => {
      try { await navigator.clipboard.writeText(ui.answer._raw || ''); } catch (_) { /* not allowed here */ }
    });
    window.addEventListener('hashchange', () => {
      const id = location.hash.slice(1);
      if (id && (!current || current.id !== id)) openRun(id);
    });

    // Every API call waits for the session check (authKey), so none goes out
    // without the local key when there is one.
    authReady = loadSession();
    renderRecent();
    loadProfiles();
    refreshRecent();
    const id = location.hash.slice(1);
    if (id.startsWith('run_')) openRun(id);
    authReady.then(() => { document.documentElement.dataset.ready = 'true'; });
  }

  // Hooks for the browser test (gateway/ui_test.go) and for debugging in the console.
  window.QLC = {
    renderMarkdown,
    SSEParser,
    /** feed applies events to a fresh view of a pretend run, without a network. */
    feed(events, run) {
      if (current) current.close();
      current = new RunView(Object.assign({ id: 'run_test', status: 'running', stages: [] }, run || {}));
      current.resetStages();
      current.reconnects = 0;
      current.resumedWith = null;
      // No network: reconnect requests are recorded instead.
      current.connect = (fromSeq) => {
        current.reconnects++;
        current.resumedWith = current.resumeID(fromSeq);
      };
      const orig = current.resync.bind(current);
      current.resync = (why) => { current.resyncs = (current.resyncs || 0) + 1; orig(why); };
      for (const ev of events) current.handle(ev);
      for (const v of Steps.all()) v.flush();
      return {
        lastSeq: current.lastSeq, resyncs: current.resyncs || 0, status: current.status,
        reconnects: current.reconnects, resumedWith: current.resumedWith,
      };
    },
    current: () => current && {
      id: current.id, lastSeq: current.lastSeq, status: current.status,
      connects: current.connects, streaming: current.ctl !== null, waitingForKey: current.waitingForKey,
    },
  };

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
  else init();
})();
