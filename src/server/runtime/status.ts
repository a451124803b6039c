import type { StatusRequest__Output } from '../../gen/runtime/v1/StatusRequest';
import type { StatusResponse } from '../../gen/runtime/v1/StatusResponse';
import type { Config } from '../../config';

/**
 * RuntimeReady is true once the daemon serves. NetworkReady stays false until tscri drives
 * CNI: the kubelet then keeps pods off this node instead of starting them without a network.
 */
export async function status(req: StatusRequest__Output, cfg: Config): Promise<StatusResponse> {
  const res: StatusResponse = {
    status: {
      conditions: [
        { type: 'RuntimeReady', status: true, reason: '', message: '' },
        { type: 'NetworkReady', status: false, reason: 'NetworkPluginNotReady', message: 'tscri: pod networking is not implemented yet' },
      ],
    },
    runtime_handlers: [{ name: '', features: { recursive_read_only_mounts: false, user_namespaces: false } }],
    features: { supplemental_groups_policy: false },
  };
  if (req.verbose) {
    res.info = {
      config: JSON.stringify({
        root: cfg.root,
        state: cfg.state,
        registryConfigDir: cfg.registryConfigDir,
        cgroupDriver: cfg.cgroupDriver,
        maxConcurrentDownloads: cfg.maxConcurrentDownloads,
        imagePullProgressTimeoutMs: cfg.imagePullProgressTimeoutMs,
        pinnedImages: cfg.pinnedImages,
      }),
    };
  }
  return res;
}
