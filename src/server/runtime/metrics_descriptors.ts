import type { ListMetricDescriptorsResponse } from '../../gen/runtime/v1/ListMetricDescriptorsResponse';
import type { ListPodSandboxMetricsResponse } from '../../gen/runtime/v1/ListPodSandboxMetricsResponse';

/**
 * The kubelet's CRI-based metrics (PodAndContainerStatsFromCRI) ask which cAdvisor-style
 * metrics the runtime serves. tscri serves its stats through the *Stats RPCs and offers no
 * extra metric families yet: an empty answer, which the kubelet accepts.
 */
export async function listMetricDescriptors(): Promise<ListMetricDescriptorsResponse> {
  return { descriptors: [] };
}

export async function listPodSandboxMetrics(): Promise<ListPodSandboxMetricsResponse> {
  return { pod_metrics: [] };
}
