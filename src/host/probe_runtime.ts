// Each runtime handler is probed by running a container with it: the binary answering
// --version says little (crun 1.8 starts, then refuses a hybrid cgroup host whose v2 tree has
// controllers). The container is the host's /usr mounted read-only running `true`, in new
// pid/ipc/uts/mount/net namespaces and its own cgroup, as a pod's container would be.
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { type CgroupDriver, containerCgroupsPath } from '../cgroups/paths';
import { runtimeGlobalArgs } from '../oci/runtime';
import { which } from '../util/which';
import { failed, found, messageOf, type Finding } from './finding';
import { lastLine, runTool } from './run_tool';

/** First line of `<bin> --version`, plus the libseccomp line runc prints. */
async function versionOf(bin: string): Promise<string> {
  const r = await runTool(bin, ['--version'], { timeoutMs: 10_000 });
  if (r.code !== 0) return `--version failed: ${lastLine(r.stderr) || r.error || `exit ${r.code}`}`;
  const lines = r.stdout.split('\n').map((l) => l.trim());
  const seccomp = lines.find((l) => l.startsWith('libseccomp:'));
  const features = lines.find((l) => l.startsWith('+'));
  return [lines[0], seccomp, features?.includes('+SECCOMP') ? 'seccomp built in' : undefined].filter(Boolean).join(', ');
}

/** The host's top-level directories a dynamically linked `true` needs, as they are on the host. */
function hostBinaries(rootfs: string): { destination: string; source: string }[] {
  const binds: { destination: string; source: string }[] = [];
  for (const top of ['usr', 'bin', 'sbin', 'lib', 'lib32', 'lib64']) {
    const host = `/${top}`;
    let st: fs.Stats;
    try {
      st = fs.lstatSync(host);
    } catch {
      continue;
    }
    // A merged-/usr host has /bin -> usr/bin: the same link in the rootfs finds the bind of /usr.
    if (st.isSymbolicLink()) fs.symlinkSync(fs.readlinkSync(host), path.join(rootfs, top));
    else if (st.isDirectory()) {
      fs.mkdirSync(path.join(rootfs, top));
      binds.push({ destination: host, source: host });
    }
  }
  return binds;
}

function probeSpec(truePath: string, binds: { destination: string; source: string }[], cgroupsPath: string): unknown {
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: [truePath],
      env: ['PATH=/usr/sbin:/usr/bin:/sbin:/bin'],
      cwd: '/',
      noNewPrivileges: true,
    },
    root: { path: 'rootfs', readonly: true },
    hostname: 'tscri-check',
    mounts: [
      { destination: '/proc', type: 'proc', source: 'proc', options: ['nosuid', 'noexec', 'nodev'] },
      { destination: '/dev', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'] },
      ...binds.map((b) => ({ ...b, type: 'bind', options: ['rbind', 'ro', 'nosuid', 'nodev'] })),
    ],
    linux: {
      namespaces: ['pid', 'ipc', 'uts', 'mount', 'network'].map((type) => ({ type })),
      cgroupsPath,
      resources: { pids: { limit: 16 } },
    },
  };
}

export interface RuntimeProbe {
  handler: string;
  binary: string;
  essential: boolean;
  cgroupDriver: CgroupDriver;
  /** A directory of its own for the bundle and the runtime's state; removed by the caller. */
  scratch: string;
}

/** A container run to completion by the handler's runtime; ok when `true` exited 0. */
export async function probeRuntime(p: RuntimeProbe): Promise<Finding> {
  const feature = `runtime ${p.handler}`;
  const bin = which(p.binary);
  if (!bin) return failed(feature, `${p.binary}: not found in PATH or the sbin dirs`, p.essential);
  const version = await versionOf(bin);
  const truePath = which('true');
  if (!truePath) return failed(feature, `${bin} (${version}): not probed, no true(1) on this host to run`, p.essential);
  const id = `tscri-check-${randomBytes(6).toString('hex')}`;
  const bundle = path.join(p.scratch, 'bundle');
  const state = path.join(p.scratch, 'state');
  const rootfs = path.join(bundle, 'rootfs');
  try {
    fs.mkdirSync(rootfs, { recursive: true });
    fs.mkdirSync(state, { recursive: true });
    // With cgroupfs, at the top of the hierarchy rather than under the daemon's default parent,
    // which would be left behind, empty, by every check.
    const spec = probeSpec(truePath, hostBinaries(rootfs), containerCgroupsPath(p.cgroupDriver === 'cgroupfs' ? '/' : '', id, p.cgroupDriver));
    fs.writeFileSync(path.join(bundle, 'config.json'), JSON.stringify(spec));
    const r = await runTool(bin, [...runtimeGlobalArgs(state, p.cgroupDriver === 'systemd'), 'run', '--bundle', bundle, id], { timeoutMs: 30_000 });
    if (r.code === 0) return found(feature, `${bin} (${version}): ran a container (cgroup driver ${p.cgroupDriver})`, p.essential);
    const why = lastLine(r.stderr) || r.error || `exit ${r.code}`;
    return failed(feature, `${bin} (${version}) cannot run a container here: ${why}`, p.essential);
  } catch (err) {
    return failed(feature, `${bin} (${version}): probe failed: ${messageOf(err)}`, p.essential);
  } finally {
    // `run` deletes the container when it ends; a timeout or a crash leaves it behind.
    if (fs.existsSync(path.join(state, id))) await runTool(bin, [...runtimeGlobalArgs(state, p.cgroupDriver === 'systemd'), 'delete', '--force', id]);
  }
}

/** conmon: every container runs under it. */
export async function probeConmon(conmon: string): Promise<Finding> {
  const bin = which(conmon);
  if (!bin) return failed('conmon', `${conmon}: not found in PATH or the sbin dirs`, true);
  const r = await runTool(bin, ['--version']);
  if (r.code !== 0) return failed('conmon', `${bin} --version failed: ${lastLine(r.stderr) || r.error || `exit ${r.code}`}`, true);
  return found('conmon', `${bin} (${r.stdout.split('\n')[0].trim()})`, true);
}
