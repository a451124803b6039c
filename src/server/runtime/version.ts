import type { VersionResponse } from '../../gen/runtime/v1/VersionResponse';
import { RUNTIME_NAME, RUNTIME_VERSION } from '../../version';

export function version(): VersionResponse {
  // `version` is the CRI API version of the kubelet's protocol, not ours (cri-api: "0.1.0").
  return { version: '0.1.0', runtime_name: RUNTIME_NAME, runtime_version: RUNTIME_VERSION, runtime_api_version: 'v1' };
}
