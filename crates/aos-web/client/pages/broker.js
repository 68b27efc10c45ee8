// The broker view: the MQTT clients the broker nodes hold (address, protocol, subscriptions,
// queued messages), disconnected from here; the retained messages, browsed by topic filter and
// deleted; and, for system administrators, each broker node's traffic, refreshed every five
// seconds. A tenant's users see their tenant's clients; a system administrator every tenant's,
// or the tenant picked.

import * as api from '../api.js';
import {h, badge, confirmButton, dataTable, filteredList, options, panel, showNotice, timeCell} from '../dom.js';

/** How deep the broker view pages (each broker node sends its first `offset + limit`). */
const DEEPEST = 500;

function whoCell(c) {
  return h('span', {}, badge(c.kind, c.kind === 'device' ? 'online' : 'normal'), ' ', c.name || '', c.tenant_name ? h('span', {class: 'muted'}, ` · ${c.tenant_name}`) : '');
}

function subscriptionsCell(c) {
  const shown = c.subscriptions.map((s) => h('div', {}, h('code', {}, s.filter), h('span', {class: 'muted'}, ` QoS ${s.qos}`)));
  const more = c.subscription_count - c.subscriptions.length;
  if (more > 0) shown.push(h('div', {class: 'muted'}, `and ${more} more`));
  return shown.length ? shown : h('span', {class: 'muted'}, 'none');
}

function silentNote(silent) {
  return silent && silent.length
    ? h('p', {class: 'banner banner-warning', role: 'status', testid: 'broker-silent'}, `Broker nodes ${silent.join(', ')} did not answer in time: what they hold is missing here.`)
    : null;
}

/** A list of the broker view: the nodes that did not answer, the table, and how deep it pages. */
function brokerList(ctx, {path, draw, ...list}) {
  return filteredList(ctx, {
    ...list,
    deepest: DEEPEST,
    load: (query) => api.get(path, query),
    draw: (items, page, reload) => [silentNote(page.silent), draw(items, reload),
      page.total > DEEPEST ? h('p', {class: 'muted'}, `Only the first ${DEEPEST} of ${page.total} can be paged through: narrow the list.`) : null].filter(Boolean),
  });
}

function trafficTable(nodes) {
  const rate = (n) => (n >= 100 ? n.toFixed(0) : n.toFixed(1));
  const bytes = (n) => (n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB/s` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} kB/s` : `${n.toFixed(0)} B/s`);
  const rows = nodes.map((n) => h('tr', {testid: 'traffic-row', data: {node: n.node}},
    h('td', {}, n.node),
    h('td', {class: 'num', testid: 'traffic-connections'}, String(n.connections)),
    h('td', {class: 'num'}, String(n.sessions)),
    h('td', {class: 'num'}, String(n.retained)),
    h('td', {class: 'num', testid: 'traffic-in'}, rate(n.messages_in_per_second)),
    h('td', {class: 'num', testid: 'traffic-out'}, rate(n.messages_out_per_second)),
    h('td', {class: 'num'}, `${bytes(n.bytes_in_per_second)} / ${bytes(n.bytes_out_per_second)}`)));
  return dataTable(['Node', 'Connections', 'Sessions', 'Retained', 'In msg/s', 'Out msg/s', 'Bytes in / out'], rows, 'No broker node answered.', {testid: 'traffic-table'});
}

