#!/usr/bin/env -S node --max-semi-space-size=1
// A small young generation: the daemon allocates little per request, and the default 16 MB
// semi-spaces cost ~6 MB of resident memory for nothing.
import { loadConfig } from './config';
import { Daemon } from './daemon';
import { createLogger } from './log';

async function main(): Promise<void> {
  let cfg;
  try {
    cfg = loadConfig(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`tscri: ${(err as Error).message}\n`);
    process.exit(2);
  }
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

void main();
