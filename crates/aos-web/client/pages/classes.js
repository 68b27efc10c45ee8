// Device classes (with the form that creates one) and message formats.

import * as api from '../api.js';
import {h, badge, dataTable, field, panel, showNotice, timeCell} from '../dom.js';

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

    root.append(
      h('h1', {}, 'Classes & formats'),
      panel('Device classes', classesBox),
      panel('Create a class', form),
      panel('Message formats', formatsBox),
    );

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
        h('td', {}, timeCell(c.created_at))));
      classesBox.replaceChildren(dataTable(['Name', 'Description', 'Kind', 'Inbound format', 'Outbound format', 'Devices', 'Created'], rows, 'No classes yet.', {testid: 'classes-table'}));
    }

    async function loadFormats() {
      const page = await api.get('/api/formats', {limit: 1000});
      if (!ctx.active) return;
      const rows = page.items.map((f) => h('tr', {testid: 'format-row', data: {name: f.name}},
        h('td', {}, f.name),
        h('td', {}, f.kind),
        h('td', {}, f.direction),
        h('td', {}, timeCell(f.created_at))));
      formatsBox.replaceChildren(dataTable(['Name', 'Kind', 'Direction', 'Created'], rows, 'No formats yet.', {testid: 'formats-table'}));
    }

    ctx.form(form, async () => {
      const className = name.value.trim();
      await api.post('/api/classes', {name: className, description: description.value.trim(), is_gateway: gateway.checked});
      showNotice(`Class ${className} created.`);
      form.reset();
      await loadClasses();
    });

    await Promise.all([loadClasses(), loadFormats()]);
  },
};
