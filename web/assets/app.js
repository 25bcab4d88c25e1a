// Weir dashboard: table status, live tiles over /v1/live (docs/live.md), a tile
// editor and a SQL console. Plain JavaScript, no dependencies, nothing fetched from
// anywhere but this server. Every value from the server reaches the DOM through
// textContent or attributes set with setAttribute, never through innerHTML.
'use strict';

(() => {
  const SVG_NS = 'http://www.w3.org/2000/svg';
  const STORAGE_KEY = 'weir.tiles.v1';
  const TOKEN_KEY = 'weir.token';
  const STATUS_EVERY_MS = 2000;
  const PALETTE = ['#38bdf8', '#f472b6', '#a3e635', '#fbbf24', '#c084fc', '#34d399', '#fb923c', '#60a5fa', '#f87171', '#2dd4bf'];
  const MAX_SERIES = 8;
  const TOP_N = 10;
  const MAX_TABLE_ROWS = 500;

  // ---------------------------------------------------------------- DOM helpers

  /** Creates an element: attributes via setAttribute, children as nodes or text. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function s(tag, attrs, ...children) {
    const el = document.createElementNS(SVG_NS, tag);
    setAttrs(el, attrs);
    append(el, children);
    return el;
  }
  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.setAttribute('class', v);
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  function append(el, children) {
    for (const c of children.flat()) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
  }
  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- formatting

  const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });
  const decFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 2 });
  const compactFmt = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });

  function fmtNum(v) {
    if (v === null || v === undefined || v === '') return '—';
    const n = Number(v);
    if (!Number.isFinite(n)) return String(v);
    return Number.isInteger(n) ? intFmt.format(n) : decFmt.format(n);
  }
  function fmtCompact(n) {
    if (!Number.isFinite(n)) return '';
    return Math.abs(n) < 10000 ? decFmt.format(n) : compactFmt.format(n);
  }
  function fmtBytes(b) {
    if (!Number.isFinite(b)) return '—';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (Math.abs(b) >= 1024 && i < units.length - 1) { b /= 1024; i++; }
    return (i === 0 ? b : b.toFixed(b < 10 ? 2 : 1)) + ' ' + units[i];
  }
  const pad2 = (n) => String(n).padStart(2, '0');
  function fmtClock(d) {
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }
  function fmtAgo(ms) {
    if (ms < 1500) return 'just now';
    const sec = Math.round(ms / 1000);
    if (sec < 90) return `${sec}s ago`;
    const min = Math.round(sec / 60);
    if (min < 90) return `${min} min ago`;
    return `${Math.round(min / 60)} h ago`;
  }
  function fmtDuration(ms) {
    if (!Number.isFinite(ms)) return '—';
    const neg = ms < 0; ms = Math.abs(ms);
    let out;
    if (ms < 1000) out = `${Math.round(ms)} ms`;
    else if (ms < 60000) out = `${(ms / 1000).toFixed(1)} s`;
    else if (ms < 7200000) out = `${Math.round(ms / 60000)} min`;
    else out = `${(ms / 3600000).toFixed(1)} h`;
    return neg ? `-${out}` : out;
  }
  function fmtCell(v) {
    if (v === null || v === undefined) return 'null';
    if (typeof v === 'number') return fmtNum(v);
    if (typeof v === 'object') return JSON.stringify(v);
    return String(v);
  }

  // ---------------------------------------------------------------- columns

  /** The kind of a column from its Arrow type name (snapshot) or, without one, its values. */
  function colKind(type, rows, name) {
    if (type) {
      if (/^(Timestamp|Date)/i.test(type)) return 'time';
      if (/^(U?Int|Float|Decimal)/i.test(type)) return 'number';
      if (/^(Utf8|LargeUtf8|Utf8View|Dictionary|String)/i.test(type)) return 'string';
      if (/^Bool/i.test(type)) return 'bool';
      return 'other';
    }
    let kind = null;
    for (const r of rows) {
      const v = r[name];
      if (v === null || v === undefined) continue;
      let k;
      if (typeof v === 'number') k = 'number';
      else if (typeof v === 'boolean') k = 'bool';
      else if (typeof v === 'string' && /^\d{4}-\d\d-\d\d([T ]\d\d:\d\d(:\d\d(\.\d+)?)?(Z|[+-]\d\d:?\d\d)?)?$/.test(v)) k = 'time';
      else if (typeof v === 'string') k = 'string';
      else k = 'other';
      if (kind && kind !== k) return k === 'string' || kind === 'string' ? 'string' : 'other';
      kind = k;
    }
    return kind || 'other';
  }
  function describeColumns(columns, rows) {
    const cols = (columns && columns.length)
      ? columns.map((c) => ({ name: c.name, type: c.type }))
      : Object.keys(rows[0] || {}).map((name) => ({ name, type: null }));
    return cols.map((c) => ({ ...c, kind: colKind(c.type, rows, c.name) }));
  }

  // ---------------------------------------------------------------- HTML tables

  function renderTable(cols, rows, limit) {
    const shown = rows.slice(0, limit);
    const thead = h('thead', null, h('tr', null, cols.map((c) => h('th', { title: c.type || c.kind, class: c.kind === 'number' ? 'num' : null }, c.name))));
    const tbody = h('tbody', null, shown.map((r) => h('tr', null, cols.map((c) => {
      const v = r[c.name];
      const cls = v === null || v === undefined ? 'null' : (typeof v === 'number' ? 'num' : null);
      return h('td', { class: cls }, fmtCell(v));
    }))));
    const wrap = h('div', { class: 'table-wrap' }, h('table', { class: 'data' }, thead, tbody));
    return rows.length > shown.length
      ? [wrap, h('div', { class: 'result-note' }, `showing ${fmtNum(shown.length)} of ${fmtNum(rows.length)} rows`)]
      : [wrap];
  }

  // ---------------------------------------------------------------- charts

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    return (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  }
  function timeLabel(t, span) {
    const d = new Date(t);
    if (span > 2 * 86400000) return `${d.getMonth() + 1}/${d.getDate()} ${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
    if (span < 300000) return fmtClock(d);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}`;
  }
  function timeStep(span) {
    const steps = [1e3, 5e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 21600e3, 43200e3, 86400e3];
    for (const st of steps) if (span / st <= 6) return st;
    return Math.ceil(span / 6 / 86400e3) * 86400e3;
  }

  /** Time series as SVG: x = the first time column; y = numeric columns, or one line per
   *  value of the first string column. */
  function renderTimeSeries(body, cols, rows) {
    const tcol = cols.find((c) => c.kind === 'time');
    const nums = cols.filter((c) => c.kind === 'number');
    const scol = cols.find((c) => c.kind === 'string');
    if (!tcol || !nums.length) return false;
    const series = new Map(); // name -> [[t, y]]
    for (const r of rows) {
      const t = Date.parse(r[tcol.name]);
      if (!Number.isFinite(t)) continue;
      if (scol) {
        const name = r[scol.name] === null || r[scol.name] === undefined ? '(null)' : String(r[scol.name]);
        const y = Number(r[nums[0].name]);
        if (r[nums[0].name] === null || !Number.isFinite(y)) continue;
        if (!series.has(name)) series.set(name, []);
        series.get(name).push([t, y]);
      } else {
        for (const c of nums) {
          const y = Number(r[c.name]);
          if (r[c.name] === null || !Number.isFinite(y)) continue;
          if (!series.has(c.name)) series.set(c.name, []);
          series.get(c.name).push([t, y]);
        }
      }
    }
    let list = [...series.entries()].map(([name, pts]) => ({ name, pts: pts.sort((a, b) => a[0] - b[0]), total: pts.reduce((a, p) => a + p[1], 0) }));
    let hidden = 0;
    if (list.length > MAX_SERIES) {
      list.sort((a, b) => b.total - a.total);
      hidden = list.length - MAX_SERIES;
      list = list.slice(0, MAX_SERIES);
    }
    list.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    if (!list.length) { body.append(h('div', { class: 'placeholder' }, 'no rows yet')); return true; }

    const width = Math.max(240, Math.floor(body.clientWidth - 28 || 360));
    const height = 190;
    const m = { l: 48, r: 10, t: 8, b: 22 };
    let tMin = Infinity, tMax = -Infinity, yMin = 0, yMax = -Infinity;
    for (const sr of list) for (const [t, y] of sr.pts) {
      tMin = Math.min(tMin, t); tMax = Math.max(tMax, t);
      yMin = Math.min(yMin, y); yMax = Math.max(yMax, y);
    }
    if (tMax === tMin) { tMin -= 30000; tMax += 30000; }
    if (yMax <= yMin) yMax = yMin + 1;
    const yStep = niceStep(yMax - yMin, 4);
    yMax = Math.ceil(yMax / yStep) * yStep;
    yMin = Math.floor(yMin / yStep) * yStep;
    const X = (t) => m.l + (t - tMin) / (tMax - tMin) * (width - m.l - m.r);
    const Y = (y) => m.t + (1 - (y - yMin) / (yMax - yMin)) * (height - m.t - m.b);

    const svg = s('svg', { class: 'chart', width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'time series' });
    for (let y = yMin; y <= yMax + yStep / 2; y += yStep) {
      svg.append(s('line', { class: 'grid', x1: m.l, x2: width - m.r, y1: Y(y), y2: Y(y) }));
      svg.append(s('text', { x: m.l - 6, y: Y(y) + 4, 'text-anchor': 'end' }, fmtCompact(y)));
    }
    const span = tMax - tMin;
    const tStep = timeStep(span);
    for (let t = Math.ceil(tMin / tStep) * tStep; t <= tMax; t += tStep) {
      svg.append(s('line', { class: 'axis', x1: X(t), x2: X(t), y1: height - m.b, y2: height - m.b + 4 }));
      const x = X(t);
      const anchor = x > width - m.r - 24 ? 'end' : x < m.l + 24 ? 'start' : 'middle';
      svg.append(s('text', { x, y: height - 6, 'text-anchor': anchor }, timeLabel(t, span)));
    }
    svg.append(s('line', { class: 'axis', x1: m.l, x2: width - m.r, y1: height - m.b, y2: height - m.b }));
    list.forEach((sr, i) => {
      const color = PALETTE[i % PALETTE.length];
      const d = sr.pts.map(([t, y], j) => `${j ? 'L' : 'M'}${X(t).toFixed(1)},${Y(y).toFixed(1)}`).join('');
      svg.append(s('path', { class: 'series', d, stroke: color }, s('title', null, sr.name)));
      if (sr.pts.length <= 40) {
        for (const [t, y] of sr.pts) {
          svg.append(s('circle', { cx: X(t).toFixed(1), cy: Y(y).toFixed(1), r: 2.6, fill: color },
            s('title', null, `${sr.name} · ${timeLabel(t, 0)} · ${fmtNum(y)}`)));
        }
      }
    });
    body.append(svg);
    const last = (sr) => sr.pts[sr.pts.length - 1][1];
    body.append(h('div', { class: 'legend' },
      list.map((sr, i) => {
        const sw = h('span', { class: 'sw' });
        sw.style.background = PALETTE[i % PALETTE.length];
        return h('span', { title: `last: ${fmtNum(last(sr))}` }, sw, sr.name, ' ', h('b', null, fmtCompact(last(sr))));
      }),
      hidden ? h('span', null, `+${hidden} more`) : null));
    return true;
  }

  /** Top-N as horizontal bars: the first string column against the first numeric one. */
  function renderTopN(body, cols, rows) {
    const label = cols.find((c) => c.kind === 'string') || cols.find((c) => c.kind === 'time' || c.kind === 'bool');
    const num = cols.find((c) => c.kind === 'number');
    if (!label || !num) return false;
    const items = rows
      .map((r) => ({ name: r[label.name] === null || r[label.name] === undefined ? '(null)' : String(r[label.name]), v: Number(r[num.name]) }))
      .filter((it) => Number.isFinite(it.v))
      .sort((a, b) => b.v - a.v || (a.name < b.name ? -1 : 1));
    const top = items.slice(0, TOP_N);
    if (!top.length) { body.append(h('div', { class: 'placeholder' }, 'no rows yet')); return true; }
    const max = Math.max(...top.map((it) => Math.abs(it.v)), 1e-12);
    body.append(h('div', { class: 'legend' }, `${label.name} by ${num.name}`,
      items.length > top.length ? ` · top ${top.length} of ${items.length}` : ''));
    body.append(h('div', { class: 'bars' }, top.map((it) => {
      const fill = h('div', { class: 'fill' });
      fill.style.width = `${Math.max(0.5, (Math.abs(it.v) / max) * 100).toFixed(2)}%`;
      return h('div', { class: 'bar-row', title: `${it.name}: ${fmtNum(it.v)}` },
        h('span', { class: 'name' }, it.name), h('div', { class: 'track' }, fill), h('span', { class: 'val' }, fmtNum(it.v)));
    })));
    return true;
  }

  /** A big number: the first numeric column of the first row, with a sparkline of its history. */
  function renderCounter(body, cols, rows, tile) {
    const num = cols.find((c) => c.kind === 'number');
    if (!num) return false;
    const v = rows.length ? rows[0][num.name] : null;
    const n = v === null || v === undefined ? NaN : Number(v);
    const hist = tile.history;
    if (Number.isFinite(n) && (!hist.length || hist[hist.length - 1][1] !== n || Date.now() - hist[hist.length - 1][0] > 5000)) {
      hist.push([Date.now(), n]);
      if (hist.length > 120) hist.shift();
    }
    let delta = '';
    if (hist.length >= 2) {
      const first = hist[0];
      const d = hist[hist.length - 1][1] - first[1];
      if (d !== 0) delta = `${d > 0 ? '+' : ''}${fmtNum(d)} in ${fmtDuration(Date.now() - first[0])}`;
    }
    const box = h('div', { class: 'counter' },
      h('div', { class: 'big', 'data-testid': 'counter-value', 'data-value': Number.isFinite(n) ? String(n) : '' }, Number.isFinite(n) ? fmtNum(n) : '—'),
      h('div', { class: 'label' }, num.name),
      h('div', { class: 'delta' }, delta));
    if (hist.length >= 2) {
      const w = 300, ht = 44;
      const t0 = hist[0][0], t1 = Math.max(hist[hist.length - 1][0], t0 + 1);
      let lo = Math.min(...hist.map((p) => p[1])), hi = Math.max(...hist.map((p) => p[1]));
      if (hi === lo) { hi += 1; lo -= 1; }
      const pts = hist.map(([t, y]) => [(t - t0) / (t1 - t0) * w, ht - 3 - (y - lo) / (hi - lo) * (ht - 6)]);
      const line = pts.map(([x, y], i) => `${i ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`).join('');
      box.append(s('svg', { viewBox: `0 0 ${w} ${ht}`, preserveAspectRatio: 'none', 'aria-hidden': 'true' },
        s('path', { class: 'area', d: `${line}L${w},${ht}L0,${ht}Z` }), s('path', { d: line })));
    }
    body.append(box);
    return true;
  }

  function autoKind(cols, rows) {
    const hasTime = cols.some((c) => c.kind === 'time');
    const hasNum = cols.some((c) => c.kind === 'number');
    const hasStr = cols.some((c) => c.kind === 'string');
    if (hasTime && hasNum) return 'timeseries';
    if (hasNum && rows.length <= 1 && cols.length <= 2) return 'counter';
    if (hasStr && hasNum) return 'topn';
    return 'table';
  }

  const KIND_LABEL = { auto: 'auto', timeseries: 'time series', topn: 'top-N', counter: 'counter', table: 'table' };
  const KIND_NEEDS = {
    timeseries: 'a time series needs a timestamp column and a numeric column',
    topn: 'top-N needs a string column and a numeric column',
    counter: 'a counter needs a numeric column',
  };

  // ---------------------------------------------------------------- tiles (model)

  function defaultTiles() {
    const last10 = "bucket > (SELECT max(bucket) FROM transactions_per_minute) - INTERVAL '10 minutes'";
    return [
      { title: 'Events per minute', kind: 'timeseries', max_rate_hz: 2,
        sql: 'SELECT bucket, sum(events) AS events FROM transactions_per_minute GROUP BY bucket ORDER BY bucket' },
      { title: 'Spend by category, last 10 min', kind: 'topn', max_rate_hz: 2,
        sql: `SELECT category, round(sum(amount_sum), 2) AS spend FROM transactions_per_minute WHERE ${last10} GROUP BY category ORDER BY spend DESC LIMIT 10` },
      { title: 'Distinct cards, last 10 min', kind: 'counter', max_rate_hz: 2,
        sql: `SELECT hll_distinct(distinct_cards) AS cards FROM transactions_per_minute WHERE ${last10}` },
      { title: 'Spend per minute by country', kind: 'timeseries', max_rate_hz: 1,
        sql: 'SELECT bucket, country, round(sum(amount_sum), 2) AS spend FROM transactions_per_minute GROUP BY bucket, country ORDER BY bucket' },
      { title: 'Dead letters', kind: 'counter', max_rate_hz: 2,
        sql: 'SELECT count(*) AS dead_letters FROM transactions_dead_letter' },
      { title: 'Latest dead letters', kind: 'table', max_rate_hz: 1,
        sql: 'SELECT log_time, reason, log_partition, log_offset FROM transactions_dead_letter ORDER BY log_time DESC LIMIT 5' },
    ].map((t) => ({ id: newId(), key: [], ...t }));
  }
  function newId() {
    return 't' + Date.now().toString(36) + Math.random().toString(36).slice(2, 7);
  }
  function loadTiles() {
    try {
      const raw = localStorage.getItem(STORAGE_KEY);
      if (raw === null) return null;
      const list = JSON.parse(raw);
      if (!Array.isArray(list)) return null;
      return list.filter((t) => t && typeof t.sql === 'string' && typeof t.id === 'string').map((t) => ({
        id: t.id, title: String(t.title || 'Untitled'), sql: t.sql,
        kind: KIND_LABEL[t.kind] ? t.kind : 'auto',
        max_rate_hz: Number(t.max_rate_hz) > 0 ? Number(t.max_rate_hz) : 2,
        key: Array.isArray(t.key) ? t.key.map(String) : [],
      }));
    } catch (e) {
      console.warn('weir: ignoring stored tiles', e);
      return null;
    }
  }
  function saveTiles() {
    const list = tiles.map((t) => ({ id: t.spec.id, title: t.spec.title, sql: t.spec.sql, kind: t.spec.kind, max_rate_hz: t.spec.max_rate_hz, key: t.spec.key }));
    try { localStorage.setItem(STORAGE_KEY, JSON.stringify(list)); } catch (e) { console.warn('weir: cannot save tiles', e); }
  }

  // ---------------------------------------------------------------- live socket

  /** One WebSocket to /v1/live, reconnecting with backoff and resubscribing every tile. */
  class LiveSocket {
    constructor() {
      this.subs = new Map(); // subscription id -> {msg, handler}
      this.ws = null;
      this.attempt = 0;
      this.timer = null;
      this.watchdog = null;
      this.heartbeatMs = 15000;
      this.state = 'connecting';
      this.retryAt = 0;
    }
    url() {
      const q = token ? `?token=${encodeURIComponent(token)}` : '';
      return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/v1/live${q}`;
    }
    /** Drops the connection (if any) and connects again at once. */
    restart() {
      const ws = this.ws;
      this.ws = null;
      if (ws) {
        ws.close();
        for (const sub of this.subs.values()) sub.handler({ type: 'disconnected' });
      }
      this.attempt = 0;
      this.connect();
    }
    connect() {
      clearTimeout(this.timer);
      this.setState('connecting');
      let ws;
      try { ws = new WebSocket(this.url()); } catch (e) { this.scheduleReconnect(); return; }
      this.ws = ws;
      ws.onopen = () => {
        if (this.ws !== ws) return;
        this.attempt = 0;
        this.setState('open');
        this.kick();
        for (const sub of this.subs.values()) this.send(sub.msg);
      };
      ws.onmessage = (ev) => {
        if (this.ws !== ws) return;
        this.kick();
        let msg;
        try { msg = JSON.parse(ev.data); } catch (e) { console.warn('weir: bad live message', ev.data); return; }
        this.dispatch(msg);
      };
      ws.onclose = () => {
        if (this.ws !== ws) return;
        this.ws = null;
        clearTimeout(this.watchdog);
        for (const sub of this.subs.values()) sub.handler({ type: 'disconnected' });
        this.scheduleReconnect();
      };
      ws.onerror = () => { /* onclose follows */ };
    }
    /** Closes a connection that has gone silent for two heartbeats. */
    kick() {
      clearTimeout(this.watchdog);
      this.watchdog = setTimeout(() => {
        if (this.ws) { console.warn('weir: live socket silent; reconnecting'); this.ws.close(); }
      }, this.heartbeatMs * 2 + 5000);
    }
    scheduleReconnect() {
      this.attempt++;
      const base = Math.min(15000, 500 * Math.pow(2, this.attempt - 1));
      const delay = Math.round(base * (0.75 + Math.random() * 0.5));
      this.retryAt = Date.now() + delay;
      this.setState('reconnecting');
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.connect(), delay);
    }
    dispatch(msg) {
      switch (msg.type) {
        case 'hello':
          if (Number(msg.heartbeat_ms) > 0) this.heartbeatMs = Number(msg.heartbeat_ms);
          this.kick();
          return;
        case 'heartbeat': case 'pong': return;
        default:
          if (msg.id !== undefined && msg.id !== null) {
            const sub = this.subs.get(msg.id);
            if (sub) sub.handler(msg);
          } else if (msg.type === 'error') {
            showLiveNotice(`server: ${msg.message}`);
          }
      }
    }
    send(obj) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(obj));
    }
    subscribe(id, msg, handler) {
      this.subs.set(id, { msg: { op: 'subscribe', id, ...msg }, handler });
      this.send(this.subs.get(id).msg);
    }
    unsubscribe(id) {
      if (this.subs.delete(id)) this.send({ op: 'unsubscribe', id });
    }
    setState(state) {
      this.state = state;
      renderLiveState();
    }
  }

  const live = new LiveSocket();

  function renderLiveState() {
    const pill = $('live-state');
    pill.dataset.state = live.state;
    const label = pill.querySelector('.label');
    if (live.state === 'open') label.textContent = `live: connected · ${live.subs.size} tile${live.subs.size === 1 ? '' : 's'}`;
    else if (live.state === 'connecting') label.textContent = 'live: connecting…';
    else if (live.state === 'reconnecting') {
      const sec = Math.max(0, Math.ceil((live.retryAt - Date.now()) / 1000));
      label.textContent = `live: disconnected · retry in ${sec}s (#${live.attempt})`;
    } else label.textContent = `live: ${live.state}`;
  }
  let noticeTimer = null;
  function showLiveNotice(text) {
    $('live-notice').textContent = text;
    clearTimeout(noticeTimer);
    noticeTimer = setTimeout(() => { $('live-notice').textContent = ''; }, 10000);
  }

  // ---------------------------------------------------------------- tiles (view)

  /** A tile on the page: its spec, its subscription and its local copy of the result. */
  class Tile {
    constructor(spec) {
      this.spec = spec;
      this.gen = 0;
      this.subId = null;
      this.rows = new Map(); // row identity -> {row, n}
      this.columns = null;
      this.key = [];
      this.seq = 0;
      this.updatedAt = null;
      this.error = null;
      this.history = [];
      this.buildDom();
    }
    buildDom() {
      this.titleEl = h('h3', null);
      this.kindEl = h('span', { class: 'tile-kind' });
      this.bodyEl = h('div', { class: 'tile-body' });
      this.updatedEl = h('span', { class: 'updated', 'data-testid': 'tile-updated' }, 'waiting…');
      this.sqlEl = h('span', { class: 'sql' });
      this.errorEl = h('div', { class: 'tile-error', role: 'alert', 'data-testid': 'tile-error', hidden: true });
      this.el = h('article', { class: 'tile', 'data-testid': 'tile' },
        h('div', { class: 'tile-head' }, this.titleEl, this.kindEl,
          h('button', { type: 'button', class: 'icon', title: 'edit', 'data-testid': 'tile-edit', onclick: () => openEditor(this) }, 'Edit'),
          h('button', { type: 'button', class: 'icon', title: 'remove', 'data-testid': 'tile-remove', onclick: () => removeTile(this) }, '✕')),
        this.bodyEl, this.errorEl,
        h('div', { class: 'tile-foot' }, this.sqlEl, this.updatedEl));
      this.applySpecText();
    }
    applySpecText() {
      this.titleEl.textContent = this.spec.title;
      this.titleEl.title = this.spec.title;
      this.kindEl.textContent = KIND_LABEL[this.spec.kind] || this.spec.kind;
      this.sqlEl.textContent = this.spec.sql;
      this.sqlEl.title = this.spec.sql;
      this.el.dataset.title = this.spec.title;
    }
    subscribe() {
      if (this.subId) live.unsubscribe(this.subId);
      this.subId = `${this.spec.id}.${++this.gen}`;
      const msg = { sql: this.spec.sql, max_rate_hz: this.spec.max_rate_hz };
      if (this.spec.key && this.spec.key.length) msg.key = this.spec.key;
      live.subscribe(this.subId, msg, (m) => this.onMessage(m));
      renderLiveState();
    }
    unsubscribe() {
      if (this.subId) live.unsubscribe(this.subId);
      this.subId = null;
      renderLiveState();
    }
    identity(row) {
      const key = this.key.length ? this.key : (this.columns || []).map((c) => c.name);
      const cols = key.length ? key : Object.keys(row).sort();
      return JSON.stringify(cols.map((k) => (row[k] === undefined ? null : row[k])));
    }
    addRow(row) {
      const id = this.identity(row);
      const e = this.rows.get(id);
      if (e && !this.key.length) e.n++;
      else this.rows.set(id, { row, n: 1 });
    }
    removeRow(row) {
      const id = this.identity(row);
      const e = this.rows.get(id);
      if (!e) return false;
      if (e.n > 1) e.n--; else this.rows.delete(id);
      return true;
    }
    rowList() {
      const out = [];
      for (const { row, n } of this.rows.values()) for (let i = 0; i < n; i++) out.push(row);
      return out;
    }
    onMessage(m) {
      switch (m.type) {
        case 'snapshot':
          this.columns = Array.isArray(m.columns) ? m.columns : null;
          this.key = Array.isArray(m.key) ? m.key : [];
          this.rows = new Map();
          for (const r of m.rows || []) this.addRow(r);
          this.seq = m.seq;
          this.error = null;
          this.touch(m.skipped ? `skipped ${m.skipped}` : null);
          break;
        case 'update': {
          if (this.columns === null || (typeof m.seq === 'number' && m.seq !== this.seq + 1)) {
            // Out of step with the server: start over with a fresh snapshot.
            this.subscribe();
            return;
          }
          for (const r of m.removed || []) this.removeRow(r);
          for (const r of m.changed || []) {
            if (this.key.length) this.rows.set(this.identity(r), { row: r, n: 1 });
            else this.addRow(r);
          }
          for (const r of m.added || []) this.addRow(r);
          this.seq = m.seq;
          this.error = null;
          this.touch(null);
          break;
        }
        case 'error':
          this.error = m.message || 'error';
          this.columns = null;
          this.rows = new Map();
          this.updatedAt = new Date();
          break;
        case 'unsubscribed':
          return;
        case 'disconnected':
          this.el.classList.add('stale');
          return;
        default:
          return;
      }
      this.el.classList.remove('stale');
      this.render();
    }
    touch(note) {
      this.updatedAt = new Date();
      this.note = note;
    }
    render() {
      this.bodyEl.replaceChildren();
      this.errorEl.hidden = !this.error;
      this.errorEl.textContent = this.error || '';
      this.el.classList.toggle('has-error', !!this.error);
      this.renderUpdated();
      if (this.error) {
        this.bodyEl.append(h('div', { class: 'placeholder' }, 'the server refused or failed this query'));
        return;
      }
      if (this.columns === null) {
        this.bodyEl.append(h('div', { class: 'placeholder' }, live.state === 'open' ? 'waiting for the first result…' : 'waiting for the live connection…'));
        return;
      }
      const rows = this.rowList();
      const cols = describeColumns(this.columns, rows);
      const kind = this.spec.kind === 'auto' ? autoKind(cols, rows) : this.spec.kind;
      this.kindEl.textContent = this.spec.kind === 'auto' ? `auto: ${KIND_LABEL[kind]}` : KIND_LABEL[kind];
      let ok = true;
      if (kind === 'timeseries') ok = renderTimeSeries(this.bodyEl, cols, rows);
      else if (kind === 'topn') ok = renderTopN(this.bodyEl, cols, rows);
      else if (kind === 'counter') ok = renderCounter(this.bodyEl, cols, rows, this);
      else this.bodyEl.append(...renderTable(cols, rows, MAX_TABLE_ROWS));
      if (!ok) {
        this.bodyEl.append(h('div', { class: 'legend' }, `${KIND_NEEDS[kind]}; showing a table`));
        this.bodyEl.append(...renderTable(cols, rows, MAX_TABLE_ROWS));
      }
    }
    renderUpdated() {
      if (!this.updatedAt) { this.updatedEl.textContent = 'waiting…'; return; }
      const ago = fmtAgo(Date.now() - this.updatedAt.getTime());
      this.updatedEl.textContent = this.error
        ? `error at ${fmtClock(this.updatedAt)} (${ago})`
        : `updated ${fmtClock(this.updatedAt)} (${ago}) · seq ${this.seq}${this.note ? ' · ' + this.note : ''}`;
      this.updatedEl.title = this.updatedAt.toISOString();
    }
  }

  let tiles = [];

  function addTile(spec, persist = true) {
    const t = new Tile(spec);
    tiles.push(t);
    $('tile-grid').append(t.el);
    t.render();
    t.subscribe();
    if (persist) saveTiles();
    $('no-tiles').hidden = tiles.length > 0;
    return t;
  }
  function removeTile(t) {
    t.unsubscribe();
    t.el.remove();
    tiles = tiles.filter((x) => x !== t);
    saveTiles();
    $('no-tiles').hidden = tiles.length > 0;
  }
  function replaceAllTiles(specs) {
    for (const t of tiles) { t.unsubscribe(); t.el.remove(); }
    tiles = [];
    for (const spec of specs) addTile(spec, false);
    saveTiles();
    $('no-tiles').hidden = tiles.length > 0;
  }

  // Redraw charts when a tile changes width; refresh the "updated … ago" labels.
  const resizeObserver = typeof ResizeObserver === 'function' ? new ResizeObserver((entries) => {
    for (const e of entries) {
      const t = tiles.find((x) => x.bodyEl === e.target);
      if (t && t.lastWidth !== Math.round(e.contentRect.width)) {
        const first = t.lastWidth === undefined;
        t.lastWidth = Math.round(e.contentRect.width);
        if (!first && t.columns) t.render();
      }
    }
  }) : null;
  const observeTile = (t) => { if (resizeObserver) resizeObserver.observe(t.bodyEl); };

  // ---------------------------------------------------------------- tile editor

  let editing = null;
  function openEditor(tile) {
    editing = tile;
    const f = $('tile-form');
    $('tile-editor-title').textContent = tile ? 'Edit tile' : 'Add tile';
    f.elements.title.value = tile ? tile.spec.title : '';
    f.elements.sql.value = tile ? tile.spec.sql : '';
    f.elements.kind.value = tile ? tile.spec.kind : 'auto';
    f.elements.max_rate_hz.value = tile ? tile.spec.max_rate_hz : 2;
    f.elements.key.value = tile ? tile.spec.key.join(', ') : '';
    $('tile-delete').hidden = !tile;
    $('tile-form-error').hidden = true;
    $('tile-editor').showModal();
    f.elements.title.focus();
  }
  function saveEditor(ev) {
    ev.preventDefault();
    const f = $('tile-form');
    const title = f.elements.title.value.trim();
    const sql = f.elements.sql.value.trim().replace(/;\s*$/, '');
    const rate = Number(f.elements.max_rate_hz.value);
    const err = (msg) => { $('tile-form-error').textContent = msg; $('tile-form-error').hidden = false; };
    if (!title) return err('A tile needs a title.');
    if (!sql) return err('A tile needs a SQL query.');
    if (!(rate > 0 && rate <= 100)) return err('The max rate is between 0.1 and 100 updates a second.');
    const key = f.elements.key.value.split(',').map((k) => k.trim()).filter(Boolean);
    const spec = { id: editing ? editing.spec.id : newId(), title, sql, kind: f.elements.kind.value, max_rate_hz: rate, key };
    $('tile-editor').close();
    if (editing) {
      const t = editing;
      const queryChanged = t.spec.sql !== spec.sql || t.spec.max_rate_hz !== spec.max_rate_hz || t.spec.key.join() !== spec.key.join();
      t.spec = spec;
      t.applySpecText();
      if (queryChanged) {
        t.columns = null; t.rows = new Map(); t.history = []; t.error = null; t.updatedAt = null;
        t.subscribe();
      }
      t.render();
      saveTiles();
    } else {
      observeTile(addTile(spec));
    }
    editing = null;
  }

  // ---------------------------------------------------------------- API token

  // With tokens configured on the server (auth), every /v1 call needs one: sent as a
  // bearer header, and as ?token= on the WebSocket, which cannot carry headers.
  let token = '';
  try { token = localStorage.getItem(TOKEN_KEY) || ''; } catch (e) { /* no storage */ }

  function apiFetch(url, opts = {}) {
    const headers = { ...(opts.headers || {}) };
    if (token) headers.authorization = `Bearer ${token}`;
    return fetch(url, { ...opts, headers }).then((r) => {
      if (r.status === 401) $('token-bar').hidden = false;
      return r;
    });
  }
  function setToken(value) {
    token = value;
    try { if (value) localStorage.setItem(TOKEN_KEY, value); else localStorage.removeItem(TOKEN_KEY); } catch (e) { /* ignore */ }
    $('token-input').value = '';
    $('token-bar').hidden = true;
    live.restart();
  }

  // ---------------------------------------------------------------- table status

  const prevCounts = new Map(); // table -> {t, ingested}
  let apiOk = null;

  function setApiState(ok, detail) {
    const pill = $('api-state');
    pill.dataset.state = ok ? 'open' : 'error';
    pill.querySelector('.label').textContent = ok ? 'API' : 'API unreachable';
    pill.title = detail || 'the HTTP API (table status, SQL)';
    apiOk = ok;
  }

  async function getJson(url) {
    const r = await apiFetch(url, { cache: 'no-store' });
    if (!r.ok) throw new Error(`${url}: HTTP ${r.status}`);
    return r.json();
  }

  async function refreshStatus() {
    try {
      const list = await getJson('/v1/tables');
      const details = await Promise.all((list.tables || []).map((t) =>
        getJson(`/v1/tables/${encodeURIComponent(t.name)}`).catch((e) => ({ name: t.name, _error: String(e.message || e), counts: t.counts }))));
      setApiState(true);
      renderStatus(list.tables || [], details);
      $('tables-updated').textContent = `updated ${fmtClock(new Date())} · every ${STATUS_EVERY_MS / 1000} s`;
      maybeInstallDefaults(list.tables || []);
    } catch (e) {
      setApiState(false, String(e.message || e));
      $('tables-updated').textContent = `cannot reach the API (${e.message || e}); retrying`;
    } finally {
      setTimeout(refreshStatus, STATUS_EVERY_MS);
    }
  }

  function stat(label, value, sub, opts = {}) {
    return h('div', { class: `stat${opts.wide ? ' wide' : ''}`, 'data-stat': opts.key || label },
      h('div', { class: 'k' }, label),
      h('div', { class: `v${opts.tone ? ' ' + opts.tone : ''}`, 'data-testid': opts.key ? `stat-${opts.key}` : null, 'data-value': opts.raw !== undefined ? String(opts.raw) : null, title: opts.title || null }, value),
      sub ? h('div', { class: 'sub' }, sub) : null,
      opts.meter || null);
  }

  function renderStatus(list, details) {
    const root = $('table-cards');
    const cards = list.map((t, i) => {
      const d = details[i] || {};
      const c = d.counts || t.counts || {};
      const now = Date.now();
      const prev = prevCounts.get(t.name);
      let rate = null;
      if (prev && now > prev.t && Number.isFinite(c.ingested)) rate = (c.ingested - prev.ingested) / ((now - prev.t) / 1000);
      prevCounts.set(t.name, { t: now, ingested: c.ingested });
      const hot = d.hot || {};
      const budgetPct = hot.budget_bytes ? (hot.bytes / hot.budget_bytes) * 100 : null;
      const meter = h('div', { class: `meter${budgetPct > 90 ? ' bad' : budgetPct > 70 ? ' warn' : ''}` }, h('div'));
      if (budgetPct !== null) meter.firstChild.style.width = `${Math.min(100, budgetPct).toFixed(1)}%`;
      const wmMs = Number.isFinite(d.watermark_ms) ? d.watermark_ms : null;
      const caughtUp = d.lag === 0;
      const accounted = Number.isFinite(d.produced) && d.produced === (c.ingested || 0) + (c.late || 0) + (c.dead_lettered || 0) + (c.duplicates || 0);
      const cold = d.cold || {};
      const seal = d.seal || {};
      const head = h('div', { class: 'card-head' },
        h('h3', null, t.name),
        h('span', { class: 'badge' }, `${fmtNum(t.partitions)} partition${t.partitions === 1 ? '' : 's'}`),
        d._error ? h('span', { class: 'badge bad', title: d._error }, 'detail unavailable') : null,
        hot.backpressured
          ? h('span', { class: 'badge bad', 'data-testid': 'backpressure', title: 'the hot tier is at its byte budget: ingest has stopped reading' }, 'backpressure')
          : (d.hot ? h('span', { class: 'badge ok', 'data-testid': 'backpressure', title: 'the hot tier is under its byte budget' }, 'no backpressure') : null),
        d.lag !== undefined ? h('span', { class: `badge ${caughtUp ? 'ok' : 'warn'}` }, caughtUp ? 'caught up' : 'catching up') : null,
        caughtUp && accounted ? h('span', { class: 'badge ok', title: 'produced = ingested + late + dead-lettered + duplicates' }, 'all accounted for') : null,
        seal.failures > 0 && seal.last_error ? h('span', { class: 'badge bad', title: seal.last_error }, `${fmtNum(seal.failures)} failed seal${seal.failures === 1 ? '' : 's'}`) : null);
      const stats = h('div', { class: 'stats' },
        stat('Produced', fmtNum(d.produced), 'records in the log', { key: 'produced', raw: d.produced }),
        stat('Ingested', fmtNum(c.ingested), rate !== null ? `${fmtNum(Math.max(0, Math.round(rate)))}/s` : ' ', { key: 'ingested', raw: c.ingested }),
        stat('Late', fmtNum(c.late), 'to the late table', { key: 'late', raw: c.late, tone: c.late > 0 ? 'warn' : null }),
        stat('Dead-lettered', fmtNum(c.dead_lettered), 'invalid records', { key: 'dead_lettered', raw: c.dead_lettered, tone: c.dead_lettered > 0 ? 'bad' : null }),
        stat('Lag', fmtNum(d.lag), 'records not yet read', { key: 'lag', raw: d.lag, tone: d.lag > 10000 ? 'warn' : null }),
        stat('Watermark', d.watermark ? fmtClock(new Date(d.watermark)) : '—',
          wmMs !== null ? `${fmtDuration(Date.now() - wmMs)} behind now` : 'no events yet',
          { key: 'watermark', raw: d.watermark || '', title: d.watermark || '' }),
        stat('Hot rows', fmtNum(hot.raw_rows), hot.rollup_bytes !== undefined ? `rollups ${fmtBytes(hot.rollup_bytes)}` : null, { key: 'hot_rows', raw: hot.raw_rows }),
        stat('Hot bytes / budget', fmtBytes(hot.bytes),
          budgetPct !== null ? `${budgetPct < 0.1 && budgetPct > 0 ? '<0.1' : budgetPct.toFixed(1)}% of ${fmtBytes(hot.budget_bytes)}` : null,
          { key: 'hot_bytes', raw: hot.bytes, meter }),
        stat('Segments', fmtNum(cold.segments || 0),
          cold.bytes !== undefined ? `${fmtBytes(cold.bytes)} sealed${hot.sealing ? ', sealing now' : ''}` : null,
          { key: 'segments', raw: cold.segments || 0, title: d.store || '' }),
        c.duplicates ? stat('Duplicates', fmtNum(c.duplicates), 'repeated event ids', { key: 'duplicates', raw: c.duplicates, tone: 'warn' }) : null);
      const rels = (t.relations || []).map((r) => h('button', { type: 'button', title: `query ${r} in the console`, onclick: () => toConsole(`SELECT * FROM ${r} LIMIT 100`) }, r));
      const rollupInfo = (d.rollups || []).map((r) => `${r.name}: ${fmtDuration(r.granularity_ms)} × [${(r.dimensions || []).join(', ')}], ${fmtNum(r.groups)} groups`);
      return h('div', { class: 'card', 'data-testid': 'table-card', 'data-table': t.name }, head, stats,
        h('div', { class: 'relations' }, h('span', { class: 'muted' }, 'relations:'), rels),
        rollupInfo.length ? h('div', { class: 'relations muted' }, 'rollups: ', rollupInfo.join(' · ')) : null);
    });
    if (!cards.length) cards.push(h('p', { class: 'empty' }, 'This server has no tables.'));
    root.replaceChildren(...cards);
  }

  let defaultsChecked = false;
  function maybeInstallDefaults(tableList) {
    if (defaultsChecked) return;
    defaultsChecked = true;
    const stored = loadTiles();
    if (stored !== null) return; // the person's own tiles, even an empty set
    if (tableList.some((t) => t.name === 'transactions')) {
      replaceAllTiles(defaultTiles());
      tiles.forEach(observeTile);
    }
  }

  // ---------------------------------------------------------------- SQL console

  const EXAMPLES = [
    ['count', 'SELECT count(*) AS events FROM transactions'],
    ['per minute', 'SELECT bucket, sum(events) AS events, round(sum(amount_sum), 2) AS spend, hll_distinct(distinct_cards) AS cards\nFROM transactions_per_minute\nGROUP BY bucket\nORDER BY bucket DESC\nLIMIT 20'],
    ['dead letters', 'SELECT log_partition, log_offset, log_time, reason FROM transactions_dead_letter ORDER BY log_time DESC LIMIT 50'],
    ['tables', 'SHOW TABLES'],
  ];

  function toConsole(sql) {
    $('console-sql').value = sql;
    $('console').scrollIntoView({ behavior: 'smooth' });
    runConsole();
  }

  let consoleRun = 0;
  async function runConsole(ev) {
    if (ev) ev.preventDefault();
    const sql = $('console-sql').value.trim();
    if (!sql) return;
    const run = ++consoleRun;
    const btn = $('console-run');
    btn.disabled = true;
    $('console-status').textContent = 'running…';
    const t0 = performance.now();
    let res, text;
    try {
      res = await apiFetch('/v1/sql', { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ sql, format: 'json' }) });
      text = await res.text();
    } catch (e) {
      if (run !== consoleRun) return;
      btn.disabled = false;
      return showConsoleError('network', `The request failed: ${e.message || e}`, performance.now() - t0);
    }
    if (run !== consoleRun) return;
    btn.disabled = false;
    const ms = performance.now() - t0;
    let body = null;
    try { body = JSON.parse(text); } catch (e) { /* not JSON */ }
    if (!res.ok) {
      const err = body && body.error ? body.error : { code: `HTTP ${res.status}`, message: text || res.statusText };
      return showConsoleError(`${err.code} · ${res.status}`, err.message, ms);
    }
    if (!Array.isArray(body)) return showConsoleError('format', 'The server answered something other than a JSON array.', ms);
    $('console-error').hidden = true;
    const cols = describeColumns(null, body);
    $('console-status').textContent = `${fmtNum(body.length)} row${body.length === 1 ? '' : 's'} · ${fmtDuration(ms)} · ${fmtClock(new Date())}`;
    $('console-result').replaceChildren(...(body.length
      ? renderTable(cols, body, 1000)
      : [h('p', { class: 'result-note' }, 'The query returned no rows.')]));
  }
  function showConsoleError(code, message, ms) {
    const box = $('console-error');
    box.replaceChildren(h('span', { class: 'code' }, code), 'The query failed.', h('pre', null, message));
    box.hidden = false;
    $('console-status').textContent = `failed · ${fmtDuration(ms)}`;
    $('console-result').replaceChildren();
  }

  // ---------------------------------------------------------------- start

  function start() {
    $('console-form').addEventListener('submit', runConsole);
    $('console-sql').addEventListener('keydown', (ev) => {
      if (ev.key === 'Enter' && (ev.ctrlKey || ev.metaKey)) runConsole(ev);
    });
    $('console-examples').append(...EXAMPLES.map(([label, sql]) =>
      h('button', { type: 'button', class: 'ghost', onclick: () => { $('console-sql').value = sql; runConsole(); } }, label)));
    $('add-tile').addEventListener('click', () => openEditor(null));
    $('reset-tiles').addEventListener('click', () => {
      if (confirm('Replace every tile with the default tiles?')) { replaceAllTiles(defaultTiles()); tiles.forEach(observeTile); }
    });
    $('tile-form').addEventListener('submit', saveEditor);
    $('token-bar').addEventListener('submit', (ev) => { ev.preventDefault(); setToken($('token-input').value.trim()); });
    $('token-forget').addEventListener('click', () => setToken(''));
    $('tile-cancel').addEventListener('click', () => { $('tile-editor').close(); editing = null; });
    $('tile-delete').addEventListener('click', () => {
      const t = editing;
      $('tile-editor').close();
      editing = null;
      if (t) removeTile(t);
    });

    const stored = loadTiles();
    if (stored) { for (const spec of stored) addTile(spec, false); tiles.forEach(observeTile); }
    $('no-tiles').hidden = tiles.length > 0 || stored === null;

    live.connect();
    refreshStatus();
    setInterval(() => {
      for (const t of tiles) t.renderUpdated();
      if (live.state === 'reconnecting') renderLiveState();
    }, 1000);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
