// Drives a real browser (Debian's chromium, through playwright-core) against a running
// stack: tests/tests/console_browser.rs starts the stack and runs this with
//   PLANE_URL ADMIN_KEY MARKET_KEY SIM_URL IMEI CHROMIUM SCREENSHOTS
// and fails when this exits non-zero. It proves what a console user relies on: sign-in
// (and a clear refusal), live updates without reload, roles refused by the server (a
// seller key sees its own boxes only), the cookie's flags, the CSP, no request off the
// loopback host and no browser console error.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';

const env = (name) => {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
};
const plane = env('PLANE_URL');
const [adminKey, marketKey] = [env('ADMIN_KEY'), env('MARKET_KEY')];
const [simUrl, imei] = [env('SIM_URL'), env('IMEI')];
const shots = env('SCREENSHOTS');
mkdirSync(shots, { recursive: true });

const problems = [];
const check = (ok, what) => {
  if (!ok) {
    problems.push(what);
    console.error(`FAILED: ${what}`);
  } else {
    console.log(`ok: ${what}`);
  }
};

async function rest(method, path, key, body) {
  const res = await fetch(plane + path, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.json().catch(() => null) };
}

/** Requests the test expects to be refused (a wrong key, a page not for this key): the
 * browser reports those as console errors too. */
let refusalsExpected = 0;

/** A context whose every request and console message is watched. */
async function watched(browser) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  page.on('console', (msg) => {
    if (msg.type() !== 'error') {
      return;
    }
    if (refusalsExpected > 0 && msg.text().startsWith('Failed to load resource')) {
      refusalsExpected -= 1;
      return;
    }
    problems.push(`browser console error: ${msg.text()}`);
  });
  page.on('response', (res) => {
    if (res.status() >= 400) {
      console.log(`(${res.status()} for ${res.request().method()} ${res.url()})`);
    }
  });
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  page.on('request', (req) => {
    const host = new URL(req.url()).hostname;
    if (!['127.0.0.1', 'localhost', '[::1]'].includes(host)) {
      problems.push(`request off the loopback host: ${req.url()}`);
    }
  });
  return { context, page };
}

async function signIn(page, key) {
  await page.goto(plane + '/console/');
  await page.fill('#key', key);
  await Promise.all([page.waitForNavigation(), page.click('button[type=submit]')]);
}

