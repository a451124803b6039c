// Shared fixtures for the pod and container e2e tests: an isolated CNI network, a busybox image
// with the applets the tests run, CRI config builders, waiters and a CRI log reader.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { CriClient } from './cri';
import { busyboxLayer, pushImage, type LayerEntry, type PushedImage } from './images';
import { assertSubnetFree } from './subnets';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig';
import type { ContainerConfig } from '../../src/gen/runtime/v1/ContainerConfig';
import type { ContainerStatus__Output } from '../../src/gen/runtime/v1/ContainerStatus';
import type { LinuxContainerResources } from '../../src/gen/runtime/v1/LinuxContainerResources';
import type { Mount } from '../../src/gen/runtime/v1/Mount';
import type { PortMapping } from '../../src/gen/runtime/v1/PortMapping';
import type { DNSConfig } from '../../src/gen/runtime/v1/DNSConfig';

// The test network never leaves this machine: pods get a route to their own subnet only, and
// nothing is masqueraded, so a pod cannot reach anything but the host and other pods.
export const POD_SUBNET = '10.98.0.0/24';
export const POD_IP_PREFIX = '10.98.0.';
export const GATEWAY_IP = '10.98.0.1';
export const BRIDGE = 'tscri-e2e0';
export const CNI_NETWORK = 'tscri-e2e';

export interface CniFixture {
  base: string;
  confDir: string;
  /** host-local's dataDir; reserved addresses are files under `<dataDir>/<network>/`. */
  dataDir: string;
  /** The addresses host-local holds reserved right now. */
  reservedIps(): string[];
  /** Deletes the bridge (CNI DEL leaves it) and the temp dirs. */
  remove(): void;
}

/** A test network: its bridge, subnet and network name, none shared with another test file. */
export interface TestNetwork {
  bridge: string;
  subnet: string;
  gateway: string;
  name: string;
}

export const E2E_NETWORK: TestNetwork = { bridge: BRIDGE, subnet: POD_SUBNET, gateway: GATEWAY_IP, name: CNI_NETWORK };

/** A conf dir with one conflist: bridge + host-local (own subnet route only, no masquerading), portmap, loopback. */
export function makeCniFixture(net: TestNetwork = E2E_NETWORK): CniFixture {
  assertSubnetFree(net.subnet, net.bridge, `test network ${net.name}`);
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-cni-'));
  const confDir = path.join(base, 'net.d');
  const dataDir = path.join(base, 'ipam');
  fs.mkdirSync(confDir);
  fs.mkdirSync(dataDir);
  const conflist = {
    cniVersion: '1.0.0',
    name: net.name,
    plugins: [
      {
        type: 'bridge',
        bridge: net.bridge,
        isGateway: true,
        ipMasq: false,
        hairpinMode: true,
        ipam: {
          type: 'host-local',
          ranges: [[{ subnet: net.subnet, gateway: net.gateway }]],
          routes: [{ dst: net.subnet }],
          dataDir,
        },
      },
      { type: 'portmap', capabilities: { portMappings: true }, snat: true },
      { type: 'loopback' },
    ],
  };
  fs.writeFileSync(path.join(confDir, `10-${net.name}.conflist`), JSON.stringify(conflist, null, 2));
  return {
    base,
    confDir,
    dataDir,
    reservedIps() {
      const dir = path.join(dataDir, net.name);
      if (!fs.existsSync(dir)) return [];
      return fs
        .readdirSync(dir)
        .filter((n) => /^\d+\.\d+\.\d+\.\d+$/.test(n))
        .sort();
    },
    remove() {
      deleteBridge(net.bridge);
      fs.rmSync(base, { recursive: true, force: true });
    },
  };
}

export function bridgeExists(bridge = BRIDGE): boolean {
  return spawnSync('ip', ['link', 'show', bridge], { stdio: 'ignore' }).status === 0;
}

export function deleteBridge(bridge = BRIDGE): void {
  if (bridgeExists(bridge)) execFileSync('ip', ['link', 'del', bridge]);
}

/** The daemon config for the test network; `extra` lines are appended as they are. */
export function daemonConfig(cni: CniFixture, extra: string[] = []): string {
  return (
    [
      `cni_conf_dir = ${JSON.stringify(cni.confDir)}`,
      'cni_bin_dirs = ["/usr/lib/cni"]',
      'restrict_oom_score_adj = true',
      'cgroup_driver = "cgroupfs"',
      ...extra,
    ].join('\n') + '\n'
  );
}

// ---- image ---------------------------------------------------------------------------------

/** Applets beyond images.ts's BUSYBOX_APPLETS that the pod and container tests run. */
export const EXTRA_APPLETS = ['httpd', 'wget', 'head', 'tr', 'hostname', 'ip', 'ps', 'ping', 'mkdir', 'grep', 'wc', 'kill', 'dd', 'tail', 'touch', 'mv'];
export const INDEX_HTML = 'hello from a tscri pod\n';

