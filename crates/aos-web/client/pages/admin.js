// Platform administration (system administrators): the nodes of the deployment, the roles each
// one has compiled in and runs, their health and their listeners. Read-only: a node's roles are
// chosen by its configuration.

import * as api from '../api.js';
import {h, badge, dataTable, panel, timeCell} from '../dom.js';

const HEALTH_BADGE = {healthy: 'normal', degraded: 'warning'};

function roleChips(node) {
  const enabled = new Set(node.enabled_roles || []);
  return h('div', {class: 'chips'}, (node.compiled_roles || []).map((role) =>
    h('span', {class: `chip ${enabled.has(role) ? 'chip-on' : 'chip-off'}`, testid: 'role-chip', data: {role, enabled: String(enabled.has(role))},
      title: enabled.has(role) ? `${role}: compiled in and enabled` : `${role}: compiled in, not enabled`}, role)));
}

function readiness(node) {
  if (node.stopped_at) return badge('stopped', 'offline');
  if (!node.health) return badge('no report', 'offline');
  return node.health.ready ? badge('ready', 'normal') : badge('not ready', 'faulty');
}

function roleHealth(node) {
  const roles = node.health ? node.health.roles || [] : [];
  return h('div', {class: 'chips'}, roles.map((r) =>
    h('span', {title: r.detail || null}, badge(`${r.role}: ${r.status}`, HEALTH_BADGE[r.status] || 'faulty'))));
}

function listeners(node) {
  return h('div', {class: 'chips'}, (node.listeners || []).map((l) =>
    h('span', {class: 'chip', testid: 'listener', title: `${l.role} listener ${l.name}`}, `${l.protocol} ${l.address}`)));
}

export default {
  title: 'Platform',
  nav: 'admin',
  async mount(root, ctx) {
    const nodesBox = h('div', {class: 'table-wrap'});
    root.append(
      h('h1', {}, 'Platform administration'),
      panel('Nodes', h('p', {class: 'muted'}, 'Roles compiled into each node; the highlighted ones are enabled.'), nodesBox),
    );

    async function load() {
      const page = await api.get('/api/nodes', {limit: 1000});
      if (!ctx.active) return;
      const rows = page.items.map((n) => h('tr', {testid: 'node-row', data: {id: n.id}},
        h('td', {}, h('code', {}, n.id)),
        h('td', {}, n.version || ''),
        h('td', {}, roleChips(n)),
        h('td', {}, readiness(n)),
        h('td', {}, roleHealth(n)),
        h('td', {}, listeners(n)),
        h('td', {}, timeCell(n.started_at)),
        h('td', {}, n.stopped_at ? ['stopped ', timeCell(n.stopped_at)] : timeCell(n.last_seen))));
      nodesBox.replaceChildren(dataTable(['Node', 'Version', 'Roles', 'Readiness', 'Role health', 'Listeners', 'Started', 'Last seen'], rows, 'No nodes.', {testid: 'nodes-table'}));
    }

    ctx.every(15000, load);
    await load();
  },
};
