import type { StatusRequest__Output } from '../../gen/runtime/v1/StatusRequest';
import type { StatusResponse } from '../../gen/runtime/v1/StatusResponse';
import type { Config } from '../../config';
import type { Cni } from '../../network/cni';

/**
 * RuntimeReady once the daemon serves with an OCI runtime; NetworkReady while a CNI network
 * with all its plugins is loaded (the kubelet keeps pods off a node whose network is not).
 */
export async function status(req: StatusRequest__Output, cfg: Config, cni: Cni, handlers: string[], userns: boolean): Promise<StatusResponse> {
  const net = cni.status();
  // user_namespaces comes from the start-up probe (snapshot/idmap_probe.ts): the daemon makes
  // the user namespace and the idmapped mounts itself, and every handler (runc, crun) joins a
  // user namespace by path, so the answer is the node's, the same for each handler.
  const features = { recursive_read_only_mounts: false, user_namespaces: userns };
  const res: StatusResponse = {
    status: {
      conditions: [
        handlers.length > 0
          ? { type: 'RuntimeReady', status: true, reason: '', message: '' }
          : { type: 'RuntimeReady', status: false, reason: 'NoOciRuntime', message: 'no configured OCI runtime binary was found' },
        { type: 'NetworkReady', status: net.ready, reason: net.ready ? '' : net.reason, message: net.ready ? '' : net.message },
      ],
    },
    runtime_handlers: [{ name: '', features }, ...handlers.map((name) => ({ name, features }))],
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
