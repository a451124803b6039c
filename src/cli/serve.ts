import type { Config } from '../config';
import { Daemon } from '../daemon';
import { createLogger } from '../log';

/** The daemon in the foreground until SIGTERM or SIGINT. */
export async function serve(cfg: Config): Promise<void> {
  const log = createLogger(cfg.logLevel);
  const daemon = new Daemon(cfg, log);
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    daemon.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        log.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  try {
    await daemon.start();
  } catch (err) {
    log.fatal({ err }, 'tscri failed to start');
    process.exit(1);
  }
}
