// A TTY exec's parent. runc only sends a pty master over --console-socket when it detaches
// (`exec -d`), and a detached process is reparented to the nearest child subreaper, which is
// the only process that can learn its exit status. The daemon must not become a subreaper
// (conmon's daemonized monitors would pile up as its zombies), so this small process does:
// it marks itself a subreaper, runs `runc exec -d --tty`, waits for the exec'd pid and prints
// one JSON line: {"exitCode": n} or {"error": "…"}. The daemon keeps the console socket and
// the I/O; this process holds nothing but the wait.
//
// argv: <runtime> <its global flags, JSON> <container id> <console socket> <process.json> <pid file>

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { setChildSubreaper, waitExitCode } from '../sys/libc';

function main(): void {
  const [binary, globalArgs, id, consoleSocket, processFile, pidFile] = process.argv.slice(2) as [string, string, string, string, string, string];
  const say = (msg: object): void => {
    fs.writeSync(1, `${JSON.stringify(msg)}\n`);
  };
  try {
    setChildSubreaper();
    const r = spawnSync(
      binary,
      [
        ...(JSON.parse(globalArgs) as string[]),
        'exec',
        '--detach',
        '--tty',
        '--console-socket',
        consoleSocket,
        '--process',
        processFile,
        '--pid-file',
        pidFile,
        id,
      ],
      { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' },
    );
    if (r.error) {
      say({ error: `cannot run ${binary}: ${r.error.message}` });
      return;
    }
    if (r.status !== 0) {
      say({ error: (r.stderr || `${binary} exec exited ${r.status ?? r.signal}`).trim() });
      return;
    }
    const pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
    if (!Number.isInteger(pid) || pid <= 0) {
      say({ error: `${binary} wrote no pid to ${pidFile}` });
      return;
    }
    say({ pid });
    say({ exitCode: waitExitCode(pid) });
  } catch (err) {
    say({ error: (err as Error).message });
  }
}

main();
