// The service unit: manifests/tscri.service passes `systemd-analyze verify`, and the daemon
// says READY=1 on $NOTIFY_SOCKET only once its CRI socket serves (Type=notify). A datagram
// socket made with our own bindings stands in for systemd's.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { AF_UNIX, bindUnix, closeFd, recvDatagram, SOCK_CLOEXEC, SOCK_DGRAM, socket } from '../../src/sys/libc';
import { connectCri, repoRoot } from '../helpers/cri';

const unit = path.join(repoRoot(), 'manifests', 'tscri.service');
const base = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-systemd-'));
after(() => fs.rmSync(base, { recursive: true, force: true }));

test('manifests/tscri.service passes systemd-analyze verify', () => {
  // verify checks that ExecStart's program exists. The unit names where `npm install -g` puts
  // tscri; this checkout is not installed there, so the copy verified differs from the shipped
  // unit in that one line only, which points at this checkout's build instead.
  const shipped = fs.readFileSync(unit, 'utf8');
  const execStart = 'ExecStart=/usr/local/bin/tscri';
  assert.ok(shipped.split('\n').includes(execStart), `${unit} should start ${execStart}`);
  const copy = path.join(base, 'tscri.service');
  fs.writeFileSync(copy, shipped.replace(execStart, `ExecStart=${process.execPath} ${path.join(repoRoot(), 'dist', 'src', 'main.js')}`));
  const r = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr.trim(), '', 'verify should not warn');
  for (const line of [
    'Type=notify',
    'Delegate=yes',
    'KillMode=process',
    'LimitNOFILE=infinity',
    'LimitNPROC=infinity',
    'LimitCORE=infinity',
    'TasksMax=infinity',
    'OOMScoreAdjust=-999',
    'Restart=always',
  ]) {
    assert.ok(shipped.split('\n').includes(line), `${unit} should set ${line}`);
  }
});

test('the daemon sends READY=1 on NOTIFY_SOCKET once the CRI socket serves', async () => {
  const notifyPath = path.join(base, 'notify');
  const fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC);
  bindUnix(fd, notifyPath);
  const sock = path.join(base, 'cri.sock');
  const child = spawn(
    process.execPath,
    [
      path.join(repoRoot(), 'dist', 'src', 'main.js'),
      '--listen',
      `unix://${sock}`,
      '--root',
      path.join(base, 'root'),
      '--state',
      path.join(base, 'state'),
      '--registry-config-dir',
      path.join(base, 'registries'),
      '--metrics-listen',
      '',
      '--cni-conf-dir',
      path.join(base, 'net.d'),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, NOTIFY_SOCKET: notifyPath } },
  );
  let log = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (log += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    let message: string | null = null;
    const until = Date.now() + 30_000;
    while (message === null) {
      assert.equal(child.exitCode, null, `tscri exited before READY=1; log:\n${log}`);
      assert.ok(Date.now() < until, `no READY=1 within 30 s; log:\n${log}`);
      message = recvDatagram(fd)?.toString('utf8') ?? null;
      if (message === null) await new Promise((r) => setTimeout(r, 5));
    }
    assert.match(message, /^READY=1$/m);
    assert.match(message, new RegExp(`^MAINPID=${child.pid}$`, 'm'));
    // At the moment READY=1 arrived, the CRI already answers: one call, no retry.
    const cri = connectCri(sock);
    try {
      const v = await cri.runtime.Version({ version: 'v1' }, { timeoutMs: 5_000 });
      assert.equal(v.runtime_name, 'tscri');
    } finally {
      cri.close();
    }
    child.kill('SIGTERM');
    await exited;
    assert.match(recvDatagram(fd)?.toString('utf8') ?? '', /^STOPPING=1$/m, 'STOPPING=1 on SIGTERM');
  } finally {
    closeFd(fd);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
  }
});
