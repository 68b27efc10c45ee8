// Users (with the form that adds one) and roles with what they grant.

import * as api from '../api.js';
import {h, badge, dataTable, field, options, panel, showNotice, timeCell} from '../dom.js';

const LEVELS = ['full', 'manage', 'view'];

/** "full: devices, classes · view: events": the kinds a role grants, grouped by level. */
function permissionSummary(permissions) {
  const entries = Object.entries(permissions || {});
  const groups = LEVELS.map((level) => [level, entries.filter(([, l]) => l === level).map(([kind]) => kind.replace(/_/g, ' '))])
    .filter(([, kinds]) => kinds.length);
  const others = entries.filter(([, l]) => !LEVELS.includes(l) && l !== 'none');
  const parts = groups.map(([level, kinds]) => `${level}: ${kinds.join(', ')}`)
    .concat(others.map(([kind, level]) => `${kind}: ${level}`));
  return parts.length ? parts.join(' · ') : 'nothing';
}

export default {
  title: 'Users & roles',
  nav: 'users',
  async mount(root, ctx) {
    const usersBox = h('div', {class: 'table-wrap'});
    const rolesBox = h('div', {class: 'table-wrap'});

    const login = h('input', {name: 'login', required: true, testid: 'user-login', autocomplete: 'off'});
    const name = h('input', {name: 'name', testid: 'user-name', autocomplete: 'off'});
    const password = h('input', {name: 'password', type: 'password', required: true, testid: 'user-password', autocomplete: 'new-password'});
    const roles = h('select', {name: 'roles', multiple: true, size: 4, testid: 'user-roles'});
    const form = h('form', {class: 'inline-form', testid: 'user-form'},
      field('Login', login), field('Name', name), field('Password', password),
      field('Roles (Ctrl-click for several)', roles),
      h('button', {type: 'submit', testid: 'user-create'}, 'Add'));

    root.append(
      h('h1', {}, 'Users & roles'),
      panel('Users', usersBox),
      panel('Add a user', form),
      panel('Roles', rolesBox),
    );

    async function loadUsers() {
      const page = await api.get('/api/users', {limit: 1000});
      if (!ctx.active) return;
      const rows = page.items.map((u) => h('tr', {testid: 'user-row', data: {login: u.login}},
        h('td', {}, u.login),
        h('td', {}, u.name || ''),
        h('td', {}, u.email || ''),
        h('td', {}, (u.roles || []).map((r) => h('span', {class: 'chip'}, r))),
        h('td', {}, u.disabled ? badge('disabled', 'offline') : badge('active', 'online')),
        h('td', {}, timeCell(u.created_at))));
      usersBox.replaceChildren(dataTable(['Login', 'Name', 'Email', 'Roles', 'State', 'Created'], rows, 'No users.', {testid: 'users-table'}));
    }

    async function loadRoles() {
      const page = await api.get('/api/roles', {limit: 1000});
      if (!ctx.active) return;
      roles.replaceChildren(...options(page.items.map((r) => [r.name, r.name])));
      const rows = page.items.map((r) => h('tr', {testid: 'role-row', data: {name: r.name}},
        h('td', {}, r.name),
        h('td', {}, r.builtin ? badge('built-in', 'info') : ''),
        h('td', {class: 'summary'}, permissionSummary(r.permissions)),
        h('td', {}, (r.actions || []).join(', '))));
      rolesBox.replaceChildren(dataTable(['Name', '', 'Permissions', 'Actions'], rows, 'No roles.', {testid: 'roles-table'}));
    }

    ctx.form(form, async () => {
      const chosen = [...roles.selectedOptions].map((o) => o.value);
      const userLogin = login.value.trim();
      await api.post('/api/users', {login: userLogin, name: name.value.trim() || undefined, password: password.value, roles: chosen});
      showNotice(`User ${userLogin} added.`);
      form.reset();
      await loadUsers();
    });

    await Promise.all([loadUsers(), loadRoles()]);
  },
};
