// Exec and attach end to end: a real daemon, a pod on its own bridge, and minimal clients of the
// streaming protocols — SPDY/3.1 through the daemon's own framer in client mode, WebSocket
// through `ws` — asserting on what kubectl would show: output, exit codes, terminal size.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import WebSocket from 'ws';
import type { CriClient } from '../helpers/cri';
import { startDaemon, type Daemon } from '../helpers/daemon';
import { startRegistry, type Registry } from '../helpers/registry';
import { busyboxLayer, pushImage, type PushedImage } from '../helpers/images';
import { SLEEPER, containerConfig, daemonConfig, makeCniFixture, podConfig, removeTestCgroups, type CniFixture, type TestNetwork } from '../helpers/pods';
import { SpdySession, type SpdyStream } from '../../src/streaming/spdy/session';
import { upgradeSpdy } from '../helpers/spdy_upgrade';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig';

const NET: TestNetwork = { bridge: 'tscri-st0', subnet: '10.99.0.0/24', gateway: '10.99.0.1', name: 'tscri-st' };

let registry: Registry;
let daemon: Daemon;
let cni: CniFixture;
let image: PushedImage;
let logDir: string;
let podId: string;
let pod: PodSandboxConfig;
let sleeper: string;
const cri = (): CriClient => daemon.cri;

async function startContainer(name: string, command: string[], opts: { stdin?: boolean; stdinOnce?: boolean } = {}): Promise<string> {
  assert.ok(image.tagRef, 'the streaming image pushed with a tag');
  const config = containerConfig(name, image.tagRef, command);
  config.stdin = opts.stdin ?? false;
  config.stdin_once = opts.stdinOnce ?? false;
  const { container_id } = await cri().runtime.CreateContainer({ pod_sandbox_id: podId, config, sandbox_config: pod });
  await cri().runtime.StartContainer({ container_id });
  return container_id;
}

// ---- a minimal SPDY remote-command client ------------------------------------------------------

interface SpdyResult {
  status: number;
  protocol?: string;
  stdout: Buffer;
  stderr: Buffer;
  error: string;
  body?: string;
}

function collect(s: SpdyStream | undefined): Promise<Buffer> {
  if (!s) return Promise.resolve(Buffer.alloc(0));
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    s.on('data', (d: Buffer) => parts.push(d));
    s.once('end', () => resolve(Buffer.concat(parts)));
    s.once('close', () => resolve(Buffer.concat(parts)));
  });
}

async function spdyRun(
  url: string,
  protocol: string,
  want: { stdin?: Buffer | string; stdout?: boolean; stderr?: boolean; tty?: boolean; size?: { Width: number; Height: number }; keepStdinOpen?: boolean },
  whileRunning?: (stdout: SpdyStream | undefined, stdin: SpdyStream | undefined) => Promise<void>,
): Promise<SpdyResult> {
  const up = await upgradeSpdy(url, protocol ? [protocol] : []);
  if (up.status !== 101) {
    const body = await new Promise<string>((resolve) => {
      let text = up.head.toString();
      up.socket.on('data', (d: Buffer) => (text += d.toString()));
      up.socket.once('close', () => resolve(text));
      up.socket.resume();
    });
    return { status: up.status, stdout: Buffer.alloc(0), stderr: Buffer.alloc(0), error: '', body };
  }
  const negotiated = /x-stream-protocol-version: (\S+)/i.exec(up.headers)?.[1];
  const session = new SpdySession(up.socket, { server: false, head: up.head });
  up.socket.resume();
  const error = await session.openStream({ streamtype: 'error' });
  const errorText = collect(error);
  const stdin = want.stdin !== undefined ? await session.openStream({ streamtype: 'stdin' }) : undefined;
  const stdout = want.stdout ? await session.openStream({ streamtype: 'stdout' }) : undefined;
  const stderr = want.stderr ? await session.openStream({ streamtype: 'stderr' }) : undefined;
  if (want.tty && protocol !== 'v2.channel.k8s.io' && protocol !== 'channel.k8s.io') {
    const resize = await session.openStream({ streamtype: 'resize' });
    resize.write(JSON.stringify(want.size ?? { Width: 80, Height: 24 }));
  }
  const out = collect(stdout);
  const err = collect(stderr);
  if (stdin && typeof want.stdin !== 'undefined') {
    if (want.keepStdinOpen) stdin.write(want.stdin);
    else stdin.end(want.stdin);
  }
  if (whileRunning) await whileRunning(stdout, stdin);
  const [o, e, x] = await Promise.all([out, err, errorText]);
  session.destroy();
  return { status: up.status, protocol: negotiated, stdout: o, stderr: e, error: x.toString('utf8') };
}

// ---- a minimal WebSocket client ----------------------------------------------------------------

