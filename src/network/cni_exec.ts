import { spawnProcess } from '../sys/spawn';

export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION';

export interface PluginInvocation {
  command: CniCommand;
  /** Absolute path of the plugin binary. */
  binary: string;
  /** The plugin's `type`, for messages. */
  type: string;
  containerId: string;
  /** Omitted (not passed as an empty string) when the namespace is gone. */
  netns?: string;
  ifName: string;
  cniArgs: string;
  cniPath: string;
  config: Record<string, unknown>;
  timeoutMs: number;
  /**
   * The plugin is started at once but gets its config only when this settles: plugins read
   * stdin before they touch the namespace, so their start-up can overlap the runtime's own work.
   * A rejection kills the plugin, which has done nothing yet, and rejects with CniNotStartedError.
   */
  configAfter?: Promise<void>;
}

/** A plugin stopped before it had its config, because what it waited for failed (the cause). */
export class CniNotStartedError extends Error {
  constructor(plugin: string, cause: unknown) {
    super(`plugin ${plugin} stopped before it was given its config`, { cause });
    this.name = 'CniNotStartedError';
  }
}

/** The error JSON a plugin prints on failure (CNI spec, "Error" section), with where it came from. */
export class CniPluginError extends Error {
  constructor(
    readonly plugin: string,
    readonly command: CniCommand,
    /** CNI error code; 0 when the plugin printed no error JSON (crash, timeout, spawn failure). */
    readonly code: number,
    readonly msg: string,
    readonly details: string,
    options?: { cause?: unknown },
  ) {
    super(`plugin ${plugin} ${command} failed${code ? ` (code ${code})` : ''}: ${msg}${details ? `: ${details}` : ''}`, options);
    this.name = 'CniPluginError';
  }
}

// CNI spec error code 3: "Container unknown or does not exist. This error implies the runtime
// does not need to perform any container network cleanup".
export const CNI_ERR_UNKNOWN_CONTAINER = 3;

// A plugin's output is a result document of a few KiB; anything far bigger is a broken plugin.
const MAX_OUTPUT = 4 << 20;

/** The daemon's environment without CNI_* variables, so nothing stale leaks into a plugin call. */
export function baseEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CNI_')) env[k] = v;
  // Plugins such as portmap and bridge look up iptables and ip6tables through PATH.
  env.PATH ??= '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';
  return env;
}

/**
 * Runs one plugin binary directly (no shell), as libcni's invoke package does, and returns its
 * parsed stdout: the result for ADD, undefined when a DEL or CHECK prints nothing.
 */
export function execPlugin(inv: PluginInvocation, env: NodeJS.ProcessEnv): Promise<unknown> {
  const childEnv: NodeJS.ProcessEnv = {
    ...env,
    CNI_COMMAND: inv.command,
    CNI_CONTAINERID: inv.containerId,
    CNI_IFNAME: inv.ifName,
    CNI_ARGS: inv.cniArgs,
    CNI_PATH: inv.cniPath,
  };
  if (inv.netns) childEnv.CNI_NETNS = inv.netns;

  return new Promise((resolve, reject) => {
    const child = spawnProcess(inv.binary, [], { env: childEnv, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outLen = 0;
    let errLen = 0;
    let settled = false;
    const fail = (e: CniPluginError) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(e);
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      fail(new CniPluginError(inv.type, inv.command, 0, `timed out after ${inv.timeoutMs} ms`, stderrText()));
    }, inv.timeoutMs);
    const stderrText = () => Buffer.concat(err).toString('utf8').trim().slice(0, 2000);

    child.stdout?.on('data', (c: Buffer) => {
      outLen += c.length;
      if (outLen <= MAX_OUTPUT) out.push(c);
    });
    child.stderr?.on('data', (c: Buffer) => {
      errLen += c.length;
      if (errLen <= 64 << 10) err.push(c);
    });
    child.on('error', (e: Error) => fail(new CniPluginError(inv.type, inv.command, 0, `cannot run ${inv.binary}: ${e.message}`, '', { cause: e })));
    // A plugin that exits before reading stdin makes the write fail with EPIPE; its exit status
    // and error JSON say more than the EPIPE does, so the write error is left to 'close'.
    child.stdin?.on('error', () => {});
    if (!inv.configAfter) child.stdin?.end(JSON.stringify(inv.config));
    else {
      inv.configAfter.then(
        () => child.stdin?.end(JSON.stringify(inv.config)),
        (cause: unknown) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          child.kill('SIGKILL');
          reject(new CniNotStartedError(inv.type, cause));
        },
      );
    }

    child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
      if (settled) return;
      const stdout = Buffer.concat(out).toString('utf8').trim();
      if (outLen > MAX_OUTPUT) {
        fail(new CniPluginError(inv.type, inv.command, 0, `output larger than ${MAX_OUTPUT} bytes`, ''));
        return;
      }
      if (code === 0) {
        if (stdout === '') {
          settled = true;
          clearTimeout(timer);
          if (inv.command === 'ADD') {
            reject(new CniPluginError(inv.type, inv.command, 0, 'plugin printed no result', stderrText()));
            return;
          }
          resolve(undefined);
          return;
        }
        try {
          const parsed: unknown = JSON.parse(stdout);
          settled = true;
          clearTimeout(timer);
          resolve(parsed);
          return;
        } catch (e) {
          fail(new CniPluginError(inv.type, inv.command, 0, `unparseable result: ${(e as Error).message}`, stdout.slice(0, 2000)));
          return;
        }
      }
      let parsed: { code?: unknown; msg?: unknown; details?: unknown } | undefined;
      try {
        parsed = stdout ? (JSON.parse(stdout) as typeof parsed) : undefined;
      } catch {
        parsed = undefined;
      }
      if (parsed && typeof parsed === 'object' && (typeof parsed.msg === 'string' || typeof parsed.code === 'number')) {
        fail(
          new CniPluginError(
            inv.type,
            inv.command,
            typeof parsed.code === 'number' ? parsed.code : 0,
            typeof parsed.msg === 'string' ? parsed.msg : 'error',
            typeof parsed.details === 'string' ? parsed.details : '',
          ),
        );
        return;
      }
      const how = signal ? `killed by ${signal}` : `exit status ${code}`;
      fail(new CniPluginError(inv.type, inv.command, 0, how, [stdout.slice(0, 2000), stderrText()].filter(Boolean).join('; ')));
    });
  });
}
