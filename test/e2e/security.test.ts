// Security contexts end to end: a real tscri daemon (conmon + runc) on its own CNI bridge, and
// what each container reports about itself — its ids from `id`, its capabilities, NoNewPrivs and
// seccomp mode from /proc/self/status, what it can write, which namespaces it shares — plus the
// requests the daemon must refuse, and limits that hold against a fork bomb and a memory hog.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { must } from '../helpers/must';
import { expectCriError, type CriClient } from '../helpers/cri';
import { startDaemon, type Daemon } from '../helpers/daemon';
import { startRegistry, type Registry } from '../helpers/registry';
import type { PushedImage } from '../helpers/images';
import {
  CGROUP_ROOT_NAME,
  containerConfig,
  daemonConfig,
  logAround,
  logLines,
  podConfig,
  readCriLog,
  removeTestCgroups,
  sleep,
  tailLog,
  waitFor,
  waitForState,
  type CniFixture,
  type ContainerOptions,
} from '../helpers/pods';
import { Created, daemonMounts, describeLeaks, type LeakScope, type LeakSnapshot, removePodsAndLeftovers, snapshotLeaks, waitNoLeaks } from '../helpers/leaks';
import {
  APP_USER,
  CONTAINERD_DEFAULT_CAPS,
  SC_BRIDGE,
  SC_IP_PREFIX,
  capMask,
  hexMask,
  makePidsCgroup,
  makeSecurityCni,
  ownBoundingSet,
  parseStatus,
  pushSecurityImage,
  scBridgeExists,
} from '../helpers/security';
import type { PodSandboxConfig } from '../../src/gen/runtime/v1/PodSandboxConfig';
import type { LinuxContainerSecurityContext } from '../../src/gen/runtime/v1/LinuxContainerSecurityContext';
import type { LinuxSandboxSecurityContext } from '../../src/gen/runtime/v1/LinuxSandboxSecurityContext';
import type { ContainerStatus__Output } from '../../src/gen/runtime/v1/ContainerStatus';

const MiB = 1024 * 1024;

let registry: Registry;
let daemon: Daemon;
let cni: CniFixture;
let image: PushedImage;
let userImage: PushedImage;
let logDir: string;
let scratchDir: string;
let baseline: LeakSnapshot;
const cri = (): CriClient => daemon.cri;

// Everything the tests created, for the leak check and the final cleanup.
const tracked = new Created(SC_IP_PREFIX);

interface Pod {
  id: string;
  config: PodSandboxConfig;
}
let main: Pod;

function scope(): LeakScope {
  return tracked.scope(daemon);
}

interface PodSpec {
  hostNetwork?: boolean;
  sc?: LinuxSandboxSecurityContext;
  sysctls?: Record<string, string>;
  /** Runs before RunPodSandbox with the pod's config (to prepare its cgroup parent). */
  prepare?: (config: PodSandboxConfig) => void;
}

function podFor(name: string, spec: PodSpec = {}): PodSandboxConfig {
  const config = podConfig(name, { logDirectory: path.join(logDir, name), hostNetwork: spec.hostNetwork });
  const base = must(config.linux?.security_context, 'linux.security_context in the pod config');
  config.linux = {
    ...config.linux,
    security_context: { ...base, ...spec.sc, namespace_options: { ...base.namespace_options, ...spec.sc?.namespace_options } },
    sysctls: spec.sysctls ?? {},
  };
  fs.mkdirSync(must(config.log_directory, 'log_directory in the pod config'), { recursive: true });
  return config;
}

async function runPod(name: string, spec: PodSpec = {}): Promise<Pod> {
  const config = podFor(name, spec);
  spec.prepare?.(config);
  const { pod_sandbox_id } = await cri().runtime.RunPodSandbox({ config, runtime_handler: '' });
  await tracked.pod(cri().runtime, pod_sandbox_id);
  return { id: pod_sandbox_id, config };
}

async function removePod(pod: Pod): Promise<void> {
  await cri().runtime.StopPodSandbox({ pod_sandbox_id: pod.id });
  await cri().runtime.RemovePodSandbox({ pod_sandbox_id: pod.id });
}

interface Ctr {
  name: string;
  command: string[];
  sc?: LinuxContainerSecurityContext;
  opts?: ContainerOptions;
  pod?: Pod;
  img?: PushedImage;
}

async function create(c: Ctr): Promise<string> {
  const pod = c.pod ?? main;
  const config = containerConfig(c.name, must((c.img ?? image).tagRef, 'a tag on the pushed image'), c.command, { logPath: `${c.name}.log`, ...c.opts });
  config.linux = { ...config.linux, security_context: c.sc ?? {} };
  const { container_id } = await cri().runtime.CreateContainer({ pod_sandbox_id: pod.id, config, sandbox_config: pod.config });
  tracked.containerIds.push(container_id);
  return container_id;
}

async function start(c: Ctr): Promise<string> {
  const id = await create(c);
  await cri().runtime.StartContainer({ container_id: id });
  return id;
}

interface Ran {
  id: string;
  status: ContainerStatus__Output;
  stdout: string[];
  stderr: string[];
}

function show(st: ContainerStatus__Output): string {
  return JSON.stringify({ state: st.state, exit_code: st.exit_code, reason: st.reason, message: st.message });
}

/**
 * Runs a container to its exit and returns what it printed; removes it. The container's own
 * process reports on itself, so the fields are proved on the process the spec describes.
 */
