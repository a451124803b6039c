// sd_notify through our own datagram bindings: a socket bound here stands in for systemd's.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { test } from 'node:test';
import { AF_UNIX, bindUnix, closeFd, recvDatagram, SOCK_CLOEXEC, SOCK_DGRAM, socket } from '../../src/sys/libc';
import { sdNotify, takeNotifySocket } from '../../src/sys/sd_notify';
import { tempDir } from '../helpers/unit';

function receiver(name: string): { fd: number; take(): string | null } {
  const fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC);
  bindUnix(fd, name);
  return { fd, take: () => recvDatagram(fd)?.toString('utf8') ?? null };
}

test('READY=1 reaches a socket at a path', () => {
  const name = path.join(tempDir('tscri-notify-'), 'notify');
  const r = receiver(name);
  try {
    assert.equal(r.take(), null);
    sdNotify(name, 'READY=1\nMAINPID=42');
    assert.equal(r.take(), 'READY=1\nMAINPID=42');
  } finally {
    closeFd(r.fd);
  }
});

test("READY=1 reaches an abstract socket named with '@'", () => {
  const name = `@tscri-notify-${randomBytes(6).toString('hex')}`;
  const r = receiver(name);
  try {
    sdNotify(name, 'READY=1');
    assert.equal(r.take(), 'READY=1');
  } finally {
    closeFd(r.fd);
  }
});

test('no NOTIFY_SOCKET: nothing sent; a socket nobody listens on is an error naming it', () => {
  sdNotify(undefined, 'READY=1');
  const gone = path.join(tempDir('tscri-notify-'), 'nobody');
  assert.throws(
    () => sdNotify(gone, 'READY=1'),
    (err: Error) => err.message.includes(gone) && /ENOENT|ECONNREFUSED/.test(err.message),
  );
});

test('the socket is taken out of the environment that children inherit', () => {
  const env: NodeJS.ProcessEnv = { NOTIFY_SOCKET: '/run/systemd/notify', PATH: '/bin' };
  assert.equal(takeNotifySocket(env), '/run/systemd/notify');
  assert.deepEqual(env, { PATH: '/bin' });
  assert.equal(takeNotifySocket(env), undefined);
});
