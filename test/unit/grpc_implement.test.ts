// implement() is the one path every CRI call takes: handlers that answer at once and handlers
// that return promises, throws and rejections, missing methods, and clients that go away.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import pino from 'pino';
import { NotFoundError } from '../../src/errors';
import type { RuntimeServiceHandlers } from '../../src/gen/runtime/v1/RuntimeService';
import { Metrics } from '../../src/metrics';
import { loadCri } from '../../src/proto';
import { implement, passEncoded } from '../../src/server/grpc';
import { connectCri, expectCriError, type CriClient } from '../helpers/cri';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'grpc-implement-'));
const socket = path.join(dir, 'cri.sock');
const server = new grpc.Server();
const metrics = new Metrics();
let cri: CriClient;
/** What the slow handler saw: set when its signal fired. */
let aborted: ((reason: unknown) => void) | undefined;
const abortedSeen = new Promise<unknown>((resolve) => (aborted = resolve));
let lateSignal: ((aborted: boolean) => void) | undefined;
const lateSignalSeen = new Promise<boolean>((resolve) => (lateSignal = resolve));
let slowStarted: (() => void) | undefined;
const slowStartedSeen = new Promise<void>((resolve) => (slowStarted = resolve));

before(async () => {
  const def = loadCri().runtime.v1.RuntimeService.service;
  server.addService(
    passEncoded(def),
    implement<RuntimeServiceHandlers>(
      'runtime.v1.RuntimeService',
      def,
      {
        // Answers at once.
        Version: (req) => ({ version: req.version, runtime_name: 'sync' }),
        // Throws at once.
        ContainerStatus: (req) => {
          throw new NotFoundError(`container ${req.container_id} not found`);
        },
        // Rejects later.
        PodSandboxStatus: async (req) => {
          await new Promise((r) => setImmediate(r));
          throw new NotFoundError(`pod ${req.pod_sandbox_id} not found`);
        },
        // Waits until its client goes away.
        ExecSync: (_req, ctx) => {
          slowStarted?.();
          return new Promise((_resolve, reject) => {
            ctx.signal.addEventListener('abort', () => {
              aborted?.(ctx.signal.reason);
              reject(ctx.signal.reason as Error);
            });
          });
        },
        // Looks at its signal only after its client has given up.
        ContainerStats: async (_req, ctx) => {
          await new Promise((r) => setTimeout(r, 500));
          lateSignal?.(ctx.signal.aborted);
          return {};
        },
      },
      pino({ level: 'silent' }),
      metrics,
    ),
  );
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())),
  );
  cri = connectCri(socket);
});

after(() => {
  cri.close();
  server.forceShutdown();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a handler that answers at once is answered, and counted as OK', async () => {
  const res = await cri.runtime.Version({ version: 'v1' });
  assert.equal(res.runtime_name, 'sync');
  assert.equal(res.version, 'v1');
  const counted = (await metrics.registry.getSingleMetric('tscri_grpc_requests_total')?.get())?.values ?? [];
  assert.ok(
    counted.some((v) => v.labels.method === 'runtime.v1.RuntimeService/Version' && v.labels.code === 'OK' && v.value >= 1),
    `Version counted as OK: ${JSON.stringify(counted)}`,
  );
});

test('a handler that throws at once gives its status and message', async () => {
  const err = await expectCriError('ContainerStatus', () => cri.runtime.ContainerStatus({ container_id: 'c-missing', verbose: false }));
  assert.equal(err.code, grpc.status.NOT_FOUND);
  assert.match(err.details, /container c-missing not found/);
});

test('a handler that rejects later gives its status and message', async () => {
  const err = await expectCriError('PodSandboxStatus', () => cri.runtime.PodSandboxStatus({ pod_sandbox_id: 'p-missing', verbose: false }));
  assert.equal(err.code, grpc.status.NOT_FOUND);
  assert.match(err.details, /pod p-missing not found/);
});

test('a method without a handler is UNIMPLEMENTED, with its name', async () => {
  const err = await expectCriError('ListImages', () => cri.runtime.ListPodSandbox({ filter: {} }));
  assert.equal(err.code, grpc.status.UNIMPLEMENTED);
  assert.match(err.details, /runtime\.v1\.RuntimeService\/ListPodSandbox is not implemented/);
});

test('a client that gives up aborts the signal of the handler it was waiting for', async () => {
  // The client's deadline passes while the handler waits: the call is cancelled.
  const err = await expectCriError('ExecSync', () => cri.runtime.ExecSync({ container_id: 'c1', cmd: ['sleep', '1'], timeout: '0' }, { timeoutMs: 300 }));
  assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
  await slowStartedSeen;
  const reason = await abortedSeen;
  assert.match(String(reason), /runtime\.v1\.RuntimeService\/ExecSync: cancelled by the client/);
});

test('a signal first asked for after the client gave up is already aborted', async () => {
  const err = await expectCriError('ContainerStats', () => cri.runtime.ContainerStats({ container_id: 'c1' }, { timeoutMs: 100 }));
  assert.equal(err.code, grpc.status.DEADLINE_EXCEEDED);
  assert.equal(await lateSignalSeen, true);
});
