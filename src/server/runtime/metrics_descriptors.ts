import { METRIC_DESCRIPTORS } from '../../container/metrics';
import type { ListMetricDescriptorsResponse } from '../../gen/runtime/v1/ListMetricDescriptorsResponse';

/** The metric families ListPodSandboxMetrics serves; the kubelet asks once, at start. */
export function listMetricDescriptors(): ListMetricDescriptorsResponse {
  return { descriptors: METRIC_DESCRIPTORS };
}
