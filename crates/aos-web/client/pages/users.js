// Users, roles, entities and API keys: each listed, created, changed and removed (or disabled)
// here, as far as the signed-in user's roles allow — the buttons a role cannot use are not
// shown. (Entities are created only: the API has no change or removal of them yet.)

import * as api from '../api.js';
import {h, badge, confirmButton, dataTable, dialog, field, options, panel, secretDialog, showNotice, timeCell} from '../dom.js';

const LEVELS = ['full', 'manage', 'view'];
const ACTIONS = ['validate', 'lock', 'disable'];

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

/** The kinds of objects a tenant's role grants, as the API's own document lists them. */
async function roleKinds() {
  const doc = await api.get('/api/openapi.json');
  const schema = doc.components.schemas.RolePermissions;
  return Object.keys(schema.properties || {});
}

/** A multiple choice of roles, `chosen` ticked. */
function roleChoice(roleNames, chosen, testid) {
  return h('fieldset', {class: 'choices', 'data-fields': 'roles', testid},
    h('legend', {}, 'Roles'),
    roleNames.map((name) => h('label', {class: 'check'},
      h('input', {type: 'checkbox', value: name, checked: chosen.includes(name), data: {role: name}}), name)));
}

function ticked(fieldset) {
  return [...fieldset.querySelectorAll('input[type=checkbox]:checked')].map((c) => c.value);
}

/** The grid of a role's grants: a level per kind, and the advanced actions. */
function grantsForm(kinds, role) {
  const permissions = role ? role.permissions || {} : {};
  const grid = h('div', {class: 'grants', 'data-fields': 'permissions', testid: 'role-permissions'},
    kinds.map((kind) => field(kind.replace(/_/g, ' '),
      h('select', {data: {kind}, testid: `level-${kind}`},
        options([['none', 'none'], ['view', 'view'], ['manage', 'manage'], ['full', 'full']], permissions[kind] || 'none')))));
  const actions = h('fieldset', {class: 'choices', 'data-fields': 'actions'},
    h('legend', {}, 'Advanced actions'),
    ACTIONS.map((action) => h('label', {class: 'check'},
      h('input', {type: 'checkbox', value: action, checked: (role ? role.actions || [] : []).includes(action)}), action)));
  const read = () => ({
    permissions: Object.fromEntries([...grid.querySelectorAll('select')]
      .filter((s) => s.value !== 'none').map((s) => [s.dataset.kind, s.value])),
    actions: ticked(actions),
  });
  return {grid, actions, read};
}