/** busybox plus the extra applets and a document root /www for httpd. */
export async function pushToolsImage(registryHost: string, repo = 'tools', tag = 'v1'): Promise<PushedImage> {
  const extra: LayerEntry[] = [
    { type: 'dir', path: 'bin' },
    ...EXTRA_APPLETS.map((a): LayerEntry => ({ type: 'symlink', path: `bin/${a}`, target: 'busybox' })),
    { type: 'dir', path: 'www' },
    { type: 'file', path: 'www/index.html', content: INDEX_HTML },
  ];
  return pushImage(registryHost, repo, tag, {
    layers: [await busyboxLayer(), { entries: extra }],
    config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] },
  });
}

// ---- config builders -----------------------------------------------------------------------

/** A per-test-process cgroup root, so leftovers are easy to find and remove. */
export const CGROUP_ROOT_NAME = `tscri-e2e-${process.pid}`;

let podSeq = 0;

export interface PodOptions {
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  hostNetwork?: boolean;
  hostname?: string;
  dns?: DNSConfig;
  portMappings?: PortMapping[];
  logDirectory: string;
  uid?: string;
  attempt?: number;
}

export function podConfig(name: string, opts: PodOptions): PodSandboxConfig {
  const uid = opts.uid ?? `uid-${name}-${process.pid}-${++podSeq}`;
  return {
    metadata: { name, namespace: 'tscri-e2e', uid, attempt: opts.attempt ?? 0 },
    hostname: opts.hostname ?? '',
    log_directory: opts.logDirectory,
    dns_config: opts.dns ?? null,
    port_mappings: opts.portMappings ?? [],
    labels: opts.labels ?? {},
    annotations: opts.annotations ?? {},
    linux: {
      cgroup_parent: `/${CGROUP_ROOT_NAME}/pod-${uid}`,
      security_context: {
        namespace_options: {
          network: opts.hostNetwork ? 'NODE' : 'POD',
          pid: 'CONTAINER',
          ipc: 'POD',
        },
      },
    },
  };
}

export interface ContainerOptions {
  args?: string[];
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  logPath?: string;
  resources?: LinuxContainerResources;
  mounts?: Mount[];
  envs?: Record<string, string>;
  attempt?: number;
}

export function containerConfig(name: string, image: string, command: string[], opts: ContainerOptions = {}): ContainerConfig {
  return {
    metadata: { name, attempt: opts.attempt ?? 0 },
    image: { image },
    command,
    args: opts.args ?? [],
    envs: Object.entries(opts.envs ?? {}).map(([key, value]) => ({ key, value })),
    mounts: opts.mounts ?? [],
    labels: opts.labels ?? {},
    annotations: opts.annotations ?? {},
    log_path: opts.logPath ?? `${name}_${opts.attempt ?? 0}.log`,
    linux: { resources: opts.resources ?? null, security_context: {} },
  };
}

/** A shell that exits promptly on SIGTERM (a plain `sleep` as PID 1 ignores it). */
export const SLEEPER = ['sh', '-c', 'trap "exit 0" TERM; while :; do sleep 1; done'];

/** ExecSync with its output as text. */
export async function execIn(cri: CriClient, containerId: string, cmd: string[], timeout = 10): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  const r = await cri.runtime.ExecSync({ container_id: containerId, cmd, timeout });
  return { stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8'), exitCode: r.exit_code };
}

/** Creates and starts a container; returns its id. */
export async function runContainer(cri: CriClient, podId: string, pod: PodSandboxConfig, config: ContainerConfig): Promise<string> {
  const { container_id } = await cri.runtime.CreateContainer({ pod_sandbox_id: podId, config, sandbox_config: pod });
  await cri.runtime.StartContainer({ container_id });
  return container_id;
}

// ---- waiters -------------------------------------------------------------------------------

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` until it returns a value other than undefined; fails naming `what` and the last value seen. */
export async function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined> | T | undefined,
  timeoutMs = 10_000,
  describeLast?: () => string,
): Promise<T> {
  const until = Date.now() + timeoutMs;
  let lastErr = '';
  for (;;) {
    try {
      const v = await check();
      if (v !== undefined) return v;
    } catch (err) {
      lastErr = String(err);
    }
    if (Date.now() > until) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${describeLast ? `; last seen: ${describeLast()}` : ''}${lastErr ? `; last error: ${lastErr}` : ''}`,
      );
    }
    await sleep(100);
  }
}

/** Waits for a container to reach `state` (CONTAINER_RUNNING, CONTAINER_EXITED…); returns its status. */
export async function waitForState(cri: CriClient, id: string, state: string, timeoutMs = 15_000): Promise<ContainerStatus__Output> {
  let last: ContainerStatus__Output | null = null;
  return waitFor(
    `container ${id} to be ${state}`,
    async () => {
      last = (await cri.runtime.ContainerStatus({ container_id: id, verbose: false })).status;
      return last?.state === state ? last : undefined;
    },
    timeoutMs,
    () => JSON.stringify(last && { state: last.state, exit_code: last.exit_code, reason: last.reason, message: last.message }),
  );
}

