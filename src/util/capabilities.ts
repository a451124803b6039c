import { readFileSync } from 'node:fs';

const CAP_SYS_RESOURCE = 24n;

/** Whether this process may lower oom_score_adj (raise it is always allowed). */
export function hasSysResource(): boolean {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
    return m ? ((BigInt(`0x${m[1]}`) >> CAP_SYS_RESOURCE) & 1n) === 1n : false;
  } catch {
    return false;
  }
}
