// Same-origin JSON calls. The session lives in an HttpOnly cookie the browser sends by
// itself: no token is ever read, stored or put in a URL here.

export class Problem extends Error {
  constructor(status, body) {
    super((body && (body.detail || body.title)) || `HTTP ${status}`);
    this.status = status;
    this.reason = (body && body.reason) || `http_${status}`;
  }
}

async function problemOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return new Problem(response.status, body);
}

// A request a full gateway refused at the door (503 `gateway_busy`) did not run: it is
// sent again as it was, POST included, for up to a minute: first after the Retry-After
// asked for, then twice as long at each refusal (up to 8 s), each wait plus up to half
// as much again, so that a refused crowd thins out instead of coming back together.
const BUSY = 'gateway_busy';
const BUSY_PATIENCE_MS = 60000;
const BUSY_WAIT_MAX_S = 8;

function busyWaitMs(response, attempt) {
  const asked = Number(response.headers.get('Retry-After'));
  const first = Number.isFinite(asked) && asked > 0 ? asked : 1;
  const seconds = Math.min(first * 2 ** (attempt - 1), BUSY_WAIT_MAX_S);
  return seconds * 1000 * (1 + Math.random() / 2);
}

// `fetch`, with refusals at the door sent again as above; any other answer, and the
// last refusal once patience runs out, is the caller's to read. WebRTC offers
// (`webrtc.js`) come this way too: a camera must not stay dark for a busy second.
export async function fetchAdmitted(path, init) {
  const began = Date.now();
  let response = await fetch(path, init);
  for (let attempt = 1; response.status === 503; attempt += 1) {
    const problem = await problemOf(response.clone());
    const wait = busyWaitMs(response, attempt);
    if (problem.reason !== BUSY || Date.now() + wait - began > BUSY_PATIENCE_MS) break;
    await new Promise((resolve) => setTimeout(resolve, wait));
    response = await fetch(path, init);
  }
  return response;
}

export async function call(method, path, body, headers = {}) {
  const init = { method, credentials: 'same-origin', headers: { ...headers } };
  if (body instanceof Blob) {
    init.body = body;
    init.headers['Content-Type'] = body.type || 'application/octet-stream';
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const response = await fetchAdmitted(path, init);
  if (!response.ok) throw await problemOf(response);
  if (response.status === 204) return null;
  const type = response.headers.get('content-type') || '';
  return type.includes('json') ? response.json() : response.text();
}

export const get = (path) => call('GET', path);
export const post = (path, body, headers) => call('POST', path, body, headers);

// A staff member's login from a page's username and password fields (the password field
// is emptied whatever happens); the answer says the role.
export async function staffLogIn(usernameField, passwordField) {
  const password = passwordField.value;
  passwordField.value = '';
  return post('/v1/staff/sessions', { username: usernameField.value.trim(), password });
}

// End the session (candidate or staff). An expired one is ended already: only other
// problems are thrown.
export async function logOut() {
  try {
    await call('DELETE', '/v1/sessions/current');
  } catch (error) {
    if (error.status !== 401) throw error;
  }
}