// ---- CRI logs ------------------------------------------------------------------------------

export interface CriLogLine {
  time: string;
  stream: 'stdout' | 'stderr';
  /** P: a partial line continued by the next record; F: the line ends here. */
  tag: 'P' | 'F';
  content: string;
}

/** Parses a CRI log file (`<RFC3339Nano time> <stream> <P|F> <content>` per line); throws on a malformed line. */
export function readCriLog(file: string): CriLogLine[] {
  const text = fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '';
  const out: CriLogLine[] = [];
  for (const [i, line] of text.split('\n').entries()) {
    if (line === '') continue;
    const m = /^(\S+) (stdout|stderr) ([PF]) (.*)$/s.exec(line);
    if (!m) throw new Error(`${file}:${i + 1}: not a CRI log line: ${JSON.stringify(line)}`);
    if (Number.isNaN(Date.parse(m[1]))) throw new Error(`${file}:${i + 1}: bad timestamp ${JSON.stringify(m[1])}`);
    out.push({ time: m[1], stream: m[2] as CriLogLine['stream'], tag: m[3] as CriLogLine['tag'], content: m[4] });
  }
  return out;
}

/** Full lines of one stream, joining partial records. */
export function logLines(lines: CriLogLine[], stream?: 'stdout' | 'stderr'): string[] {
  const out: string[] = [];
  let cur = '';
  for (const l of lines) {
    if (stream && l.stream !== stream) continue;
    cur += l.content;
    if (l.tag === 'F') {
      out.push(cur);
      cur = '';
    }
  }
  if (cur) out.push(cur);
  return out;
}

// ---- cgroups -------------------------------------------------------------------------------

/** The directory of cgroup `name` (a container id) in v1 hierarchy `controller`, found by walking it. */
export function findCgroupDir(controller: string, name: string, maxDepth = 6): string | undefined {
  const root = path.join('/sys/fs/cgroup', controller);
  const walk = (dir: string, depth: number): string | undefined => {
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return undefined;
    }
    for (const e of entries) {
      if (!e.isDirectory()) continue;
      const p = path.join(dir, e.name);
      if (e.name === name || e.name.includes(name)) return p;
      if (depth < maxDepth) {
        const hit = walk(p, depth + 1);
        if (hit) return hit;
      }
    }
    return undefined;
  };
  return walk(root, 0);
}

export function readCgroupFile(dir: string, file: string): string {
  return fs.readFileSync(path.join(dir, file), 'utf8').trim();
}

/** Removes `/<root>` from every cgroup v1 hierarchy (and the v2 tree), deepest first. */
export function removeCgroupTree(root: string): string[] {
  const failed: string[] = [];
  const rmTree = (dir: string) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) rmTree(path.join(dir, e.name));
    try {
      fs.rmdirSync(dir);
    } catch (err) {
      failed.push(`${dir}: ${(err as Error).message}`);
    }
  };
  const hierarchies = fs
    .readdirSync('/sys/fs/cgroup')
    .map((h) => path.join('/sys/fs/cgroup', h))
    .filter((h) => !fs.lstatSync(h).isSymbolicLink());
  for (const h of ['/sys/fs/cgroup', ...hierarchies]) {
    const dir = path.join(h, root);
    if (fs.existsSync(dir) && fs.statSync(dir).isDirectory()) rmTree(dir);
  }
  return failed;
}

/** Removes the test's cgroup root (`CGROUP_ROOT_NAME`), deepest first; returns what would not go. */
export function removeTestCgroups(): string[] {
  return removeCgroupTree(CGROUP_ROOT_NAME);
}

// ---- host helpers --------------------------------------------------------------------------

/**
 * `ping -c1 -W2` from the host; true when the address answered. Debian's minimal images have no
 * iputils ping, so busybox's (from busybox-static, which the tests need anyway) stands in.
 */
export function hostPing(ip: string): boolean {
  const onPath = spawnSync('sh', ['-c', 'command -v ping'], { stdio: 'ignore' }).status === 0;
  const [cmd, args] = onPath ? ['ping', [] as string[]] : ['/bin/busybox', ['ping']];
  return spawnSync(cmd, [...args, '-c1', '-W2', ip], { stdio: 'ignore' }).status === 0;
}

/** HTTP GET with a short timeout; resolves to the body, or rejects. */
export async function httpGet(url: string, timeoutMs = 3_000): Promise<{ status: number; body: string }> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, body: await res.text() };
}

export function tailLog(text: string, lines = 80): string {
  return text.split('\n').slice(-lines).join('\n');
}

/** The lines of a daemon log that mention `needle` (an id), for failure messages. */
export function logAround(text: string, needle: string, max = 40): string {
  return text
    .split('\n')
    .filter((l) => l.includes(needle))
    .slice(-max)
    .join('\n');
}
