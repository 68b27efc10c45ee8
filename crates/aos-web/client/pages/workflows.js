// Workflows: enable, disable or run one now; `#/workflows/{name}` also shows that one's run log.

import * as api from '../api.js';
import {h, badge, dataTable, fmtValue, link, panel, showNotice, timeCell} from '../dom.js';

/** "temperature, level faulty" for {"kind": "level", "attribute": "temperature", "level": "faulty"}. */
function triggerDetails(trigger) {
  return Object.entries(trigger || {})
    .filter(([key]) => key !== 'kind')
    .map(([key, value]) => `${key} ${fmtValue(value)}`)
    .join(', ');
}

export default {
  title: 'Workflows',
  nav: 'workflows',
  async mount(root, ctx, selected) {
    const listBox = h('div', {class: 'table-wrap'});
    const runsBox = h('div', {class: 'table-wrap'});
    const path = (name, verb) => `/api/workflows/${encodeURIComponent(name)}/${verb}`;

    root.append(
      h('h1', {}, 'Workflows'),
      panel(null, listBox),
      selected ? panel(`Run log of ${selected}`,
        h('div', {class: 'toolbar'}, h('button', {type: 'button', class: 'secondary', testid: 'runs-refresh', onclick: () => ctx.task(loadRuns)}, 'Refresh')),
        runsBox) : h('p', {class: 'muted'}, 'Choose a workflow to see its run log.'),
    );

    function row(w) {
      const toggle = () => ctx.task(async () => {
        await api.post(path(w.name, w.enabled ? 'disable' : 'enable'));
        showNotice(`Workflow ${w.name} ${w.enabled ? 'disabled' : 'enabled'}.`);
        await load();
      });
      const run = () => ctx.task(async () => {
        await api.post(path(w.name, 'run'), {variables: {}});
        showNotice(`A run of ${w.name} is queued; it shows in the run log once a worker has done it.`);
      });
      return h('tr', {testid: 'workflow-row', data: {name: w.name}, class: w.name === selected ? 'selected' : null},
        h('td', {}, link(['workflows', w.name], w.name)),
        h('td', {}, w.trigger ? w.trigger.kind : '', ' ', h('span', {class: 'muted'}, triggerDetails(w.trigger))),
        h('td', {}, (w.actions || []).length),
        h('td', {}, w.enabled ? badge('enabled', 'online') : badge('disabled', 'offline')),
        h('td', {}, timeCell(w.updated_at)),
        h('td', {class: 'actions'},
          h('button', {type: 'button', class: 'small secondary', testid: 'workflow-toggle', onclick: toggle}, w.enabled ? 'Disable' : 'Enable'),
          h('button', {type: 'button', class: 'small', testid: 'workflow-run', onclick: run}, 'Run now')));
    }

    async function load() {
      const page = await api.get('/api/workflows');
      if (!ctx.active) return;
      listBox.replaceChildren(dataTable(['Name', 'Trigger', 'Actions', 'State', 'Updated', ''], page.items.map(row), 'No workflows yet.', {testid: 'workflows-table'}));
    }

    async function loadRuns() {
      const page = await api.get(path(selected, 'runs'), {limit: 50});
      if (!ctx.active) return;
      const rows = page.items.map((r) => h('tr', {testid: 'run-row', data: {id: r.id}},
        h('td', {}, timeCell(r.started_at)),
        h('td', {}, badge(r.result, r.result === 'ok' ? 'normal' : 'faulty')),
        h('td', {class: 'num'}, r.duration_ms ?? ''),
        h('td', {class: 'error-text'}, r.error || '')));
      runsBox.replaceChildren(dataTable(['Started', 'Result', 'Duration (ms)', 'Error'], rows, 'No runs yet.', {testid: 'runs-table'}));
    }

    if (selected) ctx.every(10000, loadRuns);
    await Promise.all([load(), selected ? loadRuns() : null]);
  },
};
