// The job page: DescribeTrainingJob laid out, the logs following, the metric charts, Stop and Clone.
import { api, live, el, time, duration } from '/console/static/common.js';

const name = decodeURIComponent(location.pathname.split('/').pop());
const base = `/console/api/jobs/${encodeURIComponent(name)}`;
const $ = (id) => document.getElementById(id);
const logs = { first: null, last: null, older: [] };
const metrics = { last: null, series: new Map(), compared: new Map() };

function kv(target, entries) {
  $(target).replaceChildren(...entries.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v ?? '')]));
}

// An S3 location: there is no S3 console to link to (the object store is trainforge's or the site's),
// so the s3:// URI itself, selectable, with a button that copies it (for `aws s3 cp` and the SDKs).
function s3Uri(uri) {
  const copy = el('button', { class: 'copy', type: 'button', title: 'Copy the URI' }, 'Copy');
  copy.addEventListener('click', () => {
    (navigator.clipboard ? navigator.clipboard.writeText(uri) : Promise.reject(new Error('no clipboard'))).then(() => { copy.textContent = 'Copied'; },
      () => getSelection().selectAllChildren(copy.previousSibling));
  });
  return [el('code', { class: 's3-uri' }, uri), ' ', copy];
}

function render(detail) {
  const d = detail.describe;
  document.title = `${d.TrainingJobName} · trainforge`;
  $('name').textContent = d.TrainingJobName;
  $('status').textContent = d.TrainingJobStatus;
  $('status').className = `status s-${d.TrainingJobStatus}`;
  $('secondary').textContent = d.SecondaryStatus + (detail.queue_position ? ` (queue #${detail.queue_position})` : '');
  $('stop').hidden = d.TrainingJobStatus !== 'InProgress';
  $('clone').href = `/console/create?from=${encodeURIComponent(d.TrainingJobName)}`;
  $('failure').hidden = !d.FailureReason;
  $('failure').textContent = d.FailureReason ? `Failure reason: ${d.FailureReason}` : '';
  const rc = d.ResourceConfig || {}, sc = d.StoppingCondition || {}, alg = d.AlgorithmSpecification || {};
  kv('summary', [['ARN', d.TrainingJobArn], ['Created', time(d.CreationTime)],
    ['Training started', time(d.TrainingStartTime)], ['Training ended', time(d.TrainingEndTime)],
    ['Billable seconds', d.BillableTimeInSeconds], ['Image', alg.TrainingImage || alg.AlgorithmName],
    ['Input mode', alg.TrainingInputMode], ['Instances', rc.InstanceGroups
      ? rc.InstanceGroups.map((g) => `${g.InstanceType} × ${g.InstanceCount}`).join(', ')
      : `${rc.InstanceType} × ${rc.InstanceCount}`], ['Volume', `${rc.VolumeSizeInGB} GB`],
    ['Max runtime', duration(sc.MaxRuntimeInSeconds)], ['Max wait', sc.MaxWaitTimeInSeconds ? duration(sc.MaxWaitTimeInSeconds) : ''],
    ['Role', d.RoleArn]]);
  kv('hyperparameters', Object.entries(d.HyperParameters || {}));
  kv('channels', (d.InputDataConfig || []).map((c) => {
    const s3 = (c.DataSource || {}).S3DataSource || {};
    const mode = ` (${c.InputMode || alg.TrainingInputMode || ''})`;
    return [c.ChannelName, s3.S3Uri ? [s3Uri(s3.S3Uri), mode] : JSON.stringify(c.DataSource) + mode];
  }));
  kv('output', [['Model artifacts', (d.ModelArtifacts || {}).S3ModelArtifacts],
    ['Output path', (d.OutputDataConfig || {}).S3OutputPath], ['Checkpoints', (d.CheckpointConfig || {}).S3Uri]]
    .map(([k, v]) => [k, v ? s3Uri(v) : '']));
  $('timeline').tBodies[0].replaceChildren(...(d.SecondaryStatusTransitions || []).map((t) => el('tr', {},
    el('td', {}, t.Status), el('td', {}, time(t.StartTime)), el('td', {}, time(t.EndTime)), el('td', {}, t.StatusMessage))));
  $('instances').tBodies[0].replaceChildren(...detail.instances.map((i) => el('tr', {}, el('td', {}, i.host),
    el('td', {}, i.state), el('td', {}, i.outcome), el('td', {}, time(i.started_at)), el('td', {}, time(i.ended_at)))));
  const hosts = $('log-host');
  for (const i of detail.instances) {
    if (![...hosts.options].some((o) => o.value === i.host)) hosts.append(el('option', { value: i.host }, i.host));
  }
}

