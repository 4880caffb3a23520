// The live console (/console) end to end: the real binary on a loopback
// port 0 with a fresh data directory, the real page in headless Chromium
// (Debian's package, driven by playwright-core), and the API read back
// from node to check what the page says.
//
// Screenshots of every page, desktop and phone, go to
// target/browser-artifacts/; with HONGBAO_DOCS_SCREENSHOTS=1 the dashboard
// under load and the chat after everyone opened also go to docs/ (the
// README's pictures).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = path.resolve(ROOT, process.env.HONGBAO_BIN || 'target/release/hongbao');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const ARTIFACTS = path.join(ROOT, 'target/browser-artifacts');
const DOCS = process.env.HONGBAO_DOCS_SCREENSHOTS === '1' ? path.join(ROOT, 'docs') : null;

const DESKTOP = { viewport: { width: 1280, height: 860 }, deviceScaleFactor: 1 };
const PHONE = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };

let server;
let browser;

// ---------------------------------------------------------------------------
// The server and the API from node
// ---------------------------------------------------------------------------

/** `hongbao serve` on port 0 in a fresh directory; resolves once it prints its address. */
async function startServer() {
  const dir = await mkdtemp(path.join(tmpdir(), 'hongbao-console-'));
  const data = path.join(dir, 'data');
  const child = spawn(BIN, ['serve', '--data', data, '--listen', '127.0.0.1:0'], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'warn' },
  });
  const log = [];
  child.stderr.on('data', (chunk) => log.push(chunk.toString()));
  const lines = createInterface({ input: child.stdout });
  const url = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no address within 30 s; stderr: ${log.join('')}`)), 30000);
    child.on('exit', (code) => reject(new Error(`hongbao serve exited with ${code}: ${log.join('')}`)));
    lines.on('line', (line) => {
      const match = /^hongbao listening on (http:\/\/\S+)$/.exec(line.trim());
      if (match) {
        clearTimeout(timer);
        resolve(match[1]);
      }
    });
  });
  const admin = (await readFile(path.join(data, 'admin.token'), 'utf8')).trim();
  return { child, dir, url, admin, log };
}

async function stopServer(running) {
  if (!running) return;
  const exited = new Promise((resolve) => running.child.once('exit', resolve));
  running.child.kill('SIGTERM');
  await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, 15000))]);
  await rm(running.dir, { recursive: true, force: true });
}

/** One API call from node: {status, body}. */
async function api(method, route, { token, body, key } = {}) {
  const headers = {};
  if (token) headers.authorization = `Bearer ${token}`;
  if (key) headers['idempotency-key'] = key;
  const response = await fetch(server.url + route, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

async function tokenOf(user) {
  const answer = await api('POST', '/v1/admin/tokens', { token: server.admin, body: { user } });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.token;
}

async function deposit(user, amount) {
  const answer = await api('POST', '/v1/admin/deposits', { token: server.admin, body: { user, amount } });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
}

async function balanceOf(token) {
  const answer = await api('GET', '/v1/account', { token });
  assert.equal(answer.status, 200, JSON.stringify(answer.body));
  return answer.body.balance;
}

/**
 * A load until `stop()`: four senders each send a 10-share packet about four
 * times a second (under the send rate limit), and eight other users open
 * every one; one greedy user reads its account about 120 times a second,
 * past its read rate limit (50/s), so some of those are refused 429. Answers
 * what it did.
 */
async function startLoad() {
  const senders = await Promise.all([0, 1, 2, 3].map(async (n) => ({ name: `load-s${n}`, token: await tokenOf(`load-s${n}`) })));
  const openers = await Promise.all([0, 1, 2, 3, 4, 5, 6, 7].map(async (n) => tokenOf(`load-o${n}`)));
  const greedy = await tokenOf('load-greedy');
  await Promise.all(senders.map((sender) => deposit(sender.name, 10_000_000)));
  const done = { sent: 0, opened: 0, refused: 0, limited: 0 };
  let running = true;
  const hammer = async () => {
    while (running) {
      const reads = await Promise.all(Array.from({ length: 30 }, () => api('GET', '/v1/account', { token: greedy })));
      done.limited += reads.filter((read) => read.status === 429).length;
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  };
  const loop = async (sender) => {
    while (running) {
      const started = Date.now();
      const sent = await api('POST', '/v1/packets', {
        token: sender.token,
        body: { kind: 'lucky', total_amount: 1000, count: 10, greeting: 'load' },
      });
      if (sent.status === 201) {
        done.sent += 1;
        const opens = await Promise.all(openers.map((token) => api('POST', `/v1/packets/${sent.body.id}/open`, { token })));
        for (const open of opens) if (open.status === 200) done.opened += 1;
        else done.refused += 1;
      } else {
        done.refused += 1;
      }
      await new Promise((resolve) => setTimeout(resolve, Math.max(0, 250 - (Date.now() - started))));
    }
  };
  const loops = [...senders.map(loop), hammer()];
  return {
    done,
    async stop() {
      running = false;
      await Promise.all(loops);
      return done;
    },
  };
}

// ---------------------------------------------------------------------------
// The browser
// ---------------------------------------------------------------------------

/** A fresh page (its own sessionStorage) that records script errors and CSP violations. */
async function openPage(device, hash) {
  const context = await browser.newContext(device);
  const page = await context.newPage();
  page.problems = [];
  page.on('pageerror', (error) => page.problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error' && !/Failed to load resource/.test(message.text())) {
      page.problems.push(`console error: ${message.text()}`);
    }
  });
  await page.goto(`${server.url}/console#${hash}`);
  return page;
}

