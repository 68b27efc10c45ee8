// Operations: the message log of the tenant (filtered, in pages), the audit log (by user, action
// and time) and, for system administrators, the dead letters of the work queues (looked at,
// replayed or dropped).

import * as api from '../api.js';
import {h, badge, confirmButton, dataTable, field, filteredList, instant, options, panel, showNotice, timeCell} from '../dom.js';
import {messagesTable} from './messages.js';

const PAGE = 50;

function auditTable(items) {
  const rows = items.map((a) => h('tr', {testid: 'audit-row', data: {id: a.id, action: a.action}},
    h('td', {}, timeCell(a.at)),
    h('td', {}, a.actor),
    h('td', {}, h('code', {}, a.action)),
    h('td', {}, [a.object_kind, a.object_id].filter(Boolean).join(' ')),
    h('td', {}, a.client_addr || ''),
    h('td', {}, a.success ? badge('done', 'normal') : badge('refused', 'faulty'))));
  return dataTable(['Time', 'Who', 'Action', 'Object', 'From', 'Outcome'], rows, 'Nothing recorded.', {testid: 'audit-table'});
}

/** The dead letters of one queue, with replay and drop for those ticked. */
function deadLetters(ctx) {
  const queue = h('select', {testid: 'dead-queue'}, options([['acquisition', 'Device messages (acquisition)'], ['workflows', 'Workflow runs (workflows)']], 'acquisition'));
  const box = h('div', {class: 'table-wrap'});
  const chosen = () => [...box.querySelectorAll('input[data-id]:checked')].map((c) => Number(c.dataset.id));
  async function show() {
    const page = await api.get(`/api/queues/${queue.value}/dead`, {limit: PAGE});
    if (!ctx.active) return;
    const rows = page.items.map((d) => h('tr', {testid: 'dead-row', data: {id: d.id}},
      h('td', {}, h('input', {type: 'checkbox', data: {id: d.id}, 'aria-label': `Choose dead letter ${d.id}`})),
      h('td', {}, String(d.id)),
      h('td', {class: 'num'}, String(d.attempts)),
      h('td', {}, (d.messages || []).length
        ? d.messages.map((m) => h('div', {}, h('code', {}, m.topic), ' ', m.device || '', ' ', timeCell(m.received_at)))
        : h('code', {}, d.payload ? d.payload.text || d.payload.hex || '' : ''))));
    box.replaceChildren(
      h('p', {class: 'muted'}, `${page.total} dead letter${page.total === 1 ? '' : 's'}${page.total > PAGE ? `, the oldest ${PAGE} shown` : ''}.`),
      dataTable(['', 'Id', 'Attempts', 'What it carries'], rows, 'No dead letters.', {testid: 'dead-table'}));
  }
  const act = (what) => ctx.task(async () => {
    const ids = chosen();
    if (!ids.length) throw new Error('Tick the dead letters to act on first.');
    const answer = await api.post(`/api/queues/${queue.value}/dead/${what}`, {ids});
    showNotice(what === 'replay' ? `${answer.replayed} dead letter(s) went back to the queue.` : `${answer.dropped} dead letter(s) dropped.`);
    await show();
  });
  queue.addEventListener('change', () => ctx.task(show));
  const element = h('div', {},
    h('div', {class: 'toolbar'}, field('Queue', queue),
      h('button', {type: 'button', class: 'secondary', testid: 'dead-replay', onclick: () => act('replay')}, 'Replay ticked'),
      confirmButton('Drop ticked', 'Drop the ticked dead letters for good?', () => act('drop'), {testid: 'dead-drop'})),
    box);
  return {element, show};
}

export default {
  title: 'Operations',
  nav: 'operations',
  async mount(root, ctx) {
    const platform = api.currentUser().tenant === null;
    root.append(h('h1', {}, 'Operations'));
    const shown = [];

    if (api.can('messages')) {
      const device = h('input', {name: 'device', testid: 'messages-device', placeholder: 'any device'});
      const status = h('select', {name: 'status', testid: 'messages-status'}, options([['', 'any'], ['processed', 'processed'], ['failed', 'failed'], ['archived', 'archived']], ''));
      const from = h('input', {name: 'from', type: 'datetime-local', testid: 'messages-from'});
      const to = h('input', {name: 'to', type: 'datetime-local', testid: 'messages-to'});
      const list = filteredList(ctx, {
        testid: 'messages', noun: 'messages',
        fields: [['Device', device], ['Status', status], ['From', from], ['To', to]],
        query: () => ({device: device.value.trim() || undefined, status: status.value || undefined, from: instant(from), to: instant(to)}),
        load: (query) => api.get('/api/messages', query),
        draw: (items) => messagesTable(items, {withDevice: true}),
      });
      root.append(panel('Message log', list.element));
      shown.push(list.show());
    }

    if (api.can('audit') || platform) {
      const user = h('input', {name: 'user', testid: 'audit-user', placeholder: 'any user (login)'});
      const action = h('input', {name: 'action', testid: 'audit-action', placeholder: 'e.g. user.create, or user.'});
      const from = h('input', {name: 'from', type: 'datetime-local', testid: 'audit-from'});
      const to = h('input', {name: 'to', type: 'datetime-local', testid: 'audit-to'});
      // A system administrator reads the platform's own log, or the tenant's.
      const whose = h('select', {testid: 'audit-whose'}, options([['tenant', 'the tenant'], ['platform', 'the platform']], 'tenant'));
      const fields = [['User', user], ['Action', action], ['From', from], ['To', to]];
      if (platform) fields.unshift(['Log of', whose]);
      const list = filteredList(ctx, {
        testid: 'audit', noun: 'events',
        fields,
        query: () => ({user: user.value.trim() || undefined, action: action.value.trim() || undefined, from: instant(from), to: instant(to)}),
        // The platform's log is the one without a tenant: the request must not name one.
        load: (query) => (platform && whose.value === 'platform' ? api.getPlatform('/api/audit', query) : api.get('/api/audit', query)),
        draw: auditTable,
      });
      root.append(panel('Audit log', list.element));
      shown.push(list.show());
    }

    if (platform) {
      const dead = deadLetters(ctx);
      root.append(panel('Dead letters', dead.element));
      shown.push(dead.show());
    }
    await Promise.all(shown);
  },
};
