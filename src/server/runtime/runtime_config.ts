import type { Config } from '../../config';
import type { RuntimeConfigResponse } from '../../gen/runtime/v1/RuntimeConfigResponse';

/** The kubelet (1.31+) takes its cgroup driver from here instead of its own flag. */
export function runtimeConfig(cfg: Config): RuntimeConfigResponse {
  return { linux: { cgroup_driver: cfg.cgroupDriver === 'systemd' ? 'SYSTEMD' : 'CGROUPFS' } };
}