export default {
  title: 'Broker',
  nav: 'broker',
  async mount(root, ctx) {
    const platform = api.currentUser().tenant === null;
    const kind = platform ? 'brokers' : 'clients';
    const mayDisconnect = api.can(kind, 'manage');
    const mayDelete = api.can(kind, 'full');
    root.append(h('h1', {}, 'Broker'));
    const shown = [];

    // A system administrator looks at every tenant's clients, or at the tenant picked (the
    // broker view's paths are the platform's: the tenant is named only when chosen here).
    const whose = () => {
      const select = h('select', {testid: 'broker-whose'}, options([['every', 'every tenant'], ['tenant', `the tenant (${api.tenant() || 'none picked'})`]], 'every'));
      return {select, tenant: () => (platform && select.value === 'tenant' && api.tenant()) || undefined};
    };

    if (platform) {
      const box = h('div', {class: 'table-wrap'});
      const refresh = async () => {
        const view = await api.getPlatform('/api/broker/traffic');
        if (!ctx.active) return;
        box.replaceChildren(...[silentNote(view.silent), trafficTable(view.nodes)].filter(Boolean));
      };
      root.append(panel('Traffic', h('p', {class: 'muted'}, 'Messages per second over the last five seconds; refreshed every five seconds.'), box));
      shown.push(refresh());
      ctx.every(5000, refresh);
    }

    const search = h('input', {name: 'search', testid: 'clients-search', placeholder: 'client id, device, user'});
    const state = h('select', {name: 'connected', testid: 'clients-state'}, options([['', 'any'], ['true', 'connected'], ['false', 'offline sessions']], ''));
    const clientsWhose = whose();
    const clientFields = [['Search', search], ['State', state]];
    if (platform) clientFields.unshift(['Clients of', clientsWhose.select]);
    const clients = brokerList(ctx, {
      testid: 'clients', noun: 'clients', path: '/api/broker/clients',
      fields: clientFields,
      query: () => ({search: search.value.trim() || undefined, connected: state.value || undefined, tenant: clientsWhose.tenant()}),
      draw: (items, reload) => dataTable(['Client id', 'Who', 'Node', 'Address', 'MQTT', 'Connected since', 'Subscriptions', 'Queued', 'In flight', ''],
        items.map((c) => h('tr', {testid: 'client-row', data: {client: c.client_id, connected: String(c.connected)}},
          h('td', {}, h('code', {}, c.client_id)),
          h('td', {}, whoCell(c)),
          h('td', {}, c.node),
          h('td', {}, c.connected ? c.address || '?' : badge('offline', 'offline')),
          h('td', {}, c.protocol || ''),
          h('td', {}, c.connected_at ? timeCell(c.connected_at) : ''),
          h('td', {}, subscriptionsCell(c)),
          h('td', {class: 'num', testid: 'client-queued'}, String(c.queued)),
          h('td', {class: 'num'}, String(c.inflight)),
          h('td', {}, c.connected && mayDisconnect
            ? confirmButton('Disconnect', `Close the connection of ${c.client_id}? It may connect again; its will goes out.`, () => ctx.task(async () => {
              await api.post('/api/broker/clients/disconnect', {client_id: c.client_id, tenant: clientsWhose.tenant()});
              showNotice(`${c.client_id} was disconnected.`);
              await reload();
            }), {testid: 'client-disconnect'})
            : ''))),
        'No clients.', {testid: 'clients-table'}),
    });
    root.append(panel('Clients', clients.element));
    shown.push(clients.show());

    const filter = h('input', {name: 'filter', testid: 'retained-filter', value: '#', placeholder: 'a topic filter, e.g. aos/+/status'});
    const retainedWhose = whose();
    const retainedFields = [['Topic filter', filter]];
    if (platform) retainedFields.unshift(['Messages of', retainedWhose.select]);
    const retained = brokerList(ctx, {
      testid: 'retained', noun: 'retained messages', path: '/api/broker/retained',
      fields: retainedFields,
      query: () => ({filter: filter.value.trim() || '#', tenant: retainedWhose.tenant()}),
      draw: (items, reload) => dataTable(['Topic', 'Tenant', 'QoS', 'Size', 'Payload', 'Expires in', ''],
        items.map((m) => h('tr', {testid: 'retained-row', data: {topic: m.topic}},
          h('td', {}, h('code', {}, m.topic)),
          h('td', {}, m.tenant_name || h('span', {class: 'muted'}, 'platform')),
          h('td', {class: 'num'}, String(m.qos)),
          h('td', {class: 'num'}, `${m.size} B`),
          h('td', {class: 'payload'}, m.text !== null && m.text !== undefined ? h('code', {}, m.text) : h('span', {class: 'muted'}, 'binary')),
          h('td', {}, m.expires_in === null || m.expires_in === undefined ? 'never' : `${m.expires_in} s`),
          h('td', {}, mayDelete
            ? confirmButton('Delete', `Delete the retained message of ${m.topic}? New subscribers will no longer receive it.`, () => ctx.task(async () => {
              await api.del('/api/broker/retained', {topic: m.topic, tenant: retainedWhose.tenant()});
              showNotice(`The retained message of ${m.topic} is gone.`);
              await reload();
            }), {testid: 'retained-delete'})
            : ''))),
        'No retained messages.', {testid: 'retained-table'}),
    });
    root.append(panel('Retained messages', retained.element));
    shown.push(retained.show());
    await Promise.all(shown);
  },
};
