import type { Config } from '../config';
import { Daemon } from '../daemon';
import { createLogger, type Logger } from '../log';
import { sdNotify, takeNotifySocket } from '../sys/sd_notify';

/** The daemon in the foreground until SIGTERM or SIGINT. */
export async function serve(cfg: Config): Promise<void> {
  // Taken before anything is spawned, so that no child inherits it.
  const notifySocket = takeNotifySocket();
  const log = createLogger(cfg.logLevel);
  const daemon = new Daemon(cfg, log);
  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    notify(notifySocket, 'STOPPING=1', log);
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
  // The CRI socket serves now: a Type=notify unit counts as started, and units ordered after
  // it (the kubelet) may start.
  notify(notifySocket, `READY=1\nMAINPID=${process.pid}`, log);
}

function notify(socket: string | undefined, state: string, log: Logger): void {
  try {
    sdNotify(socket, state);
  } catch (err) {
    log.warn({ err, socket }, 'cannot notify systemd');
  }
}
