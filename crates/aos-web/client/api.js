// The REST client: the session's tokens, the system administrator's tenant, errors in words.
//
// The access token lives only in this module's memory; the refresh token in sessionStorage (so a
// reload of the tab keeps the session, a new tab or a closed browser does not). Neither ever goes
// into a URL, localStorage or a cookie.

const REFRESH_KEY = 'aos.refresh';
const TENANT_KEY = 'aos.tenant';

/** Calls that are not about one tenant's objects: they never carry `tenant=`. */
const PLATFORM_PATH = /^\/api\/(auth\/|me$|tenants|nodes|queues\/|broker\/|version|openapi\.json)/;

export class ApiError extends Error {
  constructor(message, status = 0, code = 'network', field = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

const UNREACHABLE = 'The server cannot be reached. Check the connection and try again.';
const SESSION_OVER = 'Your session has ended. Please sign in again.';

let accessToken = null;
let me = null;
let refreshing = null; // the one refresh in flight: a refresh token may be spent only once
let sessionLost = () => {};

/** Called when the session cannot go on (the refresh token was refused). */
export function onSessionLost(handler) {
  sessionLost = handler;
}

export function currentUser() {
  return me;
}

export function isSignedIn() {
  return accessToken !== null && me !== null;
}

export function hasStoredSession() {
  return sessionStorage.getItem(REFRESH_KEY) !== null;
}

export function accessHeader() {
  return {Authorization: `Bearer ${accessToken}`};
}

const LEVELS = ['none', 'view', 'manage', 'full'];

/**
 * Whether the user's roles grant a kind of object (`devices`, `users`, …) at least `level`:
 * `view` to see it, `manage` to create and change it, `full` to delete it.
 */
export function can(kind, level = 'view') {
  const granted = me && me.grants && me.grants.permissions ? me.grants.permissions[kind] : null;
  return LEVELS.indexOf(granted || 'none') >= LEVELS.indexOf(level);
}

/** The tenant a system administrator works in (null for a tenant's user). */
export function tenant() {
  return me && me.tenant === null ? sessionStorage.getItem(TENANT_KEY) : null;
}

export function setTenant(name) {
  if (name) sessionStorage.setItem(TENANT_KEY, name);
  else sessionStorage.removeItem(TENANT_KEY);
}

/**
 * The URL of an API call, with its query and, for a system administrator, its tenant (unless
 * `platform`: a call about the platform itself).
 */
export function apiUrl(path, query = {}, platform = false) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) {
    if (value !== undefined && value !== null && value !== '') params.set(key, value);
  }
  const chosen = tenant();
  if (chosen && !platform && !PLATFORM_PATH.test(path)) params.set('tenant', chosen);
  const text = params.toString();
  return text ? `${path}?${text}` : path;
}

async function send(method, path, {query, body, auth = true, platform = false} = {}) {
  const headers = {Accept: 'application/json'};
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (auth && accessToken) Object.assign(headers, accessHeader());
  try {
    return await fetch(apiUrl(path, query, platform), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(UNREACHABLE);
  }
}

/** The JSON of an answer, or an ApiError with the server's message. */
async function decode(response) {
  let text;
  try {
    text = await response.text();
  } catch {
    throw new ApiError(UNREACHABLE);
  }
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = null;
    }
  }
  if (response.ok) return data;
  const error = data && data.error ? data.error : {};
  const message = error.message || `The server answered ${response.status} ${response.statusText}`.trim();
  throw new ApiError(message, response.status, error.code || 'http', error.field || null);
}

/** Calls the API; on a 401 refreshes the session once and tries again. */
async function request(method, path, options = {}) {
  const used = accessToken;
  let response = await send(method, path, options);
  if (response.status === 401 && options.auth !== false) {
    // Another call may have refreshed meanwhile: then just retry with the new token.
    if (accessToken === used) await renew();
    response = await send(method, path, options);
  }
  return decode(response);
}

export const get = (path, query) => request('GET', path, {query});
/** A system administrator's GET about the platform, not the tenant worked in. */
export const getPlatform = (path, query) => request('GET', path, {query, platform: true});
export const post = (path, body = {}, query) => request('POST', path, {body, query});
export const put = (path, body = {}, query) => request('PUT', path, {body, query});
export const patch = (path, body = {}, query) => request('PATCH', path, {body, query});
export const del = (path, query) => request('DELETE', path, {query});

function keep(pair) {
  accessToken = pair.access_token;
  sessionStorage.setItem(REFRESH_KEY, pair.refresh_token);
}

function forget() {
  accessToken = null;
  me = null;
  sessionStorage.removeItem(REFRESH_KEY);
}

/** Trades the refresh token for a new pair; throws an ApiError with code `session_over` if refused. */
function refresh() {
  if (!refreshing) {
    refreshing = (async () => {
      const token = sessionStorage.getItem(REFRESH_KEY);
      if (!token) throw new ApiError(SESSION_OVER, 401, 'session_over');
      const response = await send('POST', '/api/auth/refresh', {body: {refresh_token: token}, auth: false});
      if ([400, 401, 403, 422].includes(response.status)) {
        forget();
        throw new ApiError(SESSION_OVER, response.status, 'session_over');
      }
      keep(await decode(response));
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

/** Refreshes the session for a call that got a 401; tells the app when the session is over. */
export async function renew() {
  try {
    await refresh();
  } catch (error) {
    if (error.code === 'session_over') sessionLost(error);
    throw error;
  }
}

async function loadMe() {
  me = await get('/api/me');
}

export async function signIn(login, password) {
  keep(await request('POST', '/api/auth/sign-in', {body: {login, password}, auth: false}));
  await loadMe();
}

/** Picks the session of this tab up again after a reload (the access token was not kept). */
export async function resume() {
  await refresh();
  await loadMe();
}

export async function signOut() {
  try {
    let response = await send('POST', '/api/auth/sign-out', {body: {refresh_token: sessionStorage.getItem(REFRESH_KEY)}});
    if (response.status === 401) {
      await refresh();
      response = await send('POST', '/api/auth/sign-out', {body: {refresh_token: sessionStorage.getItem(REFRESH_KEY)}});
    }
  } catch {
    // The session ends on this side all the same; the server's copy expires on its own.
  }
  forget();
}
