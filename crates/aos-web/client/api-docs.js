// The API documentation page (/api/docs): reads the OpenAPI document the server generates from
// its handlers (/api/openapi.json, no sign-in needed) and renders it: operations grouped by tag,
// each with its parameters, request body, answers and the sign-in it needs, schemas resolved
// from the document's components. Everything is built with createElement and textContent (dom.js),
// so nothing in the document is parsed as HTML and the Content-Security-Policy holds.

import {h} from './dom.js';

const METHODS = ['get', 'post', 'put', 'patch', 'delete'];
const SCHEMA_PREFIX = '#/components/schemas/';
/** How deep nested schemas are drawn in an operation (deeper: the schema's own section). */
const MAX_DEPTH = 6;

const root = document.getElementById('docs');
let doc = null; // the OpenAPI document

// ---- text ----

/** Backquoted parts of a doc comment as <code>, the rest as text. */
function inline(text) {
  return String(text).split('`').map((piece, i) => (i % 2 ? h('code', {}, piece) : piece));
}

/** A doc comment's paragraphs (blank-line separated; single line breaks are just wrapping). */
function prose(text, cls = 'prose') {
  if (!text) return null;
  const paragraphs = String(text).split(/\n\s*\n/).map((p) => p.replace(/\s*\n\s*/g, ' ').trim()).filter(Boolean);
  return h('div', {class: cls}, paragraphs.map((p) => h('p', {}, inline(p))));
}

function anchor(kind, name) {
  return `${kind}-${String(name).replace(/[^A-Za-z0-9_-]/g, '_')}`;
}

// ---- schemas ----

function refName(schema) {
  const ref = schema && schema.$ref;
  return typeof ref === 'string' && ref.startsWith(SCHEMA_PREFIX) ? ref.slice(SCHEMA_PREFIX.length) : null;
}

/** The schema a `$ref` names (or the schema itself); a dangling reference reads as "any". */
function deref(schema) {
  const name = refName(schema);
  if (!name) return schema || {};
  return (doc.components && doc.components.schemas && doc.components.schemas[name]) || {};
}

/** `oneOf: [{type: null}, X]` (an optional value) → X, nullable. */
function unwrapNullable(schema) {
  const variants = schema.oneOf || schema.anyOf;
  if (Array.isArray(variants) && variants.length === 2) {
    const other = variants.find((v) => v.type !== 'null');
    if (other && variants.some((v) => v.type === 'null')) return {schema: other, nullable: true};
  }
  if (Array.isArray(schema.type) && schema.type.includes('null')) {
    const types = schema.type.filter((t) => t !== 'null');
    return {schema: {...schema, type: types.length === 1 ? types[0] : types}, nullable: true};
  }
  return {schema, nullable: false};
}

/** The properties and required names of an object schema, `allOf` parts merged. */
function objectShape(schema, seen) {
  const shape = {properties: {}, required: new Set()};
  const add = (part, trail) => {
    const name = refName(part);
    if (name && trail.has(name)) return;
    const next = name ? new Set([...trail, name]) : trail;
    const target = deref(part);
    for (const sub of target.allOf || []) add(sub, next);
    Object.assign(shape.properties, target.properties || {});
    for (const r of target.required || []) shape.required.add(r);
  };
  add(schema, seen);
  return shape;
}

function isObject(schema) {
  return Boolean(schema.properties || schema.allOf || (schema.type === 'object' && !schema.additionalProperties));
}

/** A short type: `string (date-time)`, `array of DeviceView`, `map of integer`… as nodes. */
function typeLabel(schema) {
  const name = refName(schema);
  if (name) return [h('a', {href: `#${anchor('schema', name)}`, class: 'schema-link'}, name)];
  const {schema: s, nullable} = unwrapNullable(schema);
  let label;
  if (s !== schema) {
    label = typeLabel(s);
  } else if (s.oneOf || s.anyOf) {
    const variants = s.oneOf || s.anyOf;
    label = ['one of ', ...variants.flatMap((v, i) => [i ? ' | ' : '', ...typeLabel(v)])];
  } else if (s.allOf) {
    label = ['object'];
  } else if (s.type === 'array') {
    label = ['array of ', ...typeLabel(s.items || {})];
  } else if (s.type === 'object' && s.additionalProperties && typeof s.additionalProperties === 'object') {
    label = ['map of ', ...typeLabel(s.additionalProperties)];
  } else if (Array.isArray(s.type)) {
    label = [s.type.join(' | ')];
  } else if (s.type) {
    label = [s.format ? `${s.type} (${s.format})` : s.type];
  } else {
    label = ['any JSON'];
  }
  if (s.enum) label = [...label, `: ${s.enum.map((v) => JSON.stringify(v)).join(' | ')}`];
  return nullable ? [...label, ' | null'] : label;
}