// --- logs ------------------------------------------------------------------------------------------
function logLine(l) {  // a thousand at a time: built by hand, not by el()
  const line = document.createElement('div');
  if (l.kind === 'trainforge') line.className = 'tf';
  line.dataset.host = l.host;
  line.dataset.id = l.id;
  const host = document.createElement('span');
  host.className = 'host';
  host.textContent = `${l.host} `;
  line.append(host, l.m);
  return line;
}

function logQuery(extra) {
  const p = new URLSearchParams(extra);
  if ($('log-kind').value) p.set('kind', $('log-kind').value);
  if ($('log-search').value) p.set('q', $('log-search').value);
  return `${base}/logs?${p}`;
}

function applyHostFilter() {
  const host = $('log-host').value;
  for (const line of $('logs').children) line.hidden = Boolean(host) && line.dataset.host !== host;
}

function logsShown() {
  const box = $('logs');
  if ($('log-host').value) applyHostFilter();
  $('log-count').textContent = `${box.children.length + logs.older.length} line(s) shown`;
  if ($('log-follow').checked) box.scrollTop = box.scrollHeight;
}

// A page of the newest lines: the last FIRST_SCREEN now, the others (above, out of view) by showOlder(),
// once the charts are drawn: laying out a thousand lines costs the page 0.2-0.7 s.
const FIRST_SCREEN = 100;
function showNewest(page) {
  logs.older = page.lines.slice(0, -FIRST_SCREEN);
  $('logs').replaceChildren(...page.lines.slice(-FIRST_SCREEN).map(logLine));
  logs.first = page.lines.length ? page.lines[0].id : null;
  logs.last = page.last_id;
  $('log-earlier').hidden = !page.more_before;
}

function showOlder() {
  if (!logs.older.length) return;
  $('logs').prepend(...logs.older.map(logLine));
  logs.older = [];
  logsShown();
}

async function loadLogs(reset) {
  if (reset || logs.last === null) {
    showNewest(await api(logQuery({})));
    if (reset) setTimeout(showOlder);  // a new search or kind: no charts to wait for
  } else {
    for (;;) {
      const page = await api(logQuery({ after: logs.last, limit: 5000 }));
      $('logs').append(...page.lines.map(logLine));
      logs.last = page.last_id;
      if (!page.more_after) break;
    }
  }
  logsShown();
}

async function loadEarlier() {
  showOlder();
  const page = await api(logQuery({ before: logs.first }));
  $('logs').prepend(...page.lines.map(logLine));
  if (page.lines.length) logs.first = page.lines[0].id;
  $('log-earlier').hidden = !page.more_before;
  applyHostFilter();
}

// --- charts ----------------------------------------------------------------------------------------
function merge(target, answer) {
  for (const s of answer.series) {
    const key = `${s.kind}|${s.name}|${s.host}`;
    const have = target.get(key);
    if (have) { have.t.push(...s.t); have.v.push(...s.v); } else target.set(key, { ...s });
  }
}

function chartId(kind, metric, host) {
  return `chart-${kind}-${metric}${host ? '-' + host : ''}`.replace(/[^A-Za-z0-9_-]/g, '_');
}

// The chart library: uPlot (from the server's uplot-python package, a deferred script of the page's
// <head>, so it has run before this module). A chart is redrawn from its series whenever they change:
// each series its own times, joined on one time axis (uPlot.join) with gaps spanned.
const COLORS = ['#2459d6', '#d9480f', '#2b8a3e', '#862e9c', '#c92a2a', '#1098ad', '#e67700', '#5c940d'];
const charts = new Map();  // chart id -> {plot: uPlot, div, series: label -> {t, v, reduced}, drawn: labels}
window.consoleCharts = charts;

function plot(kind, metric, host, label, s) {
  const id = chartId(kind, metric, kind === 'instance' ? host : '');
  let chart = charts.get(id);
  if (!chart) {
    const div = el('div', { id, class: 'chart', 'data-metric': metric });
    $(kind === 'instance' ? 'instance-charts' : 'algorithm-charts').append(div);
    chart = { plot: null, div, title: kind === 'instance' ? `${metric} (${host})` : metric, series: new Map(), drawn: '' };
    charts.set(id, chart);
  }
  chart.series.set(label, { t: s.t, v: s.v, reduced: s.reduced });
}

