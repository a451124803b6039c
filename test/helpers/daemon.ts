import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connectCri, repoRoot, type CriClient } from './cri';

export interface DaemonOptions {
  /** TOML text written to a config file and passed with --config. */
  config?: string;
  /** Used as is and never deleted; a fresh temp dir otherwise. */
  registryConfigDir?: string;
  /** Used as is and never deleted (a restart test hands one daemon's root to the next). */
  root?: string;
  logLevel?: string;
  readyTimeoutMs?: number;
  /** Extra environment for the daemon process. */
  env?: NodeJS.ProcessEnv;
  /** Extra node options before the script (--cpu-prof, which NODE_OPTIONS refuses). */
  nodeArgs?: string[];
}

export interface StopOptions {
  /** Leave the temp dirs on disk (for a later daemon, or for a post-mortem). */
  keep?: boolean;
  timeoutMs?: number;
}

export interface Daemon {
  readonly socket: string;
  readonly root: string;
  readonly state: string;
  readonly registryConfigDir: string;
  /** The temp dir holding everything this helper created. */
  readonly base: string;
  /** A client for the current daemon process; replaced by restart(). */
  readonly cri: CriClient;
  readonly pid: number | undefined;
  /** Everything the daemon wrote to stderr and stdout so far (pino JSON lines). */
  logs(): string;
  /** Signals the daemon, waits for it to exit, then removes temp dirs unless `keep`. Returns the exit code or signal. */
  stop(signal?: NodeJS.Signals, opts?: StopOptions): Promise<string>;
  /** Stops with SIGTERM, keeping every dir, and starts a new process on the same dirs. */
  restart(): Promise<void>;
}

const live = new Set<ChildProcess>();
// A test file that crashes must not leave daemons behind holding sockets and mounts.
process.on('exit', () => {
  for (const child of live) child.kill('SIGKILL');
});

function mainJs(): string {
  return path.join(repoRoot(), 'dist', 'src', 'main.js');
}

function tail(text: string, lines = 60): string {
  return text.split('\n').slice(-lines).join('\n');
}

function exitDescription(child: ChildProcess): string {
  return child.signalCode ? `signal ${child.signalCode}` : `code ${child.exitCode}`;
}

function waitExit(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => child.once('exit', () => resolve()));
}

export async function startDaemon(opts: DaemonOptions = {}): Promise<Daemon> {
  const base = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-e2e-'));
  const root = opts.root ?? path.join(base, 'root');
  const state = path.join(base, 'state');
  const registryConfigDir = opts.registryConfigDir ?? path.join(base, 'registries');
  // The socket lives apart from state so its path stays short (sun_path is 108 bytes).
  const socket = path.join(base, 'cri.sock');
  for (const dir of [root, state, registryConfigDir]) fs.mkdirSync(dir, { recursive: true });
  let configFile: string | undefined;
  if (opts.config !== undefined) {
    configFile = path.join(base, 'tscri.toml');
    fs.writeFileSync(configFile, opts.config);
  }

  let log = '';
  let child: ChildProcess | undefined;
  let cri: CriClient | undefined;

  // Caller-owned dirs (root, registry config) are never inside this fresh mkdtemp base, so
  // removing the base removes exactly what this helper created.
  const removeOwnDirs = () => fs.rmSync(base, { recursive: true, force: true });

  const spawnDaemon = async (): Promise<void> => {
    const args = [
      // As the tscri command and npm run setup start it (src/main.ts's first line).
      '--max-semi-space-size=1',
      ...(opts.nodeArgs ?? []),
      mainJs(),
      '--listen',
      `unix://${socket}`,
      '--root',
      root,
      '--state',
      state,
      '--registry-config-dir',
      registryConfigDir,
      // Port 0 so that several daemons (and a host tscri) never fight over a metrics port.
      '--metrics-listen',
      '127.0.0.1:0',
      '--log-level',
      opts.logLevel ?? 'debug',
    ];
    if (configFile) args.push('--config', configFile);
    log += `--- spawn: node ${args.join(' ')}\n`;
    const proc = spawn(process.execPath, args, {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env },
    });
    child = proc;
    live.add(proc);
    proc.stdout.setEncoding('utf8').on('data', (d: string) => (log += d));
    proc.stderr.setEncoding('utf8').on('data', (d: string) => (log += d));
    proc.once('exit', () => {
      live.delete(proc);
      log += `--- daemon exited with ${exitDescription(proc)}\n`;
    });

    const client = connectCri(socket);
    const timeoutMs = opts.readyTimeoutMs ?? 15_000;
    const until = Date.now() + timeoutMs;
    let lastErr = '';
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        client.close();
        throw new Error(`tscri exited before answering Version (${exitDescription(proc)}); log:\n${tail(log)}`);
      }
      try {
        await client.runtime.Version({ version: 'v1' }, { timeoutMs: 1_000 });
        break;
      } catch (err) {
        lastErr = String(err);
      }
      if (Date.now() > until) {
        client.close();
        proc.kill('SIGKILL');
        await waitExit(proc);
        throw new Error(`tscri did not answer Version within ${timeoutMs} ms (last error: ${lastErr}); log:\n${tail(log)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    // The daemon probes the host once it serves (src/host/probe.ts: a runc container, namespace
    // pins, an overlay mount); Status(verbose) answers when that is done, so that no test or
    // benchmark runs beside it.
    try {
      await client.runtime.Status({ verbose: true }, { timeoutMs: 120_000 });
    } catch (err) {
      client.close();
      proc.kill('SIGKILL');
      await waitExit(proc);
      throw new Error(`tscri did not answer Status(verbose) after its host check: ${String(err)}; log:\n${tail(log)}`);
    }
    cri = client;
  };

  const stopProcess = async (signal: NodeJS.Signals, timeoutMs: number): Promise<string> => {
    cri?.close();
    const proc = child;
    if (!proc) return 'not started';
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill(signal);
      const timer = setTimeout(() => {
        log += `--- no exit ${timeoutMs} ms after ${signal}, sending SIGKILL\n`;
        proc.kill('SIGKILL');
      }, timeoutMs);
      await waitExit(proc);
      clearTimeout(timer);
    }
    return exitDescription(proc);
  };

  try {
    await spawnDaemon();
  } catch (err) {
    removeOwnDirs();
    throw err;
  }

  return {
    socket,
    root,
    state,
    registryConfigDir,
    base,
    get cri(): CriClient {
      if (!cri) throw new Error('tscri is not running');
      return cri;
    },
    get pid() {
      return child?.pid;
    },
    logs: () => log,
    async stop(signal: NodeJS.Signals = 'SIGTERM', stopOpts: StopOptions = {}) {
      const how = await stopProcess(signal, stopOpts.timeoutMs ?? 10_000);
      if (!stopOpts.keep) removeOwnDirs();
      return how;
    },
    async restart() {
      await stopProcess('SIGTERM', 10_000);
      await spawnDaemon();
    },
  };
}
