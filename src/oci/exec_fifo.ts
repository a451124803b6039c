// runc's start handshake, done by the daemon instead of a `runc start` process.
//
// `runc create` leaves the container's init blocked writing one byte into <root>/<id>/exec.fifo;
// `runc start` (runc 1.x, libcontainer's exec()) only opens that fifo for reading, reads to EOF
// (the init's end closes when it execs the user process), removes the fifo and exits. The fifo
// lives under the --root dir the daemon gives runc, and this handshake has kept its shape since
// runc 1.0. A `runc start` process costs 7-9 ms, most of it Go start-up; this costs well under
// one. Anything unexpected (no fifo, no byte, the init gone) leaves the decision to `runc start`,
// which then reports the container's real state in its own words.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import { promisify } from 'node:util';
import { alive } from './proc';

const openFd = promisify(fs.open);
const fstat = promisify(fs.fstat);
const closeFd = promisify(fs.close);

/** How often the wait checks that the init is still there (runc start checks every 100 ms). */
const INIT_CHECK_MS = 100;

/**
 * Releases the init waiting on `fifo`. 'started': the init took the go-ahead and the fifo is
 * gone. 'ask-runtime': nothing was released here; run the runtime's own start.
 */
export async function startThroughExecFifo(fifo: string, initPid: number): Promise<'started' | 'ask-runtime'> {
  let fd: number;
  try {
    // Non-blocking: an init that died before opening its end must not hang the open.
    fd = await openFd(fifo, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return 'ask-runtime';
    throw new Error(`open ${fifo}: ${(e as Error).message}`, { cause: e });
  }
  let isFifo = false;
  try {
    isFifo = (await fstat(fd)).isFIFO();
  } finally {
    if (!isFifo) await closeFd(fd);
  }
  if (!isFifo) return 'ask-runtime';
  const got = await readToEnd(fd, initPid);
  if (got === 0) return 'ask-runtime';
  // runc reads a container without exec.fifo as started; the fifo must go as `runc start` does.
  await fsp.rm(fifo, { force: true });
  return 'started';
}

/** Bytes read before the writer closed; 0 when the init went away without writing. */
function readToEnd(fd: number, initPid: number): Promise<number> {
  // A net.Socket polls the fifo through libuv instead of holding a thread-pool thread in read().
  // Linux reports no hang-up on a fifo opened non-blocking before any writer came, so a wait
  // that starts before the init opened its end still ends at the init's exec, not at once.
  const sock = new net.Socket({ fd, readable: true, writable: false });
  return new Promise<number>((resolve) => {
    let bytes = 0;
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      clearInterval(check);
      sock.destroy();
      resolve(bytes);
    };
    const check = setInterval(() => {
      if (bytes === 0 && !alive(initPid)) finish();
    }, INIT_CHECK_MS);
    sock.on('data', (b: Buffer) => (bytes += b.length));
    sock.once('end', finish);
    sock.once('close', finish);
    sock.once('error', finish);
  });
}
