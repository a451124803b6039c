import * as os from 'node:os';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';

/** Bad command line: main prints the usage and exits 2. */
export class UsageError extends Error {}

/**
 * `--name value` and `--name=value` flags; every flag must appear in `defaults`, so a typo
 * fails instead of silently measuring with the default.
 */
export function parseFlags(argv: string[], defaults: Record<string, string>): Record<string, string> {
  const out = { ...defaults };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const m = /^--([a-z][a-z0-9-]*)(?:=(.*))?$/.exec(arg);
    if (!m) throw new UsageError(`unexpected argument ${JSON.stringify(arg)}`);
    const name = m[1];
    if (!(name in defaults)) throw new UsageError(`unknown flag --${name}`);
    let value = m.at(2);
    if (value === undefined) {
      value = argv.at(++i);
      if (value === undefined) throw new UsageError(`--${name} needs a value`);
    }
    out[name] = value;
  }
  return out;
}

/** An integer flag of parseFlags' result, at least `min`. */
export function intFlag(flags: Record<string, string>, name: string, min: number): number {
  const v = Number(flags[name]);
  if (!Number.isInteger(v) || v < min) throw new UsageError(`--${name} must be an integer >= ${min}, got ${flags[name]}`);
  return v;
}

/** A flag of parseFlags' result that is a number of seconds, 0 or more. */
export function secondsFlag(flags: Record<string, string>, name: string): number {
  const v = Number(flags[name]);
  if (!Number.isFinite(v) || v < 0) throw new UsageError(`--${name} must be a number of seconds, got ${flags[name]}`);
  return v;
}

let clockTicks: number | undefined;

/** User + system CPU seconds a process has used so far (its threads included). */
export function cpuSeconds(pid: number): number {
  clockTicks ??= Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  // The command name may contain spaces and parentheses: fields are counted after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of stat(5), i.e. 11 and 12 after the name.
  return (Number(fields[11]) + Number(fields[12])) / clockTicks;
}

export function median(xs: number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

export function fmtSec(s: number): string {
  return Number.isFinite(s) ? `${s.toFixed(2)} s` : '-';
}

export function fmtMB(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

export function fmtRatio(r: number): string {
  return Number.isFinite(r) ? `${r.toFixed(2)}x` : 'n/a';
}

/** A plain text table: first column left-aligned, the others right-aligned. */
export function table(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, c) => Math.max(...all.map((r) => (r[c] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((cell, c) => (c === 0 ? cell.padEnd(widths[c]) : cell.padStart(widths[c])))
      .join('  ')
      .trimEnd();
  return [line(header), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)].join('\n');
}

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

export const fmtMs = (ms: number) => (Number.isFinite(ms) ? `${ms.toFixed(1)} ms` : '-');

/** The rules iptables-save prints, without comments. */
export function iptablesSave(): string[] {
  const r = spawnSync('iptables-save', [], { encoding: 'utf8' });
  if (r.status !== 0) return [`iptables-save failed: ${r.stderr.trim()}`];
  return r.stdout.split('\n').filter((l) => l && !l.startsWith('#'));
}

/** `v`, or an Error naming `what` when the benchmark did not get it. */
export function need<T>(v: T | null | undefined, what: string): T {
  if (v === undefined || v === null) throw new Error(`benchmark expected ${what}, got ${String(v)}`);
  return v;
}

/** The load average before and after a benchmark, as every benchmark ends its report. */
export function loadLine(before: number[], after: number[]): string {
  const fmt = (l: number[]) => l.map((x) => x.toFixed(2)).join(' ');
  return `load average: before ${fmt(before)}, after ${fmt(after)} (${os.cpus().length} CPUs)`;
}

/** Prints what the teardown could not clean and why the benchmark failed; the exit status. */
export function exitStatus(problems: string[], failed: string | undefined): number {
  for (const p of problems) console.error(`cleanup: ${p}`);
  if (failed) {
    console.error(failed);
    return 1;
  }
  return 0;
}
