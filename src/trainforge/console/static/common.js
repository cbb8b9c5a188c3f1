// Shared by the console's pages: JSON calls with the CSRF token, the change stream, formatting.
export const csrf = document.querySelector('meta[name="csrf-token"]').content;

export async function api(path, options = {}) {
  const headers = { 'X-CSRF-Token': csrf, ...(options.body ? { 'Content-Type': 'application/json' } : {}) };
  const early = options.method ? undefined : window.tfPending?.[path];  // started by the page's <head>
  if (early) delete window.tfPending[path];
  const resp = await (early || fetch(path, { credentials: 'same-origin', ...options, headers }));
  const body = await resp.json().catch(() => ({}));
  if (resp.status === 401) { location.href = '/console/signin'; }
  if (!resp.ok) { const e = new Error(body.message || resp.statusText); e.code = body.code; throw e; }
  return body;
}

// Calls `refresh` once now and again after each change of the store (server-sent events); never
// runs two refreshes at once, and one that was asked for meanwhile runs after the current one.
export function live(refresh) {
  let running = false, again = false;
  async function run() {
    if (running) { again = true; return; }
    running = true;
    try { await refresh(); } catch (e) { console.error(e); }
    running = false;
    if (again) { again = false; run(); }
  }
  // the store's version when the page was served: the stream tells at once of a change since then only
  const since = document.querySelector('meta[name="change-version"]')?.content ?? '';
  const source = new EventSource(`/console/api/events?since=${since}`);
  source.onmessage = run;
  return run();
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') node.className = v; else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  return node;
}

export const time = (t) => (t ? new Date(t * 1000).toISOString().replace('T', ' ').slice(0, 19) : '');

export function duration(s) {
  s = Math.round(s || 0);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h}h ${m}m` : m ? `${m}m ${s % 60}s` : `${s}s`;
}

export function signOut() {
  api('/console/api/signout', { method: 'POST' }).then(() => { location.href = '/console/signin'; });
}
