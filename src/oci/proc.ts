// Small process helpers for the OCI driver: bounded output capture and the runtime's error text.

import fs from 'node:fs';
import type { Readable } from 'node:stream';
import { clockNs, CLOCK_BOOTTIME, CLOCK_REALTIME } from '../sys/libc';
import { spawnProcess } from '../sys/spawn';

/** Collects a stream up to `cap` bytes and keeps draining past it, so the writer never blocks. */
export class CappedSink {
  private readonly chunks: Buffer[] = [];
  private size = 0;
  truncated = false;

  constructor(private readonly cap: number) {}

  attach(stream: Readable | null): void {
    stream?.on('data', (chunk: Buffer) => this.push(chunk));
    // A pipe the child shares with a process we later kill can report EPIPE/ECONNRESET; the
    // output read so far is still what the caller wants.
    stream?.on('error', () => undefined);
  }

  push(chunk: Buffer): void {
    const room = this.cap - this.size;
    if (room <= 0) {
      this.truncated = true;
      return;
    }
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
    if (part.length < chunk.length) this.truncated = true;
    this.chunks.push(part);
    this.size += part.length;
  }

  buffer(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }

  text(): string {
    return this.buffer().toString('utf8');
  }
}

/**
 * runc logs through logrus (`time="…" level=error msg="…"`); the msg is what a person needs.
 * Other runtimes (crun) print plain text, returned trimmed.
 */
export function runtimeErrorText(stderr: string): string {
  const msgs: string[] = [];
  for (const line of stderr.split('\n')) {
    const m = /level=(?:error|fatal|warning)\s+msg="((?:[^"\\]|\\.)*)"/.exec(line);
    if (m) msgs.push(unquoteGo(m[1]));
  }
  if (msgs.length > 0) return msgs.join('; ');
  return stderr.trim();
}

function unquoteGo(s: string): string {
  try {
    return JSON.parse(`"${s}"`) as string;
  } catch {
    return s;
  }
}

export interface RunResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs a short command to completion with captured output (at most 1 MiB per stream). */
export function run(binary: string, args: string[], opts: { input?: string | Buffer; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawnProcess(binary, args, {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
    });
    const out = new CappedSink(1 << 20);
    const err = new CappedSink(1 << 20);
    out.attach(child.stdout);
    err.attach(child.stderr);
    let timer: NodeJS.Timeout | undefined;
    if (opts.timeoutMs) {
      timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
    }
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code: number | null, signal: NodeJS.Signals | null) => {
      if (timer) clearTimeout(timer);
      resolve({ code, signal, stdout: out.text(), stderr: err.text() });
    });
    if (opts.input !== undefined && child.stdin) {
      child.stdin.on('error', () => undefined);
      child.stdin.end(opts.input);
    }
  });
}

/** Whether a pid names a live (non-zombie) process. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.charAt(stat.lastIndexOf(')') + 2) !== 'Z';
  } catch {
    return false;
  }
}

/** All descendants of `pid`, children before grandchildren, from one /proc scan. */
export function descendants(pid: number): number[] {
  const children = new Map<number, number[]>();
  let entries: string[];
  try {
    entries = fs.readdirSync('/proc');
  } catch {
    return [];
  }
  for (const name of entries) {
    if (!/^\d+$/.test(name)) continue;
    let stat: string;
    try {
      stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8');
    } catch {
      continue;
    }
    // Fields after the parenthesised comm: state ppid …
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const ppid = Number(rest[1]);
    const list = children.get(ppid);
    if (list) list.push(Number(name));
    else children.set(ppid, [Number(name)]);
  }
  const out: number[] = [];
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift() as number;
    for (const c of children.get(p) ?? []) {
      out.push(c);
      queue.push(c);
    }
  }
  return out;
}

// USER_HZ, the unit of /proc/<pid>/stat's times: 100 on every Linux architecture.
const CLOCK_TICKS_PER_SECOND = 100;

/** A process's state letter and start time (clock ticks after boot), from /proc/<pid>/stat. */
export function procStat(pid: number): { state: string; startTicks: number } | undefined {
  let stat: string;
  try {
    stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // Fields after "(comm) ": state is field 3, starttime field 22.
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const startTicks = Number(rest[19]);
  return Number.isFinite(startTicks) ? { state: rest[0], startTicks } : undefined;
}

/**
 * When a process started, in ms since the epoch, precise to the clock tick (10 ms); undefined
 * once it is gone. starttime counts from boot on CLOCK_BOOTTIME, so the boot instant is taken as
 * now on the wall clock minus CLOCK_BOOTTIME now: /proc/stat's btime would do the same sum but is
 * rounded down to the second, putting the result up to a second early.
 */
export function processStartTimeMs(pid: number): number | undefined {
  const p = procStat(pid);
  if (!p) return undefined;
  const bootNs = clockNs(CLOCK_REALTIME) - clockNs(CLOCK_BOOTTIME);
  return Number(bootNs / 1_000_000n) + (p.startTicks * 1000) / CLOCK_TICKS_PER_SECOND;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
