// The dashboard page tested as a person uses it: a real `weir demo`, headless Chromium
// (Debian's chromium) driven by playwright-core. Run with ./run.sh, or
// `node --test dashboard.test.mjs` with WEIR_BIN or CARGO_TARGET_DIR set.
//
// It checks that the table status panel shows ingested counts growing, that a counter
// tile added through the editor rises as events arrive, that a bad tile query shows its
// error inline, that tiles survive a reload (localStorage), that the SQL console shows
// a result table and a clear error, and that the page fetches nothing from anywhere but
// the server. Screenshots go to docs/screenshots/.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../..');
const targetDir = process.env.CARGO_TARGET_DIR || join(repo, 'target');
const weirBin = process.env.WEIR_BIN || join(targetDir, 'debug', 'weir');
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
// Screenshots go to docs/screenshots/, or to WEIR_SCREENSHOTS (test.sh uses a
// temporary directory so that a test run does not rewrite the committed ones).
const shots = process.env.WEIR_SCREENSHOTS || join(repo, 'docs', 'screenshots');
const WAIT = 60_000; // generous: the machine may be busy building

let server; // { proc, url, dataDir, output }
let browser;
let page;
const pageErrors = [];
const consoleErrors = [];
const foreignRequests = [];

/** Starts `weir demo` on a free port and resolves with the URL from its banner. */
function startWeir({ listen = '127.0.0.1:0', dataDir = mkdtempSync(join(tmpdir(), 'weir-dashboard-')) } = {}) {
  assert.ok(existsSync(weirBin), `no weir binary at ${weirBin}; build it with \`cargo build -p weir-web --bin weir\``);
  const proc = spawn(weirBin, ['demo', '--rate', '2000', '--listen', listen, '--data-dir', dataDir], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  let output = '';
  return new Promise((res, rej) => {
    const timer = setTimeout(() => rej(new Error(`weir did not print its URL within 60 s:\n${output}`)), 60_000);
    const onData = (chunk) => {
      output += chunk;
      const m = /weir listening on (http:\/\/\S+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        res({ proc, url: m[1], dataDir, get output() { return output; } });
      }
    };
    proc.stdout.setEncoding('utf8').on('data', onData);
    proc.stderr.setEncoding('utf8').on('data', (c) => { output += c; });
    proc.on('exit', (code, sig) => { clearTimeout(timer); rej(new Error(`weir exited (${code ?? sig}) before listening:\n${output}`)); });
  });
}

async function stopWeir({ keepData = false } = {}) {
  if (!server) return;
  const { proc, dataDir } = server;
  if (proc.exitCode === null && proc.signalCode === null) {
    const exited = new Promise((r) => proc.once('exit', r));
    proc.kill('SIGTERM');
    const t = setTimeout(() => proc.kill('SIGKILL'), 15_000);
    await exited;
    clearTimeout(t);
  }
  if (!keepData) rmSync(dataDir, { recursive: true, force: true });
}

/** The number shown by a status stat of the `transactions` card. */
async function statValue(key) {
  const v = await page.getAttribute(`[data-testid=table-card][data-table=transactions] [data-testid=stat-${key}]`, 'data-value');
  return Number(v);
}

function tile(title) {
  return page.locator(`[data-testid=tile][data-title="${title}"]`);
}

async function addTile({ title, sql, kind, rate = 4 }) {
  await page.click('[data-testid=add-tile]');
  await page.waitForSelector('[data-testid=tile-editor][open]');
  await page.fill('[data-testid=tile-title]', title);
  await page.fill('[data-testid=tile-sql]', sql);
  await page.selectOption('[data-testid=tile-kind]', kind);
  await page.fill('[data-testid=tile-rate]', String(rate));
  await page.click('[data-testid=tile-save]');
  await page.waitForSelector('[data-testid=tile-editor]:not([open])', { state: 'attached' });
  await tile(title).waitFor();
}

async function counterValue(title) {
  const v = await tile(title).locator('[data-testid=counter-value]').getAttribute('data-value', { timeout: WAIT });
  return v === '' || v === null ? NaN : Number(v);
}

async function until(what, fn, timeout = WAIT) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})\nweir output:\n${server?.output.slice(-3000)}`);
}

describe('the dashboard page', { timeout: 420_000 }, () => {
  before(async () => {
    mkdirSync(shots, { recursive: true });
    server = await startWeir();
    browser = await chromium.launch({
      executablePath: chromiumPath,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    const context = await browser.newContext({ viewport: { width: 1440, height: 1000 }, deviceScaleFactor: 1 });
    page = await context.newPage();
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    const origin = new URL(server.url);
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (u.host !== origin.host && u.protocol !== 'data:') foreignRequests.push(r.url());
    });
    page.on('websocket', (ws) => {
      if (new URL(ws.url()).host !== origin.host) foreignRequests.push(ws.url());
    });
    const res = await page.goto(server.url + '/');
    assert.equal(res.status(), 200);
    assert.match(res.headers()['content-type'], /^text\/html/);
  });

  after(async () => {
    await browser?.close();
    await stopWeir();
  });

  it('serves its assets with the right content types', async () => {
    for (const [path, type] of [['/assets/app.js', /^text\/javascript/], ['/assets/style.css', /^text\/css/]]) {
      const r = await fetch(server.url + path);
      assert.equal(r.status, 200, path);
      assert.match(r.headers.get('content-type'), type, path);
    }
    assert.equal((await fetch(server.url + '/assets/nope.js')).status, 404);
  });

  it('shows the table status with ingested counts growing', async () => {
    await page.waitForSelector('[data-testid=table-card][data-table=transactions] [data-testid=stat-ingested][data-value]', { timeout: WAIT });
    const first = await until('ingested > 0', async () => { const v = await statValue('ingested'); return v > 0 && v; });
    await until('ingested to grow', async () => (await statValue('ingested')) > first);
    // The other columns of the panel are there and numeric.
    for (const key of ['produced', 'late', 'dead_lettered', 'lag', 'hot_rows', 'hot_bytes', 'segments']) {
      assert.ok(Number.isFinite(await statValue(key)), `stat ${key}`);
    }
    const text = await page.textContent('[data-testid=table-card][data-table=transactions]');
    for (const label of ['Produced', 'Ingested', 'Late', 'Dead-lettered', 'Lag', 'Watermark', 'Hot rows', 'Hot bytes / budget', 'Segments']) {
      assert.ok(text.includes(label), `the card shows ${label}`);
    }
    assert.match(await page.textContent('[data-testid=backpressure]'), /backpressure/);
  });

  it('connects the live socket and fills the default tiles', async () => {
    await until('the live socket to connect', async () => (await page.getAttribute('[data-testid=live-state]', 'data-state')) === 'open');
    assert.ok(await tile('Events per minute').count() === 1, 'the default tiles are installed for the demo table');
    await tile('Events per minute').locator('svg.chart path.series').first().waitFor({ timeout: WAIT });
    await tile('Spend by category, last 10 min').locator('.bar-row').first().waitFor({ timeout: WAIT });
    await until('the distinct cards counter', async () => (await counterValue('Distinct cards, last 10 min')) > 0);
  });

  it('adds a counter tile through the editor and sees it rise as events arrive', async () => {
    await addTile({ title: 'Events so far', sql: 'SELECT count(*) AS n FROM transactions', kind: 'counter', rate: 4 });
    const first = await until('the counter to show a number', async () => { const v = await counterValue('Events so far'); return v > 0 && v; });
    await until('the counter to rise', async () => (await counterValue('Events so far')) > first);
    assert.match(await tile('Events so far').locator('[data-testid=tile-updated]').textContent(), /^updated \d\d:\d\d:\d\d/);
    assert.equal(await tile('Events so far').locator('[data-testid=tile-error]').isVisible(), false);
    await page.waitForTimeout(1500); // let the charts take a few updates before the picture
    await page.screenshot({ path: join(shots, 'dashboard.png'), fullPage: true });
  });

  it('shows a bad tile query\'s error inline, and removes the tile', async () => {
    await addTile({ title: 'Broken tile', sql: 'SELECT no_such_column FROM transactions', kind: 'table', rate: 1 });
    const err = tile('Broken tile').locator('[data-testid=tile-error]');
    await err.waitFor({ state: 'visible', timeout: WAIT });
    assert.match(await err.textContent(), /no_such_column/);
    await tile('Broken tile').screenshot({ path: join(shots, 'tile-error.png') });
    // The other tiles go on.
    const before = await counterValue('Events so far');
    await until('the counter to go on rising', async () => (await counterValue('Events so far')) > before);
    await tile('Broken tile').locator('[data-testid=tile-remove]').click();
    assert.equal(await tile('Broken tile').count(), 0);
  });

  it('edits a tile and keeps the tiles across a reload', async () => {
    await tile('Events so far').locator('[data-testid=tile-edit]').click();
    await page.waitForSelector('[data-testid=tile-editor][open]');
    await page.fill('[data-testid=tile-title]', 'Transactions so far');
    await page.click('[data-testid=tile-save]');
    await tile('Transactions so far').waitFor();
    await page.reload();
    await tile('Transactions so far').waitFor({ timeout: WAIT });
    assert.equal(await tile('Broken tile').count(), 0);
    await until('the reloaded counter', async () => (await counterValue('Transactions so far')) > 0);
  });

  it('runs a query in the console and shows a result table', async () => {
    await page.fill('[data-testid=console-sql]', 'SELECT category, count(*) AS events, round(sum(amount), 2) AS spend FROM transactions GROUP BY category ORDER BY spend DESC');
    await page.click('[data-testid=console-run]');
    await page.waitForSelector('[data-testid=console-result] table.data tbody tr', { timeout: WAIT });
    const headers = await page.$$eval('[data-testid=console-result] th', (ths) => ths.map((t) => t.textContent));
    assert.deepEqual(headers, ['category', 'events', 'spend']);
    assert.ok((await page.$$('[data-testid=console-result] tbody tr')).length > 1);
    assert.match(await page.textContent('[data-testid=console-status]'), /rows? · [\d.]+ (ms|s)/);
    assert.equal(await page.isVisible('[data-testid=console-error]'), false);
    await page.locator('#console').scrollIntoViewIfNeeded();
    await page.locator('#console').screenshot({ path: join(shots, 'console.png') });
  });

  it('shows a bad query\'s error with the server\'s message', async () => {
    await page.fill('[data-testid=console-sql]', 'SELECT nope FROM transactions');
    await page.click('[data-testid=console-run]');
    const box = page.locator('[data-testid=console-error]');
    await box.waitFor({ state: 'visible', timeout: WAIT });
    const text = await box.textContent();
    assert.match(text, /^sql · 400/);
    assert.match(text, /No field named nope/);
    assert.equal(await page.locator('[data-testid=console-result] table').count(), 0);
    await page.locator('#console').screenshot({ path: join(shots, 'console-error.png') });
  });

  it('fetched nothing from elsewhere and threw no errors', () => {
    assert.deepEqual(foreignRequests, []);
    assert.deepEqual(pageErrors, []);
    // Failed requests (the bad query's 400) log an error line; nothing else may.
    const unexpected = consoleErrors.filter((m) => !/status of 400/.test(m));
    assert.deepEqual(unexpected, []);
  });

  it('reconnects the live socket with backoff when the server restarts, and resubscribes', async () => {
    const { url, dataDir } = server;
    await stopWeir({ keepData: true });
    await until('the page to see the socket drop', async () => (await page.getAttribute('[data-testid=live-state]', 'data-state')) === 'reconnecting');
    assert.match(await page.textContent('[data-testid=live-state]'), /retry in \d+s/);
    server = await startWeir({ listen: new URL(url).host, dataDir });
    await until('the live socket to reconnect', async () => (await page.getAttribute('[data-testid=live-state]', 'data-state')) === 'open', 90_000);
    // The restarted server replays its log: the counter comes back and rises again.
    const first = await until('the counter after the restart', async () => { const v = await counterValue('Transactions so far'); return v > 0 && v; });
    await until('the counter to rise after the restart', async () => (await counterValue('Transactions so far')) > first);
    assert.equal(await tile('Transactions so far').evaluate((el) => el.classList.contains('stale')), false);
  });
});
