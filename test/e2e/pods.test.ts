// Pod sandboxes end to end: a real tscri daemon on an isolated CNI bridge (no default route, no
// masquerading), every sandbox RPC as the kubelet makes it, and what a user sees checked from
// the host: the pod's address answers ping, its host port serves, its IP is freed on stop.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { must } from '../helpers/must';
import { expectCriError, type CriClient } from '../helpers/cri';
import { startDaemon, type Daemon } from '../helpers/daemon';
import { startRegistry, type Registry } from '../helpers/registry';
import type { PushedImage } from '../helpers/images';
import {
  BRIDGE,
  GATEWAY_IP,
  INDEX_HTML,
  POD_IP_PREFIX,
  SLEEPER,
  bridgeExists,
  containerConfig,
  daemonConfig,
  execIn,
  hostPing,
  httpGet,
  logAround,
  makeCniFixture,
  podConfig,
  pushToolsImage,
  removeTestCgroups,
  runContainer,
  tailLog,
  waitFor,
  waitForState,
  type CniFixture,
  type PodOptions,
} from '../helpers/pods';
import {
  conmonProcesses,
  Created,
  daemonMounts,
  describeLeaks,
  iptablesLines,
  type LeakScope,
  type LeakSnapshot,
  natTable,
  removeHostportChainsCreatedSince,
  removePodsAndLeftovers,
  snapshotLeaks,
  waitNoLeaks,
} from '../helpers/leaks';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig';
import type { PodSandboxStatus__Output } from '../../src/gen/runtime/v1/PodSandboxStatus';

const HOST_PORT = 18081;

let registry: Registry;
let daemon: Daemon;
let cni: CniFixture;
let image: PushedImage;
let logDir: string;
let baseline: LeakSnapshot;
const cri = (): CriClient => daemon.cri;

// Everything the tests created, for the leak check and the final cleanup.
const tracked = new Created(POD_IP_PREFIX);

function scope(): LeakScope {
  return tracked.scope(daemon);
}

function pod(name: string, opts: Partial<PodOptions> = {}): PodSandboxConfig {
  return podConfig(name, { logDirectory: path.join(logDir, name), ...opts });
}

async function runPod(config: PodSandboxConfig, handler = ''): Promise<string> {
  fs.mkdirSync(must(config.log_directory, 'log_directory in the pod config'), { recursive: true });
  const { pod_sandbox_id } = await cri().runtime.RunPodSandbox({ config, runtime_handler: handler });
  await tracked.pod(cri().runtime, pod_sandbox_id);
  return pod_sandbox_id;
}

async function podStatus(id: string): Promise<PodSandboxStatus__Output> {
  const { status } = await cri().runtime.PodSandboxStatus({ pod_sandbox_id: id, verbose: false });
  assert.ok(status, `PodSandboxStatus(${id}): expected a status, saw none`);
  return status;
}

async function startSleeper(podId: string, config: PodSandboxConfig, name = 'sleeper'): Promise<string> {
  const id = await runContainer(cri(), podId, config, containerConfig(name, must(image.tagRef, 'a tag on the pushed tools image'), SLEEPER));
  tracked.containerIds.push(id);
  await waitForState(cri(), id, 'CONTAINER_RUNNING');
  return id;
}

function exec(containerId: string, cmd: string[], timeout = 10): ReturnType<typeof execIn> {
  return execIn(cri(), containerId, cmd, timeout);
}

function interfaceNames(procNetDev: string): string[] {
  return procNetDev
    .split('\n')
    .slice(2)
    .map((l) => l.split(':')[0].trim())
    .filter(Boolean)
    .sort();
}

function daemonLog(id: string): string {
  return `daemon log lines for ${id}:\n${logAround(daemon.logs(), id)}\n--- daemon log tail:\n${tailLog(daemon.logs(), 30)}`;
}

