// One device (`#/devices/{uid}`): live status and latest values, a chart of chosen attributes
// that grows as values arrive, its events, its messages, and its commands (sent from a form,
// their status following the device's replies live).

import * as api from '../api.js';
import {h, badge, confirmButton, dataTable, download, field, fmtValue, jsonField, levelBadge, link, options, pager, panel, showNotice, statusBadge, timeCell} from '../dom.js';
import {drawInto, lineChart, seriesCsv} from '../charts.js';
import {eventsTable} from './events.js';
import {messagesTable} from './messages.js';
import {childrenPanel, deviceActions} from './device-admin.js';

const MINUTE = 60 * 1000;
const HOUR = 60 * MINUTE;
/** Messages shown at a time (the pager goes further back). */
const MESSAGES_PAGE = 20;

/** Chart ranges: short ones show raw values; long ones averages over an interval. */
const RANGES = {
  '15m': {label: 'Last 15 minutes', span: 15 * MINUTE},
  '1h': {label: 'Last hour', span: HOUR},
  '6h': {label: 'Last 6 hours', span: 6 * HOUR},
  '24h': {label: 'Last 24 hours', span: 24 * HOUR},
  '7d': {label: 'Last 7 days', span: 7 * 24 * HOUR},
  custom: {label: 'From … to …'},
};

/** The averaging interval for a span of time (none: raw values), as the API names it and in ms. */
function intervalFor(span) {
  if (span <= HOUR) return null;
  if (span <= 6 * HOUR) return {name: '5m', ms: 5 * MINUTE};
  if (span <= 24 * HOUR) return {name: '15m', ms: 15 * MINUTE};
  if (span <= 7 * 24 * HOUR) return {name: '1h', ms: HOUR};
  return {name: '6h', ms: 6 * HOUR};
}

/** A `datetime-local` input's value for a time (the browser's time zone), to the second. */
function localInput(ms) {
  const date = new Date(ms - new Date(ms).getTimezoneOffset() * MINUTE);
  return date.toISOString().slice(0, 19);
}

/** How far a command's status has gone: a later answer never goes back to an earlier status. */
const COMMAND_STAGE = {queued: 0, sent: 1, acknowledged: 2, failed: 2, expired: 2, cancelled: 2};

/** A value as a chart point's number, or null when it cannot be drawn. */
function numeric(value) {
  if (typeof value === 'number') return Number.isFinite(value) ? value : null;
  if (typeof value === 'boolean') return value ? 1 : 0;
  return null;
}

/**
 * Inserts a point in time order, unless the same point is there already (a value both fetched
 * and heard live). Two values at the same time are both kept.
 */
function merge(points, point) {
  let i = points.length;
  while (i > 0 && points[i - 1].t > point.t) i -= 1;
  for (let j = i - 1; j >= 0 && points[j].t === point.t; j -= 1) {
    if (points[j].v === point.v) return;
  }
  points.splice(i, 0, point);
}

