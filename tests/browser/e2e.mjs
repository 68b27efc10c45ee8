// End-to-end test of the AOS web client in headless Chromium.
//
// Run by a Rust test that plays the MQTT device: when this script needs the device side to act
// it prints `STEP <name>` on stdout and waits for a `GO` line on stdin. Diagnostics go to stderr;
// the last stdout line is `DONE` on success (exit 0). On failure: failure.png, the error on
// stderr, exit 1.
//
// Environment: AOS_URL, AOS_LOGIN, AOS_PASSWORD (a tenant administrator), SCREENSHOT_DIR,
// CHROMIUM (default /usr/bin/chromium).

import {mkdir} from 'node:fs/promises';
import path from 'node:path';
import {createInterface} from 'node:readline';
import {chromium} from 'playwright-core';

const TIMEOUT = 15000;
const POLL = 100;

function env(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

const log = (...args) => console.error('[e2e]', ...args);

const stdinLines = createInterface({input: process.stdin})[Symbol.asyncIterator]();

/** Hands over to the device side: `STEP name` out, one `GO` line back. */
async function step(name) {
  log(`step ${name}`);
  process.stdout.write(`STEP ${name}\n`);
  const {value, done} = await stdinLines.next();
  if (done || value.trim() !== 'GO') {
    throw new Error(`after STEP ${name}: expected GO on stdin, got ${done ? 'the end of input' : JSON.stringify(value)}`);
  }
}

/** Polls `probe` (which returns {ok, detail}) until ok, or fails naming what it waited for. */
async function eventually(what, probe, timeout = TIMEOUT) {
  const deadline = Date.now() + timeout;
  let detail = '';
  for (;;) {
    try {
      const result = await probe();
      if (result.ok) return;
      detail = result.detail ?? '';
    } catch (error) {
      detail = error.message.split('\n')[0];
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}${detail ? ` (last seen: ${detail})` : ''}`);
    await new Promise((resolve) => setTimeout(resolve, POLL));
  }
}

async function expectText(locator, pattern, what) {
  await eventually(what, async () => {
    const text = ((await locator.textContent({timeout: 1000})) ?? '').trim();
    return {ok: pattern.test(text), detail: JSON.stringify(text)};
  });
}

async function points(locator) {
  return Number(await locator.getAttribute('data-points', {timeout: 1000}));
}

/** The page's error banner, if shown: the client's words for a failed call. */
async function bannerError(page) {
  const banner = page.getByTestId('error');
  return (await banner.isVisible()) ? (await banner.textContent()).trim() : null;
}

/** Fails at once, with the client's own message, if the error banner shows. */
async function noError(page, during) {
  const text = await bannerError(page);
  if (text) throw new Error(`${during}: the client shows the error "${text}"`);
}

/** Waits for an element; a failure names it and what the client's error banner says. */
async function appear(page, locator, what) {
  try {
    await locator.waitFor();
  } catch (error) {
    const shown = await bannerError(page);
    throw new Error(`${what} did not appear: ${shown ? `the client shows the error "${shown}"` : error.message.split('\n')[0]}`);
  }
}

async function run(page, url, login, password, shots) {
  const row = (testid, key, value) => page.locator(`[data-testid="${testid}"][data-${key}="${value}"]`);
  const shoot = async (name) => {
    await page.screenshot({path: path.join(shots, `${name}.png`), fullPage: true});
    log(`screenshot ${name}.png`);
  };
  // Set before a step and checked after it: the page changed live, it was not loaded again.
  const markPage = () => page.evaluate(() => { window.e2eMark = true; });
  const expectSamePage = async (during) => {
    if (!(await page.evaluate(() => window.e2eMark === true))) throw new Error(`${during}: the page was reloaded`);
  };
  const liveOpen = () => eventually('the live connection', async () => {
    const state = await page.getByTestId('live-status').getAttribute('data-state', {timeout: 1000});
    return {ok: state === 'open', detail: state};
  });

  // 1. Sign in through the form.
  await page.goto(url);
  await page.getByTestId('login').fill(login);
  await page.getByTestId('password').fill(password);
  await page.getByTestId('sign-in').click();
  await appear(page, page.locator('[data-testid="kpi"][data-kpi="devices-total"]'), 'the dashboard');
  await eventually('the dashboard route', async () => ({ok: page.url().endsWith('#/dashboard'), detail: page.url()}));
  await noError(page, 'dashboard');
  log('signed in; dashboard shown');

  // 2. Create the class `thermo`.
  await page.getByTestId('nav-classes').click();
  await page.getByTestId('class-name').fill('thermo');
  await page.getByTestId('class-description').fill('Thermometers');
  await page.getByTestId('class-create').click();
  await appear(page, row('class-row', 'name', 'thermo'), 'class thermo in the table');
  log('class thermo created');

  // 3. Register the device `sensor-1`.
  await page.getByTestId('nav-devices').click();
  await page.getByTestId('device-uid').fill('sensor-1');
  await page.getByTestId('device-name').fill('Sensor one');
  await page.getByTestId('device-class').selectOption('thermo');
  await page.getByTestId('device-create').click();
  await appear(page, row('device-row', 'uid', 'sensor-1'), 'device sensor-1 in the table');
  log('device sensor-1 registered');
  await step('device-created');

  // 4. The device page: latest value, chart, then live values.
  await row('device-row', 'uid', 'sensor-1').locator('a').first().click();
  await eventually('the device page', async () => ({ok: page.url().endsWith('#/devices/sensor-1'), detail: page.url()}));
  const latest = row('latest-value', 'attribute', 'temperature');
  await expectText(latest, /^21\.5$/, 'temperature 21.5 in the latest values');
  const box = page.locator('[data-testid="chart-attribute"][value="temperature"]');
  if (!(await box.isChecked())) await box.check();
  const series = page.locator('[data-testid="chart"] [data-testid="chart-series"][data-series="temperature"]');
  await eventually('the temperature series with its first point', async () => {
    const n = await points(series);
    return {ok: n >= 1, detail: `data-points=${n}`};
  });
  const before = await points(series);
  log(`temperature series has ${before} point(s)`);
  await liveOpen();
  await markPage();
  await step('value-seen');
  await expectText(latest, /^24\.5$/, 'temperature 24.5 in the latest values, live');
  await eventually(`the chart to grow from ${before} points by 2, live`, async () => {
    const n = await points(series);
    return {ok: n >= before + 2, detail: `data-points=${n}`};
  });
  await expectSamePage('live values');
  log('live values and chart updated');

  // 5. Commands: invalid JSON is refused in the page; a valid command is sent and acknowledged.
  await page.getByTestId('command-name').fill('reboot');
  await page.getByTestId('command-parameters').fill('{"delay": ');
  await page.getByTestId('command-send').click();
  await expectText(page.getByTestId('error'), /JSON/, 'the message about invalid JSON');
  if ((await page.getByTestId('command-row').count()) !== 0) throw new Error('a command was sent with invalid parameters');
  await page.getByTestId('command-parameters').fill('{"delay": 5}');
  await page.getByTestId('command-send').click();
  const command = page.getByTestId('command-row').filter({hasText: 'reboot'}).first();
  await appear(page, command, 'the reboot command in the list');
  const commandId = await command.getAttribute('data-id');
  log(`command ${commandId} sent`);
  await liveOpen();
  await step('command-sent');
  await expectText(row('command-row', 'id', commandId).getByTestId('command-status'), /acknowledged/, 'the command to be acknowledged, live');
  await expectSamePage('command status');
  log('command acknowledged');

  // 6. An event raised by a value: acknowledge it on the events page.
  await step('raise-event');
  await page.getByTestId('nav-events').click();
  const event = row('event-row', 'device', 'sensor-1').first();
  await appear(page, event, 'an event of sensor-1');
  const eventId = await event.getAttribute('data-id');
  await event.getByTestId('event-acknowledge').click();
  await expectText(row('event-row', 'id', eventId).getByTestId('event-state'), /acknowledged/, 'the event to show acknowledged');
  await noError(page, 'acknowledging the event');
  log(`event ${eventId} acknowledged`);

  // 7. Screenshots of each page.
  const pages = [
    ['dashboard', 'nav-dashboard', '[data-testid="kpi"]'],
    ['devices', 'nav-devices', '[data-testid="device-row"]'],
    ['classes', 'nav-classes', '[data-testid="classes-table"]'],
    ['workflows', 'nav-workflows', '[data-testid="workflows-table"]'],
    ['events', 'nav-events', '[data-testid="event-row"]'],
    ['users', 'nav-users', '[data-testid="users-table"]'],
  ];
  for (const [name, nav, ready] of pages) {
    await page.getByTestId(nav).click();
    await appear(page, page.locator(ready).first(), `the ${name} page`);
    await noError(page, `the ${name} page`);
    await shoot(name);
    if (name === 'devices') {
      await row('device-row', 'uid', 'sensor-1').locator('a').first().click();
      await appear(page, page.locator('[data-testid="chart"] [data-testid="chart-series"]').first(), 'the device chart');
      await appear(page, page.getByTestId('commands-table'), 'the commands of the device');
      await appear(page, page.getByTestId('messages-table'), 'the messages of the device');
      await noError(page, 'the device page');
      await shoot('device');
    }
  }

  // 8. The API's documentation, linked from the header: every operation rendered from the
  //    server's OpenAPI document, one opened on its parameters and answers.
  const docsLink = await page.getByTestId('api-docs-link').getAttribute('href');
  if (docsLink !== '/api/docs') throw new Error(`the header links the API docs to ${docsLink}`);
  await page.goto(new URL(docsLink, url).href);
  const operations = page.getByTestId('operation');
  await appear(page, operations.first(), 'the API operations');
  const count = await operations.count();
  if (count < 40) throw new Error(`the API docs show ${count} operations`);
  const devicesOp = page.locator('[data-testid="operation"][data-method="GET"][data-path="/api/devices"]');
  await devicesOp.locator('summary').first().click();
  await appear(page, devicesOp.getByTestId('op-params'), 'the parameters of GET /api/devices');
  await expectText(devicesOp.getByTestId('op-security'), /bearer/, 'the sign-in GET /api/devices needs');
  await appear(page, devicesOp.locator('[data-testid="op-responses"] [data-field="uid"]').first(), 'the fields of a device in the answer');
  await shoot('api-docs');
  log(`API docs: ${count} operations`);

  // 9. The platform page, as the system administrator: every node with its roles, health and
  //    listeners; the broker (switchable on this node) switched off and on again.
  const admin = process.env.AOS_ADMIN_LOGIN;
  if (!admin) return;
  await page.goto(url);
  await page.getByTestId('sign-out').click();
  await page.getByTestId('login').fill(admin);
  await page.getByTestId('password').fill(env('AOS_ADMIN_PASSWORD'));
  await page.getByTestId('sign-in').click();
  await page.getByTestId('nav-admin').click();
  const node = page.getByTestId('node-row').first();
  await appear(page, node, 'a node on the platform page');
  await appear(page, node.getByTestId('listener').first(), 'the listeners of the node');
  const broker = node.locator('[data-testid="role-chip"][data-role="broker"]');
  await expectText(broker, /broker/, 'the broker role');
  if ((await broker.getAttribute('data-enabled')) !== 'true') throw new Error('the broker is not shown running');
  await shoot('platform');
  for (const enabled of ['false', 'true']) {
    await node.locator('[data-testid="role-switch"][data-role="broker"]').click();
    await eventually(`the broker shown ${enabled === 'true' ? 'on' : 'off'}`, async () => {
      await page.getByTestId('nav-dashboard').click();
      await page.getByTestId('nav-admin').click();
      const state = await page.locator('[data-testid="node-row"] [data-testid="role-chip"][data-role="broker"]').first().getAttribute('data-enabled', {timeout: 1000});
      return {ok: state === enabled, detail: `data-enabled=${state}`};
    });
    await noError(page, 'switching the broker');
  }
  log('the broker was switched off and on from the platform page');
}

async function main() {
  const url = env('AOS_URL');
  const login = env('AOS_LOGIN');
  const password = env('AOS_PASSWORD');
  const shots = env('SCREENSHOT_DIR');
  await mkdir(shots, {recursive: true});

  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: ['--no-sandbox'],
  });
  const page = await browser.newPage({viewport: {width: 1366, height: 768}});
  page.setDefaultTimeout(TIMEOUT);
  // A script error or a Content-Security-Policy violation fails the run, even if the page looks fine.
  const faults = [];
  page.on('pageerror', (error) => faults.push(`script error: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    log(`console: ${message.text()}`);
    if (/Content Security Policy/i.test(message.text())) faults.push(`CSP violation: ${message.text()}`);
  });

  let failed = false;
  try {
    await run(page, url, login, password, shots);
    if (faults.length) throw new Error(faults.join('\n'));
  } catch (error) {
    failed = true;
    console.error(`[e2e] FAILED: ${error.stack || error.message}`);
    await page.screenshot({path: path.join(shots, 'failure.png'), fullPage: true}).catch((e) => log(`no failure screenshot: ${e.message}`));
  } finally {
    await browser.close();
  }
  if (failed) process.exit(1);
  process.stdout.write('DONE\n');
  process.exit(0);
}

main().catch((error) => {
  console.error(`[e2e] FAILED: ${error.stack || error.message}`);
  process.exit(1);
});
