import type { Config } from '../config';
import { formatReport, probeHost } from '../host/probe';
import { stopNamespaceWorker } from '../sys/namespaces';

/** `tscri check`: the host report on stdout; exit 1 when no pod could run here. */
export async function check(cfg: Config): Promise<number> {
  try {
    const report = await probeHost(cfg);
    process.stdout.write(formatReport(report));
    return report.podsCanRun ? 0 : 1;
  } finally {
    await stopNamespaceWorker();
  }
}
