// Device classes (created and deleted here; their model and formats changed in dialogs), message
// formats (created, changed and deleted here) and the interpreters of attributes with their
// levels.

import * as api from '../api.js';
import {h, badge, confirmButton, dataTable, dialog, field, fmtValue, panel, showNotice, timeCell} from '../dom.js';
import {formatDialog, formatsDialog, interpreterDialog, modelDialog} from './class-editors.js';

export default {
  title: 'Classes & formats',
  nav: 'classes',
  async mount(root, ctx) {
    const classesBox = h('div', {class: 'table-wrap'});
    const formatsBox = h('div', {class: 'table-wrap'});

    const name = h('input', {name: 'name', required: true, testid: 'class-name', placeholder: 'e.g. thermo'});
    const description = h('input', {name: 'description', testid: 'class-description'});
    const gateway = h('input', {type: 'checkbox', name: 'is_gateway', testid: 'class-gateway'});
    const form = h('form', {class: 'inline-form', testid: 'class-form'},
      field('Name', name),
      field('Description', description),
      h('label', {class: 'check'}, gateway, 'Gateway'),
      h('button', {type: 'submit', testid: 'class-create'}, 'Create'));

    const interpretersBox = h('div', {class: 'table-wrap'});
    const may = api.can('classes', 'manage');
    let classList = [];
    root.append(
      h('h1', {}, 'Classes & formats'),
      panel('Device classes', classesBox),
      may ? panel('Create a class', form) : null,
      panel('Message formats', formatsBox,
        api.can('formats', 'manage') ? h('button', {type: 'button', testid: 'format-new', onclick: () => formatDialog(ctx, () => ctx.task(loadFormats))}, 'New format') : null),
      api.can('interpreters') ? panel('Interpreters', interpretersBox,
        api.can('interpreters', 'manage') ? h('button', {type: 'button', testid: 'interpreter-new', onclick: () => interpreterDialog(ctx, classList.map((c) => c.name), null, () => ctx.task(loadInterpreters))}, 'New interpreter') : null) : null,
    );

    /** A Delete button for `what` at `path` (only where the roles allow deleting `kind`). */
    const deleteButton = (kind, what, path, testid, reload) => (api.can(kind, 'full')
      ? confirmButton('Delete', `Delete ${what}?`, () => ctx.task(async () => {
        await api.del(path);
        showNotice(`${what[0].toUpperCase()}${what.slice(1)} deleted.`);
        await reload();
      }), {testid})
      : null);

    async function loadInterpreters() {
      const page = await api.get('/api/interpreters', {limit: 1000});
      if (!ctx.active) return;
      const levels = (list) => (Array.isArray(list) ? list.map((l) => `${l.level} ${l.min ?? '…'}–${l.max ?? '…'}`).join(', ') : '');
      const rows = page.items.map((i) => h('tr', {testid: 'interpreter-row', data: {attribute: i.attribute}},
        h('td', {}, i.attribute),
        h('td', {}, i.class || h('span', {class: 'muted'}, 'every class')),
        h('td', {}, h('code', {}, i.expression || '')),
        h('td', {}, i.value_map ? h('code', {}, fmtValue(i.value_map)) : ''),
        h('td', {testid: 'interpreter-levels'}, levels(i.levels)),
        h('td', {class: 'actions'}, api.can('interpreters', 'manage')
          ? h('button', {type: 'button', class: 'small', testid: 'interpreter-edit', onclick: () => interpreterDialog(ctx, classList.map((c) => c.name), i, () => ctx.task(loadInterpreters))}, 'Edit')
          : null,
        deleteButton('interpreters', `the interpreter of ${i.attribute}${i.class ? ` for ${i.class}` : ''}`,
          `/api/interpreters/${encodeURIComponent(i.attribute)}${i.class ? `?class=${encodeURIComponent(i.class)}` : ''}`, 'interpreter-delete', loadInterpreters))));
      interpretersBox.replaceChildren(dataTable(['Attribute', 'For', 'Expression', 'Value map', 'Levels', ''], rows, 'No interpreters yet.', {testid: 'interpreters-table'}));
    }

    /** A class renamed or described anew in its dialog. */
    function editClass(c) {
      const className = h('input', {name: 'name', required: true, value: c.name, testid: 'edit-class-name', autocomplete: 'off'});
      const about = h('input', {name: 'description', value: c.description || '', testid: 'edit-class-description'});
      const classForm = h('form', {class: 'stack-form', testid: 'edit-class-form'},
        field('Name', className), field('Description', about),
        h('button', {type: 'submit', testid: 'edit-class-save'}, 'Save'));
      const box = dialog(`Class ${c.name}`, classForm);
      ctx.form(classForm, async () => {
        const saved = await api.patch(`/api/classes/${encodeURIComponent(c.name)}`, {name: className.value.trim(), description: about.value.trim()});
        box.close();
        showNotice(`Class ${saved.name} saved.`);
        await loadClasses();
      });
    }

    async function loadClasses() {
      const page = await api.get('/api/classes', {limit: 1000});
      if (!ctx.active) return;
      const rows = page.items.map((c) => h('tr', {testid: 'class-row', data: {name: c.name}},
        h('td', {}, c.name),
        h('td', {}, c.description || ''),
        h('td', {}, c.is_gateway ? badge('gateway', 'info') : h('span', {class: 'muted'}, 'device')),
        h('td', {}, c.format || h('span', {class: 'muted'}, 'default')),
        h('td', {}, c.outbound_format || h('span', {class: 'muted'}, 'default')),
        h('td', {class: 'num'}, c.devices ?? ''),
        h('td', {}, timeCell(c.created_at)),
        h('td', {class: 'actions'},
          h('button', {type: 'button', class: 'small secondary', testid: 'class-model', onclick: () => ctx.task(() => modelDialog(ctx, c.name, may, () => {}))}, may ? 'Model' : 'View model'),
          may ? h('button', {type: 'button', class: 'small secondary', testid: 'class-formats', onclick: () => ctx.task(() => formatsDialog(ctx, c, () => ctx.task(loadClasses)))}, 'Formats') : null,
          may ? h('button', {type: 'button', class: 'small secondary', testid: 'class-edit', onclick: () => editClass(c)}, 'Edit') : null,
          deleteButton('classes', `class ${c.name}`, `/api/classes/${encodeURIComponent(c.name)}`, 'class-delete', loadClasses))));
      classList = page.items;
      classesBox.replaceChildren(dataTable(['Name', 'Description', 'Kind', 'Inbound format', 'Outbound format', 'Devices', 'Created', ''], rows, 'No classes yet.', {testid: 'classes-table'}));
    }

    async function loadFormats() {
      const page = await api.get('/api/formats', {limit: 1000});
      if (!ctx.active) return;
      const rows = page.items.map((f) => h('tr', {testid: 'format-row', data: {name: f.name}},
        h('td', {}, f.name),
        h('td', {}, f.kind),
        h('td', {}, f.direction),
        h('td', {}, timeCell(f.created_at)),
        h('td', {class: 'actions'},
          api.can('formats', 'manage') ? h('button', {type: 'button', class: 'small', testid: 'format-edit', onclick: () => formatDialog(ctx, () => ctx.task(loadFormats), f)}, 'Edit') : null,
          deleteButton('formats', `format ${f.name}`, `/api/formats/${encodeURIComponent(f.name)}`, 'format-delete', loadFormats))));
      formatsBox.replaceChildren(dataTable(['Name', 'Kind', 'Direction', 'Created', ''], rows, 'No formats yet.', {testid: 'formats-table'}));
    }

    ctx.form(form, async () => {
      const className = name.value.trim();
      await api.post('/api/classes', {name: className, description: description.value.trim(), is_gateway: gateway.checked});
      showNotice(`Class ${className} created.`);
      form.reset();
      await loadClasses();
    });

    await Promise.all([loadClasses(), loadFormats(), api.can('interpreters') ? loadInterpreters() : null]);
  },
};
