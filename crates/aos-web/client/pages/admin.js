// Platform administration (system administrators): the tenants, created here; the nodes of the
// deployment, the roles each one has compiled in and runs, their health and their listeners;
// roles a node allows to switch (`node.switchable_roles`) are switched on and off here.

import * as api from '../api.js';
import {h, badge, confirmButton, dataTable, field, panel, showNotice, timeCell} from '../dom.js';

const HEALTH_BADGE = {healthy: 'normal', degraded: 'warning'};

/** The roles it runs now: what a live node reports, else those it was started with. */
function running(node) {
  return new Set(node.live ? node.running_roles || [] : node.enabled_roles || []);
}

function roleChips(node, toggle) {
  const on = running(node);
  const switchable = new Set(node.live ? node.switchable_roles || [] : []);
  return h('div', {class: 'chips'}, (node.compiled_roles || []).map((role) => {
    const chip = h('span', {class: `chip ${on.has(role) ? 'chip-on' : 'chip-off'}`, testid: 'role-chip', data: {role, enabled: String(on.has(role))},
      title: on.has(role) ? `${role}: running` : `${role}: compiled in, not running`}, role);
    if (!switchable.has(role)) return chip;
    return h('span', {class: 'chip-group'}, chip,
      h('button', {type: 'button', class: 'small secondary', testid: 'role-switch', data: {role},
        onclick: () => toggle(node, role, !on.has(role))}, on.has(role) ? 'Switch off' : 'Switch on'));
  }));
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
    const tenantsBox = h('div', {class: 'table-wrap'});
    const tenantName = h('input', {name: 'name', required: true, testid: 'tenant-name', autocomplete: 'off', placeholder: 'e.g. acme'});
    const tenantForm = h('form', {class: 'inline-form', testid: 'tenant-form'},
      field('Name', tenantName), h('button', {type: 'submit', testid: 'tenant-create'}, 'Create'));
    root.append(
      h('h1', {}, 'Platform administration'),
      panel('Tenants', tenantsBox, tenantForm),
      panel('Nodes', h('p', {class: 'muted'}, 'Roles compiled into each node; the highlighted ones run. Roles a node allows to switch (node.switchable_roles) have a switch.'), nodesBox),
    );

    async function loadTenants() {
      const page = await api.get('/api/tenants', {limit: 1000});
      if (!ctx.active) return;
      const switchTo = (t, disabled) => ctx.task(async () => {
        await api.patch(`/api/tenants/${encodeURIComponent(t.name)}`, {disabled});
        showNotice(disabled ? `Tenant ${t.name} disabled: its users and devices are shut out.` : `Tenant ${t.name} enabled again.`);
        await loadTenants();
      });
      const rows = page.items.map((t) => h('tr', {testid: 'tenant-row', data: {name: t.name, disabled: String(t.disabled)}},
        h('td', {}, t.name),
        h('td', {testid: 'tenant-state'}, t.disabled ? badge('disabled', 'offline') : badge('active', 'online')),
        h('td', {}, timeCell(t.created_at)),
        h('td', {class: 'actions'}, t.disabled
          ? h('button', {type: 'button', class: 'small secondary', testid: 'tenant-enable', onclick: () => switchTo(t, false)}, 'Enable')
          : confirmButton('Disable', `Disable tenant ${t.name}? Its users can no longer sign in and its devices are disconnected; nothing is deleted.`,
            () => switchTo(t, true), {testid: 'tenant-disable'}))));
      tenantsBox.replaceChildren(dataTable(['Name', 'State', 'Created', ''], rows, 'No tenants yet.', {testid: 'tenants-table'}));
    }

    ctx.form(tenantForm, async () => {
      const name = tenantName.value.trim();
      await api.post('/api/tenants', {name});
      showNotice(`Tenant ${name} created. Choose it in the tenant picker to work in it.`);
      tenantForm.reset();
      window.dispatchEvent(new Event('aos:tenants-changed'));
      await loadTenants();
    });

    async function toggle(node, role, enabled) {
      await ctx.task(async () => {
        await api.put(`/api/nodes/${encodeURIComponent(node.id)}/roles/${encodeURIComponent(role)}`, {enabled});
        showNotice(`${role} is being switched ${enabled ? 'on' : 'off'} on ${node.id}.`);
        // The node applies it within moments and reports it in its registration.
        setTimeout(() => ctx.task(load), 1500);
      });
    }

    async function load() {
      const page = await api.get('/api/nodes', {limit: 1000});
      if (!ctx.active) return;
      const rows = page.items.map((n) => h('tr', {testid: 'node-row', data: {id: n.id}},
        h('td', {}, h('code', {}, n.id)),
        h('td', {}, n.version || ''),
        h('td', {}, roleChips(n, toggle)),
        h('td', {}, readiness(n)),
        h('td', {}, roleHealth(n)),
        h('td', {}, listeners(n)),
        h('td', {}, timeCell(n.started_at)),
        h('td', {testid: 'node-last-seen'}, n.stopped_at ? ['stopped ', timeCell(n.stopped_at)] : timeCell(n.last_seen))));
      nodesBox.replaceChildren(dataTable(['Node', 'Version', 'Roles', 'Readiness', 'Role health', 'Listeners', 'Started', 'Last seen'], rows, 'No nodes.', {testid: 'nodes-table'}));
    }

    ctx.every(15000, load);
    await Promise.all([load(), loadTenants()]);
  },
};