// the scales' ranges: the data's, time as it is, values padded as uPlot does; around a single sample a
// minute of time (uPlot's own would span years) and a tenth of the value
function timeRange(u, min, max) {
  const xs = u.data?.[0] ?? [];
  if (!xs.length) return [Date.now() / 1000 - 60, Date.now() / 1000];
  [min, max] = [xs[0], xs[xs.length - 1]];  // uPlot 1.6 widens one sample by 1000 days itself
  return max - min < 10 ? [(min + max) / 2 - 30, (min + max) / 2 + 30] : [min, max];
}
function valueRange(_u, min, max) {
  if (min == null) return [0, 1];
  if (min === max) { const pad = Math.abs(min) * 0.1 || 1; return [min - pad, max + pad]; }
  return uPlot.rangeNum(min, max, 0.1, true);
}
// tick labels to 6 significant digits (uPlot's own keep 3 decimals: 0.0004 and 0.0006 both read 0.001),
// the axis as wide as its longest label
const valueLabels = (_u, ticks) => ticks.map((v) => String(+v.toPrecision(6)));
const valueAxisSize = (_u, labels) => 24 + 7 * Math.max(3, ...(labels ?? []).map((l) => l.length));

function draw(chart) {
  const labels = [...chart.series.keys()];
  const data = uPlot.join([...chart.series.values()].map((s) => [s.t, s.v]));
  if (chart.plot && chart.drawn === labels.join('\n')) { chart.plot.setData(data); return; }
  if (chart.plot) chart.plot.destroy();  // a series added (an overlaid job): drawn anew
  const series = [{}, ...labels.map((label, i) => ({ label, stroke: COLORS[i % COLORS.length], spanGaps: true,
    // markers for the samples themselves; a reduced series' points are bucket extremes: its line alone
    points: { show: !chart.series.get(label).reduced } }))];
  chart.plot = new uPlot({ title: chart.title, width: chart.div.clientWidth || 400, height: 250,
    scales: { x: { time: true, range: timeRange }, y: { range: valueRange } }, axes: [{}, { values: valueLabels, size: valueAxisSize }],
    series }, data, chart.div);
  chart.drawn = labels.join('\n');
}

const resized = new ResizeObserver(() => {
  for (const c of charts.values()) if (c.plot && c.div.clientWidth) c.plot.setSize({ width: c.div.clientWidth, height: 250 });
});
resized.observe($('algorithm-charts'));
resized.observe($('instance-charts'));

function drawCharts() {
  for (const s of metrics.series.values()) plot(s.kind, s.name, s.host, s.host || name, s);
  for (const [job, series] of metrics.compared) {
    for (const s of series.values()) if (s.kind === 'algorithm') plot('algorithm', s.name, s.host, `${job} ${s.host}`, s);
  }
  for (const chart of charts.values()) draw(chart);
  if (charts.size) document.body.dataset.chartedAt ||= String(performance.now());
}

async function loadMetrics() {
  const answer = await api(`${base}/metrics` + (metrics.last === null ? '' : `?after=${metrics.last}`));
  merge(metrics.series, answer);
  metrics.last = answer.last_id;
  try { drawCharts(); } catch (e) { $('error').textContent = `charts: ${e.message}`; }
}

async function compare() {
  metrics.compared.clear();
  for (const job of $('compare').value.split(',').map((s) => s.trim()).filter(Boolean)) {
    const series = new Map();
    merge(series, await api(`/console/api/jobs/${encodeURIComponent(job)}/metrics`));
    metrics.compared.set(job, series);
  }
  try { drawCharts(); } catch (e) { $('error').textContent = `charts: ${e.message}`; }
}

// --- the whole page ---------------------------------------------------------------------------------
async function refresh() {
  // the description and the logs are shown as they come, not after the (longer) metric series
  const charted = loadMetrics();
  try {
    await Promise.all([api(base).then(render), loadLogs(false)]);
    $('error').textContent = '';
  } catch (e) { $('error').textContent = e.message; }
  if (!document.body.dataset.readyAt && location.hash === '#logs') $('logs').scrollIntoView();  // the jobs list's link
  document.body.dataset.readyAt ||= String(performance.now());
  try { await charted; } catch (e) { $('error').textContent = e.message; }
  showOlder();
  document.body.dataset.ready = String(Number(document.body.dataset.ready || 0) + 1);
}

$('stop').addEventListener('click', async () => {
  if (!confirm(`Stop training job ${name}?`)) return;
  try { await api(`${base}/stop`, { method: 'POST' }); } catch (e) { $('error').textContent = e.message; }
});
$('log-search-go').addEventListener('click', () => loadLogs(true));
$('log-kind').addEventListener('change', () => loadLogs(true));
$('log-host').addEventListener('change', applyHostFilter);
$('log-earlier').addEventListener('click', loadEarlier);
$('compare-apply').addEventListener('click', () => compare().catch((e) => { $('error').textContent = e.message; }));
live(refresh);
