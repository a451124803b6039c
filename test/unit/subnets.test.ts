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
import { cidrRange, cidrsOverlap, overlappingRoutes } from '../helpers/subnets';

test('CIDR ranges and overlaps', () => {
  assert.deepEqual(cidrRange('10.85.0.0/16'), { first: 0x0a550000, last: 0x0a55ffff });
  assert.deepEqual(cidrRange('10.85.3.7/24'), { first: 0x0a550300, last: 0x0a5503ff });
  assert.ok(cidrsOverlap('10.85.0.0/16', '10.85.0.0/24'));
  assert.ok(cidrsOverlap('10.85.0.78', '10.85.0.0/24'));
  assert.ok(!cidrsOverlap('10.85.0.0/24', '10.85.1.0/24'));
  assert.throws(() => cidrRange('10.85.0.0/33'), /not an IPv4 CIDR/);
});

test("routes that overlap a subnet, but for the network's own bridge", () => {
  const routes = [
    'default via 172.16.0.1 dev eth0',
    '10.85.0.0/16 dev tscri0 proto kernel scope link src 10.85.0.1',
    '10.85.0.0/24 dev ctrd-bs0 proto kernel scope link src 10.85.0.1 linkdown',
    '10.98.0.0/24 dev tscri-e2e0 proto kernel scope link src 10.98.0.1',
    '172.16.0.0/24 dev eth0 proto kernel scope link src 172.16.0.2',
  ].join('\n');
  assert.deepEqual(overlappingRoutes('10.85.0.0/24', routes, 'tscri0'), ['10.85.0.0/24 dev ctrd-bs0 proto kernel scope link src 10.85.0.1 linkdown']);
  assert.deepEqual(overlappingRoutes('10.98.0.0/24', routes, 'tscri-e2e0'), [], 'a leftover of the same network is reused');
  assert.equal(overlappingRoutes('10.70.0.0/24', routes).length, 0);
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
