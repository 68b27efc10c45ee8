// End-to-end test of the AOS web client in headless Chromium.
//
// Run by a Rust test that plays the MQTT device: when this script needs the device side to act
// it prints `STEP <name>` on stdout and waits for a `GO` line on stdin. Diagnostics go to stderr;
// the last stdout line is `DONE` on success (exit 0). On failure: failure.png, the error on
// stderr, exit 1.
//
// Environment: AOS_URL, AOS_LOGIN, AOS_PASSWORD (a tenant administrator), SCREENSHOT_DIR,
// CHROMIUM (default /usr/bin/chromium).

import {mkdir, readFile} from 'node:fs/promises';
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
  // Light, then dark (the system's preference, which the client follows without a reload).
  const shootBoth = async (name) => {
    await shoot(name);
    await page.emulateMedia({colorScheme: 'dark'});
    const background = await page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
    await shoot(`${name}-dark`);
    await page.emulateMedia({colorScheme: 'light'});
    const light = await page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
    if (background === light) throw new Error(`the ${name} page looks the same in dark mode (${background})`);
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

  // 2b. Its model through the form: temperatures in °C, humidity in % (the chart's axes).
  await row('class-row', 'name', 'thermo').getByTestId('class-model').click();
  const modelForm = page.getByTestId('model-form');
  for (const [name, unit] of [['temperature', '°C'], ['humidity', '%']]) {
    await modelForm.getByTestId('model-attribute-add').click();
    const attribute = modelForm.getByTestId('model-attribute-row').last();
    await attribute.locator('[data-part="name"]').fill(name);
    await attribute.locator('[data-part="unit"]').fill(unit);
  }
  await shoot('model-dialog');
  await modelForm.getByTestId('model-save').click();
  await expectText(page.getByTestId('notice'), /model of thermo is saved/, 'the model saved');
  // A message format: a .proto that does not compile is refused at the .proto text; a JSON one
  // with a schema is made.
  await page.getByTestId('format-new').click();
  const formatForm = page.getByTestId('format-form');
  await formatForm.getByTestId('format-name').fill('thermo-proto');
  await formatForm.getByTestId('format-kind').selectOption('protobuf');
  await formatForm.getByTestId('format-proto').fill('syntax = "proto3"; message Reading { double t = ; }');
  await formatForm.getByTestId('format-message').fill('Reading');
  await formatForm.getByTestId('format-save').click();
  await appear(page, formatForm.getByTestId('field-error'), 'the error at the .proto text');
  if ((await formatForm.getByTestId('format-proto').getAttribute('aria-invalid')) !== 'true') throw new Error('the .proto text is not marked invalid');
  await formatForm.getByTestId('format-kind').selectOption('json');
  await formatForm.getByTestId('format-name').fill('thermo-json');
  await formatForm.getByTestId('format-schema').fill('{"type": "object"}');
  await formatForm.getByTestId('format-save').click();
  await appear(page, row('format-row', 'name', 'thermo-json'), 'format thermo-json in the table');
  // Changed in its dialog (kept as it was, the schema shown again), then a spare one deleted.
  await row('format-row', 'name', 'thermo-json').getByTestId('format-edit').click();
  await eventually('the schema shown in the format dialog', async () => ({ok: /"object"/.test(await formatForm.getByTestId('format-schema').inputValue())}));
  await formatForm.getByTestId('format-kind').selectOption('xml');
  await formatForm.getByTestId('format-save').click();
  await expectText(row('format-row', 'name', 'thermo-json'), /xml/, 'format thermo-json now reads XML');
  await row('format-row', 'name', 'thermo-json').getByTestId('format-edit').click();
  await formatForm.getByTestId('format-kind').selectOption('json');
  await formatForm.getByTestId('format-save').click();
  await expectText(row('format-row', 'name', 'thermo-json'), /json/, 'format thermo-json back to JSON');
  await noError(page, 'changing a format');
  // A spare class made, renamed in its dialog and deleted.
  await page.getByTestId('class-name').fill('spare-class');
  await page.getByTestId('class-create').click();
  await appear(page, row('class-row', 'name', 'spare-class'), 'class spare-class');
  await row('class-row', 'name', 'spare-class').getByTestId('class-edit').click();
  await page.getByTestId('edit-class-name').fill('spare');
  await page.getByTestId('edit-class-description').fill('not needed after all');
  await page.getByTestId('edit-class-save').click();
  await expectText(row('class-row', 'name', 'spare'), /not needed after all/, 'class spare-class renamed spare, described');
  page.once('dialog', (question) => question.accept());
  await row('class-row', 'name', 'spare').getByTestId('class-delete').click();
  await eventually('class spare gone', async () => ({ok: (await row('class-row', 'name', 'spare').count()) === 0}));
  await noError(page, 'deleting a class');
  // An interpreter: humidity of 80 and above is a warning.
  await page.getByTestId('interpreter-new').click();
  const interpreterForm = page.getByTestId('interpreter-form');
  await interpreterForm.getByTestId('interpreter-attribute').fill('humidity');
  await interpreterForm.getByTestId('interpreter-level-add').click();
  await interpreterForm.locator('[data-part="min"]').fill('80');
  await interpreterForm.getByTestId('interpreter-save').click();
  await expectText(row('interpreter-row', 'attribute', 'humidity').getByTestId('interpreter-levels'), /warning 80/, 'the humidity interpreter with its level');
  await noError(page, 'the classes page');
  log('model, format and interpreter made in the forms');

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

  // 4b. The chart: humidity charted too — one axis per unit, labelled from the class's model;
  //     the values under the pointer; a stretch dragged across becomes the range; a CSV of what
  //     is drawn.
  const humidity = page.locator('[data-testid="chart-attribute"][value="humidity"]');
  await appear(page, humidity, 'humidity among the chartable attributes');
  if (!(await humidity.isChecked())) await humidity.check();
  await eventually('an axis per unit', async () => {
    const units = await page.locator('[data-testid="chart"] [data-testid="chart-unit"]').allTextContents();
    return {ok: units.includes('°C') && units.includes('%'), detail: units.join(', ')};
  });
  const plot = page.locator('[data-testid="chart"] .chart-pad');
  const area = await plot.boundingBox();
  // On the newest temperature's marker.
  const newest = await page.locator('[data-testid="chart"] .marks[data-series="temperature"] circle').last().boundingBox();
  await page.mouse.move(newest.x + newest.width / 2, newest.y + newest.height / 2);
  await expectText(page.getByTestId('chart-hover'), /temperature: 24\.5 °C/, 'the newest temperature under the pointer');
  await shoot('chart-hover');
  await page.mouse.move(area.x + area.width * 0.5, area.y + 10);
  await page.mouse.down();
  // Past the plot's right end: the stretch ends there (the pointer is held by the chart).
  await page.mouse.move(area.x + area.width + 20, area.y + 10, {steps: 5});
  await page.mouse.up();
  await eventually('the dragged stretch as the range', async () => {
    const chosen = await page.getByTestId('chart-range').inputValue();
    const from = await page.getByTestId('chart-from').inputValue();
    return {ok: chosen === 'custom' && from !== '', detail: `${chosen} from ${from}`};
  });
  await eventually('the newest values still drawn after zooming in', async () => {
    const n = await points(series);
    return {ok: n >= 1, detail: `data-points=${n}`};
  });
  const [download] = await Promise.all([page.waitForEvent('download'), page.getByTestId('chart-csv').click()]);
  const csv = await readFile(await download.path(), 'utf8');
  const csvLines = csv.trim().split('\n');
  if (csvLines[0] !== 'time,attribute,value,unit') throw new Error(`the CSV starts with ${csvLines[0]}`);
  if (!csvLines.some((l) => /,temperature,24\.5,°C$/.test(l))) throw new Error(`the CSV lacks the last temperature:\n${csv}`);
  log(`chart: an axis per unit, hover, zoom, CSV of ${csvLines.length - 1} values`);
  // Six hours are drawn as 5-minute averages: the value of two hours ago and today's are not
  // joined across the empty intervals between them.
  await page.getByTestId('chart-range').selectOption('6h');
  await eventually('a gap in the averaged temperature', async () => {
    const d = (await series.getAttribute('d', {timeout: 1000})) || '';
    const moves = (d.match(/M/g) || []).length;
    return {ok: moves >= 2, detail: `${moves} segment(s): ${d.slice(0, 80)}`};
  });
  log('an interval without values is a gap');

  // 5. Commands: invalid JSON is refused in the page; a valid command is sent and acknowledged.
  await page.getByTestId('command-name').fill('reboot');
  await page.getByTestId('command-parameters').fill('{"delay": ');
  await page.getByTestId('command-send').click();
  await expectText(page.getByTestId('command-form').getByTestId('field-error'), /JSON/, 'the message about invalid JSON, at the parameters');
  if ((await page.getByTestId('command-parameters').getAttribute('aria-invalid')) !== 'true') throw new Error('the parameters are not marked invalid');
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
  if ((await row('event-row', 'id', eventId).getByTestId('event-acknowledge').count()) !== 0) throw new Error('an acknowledged alarm still offers to be acknowledged');
  log(`event ${eventId} acknowledged`);
  // The value goes back to normal and crosses into faulty again: the same alarm, counted twice,
  // live; the level filter keeps it, another level hides it.
  await markPage();
  await step('cross-again');
  await expectText(row('event-row', 'id', eventId).getByTestId('event-count'), /^2$/, 'the alarm counted again, live');
  await expectSamePage('the alarm counted again');
  if ((await page.getByTestId('event-row').count()) !== 1) throw new Error('a second alarm was raised instead of counting the open one');
  await page.getByTestId('event-level').selectOption('warning');
  await page.getByTestId('event-apply').click();
  await expectText(page.getByTestId('events-table'), /No alarms/, 'no warning alarms');
  await page.getByTestId('event-level').selectOption('faulty');
  await page.getByTestId('event-apply').click();
  await appear(page, row('event-row', 'id', eventId), 'the faulty alarm again');
  log('the open alarm counted a second crossing, live; filtered by level');

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
    await shootBoth(name);
    if (name === 'devices') {
      await row('device-row', 'uid', 'sensor-1').locator('a').first().click();
      await appear(page, page.locator('[data-testid="chart"]'), 'the device chart');
      await eventually('the device chart with its series', async () => {
        const n = await page.locator('[data-testid="chart"] [data-testid="chart-series"]').count();
        return {ok: n >= 1, detail: `${n} series`};
      });
      await appear(page, page.getByTestId('commands-table'), 'the commands of the device');
      await appear(page, page.getByTestId('messages-table'), 'the messages of the device');
      await noError(page, 'the device page');
      await shootBoth('device');
    }
  }

  // 7b. The keyboard sorts the devices (Enter on a column's header, the focus kept on it); on a
  //     phone's 390 px the page reflows without sideways scrolling and the navigation folds
  //     behind the menu button.
  await page.getByTestId('nav-devices').click();
  await appear(page, row('device-row', 'uid', 'sensor-1'), 'the devices');
  await page.getByTestId('sort-uid').focus();
  await page.keyboard.press('Enter');
  await eventually('the devices sorted by the keyboard', async () => {
    const sort = await page.getByTestId('sort-uid').getAttribute('aria-sort', {timeout: 1000});
    const focused = await page.evaluate(() => document.activeElement && document.activeElement.dataset.testid);
    return {ok: sort !== 'none' && focused === 'sort-uid', detail: `aria-sort=${sort}, focus on ${focused}`};
  });
  await page.setViewportSize({width: 390, height: 844});
  if (await page.getByTestId('nav-devices').isVisible()) throw new Error('at 390 px the navigation is not folded away');
  await page.getByTestId('menu-toggle').click();
  await page.getByTestId('nav-events').click();
  await appear(page, page.locator('[data-testid="event-row"]').first(), 'the events page at 390 px');
  if (await page.getByTestId('nav-devices').isVisible()) throw new Error('the navigation stays open after choosing a page');
  const wide = await page.evaluate(() => document.documentElement.scrollWidth);
  if (wide > 390) throw new Error(`at 390 px the page is ${wide} px wide`);
  await shootBoth('phone-events');
  await page.setViewportSize({width: 1366, height: 768});
  log('keyboard sorting; the 390 px layout');

  // 8. People, through the forms: a user added, a custom role made and given to it, the user
  //    edited; an API key refused with the error at its field, then made (its secret shown
  //    once) and revoked; a password reset (shown once).
  await page.getByTestId('nav-users').click();
  await appear(page, page.getByTestId('user-form'), 'the form that adds a user');
  await page.getByTestId('user-login').fill('operator-1');
  await page.getByTestId('user-password').fill('a long enough password');
  await page.getByTestId('user-create').click();
  await appear(page, row('user-row', 'login', 'operator-1'), 'user operator-1 in the table');
  await page.getByTestId('role-new').click();
  const roleForm = page.getByTestId('role-form');
  await roleForm.getByTestId('role-name').fill('auditor');
  await roleForm.getByTestId('level-events').selectOption('view');
  await roleForm.getByTestId('level-devices').selectOption('view');
  await shoot('role-dialog');
  await roleForm.getByTestId('role-save').click();
  await expectText(row('role-row', 'name', 'auditor'), /view: devices, events/, 'role auditor with what it grants');
  await row('user-row', 'login', 'operator-1').getByTestId('user-edit').click();
  const userForm = page.getByTestId('edit-user-form');
  await userForm.getByTestId('edit-user-name').fill('First operator');
  await userForm.locator('input[data-role="auditor"]').check();
  await userForm.getByTestId('edit-user-save').click();
  await expectText(row('user-row', 'login', 'operator-1'), /First operator.*auditor/, 'operator-1 renamed, with role auditor');
  await noError(page, 'editing a user');
  // A role somebody has cannot go (the page says why); one nobody has can.
  page.once('dialog', (question) => question.accept());
  await row('role-row', 'name', 'auditor').getByTestId('role-delete').click();
  await expectText(page.getByTestId('error'), /1 user still has it/, 'the refusal to delete a role in use');
  await page.getByTestId('error').locator('.banner-close').click();
  await page.getByTestId('role-new').click();
  await roleForm.getByTestId('role-name').fill('scratch');
  await roleForm.getByTestId('role-save').click();
  await appear(page, row('role-row', 'name', 'scratch'), 'role scratch');
  page.once('dialog', (question) => question.accept());
  await row('role-row', 'name', 'scratch').getByTestId('role-delete').click();
  await eventually('role scratch gone', async () => ({ok: (await row('role-row', 'name', 'scratch').count()) === 0}));
  log('user added and edited; role auditor made and given; a spare role deleted');

  await page.getByTestId('key-new').click();
  const keyForm = page.getByTestId('key-form');
  await keyForm.getByTestId('key-name').fill('dashboard-app');
  await keyForm.getByTestId('key-filter').fill('aos/#/telemetry');
  await keyForm.getByTestId('key-create').click();
  await appear(page, keyForm.getByTestId('field-error'), 'the error at the topic filter');
  if ((await keyForm.getByTestId('key-filter').getAttribute('aria-invalid')) !== 'true') throw new Error('the topic filter is not marked invalid');
  await shoot('field-error');
  await keyForm.getByTestId('key-filter').fill('aos/+/telemetry');
  await keyForm.getByTestId('key-create').click();
  const secret = await page.getByTestId('secret').textContent();
  if (!secret || secret.length < 16) throw new Error(`the API key's secret shown is "${secret}"`);
  await page.locator('dialog[open]').getByTestId('dialog-close').click();
  const key = row('key-row', 'name', 'dashboard-app');
  await appear(page, key, 'API key dashboard-app in the table');
  page.once('dialog', (question) => question.accept());
  await key.getByTestId('key-revoke').click();
  await expectText(row('key-row', 'name', 'dashboard-app'), /revoked/, 'API key dashboard-app revoked');
  log('API key refused at its field, made, its secret shown once, revoked');

  page.once('dialog', (question) => question.accept());
  await row('user-row', 'login', 'operator-1').getByTestId('user-reset').click();
  const newPassword = await page.getByTestId('secret').textContent();
  if (!newPassword || newPassword.length < 8) throw new Error(`the new password shown is "${newPassword}"`);
  await shoot('secret-dialog');
  await page.locator('dialog[open]').getByTestId('dialog-close').click();
  await noError(page, 'resetting a password');
  log('password reset, shown once');

  // 8w. A workflow written in the page: not JSON and a wrong trigger refused at the document,
  //     then saved; exported as the same document; deleted.
  await page.getByTestId('nav-workflows').click();
  await page.getByTestId('workflow-new').click();
  const workflowForm = page.getByTestId('workflow-form');
  await workflowForm.getByTestId('workflow-document').fill('{"name": ');
  await workflowForm.getByTestId('workflow-save').click();
  await expectText(workflowForm.getByTestId('field-error'), /not valid JSON/, 'the JSON error at the document');
  const written = {name: 'by-hand', enabled: true, trigger: {kind: 'nope'}, actions: [{save: {attribute: 'checked', value: 1}}]};
  await workflowForm.getByTestId('workflow-document').fill(JSON.stringify(written));
  await workflowForm.getByTestId('workflow-save').click();
  await expectText(workflowForm.getByTestId('field-error'), /trigger|kind/, 'the wrong trigger at the document');
  written.trigger = {kind: 'manual'};
  await workflowForm.getByTestId('workflow-document').fill(JSON.stringify(written));
  await workflowForm.getByTestId('workflow-save').click();
  await appear(page, row('workflow-row', 'name', 'by-hand'), 'workflow by-hand in the table');
  const [exportedFile] = await Promise.all([page.waitForEvent('download'), row('workflow-row', 'name', 'by-hand').getByTestId('workflow-export').click()]);
  const exportedDoc = JSON.parse(await readFile(await exportedFile.path(), 'utf8'));
  if (exportedDoc.name !== 'by-hand' || exportedDoc.trigger.kind !== 'manual') throw new Error(`exported: ${JSON.stringify(exportedDoc)}`);
  page.once('dialog', (question) => question.accept());
  await row('workflow-row', 'name', 'by-hand').getByTestId('workflow-delete').click();
  await eventually('workflow by-hand gone', async () => ({ok: (await row('workflow-row', 'name', 'by-hand').count()) === 0, detail: ''}));
  await noError(page, 'writing a workflow');
  log('workflow refused at its document, saved, exported, deleted');

  // 8a. A device changed from its page: a spare one registered, renamed, given a username and
  //     password (a short one refused at its field), then a token (shown once), and deleted.
  await page.getByTestId('nav-devices').click();
  await page.getByTestId('device-uid').fill('spare-1');
  await page.getByTestId('device-class').selectOption('thermo');
  await page.getByTestId('device-create').click();
  await appear(page, row('device-row', 'uid', 'spare-1'), 'device spare-1 in the table');
  await row('device-row', 'uid', 'spare-1').locator('a').first().click();
  await page.getByTestId('device-edit').click();
  const deviceForm = page.getByTestId('device-edit-form');
  await deviceForm.getByTestId('device-edit-name').fill('Spare sensor');
  await deviceForm.getByTestId('device-edit-save').click();
  await expectText(page.locator('h1'), /spare-1 · Spare sensor/, 'the device renamed');
  await page.getByTestId('device-credentials').click();
  const credentialForm = page.getByTestId('credential-form');
  await credentialForm.getByTestId('credential-kind').selectOption('password');
  await credentialForm.getByTestId('credential-username').fill('spare-user');
  await credentialForm.getByTestId('credential-password').fill('short');
  await credentialForm.getByTestId('credential-save').click();
  await appear(page, credentialForm.getByTestId('field-error'), 'the error at the short password');
  await credentialForm.getByTestId('credential-password').fill('a long enough secret');
  await credentialForm.getByTestId('credential-save').click();
  await expectText(page.getByTestId('notice'), /spare-user/, 'the new username');
  await page.getByTestId('device-credentials').click();
  await page.getByTestId('credential-form').getByTestId('credential-save').click();
  const deviceToken = await page.getByTestId('secret').textContent();
  if (!deviceToken || deviceToken.length < 16) throw new Error(`the token shown is "${deviceToken}"`);
  await page.locator('dialog[open]').getByTestId('dialog-close').click();
  page.once('dialog', (question) => question.accept());
  await page.getByTestId('device-delete').click();
  await appear(page, row('device-row', 'uid', 'sensor-1'), 'the devices after deleting spare-1');
  if ((await row('device-row', 'uid', 'spare-1').count()) !== 0) throw new Error('spare-1 is still listed');
  await noError(page, 'changing a device');
  log('device renamed, given a password and a token, deleted');

  // 8c. A customer entity made in its dialog; one command sent to every thermo device at once.
  await page.getByTestId('nav-users').click();
  await page.getByTestId('entity-new').click();
  const entityForm = page.getByTestId('entity-form');
  await entityForm.getByTestId('entity-name').fill('north-customer');
  await entityForm.getByTestId('entity-kind').selectOption('customer');
  await entityForm.getByTestId('entity-create').click();
  await expectText(row('entity-row', 'name', 'north-customer'), /customer/, 'the customer entity');
  // A spare unit made and deleted; the customer renamed (its dialog keeps what it is under).
  await page.getByTestId('entity-new').click();
  await entityForm.getByTestId('entity-name').fill('spare-unit');
  await entityForm.getByTestId('entity-create').click();
  await appear(page, row('entity-row', 'name', 'spare-unit'), 'the spare unit');
  page.once('dialog', (question) => question.accept());
  await row('entity-row', 'name', 'spare-unit').getByTestId('entity-delete').click();
  await eventually('the spare unit gone', async () => ({ok: (await row('entity-row', 'name', 'spare-unit').count()) === 0}));
  await row('entity-row', 'name', 'north-customer').getByTestId('entity-edit').click();
  await page.getByTestId('edit-entity-name').fill('north');
  await page.getByTestId('edit-entity-save').click();
  await expectText(row('entity-row', 'name', 'north'), /customer/, 'the customer renamed north');
  // A user bound to the customer from the add-user form.
  await page.getByTestId('user-login').fill('nora');
  await page.getByTestId('user-password').fill('a long password for nora');
  await page.getByTestId('user-roles').selectOption('customer');
  await page.getByTestId('user-entity').selectOption('north');
  await page.getByTestId('user-create').click();
  await appear(page, row('user-row', 'login', 'nora'), 'nora, bound to the customer north');
  await noError(page, 'entities changed');
  await page.getByTestId('nav-devices').click();
  await page.getByTestId('batch-new').click();
  const batchForm = page.getByTestId('batch-form');
  await batchForm.getByTestId('batch-name').fill('nightly check');
  await batchForm.getByTestId('batch-command').fill('selftest');
  await batchForm.locator('input[data-class="thermo"]').check();
  await batchForm.getByTestId('batch-send').click();
  await expectText(page.getByTestId('notice'), /1 command queued/, 'the batch queued for sensor-1');
  await noError(page, 'sending a batch');
  log('customer entity made; a command batch queued');

  // 8b. Operations: the message log shows sensor-1's messages; the audit log, narrowed to this
  //     user's `user.` actions, shows the user it added and nothing else; a user who did
  //     nothing shows nothing.
  await page.getByTestId('nav-operations').click();
  await appear(page, page.getByTestId('message-row').first(), 'the message log');
  await page.getByTestId('audit-user').fill(login);
  await page.getByTestId('audit-action').fill('user.');
  await page.getByTestId('audit-apply').click();
  await eventually('the audit log narrowed to user actions', async () => {
    const actions = await page.getByTestId('audit-row').evaluateAll((rows) => rows.map((r) => r.dataset.action));
    return {ok: actions.includes('user.create') && actions.every((a) => a.startsWith('user.')), detail: actions.join(', ')};
  });
  await shootBoth('operations');
  await page.getByTestId('audit-user').fill('someone-who-did-nothing');
  await page.getByTestId('audit-apply').click();
  await expectText(page.getByTestId('audit-table'), /Nothing recorded/, 'an empty audit log for a user who did nothing');
  await noError(page, 'the operations page');
  log('message log and audit log');

  // 8d. The broker view: sensor-1's connection (protocol, subscriptions) and its retained
  //     status; the retained message deleted, the connection closed (the device is told why).
  await page.getByTestId('nav-broker').click();
  const client = row('client-row', 'client', 'sensor-1');
  await expectText(client, /5\.0/, "sensor-1's connection");
  await expectText(client, /aos\/sensor-1\/commands/, "sensor-1's subscription");
  const status = row('retained-row', 'topic', 'aos/sensor-1/status');
  await expectText(status, /online/, "sensor-1's retained status");
  await shootBoth('broker');
  page.once('dialog', (question) => question.accept());
  await status.getByTestId('retained-delete').click();
  await expectText(page.getByTestId('notice'), /is gone/, 'the retained message deleted');
  await eventually('the retained status gone', async () => ({ok: (await status.count()) === 0, detail: `${await status.count()} rows`}));
  page.once('dialog', (question) => question.accept());
  await client.getByTestId('client-disconnect').click();
  await expectText(page.getByTestId('notice'), /was disconnected/, 'sensor-1 disconnected');
  await step('client-disconnected');
  await eventually('sensor-1 no longer connected', async () => {
    await page.getByTestId('clients-apply').click();
    const connected = await page.locator('[data-testid="client-row"][data-client="sensor-1"][data-connected="true"]').count();
    return {ok: connected === 0, detail: `${connected} connected rows`};
  });
  await noError(page, 'the broker view');
  log('broker view: a retained message deleted, a client disconnected');

  // 9. The API's documentation, linked from the header: every operation rendered from the
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
  await shootBoth('api-docs');
  log(`API docs: ${count} operations`);

  // 10. The platform page, as the system administrator: a tenant created; every node with its
  //     roles, health and listeners; the broker (switchable on this node) switched off and on
  //     again.
  const admin = process.env.AOS_ADMIN_LOGIN;
  if (!admin) return;
  await page.goto(url);
  await page.getByTestId('sign-out').click();
  await page.getByTestId('login').fill(admin);
  await page.getByTestId('password').fill(env('AOS_ADMIN_PASSWORD'));
  await page.getByTestId('sign-in').click();
  await page.getByTestId('nav-admin').click();
  await page.getByTestId('tenant-name').fill('globex');
  await page.getByTestId('tenant-create').click();
  await appear(page, row('tenant-row', 'name', 'globex'), 'tenant globex in the table');
  log('tenant globex created');
  page.once('dialog', (question) => question.accept());
  await row('tenant-row', 'name', 'globex').getByTestId('tenant-disable').click();
  await expectText(row('tenant-row', 'name', 'globex').getByTestId('tenant-state'), /disabled/, 'globex disabled');
  await row('tenant-row', 'name', 'globex').getByTestId('tenant-enable').click();
  await expectText(row('tenant-row', 'name', 'globex').getByTestId('tenant-state'), /active/, 'globex enabled again');
  await noError(page, 'disabling and enabling a tenant');
  // The tenant is in the page's link: a link to globex's devices shows globex's (none), after
  // a reload too; the picker back to acme changes the link.
  const picker = page.getByTestId('tenant-picker');
  await eventually('globex offered by the tenant picker', async () => {
    const offered = await picker.locator('option').allTextContents();
    return {ok: offered.includes('globex'), detail: offered.join(', ')};
  });
  for (const visit of [() => page.goto(`${url}#/devices?tenant=globex`), () => page.reload()]) {
    await visit();
    await appear(page, page.getByTestId('devices-table'), "globex's devices");
    await eventually('the picker on globex', async () => ({ok: (await picker.inputValue()) === 'globex', detail: await picker.inputValue()}));
    if ((await page.getByTestId('device-row').count()) !== 0) throw new Error("acme's devices shown in globex");
  }
  await picker.selectOption('acme');
  await appear(page, row('device-row', 'uid', 'sensor-1'), "acme's devices again");
  if (!page.url().includes('tenant=acme')) throw new Error(`the link does not name the tenant: ${page.url()}`);
  log('the tenant follows the link');
  await page.getByTestId('nav-operations').click();
  await appear(page, page.getByTestId('dead-table'), 'the dead letters');
  await page.getByTestId('audit-whose').selectOption('platform');
  await page.getByTestId('audit-apply').click();
  await appear(page, row('audit-row', 'action', 'sign_in').first(), "the platform's audit log");
  await page.getByTestId('nav-admin').click();
  const node = page.getByTestId('node-row').first();
  await appear(page, node, 'a node on the platform page');
  // Last seen is the node's latest heartbeat (every second here): recent, and it moves on.
  const lastSeen = async () => Date.parse(await page.locator('[data-testid="node-row"] [data-testid="node-last-seen"] time').first().getAttribute('datetime', {timeout: 1000}));
  const seen = await lastSeen();
  if (!(Math.abs(Date.now() - seen) < 30000)) throw new Error(`the node was last seen at ${new Date(seen).toISOString()}`);
  await eventually('a later heartbeat shown', async () => {
    await page.getByTestId('nav-dashboard').click();
    await page.getByTestId('nav-admin').click();
    const now = await lastSeen();
    return {ok: now > seen, detail: new Date(now).toISOString()};
  });
  await appear(page, node.getByTestId('listener').first(), 'the listeners of the node');
  const broker = node.locator('[data-testid="role-chip"][data-role="broker"]');
  await expectText(broker, /broker/, 'the broker role');
  if ((await broker.getAttribute('data-enabled')) !== 'true') throw new Error('the broker is not shown running');
  await shootBoth('platform');
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
  await page.getByTestId('nav-broker').click();
  await appear(page, page.getByTestId('traffic-row').first(), "the broker nodes' traffic");
  await shootBoth('broker-platform');
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
