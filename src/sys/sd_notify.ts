// systemd's readiness protocol (sd_notify(3)) for a Type=notify unit: one datagram of
// "KEY=value" lines to the socket named in $NOTIFY_SOCKET. Node has no unix datagram sockets,
// so the socket is made through libc.
import { AF_UNIX, closeFd, sendDatagram, SOCK_CLOEXEC, SOCK_DGRAM, socket } from './libc';

/**
 * Takes NOTIFY_SOCKET out of the environment and returns it. Children must not see it: runc,
 * finding it, would relay the container's own notifications in place of ours.
 */
export function takeNotifySocket(env: NodeJS.ProcessEnv = process.env): string | undefined {
  const name = env.NOTIFY_SOCKET;
  delete env.NOTIFY_SOCKET;
  return name || undefined;
}

/** Sends `state` (e.g. "READY=1") to `notifySocket`; nothing when there is none. */
export function sdNotify(notifySocket: string | undefined, state: string): void {
  if (!notifySocket) return;
  const fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC);
  try {
    sendDatagram(fd, notifySocket, Buffer.from(state, 'utf8'));
  } finally {
    closeFd(fd);
  }
}
