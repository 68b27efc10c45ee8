// Workflows: written or imported as JSON documents (checked when saved, the error placed in the
// document), exported, enabled, disabled, run now or deleted; `#/workflows/{name}` also shows
// that one's run log.

import * as api from '../api.js';
import {h, badge, confirmButton, dataTable, dialog, download, field, fmtValue, jsonField, link, pageHash, panel, showNotice, timeCell} from '../dom.js';

const EXAMPLE = {
  name: 'example',
  enabled: false,
  trigger: {kind: 'manual'},
  actions: [{save: {attribute: 'checked', value: true}}],
};


/** "temperature, level faulty" for {"kind": "level", "attribute": "temperature", "level": "faulty"}. */
function triggerDetails(trigger) {
  return Object.entries(trigger || {})
    .filter(([key]) => key !== 'kind')
    .map(([key, value]) => `${key} ${fmtValue(value)}`)
    .join(', ');
}

/** A run's steps, folded: each action with how it went, what it did and how long it took. */
function stepsCell(steps) {
  if (!steps) return h('span', {class: 'muted'}, 'not recorded');
  if (!steps.length) return h('span', {class: 'muted'}, 'none');
  return h('details', {testid: 'run-steps'},
    h('summary', {}, `${steps.length} step${steps.length === 1 ? '' : 's'}`),
    h('ol', {class: 'steps'}, steps.map((step) => h('li', {testid: 'run-step', data: {step: step.step, result: step.result}},
      h('code', {}, step.step), ' ', h('strong', {}, step.action), ' ',
      badge(step.result, step.result === 'ok' ? 'normal' : 'faulty'), ' ',
      step.detail || '', h('span', {class: 'muted'}, ` · ${step.ms} ms`)))));
}

export default {
  title: 'Workflows',
  nav: 'workflows',
  async mount(root, ctx, selected) {
    const listBox = h('div', {class: 'table-wrap'});
    const runsBox = h('div', {class: 'table-wrap'});
    const path = (name, verb) => `/api/workflows/${encodeURIComponent(name)}/${verb}`;

    const may = api.can('workflows', 'manage');

    /** The document editor: a new workflow (or a file imported into it), or one to change. */
    function editor(doc) {
      const text = h('textarea', {name: 'document', rows: 18, spellcheck: 'false', testid: 'workflow-document',
        // The server names a document's parts (`trigger`, `actions`…): its errors show here.
        'data-fields': 'document name enabled trigger actions variables'}, JSON.stringify(doc, null, 2));
      const file = h('input', {type: 'file', accept: 'application/json,.json', testid: 'workflow-file', onchange: async () => {
        if (file.files.length) text.value = await file.files[0].text();
      }});
      const form = h('form', {class: 'stack-form', testid: 'workflow-form'},
        field('Import a file', file),
        field('Document (JSON)', text),
        h('button', {type: 'submit', testid: 'workflow-save'}, 'Save'));
      const box = dialog(doc.name === EXAMPLE.name ? 'New workflow' : `Workflow ${doc.name}`, form);
      ctx.form(form, async () => {
        const parsed = jsonField(text.value, 'document', {});
        const saved = await api.post('/api/workflows', parsed);
        box.close();
        showNotice(`Workflow ${saved.name || parsed.name} saved.`);
        await load();
      });
    }

    const exported = async (name) => api.get(`/api/workflows/${encodeURIComponent(name)}`);

    root.append(
      h('h1', {}, 'Workflows'),
      panel(null, listBox, may ? h('button', {type: 'button', testid: 'workflow-new', onclick: () => editor(EXAMPLE)}, 'New or import') : null),
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
          h('button', {type: 'button', class: 'small secondary', testid: 'workflow-export', onclick: () => ctx.task(async () => {
            download(`${w.name}.json`, `${JSON.stringify(await exported(w.name), null, 2)}\n`, 'application/json');
          })}, 'Export'),
          may ? [
            h('button', {type: 'button', class: 'small secondary', testid: 'workflow-edit', onclick: () => ctx.task(async () => editor(await exported(w.name)))}, 'Edit'),
            h('button', {type: 'button', class: 'small secondary', testid: 'workflow-toggle', onclick: toggle}, w.enabled ? 'Disable' : 'Enable'),
            h('button', {type: 'button', class: 'small', testid: 'workflow-run', onclick: run}, 'Run now'),
          ] : null,
          api.can('workflows', 'full') ? confirmButton('Delete', `Delete workflow ${w.name}?`, () => ctx.task(async () => {
            await api.del(`/api/workflows/${encodeURIComponent(w.name)}`);
            showNotice(`Workflow ${w.name} deleted.`);
            if (w.name === selected) location.hash = pageHash(['workflows']);
            else await load();
          }), {testid: 'workflow-delete'}) : null));
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
        h('td', {}, stepsCell(r.steps)),
        h('td', {class: 'error-text'}, r.error || '')));
      runsBox.replaceChildren(dataTable(['Started', 'Result', 'Duration (ms)', 'Steps', 'Error'], rows, 'No runs yet.', {testid: 'runs-table'}));
    }

    if (selected) ctx.every(10000, loadRuns);
    await Promise.all([load(), selected ? loadRuns() : null]);
  },
};