/** Whether a schema has parts worth drawing below its type (fields, variants, items). */
function hasStructure(schema, seen) {
  const name = refName(schema);
  if (name) return !seen.has(name) && hasStructure(deref(schema), new Set([...seen, name]));
  const {schema: s, nullable} = unwrapNullable(schema);
  if (nullable) return hasStructure(s, seen);
  if (s.type === 'array') return hasStructure(s.items || {}, seen);
  if (s.type === 'object' && s.additionalProperties && typeof s.additionalProperties === 'object') {
    return hasStructure(s.additionalProperties, seen);
  }
  if (s.oneOf || s.anyOf) return true;
  return isObject(s) && Object.keys(objectShape(s, seen).properties).length > 0;
}

/** A schema drawn as a tree: an object's fields with their types, nested objects below them. */
function schemaTree(schema, seen = new Set(), depth = 0) {
  if (depth > MAX_DEPTH) return h('p', {class: 'muted schema-note'}, 'see ', typeLabel(schema));
  const name = refName(schema);
  if (name) {
    if (seen.has(name)) return h('p', {class: 'muted schema-note'}, `${name} again (see above)`);
    return schemaTree(deref(schema), new Set([...seen, name]), depth);
  }
  const {schema: s, nullable} = unwrapNullable(schema);
  if (nullable) return schemaTree(s, seen, depth);
  if (s.type === 'array') return schemaTree(s.items || {}, seen, depth + 1);
  if (s.type === 'object' && s.additionalProperties && typeof s.additionalProperties === 'object') {
    return schemaTree(s.additionalProperties, seen, depth + 1);
  }
  const variants = s.oneOf || s.anyOf;
  if (variants) {
    return h('ol', {class: 'variants'}, variants.map((v) => h('li', {},
      h('span', {class: 'type'}, typeLabel(v)),
      hasStructure(v, seen) ? schemaTree(v, seen, depth + 1) : null)));
  }
  const shape = objectShape(s, seen);
  const fields = Object.entries(shape.properties);
  if (!fields.length) return null;
  return h('ul', {class: 'fields'}, fields.map(([field, sub]) => {
    const target = deref(sub);
    const description = sub.description || target.description;
    const example = sub.example !== undefined ? sub.example : target.example;
    return h('li', {class: 'field-row', data: {field}},
      h('div', {class: 'field-line'},
        h('code', {class: 'field-name'}, field),
        shape.required.has(field) ? h('span', {class: 'required', title: 'always present / required'}, 'required') : null,
        h('span', {class: 'type'}, typeLabel(sub)),
        example !== undefined ? h('span', {class: 'example'}, 'e.g. ', h('code', {}, JSON.stringify(example))) : null),
      prose(description, 'prose field-doc'),
      hasStructure(sub, seen) ? schemaTree(sub, seen, depth + 1) : null);
  }));
}

/** A body (request or answer): its media types, each with its schema's type and tree. */
function content(media, open) {
  return Object.entries(media || {}).map(([type, item]) => {
    const schema = item.schema;
    const tree = schema && hasStructure(schema, new Set()) ? schemaTree(schema) : null;
    const head = h('div', {class: 'media'},
      h('span', {class: 'media-type'}, type),
      schema ? h('span', {class: 'type'}, typeLabel(schema)) : h('span', {class: 'muted'}, 'as the device sends it'));
    const example = item.example !== undefined ? h('pre', {class: 'example-block'}, JSON.stringify(item.example, null, 2)) : null;
    if (!tree) return h('div', {class: 'media-block'}, head, example);
    return h('details', {class: 'media-block', open}, h('summary', {}, head), tree, example);
  });
}

// ---- operations ----

/** The sign-in an operation needs, in words, linked to the scheme's description. */
function security(op) {
  const requirements = op.security || doc.security || [];
  const names = [...new Set(requirements.flatMap((r) => Object.keys(r)))];
  if (!names.length) return h('p', {class: 'security open', testid: 'op-security'}, 'No sign-in needed.');
  return h('p', {class: 'security', testid: 'op-security'}, 'Sign-in: ', names.flatMap((name, i) => [
    i ? ' or ' : '',
    h('a', {href: `#${anchor('scheme', name)}`}, schemeTitle(name)),
  ]));
}

