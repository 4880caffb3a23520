// hongbao's live console: three pages (dashboard, group chat, lookup),
// hash-routed, no framework and no build step. Everything comes from the
// public API and /metrics, called from this origin (the page's
// Content-Security-Policy allows nothing else). Text from users (names,
// greetings) and from the API is set with textContent, never parsed as HTML.
// Money arrives as integer fen and is shown in yuan by integer division
// (BigInt), never through floating point.
'use strict';

(() => {
  // ---------------------------------------------------------------------
  // Small helpers
  // ---------------------------------------------------------------------

  const $ = (id) => document.getElementById(id);

  /** An element with a class and text (text always as textContent). */
  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  const SVG = 'http://www.w3.org/2000/svg';
  function svg(tag, attributes) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    return node;
  }

  function groupThousands(digits) {
    return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  }

  /** Integer fen (number or bigint) as yuan with two decimals: 123456 -> "1,234.56". */
  function fenToYuan(fen) {
    const value = BigInt(fen);
    const negative = value < 0n;
    const abs = negative ? -value : value;
    const yuan = groupThousands((abs / 100n).toString());
    const cents = (abs % 100n).toString().padStart(2, '0');
    return `${negative ? '-' : ''}${yuan}.${cents}`;
  }

  /** Yuan typed by a person ("10", "10.5", "10.05") as integer fen, by string handling; null if it is not that. */
  function yuanToFen(text) {
    const match = /^\s*(\d{1,9})(?:\.(\d{1,2}))?\s*$/.exec(text);
    if (!match) return null;
    return Number(match[1]) * 100 + Number((match[2] || '').padEnd(2, '0'));
  }

  function clock(ms) {
    const date = new Date(ms);
    return [date.getHours(), date.getMinutes(), date.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
  }

  function randomKey(prefix) {
    const bytes = crypto.getRandomValues(new Uint8Array(12));
    return prefix + Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('');
  }

  /** A stable warm hue per name, for avatars. */
  function hueOf(name) {
    let hash = 0;
    for (const char of name) hash = (hash * 31 + char.codePointAt(0)) % 360;
    return hash;
  }

  function avatar(name) {
    const node = el('span', `avatar hue-${hueOf(name) % 8}`, (Array.from(name)[0] || '?').toUpperCase());
    node.setAttribute('aria-hidden', 'true');
    return node;
  }

  // ---------------------------------------------------------------------
  // The API
  // ---------------------------------------------------------------------

  class ApiFailure extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  /** One API call; answers the JSON body, or throws ApiFailure with the API's code and message. */
  async function call(method, path, { token, body, key } = {}) {
    const headers = {};
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (key) headers['Idempotency-Key'] = key;
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch (error) {
      throw new ApiFailure(0, 'network', `the server did not answer (${error.message})`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const error = data && data.error;
      throw new ApiFailure(
        response.status,
        (error && error.code) || `http_${response.status}`,
        (error && error.message) || `${response.status} ${response.statusText}`,
      );
    }
    return data;
  }

  // ---------------------------------------------------------------------
  // The banner: refusals and notes, readable, never alert()
  // ---------------------------------------------------------------------

  const TITLES = {
    insufficient_balance: 'Not enough money',
    balance_limit_exceeded: 'Balance limit',
    packet_empty: 'Too late',
    packet_expired: 'Expired',
    packet_not_found: 'No such packet',
    not_recipient: 'Not for you',
    wrong_password: 'Wrong password',
    rate_limited: 'Slow down',
    too_many_requests: 'Slow down',
    overloaded: 'Busy',
    missing_token: 'No token',
    invalid_token: 'Token refused',
    token_expired: 'Token expired',
    unknown_key: 'Token refused',
    admin_only: 'Not an admin token',
    invalid_user: 'Not a valid name',
    invalid_amount: 'Not a valid amount',
    invalid_count: 'Not a valid share count',
    share_too_small: 'Shares too small',
    amount_not_divisible: 'Does not divide',
    invalid_greeting: 'Greeting refused',
    network: 'Server unreachable',
  };

  let bannerTimer = null;

  function showBanner(kind, title, text) {
    const banner = $('banner');
    banner.dataset.kind = kind;
    $('banner-title').textContent = title;
    $('banner-text').textContent = text;
    banner.hidden = false;
    clearTimeout(bannerTimer);
    if (kind === 'info') bannerTimer = setTimeout(hideBanner, 8000);
  }

  function hideBanner() {
    $('banner').hidden = true;
  }

  /** A refused call as the API worded it: a title for the code, then the API's message and code. */
  function showFailure(error, doing) {
    if (!(error instanceof ApiFailure)) {
      showBanner('error', 'Something went wrong', `${doing}: ${error.message}`);
      return;
    }
    const title = TITLES[error.code] || `Refused (${error.status})`;
    showBanner('error', title, `${doing}: ${error.message} (${error.code})`);
  }

  // ---------------------------------------------------------------------
  // Pages
  // ---------------------------------------------------------------------

  const PAGES = ['dashboard', 'chat', 'lookup'];

  function showPage() {
    const wanted = location.hash.replace(/^#/, '');
    const page = PAGES.includes(wanted) ? wanted : 'dashboard';
    for (const name of PAGES) $(`page-${name}`).hidden = name !== page;
    for (const link of document.querySelectorAll('.tabs a')) {
      if (link.dataset.page === page) link.setAttribute('aria-current', 'page');
      else link.removeAttribute('aria-current');
    }
    document.body.dataset.page = page;
    if (page === 'chat' && chat.connected) refreshChat();
  }

  // ---------------------------------------------------------------------
  // The dashboard: /metrics every second
  // ---------------------------------------------------------------------

  /** Prometheus text format: one {name, labels, value} per sample line. */
  function parseMetrics(text) {
    const samples = [];
    for (const raw of text.split('\n')) {
      const line = raw.trim();
      if (line === '' || line.startsWith('#')) continue;
      const sample = parseSample(line);
      if (sample) samples.push(sample);
    }
    return samples;
  }

  function parseSample(line) {
    const name = /^[a-zA-Z_:][a-zA-Z0-9_:]*/.exec(line);
    if (!name) return null;
    let at = name[0].length;
    const labels = {};
    if (line[at] === '{') {
      at += 1;
      for (;;) {
        while (line[at] === ' ' || line[at] === ',') at += 1;
        if (line[at] === '}') {
          at += 1;
          break;
        }
        const key = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(at));
        if (!key || line[at + key[0].length] !== '=' || line[at + key[0].length + 1] !== '"') return null;
        at += key[0].length + 2;
        let value = '';
        while (at < line.length && line[at] !== '"') {
          if (line[at] === '\\' && at + 1 < line.length) {
            at += 1;
            value += line[at] === 'n' ? '\n' : line[at];
          } else {
            value += line[at];
          }
          at += 1;
        }
        if (line[at] !== '"') return null;
        at += 1;
        labels[key[0]] = value;
      }
    }
    const rest = line.slice(at).trim().split(/\s+/);
    const value = parseValue(rest[0]);
    return value === undefined ? null : { name: name[0], labels, value };
  }

  function parseValue(text) {
    if (text === undefined) return undefined;
    if (text === 'NaN') return NaN;
    if (text === '+Inf' || text === 'Inf') return Infinity;
    if (text === '-Inf') return -Infinity;
    const value = Number(text);
    return Number.isNaN(value) ? undefined : value;
  }

  /** The sum of a metric's samples whose labels pass `keep`; null when there are none. */
  function total(samples, name, keep = () => true) {
    let sum = null;
    for (const sample of samples) {
      if (sample.name === name && keep(sample.labels) && Number.isFinite(sample.value)) sum = (sum || 0) + sample.value;
    }
    return sum;
  }

  /** A summary's quantile (the largest over the samples `keep` passes); null when absent or NaN. */
  function quantile(samples, name, q, keep = () => true) {
    let best = null;
    for (const sample of samples) {
      if (sample.name !== name || Number(sample.labels.quantile) !== q || !keep(sample.labels)) continue;
      if (Number.isFinite(sample.value) && (best === null || sample.value > best)) best = sample.value;
    }
    return best;
  }

  const OPEN_ROUTE = '/v1/packets/{id}/open';

  /** The counters and gauges the dashboard shows, read from one scrape. */
  function reading(samples) {
    const opens = (labels) => labels.route === OPEN_ROUTE;
    // A labelled counter has no series until it first counts: once the
    // server reports its requests at all, a refusal counter it lacks is 0.
    const requests = total(samples, 'hongbao_http_requests_total');
    const counted = (value) => (value === null && requests !== null ? 0 : value);
    const shed = counted(total(samples, 'hongbao_shed_requests_total'));
    const limited = counted(total(samples, 'hongbao_rate_limited_requests_total'));
    const locked = total(samples, 'hongbao_locked_fen');
    const credits = total(samples, 'hongbao_credits_in_flight_fen');
    return {
      opens: total(samples, 'hongbao_opens_total'),
      sends: total(samples, 'hongbao_packets_sent_total'),
      requests,
      errors: counted(total(samples, 'hongbao_http_requests_total', (labels) => String(labels.status || '').startsWith('5'))),
      refused: shed === null && limited === null ? null : (shed || 0) + (limited || 0),
      p50: quantile(samples, 'hongbao_http_request_duration_seconds', 0.5, opens),
      p99: quantile(samples, 'hongbao_http_request_duration_seconds', 0.99, opens),
      locked,
      credits,
      sets: setRows(samples),
    };
  }

  function setRows(samples) {
    const rows = new Map();
    const row = (set) => {
      if (!rows.has(set)) rows.set(set, { set, depth: null, p50: null, p99: null });
      return rows.get(set);
    };
    for (const sample of samples) {
      const set = sample.labels.set;
      if (set === undefined) continue;
      if (sample.name === 'hongbao_set_queue_depth') row(set).depth = (row(set).depth || 0) + sample.value;
    }
    for (const sample of samples) {
      const set = sample.labels.set;
      if (set === undefined || sample.name !== 'hongbao_set_commit_seconds') continue;
      row(set).p50 = quantile(samples, 'hongbao_set_commit_seconds', 0.5, (labels) => labels.set === set);
      row(set).p99 = quantile(samples, 'hongbao_set_commit_seconds', 0.99, (labels) => labels.set === set);
    }
    return [...rows.values()].sort((a, b) => Number(a.set) - Number(b.set) || a.set.localeCompare(b.set));
  }

  function rate(now, before, seconds) {
    if (now === null || before === null || seconds <= 0 || now < before) return null;
    return (now - before) / seconds;
  }

  function formatRate(value) {
    if (value === null) return '—';
    if (value < 10) return value.toFixed(1);
    return groupThousands(String(Math.round(value)));
  }

  function formatCount(value) {
    return value === null ? '—' : groupThousands(String(Math.round(value)));
  }

  function formatMs(seconds) {
    if (seconds === null) return '—';
    const ms = seconds * 1000;
    if (ms < 1) return ms.toFixed(2);
    if (ms < 100) return ms.toFixed(1);
    return groupThousands(String(Math.round(ms)));
  }

  /** A gauge of fen as yuan: rounded to a whole fen (gauges come as text numbers), then integer arithmetic. */
  function formatFen(value) {
    return value === null ? '—' : fenToYuan(Math.round(value));
  }

  const dashboard = { previous: null, history: [] };
  const HISTORY = 60;

  async function pollMetrics() {
    const started = performance.now();
    try {
      const response = await fetch('/metrics', { cache: 'no-store' });
      if (!response.ok) throw new Error(`/metrics answered ${response.status}`);
      const now = { at: performance.now(), values: reading(parseMetrics(await response.text())) };
      renderDashboard(now, dashboard.previous);
      dashboard.previous = now;
      setLive('live', `live ${clock(Date.now())}`);
    } catch (error) {
      dashboard.previous = null;
      setLive('down', error.message.startsWith('/metrics') ? 'no metrics' : 'offline');
      $('live').title = error.message;
    }
    setTimeout(pollMetrics, Math.max(0, 1000 - (performance.now() - started)));
  }

  function setLive(state, text) {
    $('live').dataset.state = state;
    $('live-text').textContent = text;
  }

  function renderDashboard(now, before) {
    const v = now.values;
    const seconds = before ? (now.at - before.at) / 1000 : 0;
    const per = (name) => (before ? rate(v[name], before.values[name], seconds) : null);
    const opens = per('opens');
    $('m-opens').textContent = formatRate(opens);
    $('m-opens-total').textContent = formatCount(v.opens);
    $('m-sends').textContent = formatRate(per('sends'));
    $('m-sends-total').textContent = formatCount(v.sends);
    $('m-p50').textContent = formatMs(v.p50);
    $('m-p99').textContent = formatMs(v.p99);
    $('m-errors').textContent = formatRate(per('errors'));
    $('m-requests').textContent = formatRate(per('requests'));
    $('m-shed').textContent = formatRate(per('refused'));
    const inFlight = v.locked === null && v.credits === null ? null : (v.locked || 0) + (v.credits || 0);
    $('m-money').textContent = inFlight === null ? '—' : `¥${formatFen(inFlight)}`;
    $('m-locked').textContent = formatFen(v.locked);
    $('m-credits').textContent = formatFen(v.credits);
    if (before) {
      dashboard.history.push(opens);
      if (dashboard.history.length > HISTORY) dashboard.history.shift();
    }
    drawSparkline($('spark'), dashboard.history);
    renderSets(v.sets);
  }

  /** The last minute of opens/s as a line and an area, scaled to its largest value. */
  function drawSparkline(target, values) {
    const width = 300;
    const height = 60;
    target.replaceChildren();
    const known = values.filter((value) => value !== null);
    const top = Math.max(1, ...known);
    const step = width / (HISTORY - 1);
    const offset = HISTORY - values.length;
    const points = [];
    values.forEach((value, index) => {
      if (value === null) return;
      const x = (offset + index) * step;
      const y = height - 4 - (value / top) * (height - 8);
      points.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    });
    target.append(svg('line', { x1: 0, y1: height - 4, x2: width, y2: height - 4, class: 'spark-base' }));
    if (points.length < 2) return;
    const first = points[0].split(',')[0];
    const last = points[points.length - 1].split(',')[0];
    target.append(svg('polygon', { points: `${first},${height - 4} ${points.join(' ')} ${last},${height - 4}`, class: 'spark-area' }));
    target.append(svg('polyline', { points: points.join(' '), class: 'spark-line' }));
  }

  function renderSets(rows) {
    const body = $('sets-body');
    body.replaceChildren();
    if (rows.length === 0) {
      const tr = el('tr');
      const td = el('td', 'muted', '—');
      td.colSpan = 4;
      tr.append(td);
      body.append(tr);
      return;
    }
    for (const row of rows) {
      const tr = el('tr');
      tr.append(el('td', 'set-id', row.set));
      const depth = el('td', 'num', formatCount(row.depth));
      if (row.depth > 0) depth.classList.add('busy');
      tr.append(depth, el('td', 'num', `${formatMs(row.p50)} ms`), el('td', 'num', `${formatMs(row.p99)} ms`));
      body.append(tr);
    }
  }

  // ---------------------------------------------------------------------
  // The group chat
  // ---------------------------------------------------------------------

  const DEFAULT_MEMBERS = ['alice', 'bob', 'carol', 'dave', 'erin', 'frank'];
  const SEED_FEN = 20000; // each default member starts with ¥200.00 (once per data directory)
  const TOP_UP_FEN = 10000;
  const TOKEN_TTL_S = 86400;
  const USER_NAME = /^[A-Za-z0-9_.-]{1,64}$/;

  const store = {
    get(key, fallback) {
      try {
        const text = sessionStorage.getItem(`hongbao.${key}`);
        return text === null ? fallback : JSON.parse(text);
      } catch {
        return fallback;
      }
    },
    set(key, value) {
      sessionStorage.setItem(`hongbao.${key}`, JSON.stringify(value));
    },
    clear() {
      for (const key of ['admin', 'tokens', 'members', 'me']) sessionStorage.removeItem(`hongbao.${key}`);
    },
  };

  const chat = {
    connected: false,
    admin: store.get('admin', null),
    members: store.get('members', DEFAULT_MEMBERS.slice()),
    tokens: store.get('tokens', {}),
    me: store.get('me', DEFAULT_MEMBERS[0]),
    balances: {},
    packets: new Map(), // id -> the packet as sent, updated from its detail
    details: new Map(), // id -> the last detail read
    events: [], // {at, text, amount}
    selected: null,
    busy: false,
  };

  async function tokenFor(user) {
    const held = chat.tokens[user];
    if (held && held.expires_at > Date.now() + 60000) return held.token;
    const minted = await call('POST', '/v1/admin/tokens', { token: chat.admin, body: { user, ttl_s: TOKEN_TTL_S } });
    chat.tokens[user] = { token: minted.token, expires_at: minted.expires_at };
    store.set('tokens', chat.tokens);
    return minted.token;
  }

  /** A call as `user`; a token the server no longer takes (keys rotated) is minted again, once. */
  async function asUser(user, method, path, options = {}) {
    try {
      return await call(method, path, { ...options, token: await tokenFor(user) });
    } catch (error) {
      if (!(error instanceof ApiFailure) || error.status !== 401) throw error;
      delete chat.tokens[user];
      return call(method, path, { ...options, token: await tokenFor(user) });
    }
  }

  async function connect(adminToken) {
    chat.admin = adminToken;
    chat.tokens = {};
    await tokenFor(chat.members[0]); // proves the admin token before anything is kept
    store.set('admin', adminToken);
    await Promise.all(chat.members.map((user) => tokenFor(user)));
    await Promise.all(
      DEFAULT_MEMBERS.filter((user) => chat.members.includes(user)).map((user) =>
        call('POST', '/v1/admin/deposits', {
          token: chat.admin,
          key: `console-seed-${user}`,
          body: { user, amount: SEED_FEN },
        }),
      ),
    );
    chat.connected = true;
    $('connect').hidden = true;
    $('chat-layout').hidden = false;
    await loadPackets();
    await refreshChat();
  }

  async function loadPackets() {
    const pages = await Promise.all(
      chat.members.map((user) => asUser(user, 'GET', '/v1/packets/sent?limit=20').catch(() => ({ items: [] }))),
    );
    for (const page of pages) for (const item of page.items) chat.packets.set(item.id, item);
  }

  async function refreshBalances() {
    await Promise.all(
      chat.members.map(async (user) => {
        try {
          chat.balances[user] = (await asUser(user, 'GET', '/v1/account')).balance;
        } catch {
          chat.balances[user] = null;
        }
      }),
    );
  }

  async function refreshDetail(id) {
    const detail = await asUser(chat.me, 'GET', `/v1/packets/${encodeURIComponent(id)}`);
    chat.details.set(id, detail);
    chat.packets.set(id, { ...(chat.packets.get(id) || {}), ...detail });
    return detail;
  }

  async function refreshChat() {
    await refreshBalances();
    if (chat.selected) await refreshDetail(chat.selected).catch(() => null);
    renderChat();
  }

  /** After a write: now, and again shortly (a share opened from another set reaches the wallet a few ms later). */
  function refreshSoon() {
    refreshChat();
    setTimeout(refreshChat, 400);
  }

  function renderChat() {
    renderMembers();
    renderMessages();
    renderDetail($('detail-body'), chat.selected ? chat.details.get(chat.selected) : null);
    const detail = chat.selected && chat.details.get(chat.selected);
    $('everyone-opens').disabled = chat.busy || !detail || detail.status !== 'available';
  }

  function renderMembers() {
    const list = $('member-list');
    list.replaceChildren();
    const select = $('me');
    select.replaceChildren();
    for (const user of chat.members) {
      const item = el('li', user === chat.me ? 'member is-me' : 'member');
      item.dataset.user = user;
      const pick = el('button', 'member-pick');
      pick.type = 'button';
      pick.title = `be ${user}`;
      const balance = chat.balances[user];
      const money = el('span', 'member-balance', balance === undefined || balance === null ? '—' : `¥${fenToYuan(balance)}`);
      const words = el('span', 'member-text');
      words.append(el('span', 'member-name', user), money);
      pick.append(avatar(user), words);
      pick.addEventListener('click', () => setMe(user));
      const topUp = el('button', 'top-up', '+¥100');
      topUp.type = 'button';
      topUp.title = `deposit ¥${fenToYuan(TOP_UP_FEN)} for ${user}`;
      topUp.addEventListener('click', () => act(() => deposit(user), `Topping up ${user}`));
      item.append(pick, topUp);
      list.append(item);
      const option = el('option', null, user);
      option.value = user;
      option.selected = user === chat.me;
      select.append(option);
    }
    const mine = chat.balances[chat.me];
    $('my-balance').textContent = mine === undefined || mine === null ? '—' : `¥${fenToYuan(mine)}`;
  }

  function setMe(user) {
    chat.me = user;
    store.set('me', user);
    renderChat();
  }

  function timeline() {
    const items = [...chat.packets.values()].map((packet) => ({ at: packet.created_at, packet }));
    for (const event of chat.events) items.push({ at: event.at, event });
    return items.sort((a, b) => a.at - b.at).slice(-60);
  }

  function renderMessages() {
    const list = $('messages');
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.replaceChildren();
    const items = timeline();
    if (items.length === 0) list.append(el('li', 'msg-empty', 'No packets yet: send one below.'));
    for (const item of items) list.append(item.packet ? packetMessage(item.packet) : eventMessage(item.event));
    if (atBottom || chat.scrollToEnd) list.scrollTop = list.scrollHeight;
    chat.scrollToEnd = false;
  }

  function packetMessage(packet) {
    const mine = packet.sender === chat.me;
    const item = el('li', mine ? 'msg mine' : 'msg');
    const body = el('div', 'msg-body');
    body.append(el('div', 'msg-meta', `${packet.sender} · ${clock(packet.created_at)}`));
    const detail = chat.details.get(packet.id);
    const claimed = detail && detail.claims.find((claim) => claim.user === chat.me);
    const bubble = el('button', `hongbao status-${packet.status || 'available'}`);
    bubble.type = 'button';
    bubble.dataset.id = packet.id;
    if (claimed) bubble.classList.add('claimed');
    if (packet.id === chat.selected) bubble.classList.add('selected');
    bubble.setAttribute('aria-label', `open ${packet.sender}'s packet: ${packet.greeting || 'red packet'}`);
    const text = el('span', 'hb-text');
    text.append(
      el('span', 'hb-greeting', packet.greeting || '恭喜发财，大吉大利'),
      el('span', 'hb-sub', `¥${fenToYuan(packet.total_amount)} · ${packet.count} ${packet.count === 1 ? 'share' : 'shares'} · ${packet.kind}`),
    );
    bubble.append(el('span', 'hb-seal', claimed ? '✓' : '開'), text, el('span', 'hb-foot', bubbleFoot(packet, claimed)));
    bubble.addEventListener('click', () => act(() => openAsMe(packet.id), `${chat.me} opening ${packet.sender}'s packet`));
    body.append(bubble);
    item.append(avatar(packet.sender), body);
    return item;
  }

  function bubbleFoot(packet, claimed) {
    if (claimed) return `红包 · you got ¥${fenToYuan(claimed.amount)}`;
    if (packet.status === 'empty') return '红包 · all opened';
    if (packet.status === 'expired') return '红包 · expired';
    if (packet.remaining_count !== undefined) return `红包 · ${packet.remaining_count} of ${packet.count} left`;
    return '红包';
  }

  function eventMessage(event) {
    const item = el('li', event.refused ? 'msg-event refused' : 'msg-event');
    item.append(el('span', null, event.text));
    if (event.amount !== undefined) item.append(el('strong', 'gold', ` ¥${fenToYuan(event.amount)}`));
    return item;
  }

  /** A packet's detail: who got what, best luck once every share is opened. Used by the chat and the lookup. */
  function renderDetail(target, detail) {
    target.replaceChildren();
    if (!detail) {
      target.append(el('p', 'muted', 'Send a packet, or tap one to open it as the member you are.'));
      return;
    }
    const card = el('div', `packet-card status-${detail.status}`);
    card.append(el('div', 'pc-from', `${detail.sender}'s ${detail.kind} packet`));
    card.append(el('div', 'pc-greeting', detail.greeting || '恭喜发财，大吉大利'));
    card.append(el('div', 'pc-total', `¥${fenToYuan(detail.total_amount)}`));
    const status = el('div', 'pc-status');
    status.append(el('span', `chip chip-${detail.status}`, detail.status));
    status.append(el('span', null, ` ${detail.remaining_count} of ${detail.count} left · ¥${fenToYuan(detail.remaining_amount)} left`));
    if (detail.refunded_amount > 0) status.append(el('span', null, ` · ¥${fenToYuan(detail.refunded_amount)} refunded`));
    card.append(status);
    target.append(card);

    const best = detail.best_luck;
    const claims = el('ol', 'claims');
    claims.setAttribute('aria-label', 'who got what');
    for (const claim of detail.claims) {
      const isBest = best && best.user === claim.user && best.at === claim.at;
      const row = el('li', isBest ? 'claim best' : 'claim');
      row.dataset.user = claim.user;
      const who = el('span', 'claim-who');
      who.append(avatar(claim.user), el('span', 'claim-user', claim.user));
      if (isBest) who.append(el('span', 'best-luck', '手气最佳 best luck'));
      row.append(who, el('span', 'claim-at', clock(claim.at)), el('span', 'claim-amount', `¥${fenToYuan(claim.amount)}`));
      claims.append(row);
    }
    if (detail.claims.length === 0) claims.append(el('li', 'muted', 'Nobody has opened it yet.'));
    target.append(claims);
    const id = el('p', 'packet-id');
    id.append(el('span', 'muted', 'id '), el('code', null, detail.id));
    target.append(id);
  }

  async function act(action, doing) {
    if (chat.busy) return;
    chat.busy = true;
    try {
      await action();
    } catch (error) {
      showFailure(error, doing);
    } finally {
      chat.busy = false;
      refreshSoon();
    }
  }

  async function deposit(user) {
    const answer = await call('POST', '/v1/admin/deposits', {
      token: chat.admin,
      key: randomKey('console-topup-'),
      body: { user, amount: TOP_UP_FEN },
    });
    chat.balances[user] = answer.balance;
    showBanner('info', 'Topped up', `${user} now has ¥${fenToYuan(answer.balance)}`);
  }

  async function send() {
    const total = yuanToFen($('c-total').value);
    if (total === null) {
      showBanner('error', 'Not a valid amount', 'Write the total in yuan with at most two decimals, like 10.00 (invalid_amount)');
      return;
    }
    const count = Number($('c-count').value);
    const greeting = $('c-greeting').value.trim();
    const body = { kind: $('c-kind').value, total_amount: total, count };
    if (greeting !== '') body.greeting = greeting;
    const packet = await asUser(chat.me, 'POST', '/v1/packets', { body, key: randomKey('console-send-') });
    chat.packets.set(packet.id, { ...packet, status: 'available', remaining_count: packet.count, remaining_amount: packet.total_amount });
    chat.selected = packet.id;
    chat.scrollToEnd = true;
    hideBanner();
    await refreshDetail(packet.id);
  }

  /** Opens `id` as `user`; answers the share in fen. */
  async function openAs(user, id) {
    const answer = await asUser(user, 'POST', `/v1/packets/${encodeURIComponent(id)}/open`, { body: {} });
    return answer.amount;
  }

  async function openAsMe(id) {
    chat.selected = id;
    const packet = chat.packets.get(id);
    const before = chat.details.get(id);
    const had = before && before.claims.some((claim) => claim.user === chat.me);
    try {
      const amount = await openAs(chat.me, id);
      const what = had ? `${chat.me} already had a share of ${packet.sender}'s packet:` : `${chat.me} opened ${packet.sender}'s packet:`;
      chat.events.push({ at: Date.now(), text: what, amount });
      hideBanner();
    } finally {
      await refreshDetail(id).catch(() => null);
    }
  }

  /** Every member but the sender and those who already have a share opens the selected packet, one after another; who was too late is said once. */
  async function everyoneOpens() {
    const id = chat.selected;
    const packet = chat.packets.get(id);
    const late = [];
    const before = chat.details.get(id);
    const claimed = new Set(before ? before.claims.map((claim) => claim.user) : []);
    for (const user of chat.members) {
      if (user === packet.sender || claimed.has(user)) continue;
      try {
        const amount = await openAs(user, id);
        chat.events.push({ at: Date.now(), text: `${user} opened ${packet.sender}'s packet:`, amount });
      } catch (error) {
        if (!(error instanceof ApiFailure) || error.code !== 'packet_empty') throw error;
        late.push(user);
      }
      chat.scrollToEnd = true;
      await refreshDetail(id).catch(() => null);
      renderChat();
    }
    if (late.length > 0) showBanner('info', 'Too late', `${late.join(', ')}: every share of this packet had been opened`);
  }

  function addMember(name) {
    if (!USER_NAME.test(name)) {
      showBanner('error', 'Not a valid name', 'A member name is 1 to 64 characters from A-Z a-z 0-9 _ . - (invalid_user)');
      return;
    }
    if (!chat.members.includes(name)) chat.members.push(name);
    store.set('members', chat.members);
    act(async () => {
      await tokenFor(name);
      showBanner('info', 'Joined', `${name} joined the group with no money yet: use +¥100 to top up`);
    }, `Adding ${name}`);
  }

  // ---------------------------------------------------------------------
  // Lookup
  // ---------------------------------------------------------------------

  async function lookup(id) {
    const target = $('lookup-result');
    if (!chat.admin) {
      target.replaceChildren(el('p', 'muted', 'A lookup reads as a member: connect the group chat first (it needs the admin token).'));
      return;
    }
    try {
      const detail = await asUser(chat.me, 'GET', `/v1/packets/${encodeURIComponent(id)}`);
      hideBanner();
      renderDetail(target, detail);
      target.append(el('p', 'muted', `read as ${chat.me}`));
    } catch (error) {
      const code = error instanceof ApiFailure ? error.code : 'error';
      const box = el('div', 'lookup-error');
      box.append(el('strong', null, TITLES[code] || 'Refused'), el('span', null, ` ${error.message} (${code})`));
      target.replaceChildren(box);
    }
  }

  // ---------------------------------------------------------------------
  // Wiring
  // ---------------------------------------------------------------------

  function wire() {
    $('banner-close').addEventListener('click', hideBanner);
    window.addEventListener('hashchange', showPage);
    $('connect').addEventListener('submit', (event) => {
      event.preventDefault();
      const token = $('admin-token').value.trim();
      if (token === '') return;
      connect(token).catch((error) => {
        chat.admin = null;
        showFailure(error, 'Connecting as admin');
      });
    });
    $('disconnect').addEventListener('click', () => {
      store.clear();
      location.reload();
    });
    $('me').addEventListener('change', (event) => setMe(event.target.value));
    $('composer').addEventListener('submit', (event) => {
      event.preventDefault();
      act(send, `${chat.me} sending a packet`);
    });
    $('everyone-opens').addEventListener('click', () => act(everyoneOpens, 'Everyone opening'));
    $('add-member').addEventListener('submit', (event) => {
      event.preventDefault();
      const name = $('new-member').value.trim();
      $('new-member').value = '';
      if (name !== '') addMember(name);
    });
    $('lookup').addEventListener('submit', (event) => {
      event.preventDefault();
      const id = $('lookup-id').value.trim();
      if (id !== '') lookup(id);
    });
    setInterval(() => {
      if (chat.connected && !chat.busy && document.body.dataset.page === 'chat') refreshChat();
    }, 5000);
  }

  wire();
  showPage();
  pollMetrics();
  if (chat.admin) {
    connect(chat.admin).catch((error) => {
      chat.admin = null;
      store.set('admin', null);
      showFailure(error, 'Reconnecting as admin');
    });
  }
})();