export default {
  title: 'Device',
  nav: 'devices',
  async mount(root, ctx, uid) {
    const base = `/api/devices/${encodeURIComponent(uid)}`;
    const latest = new Map(); // attribute -> {ts, value, level}

    // ---- header and latest values ----
    const title = h('h1', {}, uid);
    const statusHolder = h('span', {class: 'device-status'});
    const facts = h('p', {class: 'muted facts'});
    const latestBox = h('div', {class: 'table-wrap'});

    const actionsHolder = h('span', {class: 'device-actions-holder'});
    const childrenHolder = h('div');

    function showDevice(d) {
      title.replaceChildren(d.name && d.name !== d.uid ? `${d.uid} · ${d.name}` : d.uid);
      statusHolder.replaceChildren(statusBadge(d.status));
      facts.replaceChildren('Class ', d.class || '—', ' · last seen ', timeCell(d.last_seen), d.disabled ? ' · disabled' : '');
      actionsHolder.replaceChildren(deviceActions(ctx, d, (changed) => showDevice({...d, ...changed})));
    }

    function showLatest() {
      const rows = [...latest.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([attribute, v]) =>
        h('tr', {testid: 'latest-row', data: {attribute}},
          h('td', {}, attribute),
          h('td', {class: 'num', testid: 'latest-value', data: {attribute}}, fmtValue(v.value)),
          h('td', {}, v.level ? levelBadge(v.level) : ''),
          h('td', {}, timeCell(v.ts))));
      latestBox.replaceChildren(dataTable(['Attribute', 'Value', 'Level', 'Time'], rows, 'No values yet.', {testid: 'latest-table'}));
    }

    /** Keeps the newer of what is known and what arrives; false if nothing changed. */
    function keepLatest(v) {
      const known = latest.get(v.attribute);
      if (known && Date.parse(known.ts) > Date.parse(v.ts)) return false;
      latest.set(v.attribute, {ts: v.ts, value: v.value, level: v.level});
      return true;
    }

    // ---- chart ----
    const selected = new Set();
    let series = new Map(); // attribute -> points [{t, v}], oldest first
    let chartLoads = 0; // numbers chart loads: only the latest one's answer is drawn
    let loadingChart = false;
    let heldBack = []; // live values that arrived while a chart load was in flight
    let picked = false; // whether attributes were chosen for the chart yet
    let truncated = false; // the server sent only part of the range (too many raw values)
    const range = h('select', {testid: 'chart-range', 'aria-label': 'Range'},
      options(Object.entries(RANGES).map(([key, r]) => [key, r.label]), '1h'));
    // A custom range: typed in, or dragged across the chart.
    const customFrom = h('input', {type: 'datetime-local', step: 1, testid: 'chart-from', 'aria-label': 'From'});
    const customTo = h('input', {type: 'datetime-local', step: 1, testid: 'chart-to', 'aria-label': 'To'});
    const custom = h('span', {class: 'custom-range', hidden: true}, customFrom, ' – ', customTo);
    const csv = h('button', {type: 'button', class: 'secondary small', testid: 'chart-csv', onclick: downloadCsv}, 'Download CSV');
    const units = new Map(); // attribute -> unit, from the class's model
    const checks = h('div', {class: 'checks', testid: 'chart-attributes'});
    const chartBox = h('div', {class: 'chart-box'});
    const chartNote = h('p', {class: 'muted', hidden: true}, 'Only part of this range is drawn: it holds too many values. A longer range draws averages.');

    function chartable() {
      return [...latest.entries()].filter(([, v]) => numeric(v.value) !== null).map(([a]) => a).sort();
    }

    function showChecks() {
      const names = chartable();
      // The first time attributes are known, chart up to three of them.
      if (!picked && names.length) {
        names.slice(0, 3).forEach((a) => selected.add(a));
        picked = true;
      }
      checks.replaceChildren(...(names.length ? names.map((a) => h('label', {class: 'check'},
        h('input', {type: 'checkbox', value: a, testid: 'chart-attribute', checked: selected.has(a), onchange: (e) => {
          if (e.target.checked) selected.add(a);
          else selected.delete(a);
          ctx.task(loadChart);
        }}), a)) : [h('span', {class: 'muted'}, 'No numeric attribute yet.')]));
    }

    /** The time range drawn: a custom one as chosen, else the last span up to now. */
    function chartSpan() {
      if (range.value === 'custom') {
        const from = Date.parse(customFrom.value);
        const to = Date.parse(customTo.value);
        if (Number.isFinite(from) && Number.isFinite(to) && to > from) return {from, to};
        throw new api.ApiError('Choose a start and an end of the range, the end after the start.', 0, 'invalid');
      }
      // It ends now, or at the newest point if the server's clock is ahead of this one's.
      const newest = Math.max(0, ...[...series.values()].map((points) => points.at(-1)?.t ?? 0));
      const to = Math.max(Date.now(), newest);
      return {from: to - RANGES[range.value].span, to};
    }

    let shown = []; // the series drawn, for the CSV
    function drawChart() {
      const names = chartable().filter((a) => selected.has(a));
      const {from, to} = chartSpan();
      const interval = intervalFor(to - from);
      shown = names.map((a) => ({
        name: a,
        unit: units.get(a),
        interval: interval ? interval.ms : null,
        points: (series.get(a) || []).filter((p) => p.t >= from && p.t <= to),
      }));
      drawInto(chartBox, lineChart, {series: shown, from, to, onZoom: zoom, empty: shown.length ? 'No values in this range' : 'Tick an attribute to chart it'});
      chartNote.hidden = !truncated;
    }

    /** The chart was dragged across: that stretch becomes the custom range. */
    function zoom(from, to) {
      range.value = 'custom';
      // Whole seconds, rounded outwards: what was dragged over stays in.
      customFrom.value = localInput(Math.floor(from / 1000) * 1000);
      customTo.value = localInput(Math.ceil(to / 1000) * 1000);
      custom.hidden = false;
      ctx.task(loadChart);
    }

    function downloadCsv() {
      download(`${uid}-values.csv`, seriesCsv(shown), 'text/csv');
    }

    function addPoint(v) {
      const value = numeric(v.value);
      if (value === null || !selected.has(v.attribute)) return;
      if (!series.has(v.attribute)) series.set(v.attribute, []);
      merge(series.get(v.attribute), {t: Date.parse(v.ts), v: value});
    }

    /** The chosen attributes' points over the range, and whether the server cut any series short. */
    async function fetchSeries() {
      const attributes = chartable().filter((a) => selected.has(a));
      const fetched = new Map();
      if (!attributes.length) return {fetched, cut: false};
      const {from, to} = chartSpan();
      const interval = intervalFor(to - from);
      const answer = await api.get(`${base}/values`, {
        attributes: attributes.join(','),
        from: new Date(from).toISOString(),
        to: new Date(to).toISOString(),
        interval: interval ? interval.name : undefined,
        aggregate: interval ? 'avg' : undefined,
      });
      for (const s of answer.series) {
        fetched.set(s.attribute, s.points.map((p) => ({t: Date.parse(p.ts), v: numeric(p.value)})).filter((p) => p.v !== null));
      }
      return {fetched, cut: answer.series.some((s) => s.truncated)};
    }

    async function loadChart() {
      const mine = ++chartLoads;
      loadingChart = true;
      heldBack = [];
      let answer;
      try {
        answer = await fetchSeries();
      } finally {
        if (mine === chartLoads) loadingChart = false;
      }
      if (!ctx.active || mine !== chartLoads) return;
      series = answer.fetched;
      truncated = answer.cut;
      heldBack.forEach(addPoint);
      heldBack = [];
      drawChart();
    }
    range.addEventListener('change', () => {
      custom.hidden = range.value !== 'custom';
      if (range.value === 'custom' && !customFrom.value) {
        // Start from the last hour, to be changed.
        customTo.value = localInput(Date.now());
        customFrom.value = localInput(Date.now() - HOUR);
      }
      ctx.task(loadChart);
    });
    for (const input of [customFrom, customTo]) input.addEventListener('change', () => ctx.task(loadChart));

    // ---- commands ----
    const liveStage = new Map(); // command id -> status last heard live
    const commandName = h('input', {name: 'name', required: true, testid: 'command-name', placeholder: 'e.g. reboot'});
    const parameters = h('textarea', {name: 'parameters', rows: 3, testid: 'command-parameters', spellcheck: 'false'}, '{}');
    const commandForm = h('form', {class: 'stack-form', testid: 'command-form'},
      field('Command', commandName),
      field('Parameters (JSON object)', parameters),
      h('button', {type: 'submit', testid: 'command-send'}, 'Send'));
    const commandsBox = h('div', {class: 'table-wrap'});

    function commandStatus(status) {
      return badge(status, `cmd-${status}`);
    }

    function commandRow(c) {
      const heard = liveStage.get(c.id);
      const status = heard && COMMAND_STAGE[heard] > (COMMAND_STAGE[c.status] ?? -1) ? heard : c.status;
      return h('tr', {testid: 'command-row', data: {id: c.id}},
        h('td', {}, c.name),
        h('td', {}, h('code', {}, JSON.stringify(c.parameters ?? {}))),
        h('td', {testid: 'command-status', data: {status}}, commandStatus(status)),
        h('td', {}, timeCell(c.created_at)),
        h('td', {class: 'error-text'}, c.error || ''),
        h('td', {class: 'actions'}, status === 'queued' && api.can('commands', 'manage')
          ? confirmButton('Cancel', `Cancel command ${c.name}? It is not sent then.`, () => ctx.task(async () => {
            await api.post(`/api/commands/${c.id}/cancel`);
            showNotice(`Command ${c.name} cancelled.`);
            await loadCommands();
          }), {testid: 'command-cancel'})
          : null));
    }

    let commandLoads = 0;
    async function loadCommands() {
      const mine = ++commandLoads;
      const page = await api.get('/api/commands', {device: uid, limit: 20});
      if (!ctx.active || mine !== commandLoads) return;
      commandsBox.replaceChildren(dataTable(['Command', 'Parameters', 'Status', 'Created', 'Error', ''], page.items.map(commandRow), 'No commands yet.', {testid: 'commands-table'}));
    }

    ctx.form(commandForm, async () => {
      const params = jsonField(parameters.value, 'parameters', {});
      if (params === null || typeof params !== 'object' || Array.isArray(params)) {
        throw new api.ApiError('The parameters must be a JSON object, e.g. {"delay": 5}.', 0, 'invalid', 'parameters');
      }
      const sent = await api.post(`${base}/commands`, {name: commandName.value.trim(), parameters: params});
      showNotice(`Command ${sent.name} queued.`);
      await loadCommands();
    });

    // ---- events and messages ----
    const eventsBox = h('div', {class: 'table-wrap'});
    let eventLoads = 0;
    async function loadEvents() {
      const mine = ++eventLoads;
      const page = await api.get('/api/events', {device: uid, limit: 20});
      if (!ctx.active || mine !== eventLoads) return;
      eventsBox.replaceChildren(eventsTable(ctx, page.items, {withDevice: false}));
    }

    const messagesBox = h('div', {class: 'table-wrap'});
    const messagePages = h('div', {class: 'pager'});
    let messageLoads = 0;
    let messageOffset = 0;
    async function loadMessages() {
      const mine = ++messageLoads;
      const page = await api.get('/api/messages', {device: uid, limit: MESSAGES_PAGE, offset: messageOffset});
      if (!ctx.active || mine !== messageLoads) return;
      messagesBox.replaceChildren(messagesTable(page.items));
      messagePages.replaceChildren(...pager({offset: messageOffset, limit: MESSAGES_PAGE, total: page.total, shown: page.items.length, noun: 'messages', prefix: 'messages'}, (offset) => {
        messageOffset = offset;
        ctx.task(loadMessages);
      }));
    }

    root.append(
      h('p', {class: 'crumbs'}, link(['devices'], 'Devices'), ' / ', uid),
      h('div', {class: 'device-head'}, title, statusHolder, actionsHolder),
      facts,
      childrenHolder,
      h('div', {class: 'columns-2 wide-right'},
        panel('Latest values', latestBox),
        panel('Chart', h('div', {class: 'toolbar'}, range, custom, checks, csv), chartBox, chartNote)),
      h('div', {class: 'columns-2 wide-right'},
        panel('Send a command', commandForm),
        panel('Commands', commandsBox)),
      panel('Events', eventsBox),
      panel('Messages', messagesBox, messagePages),
    );

    // ---- live updates ----
    const messagesSoon = ctx.debounce(loadMessages, 1000);
    ctx.live('value', (v) => {
      if (v.device !== uid) return;
      const isNew = !latest.has(v.attribute);
      if (keepLatest(v)) showLatest();
      if (isNew) showChecks();
      if (loadingChart) heldBack.push(v);
      else {
        addPoint(v);
        drawChart();
      }
      messagesSoon();
    });
    ctx.live('device', (news) => {
      if (news.device !== uid) return;
      statusHolder.replaceChildren(statusBadge(news.status));
    });
    const commandsSoon = ctx.debounce(loadCommands, 300);
    ctx.live('command', (news) => {
      if (news.device !== uid) return;
      const known = liveStage.get(news.id);
      if (!known || COMMAND_STAGE[news.status] >= COMMAND_STAGE[known]) liveStage.set(news.id, news.status);
      const cell = commandsBox.querySelector(`tr[data-id="${CSS.escape(String(news.id))}"] [data-testid="command-status"]`);
      if (!cell) commandsSoon();
      else if (COMMAND_STAGE[liveStage.get(news.id)] >= (COMMAND_STAGE[cell.dataset.status] ?? -1)) {
        cell.dataset.status = liveStage.get(news.id);
        cell.replaceChildren(commandStatus(liveStage.get(news.id)));
      }
    });
    const eventsSoon = ctx.debounce(loadEvents, 300);
    ctx.live('event', (news) => {
      if (news.device === uid) eventsSoon();
    });

    /** The units of the class's attributes, for the chart's axes (none if the model is not
     * to be read). */
    async function loadUnits(cls) {
      if (!cls || !api.can('classes') || units.size) return;
      const model = await api.get(`/api/classes/${encodeURIComponent(cls)}/model`);
      for (const a of model.attributes || []) if (a.unit) units.set(a.name, a.unit);
    }

    async function loadAll() {
      const d = await api.get(base);
      if (!ctx.active) return;
      showDevice(d);
      await loadUnits(d.class);
      for (const v of d.latest || []) keepLatest(v);
      showLatest();
      showChecks();
      const children = async () => childrenHolder.replaceChildren(...[await childrenPanel(uid)].filter(Boolean));
      await Promise.all([loadChart(), loadCommands(), loadEvents(), loadMessages(), children()]);
    }
    ctx.live('reconnected', ctx.debounce(loadAll, 300));
    await loadAll();
  },
};
