// QLC cluster console. Reads snapshots from GET /v1/admin/console/events
// (Server-Sent Events over fetch, so the admin key goes in the
// Authorization header) and draws them. Every piece of data is set with
// textContent or as an attribute value: never as markup.
'use strict';
(() => {
  const KEY = 'qlc.console.key';
  const MAX_SEEN = 500;
  const $ = (id) => document.getElementById(id);
  const el = (tag, text, cls) => {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (cls) e.className = cls;
    return e;
  };
  const chip = (text, cls) => el('span', text, 'chip' + (cls ? ' ' + cls : ''));
  const td = (content) => {
    const c = el('td');
    if (content instanceof Node) c.appendChild(content);
    else if (content !== undefined && content !== null) c.textContent = String(content);
    return c;
  };
  const chips = (list, clsOf) => {
    const f = document.createDocumentFragment();
    for (const x of list || []) f.appendChild(chip(x, clsOf ? clsOf(x) : ''));
    return f;
  };

  // state is the page's own record, exposed for tests and for people in
  // the browser's console: seen lists each member state change with the
  // time (Date.now()) this page first drew it.
  const state = { ctl: null, snap: null, selected: null, seen: [], last: {}, snapshots: 0, detailTimer: 0 };
  window.qlcConsole = state;

  const getKey = () => sessionStorage.getItem(KEY) || '';
  const setConn = (s, text) => { const c = $('conn'); c.dataset.state = s; c.textContent = text; };
  const ago = (t) => {
    const ms = Date.now() - Date.parse(t);
    if (!isFinite(ms)) return '';
    if (ms < 1000) return 'now';
    if (ms < 60000) return Math.round(ms / 1000) + ' s';
    return Math.round(ms / 60000) + ' min';
  };

  // SSE framing: events end with a blank line; "event:", "data:", "id:"
  // lines; comments start with ":".
  class SSE {
    constructor(on) { this.buf = ''; this.on = on; }
    push(text) {
      this.buf += text.replace(/\r\n?/g, '\n');
      let i;
      while ((i = this.buf.indexOf('\n\n')) >= 0) {
        const block = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 2);
        let type = 'message';
        const data = [];
        for (const line of block.split('\n')) {
          if (line.startsWith(':')) continue;
          const c = line.indexOf(':');
          const field = c < 0 ? line : line.slice(0, c);
          let val = c < 0 ? '' : line.slice(c + 1);
          if (val.startsWith(' ')) val = val.slice(1);
          if (field === 'event') type = val;
          else if (field === 'data') data.push(val);
        }
        if (data.length) this.on(type, data.join('\n'));
      }
    }
  }

  async function connect() {
    if (state.ctl) state.ctl.abort();
    const ctl = new AbortController();
    state.ctl = ctl;
    const live = () => state.ctl === ctl;
    const key = getKey();
    if (!key) { setConn('idle', 'admin key needed'); return; }
    setConn('connecting', 'connecting…');
    let res;
    try {
      res = await fetch('/v1/admin/console/events', {
        headers: { Accept: 'text/event-stream', Authorization: 'Bearer ' + key }, cache: 'no-store', signal: ctl.signal,
      });
    } catch (_) {
      if (live()) retry(ctl);
      return;
    }
    if (!live()) return;
    if (!res.ok) {
      let msg = res.status + '';
      try { msg += ': ' + (await res.json()).error.message; } catch (_) { /* not JSON */ }
      setConn('error', msg);
      if (res.status >= 500) retry(ctl);
      return;
    }
    setConn('live', 'live');
    const parser = new SSE((type, data) => {
      if (!live() || type !== 'snapshot') return;
      let snap;
      try { snap = JSON.parse(data); } catch (err) { console.warn('console: bad snapshot', err); return; }
      render(snap);
    });
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    for (;;) {
      let chunk;
      try { chunk = await reader.read(); } catch (_) { break; }
      if (chunk.done || !live()) break;
      parser.push(dec.decode(chunk.value, { stream: true }));
    }
    if (live()) retry(ctl);
  }

  function retry(ctl) {
    setConn('error', 'disconnected; retrying');
    setTimeout(() => { if (state.ctl === ctl) connect(); }, 1000);
  }

  function render(snap) {
    const now = Date.now();
    state.snap = snap;
    state.snapshots++;
    for (const m of snap.members) {
      if (state.last[m.name] !== m.state) {
        state.last[m.name] = m.state;
        state.seen.push({ member: m.name, remote: m.remote_addr, state: m.state, at: now, seq: snap.seq });
        if (state.seen.length > MAX_SEEN) state.seen.shift();
      }
    }
    $('meta').textContent = 'gateway ' + snap.gateway + ' · snapshot ' + snap.seq;
    renderMembers(snap);
    renderNodes(snap);
    renderLimiters(snap);
    renderRuns(snap);
  }

  function renderMembers(snap) {
    const body = $('members').tBodies[0];
    const rows = document.createDocumentFragment();
    for (const m of snap.members) {
      const tr = el('tr');
      tr.dataset.member = m.name;
      tr.dataset.remote = m.remote_addr;
      tr.dataset.state = m.state;
      tr.append(td(m.name), td(el('span', m.state, 'state')), td(ago(m.since)), td(m.remote_addr),
        td(chips(m.kinds)), td(chips(m.features)), td(m.load), td(m.version));
      rows.appendChild(tr);
    }
    body.replaceChildren(rows);
    const ch = document.createDocumentFragment();
    for (let i = snap.changes.length - 1; i >= 0; i--) {
      const c = snap.changes[i];
      ch.appendChild(el('li', new Date(c.at).toLocaleTimeString() + ' ' + c.member + ' (' + c.remote_addr + '): ' + (c.from || 'new') + ' → ' + c.to));
    }
    $('changes').replaceChildren(ch);
    const tok = document.createDocumentFragment();
    for (const h of snap.tokenizer_hosts) tok.appendChild(el('li', h));
    if (!snap.tokenizer_hosts.length) tok.appendChild(el('li', 'none (every process counts tokens itself)'));
    $('tokenizers').replaceChildren(tok);
  }

  function renderNodes(snap) {
    $('nodes-at').textContent = snap.nodes_at ? 'asked ' + ago(snap.nodes_at) + ' ago' : 'not asked yet';
    const rows = document.createDocumentFragment();
    for (const n of snap.nodes) {
      const tr = el('tr');
      tr.dataset.node = n.node;
      const mb = Object.keys(n.mailbox_depth).sort().map((k) => k + ' ' + n.mailbox_depth[k]);
      const br = n.breakers.map((b) => b.endpoint + ': ' + b.state);
      const runs = n.runs.map((r) => r.run_id + ' ' + r.state);
      tr.append(td(n.node + (n.member ? ' (' + n.member + ')' : '')), td(n.hosted),
        td(n.attempts_running + ' / ' + n.attempts_waiting + ' / ' + n.attempts_total + ' / ' + n.attempts_failed),
        td(n.run_slots_in_use + ' / ' + n.runs_waiting), td(chips(mb)),
        td(chips(br, (x) => x.slice(x.lastIndexOf(' ') + 1))), td(chips(runs)));
      rows.appendChild(tr);
    }
    $('nodes').tBodies[0].replaceChildren(rows);
  }

  function renderLimiters(snap) {
    const rows = document.createDocumentFragment();
    for (const l of snap.limiters) {
      const tr = el('tr');
      tr.append(td(l.tenant), td(l.host || 'none'));
      rows.appendChild(tr);
    }
    $('limiters').tBodies[0].replaceChildren(rows);
  }

  function renderRuns(snap) {
    const rows = document.createDocumentFragment();
    for (const r of snap.runs) {
      const tr = el('tr');
      tr.dataset.run = r.id;
      if (r.id === state.selected) tr.className = 'selected';
      const steps = document.createDocumentFragment();
      for (const s of r.steps) steps.appendChild(chip(s.title + ' ' + s.status + (s.attempts > 1 ? ' ×' + s.attempts : ''), s.status));
      tr.append(td(r.id), td(r.tenant), td(r.profile), td(chip(r.status, r.status)), td(r.coordinator), td(steps), td(ago(r.created_at)));
      tr.addEventListener('click', () => openRun(r.id));
      rows.appendChild(tr);
    }
    $('runs').tBodies[0].replaceChildren(rows);
  }

  async function openRun(id) {
    state.selected = id;
    clearTimeout(state.detailTimer);
    $('detail').hidden = false;
    $('detail-id').textContent = id;
    let res;
    try {
      res = await fetch('/v1/admin/console/runs/' + encodeURIComponent(id), { headers: { Authorization: 'Bearer ' + getKey() }, cache: 'no-store' });
    } catch (_) {
      $('detail-meta').textContent = 'could not reach the gateway';
      return;
    }
    if (state.selected !== id) return;
    if (!res.ok) {
      $('detail-meta').textContent = 'run not found (' + res.status + ')';
      return;
    }
    const d = await res.json();
    if (state.selected !== id) return;
    renderDetail(d);
    if (d.run.status === 'running') state.detailTimer = setTimeout(() => { if (state.selected === id) openRun(id); }, 2000);
  }

  function renderDetail(d) {
    const r = d.run;
    $('detail-meta').textContent = r.profile + ' · ' + r.status + (r.trace_id ? ' · trace ' + r.trace_id : ' · no trace (tracing off: start the gateway and nodes with -trace-store N, or OTEL_* for a collector)');
    const rows = document.createDocumentFragment();
    const t0 = d.timeline.length ? Date.parse(d.timeline[0].at) : 0;
    for (const e of d.timeline) {
      const tr = el('tr');
      tr.dataset.type = e.type;
      const seq = e.to_seq ? e.seq + '–' + e.to_seq : e.seq;
      const detail = e.type === 'token_delta' ? e.tokens + ' tokens' : (e.detail || '');
      tr.append(td(seq), td(Date.parse(e.at) - t0), td(e.type), td(e.step || ''), td(detail));
      rows.appendChild(tr);
    }
    $('timeline').tBodies[0].replaceChildren(rows);
    renderWaterfall(d.spans, d.spans_complete);
  }

  const colorOf = (s) => {
    let h = 0;
    for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) >>> 0;
    return 'hsl(' + (h % 360) + ', 55%, 48%)';
  };

  function renderWaterfall(spans, complete) {
    const procs = [...new Set(spans.map((s) => s.service + ' ' + s.instance))];
    $('spancount').textContent = spans.length + ' spans from ' + procs.length + ' processes' + (complete ? '' : ' (a node did not answer)');
    const legend = document.createDocumentFragment();
    for (const p of procs) {
      const c = chip(p);
      c.style.background = colorOf(p);
      legend.appendChild(c);
    }
    $('legend').replaceChildren(legend);
    if (!spans.length) { $('waterfall').replaceChildren(); return; }
    // Depth-first: each span under its parent, siblings by start.
    const ids = new Set(spans.map((s) => s.span_id));
    const kids = new Map();
    const roots = [];
    for (const s of spans) {
      if (s.parent_span_id && ids.has(s.parent_span_id)) {
        if (!kids.has(s.parent_span_id)) kids.set(s.parent_span_id, []);
        kids.get(s.parent_span_id).push(s);
      } else roots.push(s);
    }
    const order = [];
    const walk = (s, depth) => {
      order.push([s, depth]);
      for (const k of (kids.get(s.span_id) || []).sort((a, b) => a.start_us - b.start_us)) walk(k, depth + 1);
    };
    for (const r of roots.sort((a, b) => a.start_us - b.start_us)) walk(r, 0);
    const t0 = Math.min(...spans.map((s) => s.start_us));
    const t1 = Math.max(...spans.map((s) => s.end_us));
    const total = Math.max(t1 - t0, 1);
    const rows = document.createDocumentFragment();
    for (const [s, depth] of order) {
      const row = el('div', null, 'wf-row');
      row.dataset.service = s.service;
      row.dataset.instance = s.instance;
      row.dataset.span = s.span_id;
      const name = el('div', s.name, 'wf-name');
      name.style.paddingLeft = (depth * 12) + 'px';
      name.title = s.service + ' ' + s.instance + '\n' + Object.entries(s.attributes || {}).map(([k, v]) => k + '=' + v).join('\n');
      const track = el('div', null, 'wf-track');
      const bar = el('div', null, 'wf-bar' + (s.status === 'error' ? ' error' : ''));
      const left = (s.start_us - t0) / total * 100;
      bar.style.left = left + '%';
      bar.style.width = Math.max((s.end_us - s.start_us) / total * 100, 0.2) + '%';
      bar.style.background = colorOf(s.service + ' ' + s.instance);
      bar.title = name.title;
      const dur = el('span', ((s.end_us - s.start_us) / 1000).toFixed(1) + ' ms', 'wf-dur');
      dur.style.left = Math.min(left + (s.end_us - s.start_us) / total * 100 + 0.5, 90) + '%';
      track.append(bar, dur);
      row.append(name, track);
      rows.appendChild(row);
    }
    $('waterfall').replaceChildren(rows);
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('keyform').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const k = $('key').value.trim();
      if (k) sessionStorage.setItem(KEY, k);
      $('key').value = '';
      connect();
    });
    $('forget').addEventListener('click', () => {
      sessionStorage.removeItem(KEY);
      if (state.ctl) state.ctl.abort();
      state.ctl = null;
      setConn('idle', 'admin key needed');
    });
    $('detail-close').addEventListener('click', () => {
      state.selected = null;
      clearTimeout(state.detailTimer);
      $('detail').hidden = true;
    });
    $('detail-refresh').addEventListener('click', () => { if (state.selected) openRun(state.selected); });
    if (getKey()) connect();
    else setConn('idle', 'admin key needed');
  });
})();