export default {
  title: 'Users & roles',
  nav: 'users',
  async mount(root, ctx) {
    const usersBox = h('div', {class: 'table-wrap'});
    const rolesBox = h('div', {class: 'table-wrap'});
    const keysBox = h('div', {class: 'table-wrap'});
    let roleList = [];
    let fillRoles = () => {}; // the new user's choice of roles, when the form is shown
    let fillEntities = () => {}; // ...and of its entity
    const kinds = await roleKinds();

    const canUsers = api.can('users', 'manage');
    const canRoles = api.can('roles', 'manage');
    const canKeys = api.can('api_keys', 'manage');

    root.append(h('h1', {}, 'Users & roles'), panel('Users', usersBox));

    // ---- users ----

    function editUser(user) {
      const name = h('input', {name: 'name', value: user.name || '', testid: 'edit-user-name'});
      const email = h('input', {name: 'email', type: 'email', value: user.email || '', testid: 'edit-user-email'});
      const roles = roleChoice(roleList.map((r) => r.name), user.roles || [], 'edit-user-roles');
      const disabled = h('input', {type: 'checkbox', name: 'disabled', checked: user.disabled, testid: 'edit-user-disabled'});
      const form = h('form', {class: 'stack-form', testid: 'edit-user-form'},
        field('Name', name), field('E-mail', email), roles,
        h('label', {class: 'check'}, disabled, 'Disabled (cannot sign in; its sessions end at once)'),
        h('button', {type: 'submit', testid: 'edit-user-save'}, 'Save'));
      const box = dialog(`User ${user.login}`, form);
      ctx.form(form, async () => {
        await api.patch(`/api/users/${encodeURIComponent(user.login)}`, {
          name: name.value.trim(),
          email: email.value.trim() || undefined,
          roles: ticked(roles),
          disabled: disabled.checked,
        });
        box.close();
        showNotice(`User ${user.login} saved.`);
        await loadUsers();
      });
    }

    async function resetPassword(user) {
      const answer = await api.post(`/api/users/${encodeURIComponent(user.login)}/password-reset`);
      secretDialog(`New password of ${user.login}`, 'Give the user this password; its old one and its sessions no longer work.', answer.password);
    }

    async function loadUsers() {
      const page = await api.get('/api/users', {limit: 1000});
      if (!ctx.active) return;
      const rows = page.items.map((u) => h('tr', {testid: 'user-row', data: {login: u.login}},
        h('td', {}, u.login),
        h('td', {}, u.name || ''),
        h('td', {}, u.email || ''),
        h('td', {}, (u.roles || []).map((r) => h('span', {class: 'chip'}, r))),
        h('td', {}, u.disabled ? badge('disabled', 'offline') : badge('active', 'online')),
        h('td', {}, timeCell(u.created_at)),
        h('td', {class: 'actions'}, canUsers ? [
          h('button', {type: 'button', class: 'small', testid: 'user-edit', onclick: () => editUser(u)}, 'Edit'),
          confirmButton('Reset password', `Give ${u.login} a new password? Its current one stops working.`,
            () => ctx.task(() => resetPassword(u)), {class: 'small secondary', testid: 'user-reset'}),
        ] : null)));
      usersBox.replaceChildren(dataTable(['Login', 'Name', 'E-mail', 'Roles', 'State', 'Created', ''], rows, 'No users.', {testid: 'users-table'}));
    }

    if (canUsers) {
      const login = h('input', {name: 'login', required: true, testid: 'user-login', autocomplete: 'off'});
      const name = h('input', {name: 'name', testid: 'user-name', autocomplete: 'off'});
      const password = h('input', {name: 'password', type: 'password', required: true, testid: 'user-password', autocomplete: 'new-password'});
      const roles = h('select', {name: 'roles', multiple: true, size: 4, testid: 'user-roles'});
      // A user bound to a customer sees only that customer's devices and data.
      const entity = h('select', {name: 'entity', testid: 'user-entity'}, options([['', 'none (the whole tenant)']], ''));
      const form = h('form', {class: 'inline-form', testid: 'user-form'},
        field('Login', login), field('Name', name), field('Password', password),
        field('Roles (Ctrl-click for several)', roles),
        api.can('entities') ? field('Entity', entity) : null,
        h('button', {type: 'submit', testid: 'user-create'}, 'Add'));
      root.append(panel('Add a user', form));
      ctx.form(form, async () => {
        const chosen = [...roles.selectedOptions].map((o) => o.value);
        const userLogin = login.value.trim();
        await api.post('/api/users', {login: userLogin, name: name.value.trim() || undefined, password: password.value, roles: chosen, entity: entity.value || undefined});
        showNotice(`User ${userLogin} added.`);
        form.reset();
        await loadUsers();
      });
      fillRoles = (names) => roles.replaceChildren(...options(names.map((n) => [n, n])));
      fillEntities = (entities) => entity.replaceChildren(...options([['', 'none (the whole tenant)'],
        ...entities.map((e) => [e.name, `${e.name} (${e.kind})`])], ''));
    }

    // ---- roles ----

    function editRole(role) {
      const name = h('input', {name: 'name', required: true, value: role ? role.name : '', disabled: Boolean(role), testid: 'role-name'});
      const grants = grantsForm(kinds, role);
      const form = h('form', {class: 'stack-form', testid: 'role-form'},
        field('Name', name), grants.grid, grants.actions,
        h('button', {type: 'submit', testid: 'role-save'}, role ? 'Save' : 'Create'));
      const box = dialog(role ? `Role ${role.name}` : 'New role', form);
      ctx.form(form, async () => {
        const body = grants.read();
        if (role) await api.put(`/api/roles/${encodeURIComponent(role.name)}`, body);
        else await api.post('/api/roles', {name: name.value.trim(), ...body});
        box.close();
        showNotice(`Role ${role ? role.name : name.value.trim()} saved.`);
        await loadRoles();
      });
    }

    async function loadRoles() {
      const page = await api.get('/api/roles', {limit: 1000});
      if (!ctx.active) return;
      roleList = page.items;
      fillRoles(roleList.map((r) => r.name));
      const rows = page.items.map((r) => h('tr', {testid: 'role-row', data: {name: r.name}},
        h('td', {}, r.name),
        h('td', {}, r.builtin ? badge('built-in', 'info') : ''),
        h('td', {class: 'summary'}, permissionSummary(r.permissions)),
        h('td', {}, (r.actions || []).join(', ')),
        h('td', {class: 'actions'}, canRoles && !r.builtin ? [
          h('button', {type: 'button', class: 'small', testid: 'role-edit', onclick: () => editRole(r)}, 'Edit'),
          api.can('roles', 'full') ? confirmButton('Delete', `Delete role ${r.name}? Only a role nobody has can go.`, () => ctx.task(async () => {
            await api.del(`/api/roles/${encodeURIComponent(r.name)}`);
            showNotice(`Role ${r.name} deleted.`);
            await loadRoles();
          }), {testid: 'role-delete'}) : null,
        ] : null)));
      rolesBox.replaceChildren(dataTable(['Name', '', 'Permissions', 'Actions', ''], rows, 'No roles.', {testid: 'roles-table'}));
    }

    root.append(panel('Roles', rolesBox,
      canRoles ? h('button', {type: 'button', testid: 'role-new', onclick: () => editRole(null)}, 'New role') : null));

    // ---- API keys ----

    function newKey() {
      const name = h('input', {name: 'name', required: true, testid: 'key-name', autocomplete: 'off'});
      const filter = h('input', {name: 'grants', required: true, testid: 'key-filter', placeholder: 'e.g. aos/+/telemetry'});
      const publish = h('input', {type: 'checkbox', testid: 'key-publish'});
      const subscribe = h('input', {type: 'checkbox', checked: true, testid: 'key-subscribe'});
      const expires = h('input', {name: 'expires_in', testid: 'key-expires', placeholder: 'e.g. 90d (empty: until revoked)'});
      const form = h('form', {class: 'stack-form', testid: 'key-form'},
        field('Name', name), field('Topic filter', filter),
        h('label', {class: 'check'}, publish, 'May publish'),
        h('label', {class: 'check'}, subscribe, 'May subscribe'),
        field('Expires in', expires),
        h('button', {type: 'submit', testid: 'key-create'}, 'Create'));
      const box = dialog('New API key', form);
      ctx.form(form, async () => {
        const created = await api.post('/api/api-keys', {
          name: name.value.trim(),
          grants: [{filter: filter.value.trim(), publish: publish.checked, subscribe: subscribe.checked}],
          expires_in: expires.value.trim() || undefined,
        });
        box.close();
        secretDialog(`API key ${created.name}`, 'The application signs in over MQTT with the username apikey and this secret as its password.', created.secret);
        await loadKeys();
      });
    }

    async function loadKeys() {
      const page = await api.get('/api/api-keys', {limit: 1000});
      if (!ctx.active) return;
      const rows = page.items.map((k) => h('tr', {testid: 'key-row', data: {name: k.name}},
        h('td', {}, k.name),
        h('td', {}, h('code', {}, `${k.prefix}…`)),
        h('td', {}, (k.grants || []).map((g) => h('span', {class: 'chip'},
          `${g.filter} (${[g.publish ? 'publish' : null, g.subscribe ? 'subscribe' : null].filter(Boolean).join(', ') || 'nothing'})`))),
        h('td', {}, timeCell(k.created_at)),
        h('td', {}, k.expires_at ? timeCell(k.expires_at) : h('span', {class: 'muted'}, 'never')),
        h('td', {}, k.revoked_at ? badge('revoked', 'offline') : badge('active', 'online')),
        h('td', {class: 'actions'}, api.can('api_keys', 'full') && !k.revoked_at
          ? confirmButton('Revoke', `Revoke API key ${k.name}? Applications using it are disconnected.`, () => ctx.task(async () => {
            await api.del(`/api/api-keys/${encodeURIComponent(k.name)}`);
            showNotice(`API key ${k.name} revoked.`);
            await loadKeys();
          }), {testid: 'key-revoke'})
          : null)));
      keysBox.replaceChildren(dataTable(['Name', 'Key', 'Grants', 'Created', 'Expires', 'State', ''], rows, 'No API keys.', {testid: 'keys-table'}));
    }

    // ---- entities: the tenant's units and customers ----

    const entitiesBox = h('div', {class: 'table-wrap'});
    let entityNames = [];
    function newEntity() {
      const entityName = h('input', {name: 'name', required: true, testid: 'entity-name', autocomplete: 'off'});
      const kind = h('select', {name: 'kind', testid: 'entity-kind'}, options([['unit', 'unit (of the tenant)'], ['customer', 'customer (sees only its own devices)']], 'unit'));
      const parent = h('select', {name: 'parent', testid: 'entity-parent'}, options([['', 'none'], ...entityNames.map((n) => [n, n])], ''));
      const form = h('form', {class: 'stack-form', testid: 'entity-form'},
        field('Name', entityName), field('Kind', kind), field('Within', parent),
        h('button', {type: 'submit', testid: 'entity-create'}, 'Create'));
      const box = dialog('New entity', form);
      ctx.form(form, async () => {
        await api.post('/api/entities', {name: entityName.value.trim(), kind: kind.value, parent: parent.value || undefined});
        box.close();
        showNotice(`Entity ${entityName.value.trim()} created.`);
        await loadEntities();
      });
    }

    function editEntity(entity) {
      const entityName = h('input', {name: 'name', required: true, value: entity.name, testid: 'edit-entity-name', autocomplete: 'off'});
      const parent = h('select', {name: 'parent', testid: 'edit-entity-parent'},
        options([['', 'none'], ...entityNames.filter((n) => n !== entity.name).map((n) => [n, n])], entity.parent || ''));
      const form = h('form', {class: 'stack-form', testid: 'edit-entity-form'},
        field('Name', entityName), field('Within', parent),
        h('button', {type: 'submit', testid: 'edit-entity-save'}, 'Save'));
      const box = dialog(`Entity ${entity.name}`, form);
      ctx.form(form, async () => {
        const saved = await api.patch(`/api/entities/${encodeURIComponent(entity.name)}`, {name: entityName.value.trim(), parent: parent.value || null});
        box.close();
        showNotice(`Entity ${saved.name} saved.`);
        await loadEntities();
      });
    }

    async function loadEntities() {
      const page = await api.get('/api/entities', {limit: 1000});
      if (!ctx.active) return;
      entityNames = page.items.map((e) => e.name);
      fillEntities(page.items);
      const rows = page.items.map((e) => h('tr', {testid: 'entity-row', data: {name: e.name}},
        h('td', {}, e.name),
        h('td', {}, e.kind === 'customer' ? badge('customer', 'info') : 'unit'),
        h('td', {}, e.parent || ''),
        h('td', {}, timeCell(e.created_at)),
        h('td', {class: 'actions'}, [
          api.can('entities', 'manage') ? h('button', {type: 'button', class: 'small', testid: 'entity-edit', onclick: () => editEntity(e)}, 'Edit') : null,
          api.can('entities', 'full') ? confirmButton('Delete', `Delete entity ${e.name}? Only one nothing is bound to can go.`, () => ctx.task(async () => {
            await api.del(`/api/entities/${encodeURIComponent(e.name)}`);
            showNotice(`Entity ${e.name} deleted.`);
            await loadEntities();
          }), {testid: 'entity-delete'}) : null,
        ])));
      entitiesBox.replaceChildren(dataTable(['Name', 'Kind', 'Within', 'Created', ''], rows, 'No entities.', {testid: 'entities-table'}));
    }

    if (api.can('entities')) {
      root.append(panel('Entities (units and customers)', entitiesBox,
        api.can('entities', 'manage') ? h('button', {type: 'button', testid: 'entity-new', onclick: newEntity}, 'New entity') : null));
    }

    if (api.can('api_keys')) {
      root.append(panel('API keys', keysBox,
        canKeys ? h('button', {type: 'button', testid: 'key-new', onclick: newKey}, 'New API key') : null));
    }

    await Promise.all([loadUsers(), loadRoles(), api.can('api_keys') ? loadKeys() : null, api.can('entities') ? loadEntities() : null]);
  },
};