async function closePage(page) {
  assert.deepEqual(page.problems, [], 'the console ran with no script error and no CSP violation');
  await page.context().close();
}

/** Polls `check` (which throws or answers false while not yet) until it passes or `ms` pass. */
async function eventually(what, check, ms = 10000) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    try {
      const result = await check();
      if (result !== false) return result;
      last = new Error('not yet');
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms (${last && last.message})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

async function text(page, selector) {
  return (await page.locator(selector).first().textContent()).trim();
}

async function shoot(page, name, docsName) {
  await page.evaluate(() => window.scrollTo(0, 0));
  await mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
  if (DOCS && docsName) {
    await mkdir(DOCS, { recursive: true });
    await page.screenshot({ path: path.join(DOCS, docsName), fullPage: true });
  }
}

/** Yuan as the page shows it ("¥1,234.56") in integer fen, by string handling. */
function fenOf(shown) {
  const match = /^¥(-?[\d,]+)\.(\d\d)$/.exec(shown.trim());
  assert.ok(match, `a yuan amount: ${JSON.stringify(shown)}`);
  return Number(match[1].replaceAll(',', '')) * 100 + Number(match[2]);
}

/** Connects the chat with the admin token, as an operator does, and waits for the members' balances. */
async function connectChat(page) {
  await page.fill('#admin-token', server.admin);
  await page.click('#connect button[type=submit]');
  await page.locator('#chat-layout').waitFor({ state: 'visible' });
  await eventually('alice has a balance', async () => fenOf(await text(page, '#member-list li[data-user="alice"] .member-balance')) > 0);
}

async function balanceShown(page, user) {
  return fenOf(await text(page, `#member-list li[data-user="${user}"] .member-balance`));
}

/**
 * Nothing on the page is wider than the screen: the document does not
 * scroll sideways, and no element reaches past the right edge (except
 * inside a box that scrolls or clips on its own, such as the sets table).
 */
async function noSidewaysScroll(page) {
  const widths = await page.evaluate(() => {
    const clipped = (node) => {
      for (let up = node.parentElement; up && up !== document.body; up = up.parentElement) {
        if (getComputedStyle(up).overflowX !== 'visible') return true;
      }
      return false;
    };
    const outside = Array.from(document.querySelectorAll('body *'))
      .filter((node) => node.getClientRects().length > 0 && !clipped(node))
      .filter((node) => node.getBoundingClientRect().right > document.documentElement.clientWidth + 1)
      .map((node) => `${node.tagName.toLowerCase()}#${node.id}.${node.className} right=${node.getBoundingClientRect().right}`);
    return { scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth, outside };
  });
  assert.ok(widths.scroll <= widths.client, `the page scrolls sideways: ${JSON.stringify(widths)}`);
  assert.deepEqual(widths.outside, [], 'no element sticks out past the right edge');
}

before(async () => {
  server = await startServer();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
});

after(async () => {
  if (browser) await browser.close();
  await stopServer(server);
});

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

test('the console is served from the binary with a strict content security policy', async () => {
  for (const [route, type] of [
    ['/console', 'text/html'],
    ['/console/', 'text/html'],
    ['/console/console.js', 'text/javascript'],
    ['/console/console.css', 'text/css'],
  ]) {
    const response = await fetch(server.url + route);
    assert.equal(response.status, 200, route);
    assert.ok(response.headers.get('content-type').startsWith(type), `${route}: ${response.headers.get('content-type')}`);
    assert.match(response.headers.get('content-security-policy'), /script-src 'self'/, route);
    assert.equal(response.headers.get('x-content-type-options'), 'nosniff', route);
  }
});

test("the dashboard's opens/s, sends/s, latency and totals move while a load runs", async () => {
  const page = await openPage(DESKTOP, 'dashboard');
  await eventually('the dashboard reads /metrics', async () => (await page.getAttribute('#live', 'data-state')) === 'live');
  const totalBefore = await text(page, '#m-opens-total');
  const load = await startLoad();
  const seen = { opens: new Set(), sends: [], p50: [], p99: [], errors: [], shed: [] };
  try {
    for (let second = 0; second < 8; second += 1) {
      await new Promise((resolve) => setTimeout(resolve, 1000));
      seen.opens.add(await text(page, '#m-opens'));
      seen.sends.push(await text(page, '#m-sends'));
      seen.p50.push(await text(page, '#m-p50'));
      seen.p99.push(await text(page, '#m-p99'));
      seen.errors.push(await text(page, '#m-errors'));
      seen.shed.push(await text(page, '#m-shed'));
    }
    await shoot(page, 'dashboard-desktop', 'console.png');
  } finally {
    const done = await load.stop();
    assert.ok(done.opened > 0, `the load opened shares: ${JSON.stringify(done)}`);
    assert.ok(done.limited > 0, `the greedy reader was rate limited: ${JSON.stringify(done)}`);
  }
  assert.ok(seen.errors.every((rate) => /^\d/.test(rate)), `errors/s is a number, not missing: ${seen.errors}`);
  assert.ok(seen.shed.map(Number).some((rate) => rate > 0), `shed + rate-limited/s was above 0: ${seen.shed}`);
  const opensRates = [...seen.opens].map(Number).filter(Number.isFinite);
  assert.ok(opensRates.some((rate) => rate > 0), `opens/s was above 0 while the load ran: ${[...seen.opens]}`);
  assert.ok(seen.opens.size >= 2, `opens/s moved: ${[...seen.opens]}`);
  assert.ok(seen.sends.map(Number).some((rate) => rate > 0), `sends/s was above 0: ${seen.sends}`);
  assert.ok(seen.p50.some((ms) => Number(ms) > 0), `p50 was a number: ${seen.p50}`);
  assert.ok(seen.p99.some((ms) => Number(ms) > 0), `p99 was a number: ${seen.p99}`);
  const totalAfter = await text(page, '#m-opens-total');
  assert.ok(Number(totalAfter.replaceAll(',', '')) > Number(totalBefore.replaceAll(',', '') || 0), `${totalBefore} -> ${totalAfter}`);
  assert.match(await text(page, '#m-money'), /^¥[\d,]+\.\d\d$/, 'money in flight is yuan with two decimals');
  assert.ok((await page.locator('#sets-body tr td.set-id').count()) > 0, 'the sets table has a row per set');
  await closePage(page);
});

test('sending a packet and opening it as members updates balances and the who-got-what list, best luck included', async () => {
  const page = await openPage(DESKTOP, 'chat');
  await connectChat(page);
  const start = {};
  for (const user of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) start[user] = await balanceShown(page, user);

  // alice sends ¥10.00 in 5 lucky shares.
  await page.selectOption('#me', 'alice');
  await page.fill('#c-total', '10.00');
  await page.fill('#c-count', '5');
  await page.selectOption('#c-kind', 'lucky');
  await page.fill('#c-greeting', '新年快乐，万事如意');
  await page.click('#composer button[type=submit]');
  const bubble = page.locator('#messages .hongbao').last();
  await bubble.waitFor();
  assert.equal(await bubble.locator('.hb-greeting').textContent(), '新年快乐，万事如意');
  await eventually("alice's balance drops by 10.00", async () => (await balanceShown(page, 'alice')) === start.alice - 1000);

  // bob taps the packet: his share is in the list and in his balance.
  await page.selectOption('#me', 'bob');
  await bubble.click();
  const bobRow = page.locator('#detail-body .claim[data-user="bob"] .claim-amount');
  await bobRow.waitFor();
  const bobShare = fenOf(await bobRow.textContent());
  await eventually("bob's balance has his share", async () => (await balanceShown(page, 'bob')) === start.bob + bobShare);

  // Everyone else opens: five claims that add up to the total, best luck marked once.
  await page.click('#everyone-opens');
  await eventually('five claims', async () => (await page.locator('#detail-body .claim').count()) === 5);
  await eventually('best luck is marked', async () => (await page.locator('#detail-body .claim.best').count()) === 1);
  const claims = {};
  for (const row of await page.locator('#detail-body .claim').all()) {
    claims[await row.getAttribute('data-user')] = fenOf(await row.locator('.claim-amount').textContent());
  }
  assert.deepEqual(Object.keys(claims).sort(), ['bob', 'carol', 'dave', 'erin', 'frank']);
  assert.equal(Object.values(claims).reduce((a, b) => a + b, 0), 1000, 'the shares add up to the total');
  const best = await page.locator('#detail-body .claim.best').getAttribute('data-user');
  assert.equal(claims[best], Math.max(...Object.values(claims)), 'best luck is the largest share');
  assert.equal(await text(page, '#detail-body .chip'), 'empty');
  for (const [user, share] of Object.entries(claims)) {
    await eventually(`${user}'s balance shows the share`, async () => (await balanceShown(page, user)) === start[user] + share);
    assert.equal(await balanceOf(await tokenOf(user)), start[user] + share, `${user}'s balance in the API`);
  }
  assert.equal(await balanceOf(await tokenOf('alice')), start.alice - 1000);
  await shoot(page, 'chat-desktop', 'console-chat.png');
  await closePage(page);
});

test("a member with no money who sends a packet sees the API's insufficient-balance message in a banner", async () => {
  const page = await openPage(DESKTOP, 'chat');
  await connectChat(page);
  await page.fill('#new-member', 'grace');
  await page.click('#add-member button[type=submit]');
  await page.locator('#member-list li[data-user="grace"]').waitFor();
  await eventually("grace's balance is 0.00", async () => (await balanceShown(page, 'grace')) === 0);
  await page.selectOption('#me', 'grace');
  await page.fill('#c-total', '1.00');
  await page.fill('#c-count', '1');
  await page.click('#composer button[type=submit]');
  const banner = page.locator('#banner');
  await eventually('the refusal is shown', async () => /insufficient_balance/.test(await banner.textContent()));
  assert.ok(await banner.isVisible());
  assert.equal(await text(page, '#banner-title'), 'Not enough money');
  assert.match(await text(page, '#banner-text'), /the balance does not cover total_amount \(insufficient_balance\)/);
  assert.equal(await balanceOf(await tokenOf('grace')), 0, 'nothing was taken');
  await shoot(page, 'chat-refused-desktop');
  await closePage(page);
});

test("lookup shows a packet's status, remaining and claims, and a readable error for an unknown id", async () => {
  const judy = await tokenOf('judy');
  await deposit('judy', 500);
  const sent = await api('POST', '/v1/packets', { token: judy, body: { kind: 'fixed', total_amount: 300, count: 3, greeting: 'lookup me' } });
  assert.equal(sent.status, 201, JSON.stringify(sent.body));
  const opened = await api('POST', `/v1/packets/${sent.body.id}/open`, { token: await tokenOf('kim') });
  assert.equal(opened.status, 200, JSON.stringify(opened.body));

  const page = await openPage(DESKTOP, 'chat');
  await connectChat(page);
  await page.click('a[data-page="lookup"]');
  await page.fill('#lookup-id', sent.body.id);
  await page.click('#lookup button[type=submit]');
  await page.locator('#lookup-result .packet-card').waitFor();
  assert.equal(await text(page, '#lookup-result .pc-greeting'), 'lookup me');
  assert.equal(await text(page, '#lookup-result .chip'), 'available');
  assert.match(await text(page, '#lookup-result .pc-status'), /2 of 3 left · ¥2\.00 left/);
  assert.equal(await text(page, '#lookup-result .claim[data-user="kim"] .claim-amount'), '¥1.00');
  await shoot(page, 'lookup-desktop');

  await page.fill('#lookup-id', '20261128-7-1-0000000000000000');
  await page.click('#lookup button[type=submit]');
  await eventually('the unknown id is refused', async () => /packet_not_found/.test(await text(page, '#lookup-result')));
  assert.match(await text(page, '#lookup-result'), /No such packet/);
  await closePage(page);
});

test('at 390 px wide no page scrolls sideways (phone screenshots of each page)', async () => {
  const page = await openPage(PHONE, 'dashboard');
  await eventually('the dashboard reads /metrics', async () => (await page.getAttribute('#live', 'data-state')) !== 'waiting');
  await new Promise((resolve) => setTimeout(resolve, 1200));
  await noSidewaysScroll(page);
  await shoot(page, 'dashboard-phone');

  await page.click('a[data-page="chat"]');
  await noSidewaysScroll(page);
  await connectChat(page);
  await page.selectOption('#me', 'carol');
  await page.fill('#c-total', '6.66');
  await page.fill('#c-count', '3');
  // A greeting is shown as text, never as markup.
  const greeting = '六六大顺 <img src=x onerror="document.title=1"><b>!</b>';
  await page.fill('#c-greeting', greeting);
  await page.click('#composer button[type=submit]');
  await eventually('the new packet is shown', async () => (await text(page, '#detail-body .pc-greeting')) === greeting);
  assert.equal(await text(page, '#messages .hongbao.selected .hb-greeting'), greeting);
  assert.equal(await page.locator('main img, main b').count(), 0, 'no markup from a greeting');
  await page.click('#everyone-opens');
  await eventually('best luck is marked', async () => (await page.locator('#detail-body .claim.best').count()) === 1);
  await noSidewaysScroll(page);
  await shoot(page, 'chat-phone');

  await page.click('a[data-page="lookup"]');
  const id = await text(page, '#detail-body .packet-id code');
  await page.fill('#lookup-id', id);
  await page.click('#lookup button[type=submit]');
  await page.locator('#lookup-result .packet-card').waitFor();
  await noSidewaysScroll(page);
  await shoot(page, 'lookup-phone');
  await closePage(page);
});
