// The web client's shell: sign-in state, header and navigation, hash routing, and each page's
// life (its live subscriptions and timers end when the user leaves it).

import * as api from './api.js';
import * as live from './live.js';
import {h, banners, showError, clearBanners, clearFieldErrors, options, pageHash, showFieldError, showFormError} from './dom.js';
import signInPage from './pages/signin.js';
import dashboard from './pages/dashboard.js';
import devices from './pages/devices.js';
import device from './pages/device.js';
import classes from './pages/classes.js';
import workflows from './pages/workflows.js';
import events from './pages/events.js';
import users from './pages/users.js';
import admin from './pages/admin.js';
import operations from './pages/operations.js';
import broker from './pages/broker.js';

const app = document.getElementById('app');

/** The navigation; `kind` (or any of several) hides an entry from users whose roles give no
 * access to it. */
const NAV = [
  {key: 'dashboard', label: 'Dashboard'},
  {key: 'devices', label: 'Devices', kind: 'devices'},
  {key: 'classes', label: 'Classes & formats', kind: 'classes'},
  {key: 'workflows', label: 'Workflows', kind: 'workflows'},
  {key: 'events', label: 'Events', kind: 'events'},
  {key: 'users', label: 'Users & roles', kind: 'users'},
  {key: 'operations', label: 'Operations', kind: ['messages', 'audit']},
  {key: 'broker', label: 'Broker', kind: 'clients'},
  {key: 'admin', label: 'Platform', platform: true},
];

/** Hash routes (`#/devices/sensor-1`): the captured parts are the page's parameters. */
const ROUTES = [
  [/^dashboard$/, dashboard],
  [/^devices$/, devices],
  [/^devices\/([^/]+)$/, device],
  [/^classes$/, classes],
  [/^workflows(?:\/([^/]+))?$/, workflows],
  [/^events$/, events],
  [/^users$/, users],
  [/^operations$/, operations],
  [/^broker$/, broker],
  [/^admin$/, admin],
];

let current = null; // the context of the page shown
let main = null; // where pages go, once signed in
let nav = null;
let picker = null; // a system administrator's choice of tenant
let tenantNames = []; // the tenants a system administrator may work in

/**
 * What a page gets besides its root element: subscriptions and timers that end with the page,
 * and `task`, which runs an async step and shows its error (unless the page was left meanwhile).
 */
function pageContext() {
  const cleanups = [];
  const ctx = {
    active: true,
    live(name, handler) {
      cleanups.push(live.subscribe(name, handler));
    },
    every(ms, fn) {
      const timer = setInterval(() => ctx.task(fn), ms);
      cleanups.push(() => clearInterval(timer));
    },
    debounce(fn, ms) {
      let timer;
      cleanups.push(() => clearTimeout(timer));
      return (...args) => {
        clearTimeout(timer);
        timer = setTimeout(() => ctx.task(() => fn(...args)), ms);
      };
    },
    async task(fn) {
      try {
        return await fn();
      } catch (error) {
        if (ctx.active) showError(error);
        return undefined;
      }
    },
    /**
     * Handles a form's submit: no page load, its buttons disabled while the call runs, an error
     * the server places at a field shown at that field.
     */
    form(form, fn) {
      form.addEventListener('submit', async (event) => {
        event.preventDefault();
        const buttons = form.querySelectorAll('button');
        buttons.forEach((b) => { b.disabled = true; });
        clearFieldErrors(form);
        try {
          await fn();
        } catch (error) {
          if (ctx.active && !showFieldError(form, error)) {
            if (form.closest('dialog')) showFormError(form, error);
            else showError(error);
          }
        }
        buttons.forEach((b) => { b.disabled = false; });
      });
    },
    leave() {
      ctx.active = false;
      cleanups.forEach((cleanup) => cleanup());
    },
  };
  return ctx;
}

function leavePage() {
  if (current) current.leave();
  current = null;
}

