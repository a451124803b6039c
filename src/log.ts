import pino from 'pino';

export type Logger = pino.Logger;

/** JSON lines on stderr; level from config (TSCRI_LOG_LEVEL overrides for tests). */
export function createLogger(level: string): Logger {
  return pino({ level: process.env.TSCRI_LOG_LEVEL ?? level, base: { name: 'tscri' } }, pino.destination(2));
}