describe('pod sandboxes', () => {
  // The host-port test makes portmap create its base chains; this run removes them if it did.
  let natBefore = '';

  before(async () => {
    assert.ok(!bridgeExists(), `fixture: bridge ${BRIDGE} already exists; a previous run left it (ip link del ${BRIDGE})`);
    natBefore = natTable();
    cni = makeCniFixture();
    logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-podlogs-'));
    registry = await startRegistry();
    image = await pushToolsImage(registry.host);
    daemon = await startDaemon({ config: daemonConfig(cni) });
    baseline = snapshotLeaks(scope());
    await cri().image.PullImage({ image: { image: must(image.tagRef, 'a tag on the pushed tools image') } });
  });

  after(async () => {
    // before() may have failed before assigning these, which their declared types hide.
    const up: { daemon?: Daemon; registry?: Registry; cni?: CniFixture } = { daemon, registry, cni };
    // Best effort: the last test asserts the cleanup; this only makes sure nothing stays.
    if (up.daemon) {
      await removePodsAndLeftovers(cri().runtime, tracked.podIds, scope());
      await up.daemon.stop();
    }
    removeHostportChainsCreatedSince(natBefore);
    await up.registry?.stop();
    removeTestCgroups();
    up.cni?.remove();
    if (logDir) fs.rmSync(logDir, { recursive: true, force: true });
    assert.ok(!bridgeExists(), `bridge ${BRIDGE} still exists after cleanup`);
  });

  let podA: string;
  let podAConfig: PodSandboxConfig;
  let ipA: string;

  test('RunPodSandbox: READY with an IP in 10.98.0.0/24, created_at, namespace options, labels and annotations', async () => {
    podAConfig = pod('alpha', {
      labels: { app: 'alpha', tier: 'web', 'tscri.test/file': 'pods' },
      annotations: { 'tscri.test/note': 'first pod', empty: '' },
    });
    const beforeNs = BigInt(Date.now()) * 1_000_000n;
    podA = await runPod(podAConfig);
    const afterNs = BigInt(Date.now()) * 1_000_000n;
    const st = await podStatus(podA);
    assert.equal(st.id, podA, 'status.id');
    assert.equal(st.state, 'SANDBOX_READY', `state of ${podA}: expected SANDBOX_READY, saw ${st.state}`);
    ipA = st.network?.ip ?? '';
    assert.ok(
      ipA.startsWith(POD_IP_PREFIX) && ipA !== GATEWAY_IP,
      `pod IP: expected an address in 10.98.0.0/24 other than the gateway, saw ${JSON.stringify(ipA)}`,
    );
    const created = BigInt(st.created_at || '0');
    assert.ok(
      created >= beforeNs - 2_000_000_000n && created <= afterNs + 2_000_000_000n,
      `created_at: expected between ${beforeNs} and ${afterNs} (ns since epoch), saw ${st.created_at}`,
    );
    assert.deepEqual(st.metadata, { ...podAConfig.metadata }, 'metadata echoed back');
    assert.deepEqual(st.labels, podAConfig.labels, 'labels');
    assert.deepEqual(st.annotations, podAConfig.annotations, 'annotations');
    const opts = st.linux?.namespaces?.options;
    assert.ok(opts, `linux.namespaces.options: expected them, saw ${JSON.stringify(st.linux)}`);
    assert.equal(opts.network, 'POD', `namespace_options.network: expected POD, saw ${opts.network}`);
    assert.equal(opts.ipc, 'POD', `namespace_options.ipc: expected POD, saw ${opts.ipc}`);
    assert.equal(opts.pid, 'CONTAINER', `namespace_options.pid: expected CONTAINER, saw ${opts.pid}`);
    // The leak checker must see what a live pod holds, or its final "nothing left" means nothing.
    const live = snapshotLeaks(scope());
    assert.ok(
      live.netnsPins.some((m) => m.includes(podA)),
      `leak checker: expected the pinned namespaces of ${podA} in mountinfo, saw ${JSON.stringify(live.netnsPins)}`,
    );
  });

  test('the host reaches the pod IP (ping from the host)', () => {
    assert.ok(ipA, 'needs the pod from the first test');
    assert.ok(hostPing(ipA), `ping -c1 -W2 ${ipA} from the host: expected a reply, saw none`);
  });

  let podB: string;
  let podBConfig: PodSandboxConfig;
  let ipB: string;

  test('two pods get different IPs', async () => {
    podBConfig = pod('beta', { labels: { app: 'beta', tier: 'web' } });
    podB = await runPod(podBConfig);
    ipB = (await podStatus(podB)).network?.ip ?? '';
    assert.ok(ipB.startsWith(POD_IP_PREFIX), `second pod IP: expected 10.98.0.x, saw ${JSON.stringify(ipB)}`);
    assert.notEqual(ipB, ipA, `two pods: expected different IPs, both got ${ipA}`);
    assert.ok(hostPing(ipB), `ping ${ipB}: expected a reply`);
    assert.deepEqual(cni.reservedIps(), [ipA, ipB].sort(), `host-local reservations in ${cni.dataDir}`);
  });

  test('ListPodSandbox filters by id, id prefix, state and label selector; StreamPodSandboxes agrees', async () => {
    const podC = await runPod(pod('gamma', { labels: { app: 'gamma', tier: 'db' } }));
    await cri().runtime.StopPodSandbox({ pod_sandbox_id: podC });
    const list = async (filter: object | null) => (await cri().runtime.ListPodSandbox({ filter })).items.map((p) => p.id).sort();

    const all = await list(null);
    for (const id of [podA, podB, podC]) assert.ok(all.includes(id), `ListPodSandbox(): expected ${id} among ${all.join(', ')}`);
    assert.deepEqual(await list({ id: podA }), [podA], 'filter by full id');
    assert.deepEqual(await list({ id: podA.slice(0, 12) }), [podA], 'filter by a 12-character id prefix');
    assert.deepEqual(await list({ id: 'f'.repeat(64) }), [], 'filter by an unknown id');
    const ready = await list({ state: { state: 'SANDBOX_READY' } });
    assert.ok(
      ready.includes(podA) && ready.includes(podB) && !ready.includes(podC),
      `state READY: expected ${podA} and ${podB} but not ${podC}, saw ${ready.join(', ')}`,
    );
    assert.deepEqual(await list({ state: { state: 'SANDBOX_NOTREADY' } }), [podC], 'state NOTREADY');
    assert.deepEqual(await list({ label_selector: { tier: 'web' } }), [podA, podB].sort(), 'label tier=web');
    assert.deepEqual(await list({ label_selector: { tier: 'web', app: 'beta' } }), [podB], 'labels tier=web,app=beta');
    assert.deepEqual(await list({ label_selector: { app: 'nobody' } }), [], 'label app=nobody');
    assert.deepEqual(await list({ id: podC, state: { state: 'SANDBOX_READY' } }), [], 'id of a stopped pod AND state READY');

    const listed = (await cri().runtime.ListPodSandbox({})).items.find((p) => p.id === podA);
    assert.equal(listed?.state, 'SANDBOX_READY', 'ListPodSandbox item state');
    assert.deepEqual(listed.labels, podAConfig.labels, 'ListPodSandbox item labels');
    assert.equal(listed.metadata?.name, 'alpha', 'ListPodSandbox item metadata.name');

    const streamed = (await cri().runtime.StreamPodSandboxes({ filter: { label_selector: { tier: 'web' } } }))
      .flatMap((r) => r.pod_sandboxes.map((p) => p.id))
      .sort();
    assert.deepEqual(streamed, [podA, podB].sort(), 'StreamPodSandboxes with tier=web');
    const streamedAll = (await cri().runtime.StreamPodSandboxes({})).flatMap((r) => r.pod_sandboxes.map((p) => p.id)).sort();
    assert.deepEqual(streamedAll, all, 'StreamPodSandboxes() vs ListPodSandbox()');

    await cri().runtime.RemovePodSandbox({ pod_sandbox_id: podC });
  });

  test('a second RunPodSandbox with the same metadata fails with ALREADY_EXISTS', async (t) => {
    const err = await expectCriError('RunPodSandbox twice with the same metadata', () =>
      cri().runtime.RunPodSandbox({ config: podAConfig, runtime_handler: '' }),
    );
    t.diagnostic(err.message);
    assert.equal(err.codeName, 'ALREADY_EXISTS', `code: expected ALREADY_EXISTS, saw ${err.codeName}: ${err.details}`);
    assert.ok(err.details.includes('alpha'), `error: expected it to name the pod (alpha), saw ${err.details}`);
  });

  test('an unknown runtime handler is refused', async (t) => {
    const err = await expectCriError('RunPodSandbox with handler no-such-runtime', () =>
      cri().runtime.RunPodSandbox({ config: pod('bad-handler'), runtime_handler: 'no-such-runtime' }),
    );
    t.diagnostic(err.message);
    assert.ok(err.details.includes('no-such-runtime'), `error: expected it to name the handler, saw ${err.details}`);
    const names = (await cri().runtime.ListPodSandbox({})).items.map((p) => p.metadata?.name);
    assert.ok(!names.includes('bad-handler'), `a refused pod must not be listed, saw ${names.join(', ')}`);
  });

  test('PodSandboxStatus of an unknown id fails with NOT_FOUND', async () => {
    const err = await expectCriError('PodSandboxStatus(unknown)', () => cri().runtime.PodSandboxStatus({ pod_sandbox_id: 'f'.repeat(64) }));
    assert.equal(err.codeName, 'NOT_FOUND', `code: expected NOT_FOUND, saw ${err.codeName}: ${err.details}`);
  });

  test('a pod container sees only lo and eth0; a hostNetwork pod has no IP and sees the host interfaces', async () => {
    const inPod = await startSleeper(podA, podAConfig, 'netview');
    const podIfs = interfaceNames((await exec(inPod, ['cat', '/proc/net/dev'])).stdout);
    assert.deepEqual(podIfs, ['eth0', 'lo'], `interfaces in a pod-network container: expected eth0 and lo, saw ${podIfs.join(', ')}`);
    const addr = await exec(inPod, ['ip', '-o', '-4', 'addr', 'show', 'eth0']);
    assert.ok(addr.stdout.includes(`${ipA}/24`), `ip addr in the pod: expected ${ipA}/24, saw ${addr.stdout}${addr.stderr}`);

    const hostCfg = pod('hostnet', { hostNetwork: true });
    const hostPod = await runPod(hostCfg);
    const st = await podStatus(hostPod);
    assert.equal(st.state, 'SANDBOX_READY', 'hostNetwork pod state');
    assert.equal(st.network?.ip ?? '', '', `hostNetwork pod IP: expected none, saw ${JSON.stringify(st.network)}`);
    assert.equal(st.linux?.namespaces?.options?.network, 'NODE', 'hostNetwork pod namespace_options.network');
    const c = await startSleeper(hostPod, hostCfg, 'hostview');
    const hostBefore = interfaceNames(fs.readFileSync('/proc/net/dev', 'utf8'));
    const inside = interfaceNames((await exec(c, ['cat', '/proc/net/dev'])).stdout);
    const hostAfter = interfaceNames(fs.readFileSync('/proc/net/dev', 'utf8'));
    // Other pods' veths may come and go between the reads; the stable ones must all agree.
    const stable = hostBefore.filter((n) => hostAfter.includes(n));
    for (const n of stable) assert.ok(inside.includes(n), `hostNetwork container: expected host interface ${n}, saw ${inside.join(', ')}`);
    assert.ok(inside.includes(BRIDGE), `hostNetwork container: expected to see ${BRIDGE}, saw ${inside.join(', ')}`);
    const link = await exec(c, ['ip', 'link']);
    assert.ok(link.stdout.includes(BRIDGE), `ip link in a hostNetwork container: expected ${BRIDGE}, saw ${link.stdout}${link.stderr}`);
    await cri().runtime.StopPodSandbox({ pod_sandbox_id: hostPod });
    await cri().runtime.RemovePodSandbox({ pod_sandbox_id: hostPod });
  });

  test('DNSConfig is written to the container /etc/resolv.conf', async () => {
    const cfg = pod('dns', {
      dns: { servers: ['10.98.0.53', '10.98.0.54'], searches: ['tscri.test', 'svc.tscri.test'], options: ['ndots:3', 'timeout:1'] },
    });
    const id = await runPod(cfg);
    const c = await startSleeper(id, cfg);
    const { stdout } = await exec(c, ['cat', '/etc/resolv.conf']);
    const lines = stdout.split('\n').map((l) => l.trim());
    for (const want of ['nameserver 10.98.0.53', 'nameserver 10.98.0.54']) assert.ok(lines.includes(want), `resolv.conf: expected "${want}", saw:\n${stdout}`);
    const search = lines.find((l) => l.startsWith('search '));
    assert.equal(search?.split(/\s+/).slice(1).join(' '), 'tscri.test svc.tscri.test', `resolv.conf search line, saw:\n${stdout}`);
    const options = lines.find((l) => l.startsWith('options '));
    assert.deepEqual(options?.split(/\s+/).slice(1).sort(), ['ndots:3', 'timeout:1'], `resolv.conf options line, saw:\n${stdout}`);
    await cri().runtime.StopPodSandbox({ pod_sandbox_id: id });
    await cri().runtime.RemovePodSandbox({ pod_sandbox_id: id });
  });

  test('the pod hostname is what `hostname` prints in the container', async () => {
    const cfg = pod('named', { hostname: 'tscri-named-pod' });
    const id = await runPod(cfg);
    const c = await startSleeper(id, cfg);
    const r = await exec(c, ['hostname']);
    assert.equal(
      r.stdout.trim(),
      'tscri-named-pod',
      `hostname in the container: expected tscri-named-pod, saw ${JSON.stringify(r.stdout)} (stderr ${JSON.stringify(r.stderr)})`,
    );
    const etc = await exec(c, ['cat', '/etc/hostname']);
    assert.equal(etc.stdout.trim(), 'tscri-named-pod', `/etc/hostname: expected tscri-named-pod, saw ${JSON.stringify(etc.stdout)}`);
    await cri().runtime.StopPodSandbox({ pod_sandbox_id: id });
    await cri().runtime.RemovePodSandbox({ pod_sandbox_id: id });
  });

  test('a host port mapping (18081 → 80) reaches httpd in the pod from the host', async (t) => {
    const cfg = pod('web', { portMappings: [{ protocol: 'TCP', container_port: 80, host_port: HOST_PORT, host_ip: '' }] });
    const id = await runPod(cfg);
    const ip = (await podStatus(id)).network?.ip ?? '';
    const c = await runContainer(
      cri(),
      id,
      cfg,
      containerConfig('httpd', must(image.tagRef, 'a tag on the pushed tools image'), ['httpd', '-f', '-p', '80', '-h', '/www']),
    );
    tracked.containerIds.push(c);
    await waitForState(cri(), c, 'CONTAINER_RUNNING');
    // Straight to the pod first, so a failure below is the port mapping and not httpd.
    const direct = await waitFor(`httpd at http://${ip}:80/`, () => httpGet(`http://${ip}:80/index.html`), 10_000);
    assert.equal(direct.body, INDEX_HTML, `GET http://${ip}/index.html: expected the served file`);

    const seen: string[] = [];
    let ok = false;
    for (const host of ['127.0.0.1', GATEWAY_IP]) {
      const url = `http://${host}:${HOST_PORT}/index.html`;
      try {
        const r = await waitFor(url, () => httpGet(url), 5_000);
        seen.push(`${url}: HTTP ${r.status} ${JSON.stringify(r.body)}`);
        if (r.status === 200 && r.body === INDEX_HTML) ok = true;
      } catch (err) {
        seen.push(`${url}: ${String(err)}`);
      }
    }
    t.diagnostic(seen.join('\n'));
    assert.ok(iptablesLines([ip], POD_IP_PREFIX).length > 0, `leak checker: expected iptables-save lines naming ${ip} while its host port is mapped`);
    const nat = execFileSync('iptables-save', ['-t', 'nat'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes(String(HOST_PORT)) || l.includes(ip));
    assert.ok(
      ok,
      `host port ${HOST_PORT} → ${ip}:80: expected ${JSON.stringify(INDEX_HTML)} at 127.0.0.1 or ${GATEWAY_IP}; saw:\n${seen.join('\n')}\nnat rules:\n${nat.join('\n')}`,
    );

    await cri().runtime.StopPodSandbox({ pod_sandbox_id: id });
    await cri().runtime.RemovePodSandbox({ pod_sandbox_id: id });
    const natAfter = execFileSync('iptables-save', ['-t', 'nat'], { encoding: 'utf8' })
      .split('\n')
      .filter((l) => l.includes(`${ip}:80`) || l.includes(`--dport ${HOST_PORT}`));
    assert.deepEqual(natAfter, [], `nat rules for the host port after the pod is removed`);
  });

  test('PodSandboxStats and ListPodSandboxStats report cpu, memory and network for a running pod', async () => {
    const c = await startSleeper(podB, podBConfig, 'busy');
    await exec(c, ['sh', '-c', 'i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done']);
    assert.ok(hostPing(ipB), 'ping so the pod interface has traffic');
    const { stats } = await cri().runtime.PodSandboxStats({ pod_sandbox_id: podB });
    const show = JSON.stringify(stats);
    assert.equal(stats?.attributes?.id, podB, `PodSandboxStats attributes.id: saw ${show}`);
    const lin = stats.linux;
    assert.ok(lin, `PodSandboxStats linux: expected stats, saw ${show}`);
    assert.ok(Number(lin.cpu?.usage_core_nano_seconds?.value ?? 0) > 0, `cpu.usage_core_nano_seconds: expected > 0, saw ${JSON.stringify(lin.cpu)}`);
    assert.ok(
      Number(lin.memory?.working_set_bytes?.value ?? 0) > 0 || Number(lin.memory?.usage_bytes?.value ?? 0) > 0,
      `memory: expected usage > 0, saw ${JSON.stringify(lin.memory)}`,
    );
    const ifs = [lin.network?.default_interface, ...(lin.network?.interfaces ?? [])].filter((x) => x);
    const eth0 = ifs.find((i) => i?.name === 'eth0');
    assert.ok(eth0, `network: expected eth0, saw ${JSON.stringify(lin.network)}`);
    assert.ok(
      Number(eth0.rx_bytes?.value ?? 0) > 0 && Number(eth0.tx_bytes?.value ?? 0) > 0,
      `eth0 rx/tx bytes: expected > 0 after a ping, saw ${JSON.stringify(eth0)}`,
    );
    assert.ok(
      lin.containers.some((x) => x.attributes?.id === c),
      `linux.containers: expected ${c}, saw ${lin.containers.map((x) => x.attributes?.id).join(', ')}`,
    );

    const listed = (await cri().runtime.ListPodSandboxStats({ filter: { id: podB } })).stats;
    assert.deepEqual(
      listed.map((s) => s.attributes?.id),
      [podB],
      'ListPodSandboxStats filtered by id',
    );
    assert.ok(Number(listed[0].linux?.cpu?.usage_core_nano_seconds?.value ?? 0) > 0, `ListPodSandboxStats cpu: saw ${JSON.stringify(listed[0].linux?.cpu)}`);
    const byLabel = (await cri().runtime.ListPodSandboxStats({ filter: { label_selector: { tier: 'web' } } })).stats.map((s) => s.attributes?.id ?? '').sort();
    assert.deepEqual(byLabel, [podA, podB].sort(), 'ListPodSandboxStats with tier=web');
  });

  test('CRI metrics: descriptors, then cAdvisor-named cpu, memory, process and per-interface network metrics of a running pod', async () => {
    const { descriptors } = await cri().runtime.ListMetricDescriptors({});
    const keys = new Map(descriptors.map((d) => [d.name, d.label_keys]));
    const base = ['container', 'id', 'image', 'name', 'namespace', 'pod'];
    for (const name of [
      'container_cpu_usage_seconds_total',
      'container_memory_working_set_bytes',
      'container_memory_usage_bytes',
      'container_memory_rss',
      'container_memory_cache',
      'container_network_receive_bytes_total',
      'container_network_transmit_bytes_total',
      'container_network_receive_errors_total',
      'container_network_receive_packets_dropped_total',
      'container_fs_usage_bytes',
      'container_processes',
      'container_threads',
      'container_last_seen',
      'container_start_time_seconds',
    ]) {
      assert.ok(keys.has(name), `ListMetricDescriptors: expected ${name}, saw ${[...keys.keys()].join(', ')}`);
      assert.deepEqual(must(keys.get(name), `label keys of ${name}`).slice(0, base.length), base, `${name} label keys`);
    }
    assert.deepEqual(keys.get('container_network_receive_bytes_total'), [...base, 'interface']);
    assert.deepEqual(keys.get('container_cpu_usage_seconds_total'), [...base, 'cpu']);

    // A whole CPU second is the smallest step the CRI's integer values can show.
    const spinner = await runContainer(
      cri(),
      podB,
      podBConfig,
      containerConfig('spinner', must(image.tagRef, 'a tag on the pushed tools image'), ['sh', '-c', 'while :; do :; done']),
    );
    tracked.containerIds.push(spinner);
    assert.ok(hostPing(ipB), 'ping so the pod interface has traffic');
    type M = { name: string; label_values: string[]; value: { value: string } | null; metric_type: string; timestamp: string };
    const value = (ms: M[], name: string, extra?: string) => {
      const m = ms.find((x) => x.name === name && (extra === undefined || x.label_values[x.label_values.length - 1] === extra));
      return m ? Number(m.value?.value ?? 0) : undefined;
    };
    let last = '';
    const { pod: podMetrics, ctr } = await waitFor(
      'container_cpu_usage_seconds_total >= 1 for the spinning container',
      async () => {
        const { pod_metrics } = await cri().runtime.ListPodSandboxMetrics({});
        const p = pod_metrics.find((x) => x.pod_sandbox_id === podB);
        const c = p?.container_metrics.find((x) => x.container_id === spinner);
        last = JSON.stringify(c?.metrics.filter((m) => m.name.startsWith('container_cpu')) ?? p ?? pod_metrics.map((x) => x.pod_sandbox_id));
        return p && c && (value(c.metrics, 'container_cpu_usage_seconds_total', 'total') ?? 0) >= 1 ? { pod: p, ctr: c } : undefined;
      },
      60_000,
      () => last,
    );
    await cri().runtime.StopContainer({ container_id: spinner, timeout: 0 });
    await cri().runtime.RemoveContainer({ container_id: spinner });

    const all = [...podMetrics.metrics, ...podMetrics.container_metrics.flatMap((c) => c.metrics)] as M[];
    for (const m of all) {
      assert.ok(keys.has(m.name), `metric ${m.name} has no descriptor`);
      assert.equal(
        m.label_values.length,
        must(keys.get(m.name), `label keys of ${m.name}`).length,
        `${m.name}: label values ${JSON.stringify(m.label_values)} against keys ${JSON.stringify(keys.get(m.name))}`,
      );
      assert.ok(BigInt(m.timestamp) > 0n, `${m.name}: timestamp`);
    }
    const cm = ctr.metrics as M[];
    const labels = cm[0].label_values;
    assert.deepEqual(
      [labels[0], labels[3], labels[4], labels[5]],
      [
        'spinner',
        spinner,
        must(podBConfig.metadata, 'metadata in the config of pod B').namespace,
        must(podBConfig.metadata, 'metadata in the config of pod B').name,
      ],
      `container labels: ${JSON.stringify(labels)}`,
    );
    assert.equal(labels[2], image.tagRef, 'image label');
    assert.ok((value(cm, 'container_memory_working_set_bytes') ?? 0) > 0, `working set: ${JSON.stringify(cm)}`);
    assert.ok((value(cm, 'container_memory_usage_bytes') ?? 0) > 0, 'memory usage');
    assert.ok((value(cm, 'container_processes') ?? 0) >= 1, `processes: ${value(cm, 'container_processes')}`);
    assert.ok((value(cm, 'container_threads') ?? 0) >= 1, `threads: ${value(cm, 'container_threads')}`);
    const now = Date.now() / 1000;
    const started = value(cm, 'container_start_time_seconds') ?? 0;
    assert.ok(started > now - 600 && started <= now + 1, `start time ${started}, now ${now}`);
    assert.ok(Math.abs((value(cm, 'container_last_seen') ?? 0) - now) < 120, 'last seen is about now');
    assert.equal(cm.find((m) => m.name === 'container_cpu_usage_seconds_total')?.metric_type, 'COUNTER');
    assert.equal(cm.find((m) => m.name === 'container_memory_working_set_bytes')?.metric_type, 'GAUGE');

    const net = podMetrics.metrics as M[];
    const rx = net.find((m) => m.name === 'container_network_receive_bytes_total' && m.label_values[6] === 'eth0');
    assert.ok(rx, `pod metrics: expected container_network_receive_bytes_total for eth0, saw ${JSON.stringify(net.map((m) => [m.name, m.label_values]))}`);
    assert.ok(Number(rx.value?.value) > 0, `eth0 received bytes after a ping: ${JSON.stringify(rx)}`);
    assert.ok((value(net, 'container_network_transmit_bytes_total', 'eth0') ?? 0) > 0, 'eth0 transmitted bytes');
    assert.equal(rx.label_values[0], 'POD', "network metrics are the pod's (container POD)");
    assert.ok(!net.some((m) => m.label_values[6] === 'lo'), 'no loopback interface');

    const streamed = (await cri().runtime.StreamPodSandboxMetrics({})).flatMap((r) => r.pod_sandbox_metrics.map((p) => p.pod_sandbox_id));
    assert.ok(streamed.includes(podB), `StreamPodSandboxMetrics: expected ${podB}, saw ${streamed.join(', ')}`);
  });

  test('StopPodSandbox: NOTREADY, its IP is freed, and a second stop is OK', async () => {
    const c = await startSleeper(podB, podBConfig, 'stop-me');
    await cri().runtime.StopPodSandbox({ pod_sandbox_id: podB });
    const st = await podStatus(podB);
    assert.equal(st.state, 'SANDBOX_NOTREADY', `state after StopPodSandbox: expected SANDBOX_NOTREADY, saw ${st.state}`);
    const cs = (await cri().runtime.ContainerStatus({ container_id: c })).status;
    assert.equal(cs?.state, 'CONTAINER_EXITED', `container ${c} after StopPodSandbox: expected EXITED, saw ${cs?.state}`);
    assert.ok(!cni.reservedIps().includes(ipB), `host-local ${cni.dataDir}: expected ${ipB} freed, still reserved: ${cni.reservedIps().join(', ')}`);
    assert.ok(!hostPing(ipB), `ping ${ipB} after StopPodSandbox: expected no reply`);
    await cri()
      .runtime.StopPodSandbox({ pod_sandbox_id: podB })
      .catch((err: unknown) => assert.fail(`second StopPodSandbox: expected OK, saw ${String(err)}\n${daemonLog(podB)}`));
    assert.equal((await podStatus(podB)).state, 'SANDBOX_NOTREADY', 'state after the second stop');
  });

  test('RemovePodSandbox removes the pod and its containers; twice OK; unknown id OK', async () => {
    const cfg = pod('delta');
    const id = await runPod(cfg);
    const c = await startSleeper(id, cfg);
    // Without a stop first: the kubelet may remove a pod whose containers still run.
    await cri().runtime.RemovePodSandbox({ pod_sandbox_id: id });
    const err = await expectCriError(`PodSandboxStatus(${id}) after remove`, () => cri().runtime.PodSandboxStatus({ pod_sandbox_id: id }));
    assert.equal(err.codeName, 'NOT_FOUND', `PodSandboxStatus after RemovePodSandbox: expected NOT_FOUND, saw ${err.codeName}`);
    const ctrs = (await cri().runtime.ListContainers({ filter: { pod_sandbox_id: id } })).containers;
    assert.deepEqual(
      ctrs.map((x) => x.id),
      [],
      `containers of a removed pod: expected none, saw ${ctrs.map((x) => `${x.id} ${x.state}`).join(', ')}`,
    );
    const cerr = await expectCriError(`ContainerStatus(${c}) after its pod is removed`, () => cri().runtime.ContainerStatus({ container_id: c }));
    assert.equal(cerr.codeName, 'NOT_FOUND', `ContainerStatus of a removed pod's container: expected NOT_FOUND, saw ${cerr.codeName}`);
    assert.ok(!fs.existsSync(path.join(daemon.state, 'sandboxes', id)), `${daemon.state}/sandboxes/${id}: expected gone`);
    assert.ok(!fs.existsSync(path.join(daemon.state, 'containers', c)), `${daemon.state}/containers/${c}: expected gone`);
    assert.ok(!fs.existsSync(path.join(daemon.root, 'containers', c)), `${daemon.root}/containers/${c}: expected gone`);
    await cri()
      .runtime.RemovePodSandbox({ pod_sandbox_id: id })
      .catch((e: unknown) => assert.fail(`second RemovePodSandbox: expected OK, saw ${String(e)}`));
    await cri()
      .runtime.RemovePodSandbox({ pod_sandbox_id: 'f'.repeat(64) })
      .catch((e: unknown) => assert.fail(`RemovePodSandbox(unknown): expected OK, saw ${String(e)}`));
    await cri()
      .runtime.StopPodSandbox({ pod_sandbox_id: 'f'.repeat(64) })
      .catch((e: unknown) => assert.fail(`StopPodSandbox(unknown): expected OK, saw ${String(e)}`));
  });

  test('after removing every pod: no mounts, netns pins, conmon, cgroups, iptables rules or IP reservations remain', async (t) => {
    for (const id of tracked.podIds) {
      await cri().runtime.StopPodSandbox({ pod_sandbox_id: id });
      await cri().runtime.RemovePodSandbox({ pod_sandbox_id: id });
    }
    const pods = (await cri().runtime.ListPodSandbox({})).items;
    assert.deepEqual(
      pods.map((p) => p.id),
      [],
      'ListPodSandbox after removing every pod',
    );
    const ctrs = (await cri().runtime.ListContainers({})).containers;
    assert.deepEqual(
      ctrs.map((c) => c.id),
      [],
      'ListContainers after removing every pod',
    );
    if (baseline.iptables.length > 0) t.diagnostic(`iptables lines present before this file ran:\n${baseline.iptables.join('\n')}`);
    const leaks = await waitNoLeaks(scope(), baseline);
    assert.equal(describeLeaks(leaks), '', 'leftovers after every pod was removed');
    assert.deepEqual(cni.reservedIps(), [], `host-local reservations in ${cni.dataDir}`);
    const sandboxDirs = fs.existsSync(path.join(daemon.state, 'sandboxes')) ? fs.readdirSync(path.join(daemon.state, 'sandboxes')) : [];
    assert.deepEqual(sandboxDirs, [], `${daemon.state}/sandboxes after removing every pod`);
  });

  test('a daemon stopped with no pods leaves no mount under its dirs', async () => {
    const dirs = [daemon.root, daemon.state, daemon.base];
    const how = await daemon.stop('SIGTERM', { keep: true });
    const { mounts, netnsPins } = daemonMounts(dirs);
    assert.deepEqual(
      [...mounts, ...netnsPins],
      [],
      `mounts under ${daemon.base} after the daemon stopped (${how}); daemon log tail:\n${tailLog(daemon.logs(), 20)}`,
    );
    assert.deepEqual(conmonProcesses(dirs), [], 'conmon processes after the daemon stopped');
  });
});
