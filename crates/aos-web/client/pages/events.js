// Events (alarms): open ones or all, acknowledged and cleared by hand, fetched again when a new
// event is raised. `eventsTable` is shared with the device page.

import * as api from '../api.js';
import {h, dataTable, fmtTime, levelBadge, link, options, panel, timeCell} from '../dom.js';

function stateText(ev) {
  const parts = [];
  if (ev.acknowledged_at) parts.push(`acknowledged by ${ev.acknowledged_by || 'someone'}`);
  if (ev.cleared_at) parts.push('cleared');
  return parts.length ? parts.join(', ') : 'open';
}

/**
 * A table of events with their acknowledge and clear buttons; a button's answer (the event as
 * it now is) replaces the row.
 */
export function eventsTable(ctx, items, {withDevice = true} = {}) {
  function row(ev) {
    const act = (verb) => () => ctx.task(async () => {
      const updated = await api.post(`/api/events/${encodeURIComponent(ev.id)}/${verb}`);
      tr.replaceWith(row(updated));
    });
    const state = stateText(ev);
    const when = ev.cleared_at || ev.acknowledged_at;
    const tr = h('tr', {testid: 'event-row', data: {id: ev.id, device: ev.device, state: ev.cleared_at ? 'cleared' : ev.acknowledged_at ? 'acknowledged' : 'open'}},
      h('td', {}, levelBadge(ev.level)),
      withDevice ? h('td', {}, link(['devices', ev.device], ev.device)) : null,
      h('td', {}, ev.attribute || ''),
      h('td', {}, ev.message || ''),
      h('td', {}, timeCell(ev.raised_at)),
      h('td', {testid: 'event-state', title: when ? fmtTime(when) : null}, state),
      h('td', {class: 'actions'},
        h('button', {type: 'button', class: 'small', testid: 'event-acknowledge', disabled: Boolean(ev.acknowledged_at), onclick: act('acknowledge')}, 'Acknowledge'),
        h('button', {type: 'button', class: 'small secondary', testid: 'event-clear', disabled: Boolean(ev.cleared_at), onclick: act('clear')}, 'Clear')));
    return tr;
  }
  const headers = ['Level', withDevice ? 'Device' : null, 'Attribute', 'Message', 'Raised', 'State', ''].filter((x) => x !== null);
  return dataTable(headers, items.map(row), 'No events.', {testid: 'events-table'});
}

export default {
  title: 'Events',
  nav: 'events',
  async mount(root, ctx) {
    const filter = h('select', {testid: 'event-filter', 'aria-label': 'Which events'},
      options([['open', 'Open events'], ['all', 'All events']], 'open'));
    const list = h('div', {class: 'table-wrap'});
    root.append(h('h1', {}, 'Events'), panel(null, h('div', {class: 'toolbar'}, filter), list));

    let loads = 0;
    async function load() {
      const mine = ++loads;
      const page = await api.get('/api/events', {open: filter.value === 'open' ? 'true' : undefined, limit: 200});
      if (!ctx.active || mine !== loads) return;
      list.replaceChildren(eventsTable(ctx, page.items));
    }

    filter.addEventListener('change', () => ctx.task(load));
    const reload = ctx.debounce(load, 300);
    ctx.live('event', reload);
    ctx.live('reconnected', reload);
    await load();
  },
};
