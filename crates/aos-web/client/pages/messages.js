// The message log's table, shown on a device's page and on the operations page.

import {h, badge, dataTable, link, timeCell} from '../dom.js';

const STATUS_BADGE = {failed: 'faulty', processed: 'normal'};

/** A table of messages from the log; `withDevice` adds the device column. */
export function messagesTable(items, {withDevice = false} = {}) {
  const rows = items.map((m) => h('tr', {testid: 'message-row', data: {id: m.id}},
    h('td', {}, timeCell(m.received_at)),
    withDevice ? h('td', {}, m.device ? link(['devices', m.device], m.device) : h('span', {class: 'muted'}, 'unknown')) : null,
    h('td', {}, h('code', {}, m.topic || '')),
    h('td', {}, badge(m.status, STATUS_BADGE[m.status] || 'offline')),
    h('td', {class: 'payload'}, h('code', {title: m.payload || ''}, (m.payload || '').length > 120 ? `${m.payload.slice(0, 120)}…` : m.payload || m.payload_hex || '')),
    h('td', {class: 'error-text'}, m.error || '')));
  const headers = ['Received', withDevice ? 'Device' : null, 'Topic', 'Status', 'Payload', 'Error'].filter(Boolean);
  return dataTable(headers, rows, 'No messages.', {testid: 'messages-table'});
}
