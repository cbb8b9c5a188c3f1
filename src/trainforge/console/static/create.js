// The create form, prefilled from an existing job (?from=NAME): the request it was created with.
import { api } from '/console/static/common.js';

const $ = (id) => document.getElementById(id);
// What DescribeTrainingJob adds to a request: the service's own members, not the caller's.
const SERVICE_MEMBERS = ['TrainingJobArn', 'TrainingJobStatus', 'SecondaryStatus', 'FailureReason', 'ModelArtifacts',
  'CreationTime', 'LastModifiedTime', 'TrainingStartTime', 'TrainingEndTime', 'SecondaryStatusTransitions',
  'FinalMetricDataList', 'TrainingTimeInSeconds', 'BillableTimeInSeconds', 'DebugRuleEvaluationStatuses',
  'ProfilerRuleEvaluationStatuses', 'ProfilingStatus', 'WarmPoolStatus', 'TrainingJobName', 'LabelingJobArn',
  'AutoMLJobArn', 'TuningJobArn'];

async function prefill() {
  const from = new URLSearchParams(location.search).get('from');
  let request = {};
  if (from) {
    const d = (await api(`/console/api/jobs/${encodeURIComponent(from)}`)).describe;
    request = Object.fromEntries(Object.entries(d).filter(([k]) => !SERVICE_MEMBERS.includes(k)));
    $('job-name').value = `${from}-clone`.slice(0, 63);
  }
  $('request').value = JSON.stringify(request, null, 2);
}

$('create').addEventListener('click', async () => {
  try {
    const request = { ...JSON.parse($('request').value), TrainingJobName: $('job-name').value };
    const answer = await api('/console/api/jobs', { method: 'POST', body: JSON.stringify(request) });
    location.href = answer.url;
  } catch (e) { $('error').textContent = e.message; }
});
prefill().catch((e) => { $('error').textContent = e.message; });