/** A part of the hash as the page named it; a malformed escape is taken as it is. */
function decodePart(part) {
  if (part === undefined) return undefined;
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

/**
 * A system administrator's tenant comes from the link (`?tenant=`) when it names one; else the
 * link is made to name the one worked in. Returns false when the hash was replaced (and routed).
 */
function followTenant(path, search) {
  if (api.currentUser().tenant !== null) return true;
  const named = new URLSearchParams(search).get('tenant');
  if (named && named !== api.tenant() && tenantNames.includes(named)) {
    api.setTenant(named);
    if (picker) picker.value = named;
    live.restart();
  }
  if (named === api.tenant() || !api.tenant()) return true;
  history.replaceState(null, '', pageHash(path.split('/').map(decodePart)));
  route();
  return false;
}

function route() {
  if (!api.isSignedIn()) return;
  const [path, search = ''] = location.hash.replace(/^#\/?/, '').split('?', 2);
  const match = ROUTES.map(([pattern, page]) => [pattern.exec(path), page]).find(([m]) => m);
  if (!match) {
    history.replaceState(null, '', pageHash(['dashboard']));
    route();
    return;
  }
  if (!followTenant(path, search)) return;
  const [m, page] = match;
  leavePage();
  clearBanners();
  current = pageContext();
  const root = h('div', {class: 'page', data: {page: page.nav}});
  main.replaceChildren(banners(), root);
  for (const a of nav.querySelectorAll('a')) {
    a.classList.toggle('active', a.dataset.key === page.nav);
    a.href = pageHash([a.dataset.key]);
  }
  nav.classList.remove('open');
  document.querySelector('[data-testid="menu-toggle"]')?.setAttribute('aria-expanded', 'false');
  document.title = `${page.title} · AOS`;
  const params = m.slice(1).map(decodePart);
  const ctx = current;
  ctx.task(() => page.mount(root, ctx, ...params));
}

function showSignIn(message) {
  live.stop();
  leavePage();
  main = null;
  current = pageContext();
  const root = h('div', {class: 'signin-layout'});
  app.replaceChildren(root);
  document.title = 'Sign in · AOS';
  signInPage.mount(root, current, {message, banners: banners(), onSignedIn: enter});
}

/** A system administrator works in one tenant at a time: the one a link names, else the one
 * remembered, else the first. */
async function chooseTenant() {
  const list = await api.get('/api/tenants', {limit: 1000});
  const names = list.items.map((t) => t.name);
  const linked = new URLSearchParams(location.hash.split('?')[1] || '').get('tenant');
  const chosen = [linked, api.tenant()].find((name) => names.includes(name));
  api.setTenant(chosen || names[0]);
  return names;
}

/** Tenants were created (on the platform page): the picker offers them. */
async function tenantsChanged() {
  if (!picker) return;
  tenantNames = await chooseTenant();
  picker.replaceChildren(...options(tenantNames.map((t) => [t, t]), api.tenant()));
}

function header(me, tenants) {
  const state = h('span', {class: 'live-state', testid: 'live-status', title: 'Live updates'});
  live.onState((value) => {
    state.dataset.state = value;
    state.textContent = value === 'open' ? 'live' : value === 'closed' ? 'offline' : 'connecting…';
  });
  let where;
  if (me.tenant === null) {
    picker = h('select', {testid: 'tenant-picker', 'aria-label': 'Tenant', onchange: () => {
      api.setTenant(picker.value);
      live.restart();
      // The same list in the other tenant (what was open belongs to the one left).
      const section = location.hash.replace(/^#\/?/, '').split(/[/?]/)[0] || 'dashboard';
      location.hash = pageHash([section]);
    }}, tenants.length ? options(tenants.map((t) => [t, t]), api.tenant()) : h('option', {value: ''}, 'no tenant yet'));
    where = h('label', {class: 'tenant'}, 'Tenant ', picker);
  } else {
    where = h('span', {class: 'tenant', testid: 'tenant'}, me.tenant_name || '');
  }
  const signOut = h('button', {type: 'button', class: 'secondary', testid: 'sign-out', onclick: async () => {
    live.stop();
    await api.signOut();
    history.replaceState(null, '', location.pathname);
    showSignIn();
  }}, 'Sign out');
  // The API's documentation is a page of its own (/api/docs): a new tab keeps this one's place.
  const docs = h('a', {class: 'docs-link', href: '/api/docs', target: '_blank', rel: 'noopener', testid: 'api-docs-link'}, 'API docs');
  // On a narrow screen the navigation folds away behind this button.
  const menu = h('button', {type: 'button', class: 'secondary menu-toggle', testid: 'menu-toggle', 'aria-expanded': 'false', 'aria-controls': 'sidenav', onclick: () => {
    const open = nav.classList.toggle('open');
    menu.setAttribute('aria-expanded', String(open));
  }}, 'Menu');
  return h('header', {class: 'topbar'},
    menu,
    h('a', {class: 'brand', href: pageHash(['dashboard'])}, 'AOS'),
    where,
    h('span', {class: 'spacer'}),
    docs,
    state,
    h('span', {class: 'user', testid: 'user'}, me.login),
    signOut);
}

function navigation(me) {
  const allowed = (item) => !item.kind || [item.kind].flat().some((kind) => api.can(kind));
  const items = NAV.filter((item) => (item.platform ? me.tenant === null : allowed(item)));
  return h('nav', {class: 'sidenav', id: 'sidenav'}, items.map((item) =>
    h('a', {href: `#/${item.key}`, testid: `nav-${item.key}`, data: {key: item.key}}, item.label)));
}

/** After signing in (or resuming the tab's session): the shell, live updates, the page asked for. */
async function enter() {
  leavePage();
  const me = api.currentUser();
  const tenants = me.tenant === null ? await chooseTenant() : [];
  tenantNames = tenants;
  nav = navigation(me);
  main = h('main', {class: 'content'});
  app.replaceChildren(h('div', {class: 'shell'}, header(me, tenants), nav, main));
  live.start();
  if (!location.hash || location.hash === '#/') history.replaceState(null, '', pageHash(['dashboard']));
  route();
}

async function boot() {
  api.onSessionLost((error) => showSignIn(error.message));
  window.addEventListener('hashchange', route);
  window.addEventListener('aos:tenants-changed', () => tenantsChanged().catch(showError));
  if (api.hasStoredSession()) {
    try {
      await api.resume();
      await enter();
      return;
    } catch (error) {
      showSignIn(error.message);
      return;
    }
  }
  showSignIn();
}

boot();
