// DOM helpers shared by every page. Everything is built with createElement and textContent so
// that data from the server is never parsed as HTML, and nothing sets a `style` attribute (the
// Content-Security-Policy forbids inline styles).

import * as api from './api.js';

/** Properties set on the element object rather than as attributes. */
const PROPERTIES = new Set(['value', 'checked', 'disabled', 'selected', 'hidden', 'multiple', 'required']);

/**
 * Creates an element: `h('td', {class: 'num', testid: 'kpi', data: {kpi: 'x'}, onclick: fn}, 'text', node)`.
 * Children may be strings, numbers, nodes, arrays of them, or null/false (skipped).
 */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key === 'testid') el.dataset.testid = value;
    else if (key === 'data') Object.assign(el.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (PROPERTIES.has(key)) el[key] = value;
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

// ---- banners: one error and one notice element, moved into whichever layout is shown ----

const errorBanner = h('div', {class: 'banner banner-error', role: 'alert', testid: 'error', hidden: true});
const noticeBanner = h('div', {class: 'banner banner-notice', role: 'status', testid: 'notice', hidden: true});

/** The banners' container, to be placed by the current layout. */
export function banners() {
  return h('div', {class: 'banners'}, errorBanner, noticeBanner);
}

function fill(banner, text) {
  // The cross is drawn by CSS, so the banner's text is the message alone.
  const close = h('button', {type: 'button', class: 'banner-close', 'aria-label': 'Dismiss', title: 'Dismiss', onclick: () => { banner.hidden = true; }});
  banner.replaceChildren(h('span', {class: 'banner-text'}, text), close);
  banner.hidden = false;
}

/** Shows an error in words: an ApiError carries the server's message or a network explanation. */
export function showError(error) {
  noticeBanner.hidden = true;
  fill(errorBanner, error && error.message ? error.message : String(error));
  // A failed call is the user's news; anything else thrown is a bug worth a trace too.
  if (error instanceof Error && error.name !== 'ApiError') console.error(error);
}

export function showNotice(text) {
  errorBanner.hidden = true;
  fill(noticeBanner, text);
}

export function clearBanners() {
  errorBanner.hidden = true;
  noticeBanner.hidden = true;
}

// ---- formatting ----

export function fmtTime(iso) {
  if (!iso) return '—';
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
}

/** "12 s ago", "5 min ago"… for recent times; the exact time is in the tooltip. */
export function timeCell(iso) {
  if (!iso) return h('span', {class: 'muted'}, '—');
  const seconds = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
  let text;
  if (Number.isNaN(seconds)) text = String(iso);
  else if (seconds < 0 || seconds >= 7 * 86400) text = fmtTime(iso);
  else if (seconds < 60) text = `${seconds} s ago`;
  else if (seconds < 3600) text = `${Math.floor(seconds / 60)} min ago`;
  else if (seconds < 86400) text = `${Math.floor(seconds / 3600)} h ago`;
  else text = `${Math.floor(seconds / 86400)} d ago`;
  return h('time', {datetime: iso, title: fmtTime(iso)}, text);
}

/** An RFC 3339 time from a `datetime-local` input (the browser's time zone), or undefined. */
export function instant(input) {
  if (!input.value) return undefined;
  const date = new Date(input.value);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}

export function fmtValue(value) {
  if (value === null || value === undefined) return '—';
  if (typeof value === 'object') return JSON.stringify(value);
  return String(value);
}

export function badge(text, kind) {
  return h('span', {class: `badge badge-${kind}`}, text);
}

export function statusBadge(status) {
  return h('span', {class: `badge badge-${status === 'online' ? 'online' : 'offline'}`, testid: 'device-status'}, status || 'unknown');
}

export function levelBadge(level) {
  const known = ['normal', 'warning', 'faulty'].includes(level) ? level : 'other';
  return h('span', {class: `badge badge-${known}`}, level || '—');
}

// ---- building blocks ----

/** A table; `rows` are <tr> elements; an empty list shows `empty` across the columns. */
export function dataTable(headers, rows, empty, props = {}) {
  const head = h('tr', {}, headers.map((x) => (x instanceof Node ? x : h('th', {}, x))));
  const body = rows.length ? rows : [h('tr', {class: 'empty'}, h('td', {colspan: headers.length}, empty))];
  return h('table', {class: 'table', ...props}, h('thead', {}, head), h('tbody', {}, body));
}

/** A labelled form control. */
export function field(label, control) {
  return h('label', {class: 'field'}, h('span', {class: 'field-label'}, label), control);
}

export function panel(title, ...content) {
  return h('section', {class: 'panel'}, title ? h('h2', {}, title) : null, content);
}

/** Option elements for a <select>: `[[value, label], …]`. */
export function options(pairs, selected) {
  return pairs.map(([value, label]) => h('option', {value, selected: value === selected}, label));
}

/**
 * The hash of a page of the client (`#/devices/sensor-1`); a system administrator's carries the
 * tenant worked in (`?tenant=acme`), so that the link shows the same to whoever opens it.
 */
export function pageHash(parts) {
  const tenant = api.tenant();
  const query = tenant ? `?tenant=${encodeURIComponent(tenant)}` : '';
  return `#/${parts.map(encodeURIComponent).join('/')}${query}`;
}

/** Builds a hash link to a page of the client: `link(['devices', uid], uid)`. */
export function link(parts, text, props = {}) {
  return h('a', {href: pageHash(parts), ...props}, text);
}

// ---- dialogs and forms ----

/**
 * A modal dialog (`<dialog>`, closed with Escape or its Close button); removed from the page
 * when closed. Returns the element; `close()` on it closes it.
 */
export function dialog(title, ...content) {
  const close = h('button', {type: 'button', class: 'secondary', testid: 'dialog-close', onclick: () => box.close()}, 'Close');
  const box = h('dialog', {class: 'dialog', testid: 'dialog', 'aria-label': title},
    h('div', {class: 'dialog-head'}, h('h2', {}, title), close),
    content);
  box.addEventListener('close', () => box.remove());
  document.body.append(box);
  box.showModal();
  return box;
}

/** Shows a secret the server gives out once (a password, an API key), with what to do with it. */
export function secretDialog(title, explanation, secret) {
  const value = h('code', {class: 'secret', testid: 'secret'}, secret);
  const copy = h('button', {type: 'button', testid: 'secret-copy', onclick: async () => {
    try {
      await navigator.clipboard.writeText(secret);
      copy.textContent = 'Copied';
    } catch {
      copy.textContent = 'Select it and copy it';
    }
  }}, 'Copy');
  return dialog(title, h('p', {}, explanation), h('div', {class: 'secret-row'}, value, copy),
    h('p', {class: 'muted'}, 'It is not shown again: keep it somewhere safe now.'));
}

/** Clears the errors a form shows at its fields. */
export function clearFieldErrors(form) {
  for (const el of form.querySelectorAll('.field-error')) el.remove();
  for (const el of form.querySelectorAll('[aria-invalid]')) el.removeAttribute('aria-invalid');
}

/**
 * Shows an API error at the form's control the error names (`field`, matched against the
 * controls' `name`, or `data-fields`: `permissions grants`); returns whether it found one.
 */
export function showFieldError(form, error) {
  const name = error && error.field;
  if (!name) return false;
  const top = String(name).split(/[.[]/)[0];
  const control = [...form.querySelectorAll('[name], [data-fields]')].find((el) =>
    el.name === name || el.name === top || (el.dataset.fields || '').split(' ').includes(top));
  if (!control) return false;
  control.setAttribute('aria-invalid', 'true');
  const message = h('span', {class: 'field-error', role: 'alert', testid: 'field-error'}, error.message);
  (control.closest('.field') || control).after(message);
  control.focus();
  return true;
}

/**
 * The JSON typed into the form's control `field` (`fallback` when it is left empty); a mistake
 * is an error at that control.
 */
export function jsonField(text, field, fallback) {
  if (!text.trim()) return fallback;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new api.ApiError(`This is not valid JSON: ${error.message}`, 0, 'invalid', field);
  }
}

/** Has the browser save `text` as a file called `name`. */
export function download(name, text, type) {
  const url = URL.createObjectURL(new Blob([text], {type}));
  const a = h('a', {href: url, download: name, hidden: true});
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/** Shows an error the form's fields do not name at the foot of the form (in a dialog, where the
 * page's banner would be hidden behind it). */
export function showFormError(form, error) {
  form.append(h('p', {class: 'field-error', role: 'alert', testid: 'form-error'}, error && error.message ? error.message : String(error)));
}

/** A button that asks before it acts: `confirmButton('Delete', 'Delete sensor-1?', fn)`. */
export function confirmButton(label, question, action, props = {}) {
  return h('button', {type: 'button', class: 'small danger', ...props, onclick: () => {
    if (window.confirm(question)) action();
  }}, label);
}

/**
 * A pager's parts for a page of a list: "21–40 of 95", Previous, Next. `go(offset)` shows the
 * page starting there. `prefix` names the test ids (`${prefix}-count`, `-prev`, `-next`).
 */
export function pager({offset, limit, total, shown, noun, prefix = 'page'}, go) {
  const last = offset + shown;
  return [
    h('span', {class: 'muted', testid: `${prefix}-count`}, total ? `${offset + 1}–${last} of ${total}` : `0 ${noun}`),
    h('button', {type: 'button', class: 'secondary', testid: `${prefix}-prev`, disabled: offset === 0, onclick: () => go(Math.max(0, offset - limit))}, 'Previous'),
    h('button', {type: 'button', class: 'secondary', testid: `${prefix}-next`, disabled: last >= total, onclick: () => go(offset + limit)}, 'Next'),
  ];
}

/**
 * A filtered list in pages: `fields` are the filter's controls (each a [label, control]), `load`
 * gets the query and returns `{items, total}`, `draw(items, page, reload)` turns the items into
 * what is shown (an element, or several). `deepest`: how far the list pages at most.
 */
export function filteredList(ctx, {testid, fields, query, load, draw, noun, limit = 50, deepest = Infinity}) {
  const box = h('div', {class: 'table-wrap'});
  const pages = h('div', {class: 'pager'});
  let offset = 0;
  let loads = 0;
  async function show() {
    const mine = ++loads;
    const page = await load({...query(), limit, offset});
    if (!ctx.active || mine !== loads) return;
    const drawn = draw(page.items, page, show);
    box.replaceChildren(...(Array.isArray(drawn) ? drawn : [drawn]));
    pages.replaceChildren(...pager({offset, limit, total: Math.min(page.total, deepest), shown: page.items.length, noun, prefix: testid}, (to) => {
      offset = to;
      ctx.task(show);
    }));
  }
  const form = h('form', {class: 'inline-form toolbar', testid: `${testid}-filter`},
    fields.map(([label, control]) => field(label, control)),
    h('button', {type: 'submit', class: 'secondary', testid: `${testid}-apply`}, 'Show'));
  ctx.form(form, async () => {
    offset = 0;
    await show();
  });
  return {element: h('div', {}, form, box, pages), show};
}
