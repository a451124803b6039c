import type { StatusRequest__Output } from '../../gen/runtime/v1/StatusRequest';
import type { StatusResponse } from '../../gen/runtime/v1/StatusResponse';
import type { Config } from '../../config';
import type { HostReport } from '../../host/probe';
import type { Cni } from '../../network/cni';
import { recursiveReadOnlySupported } from '../../snapshot/volume_mounts';

/**
 * RuntimeReady once the daemon serves with an OCI runtime; NetworkReady while a CNI network
 * with all its plugins is loaded (the kubelet keeps pods off a node whose network is not).
 * Verbose info carries the host check (`tscri check`'s findings) under "host".
 */
export async function status(
  req: StatusRequest__Output,
  cfg: Config,
  cni: Cni,
  handlers: string[],
  userns: boolean,
  hostReport: () => Promise<HostReport | undefined>,
): Promise<StatusResponse> {
  const net = cni.status();
  // Recursive read-only mounts and the idmapped mounts of user namespaces are made by the
  // daemon (mount_setattr), not by the OCI runtime, and every handler joins a user namespace by
  // path: the answers are the node's, the same for each handler. user_namespaces comes from the
  // start-up probe (snapshot/idmap_probe.ts).
  const features = { recursive_read_only_mounts: recursiveReadOnlySupported(), user_namespaces: userns };
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
    // Strict and Merge are resolved by the daemon from the image's files (container/user.ts).
    features: { supplemental_groups_policy: true },
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
    const host = await hostReport();
    if (host) res.info.host = JSON.stringify(host);
  }
  return res;
}
