// DOM helpers shared by every page. Everything is built with createElement and textContent so
// that data from the server is never parsed as HTML, and nothing sets a `style` attribute (the
// Content-Security-Policy forbids inline styles).

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

/** Builds a hash link to a page of the client: `link(['devices', uid], uid)`. */
export function link(parts, text, props = {}) {
  return h('a', {href: `#/${parts.map(encodeURIComponent).join('/')}`, ...props}, text);
}
