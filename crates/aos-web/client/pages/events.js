// Events (alarms): one per device, attribute and level, counted again while it stays open;
// filtered by level, device, state and time; acknowledged and cleared by hand (the buttons only
// where they apply), fetched again when an alarm is raised or counted. `eventsTable` is shared
// with the device page.

import * as api from '../api.js';
import {h, dataTable, field, fmtTime, instant, levelBadge, link, options, pager, panel, timeCell} from '../dom.js';

const PAGE = 50;

function stateOf(ev) {
  if (ev.cleared_at) return 'cleared';
  return ev.acknowledged_at ? 'acknowledged' : 'open';
}

function stateCell(ev) {
  const state = stateOf(ev);
  const lines = [h('div', {testid: 'event-state'}, state)];
  if (ev.acknowledged_at) lines.push(h('div', {class: 'muted'}, `by ${ev.acknowledged_by || 'someone'} `, timeCell(ev.acknowledged_at)));
  if (ev.cleared_at) lines.push(h('div', {class: 'muted', testid: 'event-cleared'}, 'cleared ', timeCell(ev.cleared_at)));
  return h('td', {}, lines);
}

/**
 * A table of alarms with the actions that apply to each (acknowledge an unacknowledged open
 * one, clear an open one); an action's answer updates the row.
 */
export function eventsTable(ctx, items, {withDevice = true} = {}) {
  const may = api.can('events', 'manage');
  function row(ev) {
    const act = (verb) => () => ctx.task(async () => {
      const settled = await api.post(`/api/events/${encodeURIComponent(ev.id)}/${verb}`);
      tr.replaceWith(row({...ev, ...settled}));
    });
    const actions = [];
    if (may && !ev.acknowledged_at && !ev.cleared_at) {
      actions.push(h('button', {type: 'button', class: 'small', testid: 'event-acknowledge', onclick: act('acknowledge')}, 'Acknowledge'));
    }
    if (may && !ev.cleared_at) {
      actions.push(h('button', {type: 'button', class: 'small secondary', testid: 'event-clear', onclick: act('clear')}, 'Clear'));
    }
    const last = ev.last_at || ev.raised_at;
    const tr = h('tr', {testid: 'event-row', data: {id: ev.id, device: ev.device, level: ev.level, state: stateOf(ev), count: ev.count ?? 1}},
      h('td', {}, levelBadge(ev.level)),
      withDevice ? h('td', {}, link(['devices', ev.device], ev.device)) : null,
      h('td', {}, ev.attribute || ''),
      h('td', {}, ev.message || ''),
      h('td', {class: 'num', testid: 'event-count', title: 'Times the value crossed into this level while the alarm was open'}, String(ev.count ?? 1)),
      h('td', {}, timeCell(ev.raised_at)),
      h('td', {title: last ? fmtTime(last) : null}, timeCell(last)),
      stateCell(ev),
      h('td', {class: 'actions'}, actions));
    return tr;
  }
  const headers = ['Level', withDevice ? 'Device' : null, 'Attribute', 'Message', 'Count', 'First', 'Last', 'State', ''].filter((x) => x !== null);
  return dataTable(headers, items.map(row), 'No alarms.', {testid: 'events-table'});
}

/** The API's filters for a state chosen in the page. */
const STATES = {
  open: {open: 'true'},
  unacknowledged: {open: 'true', acknowledged: 'false'},
  acknowledged: {acknowledged: 'true'},
  cleared: {open: 'false'},
  all: {},
};

export default {
  title: 'Events',
  nav: 'events',
  async mount(root, ctx) {
    const state = h('select', {name: 'state', testid: 'event-filter', 'aria-label': 'Which alarms'},
      options([['open', 'Open'], ['unacknowledged', 'Open, not acknowledged'], ['acknowledged', 'Acknowledged'], ['cleared', 'Cleared'], ['all', 'All']], 'open'));
    const level = h('select', {name: 'level', testid: 'event-level'}, options([['', 'any'], ['warning', 'warning'], ['faulty', 'faulty']], ''));
    const device = h('input', {name: 'device', testid: 'event-device', placeholder: 'any device'});
    const from = h('input', {name: 'from', type: 'datetime-local', testid: 'event-from'});
    const to = h('input', {name: 'to', type: 'datetime-local', testid: 'event-to'});
    const form = h('form', {class: 'inline-form toolbar', testid: 'event-filters'},
      field('State', state), field('Level', level), field('Device', device), field('Last crossing from', from), field('Raised before', to),
      h('button', {type: 'submit', class: 'secondary', testid: 'event-apply'}, 'Show'));
    const list = h('div', {class: 'table-wrap'});
    const pages = h('div', {class: 'pager'});
    root.append(h('h1', {}, 'Events'), panel(null, form, list, pages));

    let loads = 0;
    let offset = 0;
    async function load() {
      const mine = ++loads;
      const query = {
        ...STATES[state.value],
        level: level.value || undefined,
        device: device.value.trim() || undefined,
        from: instant(from),
        to: instant(to),
        sort: '-last_at',
        limit: PAGE,
        offset,
      };
      const page = await api.get('/api/events', query);
      if (!ctx.active || mine !== loads) return;
      list.replaceChildren(eventsTable(ctx, page.items));
      pages.replaceChildren(...pager({offset, limit: PAGE, total: page.total, shown: page.items.length, noun: 'alarms', prefix: 'events'}, (to) => {
        offset = to;
        ctx.task(load);
      }));
    }

    ctx.form(form, async () => {
      offset = 0;
      await load();
    });
    state.addEventListener('change', () => {
      offset = 0;
      ctx.task(load);
    });
    const reload = ctx.debounce(load, 300);
    ctx.live('event', reload);
    ctx.live('reconnected', reload);
    await load();
  },
};