/** How a scheme's credential is sent: `Authorization: Bearer (JWT)`. */
function schemeHow(name) {
  const scheme = (doc.components && doc.components.securitySchemes && doc.components.securitySchemes[name]) || {};
  if (scheme.scheme !== 'bearer') return scheme.type || '';
  return `Authorization: Bearer${scheme.bearerFormat ? ` (${scheme.bearerFormat})` : ''}`;
}

function schemeTitle(name) {
  return `${name} — ${schemeHow(name)}`;
}

function parameters(list) {
  if (!list || !list.length) return null;
  const rows = list.map((p) => h('tr', {},
    h('td', {}, h('code', {}, p.name)),
    h('td', {}, p.in),
    h('td', {}, h('span', {class: 'type'}, typeLabel(p.schema || {}))),
    h('td', {}, p.required ? h('span', {class: 'required'}, 'required') : h('span', {class: 'muted'}, 'optional')),
    h('td', {}, prose(p.description), p.example !== undefined ? h('span', {class: 'example'}, 'e.g. ', h('code', {}, String(p.example))) : null)));
  return h('div', {class: 'op-part'},
    h('h4', {}, 'Parameters'),
    h('div', {class: 'table-wrap'}, h('table', {class: 'table params', testid: 'op-params'},
      h('thead', {}, h('tr', {}, ['Name', 'In', 'Type', '', 'Description'].map((x) => h('th', {}, x)))),
      h('tbody', {}, rows))));
}

function requestBody(body) {
  if (!body) return null;
  return h('div', {class: 'op-part', testid: 'op-body'},
    h('h4', {}, 'Request body', body.required ? '' : ' (optional)'),
    prose(body.description),
    content(body.content, true));
}

function responses(list) {
  const entries = Object.entries(list || {});
  return h('div', {class: 'op-part'},
    h('h4', {}, 'Answers'),
    h('ul', {class: 'responses', testid: 'op-responses'}, entries.map(([status, answer]) => {
      const kind = status[0] === '2' ? 'ok' : status[0] === '4' ? 'client' : 'server';
      return h('li', {class: 'response', data: {status}},
        h('div', {class: 'response-line'},
          h('span', {class: `status status-${kind}`}, status),
          h('span', {}, inline(answer.description || ''))),
        content(answer.content, kind === 'ok'));
    })));
}

function operation(method, path, op) {
  const id = op.operationId || `${method}-${path}`;
  const head = h('summary', {class: 'op-head'},
    h('span', {class: `method method-${method}`}, method.toUpperCase()),
    h('code', {class: 'op-path'}, path),
    h('span', {class: 'op-summary'}, op.summary || ''),
    op.security && op.security.length ? null : h('span', {class: 'badge badge-info'}, 'public'));
  const body = h('div', {class: 'op-body'},
    prose(op.description),
    security(op),
    parameters(op.parameters),
    requestBody(op.requestBody),
    responses(op.responses));
  const el = h('details', {class: 'op', id: anchor('op', id), testid: 'operation', data: {method: method.toUpperCase(), path}}, head, body);
  el.searchText = `${method} ${path} ${op.summary || ''} ${id}`.toLowerCase();
  return el;
}

