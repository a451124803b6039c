import { execFile } from 'node:child_process';

export interface ToolResult {
  /** Exit code; null when it was killed or could not start. */
  code: number | null;
  stdout: string;
  stderr: string;
  error?: string;
}

/** Runs a program for a probe: never throws, and gives up after `timeoutMs`. */
export function runTool(file: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<ToolResult> {
  return new Promise((resolve) => {
    const child = execFile(
      file,
      args,
      { timeout: opts.timeoutMs ?? 10_000, env: opts.env ?? process.env, encoding: 'utf8', maxBuffer: 1 << 20 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        resolve({ code, stdout, stderr, error: err && code === null ? err.message : undefined });
      },
    );
    // A program that exits without reading its input closes the pipe under us: not an error.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(opts.input ?? '');
  });
}

/** The last non-empty line of a program's complaint, for a one-line reason. */
export function lastLine(text: string): string {
  const lines = text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '');
  return lines[lines.length - 1] ?? '';
}