async function wsRun(url: string, protocol: string, stdin?: Buffer): Promise<{ stdout: Buffer; error: string; protocol: string }> {
  const ws = new WebSocket(url.replace(/^http/, 'ws'), [protocol]);
  const out: Buffer[] = [];
  let error = '';
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => {
      if (stdin) {
        ws.send(Buffer.concat([Buffer.from([0]), stdin]));
        // v5: "close channel 0" is the client's stdin EOF.
        ws.send(Buffer.from([255, 0]));
      }
    });
    ws.on('message', (raw: Buffer, isBinary: boolean) => {
      // base64 protocols send text frames: the channel as an ASCII digit, then base64 data.
      const text = !isBinary;
      const channel = text ? raw.toString('latin1').charCodeAt(0) - 48 : raw[0];
      const data = text ? Buffer.from(raw.toString('latin1').slice(1), 'base64') : raw.subarray(1);
      if (channel === 1) out.push(data);
      if (channel === 3) error += data.toString('utf8');
    });
    ws.once('close', () => resolve());
    ws.once('error', reject);
  });
  return { stdout: Buffer.concat(out), error, protocol: ws.protocol };
}

describe('streaming: exec and attach', { timeout: 180_000 }, () => {
  before(async () => {
    cni = makeCniFixture(NET);
    logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-stlogs-'));
    registry = await startRegistry();
    image = await pushImage(registry.host, 'streaming', 'v1', {
      layers: [
        await busyboxLayer(),
        {
          entries: [
            { type: 'dir', path: 'bin' },
            ...['stty', 'tty', 'head', 'wc'].map((a) => ({ type: 'symlink' as const, path: `bin/${a}`, target: 'busybox' })),
          ],
        },
      ],
      config: { Env: ['PATH=/bin'], Cmd: ['/bin/sh'] },
    });
    daemon = await startDaemon({ config: daemonConfig(cni) });
    assert.ok(image.tagRef, 'the streaming image pushed with a tag');
    await cri().image.PullImage({ image: { image: image.tagRef } });
    pod = podConfig('streaming', { logDirectory: logDir });
    ({ pod_sandbox_id: podId } = await cri().runtime.RunPodSandbox({ config: pod, runtime_handler: '' }));
    sleeper = await startContainer('sleeper', SLEEPER);
  });

  after(async () => {
    // Each is unset when before() failed ahead of it.
    if (daemon as Daemon | undefined) {
      await cri()
        .runtime.StopPodSandbox({ pod_sandbox_id: podId }, { timeoutMs: 30_000 })
        .catch(() => undefined);
      await cri()
        .runtime.RemovePodSandbox({ pod_sandbox_id: podId }, { timeoutMs: 30_000 })
        .catch(() => undefined);
      await daemon.stop();
    }
    await (registry as Registry | undefined)?.stop();
    (cni as CniFixture | undefined)?.remove();
    fs.rmSync(logDir, { recursive: true, force: true });
    // The pod's cgroup parent (podConfig's /tscri-e2e-<pid>/pod-…) is the test's to remove.
    const left = removeTestCgroups();
    assert.deepEqual(left, [], `test cgroups could not be removed: ${left.join('; ')}`);
  });

  async function execUrl(cmd: string[], o: { stdin?: boolean; stdout?: boolean; stderr?: boolean; tty?: boolean } = {}): Promise<string> {
    const { url } = await cri().runtime.Exec({
      container_id: sleeper,
      cmd,
      stdin: o.stdin ?? false,
      stdout: o.stdout ?? true,
      stderr: o.stderr ?? !o.tty,
      tty: o.tty ?? false,
    });
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/exec\/[A-Za-z0-9_-]+$/, `expected an absolute loopback URL, saw ${url}`);
    return url;
  }

  test('exec echo over SPDY v4: stdout and a Success status', async () => {
    const r = await spdyRun(await execUrl(['echo', 'hello']), 'v4.channel.k8s.io', { stdout: true, stderr: true });
    assert.equal(r.protocol, 'v4.channel.k8s.io');
    assert.equal(r.stdout.toString(), 'hello\n');
    assert.deepEqual(JSON.parse(r.error), { metadata: {}, status: 'Success' });
  });

  test('exec with stdin over SPDY v2 round-trips 1 MiB of random bytes through cat', async () => {
    const data = crypto.randomBytes(1024 * 1024);
    const r = await spdyRun(await execUrl(['cat'], { stdin: true }), 'v2.channel.k8s.io', { stdin: data, stdout: true, stderr: true });
    assert.equal(r.protocol, 'v2.channel.k8s.io');
    assert.equal(r.stdout.length, data.length, `expected ${data.length} bytes back, saw ${r.stdout.length}`);
    assert.ok(r.stdout.equals(data), 'the bytes that came back differ from those sent');
    assert.equal(r.error, '', 'v2 writes nothing on the error stream on success');
  });

  test('exit code 3 reaches the error stream (v4 JSON, v1 text)', async () => {
    const v4 = await spdyRun(await execUrl(['sh', '-c', 'echo oops >&2; exit 3']), 'v4.channel.k8s.io', { stdout: true, stderr: true });
    assert.equal(v4.stderr.toString(), 'oops\n');
    const st = JSON.parse(v4.error) as { status: string; reason: string; details: { causes: Array<{ reason: string; message: string }> } };
    assert.equal(st.status, 'Failure');
    assert.equal(st.reason, 'NonZeroExitCode');
    assert.deepEqual(st.details.causes, [{ reason: 'ExitCode', message: '3' }]);
    const v1 = await spdyRun(await execUrl(['sh', '-c', 'exit 3']), 'channel.k8s.io', { stdout: true, stderr: true });
    assert.equal(v1.protocol, 'channel.k8s.io');
    assert.match(v1.error, /non-zero exit code.*3/);
  });

  test('TTY exec over SPDY v5 and v3 sees the client terminal size', async () => {
    for (const protocol of ['v5.channel.k8s.io', 'v3.channel.k8s.io']) {
      const r = await spdyRun(await execUrl(['stty', 'size'], { tty: true }), protocol, { stdout: true, tty: true, size: { Width: 100, Height: 40 } });
      assert.equal(r.protocol, protocol);
      assert.equal(r.stdout.toString().trim(), '40 100', `${protocol}: stty size printed ${JSON.stringify(r.stdout.toString())}`);
    }
  });

  test('exec over WebSocket v4 and v5 (v5 closes stdin with a close-channel message)', async () => {
    const v4 = await wsRun(await execUrl(['echo', 'via websocket']), 'v4.channel.k8s.io');
    assert.equal(v4.protocol, 'v4.channel.k8s.io');
    assert.equal(v4.stdout.toString(), 'via websocket\n');
    assert.deepEqual(JSON.parse(v4.error), { metadata: {}, status: 'Success' });
    const v5 = await wsRun(await execUrl(['sh', '-c', 'cat; exit 7'], { stdin: true }), 'v5.channel.k8s.io', Buffer.from('in and out\n'));
    assert.equal(v5.protocol, 'v5.channel.k8s.io');
    assert.equal(v5.stdout.toString(), 'in and out\n');
    assert.equal((JSON.parse(v5.error) as { details: { causes: Array<{ message: string }> } }).details.causes[0].message, '7');
  });

  test('exec over WebSocket channel.k8s.io and the base64 protocols', async () => {
    for (const protocol of ['channel.k8s.io', 'base64.channel.k8s.io', 'v4.base64.channel.k8s.io']) {
      const ok = await wsRun(await execUrl(['echo', protocol]), protocol);
      assert.equal(ok.protocol, protocol, `negotiated ${ok.protocol}, asked ${protocol}`);
      assert.equal(ok.stdout.toString(), `${protocol}\n`, `${protocol}: stdout ${JSON.stringify(ok.stdout.toString())}`);
      const failed = await wsRun(await execUrl(['sh', '-c', 'exit 3']), protocol);
      // v4 reports a JSON status; the older protocols a plain message naming the exit code.
      if (protocol.startsWith('v4.')) {
        assert.equal((JSON.parse(failed.error) as { details: { causes: Array<{ message: string }> } }).details.causes[0].message, '3');
      } else {
        assert.match(failed.error, /non-zero exit code: exit status 3/, `${protocol}: error channel said ${JSON.stringify(failed.error)}`);
      }
    }
  });

  test('attach reads a running container and sends it input', async () => {
    const id = await startContainer('echoer', ['sh', '-c', 'echo ready; while read l; do echo got $l; done'], { stdin: true, stdinOnce: true });
    const { url } = await cri().runtime.Attach({ container_id: id, stdin: true, stdout: true, stderr: true, tty: false });
    assert.match(url, /^http:\/\/127\.0\.0\.1:\d+\/attach\//);
    const r = await spdyRun(url, 'v4.channel.k8s.io', { stdin: 'ping\n', stdout: true, stderr: true });
    assert.match(r.stdout.toString(), /got ping/);
    assert.deepEqual(JSON.parse(r.error), { metadata: {}, status: 'Success' });
    // stdin only for containers created with it.
    const plain = await startContainer('nostdin', ['sleep', '60']);
    await assert.rejects(cri().runtime.Attach({ container_id: plain, stdin: true, stdout: true, stderr: false, tty: false }), /without stdin/);
  });

  test('a used or unknown URL is refused', async () => {
    const url = await execUrl(['true']);
    const first = await spdyRun(url, 'v4.channel.k8s.io', { stdout: true, stderr: true });
    assert.equal(first.status, 101);
    const again = await spdyRun(url, 'v4.channel.k8s.io', { stdout: true, stderr: true });
    assert.equal(again.status, 410, `reused URL: expected 410, saw ${again.status} ${again.body ?? ''}`);
    assert.match(again.body ?? '', /already used/);
    const unknown = await spdyRun(url.replace(/[^/]+$/, 'nosuchtoken'), 'v4.channel.k8s.io', { stdout: true });
    assert.equal(unknown.status, 404);
    const none = await spdyRun(await execUrl(['true']), 'v9.channel.k8s.io', { stdout: true });
    assert.equal(none.status, 403);
  });
});
