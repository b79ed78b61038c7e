// QLC admin console: tenants, limits and keys, usage charts and the audit
// log, through the admin API (/v1/admin/…, /v1/usage) with an admin key.
//
// Rules this file keeps:
//   - the admin key lives in sessionStorage only, goes out only in the
//     Authorization header, never in an address, and is never logged;
//   - a new tenant key is shown once (#secret), never stored, and gone when
//     the panel is closed;
//   - every text that comes from the API (tenant names!) is set with
//     textContent or an attribute, never parsed as markup;
//   - charts are inline SVG drawn here: nothing is fetched from elsewhere.
'use strict';

(() => {
  const KEY_STORE = 'qlc.admin.key';
  const SVG = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);
  // A colour per series, readable on light and dark backgrounds.
  const PALETTE = ['#5b5bd6', '#0ea5a5', '#e0803a', '#d04f8a', '#3b82f6', '#65a30d', '#a16207', '#7c3aed', '#dc2626'];
  const OTHER_COLOUR = '#98a2b3';
  const MAX_SERIES = 8; // more groups than this: the rest are summed as "other"

  const state = {
    key: '',
    tenants: [], // as GET /v1/admin/tenants lists them
  };

  // el builds an element: attrs are set as attributes (or, for "text", as
  // textContent; for "on…", as listeners); children are nodes or strings
  // (strings become text nodes).
  function el(tag, attrs, ...children) {
    return build(document.createElement(tag), attrs, children);
  }
  function svg(tag, attrs, ...children) {
    return build(document.createElementNS(SVG, tag), attrs, children);
  }
  function build(node, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') node.textContent = String(v);
      else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of children) {
      if (c === null || c === undefined) continue;
      node.append(typeof c === 'string' ? document.createTextNode(c) : c);
    }
    return node;
  }

  // ---- API ----

  class APIError extends Error {
    constructor(status, body) {
      const e = (body && body.error) || {};
      super(e.message || `HTTP ${status}`);
      this.status = status;
      this.code = e.code || '';
      this.param = e.param || '';
    }
  }

  async function api(method, path, body) {
    const init = { method, headers: { Authorization: 'Bearer ' + state.key }, cache: 'no-store' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    let data = null;
    try { data = await resp.json(); } catch (_) { /* not JSON: the status says it */ }
    if (!resp.ok) {
      const err = new APIError(resp.status, data);
      if (resp.status === 401 && state.key) signOut('The admin key was refused (revoked?). Sign in again.');
      throw err;
    }
    return data;
  }

  function query(params) {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== '' && v !== undefined && v !== null) q.set(k, v);
    const s = q.toString();
    return s ? '?' + s : '';
  }

  function showError(node, err) {
    node.textContent = err instanceof Error ? err.message : String(err);
    node.hidden = false;
  }

  // ---- sign in / out ----

  async function signIn(key) {
    state.key = key;
    try {
      await loadTenants();
    } catch (err) {
      state.key = '';
      const msg = err.status === 401 ? 'That key is not valid.' :
        err.status === 403 ? 'That is a tenant key; the console needs an admin key.' :
          err.status === 404 ? 'This gateway runs without tenancy: there is no admin API.' : err.message;
      showError($('login-msg'), msg);
      return false;
    }
    sessionStorage.setItem(KEY_STORE, key);
    $('login').hidden = true;
    $('console').hidden = false;
    $('session').hidden = false;
    $('login-msg').hidden = true;
    $('admin-key').value = '';
    refreshUsage();
    refreshAudit();
    return true;
  }

  function signOut(message) {
    state.key = '';
    state.tenants = [];
    sessionStorage.removeItem(KEY_STORE);
    hideSecret();
    $('console').hidden = true;
    $('session').hidden = true;
    $('login').hidden = false;
    $('tenant-table').tBodies[0].replaceChildren();
    if (message) showError($('login-msg'), message);
    else $('login-msg').hidden = true;
  }

  // ---- the key shown once ----

  function showSecret(title, key) {
    $('secret-title').textContent = title;
    $('secret-key').value = key;
    $('secret-copied').textContent = '';
    $('secret').hidden = false;
    $('secret').scrollIntoView({ block: 'nearest' });
  }

  function hideSecret() {
    $('secret-key').value = '';
    $('secret-copied').textContent = '';
    $('secret').hidden = true;
  }

  async function copySecret() {
    const input = $('secret-key');
    const key = input.value;
    if (!key) return;
    let done = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(key);
        done = true;
      } catch (_) { /* no permission: fall back */ }
    }
    if (!done) {
      input.focus();
      input.select();
      try { done = document.execCommand('copy'); } catch (_) { done = false; }
    }
    const msg = $('secret-copied');
    msg.className = 'msg small ' + (done ? 'ok' : 'bad');
    msg.dataset.copied = done ? 'yes' : 'no';
    msg.textContent = done ? 'Copied to the clipboard.' : 'Could not copy: the key is selected, press Ctrl+C (⌘C).';
    if (!done) { input.focus(); input.select(); }
  }

  // ---- tenants ----

  async function loadTenants() {
    const data = await api('GET', '/v1/admin/tenants');
    state.tenants = (data.data || []).slice().sort((a, b) => a.name.localeCompare(b.name) || a.id.localeCompare(b.id));
    renderTenants();
    fillTenantSelects();
  }

  function tenantName(id) {
    const t = state.tenants.find((x) => x.id === id);
    return t ? t.name : id;
  }

  const num = (n) => Number(n).toLocaleString('en-US');
  function compact(n) {
    n = Number(n);
    if (n >= 1e9) return +(n / 1e9).toFixed(1) + 'G';
    if (n >= 1e6) return +(n / 1e6).toFixed(1) + 'M';
    if (n >= 1e4) return +(n / 1e3).toFixed(1) + 'k';
    return num(n);
  }
  function usd(v) {
    v = Number(v) || 0;
    if (v === 0) return '$0';
    if (v < 0.01) return '$' + v.toPrecision(2);
    return '$' + v.toFixed(2);
  }

  // limitsText is a one-line summary of a tenant's limits.
  function limitsText(l) {
    l = l || {};
    const parts = [];
    if (l.requests_per_minute) parts.push(num(l.requests_per_minute) + ' req/min');
    if (l.tokens_per_minute) parts.push(compact(l.tokens_per_minute) + ' tok/min');
    parts.push(l.concurrent_runs ? num(l.concurrent_runs) + ' concurrent' : 'no concurrency limit');
    if (l.token_budget) parts.push(compact(l.token_budget) + ' tokens/' + (l.budget_period || 'ever'));
    if (l.profiles && l.profiles.length) parts.push('profiles: ' + l.profiles.join(', '));
    if (l.weight) parts.push('weight ' + l.weight);
    if (l.max_streams) parts.push(num(l.max_streams) + ' streams/key');
    if (l.max_profiles) parts.push(num(l.max_profiles) + ' own profiles');
    return parts.join(' · ');
  }

  function renderTenants() {
    const body = $('tenant-table').tBodies[0];
    body.replaceChildren(...state.tenants.map(tenantRow));
    $('tenants-empty').hidden = state.tenants.length > 0;
  }

  function tenantRow(t) {
    const keys = el('ul', { class: 't-keys' }, ...(t.keys || []).map((k) => keyItem(t, k)));
    return el('tr', { 'data-tenant': t.id },
      el('td', {},
        el('div', { class: 't-name', text: t.name }),
        el('div', { class: 't-id', text: t.id })),
      el('td', { class: 't-limits', text: limitsText(t.limits) }),
      el('td', {}, keys),
      el('td', { class: 't-actions' },
        el('button', { type: 'button', class: 'btn btn-ghost btn-small t-edit', text: 'Edit limits', onclick: () => openForm('edit', t) }),
        el('button', { type: 'button', class: 'btn btn-ghost btn-small t-issue', text: 'Issue key', onclick: (e) => issueKey(t, e.currentTarget) }),
        el('button', { type: 'button', class: 'btn btn-ghost btn-small t-usage', text: 'Usage', onclick: () => showTenantUsage(t.id) })));
  }

  function keyItem(t, k) {
    const revoked = !!k.revoked_at;
    const item = el('li', { 'data-key': k.id, 'data-revoked': revoked },
      el('span', { class: 'k-id', text: k.id }),
      el('span', { class: 'k-state muted', text: revoked ? 'revoked ' + when(k.revoked_at) : 'since ' + when(k.created_at) }));
    if (!revoked) {
      // Two clicks: the first arms the button, the second revokes.
      const btn = el('button', { type: 'button', class: 'btn btn-danger btn-small k-revoke', text: 'Revoke' });
      btn.addEventListener('click', () => {
        if (!btn.hasAttribute('data-armed')) {
          btn.setAttribute('data-armed', '');
          btn.textContent = 'Really revoke?';
          setTimeout(() => { if (btn.isConnected) { btn.removeAttribute('data-armed'); btn.textContent = 'Revoke'; } }, 5000);
          return;
        }
        revokeKey(t, k, btn);
      });
      item.append(btn);
    }
    return item;
  }

  function when(ts) {
    const d = new Date(ts);
    if (isNaN(d)) return '';
    return d.toISOString().replace('T', ' ').slice(0, 16) + ' UTC';
  }

  async function issueKey(t, btn) {
    btn.disabled = true;
    try {
      const r = await api('POST', '/v1/admin/tenants/' + encodeURIComponent(t.id) + '/keys');
      showSecret('New key for ' + t.name + ' (' + r.key_id + ')', r.key);
      await loadTenants();
      refreshAudit();
    } catch (err) {
      showError($('console-msg'), 'Issue key: ' + err.message);
    } finally {
      btn.disabled = false;
    }
  }

  async function revokeKey(t, k, btn) {
    btn.disabled = true;
    try {
      await api('DELETE', '/v1/admin/keys/' + encodeURIComponent(k.id));
      await loadTenants();
      refreshAudit();
    } catch (err) {
      btn.disabled = false;
      showError($('console-msg'), 'Revoke ' + k.id + ': ' + err.message);
    }
  }

  // ---- the tenant form (create and edit) ----

  const LIMIT_FIELDS = [
    ['tf-rpm', 'requests_per_minute'],
    ['tf-tpm', 'tokens_per_minute'],
    ['tf-budget', 'token_budget'],
    ['tf-weight', 'weight'],
    ['tf-streams', 'max_streams'],
    ['tf-max-profiles', 'max_profiles'],
  ];

  function openForm(mode, t) {
    const f = $('tenant-form');
    f.reset();
    f.dataset.mode = mode;
    f.dataset.tenant = t ? t.id : '';
    $('tf-msg').hidden = true;
    $('tf-id').disabled = mode === 'edit';
    if (mode === 'edit') {
      const l = t.limits || {};
      $('tf-title').textContent = 'Edit ' + t.name;
      $('tf-submit').textContent = 'Save limits';
      $('tf-name').value = t.name;
      $('tf-id').value = t.id;
      for (const [id, field] of LIMIT_FIELDS) $(id).value = l[field] ? String(l[field]) : '';
      // 0 (absent) is "no limit" here; an empty field would mean the default.
      $('tf-concurrent').value = String(l.concurrent_runs || 0);
      $('tf-period').value = l.budget_period || '';
      $('tf-profiles').value = (l.profiles || []).join(', ');
    } else {
      $('tf-title').textContent = 'New tenant';
      $('tf-submit').textContent = 'Create tenant';
    }
    f.hidden = false;
    $('tf-name').focus();
  }

  function formLimits() {
    const limits = {};
    for (const [id, field] of LIMIT_FIELDS) {
      const v = $(id).value.trim();
      if (v !== '') limits[field] = Number(v);
    }
    const c = $('tf-concurrent').value.trim();
    if (c !== '') limits.concurrent_runs = Number(c);
    if ($('tf-period').value) limits.budget_period = $('tf-period').value;
    const profiles = $('tf-profiles').value.split(',').map((s) => s.trim()).filter(Boolean);
    if (profiles.length) limits.profiles = profiles;
    return limits;
  }

  async function submitForm(ev) {
    ev.preventDefault();
    const f = $('tenant-form');
    const msg = $('tf-msg');
    msg.hidden = true;
    $('tf-submit').disabled = true;
    try {
      if (f.dataset.mode === 'edit') {
        await api('PATCH', '/v1/admin/tenants/' + encodeURIComponent(f.dataset.tenant), { name: $('tf-name').value, limits: formLimits() });
      } else {
        const body = { name: $('tf-name').value, limits: formLimits() };
        const id = $('tf-id').value.trim();
        if (id) body.id = id;
        const r = await api('POST', '/v1/admin/tenants', body);
        showSecret('Key for the new tenant ' + r.name + ' (' + r.key_id + ')', r.key);
      }
      f.hidden = true;
      f.reset();
      await loadTenants();
      refreshAudit();
    } catch (err) {
      showError(msg, err.message);
    } finally {
      $('tf-submit').disabled = false;
    }
  }

  function fillTenantSelects() {
    for (const id of ['u-tenant', 'a-tenant']) {
      const sel = $(id);
      const keep = sel.value;
      const first = sel.options[0];
      sel.replaceChildren(first, ...state.tenants.map((t) => el('option', { value: t.id, text: t.name + ' (' + t.id + ')' })));
      sel.value = state.tenants.some((t) => t.id === keep) ? keep : '';
    }
  }

  function showTenantUsage(id) {
    $('u-tenant').value = id;
    refreshUsage();
    $('usage').scrollIntoView({ block: 'start' });
  }

  // ---- usage charts ----

  const RANGES = {
    '24h': { hours: 24, bucket: 'hour' },
    '7d': { hours: 7 * 24, bucket: 'hour' },
    '30d': { hours: 30 * 24, bucket: 'day' },
    '90d': { hours: 90 * 24, bucket: 'day' },
  };
  const HOUR = 3600e3;
  const DAY = 24 * HOUR;
  let usageSeq = 0; // the latest request wins when several are in flight

  // bucketStarts lists the starts (ms) of the buckets from the one holding
  // from to the one holding now, UTC-aligned as the API's.
  function bucketStarts(from, now, width) {
    const out = [];
    for (let t = Math.floor(from / width) * width; t <= now; t += width) out.push(t);
    return out;
  }

  async function refreshUsage() {
    const seq = ++usageSeq;
    const r = RANGES[$('u-range').value] || RANGES['30d'];
    const width = r.bucket === 'hour' ? HOUR : DAY;
    const now = Date.now();
    // The first bucket is whole: from is aligned down to it.
    const from = Math.floor((now - r.hours * HOUR + width) / width) * width;
    const fromISO = new Date(from).toISOString();
    const group = $('u-group').value;
    const metric = $('u-metric').value;
    const tenant = $('u-tenant').value;
    const chart = $('u-chart');
    const top = $('top-chart');
    try {
      const [series, tops] = await Promise.all([
        api('GET', '/v1/usage' + query({ bucket: r.bucket, group_by: group, from: fromISO, tenant })),
        api('GET', '/v1/usage' + query({ group_by: 'tenant', from: fromISO, limit: 10 })),
      ]);
      if (seq !== usageSeq) return;
      drawSeries(chart, $('u-legend'), series.data || [], bucketStarts(from, now, width), width, group, metric);
      drawTop(top, tops.data || []);
      const runs = (series.data || []).reduce((s, x) => (group === 'model' ? s : s + x.runs), 0);
      $('u-note').textContent = (group === 'model' ? 'By model, a run counts toward every model it used. ' : runs + ' runs in range. ') +
        'Buckets are UTC ' + r.bucket + 's.' + (series.truncated ? ' (More rows than shown: narrow the range.)' : '');
    } catch (err) {
      if (seq !== usageSeq) return;
      chart.dataset.state = 'error';
      $('u-table').tBodies[0].replaceChildren();
      chart.replaceChildren(el('p', { class: 'msg bad', text: 'Usage: ' + err.message }));
    }
  }

  function metricText(metric, v) {
    if (metric === 'cost_usd') return usd(v);
    if (metric === 'total_tokens') return compact(v) + ' tokens';
    return num(v) + ' runs';
  }
  function axisText(metric, v) {
    if (metric === 'cost_usd') return usd(v);
    return compact(v);
  }

  // niceMax rounds a chart's maximum up to 1, 2 or 5 times a power of ten.
  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 5, 10]) if (v <= m * p) return m * p;
    return 10 * p;
  }

  function groupLabel(group, g) {
    if (group === 'tenant') return tenantName(g);
    return g === '' ? '(none)' : g;
  }

  // drawSeries draws stacked bars: one bar per bucket, one colour per group
  // (the MAX_SERIES largest; the rest summed as "other").
  function drawSeries(box, legend, rows, starts, width, group, metric) {
    const totals = new Map();
    for (const r of rows) totals.set(r.group, (totals.get(r.group) || 0) + Number(r[metric] || 0));
    const ranked = [...totals.entries()].filter(([, v]) => v > 0).sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1));
    const shown = ranked.slice(0, MAX_SERIES).map(([g]) => g);
    const hasOther = ranked.length > MAX_SERIES;
    const series = shown.map((g, i) => ({ key: g, label: groupLabel(group, g), colour: PALETTE[i % PALETTE.length] }));
    if (hasOther) series.push({ key: '\u0000other', label: 'other', colour: OTHER_COLOUR });
    const index = new Map(starts.map((t, i) => [t, i]));
    const values = starts.map(() => new Map());
    for (const r of rows) {
      const i = index.get(Date.parse(r.start));
      if (i === undefined) continue;
      const k = shown.includes(r.group) ? r.group : '\u0000other';
      values[i].set(k, (values[i].get(k) || 0) + Number(r[metric] || 0));
    }
    const sums = values.map((m) => [...m.values()].reduce((a, b) => a + b, 0));
    const max = niceMax(Math.max(0, ...sums));

    const W = 960, H = 260, L = 64, R = 10, T = 10, B = 34;
    const plotW = W - L - R, plotH = H - T - B;
    const n = Math.max(starts.length, 1);
    const slot = plotW / n;
    const barW = Math.max(1, slot * 0.78);
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'usage per ' + (width === HOUR ? 'hour' : 'day') });
    for (let i = 0; i <= 4; i++) {
      const v = (max * i) / 4;
      const y = T + plotH - (plotH * i) / 4;
      root.append(svg('line', { class: i === 0 ? 'axis' : 'gridline', x1: L, x2: W - R, y1: y, y2: y }));
      root.append(svg('text', { x: L - 6, y: y + 4, 'text-anchor': 'end', text: axisText(metric, v) }));
    }
    const every = Math.max(1, Math.ceil(n / 12));
    starts.forEach((t, i) => {
      const x = L + i * slot + (slot - barW) / 2;
      let y = T + plotH;
      for (const s of series) {
        const v = values[i].get(s.key) || 0;
        if (v <= 0) continue;
        const h = (v / max) * plotH;
        y -= h;
        root.append(svg('rect', {
          class: 'bar', x: x.toFixed(2), y: y.toFixed(2), width: barW.toFixed(2), height: Math.max(h, 0.5).toFixed(2), fill: s.colour,
          'data-group': s.key === '\u0000other' ? 'other' : s.key, 'data-start': new Date(t).toISOString(), 'data-value': String(v),
        }, svg('title', { text: s.label + ' — ' + bucketLabel(t, width, true) + ': ' + metricText(metric, v) })));
      }
      if (i % every === 0) {
        const label = width === HOUR && n > 24 ? bucketLabel(t, DAY, false) + ' ' + bucketLabel(t, HOUR, false) : bucketLabel(t, width, false);
        root.append(svg('text', { x: (L + i * slot + slot / 2).toFixed(2), y: H - B + 16, 'text-anchor': 'middle', text: label }));
      }
    });
    if (!series.length) {
      root.append(svg('text', { class: 'empty', x: L + plotW / 2, y: T + plotH / 2, 'text-anchor': 'middle', text: 'No usage in this range.' }));
    }
    box.dataset.state = series.length ? 'data' : 'empty';
    box.dataset.buckets = String(starts.length);
    box.replaceChildren(root);
    drawTable(series, starts, values, width, metric);
    legend.replaceChildren(...series.map((s) => el('li', { 'data-group': s.key === '\u0000other' ? 'other' : s.key },
      swatch(s.colour), el('span', { text: s.label }),
      el('span', { class: 'muted', text: metricText(metric, s.key === '\u0000other'
        ? ranked.slice(MAX_SERIES).reduce((a, [, v]) => a + v, 0) : totals.get(s.key)) }))));
  }

  // drawTable writes the chart's numbers as a table (#u-table): the
  // buckets with usage, a column per series.
  function drawTable(series, starts, values, width, metric) {
    const table = $('u-table');
    const head = el('tr', {}, el('th', { text: width === HOUR ? 'Hour (UTC)' : 'Day (UTC)' }),
      ...series.map((s) => el('th', { text: s.label })));
    const rows = [];
    starts.forEach((t, i) => {
      if (values[i].size === 0) return;
      rows.push(el('tr', { 'data-start': new Date(t).toISOString() }, el('td', { class: 'mono', text: bucketLabel(t, width, true) }),
        ...series.map((s) => el('td', { text: values[i].has(s.key) ? metricText(metric, values[i].get(s.key)) : '' }))));
    });
    table.tHead.replaceChildren(head);
    table.tBodies[0].replaceChildren(...rows);
  }

  function swatch(colour) {
    return svg('svg', { class: 'swatch', viewBox: '0 0 10 10', width: 11, height: 11, 'aria-hidden': 'true' },
      svg('rect', { width: 10, height: 10, rx: 2, fill: colour }));
  }

  function bucketLabel(t, width, long) {
    const iso = new Date(t).toISOString();
    if (width === DAY) return long ? iso.slice(0, 10) : iso.slice(5, 10);
    return long ? iso.slice(0, 13).replace('T', ' ') + ':00 UTC' : iso.slice(11, 13) + 'h';
  }

  // drawTop draws horizontal bars: the tenants with the highest cost.
  function drawTop(box, rows) {
    rows = rows.slice(0, 10);
    const W = 960, rowH = 26, L = 260, R = 90;
    const H = Math.max(rows.length, 1) * rowH + 8;
    const max = Math.max(0, ...rows.map((r) => r.cost_usd)) || 1;
    const root = svg('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': 'top tenants by cost' });
    rows.forEach((r, i) => {
      const y = 4 + i * rowH;
      const w = Math.max(1, ((W - L - R) * r.cost_usd) / max);
      const g = svg('g', { class: 'top-row', 'data-tenant': r.group, 'data-cost': String(r.cost_usd) },
        svg('text', { class: 'label', x: L - 8, y: y + rowH / 2 + 4, 'text-anchor': 'end', text: clip(tenantName(r.group), 36) },
          svg('title', { text: tenantName(r.group) + ' (' + r.group + ')' })),
        svg('rect', { class: 'bar', x: L, y: y + 4, width: w.toFixed(2), height: rowH - 8, rx: 3, fill: PALETTE[0] },
          svg('title', { text: `${tenantName(r.group)}: ${usd(r.cost_usd)}, ${num(r.total_tokens)} tokens, ${num(r.runs)} runs` })),
        svg('text', { x: L + w + 6, y: y + rowH / 2 + 4, text: usd(r.cost_usd) }));
      root.append(g);
    });
    if (!rows.length) root.append(svg('text', { class: 'empty', x: W / 2, y: 20, 'text-anchor': 'middle', text: 'No usage in this range.' }));
    box.dataset.state = rows.length ? 'data' : 'empty';
    box.replaceChildren(root);
  }

  function clip(s, n) {
    return s.length > n ? s.slice(0, n - 1) + '…' : s;
  }

  // ---- audit log ----

  let auditSeq = 0;

  async function refreshAudit() {
    const seq = ++auditSeq;
    const period = $('a-period').value;
    const params = {
      order: 'desc', limit: 200,
      from: period === 'all' ? '0' : new Date(Date.now() - Number(period) * HOUR).toISOString(),
      action: $('a-action').value,
      tenant: $('a-tenant').value,
      actor: $('a-actor').value.trim(),
      target: $('a-target').value.trim(),
    };
    const body = $('audit-table').tBodies[0];
    try {
      const data = await api('GET', '/v1/admin/audit' + query(params));
      if (seq !== auditSeq) return;
      const rows = data.data || [];
      body.replaceChildren(...rows.map((e) => el('tr', { 'data-seq': e.seq, 'data-action': e.action },
        el('td', { class: 'mono', text: when(e.at) }),
        el('td', { class: 'mono', text: e.actor }),
        el('td', { text: e.action }),
        el('td', { class: 'mono', text: e.target, title: targetTitle(e) }),
        el('td', { class: 'detail', text: e.detail }))));
      $('audit-note').textContent = rows.length === 0 ? 'No entries match.' :
        rows.length + ' entries, newest first' + (rows.length === params.limit ? ' (the newest 200: filter to see older ones).' : '.');
    } catch (err) {
      if (seq !== auditSeq) return;
      body.replaceChildren();
      showError($('audit-note'), 'Audit log: ' + err.message);
    }
  }

  function targetTitle(e) {
    return e.action.startsWith('tenant.') ? tenantName(e.target) : '';
  }

  // ---- local models ----

  // lookLocal asks the gateway to look for model servers on its machine's
  // loopback now (POST /v1/admin/discover-local) and shows what it found:
  // each server with its models and the provider that serves from it. A
  // server found since the gateway started is added by the look itself (its
  // provider and local profiles, usable by the next run): the row says
  // "added"; one that could not be added says so and why.
  let localSeq = 0;
  async function lookLocal() {
    const seq = ++localSeq;
    const note = $('l-note');
    note.classList.remove('bad');
    note.classList.add('muted');
    note.textContent = 'Looking on this machine\u2019s loopback\u2026';
    $('l-look').disabled = true;
    try {
      const data = await api('POST', '/v1/admin/discover-local');
      if (seq !== localSeq) return;
      const servers = data.servers || [];
      $('l-table').tBodies[0].replaceChildren(...servers.map((s) => el('tr', { 'data-kind': s.kind, 'data-provider': s.provider || '' },
        el('td', { text: s.title || s.kind }),
        el('td', { class: 'mono', text: s.base_url }),
        el('td', { class: 'mono', text: (s.models || []).join(', ') }),
        el('td', { class: 'mono', text: s.provider ? s.provider + (s.added ? ' \u2014 added now' : '') : 'not added \u2014 a restart may add it' }))));
      $('l-table').hidden = servers.length === 0;
      const profiles = data.profiles || [];
      $('l-profiles').textContent = profiles.length ? 'Local profiles offered now: ' + profiles.join(', ') + '.' : 'No local profiles are offered now.';
      $('l-profiles').hidden = false;
      note.textContent = (servers.length === 0 ? 'No model server found on this machine.' :
        servers.length + (servers.length === 1 ? ' server' : ' servers') + ' found.') +
        ((data.added_profiles || []).length ? ' Added now, usable at once: ' + data.added_profiles.join(', ') + '.' : '') +
        (data.restart_required ? ' A server could not be added while the gateway runs' + (data.error ? ' (' + data.error + ')' : '') + ': restart it to add its profiles.' : '') +
        ' Looked at ' + when(new Date().toISOString()) + '.';
    } catch (err) {
      if (seq !== localSeq) return;
      $('l-table').hidden = true;
      $('l-profiles').hidden = true;
      showError(note, err.code === 'local_discovery_off' ?
        'Looking for local models is off on this gateway (start it with -discover-local, or -local).' : 'Local models: ' + err.message);
      note.classList.remove('muted');
      note.classList.add('bad');
    } finally {
      if (seq === localSeq) $('l-look').disabled = false;
    }
  }

  // ---- wiring ----

  function init() {
    $('login').addEventListener('submit', (ev) => {
      ev.preventDefault();
      const key = $('admin-key').value.trim();
      if (key) signIn(key);
    });
    $('signout').addEventListener('click', () => signOut());
    $('secret-copy').addEventListener('click', copySecret);
    $('secret-done').addEventListener('click', hideSecret);
    $('tenant-new').addEventListener('click', () => openForm('create'));
    $('tenants-refresh').addEventListener('click', () => loadTenants().catch((err) => showError($('console-msg'), err.message)));
    $('tf-cancel').addEventListener('click', () => { $('tenant-form').hidden = true; });
    $('tenant-form').addEventListener('submit', submitForm);
    for (const id of ['u-range', 'u-group', 'u-metric', 'u-tenant']) $(id).addEventListener('change', refreshUsage);
    $('u-refresh').addEventListener('click', refreshUsage);
    $('l-look').addEventListener('click', lookLocal);
    $('audit-filters').addEventListener('submit', (ev) => { ev.preventDefault(); refreshAudit(); });
    for (const id of ['a-period', 'a-action', 'a-tenant']) $(id).addEventListener('change', refreshAudit);
    const saved = sessionStorage.getItem(KEY_STORE);
    if (saved) signIn(saved);
  }

  init();
})();