async function runToExit(c: Ctr, timeoutMs = 20_000): Promise<Ran> {
  const pod = c.pod ?? main;
  const id = await start(c);
  const status = await waitForState(cri(), id, 'CONTAINER_EXITED', timeoutMs);
  const file = path.join(must(pod.config.log_directory, 'log_directory in the pod config'), `${c.name}.log`);
  // conmon can write the last lines just after the exit is recorded: wait for the marker.
  const lines = await waitFor(
    `the end marker in ${file}`,
    () => {
      const l = readCriLog(file);
      return logLines(l, 'stdout').includes('END') ? l : undefined;
    },
    5_000,
    () => (fs.existsSync(file) ? fs.readFileSync(file, 'utf8') : '(no log file)'),
  );
  await cri().runtime.RemoveContainer({ container_id: id });
  return { id, status, stdout: logLines(lines, 'stdout').filter((l) => l !== 'END'), stderr: logLines(lines, 'stderr') };
}

/** `sh -c script; echo END` — the marker says the log is complete. */
const script = (s: string): string[] => ['sh', '-c', `${s}\necho END`];

/** `key=value` lines of a container's output, as a record. */
function kv(lines: string[]): Partial<Record<string, string>> {
  const out: Partial<Record<string, string>> = {};
  for (const l of lines) {
    const eq = l.indexOf('=');
    if (eq > 0) out[l.slice(0, eq)] = l.slice(eq + 1);
  }
  return out;
}

function statusOf(ran: Ran): Record<string, string> {
  return parseStatus(ran.stdout.join('\n'));
}

function daemonLog(id: string): string {
  return `daemon log lines for ${id}:\n${logAround(daemon.logs(), id)}`;
}

const STATUS_SCRIPT = 'grep -E "^(Cap|NoNewPrivs|Seccomp)" /proc/self/status';

async function expectCreateRefused(what: string, c: Ctr): Promise<{ code: string; details: string }> {
  const err = await expectCriError(what, () => create(c));
  // No container of that name may remain: a refused request must not half-create one.
  const left = (await cri().runtime.ListContainers({ filter: { pod_sandbox_id: (c.pod ?? main).id } })).containers.filter((x) => x.metadata?.name === c.name);
  assert.deepEqual(
    left.map((x) => x.id),
    [],
    `${what}: no container named ${c.name} may remain after the refusal`,
  );
  return { code: err.codeName, details: err.details };
}

