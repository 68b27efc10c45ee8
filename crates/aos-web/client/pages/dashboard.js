// Dashboard: KPI cards, the online share of devices, messages per minute over the last hour and
// open events by level. Refreshed on live device and event news (debounced) and every 30 s.

import * as api from '../api.js';
import {h, panel} from '../dom.js';
import {columnChart, drawInto, gauge, kpiCard, lineChart} from '../charts.js';

const LEVEL_ORDER = ['faulty', 'warning', 'normal'];

export default {
  title: 'Dashboard',
  nav: 'dashboard',
  async mount(root, ctx) {
    const cards = h('div', {class: 'kpis'});
    const gaugeBox = h('div', {class: 'chart-box'});
    const lineBox = h('div', {class: 'chart-box'});
    const columnBox = h('div', {class: 'chart-box'});
    root.append(
      h('h1', {}, 'Dashboard'),
      cards,
      panel('Messages per minute, last hour', lineBox),
      h('div', {class: 'columns-2'},
        panel('Devices online', gaugeBox),
        panel('Open events by level', columnBox)),
    );

    async function load() {
      const k = await api.get('/api/kpis');
      if (!ctx.active) return;
      const failed = k.messages.failed_last_hour;
      cards.replaceChildren(
        kpiCard({key: 'devices-total', label: 'Devices', value: k.devices.total}),
        kpiCard({key: 'devices-online', label: 'Online', value: k.devices.online, tone: 'good'}),
        kpiCard({key: 'devices-offline', label: 'Offline', value: k.devices.offline}),
        kpiCard({key: 'events-open', label: 'Open events', value: k.events.open, tone: k.events.open ? 'bad' : null,
          hint: `${k.events.unacknowledged} not acknowledged`}),
        kpiCard({key: 'messages-last-hour', label: 'Messages, last hour', value: k.messages.last_hour,
          tone: failed ? 'warn' : null, hint: failed ? `${failed} failed` : null}),
        kpiCard({key: 'commands-pending', label: 'Pending commands', value: k.commands.pending}),
      );
      drawInto(gaugeBox, gauge, {value: k.devices.online, max: k.devices.total, label: 'share of devices online', width: 260});
      const now = Date.now();
      drawInto(lineBox, lineChart, {
        series: [{name: 'messages', points: k.messages.per_minute.map((p) => ({t: Date.parse(p.ts), v: p.count}))}],
        from: now - 3600 * 1000,
        to: now,
        height: 240,
        testid: 'messages-chart',
        empty: 'No messages in the last hour',
      });
      const byLevel = {faulty: 0, warning: 0, ...k.events.by_level};
      const levels = Object.keys(byLevel).sort((a, b) => rank(a) - rank(b));
      drawInto(columnBox, columnChart, {
        bars: levels.map((level) => ({label: level, value: byLevel[level], cls: `lv-${level}`})),
        height: 200,
        testid: 'events-chart',
      });
    }

    const soon = ctx.debounce(load, 1000);
    ctx.live('device', soon);
    ctx.live('event', soon);
    ctx.live('reconnected', soon);
    ctx.every(30000, load);
    await load();
  },
};

function rank(level) {
  const i = LEVEL_ORDER.indexOf(level);
  return i < 0 ? LEVEL_ORDER.length : i;
}
