import { CHURN_USAGE, runChurn } from './churn';
import { EXEC_USAGE, runExec } from './exec';
import { FLOOR_USAGE, runFloor } from './floor';
import { LIFECYCLE_USAGE, runLifecycle } from './lifecycle';
import { POLL_USAGE, runPoll } from './poll';
import { PULL_USAGE, runPull } from './pull';
import { SCALE_USAGE, runScale } from './scale';
import { UsageError } from './util';

interface Command {
  usage: string;
  run(argv: string[]): Promise<number>;
}

const COMMANDS: Record<string, Command> = {
  pull: { usage: PULL_USAGE, run: runPull },
  lifecycle: { usage: LIFECYCLE_USAGE, run: runLifecycle },
  exec: { usage: EXEC_USAGE, run: runExec },
  scale: { usage: SCALE_USAGE, run: runScale },
  poll: { usage: POLL_USAGE, run: runPoll },
  churn: { usage: CHURN_USAGE, run: runChurn },
  floor: { usage: FLOOR_USAGE, run: runFloor },
};

function usage(): string {
  return ['usage: npm run bench -- <command> [flags]', '', ...Object.values(COMMANDS).map((c) => `  ${c.usage}`), ''].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const name = argv.at(0);
  const rest = argv.slice(1);
  if (name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(usage());
    return 0;
  }
  const cmd = name !== undefined && Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!cmd) {
    process.stderr.write(`${name === undefined ? 'no command given' : `unknown command ${JSON.stringify(name)}`}\n\n${usage()}`);
    return 2;
  }
  try {
    return await cmd.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`${name}: ${err.message}\n\n${usage()}`);
      return 2;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  },
);
