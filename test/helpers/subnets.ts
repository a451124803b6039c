import { overlappingRoutes, readHostRoutes } from '../../src/network/subnets';

/**
 * Fails when the host already routes part of `subnet` through another device than `ownDev`.
 * Two bridges with overlapping subnets (another benchmark, test file or lab network still up)
 * make the pods of one of them unreachable from this host: connections then fail with "no
 * route to host" long after the pods are ready, which looks like a runtime fault and is not one.
 */
export function assertSubnetFree(subnet: string, ownDev: string, what: string): void {
  const taken = overlappingRoutes(subnet, readHostRoutes(), ownDev);
  if (taken.length > 0) {
    throw new Error(
      `${what}: subnet ${subnet} overlaps the host's route(s) ${taken.map((r) => `${r.dest} dev ${r.dev}`).join(', ')}; ` +
        'pods on both would not all be reachable from this host. Stop what owns that network first.',
    );
  }
}
