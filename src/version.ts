import { readFileSync } from 'node:fs';
import path from 'node:path';

export const RUNTIME_NAME = 'tscri';

function packageVersion(): string {
  try {
    // The compiled file, dist/src/version.js, sits two levels below the package root.
    const pkg = JSON.parse(readFileSync(path.join(__dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
    return pkg.version;
  } catch {
    return '0.0.0';
  }
}

export const RUNTIME_VERSION = packageVersion();
