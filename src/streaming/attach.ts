// Attach through conmon's attach socket, <bundle>/attach (conmon runs with --full-attach).
//
// From conmon's src/conn_sock.c and src/ctr_stdio.c: the socket is SOCK_SEQPACKET; every packet
// conmon sends is one read of the container's output prefixed with one byte naming the pipe
// (2 stdout, 3 stderr; a TTY's output comes as stdout); what a client sends is written raw to
// the container's stdin, and a client's shutdown(SHUT_WR) closes that stdin unless conmon was
// told --leave-stdin-open (stdin_once=false). Any number of clients may attach; each gets all
// output from the moment it connected. Terminal size goes through the ctl fifo:
// "1 <height> <width>\n" (message type 1 is a window resize, src/ctrl.c).

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from '../log';
import { AF_UNIX, closeFd, connectUnix, O_PATH, SOCK_CLOEXEC, SOCK_NONBLOCK, SOCK_SEQPACKET, socket } from '../sys/libc';
import { FdChannel } from './fd_channel';
import type { RemoteIO, TerminalSize } from './remotecommand';

const PIPE_STDOUT = 2;
const PIPE_STDERR = 3;
/** conmon reads client packets into a buffer of CONN_SOCK_BUF_SIZE; stay well below it. */
const MAX_PACKET = 8192;
const RESIZE_EVENT = 1;

export interface AttachTarget {
  id: string;
  bundle: string;
}

/** Connects to conmon's attach socket; long bundle paths go through /proc/self/fd. */
export function connectAttach(bundle: string): number {
  const fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_NONBLOCK | SOCK_CLOEXEC);
  let dirFd = -1;
  try {
    const direct = path.join(bundle, 'attach');
    if (Buffer.byteLength(direct) < 100) {
      connectUnix(fd, direct);
    } else {
      dirFd = fs.openSync(bundle, O_PATH | fs.constants.O_DIRECTORY);
      connectUnix(fd, `/proc/self/fd/${dirFd}/attach`);
    }
    return fd;
  } catch (e) {
    closeFd(fd);
    throw e;
  } finally {
    if (dirFd >= 0) fs.closeSync(dirFd);
  }
}

async function resizeVia(bundle: string, size: TerminalSize): Promise<void> {
  // conmon holds both ends of the fifo open, so a non-blocking open fails only when it is gone.
  const fh = await fsp.open(path.join(bundle, 'ctl'), fs.constants.O_WRONLY | fs.constants.O_NONBLOCK);
  try {
    await fh.write(`${RESIZE_EVENT} ${size.height} ${size.width}\n`);
  } finally {
    await fh.close();
  }
}

/** Relays until the container's output ends (it exited) or the client goes away. */
export async function runAttach(target: AttachTarget, io: RemoteIO, tty: boolean, log: Logger): Promise<void> {
  let fd: number;
  try {
    fd = connectAttach(target.bundle);
  } catch (e) {
    throw new Error(`attach to container ${target.id}: conmon's attach socket: ${(e as Error).message}`, { cause: e });
  }
  const ch = new FdChannel(fd, { maxWrite: MAX_PACKET, socket: true });
  const onResize = (s: TerminalSize): void => {
    resizeVia(target.bundle, s).catch((e: unknown) => log.debug({ container: target.id, err: (e as Error).message }, 'attach resize failed'));
  };
  try {
    if (tty) {
      if (io.lastSize) onResize(io.lastSize);
      io.resize.on('resize', onResize);
    }
    ch.on('data', (packet: Buffer) => {
      if (packet.length < 2) return;
      const sink = packet[0] === PIPE_STDERR && !tty ? io.stderr : packet[0] === PIPE_STDOUT || packet[0] === PIPE_STDERR ? io.stdout : undefined;
      if (!sink || sink.destroyed) return;
      if (!sink.write(packet.subarray(1))) {
        ch.pause();
        sink.once('drain', () => ch.resume());
      }
    });
    if (io.stdin) {
      io.stdin.on('data', (d: Buffer) => ch.write(d));
      io.stdin.once('end', () => ch.end());
    }
    await new Promise<void>((resolve) => {
      ch.once('end', () => resolve());
      ch.once('error', (e: Error) => {
        log.debug({ container: target.id, err: e.message }, 'attach socket error');
        resolve();
      });
      void io.gone.then(() => resolve());
    });
  } finally {
    io.resize.off('resize', onResize);
    ch.close();
  }
}
