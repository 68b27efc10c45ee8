// What a device's page offers to change it, as far as the user's roles allow: its name and
// whether it is disabled, its credentials (a token or certificate fingerprint shown once, or an
// MQTT username and password), its removal; and a gateway's children.

import * as api from '../api.js';
import {h, badge, confirmButton, dataTable, dialog, field, link, options, pageHash, panel, secretDialog, showNotice, timeCell} from '../dom.js';

/** The dialog that changes a device's name and whether it is disabled. */
function editDialog(ctx, device, saved) {
  const name = h('input', {name: 'name', value: device.name || '', testid: 'device-edit-name'});
  const disabled = h('input', {type: 'checkbox', name: 'disabled', checked: device.disabled, testid: 'device-edit-disabled'});
  const form = h('form', {class: 'stack-form', testid: 'device-edit-form'},
    field('Name', name),
    h('label', {class: 'check'}, disabled, 'Disabled (its session ends, its sign-ins are refused)'),
    h('button', {type: 'submit', testid: 'device-edit-save'}, 'Save'));
  const box = dialog(`Device ${device.uid}`, form);
  ctx.form(form, async () => {
    const changed = await api.patch(`/api/devices/${encodeURIComponent(device.uid)}`, {name: name.value.trim(), disabled: disabled.checked});
    box.close();
    showNotice(`Device ${device.uid} saved.`);
    saved(changed);
  });
}

/** The dialog that gives a device a new credential of the kind chosen. */
function credentialsDialog(ctx, device) {
  const kind = h('select', {name: 'kind', testid: 'credential-kind'},
    options([['token', 'Access token (generated)'], ['password', 'Username and password'], ['certificate', 'Client certificate (PEM)']], 'token'));
  const username = h('input', {name: 'username', autocomplete: 'off', testid: 'credential-username'});
  const password = h('input', {name: 'password', type: 'password', autocomplete: 'new-password', testid: 'credential-password'});
  const certificate = h('textarea', {name: 'certificate', rows: 6, spellcheck: 'false', testid: 'credential-certificate', placeholder: '-----BEGIN CERTIFICATE-----'});
  const forPassword = h('div', {class: 'stack-form', hidden: true}, field('Username', username), field('Password (8 characters or more)', password));
  const forCertificate = h('div', {hidden: true}, field('Certificate', certificate));
  const shown = () => {
    forPassword.hidden = kind.value !== 'password';
    forCertificate.hidden = kind.value !== 'certificate';
  };
  kind.addEventListener('change', shown);
  const form = h('form', {class: 'stack-form', testid: 'credential-form'},
    field('Kind', kind), forPassword, forCertificate,
    h('p', {class: 'muted'}, 'The device\'s earlier credentials of this kind stop working, and its live session ends.'),
    h('button', {type: 'submit', testid: 'credential-save'}, 'Give'));
  const box = dialog(`Credentials of ${device.uid}`, form);
  ctx.form(form, async () => {
    const body = {kind: kind.value};
    if (kind.value === 'password') Object.assign(body, {username: username.value.trim(), password: password.value});
    if (kind.value === 'certificate') body.certificate = certificate.value;
    const issued = await api.post(`/api/devices/${encodeURIComponent(device.uid)}/credentials`, body);
    box.close();
    if (issued.token) {
      secretDialog(`Access token of ${device.uid}`, 'The device signs in over MQTT with its id as username and this token as password.', issued.token);
    } else if (issued.fingerprint) {
      showNotice(`Certificate with SHA-256 ${issued.fingerprint} now names ${device.uid}.`);
    } else {
      showNotice(`${device.uid} signs in as ${body.username} from now on.`);
    }
  });
}

/** The buttons that change `device` (those the user's roles allow); `saved` gets the device as changed. */
export function deviceActions(ctx, device, saved) {
  const buttons = [];
  if (api.can('devices', 'manage')) {
    buttons.push(
      h('button', {type: 'button', class: 'small', testid: 'device-edit', onclick: () => editDialog(ctx, device, saved)}, 'Edit'),
      h('button', {type: 'button', class: 'small secondary', testid: 'device-credentials', onclick: () => credentialsDialog(ctx, device)}, 'Credentials'));
  }
  if (api.can('devices', 'full')) {
    buttons.push(confirmButton('Delete', `Delete ${device.uid} with its values, events and commands? Its logged messages stay.`, () => ctx.task(async () => {
      await api.del(`/api/devices/${encodeURIComponent(device.uid)}`);
      showNotice(`Device ${device.uid} deleted.`);
      location.hash = pageHash(['devices']);
    }), {testid: 'device-delete'}));
  }
  return h('div', {class: 'device-actions'}, buttons);
}

/** A gateway's children (nothing for a device that has none). */
export async function childrenPanel(uid) {
  const page = await api.get('/api/devices', {gateway: uid, limit: 1000});
  if (!page.total) return null;
  const rows = page.items.map((d) => h('tr', {testid: 'child-row', data: {uid: d.uid}},
    h('td', {}, badge(d.status, d.status === 'online' ? 'online' : 'offline')),
    h('td', {}, link(['devices', d.uid], d.uid)),
    h('td', {}, d.name || ''),
    h('td', {}, d.class || ''),
    h('td', {}, timeCell(d.last_seen))));
  return panel(`Children (${page.total})`, h('div', {class: 'table-wrap'},
    dataTable(['', 'Id', 'Name', 'Class', 'Last seen'], rows, 'No children.', {testid: 'children-table'})));
}
