// The jobs page: ListTrainingJobs's filters, sort orders and pages, refreshed on every change of the store.
import { api, live, el, time, duration, signOut } from '/console/static/common.js';

const form = document.getElementById('filters');
const tbody = document.querySelector('#jobs tbody');
const tokens = [null];  // the NextToken of each page seen so far; the last is the current page's

function query() {
  const params = new URLSearchParams();
  for (const [k, v] of new FormData(form)) {
    if (!v) continue;
    params.set(k, k.startsWith('CreationTime') ? String(new Date(v).getTime() / 1000) : v);
  }
  const token = tokens[tokens.length - 1];
  if (token) params.set('NextToken', token);
  return params;
}

function capacityText(c) {
  const gib = (mb) => (mb / 1024).toFixed(1);
  const u = c.in_use, t = c.total;
  return `Capacity in use: ${u.instances} instances · ${u.cpus} of ${t.cpus} CPUs · ${gib(u.memory_mb)} of ` +
    `${gib(t.memory_mb)} GiB memory · ${u.gpus} of ${t.gpus} GPUs`;
}

function row(j) {
  const href = `/console/jobs/${encodeURIComponent(j.TrainingJobName)}`;
  const link = [el('a', { href }, j.TrainingJobName), ' ', el('a', { href: `${href}#logs`, class: 'muted logs-link' }, 'logs')];
  const queue = j.QueuePosition ? el('span', { title: j.PendingReason || '' }, `#${j.QueuePosition}`,
    j.PendingReason ? el('div', { class: 'muted' }, j.PendingReason) : null) : '';
  const metrics = (j.FinalMetrics || []).map((m) => `${m.MetricName}=${Number(m.Value).toPrecision(4)}`).join(' ');
  return el('tr', { 'data-job': j.TrainingJobName, 'data-status': j.TrainingJobStatus },
    el('td', {}, link), el('td', { class: `status s-${j.TrainingJobStatus}` }, j.TrainingJobStatus),
    el('td', {}, j.SecondaryStatus), el('td', {}, queue), el('td', {}, j.Instances.join(', ')),
    el('td', {}, time(j.CreationTime)), el('td', {}, duration(j.DurationSeconds)), el('td', {}, metrics));
}

async function refresh() {
  const page = await api('/console/api/jobs?' + query());
  document.getElementById('error').textContent = '';
  tbody.replaceChildren(...page.jobs.map(row));
  document.getElementById('capacity').textContent =
    `${capacityText(page.capacity)} · ${page.queue_length} job(s) waiting`;
  document.getElementById('next').disabled = !page.next_token;
  document.getElementById('next').dataset.token = page.next_token || '';
  document.getElementById('prev').disabled = tokens.length < 2;
  document.getElementById('page-info').textContent = `page ${tokens.length} · ${page.jobs.length} job(s)`;
  document.body.dataset.readyAt ||= String(performance.now());
  document.body.dataset.ready = String(Number(document.body.dataset.ready || 0) + 1);
}

const reload = () => refresh().catch((e) => { document.getElementById('error').textContent = e.message; });

form.addEventListener('submit', (ev) => { ev.preventDefault(); tokens.length = 1; reload(); });
document.getElementById('next').addEventListener('click', (ev) => { tokens.push(ev.target.dataset.token); reload(); });
document.getElementById('prev').addEventListener('click', () => { tokens.pop(); reload(); });
if (document.body.dataset.signout) {
  const b = document.getElementById('signout'); b.hidden = false; b.addEventListener('click', signOut);
}
live(reload);
