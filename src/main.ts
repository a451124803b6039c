#!/usr/bin/env -S node --max-semi-space-size=1
// A small young generation: the daemon allocates little per request, and the default 16 MB
// semi-spaces cost ~6 MB of resident memory for nothing.
import { check } from './cli/check';
import { configText } from './cli/config';
import { helpText } from './cli/help';
import { serve } from './cli/serve';
import { versionText } from './cli/version';
import { type CommandLine, configFromCommandLine, parseCommandLine } from './config';

function usageError(err: unknown): never {
  process.stderr.write(`tscri: ${(err as Error).message}\n(tscri --help lists the commands and options)\n`);
  process.exit(2);
}

async function main(): Promise<void> {
  let cl: CommandLine;
  try {
    cl = parseCommandLine(process.argv.slice(2));
  } catch (err) {
    usageError(err);
  }
  if (cl.help) return void process.stdout.write(helpText());
  if (cl.version) return void process.stdout.write(versionText());
  let cfg;
  try {
    cfg = configFromCommandLine(cl);
  } catch (err) {
    usageError(err);
  }
  switch (cl.command) {
    case 'config':
      return void process.stdout.write(configText(cfg));
    case 'check':
      process.exitCode = await check(cfg);
      return;
    default:
      return serve(cfg);
  }
}

void main();
