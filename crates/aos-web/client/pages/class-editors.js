// The dialogs of the classes page: a class's model (functions, attributes with their type, unit
// and kind, command groups), a class's formats, a new message format, an attribute's
// interpreter with its levels. Each is checked by the server when saved, the error placed at
// the field it names.

import * as api from '../api.js';
import {h, dialog, field, jsonField, options, showNotice} from '../dom.js';

const DATA_TYPES = ['number', 'integer', 'boolean', 'string', 'json'];
const KINDS = ['measurement', 'configuration', 'operational', 'event'];
const LEVELS = ['normal', 'warning', 'faulty'];

/** Rows that can be added and removed: `make(values)` builds a row's controls, `read(row)` reads them. */
function rows(testid, make, initial, label) {
  const body = h('div', {class: 'edit-rows', testid});
  const add = (values = {}) => {
    const row = h('div', {class: 'edit-row', testid: `${testid}-row`}, make(values),
      h('button', {type: 'button', class: 'small secondary', 'aria-label': 'Remove', testid: `${testid}-remove`, onclick: () => row.remove()}, 'Remove'));
    body.append(row);
  };
  initial.forEach(add);
  const more = h('button', {type: 'button', class: 'small secondary', testid: `${testid}-add`, onclick: () => add()}, label);
  return {element: h('div', {}, body, more), rows: () => [...body.children]};
}

/** The dialog that shows a class's model and, if `editable`, replaces it. */
export async function modelDialog(ctx, className, editable, saved) {
  const model = await api.get(`/api/classes/${encodeURIComponent(className)}/model`);
  const functions = h('input', {name: 'functions', value: (model.functions || []).join(', '), testid: 'model-functions', placeholder: 'e.g. climate, power'});
  const attributes = rows('model-attribute', (a) => [
    h('input', {'aria-label': 'Name', placeholder: 'name', value: a.name || '', data: {part: 'name'}}),
    h('select', {'aria-label': 'Type', data: {part: 'data_type'}}, options(DATA_TYPES.map((t) => [t, t]), a.data_type || 'number')),
    h('input', {'aria-label': 'Unit', placeholder: 'unit', value: a.unit || '', data: {part: 'unit'}, class: 'short'}),
    h('select', {'aria-label': 'Kind', data: {part: 'kind'}}, options(KINDS.map((k) => [k, k]), a.kind || 'measurement')),
    h('input', {'aria-label': 'Function', placeholder: 'function', value: a.function || '', data: {part: 'function'}, class: 'short'}),
  ], model.attributes || [], 'Add an attribute');
  const groups = h('textarea', {name: 'command_groups', rows: 5, spellcheck: 'false', testid: 'model-command-groups'},
    JSON.stringify(model.command_groups || [], null, 2));
  const form = h('form', {class: 'stack-form', testid: 'model-form'},
    field('Functions (comma-separated)', functions),
    h('fieldset', {class: 'choices wide', 'data-fields': 'attributes'}, h('legend', {}, 'Attributes'), attributes.element),
    field('Command groups (JSON: [{"name", "commands": [{"name", "parameters"}]}])', groups),
    editable ? h('button', {type: 'submit', testid: 'model-save'}, 'Save') : null);
  const box = dialog(`Model of ${className}`, form);
  ctx.form(form, async () => {
    const part = (row, name) => row.querySelector(`[data-part="${name}"]`).value.trim();
    const body = {
      functions: functions.value.split(',').map((f) => f.trim()).filter(Boolean),
      attributes: attributes.rows().map((row) => ({
        name: part(row, 'name'),
        data_type: part(row, 'data_type'),
        unit: part(row, 'unit') || undefined,
        kind: part(row, 'kind'),
        function: part(row, 'function') || undefined,
      })),
      command_groups: jsonField(groups.value, 'command_groups', []),
    };
    await api.put(`/api/classes/${encodeURIComponent(className)}/model`, body);
    box.close();
    showNotice(`The model of ${className} is saved.`);
    saved();
  });
}

/** The dialog that chooses how a class's payloads are read and its commands written. */
export async function formatsDialog(ctx, cls, saved) {
  const formats = (await api.get('/api/formats', {limit: 1000})).items;
  const choice = (direction, current, testid) => h('select', {name: direction, testid},
    options([['', direction === 'inbound' ? 'plain JSON' : 'JSON'], ...formats.filter((f) => f.direction === direction).map((f) => [f.name, `${f.name} (${f.kind})`])], current || ''));
  const inbound = choice('inbound', cls.format, 'class-inbound');
  const outbound = choice('outbound', cls.outbound_format, 'class-outbound');
  const form = h('form', {class: 'stack-form', testid: 'class-formats-form'},
    field('How its devices\' payloads are read', inbound),
    field('How commands to its devices are written', outbound),
    h('button', {type: 'submit', testid: 'class-formats-save'}, 'Save'));
  const box = dialog(`Formats of ${cls.name}`, form);
  ctx.form(form, async () => {
    await api.put(`/api/classes/${encodeURIComponent(cls.name)}/formats`, {inbound: inbound.value || null, outbound: outbound.value || null});
    box.close();
    showNotice(`The formats of ${cls.name} are saved.`);
    saved();
  });
}

/**
 * The dialog that creates a message format — JSON (with a JSON Schema), XML or Protobuf — or,
 * given `current` (as the format list shows it), changes its definition.
 */