const browser = await chromium.launch({ executablePath: env('CHROMIUM'), args: ['--no-sandbox'] });
try {
  const { context, page } = await watched(browser);

  // A wrong key gets a clear message, and no session.
  refusalsExpected = 1;
  await signIn(page, 'fh_wrong_key');
  const error = await page.textContent('.error');
  check(/not valid/.test(error || ''), 'a wrong key is told it is not valid');
  check((await context.cookies()).length === 0, 'a wrong key gets no cookie');

  // The admin key: the fleet, live.
  const response = await page.goto(plane + '/console/login');
  const csp = response.headers()['content-security-policy'] || '';
  check(csp.includes("script-src 'self'") && csp.includes("frame-ancestors 'none'"), 'the CSP header is strict');
  await signIn(page, adminKey);
  check(page.url().endsWith('/console/fleet'), 'sign-in lands on the fleet');
  const [cookie] = await context.cookies();
  check(cookie && cookie.httpOnly && cookie.sameSite === 'Strict' && cookie.path === '/console', 'the session cookie is HttpOnly, SameSite=Strict, scoped to /console');
  await page.waitForSelector('#agents tbody tr[data-agent]', { timeout: 10000 });
  await page.waitForSelector(`#modems tbody tr[data-imei="${imei}"]`, { timeout: 10000 });
  check(true, "the demo's agent and its modems appear");
  const session = await page.$eval('#agents tbody tr[data-agent]', (tr) => [tr.children[4].textContent, tr.children[6].querySelector('time')?.getAttribute('title') || '']);
  check(session[0] === 'v1' && /UTC/.test(session[1]), `an agent shows its protocol and since when it is connected (${session})`);
  const pools = await page.$$eval('#pools tbody tr', (rows) => rows.length);
  check(pools >= 1, `modems are counted by country and carrier (${pools} rows)`);
  const series = await page.$$eval('#charts figure svg polyline', (lines) => lines.length);
  check(series === 4, `four charts are drawn (${series})`);
  await page.screenshot({ path: `${shots}/fleet.png`, fullPage: true });

  // Sold through the REST API: on the page without reload within 2 s.
  await page.goto(plane + '/console/allocations');
  await page.waitForSelector('#status.ok', { timeout: 10000 });
  const sold = await rest('POST', '/v1/allocations', marketKey, { order_id: 'console-1', duration_s: 3600, imei });
  check(sold.status === 201, `allocated (${sold.status})`);
  const id = sold.body.allocation_id;
  const row = `#allocations tr[data-allocation="${id}"]`;
  await page.waitForSelector(`${row} [data-state="active"]`, { timeout: 2000 });
  check(true, 'the allocation appears without reload within 2 s');
  const used = await page.$eval(`${row} td:nth-child(9)`, (td) => td.textContent);
  check(/MB|—/.test(used), `its usage is shown (${used})`);
  const soon = await page.$$eval('#counts li', (lis) => lis.map((li) => li.textContent).join('; '));
  check(soon.includes('expiring within 1 h'), `expiring soon is counted (${soon})`);
  await page.screenshot({ path: `${shots}/allocations.png`, fullPage: true });
  const released = await rest('DELETE', `/v1/allocations/${id}`, marketKey);
  check(released.status === 200 || released.status === 202, `released (${released.status})`);
  await page.waitForSelector(`${row} [data-state="released"]`, { timeout: 10000 });
  check(true, 'the release shows live');

  // Its timeline: requested, then released, in order.
  await Promise.all([page.waitForNavigation(), page.click(`${row} a`)]);
  await page.waitForSelector('#timeline li[data-what="released"]', { timeout: 10000 });
  const steps = await page.$$eval('#timeline li', (lis) => lis.map((li) => li.dataset.what));
  check(steps.join(',') === 'requested,released', `the allocation's timeline is in order (${steps})`);
  await page.screenshot({ path: `${shots}/timeline.png`, fullPage: true });

  // An action from the page: release another allocation with its button (confirmed).
  const second = await rest('POST', '/v1/allocations', marketKey, { order_id: 'console-2', duration_s: 3600, imei });
  check(second.status === 201, `allocated again (${second.status})`);
  await page.goto(plane + '/console/allocations/' + second.body.allocation_id);
  await page.waitForSelector('#actions button[data-action="release"]', { timeout: 10000 });
  page.once('dialog', (dialog) => dialog.accept());
  await page.click('#actions button[data-action="release"]');
  await page.waitForSelector('#detail dd[data-state="released"]', { timeout: 10000 });
  check(true, 'the Release button releases the allocation, live');
  const after = await rest('GET', '/v1/allocations/' + second.body.allocation_id, marketKey);
  check(after.body && after.body.state === 'released', `the REST API agrees (${after.body && after.body.state})`);

  // A page kept open: many live updates later it is still right and its memory flat
  // (after a collection, the DOM, its listeners and the JS heap stay where they were).
  await page.goto(plane + '/console/fleet');
  const soldCell = `#modems tr[data-imei="${imei}"] td:nth-child(8)`;
  await page.waitForSelector(soldCell, { timeout: 10000 });
  const cdp = await context.newCDPSession(page);
  await cdp.send('Performance.enable');
  const footprint = async () => {
    await cdp.send('HeapProfiler.collectGarbage');
    const { metrics } = await cdp.send('Performance.getMetrics');
    const m = Object.fromEntries(metrics.map((x) => [x.name, x.value]));
    return { heap: m.JSHeapUsedSize, nodes: m.Nodes, listeners: m.JSEventListeners };
  };
  const showsSold = (n) => page.waitForFunction(
    ([sel, want]) => (document.querySelector(sel)?.textContent || '').startsWith(want + ' /'),
    [soldCell, n], { timeout: 10000 });
  let updates = 0;
  const churn = async (cycles) => {
    for (let i = 0; i < cycles; i += 1) {
      const sale = await rest('POST', '/v1/allocations', marketKey, { order_id: `long-open-${updates}`, duration_s: 3600, imei });
      if (sale.status !== 201) {
        throw new Error(`allocation ${updates} answered ${sale.status}`);
      }
      await showsSold(1);
      await rest('DELETE', `/v1/allocations/${sale.body.allocation_id}`, marketKey);
      await showsSold(0);
      updates += 2;
    }
  };
  await churn(4);
  const early = await footprint();
  await churn(16);
  const late = await footprint();
  console.log(`long-open page: ${JSON.stringify(early)} -> ${JSON.stringify(late)} after ${updates} live updates`);
  check(late.nodes <= early.nodes + 20, `its DOM stays the same size (${early.nodes} -> ${late.nodes} nodes)`);
  check(late.listeners <= early.listeners, `no listener piles up (${early.listeners} -> ${late.listeners})`);
  check(late.heap <= early.heap + 128 * 1024, `its JS heap stays flat (${early.heap} -> ${late.heap} bytes)`);
  await cdp.detach();

  // A modem going offline on the box shows offline live.
  await page.goto(plane + '/console/fleet');
  await page.waitForSelector(`#modems tr[data-imei="${imei}"] [data-state="online"]`, { timeout: 10000 });
  await fetch(`${simUrl}/_sim/modems/${imei}`, { method: 'POST', body: JSON.stringify({ online: false }), headers: { 'content-type': 'application/json' } });
  await page.waitForSelector(`#modems tr[data-imei="${imei}"] [data-state="offline"]`, { timeout: 15000 });
  check(true, 'a modem going offline shows offline live');
  await Promise.all([page.waitForNavigation(), page.click(`#modems tr[data-imei="${imei}"] a`)]);
  await page.waitForSelector('#copies [data-state="offline"]', { timeout: 10000 });
  check(true, "a modem's page shows it offline");
  await page.waitForSelector('#copies li[data-online="offline"]', { timeout: 10000 });
  check(true, "its online history shows when it went offline");
  await page.screenshot({ path: `${shots}/modem.png`, fullPage: true });

  await page.goto(plane + '/console/health');
  await page.waitForSelector('#health dt', { timeout: 10000 });
  const ops = await page.$$eval('#commands tbody tr td:first-child', (tds) => tds.map((td) => td.textContent));
  check(ops.includes('provision'), `the health page shows the commands sent (${ops})`);
  const inFlight = await page.$$eval('#health dt', (dts) => dts.map((dt) => dt.textContent));
  check(inFlight.includes('Commands in flight'), 'the health page counts the commands in flight');
  await page.screenshot({ path: `${shots}/health.png`, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  await page.goto(plane + '/console/fleet');
  await page.waitForSelector('#modems tbody tr', { timeout: 10000 });
  await page.screenshot({ path: `${shots}/fleet-phone.png`, fullPage: true });

  // Signing out ends the session: the pages send it back to sign-in.
  await Promise.all([page.waitForNavigation(), page.click('header form button')]);
  await page.goto(plane + '/console/fleet');
  check(page.url().endsWith('/console/login'), 'signed out, the console asks to sign in');

  // A marketplace key: no admin page, refused by the server.
  const market = await watched(browser);
  await signIn(market.page, marketKey);
  const links = await market.page.$$eval('nav a', (as) => as.map((a) => a.textContent));
  check(!links.includes('Health'), 'a marketplace key is not offered admin pages');
  refusalsExpected = 1;
  const refused = await market.page.goto(plane + '/console/health');
  check(refused.status() === 403, `the server refuses admin pages to a marketplace key (${refused.status()})`);
  check(await market.page.$('#agents') === null, 'a marketplace key sees no agent records');
  await market.context.close();

  // A seller key: its own boxes only, live; another seller's key sees none of them.
  const agents = await rest('GET', '/v1/agents', adminKey);
  const agent = agents.body.agents[0];
  const made = await rest('POST', '/v1/keys', adminKey, { role: 'seller', name: 'console-seller', seller: agent.label });
  check(made.status === 201, `a seller key is made for ${agent.label} (${made.status})`);
  const seller = await watched(browser);
  await signIn(seller.page, made.body.key);
  check(seller.page.url().endsWith('/console/boxes'), 'a seller key lands on its boxes');
  await seller.page.waitForSelector(`#boxes tr[data-agent="${agent.agent_id}"]`, { timeout: 10000 });
  await seller.page.waitForSelector(`#modems tr[data-imei="${imei}"]`, { timeout: 10000 });
  check(true, "the seller sees its box and its modems");
  const sellerLinks = await seller.page.$$eval('nav a', (as) => as.map((a) => a.textContent));
  check(sellerLinks.join(',') === 'My boxes', `a seller is offered its boxes only (${sellerLinks})`);
  await seller.page.screenshot({ path: `${shots}/seller.png`, fullPage: true });
  refusalsExpected = 1;
  const fleetRefused = await seller.page.goto(plane + '/console/fleet');
  check(fleetRefused.status() === 403, `the server refuses the fleet to a seller key (${fleetRefused.status()})`);
  await seller.context.close();
  const stranger = await rest('POST', '/v1/keys', adminKey, { role: 'seller', name: 'other-seller', seller: 'nobody-here' });
  const other = await watched(browser);
  await signIn(other.page, stranger.body.key);
  await other.page.waitForSelector('#boxes-empty:not([hidden])', { timeout: 10000 });
  check(await other.page.$('#boxes tbody tr') === null, "another seller's key sees no box of this seller");
  await other.context.close();
  await context.close();
} catch (e) {
  problems.push(`the run stopped: ${e.stack || e}`);
} finally {
  await browser.close();
}
if (problems.length > 0) {
  console.error(`${problems.length} problem(s):\n- ${problems.join('\n- ')}`);
  process.exit(1);
}
console.log('console: every check passed');
