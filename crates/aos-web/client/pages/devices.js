// Devices: a searchable, filterable, sortable list in pages, live status badges, a command sent
// to many devices at once, and the form that registers a device.

import * as api from '../api.js';
import {h, dataTable, dialog, field, jsonField, link, options, pager, panel, showNotice, statusBadge, timeCell} from '../dom.js';

const PAGE_SIZE = 25;

/** Columns; `sort` names the API's sort field for the sortable ones. */
const COLUMNS = [
  {label: 'Status'},
  {label: 'Device id', sort: 'uid'},
  {label: 'Name', sort: 'name'},
  {label: 'Class'},
  {label: 'Last seen', sort: 'last_seen'},
  {label: 'Registered', sort: 'created_at'},
];

export default {
  title: 'Devices',
  nav: 'devices',
  async mount(root, ctx) {
    const query = {search: '', class: '', status: '', sort: 'uid', offset: 0};
    let loads = 0; // only the latest answer is shown when the user types or clicks fast

    const search = h('input', {type: 'search', placeholder: 'Search id or name', testid: 'device-search', 'aria-label': 'Search'});
    const classFilter = h('select', {testid: 'device-class-filter', 'aria-label': 'Class'});
    const statusFilter = h('select', {testid: 'device-status-filter', 'aria-label': 'Status'},
      options([['', 'Any status'], ['online', 'Online'], ['offline', 'Offline']], ''));
    const list = h('div', {class: 'table-wrap'});
    const pages = h('div', {class: 'pager'});

    const uid = h('input', {name: 'uid', required: true, testid: 'device-uid', placeholder: 'e.g. sensor-1'});
    const name = h('input', {name: 'name', testid: 'device-name'});
    const deviceClass = h('select', {name: 'class', required: true, testid: 'device-class'});
    const form = h('form', {class: 'inline-form', testid: 'device-form'},
      field('Device id', uid), field('Name', name), field('Class', deviceClass),
      h('button', {type: 'submit', testid: 'device-create'}, 'Register'));

    let classNames = [];
    /** One command to many devices: listed by id, or every device of classes (later ones too). */
    function batchDialog() {
      const batchName = h('input', {name: 'name', required: true, testid: 'batch-name', placeholder: 'e.g. firmware 2.1'});
      const command = h('input', {name: 'command', required: true, testid: 'batch-command', placeholder: 'e.g. reboot'});
      const parameters = h('textarea', {name: 'parameters', rows: 3, spellcheck: 'false', testid: 'batch-parameters'}, '{}');
      const devices = h('input', {name: 'devices', testid: 'batch-devices', placeholder: 'device ids, comma-separated'});
      const classes = h('fieldset', {class: 'choices', 'data-fields': 'classes', testid: 'batch-classes'}, h('legend', {}, 'Every device of'),
        classNames.map((c) => h('label', {class: 'check'}, h('input', {type: 'checkbox', value: c, data: {class: c}}), c)));
      const future = h('input', {type: 'checkbox', name: 'include_future', testid: 'batch-future'});
      const batchForm = h('form', {class: 'stack-form', testid: 'batch-form'},
        field('Batch name', batchName), field('Command', command), field('Parameters (JSON object)', parameters),
        field('Devices', devices), classes,
        h('label', {class: 'check'}, future, 'Also devices registered in those classes later'),
        h('button', {type: 'submit', testid: 'batch-send'}, 'Send'));
      const box = dialog('A command to many devices', batchForm);
      ctx.form(batchForm, async () => {
        const params = jsonField(parameters.value, 'parameters', {});
        const queued = await api.post('/api/command-batches', {
          name: batchName.value.trim(),
          command: {name: command.value.trim(), parameters: params},
          devices: devices.value.split(',').map((d) => d.trim()).filter(Boolean),
          classes: [...classes.querySelectorAll('input:checked')].map((c) => c.value),
          include_future: future.checked,
        });
        box.close();
        showNotice(`Batch ${queued.batch}: ${queued.queued} command${queued.queued === 1 ? '' : 's'} queued.`);
      });
    }

    root.append(
      h('h1', {}, 'Devices'),
      panel(null, h('div', {class: 'toolbar'}, search, classFilter, statusFilter,
        api.can('commands', 'manage') ? h('button', {type: 'button', class: 'secondary', testid: 'batch-new', onclick: batchDialog}, 'Command to many') : null), list, pages),
      api.can('devices', 'manage') ? panel('Register a device', form) : null,
    );

    function header() {
      return COLUMNS.map((col) => {
        if (!col.sort) return h('th', {}, col.label);
        const asc = query.sort === col.sort;
        const desc = query.sort === `-${col.sort}`;
        const sort = () => {
          query.sort = asc ? `-${col.sort}` : col.sort;
          query.offset = 0;
          ctx.task(async () => {
            await load();
            // The table was drawn again: the focus stays on the column.
            root.querySelector(`[data-testid="sort-${col.sort}"]`)?.focus();
          });
        };
        return h('th', {
          class: 'sortable', tabindex: 0, testid: `sort-${col.sort}`,
          'aria-sort': asc ? 'ascending' : desc ? 'descending' : 'none',
          onclick: sort,
          // Keyboard users sort with Enter or Space, as with a button.
          onkeydown: (event) => {
            if (event.key !== 'Enter' && event.key !== ' ') return;
            event.preventDefault();
            sort();
          },
        }, col.label, asc ? ' ▲' : desc ? ' ▼' : '');
      });
    }

    function row(d) {
      return h('tr', {testid: 'device-row', data: {uid: d.uid}},
        h('td', {class: 'status-cell'}, statusBadge(d.status)),
        h('td', {}, link(['devices', d.uid], d.uid, {testid: 'device-link'})),
        h('td', {}, d.name || '', d.disabled ? h('span', {class: 'badge badge-offline'}, 'disabled') : null),
        h('td', {}, d.class || ''),
        h('td', {class: 'seen-cell'}, timeCell(d.last_seen)),
        h('td', {}, timeCell(d.created_at)));
    }

    async function load() {
      const mine = ++loads;
      const page = await api.get('/api/devices', {...query, limit: PAGE_SIZE});
      if (!ctx.active || mine !== loads) return;
      list.replaceChildren(dataTable(header(), page.items.map(row), 'No devices match.', {testid: 'devices-table'}));
      pages.replaceChildren(...pager({offset: query.offset, limit: PAGE_SIZE, total: page.total, shown: page.items.length, noun: 'devices'}, (offset) => {
        query.offset = offset;
        ctx.task(load);
      }));
    }

    async function loadClasses() {
      const classes = (await api.get('/api/classes', {limit: 1000})).items;
      if (!ctx.active) return;
      const pairs = classes.map((c) => [c.name, c.name]);
      classNames = classes.map((c) => c.name);
      classFilter.replaceChildren(...options([['', 'Any class'], ...pairs], query.class));
      deviceClass.replaceChildren(...(pairs.length ? options(pairs) : [h('option', {value: ''}, 'no class yet: create one first')]));
    }

    const searchSoon = ctx.debounce(() => {
      query.search = search.value.trim();
      query.offset = 0;
      return load();
    }, 300);
    search.addEventListener('input', searchSoon);
    for (const [select, key] of [[classFilter, 'class'], [statusFilter, 'status']]) {
      select.addEventListener('change', () => {
        query[key] = select.value;
        query.offset = 0;
        ctx.task(load);
      });
    }

    ctx.form(form, async () => {
      const created = await api.post('/api/devices', {uid: uid.value.trim(), name: name.value.trim() || undefined, class: deviceClass.value});
      showNotice(`Device ${created.uid} registered.`);
      form.reset();
      await load();
    });

    // A device going on or off line: its badge changes in place; with a status filter the list
    // itself changes, so it is fetched again.
    const reload = ctx.debounce(load, 500);
    ctx.live('device', (news) => {
      const tr = list.querySelector(`tr[data-uid="${CSS.escape(news.device)}"]`);
      if (query.status) reload();
      else if (tr) {
        tr.querySelector('.status-cell').replaceChildren(statusBadge(news.status));
        tr.querySelector('.seen-cell').replaceChildren(timeCell(news.at));
      }
    });
    ctx.live('reconnected', reload);

    await Promise.all([load(), loadClasses()]);
  },
};
