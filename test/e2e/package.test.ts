// `npm pack` + `npm install -g` into a temp prefix: the installed tscri runs, and finds its
// proto and package.json from its own directory. The sources are packed from a copy without
// any build output, so prepack's build is what makes dist/ (node_modules is linked, not
// installed again: the package's own install below fetches its dependencies).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { repoRoot } from '../helpers/cri';

const base = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-pack-'));
after(() => fs.rmSync(base, { recursive: true, force: true }));

function npm(args: string[], cwd: string): string {
  const r = spawnSync('npm', args, { cwd, encoding: 'utf8', timeout: 240_000, env: { ...process.env, npm_config_loglevel: 'error' } });
  assert.equal(r.status, 0, `npm ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

test('npm pack gives a package that npm install -g installs and that runs', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(repoRoot(), 'package.json'), 'utf8')) as { version: string; dependencies: Record<string, string> };
  const tree = path.join(base, 'tree');
  for (const entry of ['package.json', 'package-lock.json', 'tsconfig.json', 'README.md', 'proto', 'src', 'test', 'manifests']) {
    fs.cpSync(path.join(repoRoot(), entry), path.join(tree, entry), { recursive: true, filter: (src) => !src.startsWith(path.join(repoRoot(), 'src', 'gen')) });
  }
  fs.symlinkSync(path.join(repoRoot(), 'node_modules'), path.join(tree, 'node_modules'));
  const out = npm(['pack', '--json', '--pack-destination', base], tree);
  // npm prints the build's own output before the JSON.
  const [packed] = JSON.parse(out.slice(out.indexOf('\n[') + 1)) as { filename: string; files: { path: string }[] }[];
  const files = packed.files.map((f) => f.path);
  for (const f of [
    'dist/src/main.js',
    'dist/src/proto.js',
    'proto/api.proto',
    'manifests/tscri.service',
    'manifests/config.toml',
    'README.md',
    'package.json',
  ]) {
    assert.ok(files.includes(f), `${f} missing from the package`);
  }
  assert.ok(
    files.some((f) => f.startsWith('dist/src/gen/')),
    'the generated CRI types come along',
  );
  assert.deepEqual(
    files.filter((f) => f.startsWith('dist/test/') || f.endsWith('.ts') || f.startsWith('node_modules/')),
    [],
  );

  const prefix = path.join(base, 'prefix');
  npm(['install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', '--prefer-offline', path.join(base, packed.filename)], base);
  const bin = path.join(prefix, 'bin', 'tscri');
  const version = spawnSync(bin, ['--version'], { encoding: 'utf8' });
  assert.equal(version.status, 0, version.stderr);
  assert.match(version.stdout, new RegExp(`^tscri ${pkg.version.replace(/\./g, '\\.')}\n`));
  // Only runtime dependencies were installed beside it.
  const installed = path.join(prefix, 'lib', 'node_modules', 'tscri');
  assert.equal(fs.existsSync(path.join(installed, 'node_modules', 'typescript')), false, 'typescript is a dev dependency');
  // The CRI definition loads from the installed copy of proto/.
  const proto = spawnSync(
    process.execPath,
    ['-e', `const p = require(${JSON.stringify(path.join(installed, 'dist', 'src', 'proto.js'))}); p.loadCri(); console.log(p.PROTO_PATH)`],
    { encoding: 'utf8' },
  );
  assert.equal(proto.status, 0, proto.stderr);
  assert.equal(proto.stdout.trim(), path.join(installed, 'proto', 'api.proto'));
  const config = spawnSync(bin, ['config', '--config', '/dev/null'], { encoding: 'utf8' });
  assert.equal(config.status, 0, config.stderr);
  assert.match(config.stdout, /^listen = "unix:\/\/\/run\/tscri\/tscri.sock"$/m);
});