describe('security contexts', () => {
  before(async () => {
    assert.ok(!scBridgeExists(), `fixture: bridge ${SC_BRIDGE} already exists; a previous run left it (ip link del ${SC_BRIDGE})`);
    cni = makeSecurityCni();
    logDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-sc-logs-'));
    scratchDir = fs.mkdtempSync(path.join(os.tmpdir(), 'tscri-sc-scratch-'));
    registry = await startRegistry();
    image = await pushSecurityImage(registry.host, 'sec');
    userImage = await pushSecurityImage(registry.host, 'sec-user', APP_USER.name);
    daemon = await startDaemon({ config: daemonConfig(cni) });
    baseline = snapshotLeaks(scope());
    for (const img of [image, userImage]) await cri().image.PullImage({ image: { image: must(img.tagRef, 'a tag on the pushed image') } });
    main = await runPod('sc-main');
  });

  after(async () => {
    // before() may have failed before assigning these, which their declared types hide.
    const up: { daemon?: Daemon; registry?: Registry; cni?: CniFixture } = { daemon, registry, cni };
    if (up.daemon) {
      await removePodsAndLeftovers(cri().runtime, tracked.podIds, scope());
      await up.daemon.stop();
    }
    await up.registry?.stop();
    removeTestCgroups();
    up.cni?.remove();
    for (const d of [logDir, scratchDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
    assert.ok(!scBridgeExists(), `bridge ${SC_BRIDGE} still exists after cleanup`);
  });

  // ---- users and groups ----------------------------------------------------------------------

  test('run_as_user and run_as_group set the uid and gid the process runs with', async () => {
    const r = await runToExit({
      name: 'uid-gid',
      command: script('echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G)'),
      sc: { run_as_user: { value: 1000 }, run_as_group: { value: 2000 } },
    });
    assert.equal(r.status.exit_code, 0, `exit: ${show(r.status)} stderr ${JSON.stringify(r.stderr)}`);
    const got = kv(r.stdout);
    assert.deepEqual(
      { ...got, groups: [...new Set((got.groups ?? '').split(' '))].join(' ') },
      { uid: '1000', gid: '2000', groups: '2000' },
      `id inside the container (uid 1000 has no passwd entry: no extra groups); saw ${JSON.stringify(got)}`,
    );
  });

  test('run_as_username resolves from the image /etc/passwd; id -G holds its /etc/group groups and supplemental_groups', async () => {
    const r = await runToExit({
      name: 'username',
      command: script('echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G); echo user=$(id -un)'),
      sc: { run_as_username: APP_USER.name, supplemental_groups: [5555] },
    });
    assert.equal(r.status.exit_code, 0, `exit: ${show(r.status)} stderr ${JSON.stringify(r.stderr)}`);
    const got = kv(r.stdout);
    assert.equal(got.uid, String(APP_USER.uid), `id -u for run_as_username ${APP_USER.name}: saw ${JSON.stringify(got)}`);
    assert.equal(got.gid, String(APP_USER.gid), `id -g: the passwd primary group ${APP_USER.group}; saw ${JSON.stringify(got)}`);
    assert.equal(got.user, APP_USER.name, `id -un: saw ${JSON.stringify(got)}`);
    const groups = (got.groups ?? '')
      .split(' ')
      .map(Number)
      .sort((a, b) => a - b);
    assert.deepEqual(
      [...new Set(groups)],
      [APP_USER.gid, APP_USER.extraGid, 5555],
      `id -G: primary, /etc/group membership (${APP_USER.extraGroup}) and supplemental 5555; saw ${got.groups}`,
    );
  });

  test("the image's USER applies when the request names no user, and run_as_user overrides it", async () => {
    const fromImage = await runToExit({ name: 'image-user', img: userImage, command: script('echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G)') });
    assert.equal(fromImage.status.exit_code, 0, `exit: ${show(fromImage.status)} stderr ${JSON.stringify(fromImage.stderr)}`);
    const got = kv(fromImage.stdout);
    assert.equal(got.uid, String(APP_USER.uid), `image USER ${APP_USER.name}: id -u; saw ${JSON.stringify(got)}`);
    assert.equal(got.gid, String(APP_USER.gid), `image USER ${APP_USER.name}: id -g; saw ${JSON.stringify(got)}`);
    assert.deepEqual(
      [...new Set((got.groups ?? '').split(' ').map(Number))].sort((a, b) => a - b),
      [APP_USER.gid, APP_USER.extraGid],
      `id -G; saw ${got.groups}`,
    );

    const overridden = await runToExit({
      name: 'image-user-root',
      img: userImage,
      command: script('echo uid=$(id -u); echo gid=$(id -g)'),
      sc: { run_as_user: { value: 0 } },
    });
    assert.deepEqual(kv(overridden.stdout), { uid: '0', gid: '0' }, `run_as_user 0 over image USER ${APP_USER.name}`);
  });

  test('a run_as_username the image does not know fails CreateContainer with INVALID_ARGUMENT naming it', async () => {
    const { code, details } = await expectCreateRefused('CreateContainer(run_as_username ghost)', {
      name: 'ghost',
      command: ['true'],
      sc: { run_as_username: 'ghost' },
    });
    assert.equal(code, 'INVALID_ARGUMENT', `code: saw ${code}: ${details}`);
    assert.match(details, /ghost/, `the error names the user: ${details}`);
    assert.match(details, /passwd/, `the error says where it looked: ${details}`);
  });

  test('run_as_group without run_as_user or run_as_username is refused', async () => {
    const { code, details } = await expectCreateRefused('CreateContainer(run_as_group only)', {
      name: 'group-only',
      command: ['true'],
      sc: { run_as_group: { value: 2000 } },
    });
    assert.equal(code, 'INVALID_ARGUMENT', `code: saw ${code}: ${details}`);
    assert.match(details, /run_as_group/, `the error names the field: ${details}`);
  });

  // ---- capabilities ----------------------------------------------------------------------------

  test('capabilities: the default set, add, drop, drop ALL and add ALL', async (t) => {
    const bounding = ownBoundingSet();
    const dflt = capMask(CONTAINERD_DEFAULT_CAPS);
    const cases: { name: string; caps?: { add_capabilities?: string[]; drop_capabilities?: string[] }; want: bigint }[] = [
      { name: 'caps-default', want: dflt },
      { name: 'caps-add-net-admin', caps: { add_capabilities: ['NET_ADMIN'] }, want: dflt | (1n << 12n) },
      { name: 'caps-drop-chown', caps: { drop_capabilities: ['CHOWN'] }, want: dflt & ~1n },
      { name: 'caps-drop-all', caps: { drop_capabilities: ['ALL'] }, want: 0n },
      { name: 'caps-add-all', caps: { add_capabilities: ['ALL'] }, want: bounding },
    ];
    t.diagnostic(`default mask ${hexMask(dflt)}, this process's bounding set ${hexMask(bounding)}`);
    const runs = await Promise.all(
      cases.map((c) =>
        runToExit({
          name: c.name,
          // chown proves the CHOWN bit is the one the kernel checks, not just a number.
          command: script(`${STATUS_SCRIPT}; touch /tmp/f; chown 1:1 /tmp/f 2>/dev/null && echo chown=ok || echo chown=denied`),
          sc: c.caps ? { capabilities: c.caps } : {},
        }),
      ),
    );
    for (const [i, c] of cases.entries()) {
      const r = runs[i];
      const st = statusOf(r);
      const want = hexMask(c.want);
      const seen = JSON.stringify({ CapInh: st.CapInh, CapPrm: st.CapPrm, CapEff: st.CapEff, CapBnd: st.CapBnd, CapAmb: st.CapAmb });
      assert.equal(st.CapEff, want, `${c.name}: CapEff expected ${want}, saw ${seen}`);
      assert.equal(st.CapPrm, want, `${c.name}: CapPrm expected ${want}, saw ${seen}`);
      assert.equal(st.CapBnd, want, `${c.name}: CapBnd expected ${want}, saw ${seen}`);
      assert.equal(st.CapInh, hexMask(0n), `${c.name}: CapInh expected empty (CVE-2022-24769), saw ${seen}`);
      assert.equal(st.CapAmb, hexMask(0n), `${c.name}: CapAmb expected empty, saw ${seen}`);
      const chown = kv(r.stdout).chown;
      assert.equal(chown, (c.want & 1n) === 1n ? 'ok' : 'denied', `${c.name}: chown with CapEff ${st.CapEff}: saw ${chown}`);
    }
  });

  test('an unknown capability name is refused at CreateContainer', async () => {
    const { code, details } = await expectCreateRefused('CreateContainer(add NOT_A_CAP)', {
      name: 'bad-cap',
      command: ['true'],
      sc: { capabilities: { add_capabilities: ['NOT_A_CAP'] } },
    });
    assert.equal(code, 'INVALID_ARGUMENT', `code: saw ${code}: ${details}`);
    assert.match(details, /NOT_A_CAP/, `the error names the capability: ${details}`);
  });

  // ---- privileged ------------------------------------------------------------------------------

  let privPod: Pod | undefined;
  const privilegedPod = async (): Promise<Pod> => (privPod ??= await runPod('sc-priv', { sc: { privileged: true } }));

  test('privileged: every capability the daemon holds, no seccomp, writable /sys, no masked or read-only /proc paths', async () => {
    const pod = await privilegedPod();
    const r = await runToExit({
      pod,
      name: 'priv',
      command: script(
        `${STATUS_SCRIPT}
        echo sys=$(awk '$5 == "/sys" { print $6 }' /proc/self/mountinfo | cut -d, -f1)
        echo timer_list=$(stat -c %F /proc/timer_list):$(wc -c < /proc/timer_list)
        echo procsys=$(grep -c ' /proc/sys ' /proc/self/mountinfo)`,
      ),
      // Asked for, and ignored for a privileged container (containerd does the same).
      sc: { privileged: true, seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' } },
    });
    assert.equal(r.status.exit_code, 0, `exit: ${show(r.status)} stderr ${JSON.stringify(r.stderr)}`);
    const st = statusOf(r);
    const bounding = hexMask(ownBoundingSet());
    assert.equal(st.CapEff, bounding, `CapEff of a privileged container: expected the daemon's bounding set ${bounding}, saw ${st.CapEff}`);
    assert.equal(st.CapBnd, bounding, `CapBnd: expected ${bounding}, saw ${st.CapBnd}`);
    assert.equal(st.Seccomp, '0', `Seccomp of a privileged container: expected 0 (no filter), saw ${st.Seccomp}`);
    const got = kv(r.stdout);
    assert.equal(got.sys, 'rw', `/sys mount options in a privileged container: expected rw, saw ${JSON.stringify(got)}`);
    // /proc/kcore does not exist on every kernel (not on this test VM's); /proc/timer_list does.
    assert.match(
      got.timer_list ?? '',
      /^regular (empty )?file:[1-9]/,
      `/proc/timer_list in a privileged container: expected the real, non-empty file (not masked), saw ${got.timer_list}`,
    );
    assert.equal(got.procsys, '0', `/proc/sys in a privileged container: expected no read-only bind over it, saw ${got.procsys} mounts`);
  });

  test("privileged: the host's devices are in the container's /dev", async () => {
    const pod = await privilegedPod();
    // Devices present on this host that no unprivileged container gets (runc's defaults are
    // null, zero, full, random, urandom, tty, ptmx, console and /dev/pts).
    const hostOnly = ['kmsg', 'loop-control', 'mem', 'vda', 'fuse', 'kvm'].filter((d) => fs.existsSync(`/dev/${d}`));
    assert.ok(hostOnly.length > 0, 'fixture: the host has one of the probed devices');
    const r = await runToExit({ pod, name: 'priv-dev', command: script('ls /dev'), sc: { privileged: true } });
    const unpriv = await runToExit({ name: 'unpriv-dev', command: script('ls /dev') });
    const seen = r.stdout.join(' ').split(/\s+/);
    const missing = hostOnly.filter((d) => !seen.includes(d));
    assert.deepEqual(
      missing,
      [],
      `host devices missing from a privileged container's /dev (containerd's WithDevices adds every host device): privileged saw [${seen.join(' ')}], unprivileged saw [${unpriv.stdout.join(' ')}]`,
    );
    assert.ok(seen.length > unpriv.stdout.join(' ').split(/\s+/).length, 'a privileged /dev holds more than an unprivileged one');
  });

  test('a privileged container in an unprivileged pod is refused', async () => {
    const { code, details } = await expectCreateRefused('CreateContainer(privileged in unprivileged pod)', {
      name: 'priv-in-main',
      command: ['true'],
      sc: { privileged: true },
    });
    assert.equal(code, 'INVALID_ARGUMENT', `code: saw ${code}: ${details}`);
    assert.match(details, /privileged/, `the error says why: ${details}`);
  });

  // ---- filesystem ------------------------------------------------------------------------------

  test('readonly_rootfs: / and /tmp are read-only, a mounted volume stays writable', async () => {
    const vol = fs.mkdtempSync(path.join(scratchDir, 'empty-dir-'));
    const r = await runToExit({
      name: 'ro-root',
      command: script(
        `touch /x 2>/dev/null && echo root=rw || echo root=ro
        touch /tmp/x 2>/dev/null && echo tmp=rw || echo tmp=ro
        echo data > /vol/f && echo vol=rw || echo vol=ro
        touch /etc/hosts 2>/dev/null && echo hosts=rw || echo hosts=ro`,
      ),
      sc: { readonly_rootfs: true },
      opts: { mounts: [{ container_path: '/vol', host_path: vol, readonly: false }] },
    });
    assert.deepEqual(kv(r.stdout), { root: 'ro', tmp: 'ro', vol: 'rw', hosts: 'ro' }, `writes under readonly_rootfs (stderr ${JSON.stringify(r.stderr)})`);
    assert.equal(fs.readFileSync(path.join(vol, 'f'), 'utf8'), 'data\n', 'the file written into the volume, read on the host');
    const rw = await runToExit({ name: 'rw-root', command: script('touch /x 2>/dev/null && echo root=rw || echo root=ro') });
    assert.equal(kv(rw.stdout).root, 'rw', 'without readonly_rootfs / is writable');
  });

  test('no_new_privs sets NoNewPrivs: 1; without it NoNewPrivs is 0', async () => {
    const [on, off] = await Promise.all([
      runToExit({ name: 'nnp-on', command: script(STATUS_SCRIPT), sc: { no_new_privs: true } }),
      runToExit({ name: 'nnp-off', command: script(STATUS_SCRIPT) }),
    ]);
    assert.equal(statusOf(on).NoNewPrivs, '1', `no_new_privs true: saw ${JSON.stringify(on.stdout)}`);
    assert.equal(statusOf(off).NoNewPrivs, '0', `no_new_privs unset: saw ${JSON.stringify(off.stdout)}`);
  });

  test('default masked and read-only paths: /proc/timer_list reads empty, /proc/keys is masked, /proc/sys is read-only', async () => {
    const r = await runToExit({
      name: 'masked-default',
      command: script(
        `echo timer_list=$(stat -c %F /proc/timer_list):$(wc -c < /proc/timer_list)
        echo keys=$(stat -c %F /proc/keys)
        echo acpi=$(ls /proc/acpi 2>/dev/null | wc -l)
        echo 1 > /proc/sys/kernel/shm_rmid_forced 2>/dev/null && echo procsys=rw || echo procsys=ro
        awk '$5 ~ /^\\/proc\\// { split($6, o, ","); print "mount " $5 "=" o[1] }' /proc/self/mountinfo`,
      ),
    });
    const got = kv(r.stdout);
    assert.equal(got.timer_list, 'character special file:0', `/proc/timer_list: expected /dev/null bound over it, reading empty; saw ${got.timer_list}`);
    assert.equal(got.keys, 'character special file', `/proc/keys: expected /dev/null bound over it, saw ${got.keys}`);
    assert.equal(got.acpi, '0', `/proc/acpi: expected an empty tmpfs, saw ${got.acpi} entries`);
    assert.equal(got.procsys, 'ro', `write to /proc/sys/kernel/shm_rmid_forced: expected refused, saw ${got.procsys}`);
    // runc skips a listed path the kernel does not have (this VM has no /proc/sysrq-trigger).
    const readonly = ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'].filter((p) => fs.existsSync(p));
    for (const p of readonly)
      assert.equal(
        got[`mount ${p}`],
        'ro',
        `${p}: expected a read-only bind mount, saw mounts ${JSON.stringify(
          Object.keys(got)
            .filter((k) => k.startsWith('mount '))
            .map((k) => `${k}=${got[k]}`),
        )}`,
      );
  });

  test('custom masked_paths and readonly_paths replace the defaults', async () => {
    const r = await runToExit({
      name: 'masked-custom',
      command: script(
        `echo cpuinfo=$(wc -c < /proc/cpuinfo)
        echo timer_list=$(stat -c %F /proc/timer_list)
        touch /tmp/x 2>/dev/null && echo tmp=rw || echo tmp=ro
        touch /x 2>/dev/null && echo root=rw || echo root=ro
        echo procsys=$(grep -c ' /proc/sys ' /proc/self/mountinfo)`,
      ),
      sc: { masked_paths: ['/proc/cpuinfo'], readonly_paths: ['/tmp'] },
    });
    const got = kv(r.stdout);
    assert.deepEqual(
      got,
      { cpuinfo: '0', timer_list: 'regular empty file', tmp: 'ro', root: 'rw', procsys: '0' },
      `custom lists (masked /proc/cpuinfo, read-only /tmp) and no defaults; stderr ${JSON.stringify(r.stderr)}`,
    );
  });

  // ---- seccomp ---------------------------------------------------------------------------------

  test('seccomp RuntimeDefault filters (Seccomp: 2, unshare -U refused); Unconfined does not (Seccomp: 0, unshare -U works)', async () => {
    const probe = script(`${STATUS_SCRIPT}\nunshare -U true 2>&1 && echo userns=ok || echo userns=denied`);
    const [dflt, unconfined, unset] = await Promise.all([
      runToExit({ name: 'seccomp-default', command: probe, sc: { seccomp: { profile_type: 'RuntimeDefault', localhost_ref: '' } } }),
      runToExit({ name: 'seccomp-unconfined', command: probe, sc: { seccomp: { profile_type: 'Unconfined', localhost_ref: '' } } }),
      runToExit({ name: 'seccomp-unset', command: probe }),
    ]);
    const d = statusOf(dflt);
    const u = statusOf(unconfined);
    assert.equal(d.Seccomp, '2', `RuntimeDefault: Seccomp expected 2 (filter), saw ${JSON.stringify(dflt.stdout)}`);
    // The default profile allows unshare only with CAP_SYS_ADMIN, which the default set lacks;
    // without a filter, creating a user namespace needs no capability at all.
    assert.equal(kv(dflt.stdout).userns, 'denied', `RuntimeDefault: unshare -U expected to fail, saw ${JSON.stringify(dflt.stdout)}`);
    assert.ok(
      dflt.stdout.some((l) => /Operation not permitted/.test(l)),
      `RuntimeDefault: unshare -U fails with EPERM; saw ${JSON.stringify(dflt.stdout)}`,
    );
    assert.equal(u.Seccomp, '0', `Unconfined: Seccomp expected 0, saw ${JSON.stringify(unconfined.stdout)}`);
    assert.equal(kv(unconfined.stdout).userns, 'ok', `Unconfined: unshare -U expected to work, saw ${JSON.stringify(unconfined.stdout)}`);
    // Nothing asked for: unconfined, as containerd's default (the kubelet sends RuntimeDefault itself).
    assert.equal(statusOf(unset).Seccomp, '0', `no seccomp in the request: saw ${JSON.stringify(unset.stdout)}`);
  });

  test('seccomp Localhost: a profile that blocks mkdir makes mkdir fail with EPERM', async () => {
    const profile = path.join(scratchDir, 'no-mkdir.json');
    fs.writeFileSync(
      profile,
      JSON.stringify({
        defaultAction: 'SCMP_ACT_ALLOW',
        syscalls: [{ names: ['mkdir', 'mkdirat'], action: 'SCMP_ACT_ERRNO', errnoRet: 1 }],
      }),
    );
    const r = await runToExit({
      name: 'seccomp-localhost',
      command: script(`${STATUS_SCRIPT}\nmkdir /tmp/d 2>&1 && echo mkdir=ok || echo mkdir=denied\ntouch /tmp/f && echo touch=ok`),
      sc: { seccomp: { profile_type: 'Localhost', localhost_ref: profile } },
    });
    const got = kv(r.stdout);
    assert.equal(statusOf(r).Seccomp, '2', `Seccomp: saw ${JSON.stringify(r.stdout)}`);
    assert.equal(got.mkdir, 'denied', `mkdir under a profile denying it: saw ${JSON.stringify(r.stdout)}`);
    assert.ok(
      r.stdout.some((l) => /Operation not permitted/.test(l)),
      `mkdir fails with EPERM (errnoRet 1): saw ${JSON.stringify(r.stdout)}`,
    );
    assert.equal(got.touch, 'ok', `other syscalls stay allowed: saw ${JSON.stringify(r.stdout)}`);
  });

  test('seccomp Localhost with a missing profile fails CreateContainer naming the path', async () => {
    const missing = path.join(scratchDir, 'no-such-profile.json');
    const { code, details } = await expectCreateRefused('CreateContainer(missing seccomp profile)', {
      name: 'seccomp-missing',
      command: ['true'],
      sc: { seccomp: { profile_type: 'Localhost', localhost_ref: missing } },
    });
    assert.ok(['INVALID_ARGUMENT', 'NOT_FOUND', 'FAILED_PRECONDITION'].includes(code), `code: saw ${code}: ${details}`);
    assert.ok(details.includes(missing), `the error names ${missing}: ${details}`);
  });

  // ---- namespaces ------------------------------------------------------------------------------

  test("a pod with host network, PID and IPC namespaces shares the host's", async () => {
    const shmName = `tscri-sc-${process.pid}`;
    const shmFile = path.join('/dev/shm', shmName);
    fs.writeFileSync(shmFile, 'from the host\n');
    try {
      const pod = await runPod('sc-host-ns', { hostNetwork: true, sc: { namespace_options: { network: 'NODE', pid: 'NODE', ipc: 'NODE' } } });
      const r = await runToExit({
        pod,
        name: 'host-ns',
        command: script(
          `for n in net pid ipc; do echo $n=$(readlink /proc/self/ns/$n); done
          echo ifaces=$(cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d ' ' | sort | tr '\\n' ' ')
          echo runner=$(tr '\\0' ' ' < /proc/${process.pid}/cmdline)
          echo shm=$(cat /dev/shm/${shmName})`,
        ),
      });
      const got = kv(r.stdout);
      for (const n of ['net', 'pid', 'ipc']) {
        const host = fs.readlinkSync(`/proc/self/ns/${n}`);
        assert.equal(got[n], host, `${n} namespace of a host-${n} container: expected the host's ${host}, saw ${got[n]}`);
      }
      // Interfaces other test files add and remove meanwhile are left out.
      const stable = fs.readdirSync('/sys/class/net').filter((i) => !i.startsWith('veth') && !(i.startsWith('tscri-') && i !== SC_BRIDGE));
      const seen = (got.ifaces ?? '').trim().split(' ');
      assert.deepEqual(
        stable.filter((i) => !seen.includes(i)),
        [],
        `host interfaces missing in the host-network container: host [${stable.join(' ')}], container [${seen.join(' ')}]`,
      );
      assert.match(got.runner ?? '', /node/, `the test runner (pid ${process.pid}) seen through /proc: saw ${got.runner}`);
      assert.equal(got.shm, 'from the host', `a file in the host's /dev/shm seen from a host-IPC container: saw ${JSON.stringify(r.stdout)}`);
      await removePod(pod);
    } finally {
      fs.rmSync(shmFile, { force: true });
    }
  });

  test('a pod container does not share the host network, PID or IPC namespace', async () => {
    const r = await runToExit({
      name: 'pod-ns',
      command: script(
        'for n in net pid ipc; do echo $n=$(readlink /proc/self/ns/$n); done; echo ifaces=$(cut -d: -f1 /proc/net/dev | tail -n +3 | tr -d " " | sort | tr "\\n" " ")',
      ),
    });
    const got = kv(r.stdout);
    for (const n of ['net', 'pid', 'ipc'])
      assert.notEqual(got[n], fs.readlinkSync(`/proc/self/ns/${n}`), `${n} namespace of a pod container must not be the host's`);
    assert.deepEqual((got.ifaces ?? '').trim().split(' '), ['eth0', 'lo'], `interfaces of a pod container: saw ${got.ifaces}`);
  });

  test("pod PID namespace (POD): a container sees the other container's processes; CONTAINER: it does not", async () => {
    const shared = await runPod('sc-shared-pid', { sc: { namespace_options: { pid: 'POD' } } });
    const a = await start({ pod: shared, name: 'pid-a', command: ['sh', '-c', 'exec sleep 4242'] });
    await waitForState(cri(), a, 'CONTAINER_RUNNING');
    const b = await runToExit({ pod: shared, name: 'pid-b', command: script('ps -o pid,args; echo self=$$'), sc: { namespace_options: { pid: 'POD' } } });
    assert.ok(
      b.stdout.some((l) => /sleep 4242/.test(l)),
      `container B in a POD pid namespace lists A's sleep 4242: saw ${JSON.stringify(b.stdout)}`,
    );
    assert.notEqual(kv(b.stdout).self, '1', `B is not pid 1 in a shared namespace: saw ${JSON.stringify(b.stdout)}`);

    // A process orphaned in the pod goes to the namespace's init, which must reap it when it exits.
    const orphaner = await start({ pod: shared, name: 'pid-orphaner', command: ['sh', '-c', '(sleep 1 &); exec sleep 4244'] });
    await waitForState(cri(), orphaner, 'CONTAINER_RUNNING');
    const z = await runToExit({
      pod: shared,
      name: 'pid-zombies',
      command: script('sleep 2; for s in /proc/[0-9]*/status; do grep -q "^State:.*Z" $s && echo zombie=$s; done; echo checked=yes'),
      sc: { namespace_options: { pid: 'POD' } },
    });
    assert.equal(kv(z.stdout).checked, 'yes', `the zombie check ran: ${JSON.stringify(z.stdout)}`);
    assert.deepEqual(
      z.stdout.filter((l) => l.startsWith('zombie=')),
      [],
      'no zombie in the shared PID namespace after an orphan exited',
    );

    // The main pod's containers each get their own (namespace_options.pid CONTAINER).
    const c = await start({ name: 'pid-c', command: ['sh', '-c', 'exec sleep 4243'] });
    await waitForState(cri(), c, 'CONTAINER_RUNNING');
    const d = await runToExit({ name: 'pid-d', command: script('ps -o pid,args; echo self=$$'), sc: { namespace_options: { pid: 'CONTAINER' } } });
    assert.ok(
      !d.stdout.some((l) => /sleep 424[23]/.test(l)),
      `container D with its own pid namespace must not see sleep 4242/4243: saw ${JSON.stringify(d.stdout)}`,
    );
    assert.equal(kv(d.stdout).self, '1', `D is pid 1 of its own namespace: saw ${JSON.stringify(d.stdout)}`);

    for (const id of [a, c, orphaner]) {
      await cri().runtime.StopContainer({ container_id: id, timeout: 1 });
      await cri().runtime.RemoveContainer({ container_id: id });
    }
    await removePod(shared);
  });

  // ---- sysctls -----------------------------------------------------------------------------------

  test('namespaced sysctls are applied in the pod and read back in /proc/sys; the host keeps its values', async () => {
    const hostPort = fs.readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8').trim();
    const hostShm = fs.readFileSync('/proc/sys/kernel/shm_rmid_forced', 'utf8').trim();
    const want = { port: hostPort === '2000' ? '2001' : '2000', shm: hostShm === '1' ? '0' : '1' };
    const pod = await runPod('sc-sysctl', { sysctls: { 'net.ipv4.ip_unprivileged_port_start': want.port, 'kernel.shm_rmid_forced': want.shm } });
    const r = await runToExit({
      pod,
      name: 'sysctl',
      command: script('echo port=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start); echo shm=$(cat /proc/sys/kernel/shm_rmid_forced)'),
    });
    assert.deepEqual(kv(r.stdout), want, `sysctls read inside the pod (stderr ${JSON.stringify(r.stderr)})`);
    assert.equal(
      fs.readFileSync('/proc/sys/net/ipv4/ip_unprivileged_port_start', 'utf8').trim(),
      hostPort,
      "the host's ip_unprivileged_port_start is unchanged",
    );
    assert.equal(fs.readFileSync('/proc/sys/kernel/shm_rmid_forced', 'utf8').trim(), hostShm, "the host's shm_rmid_forced is unchanged");
    await removePod(pod);
  });

  test('a non-namespaced sysctl (vm.swappiness) is refused with an error naming it, and the host is untouched', async (t) => {
    const host = fs.readFileSync('/proc/sys/vm/swappiness', 'utf8').trim();
    const value = host === '37' ? '38' : '37';
    let refusal: string | undefined;
    let pod: Pod | undefined;
    try {
      pod = await runPod('sc-sysctl-vm', { sysctls: { 'vm.swappiness': value } });
    } catch (err) {
      refusal = `RunPodSandbox: ${String(err)}`;
    }
    if (pod) {
      const p = pod;
      const err = await expectCriError('CreateContainer in a pod with vm.swappiness', () => create({ pod: p, name: 'swappy', command: ['true'] }));
      refusal = `CreateContainer: ${err.codeName}: ${err.details}`;
      await removePod(p);
    }
    assert.ok(refusal, 'a refusal of vm.swappiness at RunPodSandbox or CreateContainer');
    t.diagnostic(`refused at ${refusal}`);
    assert.match(refusal, /vm\.swappiness/, `the refusal names the sysctl: ${refusal}`);
    assert.equal(fs.readFileSync('/proc/sys/vm/swappiness', 'utf8').trim(), host, "the host's vm.swappiness is unchanged");
  });

  // ---- runtime features and user namespaces ------------------------------------------------

  test('Status reports user namespaces (the start-up probe passed) and recursive read-only mounts for every handler', async () => {
    const res = await cri().runtime.Status({ verbose: false });
    assert.ok(res.runtime_handlers.length > 0, `runtime_handlers: saw ${JSON.stringify(res.runtime_handlers)}`);
    for (const h of res.runtime_handlers) {
      assert.equal(
        h.features?.user_namespaces,
        true,
        `handler ${JSON.stringify(h.name)}: user_namespaces (idmapped layers probe on kernel 6.18): saw ${JSON.stringify(h.features)}`,
      );
      assert.equal(
        h.features.recursive_read_only_mounts,
        true,
        `handler ${JSON.stringify(h.name)}: recursive_read_only_mounts (made by the daemon on kernel 6.18): saw ${JSON.stringify(h.features)}`,
      );
    }
  });

  test('a pod asking for a user namespace is refused while the state directory is closed to others', async () => {
    // This file's daemon keeps its state in a mkdtemp directory (0700): runc could not reach the
    // pod's files as the pod's root, so the pod is refused before anything is made
    // (test/e2e/userns.test.ts opens it and runs such pods).
    const mapping = [{ host_id: 100000, container_id: 0, length: 65536 }];
    const config = podFor('sc-userns', { sc: { namespace_options: { userns_options: { mode: 'POD', uids: mapping, gids: mapping } } } });
    const err = await expectCriError('RunPodSandbox(userns POD)', async () => {
      const res = await cri().runtime.RunPodSandbox({ config, runtime_handler: '' });
      tracked.podIds.push(res.pod_sandbox_id);
      return res;
    });
    assert.equal(err.codeName, 'FAILED_PRECONDITION', err.message);
    assert.ok(err.details.includes(daemon.base), `the error names the closed directory ${daemon.base}: ${err.details}`);
  });

  // ---- limits under attack -----------------------------------------------------------------

  test('a fork bomb stays under its pod cgroup pids.max of 64; the host and the daemon keep working', async (t) => {
    let pidsDir = '';
    const pod = await runPod('sc-bomb', {
      prepare: (config) => {
        pidsDir = makePidsCgroup(must(config.linux?.cgroup_parent, 'linux.cgroup_parent in the pod config'), 64);
      },
    });
    assert.ok(pidsDir.includes(CGROUP_ROOT_NAME), `fixture: the pids cgroup ${pidsDir} is under the test's cgroup root`);
    // The bomb goes off in a subshell forked while the cgroup is still empty; the container's
    // own shell then execs sleep without forking again. Run in the shell itself, the bomb's
    // children could take the last pids before the shell's own fork, and the shell exited 2
    // ("can't fork") before the container was ever seen running (seen under stress-ng).
    const id = await start({ pod, name: 'bomb', command: ['sh', '-c', '(b() { b | b & }; b) & exec sleep 100000'] });
    try {
      await waitForState(cri(), id, 'CONTAINER_RUNNING');
      let peak = 0;
      let versionMax = 0;
      const until = Date.now() + 4_000;
      while (Date.now() < until) {
        peak = Math.max(peak, Number(fs.readFileSync(path.join(pidsDir, 'pids.current'), 'utf8')));
        const t0 = Date.now();
        await cri().runtime.Version({ version: 'v1' }, { timeoutMs: 5_000 });
        versionMax = Math.max(versionMax, Date.now() - t0);
        const host = spawnSync('true');
        assert.equal(host.status, 0, `the host spawns processes during the fork bomb: ${String(host.error)}`);
        await sleep(100);
      }
      // cgroup v1 counts a refused fork in pids.events of the forking task's cgroup (the
      // container's, below the pod's), not of the ancestor whose limit refused it.
      const events = [
        pidsDir,
        ...fs
          .readdirSync(pidsDir, { withFileTypes: true })
          .filter((e) => e.isDirectory())
          .map((e) => path.join(pidsDir, e.name)),
      ]
        .map((d) => `${path.basename(d)}: ${fs.readFileSync(path.join(d, 'pids.events'), 'utf8').trim()}`)
        .join(', ');
      t.diagnostic(`pids.current peak ${peak}, pids.events "${events}", slowest Version ${versionMax} ms`);
      assert.ok(peak <= 64, `pids.current of the pod cgroup: expected ≤ 64, peaked at ${peak}`);
      assert.ok(peak >= 32, `the fork bomb ran (pids.current peaked at ${peak})`);
      assert.match(events, /max [1-9]/, `pids.events: expected forks refused at the limit, saw "${events}"`);
      assert.ok(versionMax < 1_000, `Version during the fork bomb: expected < 1 s, slowest ${versionMax} ms`);
      const t0 = Date.now();
      await cri().runtime.StopContainer({ container_id: id, timeout: 1 });
      const st = await waitForState(cri(), id, 'CONTAINER_EXITED');
      t.diagnostic(`stopped in ${Date.now() - t0} ms: ${show(st)}`);
      await waitFor(
        'the fork bomb to be gone from its cgroup',
        () => (Number(fs.readFileSync(path.join(pidsDir, 'pids.current'), 'utf8')) === 0 ? true : undefined),
        10_000,
        () => fs.readFileSync(path.join(pidsDir, 'pids.current'), 'utf8'),
      );
    } finally {
      await cri()
        .runtime.StopContainer({ container_id: id, timeout: 1 })
        .catch(() => undefined);
      await cri()
        .runtime.RemoveContainer({ container_id: id })
        .catch(() => undefined);
      await removePod(pod);
    }
    if (fs.existsSync(pidsDir)) fs.rmdirSync(pidsDir);
  });

  test('a memory hog over its 32 MiB limit is OOMKilled', async () => {
    const id = await start({
      name: 'hog',
      command: ['sh', '-c', 'x=$(head -c 256m /dev/zero | tr "\\0" a)'],
      opts: { resources: { memory_limit_in_bytes: String(32 * MiB) } },
    });
    const st = await waitForState(cri(), id, 'CONTAINER_EXITED', 30_000);
    assert.equal(st.reason, 'OOMKilled', `reason: expected OOMKilled, saw ${show(st)}\n${daemonLog(id)}`);
    assert.notEqual(st.exit_code, 0, `exit_code: saw ${show(st)}`);
    await cri().runtime.RemoveContainer({ container_id: id });
  });

  // ---- cleanup -------------------------------------------------------------------------------

  test('after removing every pod: no mounts, netns pins, conmon, cgroups or iptables rules remain', async (t) => {
    for (const id of tracked.podIds) {
      await cri()
        .runtime.StopPodSandbox({ pod_sandbox_id: id })
        .catch((e: unknown) => t.diagnostic(`StopPodSandbox ${id}: ${String(e)}`));
      await cri().runtime.RemovePodSandbox({ pod_sandbox_id: id });
    }
    assert.deepEqual(
      (await cri().runtime.ListContainers({})).containers.map((c) => `${c.id} ${c.metadata?.name} ${c.state}`),
      [],
      'ListContainers after removing every pod',
    );
    assert.deepEqual(
      (await cri().runtime.ListPodSandbox({})).items.map((p) => `${p.id} ${p.metadata?.name}`),
      [],
      'ListPodSandbox after removing every pod',
    );
    const leaks = await waitNoLeaks(scope(), baseline);
    assert.equal(describeLeaks(leaks), '', 'leftovers after every pod was removed');
    assert.deepEqual(cni.reservedIps(), [], `host-local reservations in ${cni.dataDir}`);
    const dirs = [daemon.root, daemon.state, daemon.base];
    const how = await daemon.stop('SIGTERM', { keep: true });
    const { mounts, netnsPins } = daemonMounts(dirs);
    assert.deepEqual([...mounts, ...netnsPins], [], `mounts under ${daemon.base} after the daemon stopped (${how}); log tail:\n${tailLog(daemon.logs(), 20)}`);
  });
});
