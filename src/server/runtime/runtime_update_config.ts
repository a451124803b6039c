import type { UpdateRuntimeConfigRequest__Output } from '../../gen/runtime/v1/UpdateRuntimeConfigRequest';
import type { UpdateRuntimeConfigResponse } from '../../gen/runtime/v1/UpdateRuntimeConfigResponse';
import type { Logger } from '../../log';

/**
 * The kubelet sends the node's pod CIDR. CNI configurations carry their own ranges, so it is
 * recorded and logged, not applied (containerd only uses it to fill its config template).
 */
export function updateRuntimeConfig(req: UpdateRuntimeConfigRequest__Output, log: Logger): UpdateRuntimeConfigResponse {
  const cidr = req.runtime_config?.network_config?.pod_cidr;
  if (cidr) log.info({ podCidr: cidr }, 'pod CIDR received');
  return {};
}