export function formatDialog(ctx, saved, current = null) {
  const name = h('input', {name: 'name', required: true, testid: 'format-name', autocomplete: 'off', value: current ? current.name : '', disabled: Boolean(current)});
  const kind = h('select', {name: 'kind', testid: 'format-kind'}, options([['json', 'JSON'], ['xml', 'XML'], ['protobuf', 'Protobuf']], current ? current.kind : 'json'));
  const direction = h('select', {name: 'direction', testid: 'format-direction', disabled: Boolean(current)},
    options([['inbound', 'inbound (payloads read)'], ['outbound', 'outbound (commands written)']], current ? current.direction : 'inbound'));
  const proto = h('textarea', {name: 'proto', rows: 8, spellcheck: 'false', testid: 'format-proto', placeholder: 'syntax = "proto3";\nmessage Reading { double temperature = 1; }'});
  proto.value = current && current.proto ? current.proto : '';
  const message = h('input', {name: 'message', testid: 'format-message', placeholder: 'e.g. Reading', value: current && current.proto_message ? current.proto_message : ''});
  const schema = h('textarea', {name: 'schema', rows: 6, spellcheck: 'false', testid: 'format-schema', placeholder: '{"type": "object"}'});
  schema.value = current && current.schema ? JSON.stringify(current.schema, null, 2) : '';
  const mapping = h('textarea', {name: 'mapping', rows: 4, spellcheck: 'false', testid: 'format-mapping', placeholder: '{"attributes": {"temperature": "/t"}, "ts": "/time"}'});
  mapping.value = current && current.mapping && Object.keys(current.mapping).length ? JSON.stringify(current.mapping, null, 2) : '';
  const forProtobuf = h('div', {class: 'stack-form', hidden: kind.value !== 'protobuf'}, field('.proto text', proto), field('Message type', message));
  const forJson = h('div', {class: 'stack-form', hidden: kind.value !== 'json'}, field('JSON Schema the payloads must meet (optional)', schema));
  kind.addEventListener('change', () => {
    forProtobuf.hidden = kind.value !== 'protobuf';
    forJson.hidden = kind.value !== 'json';
  });
  const form = h('form', {class: 'stack-form', testid: 'format-form'},
    field('Name', name), field('Kind', kind), field('Direction', direction), forProtobuf, forJson,
    field('Where the values are (JSON pointers, optional)', mapping),
    h('button', {type: 'submit', testid: 'format-save'}, current ? 'Save' : 'Create'));
  const box = dialog(current ? `Format ${current.name}` : 'New message format', form);
  ctx.form(form, async () => {
    const body = {kind: kind.value, mapping: jsonField(mapping.value, 'mapping', {})};
    if (kind.value === 'protobuf') Object.assign(body, {proto: proto.value, message: message.value.trim()});
    if (kind.value === 'json' && schema.value.trim()) body.schema = jsonField(schema.value, 'schema', undefined);
    const formatName = current ? current.name : name.value.trim();
    if (current) await api.put(`/api/formats/${encodeURIComponent(formatName)}`, body);
    else await api.post('/api/formats', {name: formatName, direction: direction.value, ...body});
    box.close();
    showNotice(`Format ${formatName} ${current ? 'saved' : 'created'}.`);
    saved();
  });
}

/** The dialog that sets an attribute's interpreter: a value map, an expression, levels. */
export function interpreterDialog(ctx, classNames, current, saved) {
  const attribute = h('input', {name: 'attribute', required: true, value: current ? current.attribute : '', disabled: Boolean(current), testid: 'interpreter-attribute'});
  const cls = h('select', {name: 'class', testid: 'interpreter-class'}, options([['', 'every class'], ...classNames.map((c) => [c, c])], current ? current.class || '' : ''));
  const expression = h('input', {name: 'expression', value: current ? current.expression || '' : '', testid: 'interpreter-expression', placeholder: 'e.g. value / 10'});
  const valueMap = h('textarea', {name: 'value_map', rows: 3, spellcheck: 'false', testid: 'interpreter-value-map', placeholder: '{"1": "open", "0": "closed"}'},
    current && current.value_map ? JSON.stringify(current.value_map) : '');
  const bound = (value, part, label) => h('input', {type: 'number', step: 'any', 'aria-label': label, placeholder: label, value: value ?? '', data: {part}, class: 'short'});
  const levels = rows('interpreter-level', (l) => [
    h('select', {'aria-label': 'Level', data: {part: 'level'}}, options(LEVELS.map((x) => [x, x]), l.level || 'warning')),
    bound(l.min, 'min', 'from'),
    bound(l.max, 'max', 'below'),
  ], current && Array.isArray(current.levels) ? current.levels : [], 'Add a level');
  const form = h('form', {class: 'stack-form', testid: 'interpreter-form'},
    field('Attribute', attribute), field('For', cls), field('Expression of value (optional)', expression),
    field('Value map (JSON, optional)', valueMap),
    h('fieldset', {class: 'choices wide', 'data-fields': 'levels'}, h('legend', {}, 'Levels (a value from … below …)'), levels.element),
    h('button', {type: 'submit', testid: 'interpreter-save'}, 'Save'));
  const box = dialog(current ? `Interpreter of ${current.attribute}` : 'New interpreter', form);
  ctx.form(form, async () => {
    const number = (row, part) => {
      const text = row.querySelector(`[data-part="${part}"]`).value;
      return text === '' ? null : Number(text);
    };
    const body = {
      class: cls.value || undefined,
      expression: expression.value.trim() || undefined,
      value_map: jsonField(valueMap.value, 'value_map', undefined),
      levels: levels.rows().map((row) => ({level: row.querySelector('[data-part="level"]').value, min: number(row, 'min'), max: number(row, 'max')})),
    };
    if (!body.levels.length) delete body.levels;
    const name = attribute.value.trim();
    await api.put(`/api/interpreters/${encodeURIComponent(name)}`, body);
    box.close();
    showNotice(`The interpreter of ${name} is saved.`);
    saved();
  });
}
