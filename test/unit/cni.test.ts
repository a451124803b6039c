import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pino from 'pino';
import { removeHostportChainsCreatedSince, splitRule } from '../helpers/leaks';
import { Cni, CniConfigError, type PodNetworkArgs } from '../../src/network/cni';
import { parseNetworkConfig } from '../../src/network/cni_config';
import { podIps, versionAtLeast } from '../../src/network/cni_result';

const log = pino({ level: process.env.TSCRI_LOG_LEVEL ?? 'silent' });
const BIN_DIRS = ['/opt/cni/bin', '/usr/lib/cni'];
const isRoot = process.getuid?.() === 0;
const haveBridge = existsSync('/usr/lib/cni/bridge') || existsSync('/opt/cni/bin/bridge');

function sh(cmd: string, args: string[]): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}
function trySh(cmd: string, args: string[]): string | undefined {
  try {
    return sh(cmd, args);
  } catch {
    return undefined;
  }
}
function tmp(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}
function podId(): string {
  return randomBytes(32).toString('hex');
}

describe('CNI config parsing (no root)', () => {
  test('a single plugin .conf becomes a one-plugin list', () => {
    const l = parseNetworkConfig('x.conf', JSON.stringify({ cniVersion: '0.4.0', name: 'n', type: 'bridge', bridge: 'b0' }));
    assert.equal(l.name, 'n');
    assert.equal(l.cniVersion, '0.4.0');
    assert.deepEqual(l.plugins, [{ type: 'bridge', bridge: 'b0' }]);
  });

  test('faults name the file and what is wrong', () => {
    assert.throws(() => parseNetworkConfig('/c/a.conflist', '{"name": "n", "plugins": ['), /\/c\/a\.conflist: not JSON/);
    assert.throws(() => parseNetworkConfig('a', '{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}'), /"name" is missing/);
    assert.throws(() => parseNetworkConfig('a', '{"cniVersion":"1.0.0","name":"n","plugins":[]}'), /"plugins" is empty/);
    assert.throws(() => parseNetworkConfig('a', '{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}'), /plugin 0 has no "type"/);
    assert.throws(() => parseNetworkConfig('a', '{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../../bin/sh"}]}'), /not a plain name/);
    assert.throws(() => parseNetworkConfig('a', '{"cniVersion":"0.2.0","name":"n","type":"bridge"}'), /cniVersion 0.2.0 is not supported/);
  });

  test('pod IPs: only the sandbox interface, IPv4 first', () => {
    const r = {
      interfaces: [{ name: 'br0' }, { name: 'veth1' }, { name: 'eth0', sandbox: '/run/netns/x' }],
      ips: [
        { address: 'fd00::5/64', interface: 2 },
        { address: '10.0.0.1/24', interface: 0 },
        { address: '10.0.0.5/24', interface: 2 },
      ],
    };
    assert.deepEqual(podIps(r, 'eth0'), ['10.0.0.5', 'fd00::5']);
    assert.deepEqual(podIps({ ips: [{ address: '10.1.0.2/16' }] }, 'eth0'), ['10.1.0.2']);
    assert.ok(versionAtLeast('1.0.0', '0.4.0') && versionAtLeast('0.4.0', '0.4.0') && !versionAtLeast('0.3.1', '0.4.0'));
  });

  test('load(): first file by lexical order; a broken one is an error in load() and status()', async () => {
    const dir = tmp('tscri-cni-conf-');
    try {
      writeFileSync(path.join(dir, '20-b.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'second', plugins: [{ type: 'bridge' }] }));
      writeFileSync(path.join(dir, '10-a.conf'), JSON.stringify({ cniVersion: '1.0.0', name: 'first', type: 'bridge' }));
      writeFileSync(path.join(dir, '00-ignored.txt'), 'not a config');
      const cni = new Cni({
        confDir: dir,
        binDirs: BIN_DIRS,
        cacheDir: path.join(dir, 'cache'),
        defaultNetwork: { name: 'def', bridge: 'x', subnet: '10.97.9.0/24' },
        log,
      });
      await cni.load();
      assert.equal(cni.networkName(), 'first');
      if (haveBridge) assert.equal(cni.status().ready, true, cni.status().message);

      writeFileSync(path.join(dir, '05-broken.conflist'), '{"cniVersion": "1.0.0", "name": "broken", "plugins": [');
      await assert.rejects(cni.load(), (e: unknown) => e instanceof CniConfigError && /05-broken\.conflist: not JSON/.test(e.message));
      const st = cni.status();
      assert.equal(st.ready, false);
      assert.equal(st.reason, 'NetworkPluginNotReady');
      assert.match(st.message, /05-broken\.conflist/);
      await assert.rejects(
        cni.setup({ podId: podId(), netns: '/nonexistent', podName: 'p', podNamespace: 'ns', podUid: 'u', portMappings: [] }),
        /cannot attach pod ns\/p .*05-broken/,
      );

      rmSync(path.join(dir, '05-broken.conflist'));
      writeFileSync(path.join(dir, '07-missing.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'm', plugins: [{ type: 'no-such-plugin-xyz' }] }));
      await cni.load();
      assert.equal(cni.status().ready, false);
      assert.match(cni.status().message, /no-such-plugin-xyz/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

const SUBNET = '10.97.0.0/24';
const SUBNET_DEFAULT = '10.97.1.0/24';
const BRIDGES = ['tscri-t0', 'tscri-t1'];

describe('CNI plugins on this host (root)', { skip: !isRoot || !haveBridge ? 'needs root and the CNI plugins' : false }, () => {
  const suffix = randomBytes(4).toString('hex');
  const netnses: string[] = [];
  const children: ChildProcess[] = [];
  let work = '';
  let confDir = '';
  let ipamDir = '';
  let cni: Cni;
  let natBefore = '';
  const podIdsUsed: string[] = [];

  function newNetns(tag: string): string {
    const name = `tscri-cni-test-${suffix}-${tag}`;
    sh('ip', ['netns', 'add', name]);
    netnses.push(name);
    return name;
  }
  function args(ns: string, extra: Partial<PodNetworkArgs> = {}): PodNetworkArgs {
    const id = podId();
    podIdsUsed.push(id);
    return {
      podId: id,
      netns: `/run/netns/${ns}`,
      podName: `pod-${ns.slice(-2)}`,
      podNamespace: 'default',
      podUid: `uid-${id.slice(0, 8)}`,
      portMappings: [],
      ...extra,
    };
  }
  function leasedIps(dir: string): string[] {
    if (!existsSync(dir)) return [];
    return readdirSync(dir).filter((n) => /^\d+\.\d+\.\d+\.\d+$/.test(n));
  }

  before(() => {
    const routes = sh('ip', ['-4', 'route']);
    for (const net of [SUBNET, SUBNET_DEFAULT]) {
      assert.ok(!routes.includes(net.split('/')[0]), `${net} already routed on this host: ${routes}`);
    }
    for (const b of BRIDGES) assert.equal(trySh('ip', ['link', 'show', b]), undefined, `bridge ${b} already exists`);
    natBefore = sh('iptables-save', ['-t', 'nat']);
    work = tmp('tscri-cni-');
    confDir = path.join(work, 'net.d');
    ipamDir = path.join(work, 'ipam');
    mkdirSync(confDir);
    writeFileSync(
      path.join(confDir, '10-test.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'tscri-test',
        plugins: [
          {
            type: 'bridge',
            bridge: 'tscri-t0',
            isGateway: true,
            ipMasq: false,
            hairpinMode: true,
            ipam: { type: 'host-local', ranges: [[{ subnet: SUBNET }]], routes: [{ dst: SUBNET }], dataDir: ipamDir },
          },
          { type: 'portmap', capabilities: { portMappings: true }, snat: true },
          { type: 'loopback' },
        ],
      }),
    );
    cni = new Cni({
      confDir,
      binDirs: BIN_DIRS,
      cacheDir: path.join(work, 'cache'),
      defaultNetwork: { name: 'unused', bridge: 'tscri-unused', subnet: '10.97.8.0/24' },
      log,
    });
  });

  after(() => {
    for (const c of children) c.kill('SIGKILL');
    for (const ns of netnses) trySh('ip', ['netns', 'del', ns]);
    for (const b of BRIDGES) trySh('ip', ['link', 'del', b]);
    cleanIptables(podIdsUsed, natBefore);
    if (work) rmSync(work, { recursive: true, force: true });
  });

  const ipamFor = () => path.join(ipamDir, 'tscri-test');
  let podA: PodNetworkArgs;
  let ipA = '';
  let podB: PodNetworkArgs;
  let ipB = '';

  test('setup attaches a pod: address on eth0, lo up, reachable from the host', async () => {
    await cni.load();
    assert.deepEqual(cni.status(), { ready: true, reason: '', message: '' });
    assert.equal(cni.networkName(), 'tscri-test');
    const ns = newNetns('a');
    podA = args(ns, { portMappings: [{ hostPort: 18080, containerPort: 80, protocol: 'tcp' }] });
    const t0 = performance.now();
    const res = await cni.setup(podA);
    const ms = performance.now() - t0;
    assert.equal(res.ips.length, 1, `expected one IP, got ${JSON.stringify(res.raw)}`);
    ipA = res.ips[0];
    assert.match(ipA, /^10\.97\.0\.\d+$/);
    const addr = sh('ip', ['-n', ns, '-4', 'addr', 'show', 'eth0']);
    assert.ok(addr.includes(`inet ${ipA}/24`), `eth0 in ${ns} lacks ${ipA}: ${addr}`);
    assert.match(sh('ip', ['-n', ns, 'link', 'show', 'lo']), /state UNKNOWN|,UP/);
    assert.match(sh('ip', ['-n', ns, 'link', 'show', 'lo']), /<LOOPBACK,UP/);
    const routes = sh('ip', ['-n', ns, '-4', 'route']);
    assert.ok(!routes.includes('default'), `pod must have no default route: ${routes}`);
    assert.deepEqual(leasedIps(ipamFor()), [ipA]);
    sh('busybox', ['ping', '-c1', '-W1', ipA]);
    console.log(`# setup bridge+portmap(1 port)+loopback: ${ms.toFixed(1)} ms`);
  });

  test('a second pod gets another address and reaches the first', async () => {
    const ns = newNetns('b');
    podB = args(ns);
    const res = await cni.setup(podB);
    ipB = res.ips[0];
    assert.match(ipB, /^10\.97\.0\.\d+$/);
    assert.notEqual(ipB, ipA);
    sh('ip', ['netns', 'exec', ns, 'busybox', 'ping', '-c1', '-W1', ipA]);
    // Not checked on pod A: portmap 1.1.1's CHECK looks for IPv6 rules it never created for an
    // IPv4-only pod (containernetworking/plugins#819). Pod B has no hostPorts, so no portmap.
    await cni.check(podB);
  });

  test('a hostPort reaches the pod through portmap', async () => {
    const ns = `tscri-cni-test-${suffix}-a`;
    const www = path.join(work, 'www');
    mkdirSync(www);
    writeFileSync(path.join(www, 'index.html'), 'hello from pod a\n');
    const httpd = spawn('ip', ['netns', 'exec', ns, 'busybox', 'httpd', '-f', '-p', '80', '-h', www], { stdio: 'ignore' });
    children.push(httpd);
    await waitFor(async () => (await httpGet(ipA, 80)) !== undefined, 3000);
    assert.equal(await httpGet('10.97.0.1', 18080), 'hello from pod a\n', 'via the bridge gateway address');
    assert.equal(await httpGet('127.0.0.1', 18080), 'hello from pod a\n', 'via localhost');
    assert.ok(sh('iptables-save', ['-t', 'nat']).includes(podA.podId), 'portmap rules carry the pod id');
    httpd.kill('SIGKILL');
  });

  test('teardown frees the address and the DNAT rules; twice is fine', async () => {
    const t0 = performance.now();
    await cni.teardown(podA);
    const ms = performance.now() - t0;
    console.log(`# teardown bridge+portmap(1 port)+loopback: ${ms.toFixed(1)} ms`);
    assert.ok(!leasedIps(ipamFor()).includes(ipA), `host-local still lists ${ipA}`);
    const nat = sh('iptables-save', ['-t', 'nat']);
    assert.ok(!nat.includes(podA.podId), `portmap rules left for ${podA.podId}:\n${nat}`);
    assert.ok(!nat.includes('dport 18080'), `a DNAT rule for 18080 is left:\n${nat}`);
    assert.equal(trySh('ip', ['-n', `tscri-cni-test-${suffix}-a`, 'link', 'show', 'eth0']), undefined, 'eth0 is gone');
    await cni.teardown(podA);
  });

  test('teardown after the namespace is gone still frees the address', async () => {
    sh('ip', ['netns', 'del', `tscri-cni-test-${suffix}-b`]);
    await cni.teardown(podB);
    assert.ok(!leasedIps(ipamFor()).includes(ipB), `host-local still lists ${ipB}`);
    await cni.teardown(podB);
  });

  test('teardown of a pod never attached, with no cache, is fine', async () => {
    await cni.teardown(args(`tscri-cni-test-${suffix}-never`));
  });

  test('with netnsReady the plugin waits for the namespace; a failed namespace adds nothing', async () => {
    const name = `tscri-cni-test-${suffix}-late`;
    const late = args(name);
    // The namespace does not exist yet when setup is called, as in RunPodSandbox.
    const ready = new Promise<void>((resolve) =>
      setTimeout(() => {
        newNetns('late');
        resolve();
      }, 200),
    );
    const res = await cni.setup(late, ready);
    assert.match(res.ips[0] ?? '', /^10\.97\.0\.\d+$/);
    assert.ok(sh('ip', ['-n', name, '-4', 'addr', 'show', 'eth0']).includes(`inet ${res.ips[0]}/24`));
    await cni.teardown(late);

    const leasesBefore = leasedIps(ipamFor());
    const never = args(`tscri-cni-test-${suffix}-never-made`);
    const failed = new Promise<void>((_, reject) => setTimeout(() => reject(new Error('pinning failed (test)')), 100));
    await assert.rejects(cni.setup(never, failed), /^Error: pinning failed \(test\)$/);
    assert.deepEqual(leasedIps(ipamFor()), leasesBefore, 'no address reserved for a pod whose namespace never came');
    assert.equal(trySh('pgrep', ['-f', '/usr/lib/cni/bridge']) ?? '', '', 'no plugin left waiting for its config');
  });

  test('timing without hostPorts (portmap is skipped)', async () => {
    const [setup, teardown] = await medianTimes(cni, () => args(newNetns(`t${podIdsUsed.length}`)), 5);
    console.log(`# conflist bridge+portmap+loopback in chain, no hostPorts, median of 5: setup ${setup.toFixed(1)} ms, teardown ${teardown.toFixed(1)} ms`);
    assert.deepEqual(leasedIps(ipamFor()), []);
  });

  test('a failing plugin: setup throws its error and undoes the plugins before it', async () => {
    const dir = path.join(work, 'net.d-fail');
    const failIpam = path.join(work, 'ipam-fail');
    mkdirSync(dir);
    writeFileSync(
      path.join(dir, '10-fail.conflist'),
      JSON.stringify({
        cniVersion: '1.0.0',
        name: 'tscri-fail',
        plugins: [
          {
            type: 'bridge',
            bridge: 'tscri-t0',
            isGateway: true,
            ipMasq: false,
            ipam: { type: 'host-local', ranges: [[{ subnet: SUBNET }]], routes: [{ dst: SUBNET }], dataDir: failIpam },
          },
          { type: 'tuning', sysctl: { 'net.ipv4.conf.eth0.no_such_sysctl_tscri': '1' } },
        ],
      }),
    );
    const failing = new Cni({
      confDir: dir,
      binDirs: BIN_DIRS,
      cacheDir: path.join(work, 'cache-fail'),
      defaultNetwork: { name: 'x', bridge: 'x', subnet: '10.97.8.0/24' },
      log,
    });
    await failing.load();
    assert.ok(failing.status().ready, failing.status().message);
    const ns = newNetns('f');
    const p = args(ns);
    await assert.rejects(failing.setup(p), (e: Error) => {
      assert.match(e.message, new RegExp(`CNI ADD of pod default/${p.podName} \\(${p.podId}\\) to network tscri-fail failed: plugin tuning ADD failed`));
      assert.match(e.message, /no_such_sysctl_tscri/);
      return true;
    });
    assert.deepEqual(leasedIps(path.join(failIpam, 'tscri-fail')), [], 'the address was released');
    assert.equal(trySh('ip', ['-n', ns, 'link', 'show', 'eth0']), undefined, 'the veth was removed');
  });

  test('a 0.3.1 conflist works (DEL without prevResult)', async () => {
    const dir = path.join(work, 'net.d-031');
    const oldIpam = path.join(work, 'ipam-031');
    mkdirSync(dir);
    writeFileSync(
      path.join(dir, '10-old.conflist'),
      JSON.stringify({
        cniVersion: '0.3.1',
        name: 'tscri-old',
        plugins: [
          {
            type: 'bridge',
            bridge: 'tscri-t0',
            isGateway: true,
            ipMasq: false,
            ipam: { type: 'host-local', subnet: SUBNET, routes: [{ dst: SUBNET }], dataDir: oldIpam },
          },
          { type: 'portmap', capabilities: { portMappings: true } },
        ],
      }),
    );
    const old = new Cni({
      confDir: dir,
      binDirs: BIN_DIRS,
      cacheDir: path.join(work, 'cache-031'),
      defaultNetwork: { name: 'x', bridge: 'x', subnet: '10.97.8.0/24' },
      log,
    });
    await old.load();
    const ns = newNetns('o');
    const p = args(ns, { portMappings: [{ hostPort: 18082, containerPort: 80, protocol: 'udp' }] });
    const res = await old.setup(p);
    assert.match(res.ips[0] ?? '', /^10\.97\.0\.\d+$/);
    assert.match(sh('ip', ['-n', ns, 'link', 'show', 'lo']), /<LOOPBACK,UP/);
    assert.ok(sh('iptables-save', ['-t', 'nat']).includes(p.podId));
    await old.check(p);
    await old.teardown(p);
    assert.deepEqual(leasedIps(path.join(oldIpam, 'tscri-old')), []);
    assert.ok(!sh('iptables-save', ['-t', 'nat']).includes(p.podId));
  });

  test('an empty confDir uses the built-in default network', async () => {
    const empty = path.join(work, 'net.d-empty');
    mkdirSync(empty);
    const defIpam = path.join(work, 'ipam-default');
    const def = new Cni({
      confDir: empty,
      binDirs: BIN_DIRS,
      cacheDir: path.join(work, 'cache-default'),
      defaultNetwork: { name: 'tscri-default-test', bridge: 'tscri-t1', subnet: SUBNET_DEFAULT, routes: [SUBNET_DEFAULT], ipMasq: false, ipamDataDir: defIpam },
      log,
    });
    await def.load();
    assert.deepEqual(def.status(), { ready: true, reason: '', message: '' });
    assert.equal(def.networkName(), 'tscri-default-test');
    const ns = newNetns('d');
    const p = args(ns, { portMappings: [{ hostPort: 18081, containerPort: 80, protocol: 'tcp' }] });
    const t0 = performance.now();
    const res = await def.setup(p);
    const t1 = performance.now();
    assert.match(res.ips[0] ?? '', /^10\.97\.1\.\d+$/);
    assert.match(sh('ip', ['-n', ns, 'link', 'show', 'lo']), /<LOOPBACK,UP/);
    assert.ok(sh('ip', ['-n', ns, '-4', 'addr', 'show', 'eth0']).includes(`inet ${res.ips[0]}/24`));
    sh('busybox', ['ping', '-c1', '-W1', res.ips[0]]);
    const t2 = performance.now();
    await def.teardown(p);
    const t3 = performance.now();
    console.log(`# built-in default (bridge+portmap, loopback alongside), 1 hostPort: setup ${(t1 - t0).toFixed(1)} ms, teardown ${(t3 - t2).toFixed(1)} ms`);
    assert.deepEqual(leasedIps(path.join(defIpam, 'tscri-default-test')), []);
    assert.ok(!sh('iptables-save', ['-t', 'nat']).includes(p.podId));

    const [setup, teardown] = await medianTimes(def, () => args(newNetns(`u${podIdsUsed.length}`)), 5);
    console.log(`# built-in default, no hostPorts, median of 5: setup ${setup.toFixed(1)} ms, teardown ${teardown.toFixed(1)} ms`);
    assert.deepEqual(leasedIps(path.join(defIpam, 'tscri-default-test')), []);
  });
});

/** Median setup and teardown times over n fresh namespaces. */
async function medianTimes(cni: Cni, next: () => PodNetworkArgs, n: number): Promise<[number, number]> {
  const setups: number[] = [];
  const teardowns: number[] = [];
  for (let i = 0; i < n; i++) {
    const p = next();
    const t0 = performance.now();
    await cni.setup(p);
    const t1 = performance.now();
    await cni.teardown(p);
    setups.push(t1 - t0);
    teardowns.push(performance.now() - t1);
  }
  const med = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)];
  return [med(setups), med(teardowns)];
}

function httpGet(host: string, port: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get({ host, port, path: '/index.html', timeout: 1500 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(undefined));
  });
}

async function waitFor(ok: () => Promise<boolean>, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await ok()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`condition not met within ${ms} ms`);
}

/**
 * Removes whatever portmap left for this test's pods and, when the test created them, the
 * CNI-HOSTPORT-* base chains with their jumps. Chains that existed before stay: another
 * runtime on this host may be using them.
 */
function cleanIptables(ids: string[], natBefore: string): void {
  const nat = trySh('iptables-save', ['-t', 'nat']) ?? '';
  const mine = (line: string) => ids.some((id) => line.includes(id));
  for (const line of nat.split('\n')) {
    if (line.startsWith('-A ') && mine(line)) trySh('iptables', ['-t', 'nat', ...splitRule(line.replace(/^-A /, '-D '))]);
  }
  const leftoverChains = new Set<string>();
  for (const line of nat.split('\n')) {
    const m = /^-A (CNI-HOSTPORT-DNAT|CNI-HOSTPORT-SETMARK) .* -j (CNI-(?:DN|SN)-[0-9a-f]+)/.exec(line);
    if (m && mine(line)) leftoverChains.add(m[2]);
  }
  for (const c of leftoverChains) {
    trySh('iptables', ['-t', 'nat', '-F', c]);
    trySh('iptables', ['-t', 'nat', '-X', c]);
  }
  removeHostportChainsCreatedSince(natBefore);
}