/** Operations by tag, in the document's tag order (untagged ones last). */
function byTag() {
  const groups = new Map((doc.tags || []).map((t) => [t.name, {tag: t, ops: []}]));
  for (const [path, item] of Object.entries(doc.paths || {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const name = (op.tags && op.tags[0]) || 'other';
      if (!groups.has(name)) groups.set(name, {tag: {name}, ops: []});
      groups.get(name).ops.push(operation(method, path, op));
    }
  }
  return [...groups.values()].filter((g) => g.ops.length);
}

// ---- the page ----

function schemes() {
  const all = Object.entries((doc.components && doc.components.securitySchemes) || {});
  if (!all.length) return null;
  return h('section', {class: 'panel', id: 'authentication'},
    h('h2', {}, 'Signing requests'),
    h('dl', {class: 'schemes'}, all.flatMap(([name, scheme]) => [
      h('dt', {id: anchor('scheme', name)}, h('code', {}, name), ' ', h('span', {class: 'muted'}, schemeHow(name))),
      h('dd', {}, prose(scheme.description)),
    ])));
}

function schemaSection() {
  const all = Object.entries((doc.components && doc.components.schemas) || {});
  return h('section', {class: 'tag-group', id: 'schemas'},
    h('h2', {}, 'Schemas'),
    h('p', {class: 'muted'}, 'Every shape the operations read or answer, by name.'),
    all.map(([name, schema]) => h('details', {class: 'schema panel', id: anchor('schema', name), testid: 'schema', data: {schema: name}},
      h('summary', {}, h('code', {class: 'schema-name'}, name), ' ', h('span', {class: 'type'}, typeLabel(schema))),
      prose(schema.description),
      schemaTree({$ref: `${SCHEMA_PREFIX}${name}`}))));
}

/** Opens the element a `#...` address names (an operation or a schema), and its parents. */
function reveal() {
  const id = decodeURIComponent(location.hash.slice(1));
  const target = id && document.getElementById(id);
  if (!target) return;
  for (let el = target; el; el = el.parentElement) if (el.tagName === 'DETAILS') el.open = true;
  target.scrollIntoView();
}

function render() {
  const groups = byTag();
  const count = groups.reduce((n, g) => n + g.ops.length, 0);
  const filter = h('input', {type: 'search', placeholder: 'Filter: method, path, words…', 'aria-label': 'Filter operations', testid: 'docs-filter'});
  const expand = h('button', {type: 'button', class: 'secondary small', onclick: () => {
    const open = expand.textContent === 'Expand all';
    for (const group of groups) for (const op of group.ops) op.open = open;
    expand.textContent = open ? 'Collapse all' : 'Expand all';
  }}, 'Expand all');
  const sections = groups.map((g) => h('section', {class: 'tag-group', id: anchor('tag', g.tag.name), testid: 'tag-group', data: {tag: g.tag.name}},
    h('h2', {}, g.tag.name),
    prose(g.tag.description, 'prose tag-doc'),
    g.ops));
  filter.addEventListener('input', () => {
    const words = filter.value.toLowerCase().split(/\s+/).filter(Boolean);
    groups.forEach((g, i) => {
      let shown = 0;
      for (const op of g.ops) {
        op.hidden = !words.every((w) => op.searchText.includes(w));
        if (!op.hidden) shown += 1;
      }
      sections[i].hidden = shown === 0;
    });
  });
  const nav = h('nav', {class: 'sidenav docs-nav'},
    h('a', {href: '#authentication'}, 'Signing requests'),
    groups.map((g) => h('a', {href: `#${anchor('tag', g.tag.name)}`}, g.tag.name, h('span', {class: 'count'}, String(g.ops.length)))),
    h('a', {href: '#schemas'}, 'Schemas'));
  const info = doc.info || {};
  const main = h('main', {class: 'content docs-content'},
    h('div', {class: 'docs-intro'},
      h('h1', {}, info.title || 'API', ' ', h('span', {class: 'muted version'}, info.version ? `v${info.version}` : '')),
      prose(info.description),
      h('p', {class: 'muted'}, `OpenAPI ${doc.openapi} · ${count} operations · the document itself: `,
        h('a', {href: '/api/openapi.json', testid: 'docs-json'}, '/api/openapi.json'))),
    schemes(),
    h('div', {class: 'toolbar'}, filter, expand),
    sections,
    schemaSection());
  const top = h('header', {class: 'topbar'},
    h('a', {class: 'brand', href: '/'}, 'AOS'),
    h('span', {class: 'tenant'}, 'REST API'),
    h('span', {class: 'spacer'}),
    h('a', {class: 'docs-top-link', href: '/'}, 'Web client'));
  root.replaceChildren(h('div', {class: 'shell', testid: 'api-docs'}, top, nav, main));
  document.title = `${info.title || 'API'} · AOS`;
  window.addEventListener('hashchange', reveal);
  reveal();
}

async function boot() {
  try {
    const response = await fetch('/api/openapi.json', {headers: {accept: 'application/json'}});
    if (!response.ok) throw new Error(`the server answered ${response.status} for /api/openapi.json`);
    doc = await response.json();
    render();
  } catch (error) {
    root.replaceChildren(h('div', {class: 'banner banner-error', role: 'alert', testid: 'error'},
      h('span', {class: 'banner-text'}, `The API document could not be loaded: ${error.message}`)));
  }
}

boot();
