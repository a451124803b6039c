// Overlapping pod networks make pods unreachable from the host ("no route to host") while
// everything else looks fine: the flakes once blamed on the host's neighbour table were a
// benchmark's network overlapping a test's, or the lab's.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NET as churnNet } from '../bench/churn';
import { NETS as execNets } from '../bench/exec';
import { NETS as floorNets } from '../bench/floor';
import { NETS as lifecycleNets } from '../bench/lifecycle';
import { NETS as pollNets } from '../bench/poll';
import { NETS as scaleNets } from '../bench/scale';
import { E2E_NETWORK } from '../helpers/pods';
import { SC_SUBNET } from '../helpers/security';
import { cidrRange, cidrsOverlap, overlappingRoutes, parseProcNetRoute, podSubnets } from '../../src/network/subnets';
import { builtinNetwork } from '../../src/network/cni_config';

test('CIDR ranges and overlaps', () => {
  assert.deepEqual(cidrRange('10.85.0.0/16'), { first: 0x0a550000, last: 0x0a55ffff });
  assert.deepEqual(cidrRange('10.85.3.7/24'), { first: 0x0a550300, last: 0x0a5503ff });
  assert.ok(cidrsOverlap('10.85.0.0/16', '10.85.0.0/24'));
  assert.ok(cidrsOverlap('10.85.0.78', '10.85.0.0/24'));
  assert.ok(!cidrsOverlap('10.85.0.0/24', '10.85.1.0/24'));
  assert.throws(() => cidrRange('10.85.0.0/33'), /not an IPv4 CIDR/);
});

// /proc/net/route of a host with tscri's built-in bridge and a benchmark's on part of its subnet.
const PROC_NET_ROUTE = `Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
tscri0\t0000550A\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
ctrd-bs0\t0000550A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
tscri-e2e0\t0000620A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
`;

test("/proc/net/route, and the routes that overlap a subnet but for the network's own bridge", () => {
  const routes = parseProcNetRoute(PROC_NET_ROUTE);
  assert.deepEqual(routes, [
    { dev: 'tscri0', dest: '10.85.0.0/16' },
    { dev: 'ctrd-bs0', dest: '10.85.0.0/24' },
    { dev: 'tscri-e2e0', dest: '10.98.0.0/24' },
    { dev: 'eth0', dest: '192.0.2.0/24' },
  ]);
  assert.deepEqual(overlappingRoutes('10.85.0.0/16', routes, 'tscri0'), [{ dev: 'ctrd-bs0', dest: '10.85.0.0/24' }]);
  assert.deepEqual(overlappingRoutes('10.98.0.0/24', routes, 'tscri-e2e0'), [], 'a leftover of the same network is reused');
  assert.deepEqual(overlappingRoutes('10.70.0.0/24', routes), []);
});

test("a network list's pod subnets and their bridge", () => {
  const list = builtinNetwork({ name: 'n', bridge: 'tscri0', subnet: '10.85.0.0/16' });
  assert.deepEqual(podSubnets(list), [{ subnet: '10.85.0.0/16', bridge: 'tscri0' }]);
});

test("the benchmarks' networks overlap no test network, tscri's default one or the lab's", () => {
  const nets: [string, string][] = [
    ['churn', churnNet.subnet],
    ...[execNets, floorNets, lifecycleNets, pollNets, scaleNets].flatMap((n, i) =>
      Object.values(n).map((b): [string, string] => [`${['exec', 'floor', 'lifecycle', 'poll', 'scale'][i]} ${b.network}`, b.subnet]),
    ),
  ];
  const others: [string, string][] = [
    ['e2e tests', E2E_NETWORK.subnet],
    ['security tests', SC_SUBNET],
    // Test files' own networks (node_features, userns, streaming): not importable without
    // running them, so named here.
    ['node_features tests', '10.94.0.0/24'],
    ['userns tests', '10.95.0.0/24'],
    ['streaming tests', '10.99.0.0/24'],
    ["tscri's built-in network", '10.85.0.0/16'],
    // ../shared/lab: tscri with NET=kube, the kube lab's containerd, the critest containerd,
    // podman's default, the cluster's services.
    ['lab tscrilab0', '10.86.0.0/16'],
    ['lab labk8sc0', '10.87.0.0/16'],
    ['podman default', '10.88.0.0/16'],
    ['lab crilab0', '10.89.0.0/16'],
    ['lab services', '10.96.0.0/24'],
  ];
  const all = [...nets, ...others];
  for (let i = 0; i < nets.length; i++) {
    for (let j = i + 1; j < all.length; j++) {
      assert.ok(!cidrsOverlap(nets[i][1], all[j][1]), `${nets[i][0]} (${nets[i][1]}) overlaps ${all[j][0]} (${all[j][1]})`);
    }
  }
});
